--- Shared helpers of the busted specs: temporary directories, file
-- writing, running Lua children with the engine on their path.
local engine = require "fleetsnap.engine"

local M = {}

M.root = os.getenv("FLEETSNAP_ROOT") or "."
M.build = os.getenv("FLEETSNAP_BUILD") or (M.root .. "/build")

local tmp_dirs = {}

--- A fresh directory under /tmp, removed by `M.cleanup()`.
function M.tmpdir()
  local r = engine.proc.run({ argv = { "mktemp", "-d", "/tmp/fsn-spec-XXXXXX" } })
  assert(r.status == 0, r.stderr)
  local dir = r.stdout:gsub("%s+$", "")
  tmp_dirs[#tmp_dirs + 1] = dir
  return dir
end

function M.cleanup()
  for i = #tmp_dirs, 1, -1 do
    engine.proc.run({ argv = { "rm", "-rf", tmp_dirs[i] } })
    tmp_dirs[i] = nil
  end
end

function M.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local data = f:read("a")
  f:close()
  return data
end

--- Runs a shell command (test tooling: under AddressSanitizer the runtime is
-- not preloaded into it, since some tools such as ps deadlock with it).
function M.sh(cmd)
  local r = engine.proc.run({ argv = { "sh", "-c", cmd }, unset_env = { "LD_PRELOAD" } })
  assert(r.status == 0, cmd .. ": " .. r.stderr)
  return r.stdout
end

--- Runs a Lua chunk in a child lua5.4 with the same module paths.
function M.lua(code, env)
  local opts = {
    argv = { "lua5.4", "-e", code },
    env = {
      LUA_PATH = package.path,
      LUA_CPATH = package.cpath,
    },
    timeout_ms = 60000,
  }
  for k, v in pairs(env or {}) do
    opts.env[k] = v
  end
  return engine.proc.run(opts)
end

--- Runs scripts/icp-sim against `home` with argv (array) and extra env.
function M.icp(home, argv, env)
  local e = { ICP_SIM_HOME = home, RUST_BACKTRACE = "0", DO_NOT_TRACK = "1" }
  for k, v in pairs(env or {}) do e[k] = v end
  local full = { M.root .. "/scripts/icp-sim" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return assert(engine.proc.run({ argv = full, env = e, unset_env = { "LD_PRELOAD" }, timeout_ms = 120000,
    capture_limit = 8 << 20 }))
end

--- A fresh simulated fleet; `opts` are `sim init` options. Prepared homes
-- are cached per option set and copied, so each test starts from the same
-- state at little cost.
local prepared = {}
function M.sim_home(opts)
  opts = opts or {}
  local key = string.format("%d/%d/%d/%d/%d", opts.members or 6, opts.depth or 2, opts.heap or 65536,
    opts.stable or 65536, opts.seed or 1)
  if not prepared[key] then
    local dir = M.tmpdir() .. "/prepared"
    local r = M.icp(dir, { "sim", "init", "--members", tostring(opts.members or 6), "--depth",
      tostring(opts.depth or 2), "--heap", tostring(opts.heap or 65536), "--stable", tostring(opts.stable or 65536),
      "--seed", tostring(opts.seed or 1) })
    assert(r.status == 0, r.stderr)
    prepared[key] = dir
    tmp_dirs[#tmp_dirs] = nil -- kept for the whole run
  end
  local home = M.tmpdir() .. "/home"
  M.sh("cp -a " .. prepared[key] .. " " .. home)
  return home
end

--- Runs scripts/fleetsnap with argv against icp-sim `home`.
function M.fleetsnap(home, argv, env)
  local e = { RUST_BACKTRACE = "0" }
  for k, v in pairs(env or {}) do e[k] = v end
  local full = { M.root .. "/scripts/fleetsnap" }
  if home then
    full[#full + 1] = "--sim"
    full[#full + 1] = home
  end
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return assert(engine.proc.run({ argv = full, env = e, unset_env = { "LD_PRELOAD" }, timeout_ms = 300000,
    capture_limit = 8 << 20 }))
end

--- The fleet of a home: root id and members (from `sim show --json`).
function M.fleet(home)
  local r = M.icp(home, { "sim", "show", "--json" })
  assert(r.status == 0, r.stderr)
  return assert(engine.json.decode(r.stdout))
end

--- Each canister's state digest (`state_sha256`), by canister id.
function M.digests(home)
  local out = {}
  for _, m in ipairs(M.fleet(home).members) do out[m.canister_id] = m.state_sha256 end
  return out
end

--- Runs argv once with FLEETSNAP_FAILPOINT_TRACE: every failpoint the run
-- reaches, in order, as "<point>@<key>:<n>" (n counts repeats).
function M.failpoints(argv, env)
  local trace = M.tmpdir() .. "/trace"
  local e = { FLEETSNAP_FAILPOINT_TRACE = trace, RUST_BACKTRACE = "0" }
  for k, v in pairs(env or {}) do e[k] = v end
  local r = engine.proc.run({ argv = argv, env = e, unset_env = { "LD_PRELOAD" }, timeout_ms = 300000 })
  assert(r.status == 0, r.stderr)
  local points, count = {}, {}
  for line in M.read(trace):gmatch("[^\n]+") do
    count[line] = (count[line] or 0) + 1
    points[#points + 1] = line .. ":" .. count[line]
  end
  return points
end

--- The crash loop: for each failpoint, `setup(point)` returns a case
-- {argv, work, ...} on a fresh copy; the run is killed there (SIGKILL),
-- then `recover(case)` runs it to completion and checks it. Two cases run
-- at a time (one per core); each case's `work` directory is removed.
function M.crash_loop(points, setup, recover)
  local i = 1
  while i <= #points do
    local batch = {}
    for k = i, math.min(i + 1, #points) do
      local case = setup(points[k])
      case.point = points[k]
      case.h = engine.proc.spawn({ argv = case.argv, env = { FLEETSNAP_FAILPOINT = points[k], RUST_BACKTRACE = "0" },
        unset_env = { "LD_PRELOAD" }, timeout_ms = 120000 })
      batch[#batch + 1] = case
    end
    for _, case in ipairs(batch) do
      local r = case.h:result()
      case.h:close()
      assert(r.signal == 9, case.point .. ": the failpoint was not reached: " .. r.stderr)
      recover(case)
      M.sh("rm -rf " .. case.work)
    end
    i = i + #batch
  end
end

function M.effects(home)
  local r = M.icp(home, { "sim", "effects", "--json" })
  assert(r.status == 0, r.stderr)
  return assert(engine.json.decode(r.stdout))
end

return M
