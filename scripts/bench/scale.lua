--- Scale benchmark. CPU figures are fleetsnap's own: the CPU time of the
-- fleetsnap process itself (every thread), measured inside it
-- (fleetsnap-cpu.lua), so the simulator's cost, which grows with the
-- fleet, is not charged to fleetsnap; icp-sim's own is in the details. The
-- data path compares walls of runs made here one right after the other
-- (the machine is shared), best of three each. No simulated latency or
-- bandwidth cap anywhere.
local engine = require "fleetsnap.engine"

local json = engine.json
local common = dofile(os.getenv("FLEETSNAP_SOURCE") .. "/scripts/bench/common.lua")
local run, measure, check, ROOT = common.run, common.measure, common.check, common.ROOT

local quick, dry_members, only = false, nil, nil
do
  local i = 1
  while arg[i] do
    if arg[i] == "--quick" then
      quick = true
    elseif arg[i] == "--dry-run-members" and math.tointeger(tonumber(arg[i + 1])) then
      dry_members = math.tointeger(tonumber(arg[i + 1]))
      i = i + 1
    elseif arg[i] == "--only" and arg[i + 1] then
      only = {}
      for part in arg[i + 1]:gmatch("[^,]+") do only[part] = true end
      i = i + 1
    else
      io.stderr:write("usage: scripts/bench/scale [--quick] [--dry-run-members N] [--only cpu,dry,data,siblings]\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local MiB = 1024 * 1024
local FLEETSNAP, SIM = ROOT .. "/scripts/fleetsnap", ROOT .. "/scripts/icp-sim"
-- The CPU fleets: depth 3, the simulator's default 64 KiB heap + 64 KiB
-- stable memory per member, so that per-member work, not bytes, dominates.
local SMALL, LARGE, DEPTH = quick and 8 or 64, quick and 32 or 1024, 3
local CPU_FLEET = { depth = DEPTH, heap = 65536, stable = 65536, snapshot_limit = 10 }
local DRY_MEMBERS = dry_members or (quick and 1000 or 10000)
local DATA_MEMBERS, DATA_BYTES = quick and 2 or 8, (quick and 8 or 64) * MiB
local DOWNLOADS = 4 -- backup create's --downloads default
local REPEAT = 3
-- The small fleet's runs are short (about half a second of fleetsnap CPU),
-- so a burst of load on this shared machine moves one of them by a fifth:
-- the ratios compare the large run with the median of SMALL_RUNS small
-- ones, taken around it (half before, half after), so that a slow drift of
-- the machine's load weighs on both sides alike.
local SMALL_RUNS = quick and 3 or 5
-- Proving a snapshot ours reads every sibling backup of the backups
-- directory (preflight and retention, every run): SIBLINGS backups of
-- DRY_MEMBERS members, through their snapshot index vs their manifest and
-- plan.
local SIBLINGS = quick and 3 or 5

local function fmt_int(n)
  local s = tostring(math.tointeger(n) or n)
  repeat
    local k
    s, k = s:gsub("^(-?%d+)(%d%d%d)", "%1,%2")
  until k == 0
  return s
end

local function ms(ns) return ns / 1e6 end

local rows = common.rows()
local dir = common.tempdir("fsn-bench-scale")
local log = dir .. "/sim-cpu.log"

local function manifest(out)
  return json.decode(assert(engine.fs.read(out .. "/fleet-backup-manifest.json")))
end

--- {consistent = r, rolling = r, restore = {own_ns, wall_s, plan = r, run = r}}
-- for a fresh fleet of n members; each backup runs in its own copy of the
-- fleet, the restore loads the consistent backup back into its fleet.
local function cpu_runs(n)
  local base = string.format("%s/fleet-%d", dir, n)
  common.init_fleet(base, { members = n, depth = CPU_FLEET.depth, heap = CPU_FLEET.heap,
    stable = CPU_FLEET.stable, snapshot_limit = CPU_FLEET.snapshot_limit })
  local res = {}
  for _, policy in ipairs({ "consistent", "rolling" }) do
    local home, out = string.format("%s/home-%d-%s", dir, n, policy), string.format("%s/backup-%d-%s", dir, n, policy)
    run({ "cp", "-a", base, home })
    res[policy] = check(measure({ FLEETSNAP, "--sim", home, "backup", "create", "--policy", policy, "--out", out },
      nil, log))
    local got = #manifest(out).fleetsnap.members
    assert(got == n, string.format("%s backup of %d members has %d", policy, n, got))
  end
  local home, out = string.format("%s/home-%d-consistent", dir, n), string.format("%s/backup-%d-consistent", dir, n)
  local plan = check(measure({ FLEETSNAP, "--sim", home, "restore", "plan", out }, nil, log))
  local exec = check(measure({ FLEETSNAP, "--sim", home, "restore", "run", out, "--execute" }, nil, log))
  local status = json.decode(run({ FLEETSNAP, "--json", "restore", "status", out }))
  assert(status.phase == "complete", string.format("restore of %d members: %s", n, tostring(status.phase)))
  res.restore = { own_ns = plan.own_ns + exec.own_ns, sim_ns = plan.sim_ns + exec.sim_ns,
    sim_calls = plan.sim_calls + exec.sim_calls, wall_s = plan.wall_s + exec.wall_s }
  run({ "sh", "-c", string.format("rm -rf %s/fleet-%d %s/home-%d-* %s/backup-%d-*", dir, n, dir, n, dir, n) })
  return res
end

--- Best of REPEAT: a backup create of the data fleet in a fresh copy, then
-- the raw work on the snapshots it made: the same downloads straight from
-- icp-sim, DOWNLOADS at once, one hash pass over all of them, an fsync of
-- them all, one phase after the other.
local function data_path()
  local base = dir .. "/data-fleet"
  common.init_fleet(base, { members = DATA_MEMBERS, depth = 1, heap = DATA_BYTES, stable = 65536,
    snapshot_limit = 10 })
  local best_backup, best_raw, window = math.huge, { total = math.huge }, nil
  for _ = 1, REPEAT do
    local home, out, raw = dir .. "/data-home", dir .. "/data-backup", dir .. "/data-raw"
    run({ "cp", "-a", base, home })
    local b = check(measure({ FLEETSNAP, "--sim", home, "backup", "create", "--out", out }, nil, log))
    local man = manifest(out).fleetsnap
    if b.wall_s < best_backup then best_backup, window = b.wall_s, man.consistency_window.window_ns / 1e9 end
    local members = man.members
    assert(#members == DATA_MEMBERS, "data backup: " .. #members .. " members")
    run({ "mkdir", raw })
    local env = { ICP_SIM_HOME = home }
    local t = {}
    t.download = common.seconds(function()
      local running, next_i = {}, 1
      while next_i <= #members or #running > 0 do
        while #running < DOWNLOADS and next_i <= #members do
          local m = members[next_i]
          running[#running + 1] = assert(engine.proc.spawn({ argv = { SIM, "canister", "snapshot", "download",
            m.canister_id, m.snapshot_id, "--output", raw .. "/" .. m.canister_id, "-e", "local" }, env = env,
            unset_env = { "ICP_SIM_LATENCY_MS", "ICP_SIM_SHARED_BPS" }, capture_limit = 1 << 16 }))
          next_i = next_i + 1
        end
        local done = assert(engine.proc.wait_any(running))
        local r = done:result()
        if r.status ~= 0 then error("raw download: " .. r.stderr) end
        for k, h in ipairs(running) do
          if h == done then table.remove(running, k) break end
        end
      end
    end)
    t.hash = common.seconds(function() assert(engine.hash.tree(raw)) end)
    t.sync = common.seconds(function() assert(engine.fs.sync_tree(raw)) end)
    t.total = t.download + t.hash + t.sync
    if t.total < best_raw.total then best_raw = t end
    run({ "rm", "-rf", home, out, raw })
  end
  run({ "rm", "-rf", base })
  return best_backup, best_raw, window
