-- The Lua entry of scripts/fleetsnap. A CLI that cannot even be loaded (a
-- module missing from the install) is an internal error as well: exit 70
-- with the reason, not lua5.4's traceback and 1.
local ok, cli = pcall(require, "fleetsnap.cli")
if not ok then
  io.stderr:write("fleetsnap: internal error: cannot load the CLI: " .. tostring(cli) .. "\n")
  os.exit(70)
end
os.exit(cli.main(arg), true)
