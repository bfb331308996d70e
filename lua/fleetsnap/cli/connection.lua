--- How this run reaches the network, from the global flags: the icp
-- driver (the real `icp`, `--icp PATH`, or the simulator with `--sim
-- HOME`), the root a simulated fleet names, and the flags themselves as a
-- command line (for the next steps an error suggests). The only file of
-- the CLI that knows the simulator exists.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local driver_mod = require "fleetsnap.drivers.icp"

local json, fs = engine.json, engine.fs

local M = {}

--- The root canister of the simulated fleet in `home`. Raises ENOTFOUND
-- when there is no fleet there, ECORRUPT when its state cannot be read.
-- The one place that reads the simulator's own file (sim_fleet asks the
-- same without raising).
function M.sim_root(home)
  local path = home .. "/sim.json"
  local text, err, code = fs.read(path)
  if not text then
    if code == "ENOENT" or code == "ENOTDIR" then
      errors.raise("ENOTFOUND", "--sim " .. home .. ": no simulated fleet there (icp-sim sim init)")
    end
    error(errors.from_engine("--sim " .. home, err, code), 0)
  end
  local doc, jerr = json.decode(text, { name = path })
  if type(doc) ~= "table" or type(doc.root) ~= "string" then
    errors.raise("ECORRUPT", jerr or (path .. ": root: missing"))
  end
  return doc.root
end

--- The root of the simulated fleet in `home`, or nil when there is none
-- to read (settings.lua tells two homes apart by it).
function M.sim_fleet(home)
  local ok, root = pcall(M.sim_root, home)
  return ok and root or nil
end

--- Makes --sim an absolute path (once: a plan records it, and a run that
-- continues from another directory must find the same fleet).
function M.normalize(args)
  if not args.sim then return end
  local rp = engine.proc.run({ argv = { "realpath", "-m", "--", args.sim } })
  if rp.status == 0 then args.sim = rp.stdout:gsub("\n$", "") end
end

--- The root to back up: --root, or with --sim (and no --inventory) the
-- simulated fleet's.
function M.root(args)
  if args.root or args.inventory or not args.sim then return args.root end
  return M.sim_root(args.sim)
end

--- The simulator's Lua entry (icp_sim/run.lua), found by the module path
-- like the simulator's modules, so that --sim works from the source tree
-- and from an installed prefix alike. It is run directly: a shell wrapper
-- per call would double the cost of every icp call.
function M.sim_entry()
  local path, err = package.searchpath("icp_sim.run", package.path)
  if not path then
    errors.raise("EINTERNAL", "--sim: the simulator is not installed with this fleetsnap ("
      .. err:gsub("\n%s*", "; ") .. ")")
  end
  return path
end

--- The icp driver for the global flags.
function M.driver(args)
  local opts = { environment = args.environment, network = args.network, root_key = args.root_key,
    identity = args.identity, identity_password_file = args.identity_password_file,
    project_root = args.project_root_override }
  if args.timeout then
    -- One bound for every kind, transfers included: the operator's number
    -- replaces the per-kind defaults.
    opts.timeouts = {}
    for k in pairs(driver_mod.DEFAULT_TIMEOUTS) do opts.timeouts[k] = args.timeout end
    opts.timeouts.transfer_per_mib = 0
  end
  if args.sim then
    opts.command = { "lua5.4", M.sim_entry() }
    opts.display = { "icp-sim" }
    -- The simulator finds its modules and the engine where this process
    -- found them: the source tree, or the installed prefix.
    opts.env = { ICP_SIM_HOME = args.sim, LUA_PATH = package.path, LUA_CPATH = package.cpath }
    -- Each simulated fleet is a network of its own (the fleet lock's key),
    -- named by the home's absolute path (normalize made it one).
    opts.network_scope = "icp-sim " .. args.sim
    opts.environment = opts.environment or (not opts.network and "local" or nil)
  else
    opts.icp = args.icp or "icp"
  end
  return driver_mod.new(opts)
end

--- The connection flags of this run as argv words, in the order the
-- usage line gives them: what a suggested next command needs to reach the
-- same fleet as the same operator.
function M.flags(args)
  local out = {}
  local function add(flag, v)
    if v ~= nil then
      out[#out + 1] = flag
      out[#out + 1] = tostring(v)
    end
  end
  add("--sim", args.sim)
  add("--icp", args.icp)
  add("-e", args.environment)
  add("-n", args.network)
  add("-k", args.root_key)
  add("--identity", args.identity)
  add("--identity-password-file", args.identity_password_file)
  add("--project-root-override", args.project_root_override)
  return out
end

return M
