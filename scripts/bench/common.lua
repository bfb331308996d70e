--- What the benchmark scripts share: the fleet they measure, a checked
-- runner of commands, a measured one (wall, CPU and peak RSS of the process
-- tree, less what icp-sim reports it spent) and the table of goals they
-- print. Loaded with dofile (scripts/bench is not a module path).
local engine = require "fleetsnap.engine"

local M = {}

M.ROOT = os.getenv("FLEETSNAP_SOURCE")
M.quick = arg[1] == "--quick"
M.MEMBERS, M.LATENCY_MS = M.quick and 16 or 64, M.quick and 50 or 200
M.BYTES_PER_MEMBER = 1024 * 1024
M.SHARED_BPS = 8 * 1024 * 1024

--- Runs argv; its stdout, or an error naming the command.
function M.run(argv, env)
  local r = assert(engine.proc.run({ argv = argv, env = env, capture_limit = 16 << 20 }))
  if r.status ~= 0 then error(table.concat(argv, " ") .. ": " .. r.stderr) end
  return r.stdout
end

--- A fresh directory in /tmp named after prefix.
function M.tempdir(prefix)
  return (M.run({ "mktemp", "-d", "/tmp/" .. prefix .. "-XXXXXX" }):gsub("%s+$", ""))
end

--- Seconds f took.
function M.seconds(f)
  local t0 = engine.monotonic_ns()
  f()
  return (engine.monotonic_ns() - t0) / 1e9
end

--- Runs argv with a fresh icp-sim CPU log; returns the proc.run result
-- plus wall_s, sim_ns and sim_calls (what the icp-sim processes reported),
-- and own_ns: for scripts/fleetsnap, the CPU of fleetsnap's own process
-- (every thread), measured inside it by scripts/bench/fleetsnap-cpu.lua;
-- its other children (a realpath) are not counted. No simulated latency or
-- bandwidth cap.
function M.measure(argv, env, cpu_log)
  os.remove(cpu_log)
  local own_log = cpu_log .. ".own"
  os.remove(own_log)
  local full = argv
  if argv[1] == M.ROOT .. "/scripts/fleetsnap" then
    full = { "lua5.4", M.ROOT .. "/scripts/bench/fleetsnap-cpu.lua", own_log, table.unpack(argv, 2) }
  end
  local e = { ICP_SIM_CPU_LOG = cpu_log }
  for k, v in pairs(env or {}) do e[k] = v end
  local t0 = engine.monotonic_ns()
  local r = assert(engine.proc.run({ argv = full, env = e, capture_limit = 1 << 20,
    unset_env = { "ICP_SIM_LATENCY_MS", "ICP_SIM_SHARED_BPS" } }))
  r.wall_s = (engine.monotonic_ns() - t0) / 1e9
  r.sim_ns, r.sim_calls = 0, 0
  local f = io.open(cpu_log, "r")
  if f then
    for line in f:lines() do
      r.sim_ns, r.sim_calls = r.sim_ns + assert(math.tointeger(tonumber(line)), cpu_log), r.sim_calls + 1
    end
    f:close()
  end
  local own = engine.fs.read(own_log)
  r.own_ns = own and math.tointeger(tonumber(own)) or (r.cpu_ns - r.sim_ns)
  r.argv = argv
  return r
end

--- r (a M.measure result), or an error naming its command when it failed.
function M.check(r)
  if r.status ~= 0 then error(table.concat(r.argv, " ") .. ": " .. r.stderr) end
  return r
end

--- A simulated fleet in home: opts.members (default MEMBERS) members in
-- opts.depth (3) levels, opts.heap + opts.stable bytes each (1 MiB in
-- all), room for opts.snapshot_limit (100) snapshots per canister.
function M.init_fleet(home, opts)
  opts = opts or {}
  M.run({ M.ROOT .. "/scripts/icp-sim", "sim", "init", "--members", tostring(opts.members or M.MEMBERS),
    "--depth", tostring(opts.depth or 3), "--heap", tostring(opts.heap or M.BYTES_PER_MEMBER - 65536),
    "--stable", tostring(opts.stable or 65536), "--snapshot-limit", tostring(opts.snapshot_limit or 100) },
    { ICP_SIM_HOME = home })
end

--- A table of goals: rows:add(measure, result, goal, met, detail), met
-- true (PASS), false (MISS) or nil (information only); rows:print().
function M.rows()
  local t = {}
  function t:add(name, value, goal, ok, detail)
    self[#self + 1] = { name, value, goal or "", ok == nil and "" or (ok and "PASS" or "MISS"), detail or "" }
  end
  function t:print()
    local header = { "measure", "result", "goal", "met", "detail" }
    local all = { header, table.unpack(self) }
    local widths = { 0, 0, 0, 0 }
    for _, r in ipairs(all) do
      for i = 1, 4 do widths[i] = math.max(widths[i], #r[i]) end
    end
    for _, r in ipairs(all) do
      print(string.format("| %-" .. widths[1] .. "s | %" .. widths[2] .. "s | %-" .. widths[3] .. "s | %-"
        .. widths[4] .. "s | %s |", r[1], r[2], r[3], r[4], r[5]))
      if r == header then
        print(string.format("|%s|%s|%s|%s|---|", string.rep("-", widths[1] + 2), string.rep("-", widths[2] + 2),
          string.rep("-", widths[3] + 2), string.rep("-", widths[4] + 2)))
      end
    end
  end
  return t
end

return M
