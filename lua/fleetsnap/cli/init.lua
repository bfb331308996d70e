--- The `fleetsnap` command line: the parser and its global options,
-- `main(argv)`, and the dispatch to the command groups (cli/backup.lua,
-- cli/restore.lua, cli/policy.lua: each adds its subcommands and has
-- their handlers). The CLI parses and renders; the domain decides.
--
-- Every failure, usage errors included, is an error object of
-- fleetsnap.errors, printed once by cli/output.lua; the exit status is the
-- registry's (README's exit table is checked against it by a spec).
local argparse = require "argparse"
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local connection = require "fleetsnap.cli.connection"
local output = require "fleetsnap.cli.output"
local settings = require "fleetsnap.cli.settings"

local M = {}

-- The version of this fleetsnap (the engine's: CMake's project version).
M.VERSION = engine.version

-- The command groups, in help order; `fleetsnap.cli.<name>` each.
M.GROUPS = { "backup", "restore", "policy" }

--- An argparse converter for an integer option of at least `min`: a bad
-- value is a usage error that names the option (argparse alone would say
-- "malformed argument", and a 0 would reach the domain).
function M.integer(option, min)
  return function(text)
    local n = text:match("^%s*[+-]?%d+%s*$") and math.tointeger(tonumber(text))
    if not n then
      return nil, string.format("%s must be an integer >= %d, got '%s'", option, min, text)
    end
    if n < min then
      return nil, string.format("%s must be an integer >= %d, got %d", option, min, n)
    end
    return n
  end
end

-- Names of the integer options (filled as the parser is built).
local integer_options = {}

--- Adds option `name` (e.g. "--concurrency") taking an integer >= min.
function M.integer_option(command, name, description, min, default)
  integer_options[name] = true
  return command:option(name, description, default):convert(M.integer(name, min))
end

-- argparse takes "-1" for an unknown option; after an integer option it is
-- that option's (bad) value, and the message must name the option. Joins
-- such a pair into "--keep-last=-1".
local function negative_values(argv)
  local out, i = {}, 1
  while i <= #argv do
    local a, b = argv[i], argv[i + 1]
    if a == "--" then
      table.move(argv, i, #argv, #out + 1, out)
      break
    end
    if integer_options[a] and b and b:match("^%-%d") then
      out[#out + 1] = a .. "=" .. b
      i = i + 2
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  return out
end

--- The whole parser: global options, then each group's commands.
function M.parser()
  local p = argparse("fleetsnap", "Back up and restore fleets of Internet Computer canisters.")
  p:help_max_width(100)
  p:flag("--version", "Print the version and exit.")
  p:mutex(p:option("--icp", "Path of the icp binary."),
    p:option("--sim", "Drive icp-sim (the bundled simulator) with this fleet home, not icp."))
  p:mutex(p:option("-e --environment", "icp environment."), p:option("-n --network", "icp network (name or URL)."))
  p:option("-k --root-key", "Root key when --network is a URL.")
  p:option("--identity", "icp identity.")
  p:option("--identity-password-file", "Password file of the identity.")
  p:option("--project-root-override", "icp project root.")
  p:option("--config", "Config file (default $XDG_CONFIG_HOME/fleetsnap/config.lua; FLEETSNAP_CONFIG).")
  M.integer_option(p, "--timeout", "Seconds each icp command may take (default per kind: 300, stop 600, "
    .. "transfers 120 + 1/MiB).", 1)
  p:flag("--json", "Print JSON (events as NDJSON while a long command runs).")
  p:flag("--debug", "Print the traceback of a failure (what a bug report needs).")
  p:command_target("command")
  for _, name in ipairs(M.GROUPS) do
    M.group(name).add(p, M)
  end
  return p
end

--- The module of command group `name` ({add = function(parser, cli),
-- handlers = {subcommand = function(args, ui)}}).
function M.group(name)
  return require("fleetsnap.cli." .. name)
end

-- Whether `flag` is among the words before a "--": a usage error is
-- reported before argparse has told us anything, yet in the form asked.
local function given(argv, flag)
  for _, a in ipairs(argv) do
    if a == "--" then return false end
    if a == flag then return true end
  end
  return false
end

--- Runs the command line `argv` (without the program name); returns the
-- exit status.
function M.main(argv)
  argv = argv or {}
  -- Before parsing: --version needs no command, wherever it is given.
  if given(argv, "--version") then
    if given(argv, "--json") then
      io.stdout:write(engine.json.encode(engine.json.ordered({ type = "version", fleetsnap = M.VERSION,
        lua = _VERSION }, { "type", "fleetsnap", "lua" })), "\n")
    else
      io.stdout:write(string.format("fleetsnap %s (%s)\n", M.VERSION, _VERSION))
    end
    return 0
  end
  local ok, args = M.parser():pparse(negative_values(argv))
  if not ok then
    local ui = output.new({ json = given(argv, "--json"), debug = given(argv, "--debug"), tty = false })
    return ui:fail(errors.new("EUSAGE", args), nil, { usage = true })
  end
  -- Flags, then FLEETSNAP_* variables, then the config file: the next steps
  -- a failure suggests spell the connection out whatever gave it.
  local sok, serr = pcall(function()
    settings.resolve(args)
    connection.normalize(args)
  end)
  local ui = output.new({ json = args.json, debug = args.debug, flags = sok and connection.flags(args) or {} })
  if not sok then return ui:fail(output.to_error(serr)) end
  local caught
  local rok, code = xpcall(function()
    if args.sim then connection.sim_root(args.sim) end
    local handler = M.group(args.command).handlers[args[args.command .. "_command"]]
    return handler(args, ui)
  end, function(v)
    -- The message is printed on its own; the traceback is only where.
    caught = { value = v, traceback = debug.traceback(nil, 2) }
    return v
  end)
  if not rok then
    caught = caught or { value = code } -- the handler itself failed (out of memory)
    return ui:fail(output.to_error(caught.value, caught.traceback), caught.traceback)
  end
  -- A handler that printed its own document may still fail the run (a
  -- verification that found problems): it returns the registry code.
  if code == nil then return 0 end
  return errors.exit_code(errors.new(code, "exit status of " .. tostring(code)))
end

return M
