--- Shared helpers of the busted specs: temporary directories, file
-- writing, running Lua children with the engine on their path.
local engine = require "fleetsnap.engine"

local M = {}

M.root = os.getenv("FLEETSNAP_SOURCE") or "."
M.build = os.getenv("FLEETSNAP_BUILD") or (M.root .. "/build")

local tmp_dirs = {}

-- Coroutines of `M.crash_loop`'s cases: a process they start is spawned,
-- and the case yields its handle until the process ends.
local workers = setmetatable({}, { __mode = "k" })

--- Runs a process to its end (`engine.proc.run`); inside a crash-loop case
-- the case waits for it while the other case runs.
local function run(opts)
  if workers[coroutine.running()] then
    return coroutine.yield(assert(engine.proc.spawn(opts)))
  end
  return engine.proc.run(opts)
end

--- A fresh directory under /tmp, removed by `M.cleanup()`.
function M.tmpdir()
  local r = run({ argv = { "mktemp", "-d", "/tmp/fsn-spec-XXXXXX" } })
  assert(r.status == 0, r.stderr)
  local dir = r.stdout:gsub("%s+$", "")
  tmp_dirs[#tmp_dirs + 1] = dir
  return dir
end

-- Directories made once per process (M.lasting), kept across cleanup()
-- and removed when the process closes its Lua state.
local lasting = setmetatable({}, { __gc = function(t)
  for _, dir in pairs(t) do os.execute("rm -rf '" .. dir .. "'") end
end })

--- A directory made once per process by make(dir) and kept across
-- cleanup(), for a fixture that is slow to build and copied per test
-- (a restic repository: its key derivation takes a second).
function M.lasting(key, make)
  local dir = lasting[key]
  if dir and engine.fs.lstat(dir) then return dir end
  local r = run({ argv = { "mktemp", "-d", "/tmp/fsn-spec-lasting-XXXXXX" } })
  assert(r.status == 0, r.stderr)
  dir = r.stdout:gsub("%s+$", "")
  make(dir)
  lasting[key] = dir
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
  local r = run({ argv = { "sh", "-c", cmd }, unset_env = { "LD_PRELOAD" } })
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
  return run(opts)
end

--- Runs scripts/icp-sim against `home` with argv (array) and extra env.
function M.icp(home, argv, env)
  local e = { ICP_SIM_HOME = home, RUST_BACKTRACE = "0", DO_NOT_TRACK = "1" }
  for k, v in pairs(env or {}) do e[k] = v end
  local full = { M.root .. "/scripts/icp-sim" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return assert(run({ argv = full, env = e, unset_env = { "LD_PRELOAD" }, timeout_ms = 120000,
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
  return assert(run({ argv = full, env = e, unset_env = { "LD_PRELOAD" }, timeout_ms = 300000,
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
  local r = run({ argv = argv, env = e, unset_env = { "LD_PRELOAD" }, timeout_ms = 300000 })
  assert(r.status == 0, r.stderr)
  local points, count = {}, {}
  for line in M.read(trace):gmatch("[^\n]+") do
    count[line] = (count[line] or 0) + 1
    points[#points + 1] = line .. ":" .. count[line]
  end
  return points
end

--- The site of a failpoint: the point with every canister id in its key
-- masked, so the same journal record or effect for members 2..6 is one
-- site ("before-append@stop-<id>:2"), while different records, barriers
-- and repeats of a key stay apart.
function M.failpoint_site(point)
  return (point:gsub("%f[%w]%w%w%w%w%w%-%w%w%w%w%w%-%w%w%w%w%w%-%w%w%w%w%w%-cai%f[^%w]", "<id>"))
end

-- A 64-bit hash of the seed and a failpoint (FNV-1a, then splitmix64's
-- finaliser): a point's rank depends on nothing but the seed and its own
-- name, so a change elsewhere in the trace (a failpoint added or dropped)
-- does not reshuffle which of the others are chosen.
local function rank(seed, point)
  local h = 0xcbf29ce484222325
  for i = 1, #point do
    h = (h ~ point:byte(i)) * 0x100000001b3
  end
  h = h ~ seed
  h = (h ~ (h >> 30)) * 0xbf58476d1ce4e5b9
  h = (h ~ (h >> 27)) * 0x94d049bb133111eb
  return h ~ (h >> 31)
end

--- The sampling settings of the crash loops, from the environment:
-- FLEETSNAP_CRASH_ALL=1 kills at every failpoint; FLEETSNAP_CRASH_SEED
-- (an integer) picks the sample, by default the UTC date (YYYYMMDD), so
-- the sample moves from day to day and, over days, reaches every point.
function M.crash_sampling()
  local seed = os.getenv("FLEETSNAP_CRASH_SEED")
  return {
    all = os.getenv("FLEETSNAP_CRASH_ALL") == "1",
    seed = seed and assert(math.tointeger(tonumber(seed)), "FLEETSNAP_CRASH_SEED must be an integer")
      or math.tointeger(tonumber(os.date("!%Y%m%d"))),
  }
end

--- Which of `points` (a trace from `M.failpoints`) a crash loop kills at.
-- Every site (`M.failpoint_site`) is kept: with `opts.per_site = "ends"`
-- its first and last occurrence (the first and the last member to pass
-- it), else the one occurrence the seed ranks first. The first and last
-- failpoint of the run are always kept, and `opts.extra` more of the rest,
-- the ones the seed ranks first. `opts.all` keeps every point. Returns the
-- chosen points in trace order and the number of sites.
function M.choose_failpoints(points, opts)
  local sites, order = {}, {}
  for i, p in ipairs(points) do
    local s = M.failpoint_site(p)
    if not sites[s] then
      sites[s] = {}
      order[#order + 1] = s
    end
    table.insert(sites[s], i)
  end
  if opts.all then return table.move(points, 1, #points, 1, {}), #order end
  local keep = { [1] = #points > 0 or nil, [#points] = #points > 0 or nil }
  local function best(list)
    local b
    for _, i in ipairs(list) do
      if not b or math.ult(rank(opts.seed, points[i]), rank(opts.seed, points[b])) then b = i end
    end
    return b
  end
  for _, s in ipairs(order) do
    local list = sites[s]
    if opts.per_site == "ends" then
      keep[list[1]], keep[list[#list]] = true, true
    else
      keep[best(list)] = true
    end
  end
  local rest = {}
  for i = 1, #points do
    if not keep[i] then rest[#rest + 1] = i end
  end
  table.sort(rest, function(a, b)
    local ra, rb = rank(opts.seed, points[a]), rank(opts.seed, points[b])
    if ra == rb then return a < b end
    return math.ult(ra, rb)
  end)
  for k = 1, math.min(opts.extra or 0, #rest) do keep[rest[k]] = true end
  local chosen = {}
  for i, p in ipairs(points) do
    if keep[i] then chosen[#chosen + 1] = p end
  end
  return chosen, #order
end

--- Traces argv (`M.failpoints`) and chooses where to kill it
-- (`M.choose_failpoints`, with the environment's `M.crash_sampling`). The
-- choice is printed with its seed, so a failing sample can be run again.
function M.crash_points(label, argv, opts)
  local points = M.failpoints(argv)
  local sampling = M.crash_sampling()
  local o = { per_site = opts.per_site, extra = opts.extra, seed = sampling.seed, all = sampling.all }
  local chosen, sites = M.choose_failpoints(points, o)
  io.stderr:write(string.format("# %s: killing at %d of %d failpoints (%d sites)%s, FLEETSNAP_CRASH_SEED=%d\n",
    label, #chosen, #points, sites, o.all and " (FLEETSNAP_CRASH_ALL=1)" or "", o.seed))
  return chosen, sites, #points
end

--- The crash loop: for each failpoint, `setup(point)` returns a case
-- {argv, work, ...} on a fresh copy; the run is killed there (SIGKILL),
-- then `recover(case)` runs it to completion and checks it. Each case's
-- `work` directory is removed.
--
-- Two cases run at a time, one per core, each in a coroutine from its kill
-- through its recovery and checks: the processes a case starts through
-- these helpers are spawned and the case yields until they end, so one
-- case's recovery overlaps the other's, instead of recoveries running one
-- after the other on one core. Cases share nothing but the read-only
-- prepared copies they start from.
function M.crash_loop(points, setup, recover)
  local next_point, waiting = 1, {}
  local start
  local function step(co, value)
    local ok, h = coroutine.resume(co, value)
    if not ok then
      for _, w in ipairs(waiting) do w.h:close() end
      error(type(h) == "string" and debug.traceback(co, h) or h, 0)
    end
    if coroutine.status(co) == "dead" then
      workers[co] = nil
      return start()
    end
    waiting[#waiting + 1] = { h = h, co = co }
  end
  start = function()
    if next_point > #points then return end
    local point = points[next_point]
    next_point = next_point + 1
    local co = coroutine.create(function()
      local case = setup(point)
      case.point = point
      local r = run({ argv = case.argv, env = { FLEETSNAP_FAILPOINT = point, RUST_BACKTRACE = "0" },
        unset_env = { "LD_PRELOAD" }, timeout_ms = 120000 })
      -- Killed by its failpoint: not finished, not timed out, and the
      -- engine's last words name the point.
      assert(not r.timed_out, point .. ": timed out")
      assert(r.signal == 9, point .. ": the failpoint was not reached: " .. r.stderr)
      local want = "fleetsnap failpoint " .. point:gsub(":%d+$", "") .. ": kill"
      assert(r.stderr:find(want, 1, true), point .. ": killed elsewhere: " .. r.stderr)
      recover(case)
      M.sh("rm -rf " .. case.work)
    end)
    workers[co] = true
    step(co)
  end
  start()
  start()
  while #waiting > 0 do
    local hs = {}
    for i, w in ipairs(waiting) do hs[i] = w.h end
    local h = assert(engine.proc.wait_any(hs))
    for i, w in ipairs(waiting) do
      if w.h == h then
        table.remove(waiting, i)
        local r = h:result()
        h:close()
        step(w.co, r)
        break
      end
    end
  end
end

function M.effects(home)
  local r = M.icp(home, { "sim", "effects", "--json" })
  assert(r.status == 0, r.stderr)
  return assert(engine.json.decode(r.stdout))
end

return M
