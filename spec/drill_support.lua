-- What the drill specs (integration and crash) share: a backed-up fleet
-- to drill, and what icp-sim's state says about scratch canisters.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local M = {}

--- A simulated fleet (sim_opts, as helpers.sim_home) backed up once, in a
-- directory of its own: {dir, home, backup, members (canister ids)}.
function M.prepare(sim_opts)
  local dir = helpers.sh("mktemp -d /tmp/fsn-drill-base-XXXXXX"):gsub("%s+$", "")
  local home = dir .. "/home"
  helpers.sh("cp -a " .. helpers.sim_home(sim_opts) .. " " .. home)
  local r = helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b" })
  assert(r.status == 0, r.stderr)
  local man = json.decode(helpers.read(dir .. "/b/fleet-backup-manifest.json"))
  local members = {}
  for i, m in ipairs(man.fleet.members) do members[i] = m.canister_id end
  return { dir = dir, home = home, backup = dir .. "/b", members = members }
end

--- icp-sim's sim.json in home.
function M.sim(home)
  return json.decode(helpers.read(home .. "/sim.json"))
end

--- Canisters made by `canister create --detached` that still exist, sorted.
function M.scratch_alive(home)
  local out = {}
  for _, id in ipairs(fs.list(home .. "/canisters") or {}) do
    local c = json.decode(helpers.read(home .. "/canisters/" .. id .. "/canister.json") or "null")
    if type(c) == "table" and c.detached then out[#out + 1] = id end
  end
  table.sort(out)
  return out
end

--- The set of canisters `canister start` was run on (icp-sim's log).
function M.started(home)
  local out = {}
  for line in (helpers.read(home .. "/log.jsonl") or ""):gmatch("[^\n]+") do
    local argv = json.decode(line).argv
    if argv[1] == "canister" and argv[2] == "start" then out[argv[3]] = true end
  end
  return out
end

--- The last line of --json output (the result document), decoded.
function M.last_doc(stdout)
  local last
  for line in stdout:gmatch("[^\n]+") do last = line end
  return assert(json.decode(last), stdout)
end

return M
