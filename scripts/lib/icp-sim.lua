-- The Lua entry of scripts/icp-sim (a file, so that every argument reaches arg).
os.exit(require("icp_sim.main").main(arg), true)
