--- The policy's checks: queries whose replies must equal the ones
-- recorded when the backup was planned. Backup runs them once every member
-- runs again; restore runs them as part of each member's verification.
local hex = require "fleetsnap.hex"

local M = {}

--- Compares one check's reply (bytes) with what it expects. Returns nil,
-- or an error table naming the member and the check.
function M.compare(canister, check, reply, when)
  local got = hex.encode(reply)
  if got == check.expect_hex then return nil end
  return { code = "EVERIFY", message = string.format("check %s of %s %s: reply %s, expected %s", check.method,
    canister, when, got, check.expect_hex) }
end

--- The icp call parameters of a check.
function M.params(canister, check)
  return { canister = canister, method = check.method, args = check.args, query = true }
end

--- Runs every check of `targets` ({canister_id, checks}) many at a time
-- through driver. Returns nil or the first failure; `on_pass(canister,
-- check)` is told of each one that passes.
function M.run_all(driver, targets, bound, when, on_pass)
  local jobs, what = {}, {}
  for _, t in ipairs(targets) do
    for _, c in ipairs(t.checks or {}) do
      jobs[#jobs + 1] = { "call", M.params(t.canister_id, c) }
      what[#what + 1] = { canister = t.canister_id, check = c }
    end
  end
  for i, res in ipairs(driver:run_many(jobs, bound)) do
    local w = what[i]
    if not res[1] then
      return { code = "EVERIFY", message = string.format("check %s of %s %s: %s", w.check.method, w.canister, when,
        res[2].message) }
    end
    local bad = M.compare(w.canister, w.check, res[1], when)
    if bad then return bad end
    if on_pass then on_pass(w.canister, w.check) end
  end
end

return M
