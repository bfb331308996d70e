--- Shared by the promise specs: a running fleetsnap in the background, the
-- fleet's statuses and snapshot inventories as icp-sim reports them.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local assert = require "luassert"

local json = engine.json

local M = {}

--- Registers, in the calling describe block, a fresh simulated fleet
-- (opts: sim init options; default 4 members, depth 2) and work directory
-- before each test, handed to set(home, work), and their removal after it.
function M.each_fleet(opts, set)
  local busted = require "busted"
  busted.before_each(function()
    set(helpers.sim_home(opts or { members = 4, depth = 2 }), helpers.tmpdir())
  end)
  busted.after_each(function() helpers.cleanup() end)
end

--- Starts scripts/fleetsnap --sim home argv in the background.
function M.spawn(home, argv, env)
  local full = { helpers.root .. "/scripts/fleetsnap", "--sim", home }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local e = { RUST_BACKTRACE = "0" }
  for k, v in pairs(env or {}) do e[k] = v end
  return assert(engine.proc.spawn({ argv = full, env = e, unset_env = { "LD_PRELOAD" }, timeout_ms = 300000 }))
end

--- Kills the icp-sim commands still running against `home` (those a
-- killed run left behind; an operator waits for them or kills them).
function M.kill_sims(home)
  helpers.sh("for p in /proc/[0-9]*; do grep -qsz '^ICP_SIM_HOME=" .. home .. "$' $p/environ && "
    .. "kill -9 ${p#/proc/} 2>/dev/null; done; true")
end

--- Waits until `pred()` holds (polling), or fails after 60 s.
function M.wait_for(pred, what)
  local deadline = os.time() + 60
  while not pred() do
    assert(os.time() <= deadline, "timed out waiting for " .. what)
    engine.sleep_ms(100)
  end
end

--- The number of `kind` effects (stop, snapshot_load...) committed on the
-- fleet so far.
function M.count(home, kind)
  local n = 0
  for _, e in pairs(helpers.effects(home)) do n = n + (e[kind] or 0) end
  return n
end

--- The number of stop effects committed on the fleet so far.
function M.stops(home)
  return M.count(home, "stop")
end

--- canister -> status ("running", "stopped", ...).
function M.statuses(home)
  local out = {}
  for _, m in ipairs(helpers.fleet(home).members) do out[m.canister_id] = m.status end
  return out
end

--- The members of a fleet other than its root.
function M.members(home)
  local f = helpers.fleet(home)
  local out = {}
  for _, m in ipairs(f.members) do
    if m.canister_id ~= f.root then out[#out + 1] = m.canister_id end
  end
  return out
end

--- Asserts every member but those in `stopped` (a set) runs.
function M.assert_as_found(home, stopped, label)
  for cid, s in pairs(M.statuses(home)) do
    local want = (stopped or {})[cid] and "stopped" or "running"
    assert.equal(want, s, (label or "") .. ": " .. cid)
  end
end

--- A canister's snapshot ids, as icp-sim lists them.
function M.snapshot_ids(home, cid)
  local r = helpers.icp(home, { "canister", "snapshot", "list", cid, "--json", "-e", "local" })
  assert(r.status == 0, r.stderr)
  local out = {}
  for _, s in ipairs(json.decode(r.stdout).snapshots) do out[#out + 1] = s.snapshot_id end
  return out
end

--- Snapshot ids recorded by the manifests of the backups in `dirs`.
function M.recorded(dirs)
  local out = {}
  for _, dir in ipairs(dirs) do
    local text = helpers.read(dir .. "/fleet-backup-manifest.json")
    if text then
      for _, m in ipairs(json.decode(text).fleet.members) do out[m.source_snapshot.snapshot_id] = true end
    end
  end
  return out
end

--- Sends signal `sig` to a background run once the fleet shows `stops`
-- stop effects, and returns its result.
function M.signal_after_stops(h, home, stops, sig)
  M.wait_for(function() return M.stops(home) >= stops end, stops .. " stops")
  engine.sleep_ms(300)
  engine.proc.signal(h:pid(), sig)
  local r = h:result()
  h:close()
  return r
end

return M
