--- What the benchmark scripts share: the fleet they measure and a checked
-- runner of commands. Loaded with dofile (scripts/bench is not a module
-- path).
local engine = require "fleetsnap.engine"

local M = {}

M.ROOT = os.getenv("FLEETSNAP_ROOT")
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

--- The measured fleet: MEMBERS members in 3 levels, 1 MiB each, created in
-- home with room for many snapshots.
function M.init_fleet(home)
  M.run({ M.ROOT .. "/scripts/icp-sim", "sim", "init", "--members", tostring(M.MEMBERS), "--depth", "3",
    "--heap", tostring(M.BYTES_PER_MEMBER - 65536), "--stable", "65536", "--snapshot-limit", "100" },
    { ICP_SIM_HOME = home })
end

return M
