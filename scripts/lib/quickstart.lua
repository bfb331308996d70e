--- The quickstart's round trip: each step prints the command it runs, so
-- that a new user sees the CLI; the end compares every restored canister's
-- state digest with the one it had at backup time and prints a summary.
local argparse = require "argparse"
local engine = require "fleetsnap.engine"
local driver = require "fleetsnap.drivers.icp"

local json = engine.json
local ROOT = os.getenv("FLEETSNAP_SOURCE")

local p = argparse("quickstart", "Back up a simulated fleet, change it, restore it, compare.")
p:option("--members", "Members besides the root.", "12"):convert(math.tointeger)
p:option("--dir", "Working directory (default: a new one under /tmp).")
local args = p:parse()

local function run(argv, env, quiet)
  if not quiet then
    -- Shown relative to the checkout, as a user would type it.
    local line = driver.shell_line(argv)
    if line:sub(1, #ROOT + 1) == ROOT .. "/" then line = line:sub(#ROOT + 2) end
    print("$ " .. line)
    io.stdout:flush()
  end
  local t0 = engine.monotonic_ns()
  local r = assert(engine.proc.run({ argv = argv, env = env, capture_limit = 16 << 20 }))
  local secs = (engine.monotonic_ns() - t0) / 1e9
  if r.status ~= 0 then
    io.stderr:write(r.stdout .. r.stderr)
    io.stderr:write(string.format("quickstart: %s exited %d\n", argv[1], r.status))
    os.exit(1)
  end
  if not quiet and r.stdout ~= "" then
    io.stdout:write((r.stdout:gsub("([^\n]*)\n", "  %1\n")))
    io.stdout:flush()
  end
  return r.stdout, secs
end

local dir = args.dir or run({ "mktemp", "-d", "/tmp/fleetsnap-quickstart-XXXXXX" }, nil, true):gsub("%s+$", "")
local home, out = dir .. "/sim", dir .. "/backups/demo"
local sim = { ROOT .. "/scripts/icp-sim" }
local fleetsnap = { ROOT .. "/scripts/fleetsnap", "--sim", home }
local env = { ICP_SIM_HOME = home, RUST_BACKTRACE = "0" }
local function with(prefix, ...)
  local argv = {}
  for _, a in ipairs(prefix) do argv[#argv + 1] = a end
  for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
  return argv
end
local function digests()
  local doc = json.decode((run(with(sim, "sim", "show", "--json"), env, true)))
  local out_ = {}
  for _, m in ipairs(doc.members) do out_[m.canister_id] = m.state_sha256 end
  return out_, doc.root
end

local t_start = engine.monotonic_ns()
print("== 1. a simulated fleet (icp-sim): a root and " .. args.members .. " members, 3 levels, 4 MiB each")
run(with(sim, "sim", "init", "--members", tostring(args.members), "--depth", "3", "--heap", tostring(3 << 20),
  "--stable", tostring(1 << 20), "--seed", "7"), env)

print("\n== 2. back it up with the default policy (consistent)")
local _, backup_secs = run(with(fleetsnap, "backup", "create", "--out", out), env)
local backed_up, root = digests()

print("\n== 3. verify it offline: every artifact re-hashed against the manifest")
run({ ROOT .. "/scripts/fleetsnap", "backup", "verify", out }, env)

print("\n== 4. change every canister")
run(with(sim, "sim", "mutate", "--all"), env)
local changed = 0
for cid, d in pairs(digests()) do
  if cid ~= root and d ~= backed_up[cid] then changed = changed + 1 end
end
print(string.format("  %d of %d members now differ from the backup", changed, args.members))

print("\n== 5. restore it: plan, preview, execute")
run(with(fleetsnap, "restore", "plan", out), env)
local preview = run(with(fleetsnap, "restore", "run", out), env, true)
print("$ scripts/fleetsnap --sim " .. home .. " restore run " .. out .. "   # a dry run: the icp commands, first lines")
local n = 0
for line in preview:gmatch("[^\n]+") do
  n = n + 1
  if n <= 4 then print("  " .. line) end
end
local _, restore_secs = run(with(fleetsnap, "restore", "run", out, "--execute"), env)

print("\n== 6. compare every canister with its backup")
local now = digests()
local same, total = 0, 0
for cid, d in pairs(backed_up) do
  if cid ~= root then
    total = total + 1
    if now[cid] == d then same = same + 1 else print("  MISMATCH " .. cid) end
  end
end
print(string.format("  %d/%d members have their backed-up state_sha256 again", same, total))

local man = json.decode(assert(engine.fs.read(out .. "/fleet-backup-manifest.json")))
local bytes = 0
for _, m in ipairs(man.fleetsnap.members) do bytes = bytes + m.bytes end
local status = json.decode((run({ ROOT .. "/scripts/fleetsnap", "--json", "restore", "status", out }, env, true)))
local wall = (engine.monotonic_ns() - t_start) / 1e9
local mib = bytes / (1 << 20)
print("\n== summary")
print(string.format("  members                 %d (+ root, not backed up)", total))
print(string.format("  bytes                   %.1f MiB", mib))
print(string.format("  backup                  %.2f s, %.1f MiB/s, consistency window %.3f s", backup_secs,
  mib / backup_secs, man.fleetsnap.consistency_window.window_ns / 1e9))
print(string.format("  restore                 %.2f s, %.1f MiB/s, stopped window %.3f s", restore_secs,
  mib / restore_secs, status.window_ns / 1e9))
print(string.format("  wall time               %.2f s (this script)", wall))
print(string.format("  round trip              %s", same == total and "OK" or "FAILED"))
print("  files                   " .. dir)
os.exit(same == total and 0 or 1)
