--- Where a run's settings come from, and in which order:
--   a new run:                flag > FLEETSNAP_* variable > config file > default
--   a run that continues one  flag > the plan's recorded connection > variable > file
--   (resume, retry, undo...)
-- The settings are the connection (how icp reaches which network as whom)
-- plus the backups directory and the root principal. The config file is
-- Lua, like policies: a chunk that returns a table, run in the policy
-- sandbox (no io, no os but os.getenv, an instruction budget).
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local sandbox = require "fleetsnap.sandbox"
local connection = require "fleetsnap.cli.connection"

local fs = engine.fs

local M = {}

-- The connection, in the order flags print (cli/connection.lua's flags).
M.CONNECTION = { "sim", "icp", "environment", "network", "root_key", "identity", "identity_password_file",
  "project_root_override" }

-- Every setting a variable or the config file may give, and its variable.
-- `sim` has none: a simulated fleet is named on the command line (or
-- recorded by the run that used it).
M.VARIABLES = {
  icp = "FLEETSNAP_ICP", environment = "FLEETSNAP_ENVIRONMENT", network = "FLEETSNAP_NETWORK",
  root_key = "FLEETSNAP_ROOT_KEY", identity = "FLEETSNAP_IDENTITY",
  identity_password_file = "FLEETSNAP_IDENTITY_PASSWORD_FILE", project_root_override = "FLEETSNAP_PROJECT_ROOT",
  dir = "FLEETSNAP_DIR", root = "FLEETSNAP_ROOT",
  -- The restic repository of push and list, and its password file: restic's
  -- own variables are the variable layer (a flag and the config file too).
  repository = "RESTIC_REPOSITORY", repository_password_file = "RESTIC_PASSWORD_FILE",
  cache_dir = "FLEETSNAP_CACHE_DIR", cache_limit = "FLEETSNAP_CACHE_LIMIT",
}

-- Settings that exclude each other: the source that gives one of a group
-- gives the whole group (a flag -n is not mixed with a file's environment).
local GROUPS = { { "sim", "icp" }, { "environment", "network" } }

M.DEFAULT_DIR = "backups"

-- The budget of a config file's chunk: a table literal needs a few hundred.
local BUDGET = 1000000

--- The config file to read: --config, FLEETSNAP_CONFIG, else the XDG
-- location ($XDG_CONFIG_HOME or ~/.config, then fleetsnap/config.lua).
-- Returns path, explicit (whether its absence is an error).
function M.config_path(args, getenv)
  getenv = getenv or os.getenv
  if args.config then return args.config, true end
  local named = getenv("FLEETSNAP_CONFIG")
  if named and named ~= "" then return named, true end
  local base = getenv("XDG_CONFIG_HOME")
  if not base or base == "" then
    local home = getenv("HOME")
    if not home or home == "" then return nil, false end
    base = home .. "/.config"
  end
  return base .. "/fleetsnap/config.lua", false
end

--- Reads the config file at path: its settings table ({} when an implicit
-- file is absent). Raises ENOTFOUND for an explicit file that is missing,
-- ECORRUPT naming the file and the field for anything else wrong.
function M.read_config(path, explicit)
  if not path then return {} end
  local text, err, code = fs.read(path)
  if not text then
    if code == "ENOENT" and not explicit then return {} end
    if code == "ENOENT" then errors.raise("ENOTFOUND", "config " .. path .. ": no such file") end
    error(errors.from_engine("config " .. path, err, code), 0)
  end
  -- os.getenv only: a config may name $HOME's paths, and do nothing else.
  local chunk, lerr = sandbox.load(text, path, { os = { getenv = os.getenv } })
  if not chunk then errors.raise("ECORRUPT", "config " .. lerr) end
  local ok, value = sandbox.call(BUDGET, chunk)
  if not ok then errors.raise("ECORRUPT", "config " .. path .. ": " .. tostring(value)) end
  if type(value) ~= "table" then
    errors.raise("ECORRUPT", "config " .. path .. ": must return a table of settings, got " .. type(value))
  end
  local out = {}
  for k, v in pairs(value) do
    if type(k) ~= "string" or not (M.VARIABLES[k]) then
      errors.raise("ECORRUPT", string.format("config %s: unknown setting %s (known: %s)", path, tostring(k),
        table.concat(M.known(), ", ")))
    end
    if type(v) ~= "string" or v == "" then
      errors.raise("ECORRUPT", string.format("config %s: %s: want a non-empty string, got %s", path, k, type(v)))
    end
    out[k] = v
  end
  for _, g in ipairs(GROUPS) do
    if out[g[1]] and out[g[2]] then
      errors.raise("ECORRUPT", string.format("config %s: %s and %s exclude each other", path, g[1], g[2]))
    end
  end
  return out
end

--- The settings a config file may hold, sorted.
function M.known()
  local names = {}
  for k in pairs(M.VARIABLES) do names[#names + 1] = k end
  table.sort(names)
  return names
end

--- The FLEETSNAP_* variables that are set, as settings.
function M.from_environment(getenv)
  getenv = getenv or os.getenv
  local out = {}
  for k, var in pairs(M.VARIABLES) do
    local v = getenv(var)
    if v and v ~= "" then out[k] = v end
  end
  for _, g in ipairs(GROUPS) do
    if out[g[1]] and out[g[2]] then
      errors.raise("EUSAGE", string.format("%s and %s exclude each other", M.VARIABLES[g[1]], M.VARIABLES[g[2]]))
    end
  end
  return out
end

local function group_of(key)
  for _, g in ipairs(GROUPS) do
    if key == g[1] or key == g[2] then return g end
  end
end

--- Layers sources (highest first) into one settings table: each key from
-- the first source that has it, each group from the first source that has
-- any of its keys.
function M.layer(sources, keys)
  local out, taken = {}, {}
  for _, key in ipairs(keys) do
    local g = group_of(key)
    if not (g and taken[g]) then
      for _, src in ipairs(sources) do
        local has = false
        for _, k in ipairs(g or { key }) do
          if src[k] ~= nil then has = true end
        end
        if has then
          for _, k in ipairs(g or { key }) do out[k] = src[k] end
          if g then taken[g] = true end
          break
        end
      end
    end
  end
  return out
end

--- The flags of args that are settings.
local function flags_of(args)
  local out = {}
  for _, k in ipairs(M.CONNECTION) do out[k] = args[k] end
  out.dir, out.root = args.dir, args.root
  out.repository, out.repository_password_file = args.repo, args.repo_password_file
  return out
end

local ALL = {}
for _, k in ipairs(M.CONNECTION) do ALL[#ALL + 1] = k end
ALL[#ALL + 1] = "dir"
ALL[#ALL + 1] = "root"
ALL[#ALL + 1] = "repository"
ALL[#ALL + 1] = "repository_password_file"
-- The cache of backups pulled from a restic repository (no flag: a
-- variable or the config file).
ALL[#ALL + 1] = "cache_dir"
ALL[#ALL + 1] = "cache_limit"

--- Resolves args in place: every setting a flag did not give is taken from
-- the variables, then the config file, then its default. The sources are
-- kept (args.sources) for a run that continues a recorded one
-- (M.continuing). Returns args.
function M.resolve(args, getenv)
  local sources = { flags = flags_of(args), env = M.from_environment(getenv),
    file = M.read_config(M.config_path(args, getenv)) }
  local merged = M.layer({ sources.flags, sources.env, sources.file }, ALL)
  for _, k in ipairs(ALL) do args[k] = merged[k] end
  args.dir = args.dir or M.DEFAULT_DIR
  args.sources = sources
  return args
end

--- The value of setting `key` as the command line gave it, ignoring the
-- variables and the config file (args before M.resolve: the value as
-- it is). For what a setting must not decide unseen: a backup listing
-- filtered, or `latest` picked, by a FLEETSNAP_ROOT the command line does
-- not show.
function M.flag(args, key)
  if args.sources then return args.sources.flags[key] end
  return args[key]
end

-- How a connection names its network, for messages.
local function network_of(c)
  if c.sim then return "the simulated fleet " .. c.sim end
  if c.network then
    -- The key's tail: a DER root key starts with the same prefix on every network.
    return "network " .. c.network .. (c.root_key and (" (root key ..." .. c.root_key:sub(-12) .. ")") or "")
  end
  return "environment " .. (c.environment or "local")
end

-- Whether the flags name another network than the recorded connection:
-- another simulated fleet, the simulator for a real network (or back), or
-- another environment or network.
-- Whether two simulator homes are the same network: the same path, or
-- copies of one fleet (a copy is how a fleet is moved or set aside); a
-- recorded home that is gone cannot be told apart, and is not.
local function same_sim(a, b)
  if a == b then return true end
  local fa, fb = connection.sim_fleet(a), connection.sim_fleet(b)
  return fa == nil or fb == nil or fa == fb
end

local function differs(given, recorded)
  if (given.sim or given.icp) and not (given.sim and recorded.sim and same_sim(given.sim, recorded.sim))
    and (given.sim or false) ~= (recorded.sim or false) then
    return true
  end
  -- A simulated fleet is its own network: the environment a run names
  -- there is the domain's to check against its plan (restore's X-14).
  if recorded.sim then return false end
  if given.environment or given.network then
    if given.network ~= recorded.network then return true end
    -- Another root key at the same address is another replica (a local
    -- one restarted counts canister and snapshot ids from the start again).
    if given.network and given.root_key and recorded.root_key and given.root_key ~= recorded.root_key then
      return true
    end
    if not given.network and given.environment ~= (recorded.environment or "local") then return true end
  end
  return false
end

--- For a run that continues one whose plan recorded `recorded` (its
-- connection): the connection again, now flag > recorded > variable >
-- file. The network itself never changes: a flag naming another one is
-- refused (EPRECONDITION). `what` names the run in the message. Returns
-- args.
function M.continuing(args, recorded, what)
  if not recorded then return args end
  local flags = args.sources.flags
  local given = M.layer({ flags }, M.CONNECTION)
  if differs(given, recorded) then
    errors.raise("EPRECONDITION", string.format("%s was started against %s; this run names %s (a run continues "
      .. "on the network it started on)", what, network_of(recorded), network_of(given)))
  end
  local merged = M.layer({ flags, recorded, args.sources.env, args.sources.file }, M.CONNECTION)
  for _, k in ipairs(M.CONNECTION) do args[k] = merged[k] end
  return args
end

--- Whether resolved args reach the network that `recorded` (a plan's
-- connection) names: a plan that recorded none is taken to.
function M.same_network(args, recorded)
  if not recorded then return true end
  return not differs(M.connection(args), recorded)
end

--- The connection of resolved args, as a plan records it (absent keys
-- left out).
function M.connection(args)
  local out = {}
  for _, k in ipairs(M.CONNECTION) do out[k] = args[k] end
  return out
end

return M
