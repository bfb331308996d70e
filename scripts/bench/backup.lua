--- Compares the bundled policies on one simulated fleet. Downtime figures
-- come from the manifest (stop and start completion times as the runner
-- recorded them); the critical path is computed from the plan: calls on the
-- longest dependency chain times the latency, plus all bytes over the
-- shared bandwidth.
local engine = require "fleetsnap.engine"

local json = engine.json
local common = dofile(os.getenv("FLEETSNAP_SOURCE") .. "/scripts/bench/common.lua")
local run, ROOT = common.run, common.ROOT
local MEMBERS, LATENCY_MS = common.MEMBERS, common.LATENCY_MS
local BYTES_PER_MEMBER, SHARED_BPS = common.BYTES_PER_MEMBER, common.SHARED_BPS

local dir = run({ "mktemp", "-d", "/tmp/fsn-bench-backup-XXXXXX" }):gsub("%s+$", "")
local base = dir .. "/base"
common.init_fleet(base)

-- Calls each operation makes on its chain.
-- A start is proved by a status call; a download first proves the snapshot
-- ours by the inventory (a snapshot list); a barrier calls nothing.
local CALLS = { stop = 1, snapshot = 1, start = 2, download = 2, barrier = 0 }
-- Rounds of calls every backup makes besides its operations: identity,
-- registry, preflight (status and list of all targets at once), the drift
-- re-read, the check that started members run, the retention listing.
local FIXED_ROUNDS = 6

--- The fastest the plan can go: the longer of its longest dependency chain
-- and its lifecycle operations spread over the concurrency bound, plus the
-- fixed rounds, plus every byte through the shared bandwidth.
local function critical_path(plan)
  local by, memo = {}, {}
  local lifecycle = 0
  for _, op in ipairs(plan.operations) do
    by[op.id] = op
    if op.kind ~= "download" then lifecycle = lifecycle + CALLS[op.kind] end
  end
  local latency = LATENCY_MS / 1000
  local function longest(id)
    if memo[id] then return memo[id] end
    local op, best = by[id], 0
    for _, a in ipairs(op.after) do best = math.max(best, longest(a)) end
    memo[id] = best + CALLS[op.kind] * latency
    return memo[id]
  end
  local chain = 0
  for id in pairs(by) do chain = math.max(chain, longest(id)) end
  local spread = math.ceil(lifecycle / plan.options.concurrency) * latency
  return math.max(chain, spread) + FIXED_ROUNDS * latency + MEMBERS * BYTES_PER_MEMBER / SHARED_BPS
end

local results = {}
local ok, err = pcall(function()
  for _, policy in ipairs({ "consistent", "rolling", "sequential" }) do
    local home = dir .. "/" .. policy
    run({ "cp", "-a", base, home })
    local out = dir .. "/out-" .. policy
    local t0 = engine.monotonic_ns()
    local args = { ROOT .. "/scripts/fleetsnap", "--sim", home, "backup", "create", "--policy", policy, "--out", out }
    if policy == "consistent" then
      for _, a in ipairs({ "--concurrency", "64", "--downloads", "16" }) do args[#args + 1] = a end
    end
    run(args, { ICP_SIM_LATENCY_MS = tostring(LATENCY_MS), ICP_SIM_SHARED_BPS = tostring(SHARED_BPS) })
    local wall = (engine.monotonic_ns() - t0) / 1e9
    local man = json.decode(assert(engine.fs.read(out .. "/fleet-backup-manifest.json")))
    local plan = json.decode(assert(engine.fs.read(out .. "/fleetsnap-plan.json")))
    local longest = 0
    for _, m in ipairs(man.fleetsnap.members) do longest = math.max(longest, m.downtime_ns / 1e9) end
    results[policy] = { wall = wall, window = man.fleetsnap.consistency_window.window_ns / 1e9, longest = longest,
      critical = critical_path(plan) }
  end
end)
run({ "rm", "-rf", dir })
if not ok then
  io.stderr:write("bench: " .. tostring(err) .. "\n")
  os.exit(1)
end

local c, r, s = results.consistent, results.rolling, results.sequential
print(string.format("%d members, depth 3, %d ms per call, 1 MiB each, %d MiB/s shared", MEMBERS, LATENCY_MS,
  SHARED_BPS >> 20))
print("| policy | wall s | downtime window s | longest member downtime s | critical path s |")
print("|---|---|---|---|---|")
for _, name in ipairs({ "consistent", "rolling", "sequential" }) do
  local x = results[name]
  print(string.format("| %s | %.2f | %.2f | %.2f | %.2f |", name, x.wall, x.window, x.longest, x.critical))
end
print("")
print("| measure | result | goal |")
print("|---|---|---|")
print(string.format("| sequential window / consistent window | %.1fx | >= 10x |", s.window / c.window))
print(string.format("| rolling longest member downtime / call latency | %.1f | <= 4 |",
  r.longest / (LATENCY_MS / 1000)))
print(string.format("| consistent wall / its critical path | %.2fx | <= 1.2x |", c.wall / c.critical))
print(string.format("| rolling wall / its critical path | %.2fx | <= 1.2x |", r.wall / r.critical))