end

-- SIBLINGS backup directories of n members each, made by the code a
-- backup's finalize uses (manifest, download journal, plan, index) from a
-- synthetic inventory: a 10,000-member backup through icp-sim would take
-- most of an hour. Then ownership.known over them, in this process (CPU
-- time, every thread), alternately with the indexes and without them
-- (moved aside), REPEAT times each: the medians.
local function siblings_run(n)
  local backup_plan = require "fleetsnap.backup.plan"
  local manifest_mod = require "fleetsnap.manifest"
  local ownership = require "fleetsnap.exec.ownership"
  local principal = require "fleetsnap.principal"
  local snapshot_index = require "fleetsnap.snapshot_index"
  local fs = engine.fs
  local parent = dir .. "/siblings"
  local connection = { sim = parent }
  assert(fs.mkdir_private(parent))
  local root = principal.canister_id(1)
  local inventory = { root = root, members = { { canister_id = root, role = "root" } } }
  local targets, artifacts, members = {}, {}, {}
  for i = 1, n do
    local cid = principal.canister_id(i + 1)
    inventory.members[i + 1] = { canister_id = cid, role = "app", parent = root }
    targets[i] = { canister_id = cid, role = "app", parent = root }
    local snap = string.format("%016x0101", i)
    artifacts[cid] = { snapshot_id = snap, artifact_path = cid, digest = ("ab"):rep(32), taken_at = i, total_size = 1 }
    members[i] = { canister_id = cid, snapshot_id = snap, stopped_at = 1, started_at = 2, downtime_ns = 1,
      digest = ("ab"):rep(32), bytes = 1, files = json.array({ { path = "a", size = 1, sha256 = ("ab"):rep(32) } }) }
  end
  local b = { backup_id = "s0", created_at = "unix:1", tool_version = engine.version, environment = "local",
    root = root, topology = { hash = ("ab"):rep(32), input = "bench" }, targets = targets, artifacts = artifacts,
    fleetsnap = { format_version = 1, policy = "consistent", policy_sha256 = ("cd"):rep(32), scope = "fleet",
      attempt = 1, consistency_window = { first_stop_at = 1, last_start_at = 2, window_ns = 1 },
      members = json.array(members) } }
  local first = parent .. "/s0"
  assert(fs.mkdir_private(first))
  assert(fs.write_replace(first .. "/inventory.json", json.encode(inventory)))
  local plan = backup_plan.build({ environment = "local" }, { inventory = first .. "/inventory.json",
    policy = "consistent", backup_id = "s0" })
  plan.connection = connection
  assert(fs.write_replace(first .. "/" .. backup_plan.FILE, json.encode(plan, { pretty = true })))
  local text = json.encode(manifest_mod.build(b), { pretty = true })
  assert(fs.write_replace(first .. "/" .. manifest_mod.DOWNLOAD_JOURNAL,
    json.encode(manifest_mod.download_journal(b), { pretty = true })))
  assert(fs.write_replace(first .. "/" .. manifest_mod.FILE_036, text))
  local plan_sum = assert(engine.hash.file(first .. "/" .. backup_plan.FILE))
  assert(snapshot_index.write(first, snapshot_index.build(json.decode(text), engine.hash.sha256(text), plan_sum,
    connection)))
  for k = 2, SIBLINGS do run({ "cp", "-r", first, parent .. "/s" .. (k - 1) }) end
  local function indexes(on)
    for k = 1, SIBLINGS do
      local d = parent .. "/s" .. (k - 1) .. "/"
      local from, to = d .. snapshot_index.FILE .. ".off", d .. snapshot_index.FILE
      if not on then from, to = to, from end
      assert(os.rename(from, to))
    end
  end
  local function cpu_of()
    collectgarbage()
    local t0 = os.clock()
    local known = ownership.known(parent, connection)
    local t = os.clock() - t0
    assert(known[string.format("%016x0101", n)], "the proof did not find the backups' snapshots")
    return t
  end
  local with, without = {}, {}
  for _ = 1, REPEAT do
    with[#with + 1] = cpu_of()
    indexes(false)
    without[#without + 1] = cpu_of()
    indexes(true)
  end
  table.sort(with)
  table.sort(without)
  local manifest_bytes = #text
  run({ "rm", "-rf", parent })
  return with[(REPEAT + 1) // 2], without[(REPEAT + 1) // 2], manifest_bytes
end

local cpu, dry, data, siblings = {}, nil, nil, nil
local ok, err = pcall(function()
  local need = (DATA_MEMBERS * DATA_BYTES) * 5 + 512 * MiB
  local avail = engine.fs.free_space(dir)
  if avail < need then
    error(string.format("need %d MiB free in /tmp, have %d MiB", need // MiB, avail // MiB))
  end
  local function wanted(part) return not only or only[part] end
  -- {=== data path ===}
  if wanted("data") then data = table.pack(data_path()) end
  -- {=== CPU per member ===}
  if wanted("cpu") then
    local small = {}
    for _ = 1, SMALL_RUNS // 2 do small[#small + 1] = cpu_runs(SMALL) end
    cpu[LARGE] = cpu_runs(LARGE)
    while #small < SMALL_RUNS do small[#small + 1] = cpu_runs(SMALL) end
    cpu[SMALL] = {}
    for _, key in ipairs({ "consistent", "rolling", "restore" }) do
      local runs = {}
      for i, r in ipairs(small) do runs[i] = r[key] end
      table.sort(runs, function(a, b) return a.own_ns < b.own_ns end)
      cpu[SMALL][key] = runs[(#runs + 1) // 2]
      cpu[SMALL][key].spread = { runs[1].own_ns, runs[#runs].own_ns }
    end
  end
  -- {=== ownership proof over sibling backups ===}
  if wanted("siblings") then siblings = table.pack(siblings_run(DRY_MEMBERS)) end
  -- {=== dry run at scale ===}
  if not wanted("dry") then return end
  local home = dir .. "/dry-fleet"
  common.init_fleet(home, { members = DRY_MEMBERS, depth = DEPTH, heap = 4096, stable = 4096, snapshot_limit = 10 })
  dry = measure({ FLEETSNAP, "--sim", home, "backup", "create", "--dry-run", "--out", dir .. "/dry-backup" }, nil, log)
end)

local cores = run({ "nproc" }):gsub("%s", "")
local load = (engine.fs.read("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)") or "?"
print(string.format("scripts/bench/scale%s, %s, %s cores, load average %s",
  #arg > 0 and " " .. table.concat(arg, " ") or "", os.date("!%Y-%m-%d %H:%M UTC"), cores, load))
print(string.format("CPU: %s vs %s members (depth %d, %d KiB heap + %d KiB stable each); dry run: %s members; "
  .. "data path: %d x %d MiB (depth 1); no simulated latency", fmt_int(SMALL), fmt_int(LARGE), DEPTH,
  CPU_FLEET.heap // 1024, CPU_FLEET.stable // 1024, fmt_int(DRY_MEMBERS), DATA_MEMBERS, DATA_BYTES // MiB))
print("")

local function per_member(name, key)
  local s, l = cpu[SMALL] and cpu[SMALL][key], cpu[LARGE] and cpu[LARGE][key]
  if not (s and l) then return end
  local ps, pl = ms(s.own_ns) / SMALL, ms(l.own_ns) / LARGE
  rows:add(string.format("%s: own CPU per member, %s vs %d members", name, fmt_int(LARGE), SMALL),
    string.format("%.2fx", pl / ps), "<= 1.2x", pl / ps <= 1.2,
    string.format("%.2f vs %.2f ms/member (median of %d runs at %d: %.2f-%.2f); at %s: fleetsnap %.1f s, icp-sim "
      .. "%.1f s in %s calls (%.1f ms each), wall %.1f s", pl, ps, SMALL_RUNS, SMALL, ms(s.spread[1]) / SMALL,
      ms(s.spread[2]) / SMALL, fmt_int(LARGE), l.own_ns / 1e9, l.sim_ns / 1e9, fmt_int(l.sim_calls),
      ms(l.sim_ns) / l.sim_calls, l.wall_s))
end
per_member("backup create (consistent)", "consistent")
per_member("backup create --policy rolling", "rolling")
per_member("restore plan + run --execute", "restore")

if dry then
  if dry.status == 0 then
    rows:add(string.format("backup create --dry-run, %s members: wall", fmt_int(DRY_MEMBERS)),
      string.format("%.2f s", dry.wall_s), "<= 10 s", dry.wall_s <= 10,
      string.format("fleetsnap %.1f s CPU, icp-sim %.1f s in %s calls", dry.own_ns / 1e9, dry.sim_ns / 1e9,
        fmt_int(dry.sim_calls)))
    rows:add(string.format("backup create --dry-run, %s members: peak RSS", fmt_int(DRY_MEMBERS)),
      string.format("%.0f MiB", dry.maxrss_kib / 1024), "<= 200 MiB", dry.maxrss_kib / 1024 <= 200,
      "largest process of the tree (fleetsnap or an icp-sim child)")
  else
    rows:add(string.format("backup create --dry-run, %s members", fmt_int(DRY_MEMBERS)), "failed", "succeeds", false,
      (dry.stderr:gsub("%s+", " "):sub(1, 200)))
  end
end

local large = cpu[LARGE] and cpu[LARGE].consistent
if large then
  local per = ms(large.own_ns) / LARGE
  rows:add(string.format("full backup of %s members: own CPU per member", fmt_int(LARGE)),
    string.format("%.2f ms", per), "<= 10 ms", per <= 10,
    string.format("the consistent run above: %.1f icp calls per member", large.sim_calls / LARGE))
end

if data then
  local b, r, window = data[1], data[2], data[3]
  rows:add(string.format("data path %d x %d MiB: backup create vs raw work (wall)", DATA_MEMBERS, DATA_BYTES // MiB),
    string.format("%.2fx", b / r.total), "<= 1.3x", b / r.total <= 1.3,
    string.format("best of %d: %.2f s (%.2f s of it stopped: stops, snapshots, starts) vs %.2f s = download %.2f "
      .. "(%d at once) + hash %.2f + fsync %.2f", REPEAT, b, window, r.total, r.download, DOWNLOADS, r.hash, r.sync))
end

if siblings then
  local with, without, bytes = siblings[1], siblings[2], siblings[3]
  rows:add(string.format("proof of ownership over %d sibling backups of %s members: manifests + plans vs indexes "
    .. "(CPU)", SIBLINGS, fmt_int(DRY_MEMBERS)), string.format("%.1fx", without / with), ">= 5x", without / with >= 5,
    string.format("median of %d: %.3f s vs %.3f s, once each at preflight and retention of every run (%.1f MiB "
      .. "manifests)", REPEAT, without, with, bytes / MiB))
end

rows:add("fresh-process hash.file vs openssl dgst", "-", ">= 0.95x", nil, "measured by scripts/bench/engine")
rows:print()

run({ "rm", "-rf", dir })
if not ok then
  io.stderr:write("bench: " .. tostring(err) .. "\n")
  os.exit(1)
end
