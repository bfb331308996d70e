-- The Lua entry of scripts/icp-sim (a file, so that every argument reaches arg).
local rc = require("icp_sim.main").main(arg)
-- A benchmark's account of the simulator's own CPU time (its process and
-- its children), so that what fleetsnap spent is the rest of the tree's.
local cpu_log = os.getenv("ICP_SIM_CPU_LOG")
if cpu_log then
  local cpu = require("fleetsnap.engine").proc.cpu()
  local f = io.open(cpu_log, "a")
  if f then
    -- One short line in append mode: concurrent simulators never interleave.
    f:write(string.format("%d\n", cpu.self_ns + cpu.children_ns))
    f:close()
  end
end
os.exit(rc, true)
