-- icp-sim's entry when run as a script: `lua5.4 <this file> <args>` (what
-- scripts/icp-sim, the installed bin/icp-sim and fleetsnap's --sim run).
-- It lives with the simulator's modules so that fleetsnap finds it by the
-- module path wherever the tree is (package.searchpath("icp_sim.run")),
-- and is not a module: requiring it would exit.
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
