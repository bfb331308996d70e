--- The quickstart's round trip: one line per stage, naming the command it
-- runs so that a new user sees the CLI; what the commands print goes to a
-- log (FLEETSNAP_QUICKSTART_LOG, else quickstart.log in the working
-- directory), whose tail a failure shows. The end compares every restored
-- canister's state digest with the one it had at backup time and prints a
-- summary.
local argparse = require "argparse"
local engine = require "fleetsnap.engine"
local driver = require "fleetsnap.drivers.icp"
local units = require "fleetsnap.units"

local json = engine.json
local ROOT = os.getenv("FLEETSNAP_SOURCE")

local p = argparse("quickstart", "Back up a simulated fleet, change it, restore it, compare.")
p:option("--members", "Members besides the root.", "12"):convert(math.tointeger)
p:option("--dir", "Working directory (default: a new one under /tmp).")
local args = p:parse()

-- A command line as a user would type it: relative to the checkout.
local function shown(argv)
  local line = driver.shell_line(argv)
  if line:sub(1, #ROOT + 1) == ROOT .. "/" then line = line:sub(#ROOT + 2) end
  return line
end

local log_path, log

local function append(text)
  if log then
    log:write(text)
    log:flush()
  end
end

-- The end of a failed stage: the log's last lines and where it is.
local function fail(what)
  print("FAILED")
  if log then
    log:close()
    local lines = {}
    for line in io.lines(log_path) do lines[#lines + 1] = line end
    print("--- the last lines of " .. log_path .. ":")
    for i = math.max(1, #lines - 19), #lines do print(lines[i]) end
  end
  io.stderr:write(string.format("quickstart: %s; the whole log: %s\n", what, tostring(log_path)))
  os.exit(1)
end

-- Runs argv; its command line and output go to the log. Returns its
-- stdout and the seconds it took; a failure ends the quickstart.
local function run(argv, env)
  append("$ " .. shown(argv) .. "\n")
  local t0 = engine.monotonic_ns()
  local r = assert(engine.proc.run({ argv = argv, env = env, capture_limit = 16 << 20 }))
  local secs = (engine.monotonic_ns() - t0) / 1e9
  append(r.stdout .. r.stderr)
  if r.status ~= 0 then fail(string.format("%s exited %d", shown(argv), r.status)) end
  return r.stdout, secs
end

-- One stage on one line: what it does and the command that does it, then
-- "ok" when fn has run.
local function stage(what, argv, fn)
  io.stdout:write(what .. ": " .. shown(argv) .. " ... ")
  io.stdout:flush()
  append("== " .. what .. "\n")
  fn()
  print("ok")
end

local dir = args.dir
if not dir then
  local r = assert(engine.proc.run({ argv = { "mktemp", "-d", "/tmp/fleetsnap-quickstart-XXXXXX" } }))
  if r.status ~= 0 then fail("mktemp exited " .. r.status .. ": " .. r.stderr) end
  dir = r.stdout:gsub("%s+$", "")
end
log_path = os.getenv("FLEETSNAP_QUICKSTART_LOG") or (dir .. "/quickstart.log")
log = assert(io.open(log_path, "a"))
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
  local doc = json.decode((run(with(sim, "sim", "show", "--json"), env)))
  local out_ = {}
  for _, m in ipairs(doc.members) do out_[m.canister_id] = m.state_sha256 end
  return out_, doc.root
end

local t_start = engine.monotonic_ns()
local init = with(sim, "sim", "init", "--members", tostring(args.members), "--depth", "3", "--heap",
  tostring(3 << 20), "--stable", tostring(1 << 20), "--seed", "7")
stage("1. creating a fleet of " .. args.members .. " members (icp-sim, 3 levels, 4 MiB each)", init,
  function() run(init, env) end)

local create = with(fleetsnap, "backup", "create", "--out", out)
local backup_secs, backed_up, root
stage("2. backing it up (policy consistent)", create, function()
  backup_secs = select(2, run(create, env))
  backed_up, root = digests()
end)

local verify = { ROOT .. "/scripts/fleetsnap", "backup", "verify", out }
stage("3. verifying it offline", verify, function() run(verify, env) end)

local mutate = with(sim, "sim", "mutate", "--all")
stage("4. changing every canister", mutate, function()
  run(mutate, env)
  local changed = 0
  for cid, d in pairs(digests()) do
    if cid ~= root and d ~= backed_up[cid] then changed = changed + 1 end
  end
  if changed ~= args.members then fail(string.format("only %d of %d members changed", changed, args.members)) end
end)

local execute = with(fleetsnap, "restore", "run", out, "--execute")
local restore_secs
stage("5. restoring it (plan, dry run, execute)", execute, function()
  run(with(fleetsnap, "restore", "plan", out), env)
  run(with(fleetsnap, "restore", "run", out), env)
  restore_secs = select(2, run(execute, env))
end)

local same, total = 0, 0
stage("6. comparing every canister with its backup", with(sim, "sim", "show", "--json"), function()
  local now = digests()
  for cid, d in pairs(backed_up) do
    if cid ~= root then
      total = total + 1
      if now[cid] == d then same = same + 1 else append("MISMATCH " .. cid .. "\n") end
    end
  end
  if same ~= total then fail(string.format("%d of %d members differ from their backup", total - same, total)) end
end)

local man = json.decode(assert(engine.fs.read(out .. "/fleet-backup-manifest.json")))
local bytes = 0
for _, m in ipairs(man.fleetsnap.members) do bytes = bytes + m.bytes end
local status = json.decode((run({ ROOT .. "/scripts/fleetsnap", "--json", "restore", "status", out }, env)))
local wall = (engine.monotonic_ns() - t_start) / 1e9
local mib = bytes / (1 << 20)
print("\nsummary")
print(string.format("  members                 %d (+ root, not backed up)", total))
print("  bytes                   " .. units.bytes(bytes))
print(string.format("  backup                  %.2f s, %.1f MiB/s, consistency window %s", backup_secs,
  mib / backup_secs, units.duration(man.fleetsnap.consistency_window.window_ns)))
print(string.format("  restore                 %.2f s, %.1f MiB/s, stopped window %s", restore_secs,
  mib / restore_secs, units.duration(status.window_ns)))
print(string.format("  wall time               %.2f s (this script)", wall))
print(string.format("  round trip              %s", same == total and "OK" or "FAILED"))
print("  files                   " .. dir)
print("  log                     " .. log_path)
log:close()
os.exit(same == total and 0 or 1)
