--- What a backup checks before its first stop: the preflight survey
-- (every target exists and is controlled by the operator, has a free
-- snapshot slot or an old snapshot of ours to replace, the disk has room),
-- which also records what the executor needs (each member's status before
-- the backup, module hash and snapshot inventory), and the topology re-read
-- right before the first stop (drift).
local discovery = require "fleetsnap.discovery"
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local fleet_mod = require "fleetsnap.fleet"
local backup_plan = require "fleetsnap.backup.plan"
local ownership = require "fleetsnap.exec.ownership"
local survey = require "fleetsnap.survey"

local fs = engine.fs

local M = {}

local raise = errors.raise

--- The backups directory a backup lives in (where its siblings are).
function M.parent(dir)
  return dir:match("^(.*)/[^/]+$") or "."
end

--- Surveys the targets. Returns {me, baselines, lists, module_hashes,
-- statuses, settings, replace_full} or raises (nothing was stopped):
-- EPRECONDITION for the fleet's refusals, EICP when icp could not ask.
function M.run(driver, dir, plan)
  local canisters = {}
  for i, t in ipairs(plan.targets) do canisters[i] = t.canister_id end
  local me, rows, refusals, code = survey.run(driver, canisters, survey.read_bound(plan.options.concurrency),
    "preflight")
  local memory = 0
  local known = ownership.known(M.parent(dir), plan.connection)
  local out = { me = me, baselines = {}, lists = {}, module_hashes = {}, statuses = {}, settings = {},
    replace_full = {} }
  for _, row in ipairs(rows) do
    local cid, st, list = row.canister, row.status, row.list
    if st then
      memory = memory + (st.memory_size or 0)
      out.module_hashes[cid] = st.module_hash
      out.statuses[cid] = st.status
      out.settings[cid] = st.settings
    end
    if list then
      out.lists[cid] = list
      out.baselines[cid] = ownership.ids(list)
      if #list >= plan.options.snapshot_limit then
        -- A full canister needs an old snapshot of ours, durable in a
        -- verified backup, to replace.
        local oldest
        for _, s in ipairs(list) do
          local k = known[s.snapshot_id]
          if k and k.canister == cid and not oldest then oldest = s.snapshot_id end
        end
        if oldest then
          out.replace_full[cid] = oldest
        else
          refusals[#refusals + 1] = string.format("%s: all %d snapshot slots are taken and none is a fleetsnap "
            .. "snapshot of a durable backup (delete one, or raise the snapshot limit if the network allows more)",
            cid, #list)
        end
      end
    end
  end
  local avail = fs.free_space(dir)
  local need = math.floor(memory * 1.1) + (16 << 20)
  if avail and avail < need then
    refusals[#refusals + 1] = string.format("%s: %d MiB free, about %d MiB needed for the selection", dir,
      avail >> 20, need >> 20)
  end
  if #refusals > 0 then
    raise(code, "preflight " .. (code == "EICP" and "failed" or "refused") .. ", nothing was stopped:\n  "
      .. table.concat(refusals, "\n  "), { refusals = refusals })
  end
  return out
end

--- The topology re-read right before the first stop: the selection must
-- be what was planned.
function M.check_drift(driver, plan)
  if plan.discovery.policy then
    -- A policy's discovery is not run again: the queries it made are
    -- asked again and must reply the same bytes (a member that left or
    -- moved changes the reply that listed it).
    local changed = discovery.recheck(driver, plan.discovery.queries or {})
    if changed then
      raise("EPRECONDITION", "topology drift since the plan was made; nothing was stopped: " .. changed)
    end
    return
  end
  local f, err, code = backup_plan.discover(driver, { inventory = plan.discovery.inventory, root = plan.root })
  if not f then raise(code or "EICP", "topology re-read before the first stop: " .. err) end
  local sel = {}
  for _, t in ipairs(plan.targets) do
    local m = f.by_id[t.canister_id]
    if not m then raise("EPRECONDITION", "topology drift: " .. t.canister_id .. " left the fleet") end
    sel[#sel + 1] = m
  end
  local hash, rows = fleet_mod.scope_hash(f, sel)
  if hash ~= plan.scope.topology_hash then
    raise("EPRECONDITION", "topology drift since the plan was made; nothing was stopped. Changed rows:\n  "
      .. table.concat(fleet_mod.drift(plan.scope.rows, rows), "\n  "))
  end
end

return M
