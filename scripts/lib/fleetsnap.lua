-- The Lua entry of scripts/fleetsnap.
os.exit(require("fleetsnap.cli").main(arg), true)
