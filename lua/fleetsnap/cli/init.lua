--- The `fleetsnap` command line: the parser and its global options,
-- `main(argv)`, and the dispatch to the command groups (cli/backup.lua,
-- cli/restore.lua, cli/snapshots.lua, cli/policy.lua: each adds its subcommands and has
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
M.GROUPS = { "backup", "restore", "snapshots", "policy" }

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
  return command:option(name, description, default):argname("N"):convert(M.integer(name, min))
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

-- The global options, in help order: {names, argname, description, flag =
-- true for a switch, mutex = a name shared by the options of one mutex}.
-- Data, because two helps show them: the top help's Options and each
-- command's "Global options".
M.GLOBAL = {
  { "--version", nil, "Print the version and exit.", flag = true },
  { "--icp", "PATH", "Path of the icp binary.", mutex = "driver" },
  { "--sim", "HOME", "Drive icp-sim (the bundled simulator) with this fleet home, not icp.", mutex = "driver" },
  { "-e --environment", "ENV", "icp environment.", mutex = "net" },
  { "-n --network", "NET", "icp network (name or URL).", mutex = "net" },
  { "-k --root-key", "KEY", "Root key when --network is a URL." },
  { "--identity", "NAME", "icp identity." },
  { "--identity-password-file", "FILE", "Password file of the identity." },
  { "--project-root-override", "DIR", "icp project root." },
  { "--config", "FILE", "Config file (default $XDG_CONFIG_HOME/fleetsnap/config.lua; FLEETSNAP_CONFIG)." },
  { "--timeout", "S", "Seconds each icp command may take (default per kind: 300, stop 600, transfers "
    .. "120 + 1/MiB).", integer = 1 },
  { "--json", nil, "Print JSON (events as NDJSON while a long command runs).", flag = true },
  { "-q --quiet", nil, "Print failures only: no progress line, no result.", flag = true, mutex = "talk" },
  { "-v --verbose", nil, "Print each icp command as it starts.", flag = true, mutex = "talk" },
  { "--debug", nil, "Print the traceback of a failure (what a bug report needs).", flag = true },
}

-- Global options that take a value (the word after them is not a command).
local VALUED = {}
for _, g in ipairs(M.GLOBAL) do
  if not g.flag then
    for name in g[1]:gmatch("%S+") do VALUED[name] = true end
  end
end

-- Column and width of the help text (argparse's defaults, and our width).
local HELP_WIDTH, DESCRIPTION_AT = 100, 25

local function label(g)
  return (g[1]:gsub(" ", ", ")) .. (g[2] and (" " .. g[2]) or "")
end

-- `text` broken at spaces into lines of at most `width` characters.
local function wrap(text, width)
  local lines, line = {}, nil
  for word in text:gmatch("%S+") do
    if line and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = nil
    end
    line = line and (line .. " " .. word) or word
  end
  lines[#lines + 1] = line
  return lines
end

--- The "Global options" section of a command's help, laid out like
-- argparse's own option lists.
function M.global_help()
  local out = { "Global options (before or after the command):" }
  for _, g in ipairs(M.GLOBAL) do
    local l = "   " .. label(g)
    local desc = wrap(g[3], HELP_WIDTH - DESCRIPTION_AT)
    if #l >= DESCRIPTION_AT then
      out[#out + 1] = l
      l = ""
    end
    for _, d in ipairs(desc) do
      out[#out + 1] = l .. string.rep(" ", DESCRIPTION_AT - #l) .. d
      l = ""
    end
  end
  return table.concat(out, "\n")
end

--- A subcommand `name` of `parent` (argparse's command) whose help ends
-- with the global options: argparse shows a command's own options only,
-- yet `fleetsnap backup create --help` is where an operator looks for --sim.
function M.command(parent, name, description)
  return parent:command(name, description):epilog(M.global_help())
end

--- Command group `name` of parser `p` (`fleetsnap backup`): its command
-- lands in args.<name>_command; a missing one is reported by main, naming
-- the commands there are (argparse would only say "a command is required").
function M.group_command(p, name, description)
  local g = M.command(p, name, description)
  g:command_target(name .. "_command")
  g:require_command(false)
  g:usage("Usage: fleetsnap " .. name .. " [-h] <command> ...")
  return g
end

--- The whole parser: global options, then each group's commands.
function M.parser()
  local p = argparse("fleetsnap", "Back up and restore fleets of Internet Computer canisters.")
  p:help_max_width(HELP_WIDTH)
  local mutexes, order = {}, {}
  for _, g in ipairs(M.GLOBAL) do
    local o
    if g.flag then
      o = p:flag(g[1], g[3])
    elseif g.integer then
      o = M.integer_option(p, g[1], g[3], g.integer):argname(g[2])
    else
      o = p:option(g[1], g[3]):argname(g[2])
    end
    if g[1]:find(" ", 1, true) and g[2] then
      -- argparse 0.7 puts each alias of an option with a value on a line
      -- of its own, right-aligned, and the description beside the first:
      -- "-e, --environment ENV" on one line instead.
      local text = label(g)
      o._get_label_lines = function() return { text } end
    end
    if g.mutex then
      if not mutexes[g.mutex] then
        mutexes[g.mutex] = {}
        order[#order + 1] = g.mutex
      end
      table.insert(mutexes[g.mutex], o)
    end
  end
  for _, m in ipairs(order) do p:mutex(table.unpack(mutexes[m])) end
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

--- The command words of command line `argv` as far as they name a group
-- and one of its commands ({"backup", "create"}, {"backup"}, {}): what a
-- usage error names, and whose --help it points to, when argparse has
-- refused the line.
function M.command_words(argv)
  local words, i = {}, 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then break end
    if a:sub(1, 1) == "-" then
      if VALUED[a] then i = i + 1 end
    elseif #words == 0 then
      local known = false
      for _, g in ipairs(M.GROUPS) do known = known or g == a end
      if not known then break end
      words[1] = a
    else
      if M.group(words[1]).handlers[a] then words[2] = a end
      break
    end
    i = i + 1
  end
  return words
end

-- The names of group `name`'s commands, sorted.
local function subcommands(name)
  local out = {}
  for k in pairs(M.group(name).handlers) do out[#out + 1] = k end
  table.sort(out)
  return table.concat(out, ", ")
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
    local words = M.command_words(argv)
    local ui = output.new({ json = given(argv, "--json"), debug = given(argv, "--debug"), tty = false, argv = argv,
      command = words })
    return ui:fail(errors.new("EUSAGE", (#words > 0 and (table.concat(words, " ") .. ": ") or "") .. args))
  end
  local sub = args.command and args[args.command .. "_command"]
  -- Flags, then FLEETSNAP_* variables, then the config file: the next steps
  -- a failure suggests spell the connection out whatever gave it.
  local sok, serr = pcall(function()
    settings.resolve(args)
    connection.normalize(args)
  end)
  local ui = output.new({ json = args.json, debug = args.debug, flags = sok and connection.flags(args) or {},
    argv = argv, command = { args.command, sub }, quiet = args.quiet, verbose = args.verbose })
  if not sok then return ui:fail(output.to_error(serr)) end
  local caught
  local rok, code = xpcall(function()
    -- A group may name the command it runs alone (`fleetsnap snapshots`).
    if not sub and M.group(args.command).DEFAULT then sub = M.group(args.command).DEFAULT end
    if not sub then
      errors.raise("EUSAGE", string.format("%s needs a command: %s", args.command, subcommands(args.command)))
    end
    if args.sim then connection.sim_root(args.sim) end
    return M.group(args.command).handlers[sub](args, ui)
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
