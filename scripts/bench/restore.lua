--- Restores one backup of a simulated fleet twice, from the same mutated
-- state: with the default shape (uploads while the fleet runs, parents
-- stopped first, loads in parallel, children started first) and with
-- `sequential` (upstream's one-at-a-time order). The stopped window runs
-- from the first stop issued to the last start, as the restore journal
-- recorded them.
local engine = require "fleetsnap.engine"

local json = engine.json
local common = dofile(os.getenv("FLEETSNAP_SOURCE") .. "/scripts/bench/common.lua")
local run, ROOT = common.run, common.ROOT
local MEMBERS, LATENCY_MS = common.MEMBERS, common.LATENCY_MS
local SHARED_BPS = common.SHARED_BPS

local dir = run({ "mktemp", "-d", "/tmp/fsn-bench-restore-XXXXXX" }):gsub("%s+$", "")
local base, backup = dir .. "/base", dir .. "/backup"
local results = {}
local ok, err = pcall(function()
  common.init_fleet(base)
  -- The backup itself is not measured: no latency, no bandwidth cap.
  run({ ROOT .. "/scripts/fleetsnap", "--sim", base, "backup", "create", "--out", backup, "--concurrency", "64",
    "--downloads", "16" })
  run({ ROOT .. "/scripts/icp-sim", "sim", "mutate", "--all" }, { ICP_SIM_HOME = base })
  for _, policy in ipairs({ "consistent", "sequential" }) do
    local home, b = dir .. "/home-" .. policy, dir .. "/backup-" .. policy
    run({ "cp", "-a", base, home })
    run({ "cp", "-a", backup, b })
    run({ ROOT .. "/scripts/fleetsnap", "--sim", home, "restore", "plan", b, "--policy", policy })
    local t0 = engine.monotonic_ns()
    run({ ROOT .. "/scripts/fleetsnap", "--sim", home, "restore", "run", b, "--execute" },
      { ICP_SIM_LATENCY_MS = tostring(LATENCY_MS), ICP_SIM_SHARED_BPS = tostring(SHARED_BPS) })
    local wall = (engine.monotonic_ns() - t0) / 1e9
    local status = json.decode(run({ ROOT .. "/scripts/fleetsnap", "--json", "restore", "status", b }))
    assert(status.phase == "complete", policy .. ": restore not complete")
    results[policy] = { wall = wall, window = status.window_ns / 1e9 }
  end
end)
run({ "rm", "-rf", dir })
if not ok then
  io.stderr:write("bench: " .. tostring(err) .. "\n")
  os.exit(1)
end

local c, s = results.consistent, results.sequential
print(string.format("%d members, depth 3, %d ms per call, 1 MiB each, %d MiB/s shared", MEMBERS, LATENCY_MS,
  SHARED_BPS >> 20))
print("| restore | wall s | stopped window s |")
print("|---|---|---|")
print(string.format("| default (consistent) | %.2f | %.2f |", c.wall, c.window))
print(string.format("| sequential (upstream's order) | %.2f | %.2f |", s.wall, s.window))
print("")
print("| measure | result | goal |")
print("|---|---|---|")
print(string.format("| sequential stopped window / default stopped window | %.1fx | >= 5x |", s.window / c.window))
print(string.format("| sequential wall / default wall | %.1fx | (info) |", s.wall / c.wall))
