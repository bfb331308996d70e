--- Off-site benchmark (issue 14 §2): a restic repository as the store.
-- A fleet of MEMBERS members with incompressible memory (icp-sim's
-- --random-memory), BACKUPS successive `backup create`s, each pushed to one
-- local repository, every member rewriting one contiguous REGION of its
-- memory at a random offset in between (icp-sim's `sim mutate --region`).
-- Measured in the same run: the repository's growth against the size of one
-- backup; the first and the last push against `restic backup` of the same
-- directory alone, from the same starting repository (a fresh one, a copy
-- of the push's); a pull + verify of the last backup against `restic
-- restore` alone plus `openssl dgst -sha256` of the files. Each baseline
-- runs just before and just after what it is compared with and counts as
-- the mean of the two (the machine is shared: a load that drifts during the
-- pair cancels out). Wall and CPU (user + system of the process tree) of
-- every step are printed; no simulated latency or bandwidth cap.
local engine = require "fleetsnap.engine"

local json = engine.json
local common = dofile(os.getenv("FLEETSNAP_SOURCE") .. "/scripts/bench/common.lua")
local run, measure, check, ROOT = common.run, common.measure, common.check, common.ROOT

local quick, keep = false, false
for _, a in ipairs(arg) do
  if a == "--quick" then
    quick = true
  elseif a == "--keep" then
    keep = true
  else
    io.stderr:write("usage: scripts/bench/offsite [--quick] [--keep]\n")
    os.exit(2)
  end
end

local KiB, MiB = 1024, 1024 * 1024
local FLEETSNAP, SIM = ROOT .. "/scripts/fleetsnap", ROOT .. "/scripts/icp-sim"
-- --quick is a smoke run (under 2 minutes): its 0.8 MiB regions are
-- smaller than restic's chunks, so its growth says little about the goal.
local MEMBERS, MEMORY, BACKUPS, REGION_PERCENT = quick and 2 or 4, (quick and 16 or 64) * MiB, quick and 6 or 10, 5
local SCATTERED_WRITE = 4 * KiB -- the scattered case's write size, on paper only

local dir = common.tempdir("fsn-bench-offsite")
local home, backups, log = dir .. "/sim", dir .. "/backups", dir .. "/sim-cpu.log"
local repo = dir .. "/repo"
local password_file = dir .. "/restic-password"
-- restic's settings for every restic this bench starts, itself or through
-- fleetsnap: the bench's password file and a cache of its own.
local ENV = { RESTIC_PASSWORD_FILE = password_file, RESTIC_CACHE_DIR = dir .. "/restic-cache",
  ICP_SIM_HOME = home }

-- {=== fleetsnap's side: every fleetsnap command line of the bench ===}

local fleetsnap_cmd = {}

function fleetsnap_cmd.create(out)
  return { FLEETSNAP, "--sim", home, "backup", "create", "--out", out }
end

function fleetsnap_cmd.push(backup_dir, repository)
  return { FLEETSNAP, "backup", "push", backup_dir, "--repo", repository }
end

function fleetsnap_cmd.pull(backup_id, repository, out)
  return { FLEETSNAP, "backup", "pull", backup_id, "--repo", repository, "--out", out }
end

function fleetsnap_cmd.verify(backup_dir)
  return { FLEETSNAP, "backup", "verify", backup_dir }
end

--- Whether this build has `backup push` and `backup pull`: true, or false
-- and why not.
function fleetsnap_cmd.available()
  local missing = {}
  for _, command in ipairs({ "push", "pull" }) do
    local r = assert(engine.proc.run({ argv = { FLEETSNAP, "backup", command, "--help" }, capture_limit = 1 << 20 }))
    if r.status ~= 0 then missing[#missing + 1] = "`fleetsnap backup " .. command .. "`" end
  end
  if #missing == 0 then return true end
  return false, "this build has no " .. table.concat(missing, " nor ")
end

-- {=== helpers ===}

local steps = {}

--- Runs argv measured (common.measure), fails on a non-zero exit, and
-- records it as a step named name.
local function step(name, argv)
  local r = check(measure(argv, ENV, log))
  steps[#steps + 1] = { name = name, wall_s = r.wall_s, cpu_s = r.cpu_ns / 1e9 }
  return r
end

local function restic(repository, ...)
  return { "restic", "-r", repository, ... }
end

--- Bytes of the regular files under path (apparent sizes: what restic
-- reads, what the repository holds).
local function bytes_of(path)
  local total = 0
  for size in run({ "find", path, "-type", "f", "-printf", "%s\n" }):gmatch("%d+") do
    total = total + math.tointeger(tonumber(size))
  end
  return total
end

local function manifest(out)
  return json.decode(assert(engine.fs.read(out .. "/fleet-backup-manifest.json")))
end

--- The push when fleetsnap has none: `restic backup` of the backup
-- directory with the tags, host and time issue 14 gives the push, its
-- restore state and locks excluded (used only when this build has no
-- `backup push`).
local function restic_push(backup_dir, repository)
  local m = manifest(backup_dir)
  -- The capture time: when the first member stopped.
  local root, created = m.source.root_canister, m.fleetsnap.consistency_window.first_stop_at // 1000000000
  return restic(repository, "backup", "--json", "--quiet", "--tag", "fleetsnap", "--tag", "backup_id=" .. m.backup_id,
    "--tag", "root=" .. root, "--tag", "policy=" .. m.fleetsnap.policy, "--host", root, "--time",
    os.date("!%Y-%m-%d %H:%M:%S", created), "--exclude", backup_dir .. "/restore", "--exclude", "*.lock", backup_dir)
end

local function restic_init(repository)
  run(restic(repository, "init", "--quiet"), ENV)
end

--- The restic snapshot that holds backup_id (found by its tag).
local function snapshot_of(backup_id)
  local list = json.decode(run(restic(repo, "snapshots", "--json", "--tag", "backup_id=" .. backup_id), ENV))
  assert(#list == 1, string.format("%d restic snapshots tagged backup_id=%s", #list, backup_id))
  return list[1].id
end

--- `restic restore` of snapshot into target, then one `openssl dgst
-- -sha256` over every file restored: the raw work of a pull + verify.
local function restore_and_hash(name, snapshot, target)
  local r = step(name .. ": restic restore", restic(repo, "restore", snapshot, "--target", target))
  local h = step(name .. ": openssl dgst -sha256 of the files",
    { "sh", "-c", 'find "$1" -type f -print0 | xargs -0 openssl dgst -sha256 -r >/dev/null', "sh", target })
  return { wall_s = r.wall_s + h.wall_s, cpu_s = (r.cpu_ns + h.cpu_ns) / 1e9, restore_s = r.wall_s, hash_s = h.wall_s }
end

local function mean(a, b)
  return { wall_s = (a.wall_s + b.wall_s) / 2, cpu_s = ((a.cpu_s or a.cpu_ns / 1e9) + (b.cpu_s or b.cpu_ns / 1e9)) / 2,
    pair = { a.wall_s, b.wall_s } }
end

-- {=== the run ===}

local have_cli, why_not = fleetsnap_cmd.available()
local push_cmd = have_cli and fleetsnap_cmd.push or restic_push
local res = { backup_bytes = {}, repo_bytes = {}, push = {} }

local ok, err = pcall(function()
  local need = MEMBERS * MEMORY * 16 + 256 * MiB
  local avail = engine.fs.free_space(dir)
  if avail < need then
    error(string.format("need %d MiB free in /tmp, have %d MiB", need // MiB, avail // MiB))
  end
  local f = assert(io.open(password_file, "w"))
  f:write("fleetsnap-bench-offsite\n")
  f:close()
  step("icp-sim sim init --random-memory", { SIM, "sim", "init", "--members", tostring(MEMBERS), "--depth", "1",
    "--heap", tostring(MEMORY), "--stable", "0", "--random-memory", "--snapshot-limit", "10" })
  run({ "mkdir", backups })
  restic_init(repo)
  res.repo_empty = bytes_of(repo)
  for k = 1, BACKUPS do
    if k > 1 then
      step(string.format("backup %d: sim mutate --all --region %d%%", k, REGION_PERCENT),
        { SIM, "sim", "mutate", "--all", "--region", REGION_PERCENT .. "%" })
    end
    local out = string.format("%s/b%02d", backups, k)
    step(string.format("backup %d: fleetsnap backup create", k), fleetsnap_cmd.create(out))
    res.backup_bytes[k] = bytes_of(out)
    local push_name = string.format("backup %d: %s", k,
      have_cli and "fleetsnap backup push" or "restic backup (tagged)")
    if k == 1 or k == BACKUPS then
      -- The baselines start where the push starts: an empty repository
      -- for the first, a copy of the push's repository for the last.
      local before, after = dir .. "/baseline-before", dir .. "/baseline-after"
      for _, b in ipairs({ before, after }) do
        if k == 1 then restic_init(b) else run({ "cp", "-a", repo, b }) end
      end
      local b1 = step(string.format("backup %d: restic backup alone (before)", k),
        restic(before, "backup", "--quiet", out))
      local p = step(push_name, push_cmd(out, repo))
      local b2 = step(string.format("backup %d: restic backup alone (after)", k),
        restic(after, "backup", "--quiet", out))
      res.push[k] = { push = p, baseline = mean(b1, b2), bytes = res.backup_bytes[k] }
      run({ "rm", "-rf", before, after })
    else
      step(push_name, push_cmd(out, repo))
    end
    res.repo_bytes[k] = bytes_of(repo)
    -- backup create keeps 2 snapshots per canister (--keep-on-canister),
    -- deleting those of the backups before: their directories can go.
    if k > 2 then run({ "rm", "-rf", string.format("%s/b%02d", backups, k - 2) }) end
  end
  local snapshots = json.decode(run(restic(repo, "snapshots", "--json", "--tag", "fleetsnap"), ENV))
  assert(#snapshots == BACKUPS, string.format("%d fleetsnap snapshots in the repository, not %d", #snapshots, BACKUPS))
  local stats = json.decode(run(restic(repo, "stats", "--mode", "raw-data", "--json"), ENV))
  res.blob_count, res.blob_bytes = stats.total_blob_count, stats.total_size
  -- Pull + verify of the last backup.
  local last_id = manifest(string.format("%s/b%02d", backups, BACKUPS)).backup_id
  local snapshot = snapshot_of(last_id)
  local b1 = restore_and_hash("pull baseline (before)", snapshot, dir .. "/restored-before")
  run({ "rm", "-rf", dir .. "/restored-before" })
  if have_cli then
    local pulled = dir .. "/pulled"
    local p = step("fleetsnap backup pull + verify", fleetsnap_cmd.pull(last_id, repo, pulled))
    check(measure(fleetsnap_cmd.verify(pulled), ENV, log))
    run({ "rm", "-rf", pulled })
    local b2 = restore_and_hash("pull baseline (after)", snapshot, dir .. "/restored-after")
    res.pull = { pull = p, baseline = mean(b1, b2), bytes = res.backup_bytes[BACKUPS] }
  else
    res.pull = { baseline = b1, bytes = res.backup_bytes[BACKUPS] }
  end
end)

-- {=== the report ===}

local function mib(n) return n / MiB end

local cores = run({ "nproc" }):gsub("%s", "")
local load = (engine.fs.read("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)") or "?"
local restic_version = (run({ "restic", "version" }):match("^(restic %S+)")) or "restic"
print(string.format("scripts/bench/offsite%s, %s, %s cores, load average %s, %s",
  #arg > 0 and " " .. table.concat(arg, " ") or "", os.date("!%Y-%m-%d %H:%M UTC"), cores, load, restic_version))
print(string.format("%d backups of %d members x %d MiB of incompressible memory (icp-sim --random-memory), "
  .. "%d%% of each member's memory rewritten in one region at a random offset between backups; one local "
  .. "repository; push: %s", BACKUPS, MEMBERS, MEMORY // MiB, REGION_PERCENT,
  have_cli and "fleetsnap backup push" or ("restic backup with the push's tags (" .. why_not .. ")")))
if quick then
  print("--quick: a smoke run; its regions are smaller than restic's chunks, the goals are the full run's")
end
print("")
print("steps (wall, CPU of the process tree):")
for _, s in ipairs(steps) do
  print(string.format("  %-58s %7.2f s  %7.2f s CPU", s.name, s.wall_s, s.cpu_s))
end
print("")

local rows = common.rows()
local size1 = res.backup_bytes[1]
if res.repo_bytes[BACKUPS] then
  local grown = res.repo_bytes[BACKUPS] - res.repo_empty
  local first = res.repo_bytes[1] - res.repo_empty
  local per = (res.repo_bytes[BACKUPS] - res.repo_bytes[1]) / (BACKUPS - 1)
  local region = MEMORY * REGION_PERCENT // 100
  rows:add(string.format("repository growth, %d backups / one backup", BACKUPS), string.format("%.2f", grown / size1),
    "<= 2.0", grown / size1 <= 2.0,
    string.format("%.1f MiB grown vs %.1f MiB a backup (plain directories: %d.0); first push +%.1f MiB (%.2fx), "
      .. "then +%.1f MiB a backup = %.2f MiB a member for a %.2f MiB region", mib(grown), mib(size1), BACKUPS,
      mib(first), first / size1, mib(per), mib(per / MEMBERS), mib(region)))
  -- Scattered small writes, on paper: the same bytes as SCATTERED_WRITE
  -- writes spread uniformly touch (almost) every chunk.
  local chunk = res.blob_bytes / res.blob_count
  local chunks = MEMORY / chunk
  local writes = region / SCATTERED_WRITE
  local untouched = math.exp(-writes / chunks)
  local scattered = 1 + (BACKUPS - 1) * (1 - untouched)
  rows:add(string.format("the same %d%% as %d KiB writes spread uniformly (arithmetic)", REGION_PERCENT,
    SCATTERED_WRITE // KiB), string.format("~%.1f", scattered), "", nil,
    string.format("%d writes over %.0f chunks of %.2f MiB (this repository's mean): a chunk escapes all of them "
      .. "with p = e^-(%d/%.0f) = %.1e, so every chunk is new each backup: 1 + %d x %.2f", writes // 1, chunks,
      mib(chunk), writes // 1, chunks, untouched, BACKUPS - 1, 1 - untouched))
end

local function ratio_row(name, goal_x, r, what, baseline_what)
  if not r then return end
  local m = r.push or r.pull
  local x = r.baseline.wall_s / m.wall_s
  rows:add(name, string.format("%.2fx", x), string.format(">= %.2gx", goal_x), x >= goal_x,
    string.format("%s %.2f s (%.1f MiB/s, CPU %.2f s) vs %s %.2f s (%.1f MiB/s, CPU %.2f s; mean of %.2f and %.2f)",
      what, m.wall_s, mib(r.bytes) / m.wall_s, m.cpu_ns / 1e9, baseline_what, r.baseline.wall_s,
      mib(r.bytes) / r.baseline.wall_s, r.baseline.cpu_s, r.baseline.pair[1], r.baseline.pair[2]))
end

if have_cli then
  ratio_row("push vs restic backup alone, first backup (empty repository)", 0.95, res.push[1], "push",
    "restic backup")
  ratio_row(string.format("push vs restic backup alone, backup %d (same repository)", BACKUPS), 0.95,
    res.push[BACKUPS], "push", "restic backup")
  ratio_row("pull + verify vs restic restore + openssl dgst", 0.9, res.pull, "pull", "restore + hash")
else
  rows:add("push vs restic backup alone", "not measured", ">= 0.95x", nil, why_not)
  if res.pull then
    rows:add("pull + verify vs restic restore + openssl dgst", "not measured", ">= 0.9x", nil,
      string.format("%s; restore + hash alone: %.2f s (%.1f MiB/s)", why_not, res.pull.baseline.wall_s,
        mib(res.pull.bytes) / res.pull.baseline.wall_s))
  end
end
rows:print()

if keep then
  print("kept: " .. dir)
else
  run({ "rm", "-rf", dir })
end
if not ok then
  io.stderr:write("bench: " .. tostring(err) .. "\n")
  os.exit(1)
end
