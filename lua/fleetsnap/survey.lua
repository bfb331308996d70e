--- The preflight survey that backup and restore share: before any
-- effect, ask every target, many at a time, for the operator's principal,
-- each canister's status and its snapshot inventory; refuse (nothing
-- changed yet) when a target is missing or not controlled by the operator.
local errors = require "fleetsnap.errors"

local M = {}

--- Read-only rounds (preflight, checks, retention listing) change nothing,
-- so they are not held to the lifecycle bound (rolling's 4 would make 64
-- members' preflight 32 rounds long).
function M.read_bound(concurrency)
  return math.max(concurrency or 1, 32)
end

--- What preflight asks of every target, many at a time: the operator's
-- principal, then each canister's status and snapshot inventory. Returns
-- me, rows ({canister, status, list}; nil where icp could not tell),
-- refusals (text per target), and the code a refusal raises:
-- EPRECONDITION for the fleet's answers (missing canister, not a
-- controller), EICP when icp could not ask (network, timeout).
function M.run(driver, canisters, bound, what)
  local me, ierr = driver:run("identity")
  if not me then errors.raise("EICP", what .. ": " .. ierr.message) end
  local jobs = {}
  for _, cid in ipairs(canisters) do
    jobs[#jobs + 1] = { "status", { canister = cid } }
    jobs[#jobs + 1] = { "snapshot_list", { canister = cid } }
  end
  local answers = driver:run_many(jobs, bound)
  local rows, refusals, code = {}, {}, "EPRECONDITION"
  local function refuse(cid, err)
    if err.code ~= "CANISTER_GONE" and err.code ~= "NOT_CONTROLLER" then code = "EICP" end
    refusals[#refusals + 1] = cid .. ": " .. (err.code == "CANISTER_GONE" and "does not exist" or err.message)
  end
  for i, cid in ipairs(canisters) do
    local st, serr = answers[2 * i - 1][1], answers[2 * i - 1][2]
    local list, lerr = answers[2 * i][1], answers[2 * i][2]
    rows[i] = { canister = cid, status = st, list = st and list or nil }
    if not st then
      refuse(cid, serr)
    else
      local controls = false
      for _, c in ipairs(st.controllers or {}) do if c == me then controls = true end end
      if st.public_only or not controls then
        refusals[#refusals + 1] = string.format("%s: the operator %s is not a controller", cid, me)
      end
      if not list then refuse(cid, lerr) end
    end
  end
  return me, rows, refusals, code
end

return M
