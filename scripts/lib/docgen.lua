--- Writes fleetsnap(1) and the bash, zsh and fish completions from the
-- CLI's own parser (and the exit table from the error registry), so that
-- they cannot drift from the commands they describe. Run by the build:
--   lua5.4 scripts/lib/docgen.lua <out>   (writes <out>/share-style paths)
local cli = require "fleetsnap.cli"
local errors = require "fleetsnap.errors"
local settings = require "fleetsnap.cli.settings"

local M = {}

-- roff: a leading dot or quote would be a request; backslashes escape.
local function roff(text)
  text = text:gsub("\\", "\\e")
  return (text:gsub("\n([.'])", "\n\\&%1"):gsub("^([.'])", "\\&%1"))
end

--- Every command of the parser as {path = "backup create", parser = p},
-- in help order (argparse keeps them in _commands).
function M.commands(parser)
  local out = {}
  local function walk(p, path)
    for _, c in ipairs(p._commands or {}) do
      local name = path == "" and c._name or (path .. " " .. c._name)
      out[#out + 1] = { path = name, parser = c }
      walk(c, name)
    end
  end
  walk(parser, "")
  return out
end

--- The man page as one string.
function M.man_page(parser, version)
  local lines = {
    string.format('.TH FLEETSNAP 1 "" "fleetsnap %s" "User Commands"', version),
    ".SH NAME",
    "fleetsnap \\- back up and restore fleets of Internet Computer canisters",
    ".SH SYNOPSIS",
    ".nf",
    roff(parser:get_usage()),
    ".fi",
    ".SH DESCRIPTION",
    "fleetsnap discovers a fleet (a Canic root and the children in its registry, or an inventory), stops the "
      .. "selected canisters, snapshots them, starts them again, downloads, checksums and durably publishes the "
      .. "snapshots with a manifest, verifies, and restores them into the same or other canisters. Every step is "
      .. "journaled: a run interrupted at any point is resumed without doing an effect twice. It drives the icp "
      .. "CLI (1.5.0); the simulator installed with it, \\fBicp-sim\\fR (see \\fBicp-sim --help\\fR), stands "
      .. "in for icp and a network: \\fB--sim\\fR \\fIhome\\fR drives it instead of icp.",
    ".SH OPTIONS",
    ".nf",
    -- The help without its usage lines, which SYNOPSIS gives.
    roff((parser:get_help():match("\n(Options:.*)$") or parser:get_help())),
    ".fi",
    ".SH COMMANDS",
  }
  for _, c in ipairs(M.commands(parser)) do
    lines[#lines + 1] = string.format('.SS "fleetsnap %s"', c.path)
    lines[#lines + 1] = ".nf"
    lines[#lines + 1] = roff(c.parser:get_help())
    lines[#lines + 1] = ".fi"
  end
  lines[#lines + 1] = ".SH EXIT STATUS"
  local rows = {}
  for code, row in pairs(errors.REGISTRY) do
    rows[#rows + 1] = { code = code, exit = row.exit, meaning = row.meaning }
  end
  table.sort(rows, function(a, b) return a.exit < b.exit or (a.exit == b.exit and a.code < b.code) end)
  lines[#lines + 1] = ".TP\n0\nsuccess: the command did what it says (see the README's exit table for what each proves)"
  for _, r in ipairs(rows) do
    lines[#lines + 1] = string.format(".TP\n%d\n%s (%s)", r.exit, roff(r.meaning), r.code)
  end
  lines[#lines + 1] = ".SH ENVIRONMENT"
  -- The settings' variables, from the module that reads them.
  local names = settings.known()
  for _, k in ipairs(names) do
    lines[#lines + 1] = string.format(".TP\n%s\nthe %s setting (a flag wins over it; it wins over the config file)",
      settings.VARIABLES[k], k)
  end
  lines[#lines + 1] = ".TP\nFLEETSNAP_CONFIG\nthe config file to read (\\fB--config\\fR wins over it)"
  lines[#lines + 1] = ".TP\nICP_SIM_HOME\nthe simulated fleet \\fBicp-sim\\fR works on (\\fB--sim\\fR sets it)"
  lines[#lines + 1] = ".SH FILES"
  lines[#lines + 1] = ".TP\n$XDG_CONFIG_HOME/fleetsnap/config.lua (~/.config/fleetsnap/config.lua)\n"
    .. "the config file: Lua returning a table of settings (" .. table.concat(names, ", ") .. ")"
  lines[#lines + 1] = ".SH SEE ALSO"
  lines[#lines + 1] = "\\fBicp-sim --help\\fR; the README and docs/ under share/doc/fleetsnap"
  return table.concat(lines, "\n") .. "\n"
end

local function write(path, text)
  local dir = path:match("^(.*)/[^/]*$")
  -- No shell: the build directory's path is taken as it is.
  local r = require("fleetsnap.engine").proc.run({ argv = { "mkdir", "-p", "--", dir } })
  assert(r.status == 0, r.stderr)
  local f = assert(io.open(path, "w"))
  f:write(text)
  assert(f:close())
end

--- Writes every file under out (a `share` directory).
function M.write_all(out)
  local parser = cli.parser()
  write(out .. "/man/man1/fleetsnap.1", M.man_page(parser, cli.VERSION))
  write(out .. "/bash-completion/completions/fleetsnap", parser:get_bash_complete())
  write(out .. "/zsh/site-functions/_fleetsnap", parser:get_zsh_complete())
  write(out .. "/fish/vendor_completions.d/fleetsnap.fish", parser:get_fish_complete())
end

if arg and arg[0] and arg[0]:match("docgen%.lua$") and arg[1] then
  M.write_all(arg[1])
end

return M
