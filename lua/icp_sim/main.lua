--- icp-sim's entry: parse icp's command line, resolve the target, the
-- identity and the faults, run the command against the home, log it.
local engine = require "fleetsnap.engine"
local principal = require "fleetsnap.principal"
local args = require "icp_sim.args"
local faults = require "icp_sim.faults"
local Home = require "icp_sim.home"
local text = require "icp_sim.text"

local json = engine.json

local M = {}

local LOCAL_URL = "http://localhost:8000"

-- Output is gathered and written at the end (or before a deliberate hang
-- or self-kill), so that stdout holds exactly what icp would print.
local function new_ctx(home, cmd)
  local ctx = { home = home, cmd = cmd, out = {}, err = {} }
  function ctx.stdout(s) ctx.out[#ctx.out + 1] = s end
  function ctx.stderr(s) ctx.err[#ctx.err + 1] = s end
  function ctx.flush()
    io.stdout:write(table.concat(ctx.out))
    io.stdout:flush()
    ctx.out = {}
    if ctx.faults and ctx.faults.noise and not ctx.noise_done then
      ctx.noise_done = true
      io.stderr:write("icp collects anonymous usage data to improve the tool.\n"
        .. "Run `icp settings telemetry false` or set DO_NOT_TRACK=1 to opt out.\n"
        .. "Learn more: https://github.com/dfinity/icp-cli/blob/v1.5.0/docs/telemetry.md\n")
    end
    io.stderr:write(table.concat(ctx.err))
    io.stderr:flush()
    ctx.err = {}
  end
  --- A runtime failure: exit 1 with icp's "Error: ..." text.
  function ctx.fail(msg)
    if ctx.faults and ctx.faults.backtrace then
      msg = msg .. "\nStack backtrace:\n   0: icp::main\n   1: std::rt::lang_start\n   2: main\n"
    end
    ctx.stderr(msg)
    return 1
  end
  function ctx.sleep_ms(ms)
    if ms and ms > 0 then engine.sleep_ms(math.floor(ms)) end
  end
  --- Hang until killed (after flushing what icp would have printed).
  function ctx.hang()
    ctx.flush()
    while true do
      engine.proc.run({ argv = { "sleep", "3600" } })
    end
  end
  function ctx.die()
    ctx.flush()
    -- A deliberate crash still leaves its line in the log.
    if ctx.on_die then ctx.on_die() end
    engine.proc.signal(engine.proc.pid(), 9)
    ctx.hang()
  end
  return ctx
end

local env = faults.env

local function is_loopback_url(url)
  local host = url:match("^https?://%[([^%]]+)%]") or url:match("^https?://([^:/]+)")
  return host == "127.0.0.1" or host == "localhost" or host == "::1" or (host and host:match("^127%.") ~= nil)
end

-- Resolves the network and the canister; returns nil or the error text.
local function resolve_target(ctx)
  local o, a = ctx.cmd.options, ctx.cmd.args
  local network = o.network or (not o.environment and env("ICP_NETWORK")) or nil
  local environment = o.environment or (not o.network and env("ICP_ENVIRONMENT")) or nil
  local given = a.canister
  if given then
    local bytes = principal.from_text(given)
    if bytes then
      ctx.canister = principal.to_text(bytes)
      ctx.canister_label = ctx.canister
    elseif network then
      return "Error: Specifying a network is not supported if you are targeting a canister by name, specify an "
        .. "environment instead\n"
    end
  end
  if not network and not environment then
    return "Error: No project found and no network specified. Either run this command inside a project or specify "
      .. "a network with --network\n"
  end
  if environment then
    if environment ~= "local" then
      return "Error: project does not contain an environment named '" .. environment .. "'\n"
    end
    ctx.url = LOCAL_URL
  else
    if not network:match("^https?://") then
      return "Error: project does not contain a network named '" .. network .. "'\n"
    end
    if not is_loopback_url(network) then
      return "Error: not supported by the icp simulator: network '" .. network .. "' (only loopback URLs)\n"
    end
    ctx.url = network:gsub("/+$", "")
  end
  if given and not ctx.canister then
    -- A canister name: the environment's names are the fleet's roles.
    for _, cid in ipairs(ctx.home:canister_ids()) do
      local c = ctx.home:canister(cid)
      if c and c.role == given then
        ctx.canister, ctx.canister_label = cid, given
      end
    end
    if not ctx.canister then
      return "Error: environment '" .. environment .. "' does not contain a canister named '" .. given .. "'\n"
    end
  end
end

local function resolve_identity(ctx)
  local ids = ctx.home:read_json(ctx.home:path("identities.json"))
  local name = ctx.cmd.options.identity or ids.default
  local p = ids.identities[name]
  if not p then
    return "Error: failed to load identity\n\nCaused by:\n    no identity found with name `" .. name .. "`\n"
  end
  local pw = ctx.cmd.common["identity-password-file"]
  if pw and not engine.fs.lstat(pw) then
    return "Error: failed to read identity password file '" .. pw .. "'\n\nCaused by:\n    No such file or directory "
      .. "(os error 2)\n"
  end
  ctx.identity, ctx.caller = name, p
end

-- Command path names of the fault selectors.
local SELECTOR = {
  ["canister stop"] = "stop", ["canister start"] = "start", ["canister status"] = "status",
  ["canister call"] = "call", ["canister snapshot create"] = "snapshot.create",
  ["canister snapshot list"] = "snapshot.list", ["canister snapshot delete"] = "snapshot.delete",
  ["canister snapshot restore"] = "snapshot.restore", ["canister snapshot download"] = "snapshot.download",
  ["canister snapshot upload"] = "snapshot.upload", ["identity principal"] = "identity",
  ["canister create"] = "create", ["canister delete"] = "delete",
}

local function write_log(log, rc)
  log.rc = rc
  log.end_ns = engine.realtime_ns()
  local home = Home.open()
  if home and engine.fs.lstat(home:path("sim.json")) then
    log.faults = json.array(log.faults or {})
    home:log(log)
  end
end

local function run_icp(argv, log)
  local cmd, usage = args.parse(argv)
  if not cmd then
    io.stdout:write(usage.stdout or "")
    io.stderr:write(usage.stderr or "")
    return usage.rc
  end
  if cmd.command == "version" then
    io.stdout:write("icp 1.5.0\n")
    return 0
  end
  if cmd.command == "unsupported" then
    io.stderr:write("Error: not supported by the icp simulator: icp " .. cmd.name .. "\n")
    return 1
  end
  local home, herr = Home.open()
  if not home then
    io.stderr:write("Error: icp-sim: " .. herr .. "\n")
    return 1
  end
  local ctx = new_ctx(home, cmd)
  ctx.on_die = function() write_log(log, "killed") end
  local rc
  local err = resolve_identity(ctx)
  if not err and cmd.command ~= "identity principal" then
    err = resolve_target(ctx)
  end
  if err then
    rc = ctx.fail(err)
  else
    -- Count the invocation and evaluate its faults in one short transaction.
    -- A bad fault selector raises {sim_usage}, reported by main.
    ctx.faults, log.faults = home:transact(function(sim)
      sim.invocation_counter = (sim.invocation_counter or 0) + 1
      return faults.evaluate(SELECTOR[cmd.command], ctx.canister, sim)
    end)
    local commands = require "icp_sim.commands"
    rc = commands.run(ctx)
  end
  ctx.flush()
  return rc
end

--- Runs one invocation; returns the exit code.
function M.main(script_arg)
  local argv = {}
  for i = 1, #script_arg do argv[i] = script_arg[i] end
  local log = { argv = json.array(argv), cwd = os.getenv("PWD"), start_ns = engine.realtime_ns(),
    pid = engine.proc.pid(), faults = json.array({}) }
  -- A failure nobody handled (a file the home should hold is missing or
  -- unreadable, a full disk) ends as icp ends a failed command: an
  -- "Error:" text on stderr and exit 1, never a Lua traceback, so that
  -- fleetsnap meets it as it would meet icp's. ICP_SIM_TRACE=1 adds the
  -- traceback for whoever debugs the simulator.
  local ok, rc = xpcall(function()
    if argv[1] == "sim" then return require("icp_sim.admin").run(argv) end
    return run_icp(argv, log)
  end, function(e)
    if type(e) == "table" and e.sim_usage then return { text = e.sim_usage } end
    if type(e) == "table" and e.icp_error then return { icp = e.icp_error } end
    local msg = type(e) == "string" and e or tostring(e)
    if os.getenv("ICP_SIM_TRACE") == "1" then
      msg = debug.traceback(msg, 2)
    else
      -- The simulator's own source position (an assert's) means nothing
      -- to whoever reads icp's error.
      msg = msg:gsub("^[^:\n]+%.lua:%d+: ", "")
    end
    return { text = msg }
  end)
  if not ok then
    -- An I/O failure of the directory icp writes (Home.write_file) is
    -- printed as icp prints it; anything else is the simulator's own.
    io.stderr:write(rc.icp or ("Error: icp-sim: " .. rc.text .. "\n"))
    rc = 1
  end
  write_log(log, rc)
  return rc
end

M.text = text
return M
