-- scripts/fleetsnap for benchmarks: runs the CLI in this process, then
-- writes this process's own CPU time (every thread: the scheduler and the
-- hashing tasks) to the file named by argv[1]. Its children (icp-sim)
-- account for themselves; what a process spends tearing down after the
-- write is the only CPU of fleetsnap not counted.
local out = table.remove(arg, 1)
local rc = require("fleetsnap.cli").main(arg)
local f = assert(io.open(out, "w"))
f:write(string.format("%d\n", require("fleetsnap.engine").proc.cpu().self_ns))
f:close()
os.exit(rc, true)
