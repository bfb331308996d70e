local settings = require "fleetsnap.cli.settings"
local helpers = require "helpers"

-- A getenv over a table.
local function env_of(t)
  return function(name) return t[name] end
end

local function config(text)
  local path = helpers.tmpdir() .. "/config.lua"
  helpers.write(path, text)
  return path
end

local function raised(f)
  local ok, e = pcall(f)
  assert.is_false(ok)
  return e
end

after_each(function() helpers.cleanup() end)

describe("settings.config_path", function()
  it("takes --config first, then FLEETSNAP_CONFIG, both as explicit", function()
    assert.same({ "/a.lua", true }, { settings.config_path({ config = "/a.lua" }, env_of({ FLEETSNAP_CONFIG = "/b" })) })
    assert.same({ "/b", true }, { settings.config_path({}, env_of({ FLEETSNAP_CONFIG = "/b" })) })
  end)

  it("falls back to the XDG location, which may be absent", function()
    assert.same({ "/x/fleetsnap/config.lua", false }, { settings.config_path({}, env_of({ XDG_CONFIG_HOME = "/x",
      HOME = "/h" })) })
    assert.same({ "/h/.config/fleetsnap/config.lua", false }, { settings.config_path({}, env_of({ HOME = "/h" })) })
  end)
end)

describe("settings.read_config", function()
  it("reads the settings table a chunk returns, with os.getenv available", function()
    local path = config('return { network = "ic", dir = os.getenv("FSN_SPEC_UNSET") or "/srv/backups" }')
    assert.same({ network = "ic", dir = "/srv/backups" }, settings.read_config(path, true))
  end)

  it("gives nothing for an absent implicit file", function()
    assert.same({}, settings.read_config(helpers.tmpdir() .. "/none.lua", false))
  end)

  it("refuses an absent explicit file with ENOTFOUND, naming it", function()
    local e = raised(function() settings.read_config("/nonexistent/fleetsnap.lua", true) end)
    assert.equal("ENOTFOUND", e.code)
    assert.matches("/nonexistent/fleetsnap.lua", e.message, 1, true)
  end)

  it("names an unknown setting and lists the known ones", function()
    local path = config('return { netwrok = "ic" }')
    local e = raised(function() settings.read_config(path, true) end)
    assert.equal("ECORRUPT", e.code)
    assert.matches(path .. ": unknown setting netwrok (known: cache_dir, cache_limit, dir, environment", e.message, 1, true)
  end)

  it("names a setting of the wrong type", function()
    local e = raised(function() settings.read_config(config("return { identity = 7 }"), true) end)
    assert.matches("identity: want a non-empty string, got number", e.message, 1, true)
  end)

  it("refuses settings that exclude each other", function()
    local e = raised(function() settings.read_config(config('return { environment = "a", network = "b" }'), true) end)
    assert.matches("environment and network exclude each other", e.message, 1, true)
  end)

  it("refuses a chunk that does not return a table, or fails, or has no io", function()
    assert.matches("must return a table", raised(function() settings.read_config(config("return 1"), true) end).message)
    assert.matches("io", raised(function() settings.read_config(config("return { dir = io.read() }"), true) end).message)
    assert.equal("ECORRUPT", raised(function() settings.read_config(config("return {"), true) end).code)
  end)

  it("stops a chunk that never ends", function()
    local e = raised(function() settings.read_config(config("while true do end"), true) end)
    assert.equal("ECORRUPT", e.code)
    assert.matches("budget", e.message)
  end)
end)

describe("settings.resolve", function()
  it("takes a flag over a variable over the config file over the default", function()
    local path = config('return { identity = "file", network = "file-net", dir = "/file", root = "aaaaa-aa" }')
    local getenv = env_of({ FLEETSNAP_CONFIG = path, FLEETSNAP_IDENTITY = "env", FLEETSNAP_DIR = "/env" })
    local args = settings.resolve({ identity = "flag" }, getenv)
    assert.equal("flag", args.identity)
    assert.equal("/env", args.dir)
    assert.equal("file-net", args.network)
    assert.equal("aaaaa-aa", args.root)
    assert.equal(settings.DEFAULT_DIR, settings.resolve({}, env_of({})).dir)
  end)

  it("takes the environment and network as one setting from one source", function()
    local path = config('return { network = "ic" }')
    local args = settings.resolve({ environment = "staging" }, env_of({ FLEETSNAP_CONFIG = path }))
    assert.equal("staging", args.environment)
    assert.is_nil(args.network)
  end)

  it("takes --sim over an icp path from anywhere else", function()
    local args = settings.resolve({ sim = "/h" }, env_of({ FLEETSNAP_ICP = "/opt/icp" }))
    assert.equal("/h", args.sim)
    assert.is_nil(args.icp)
  end)

  it("refuses FLEETSNAP_ENVIRONMENT together with FLEETSNAP_NETWORK", function()
    local e = raised(function()
      settings.resolve({}, env_of({ FLEETSNAP_ENVIRONMENT = "a", FLEETSNAP_NETWORK = "b" }))
    end)
    assert.equal("EUSAGE", e.code)
  end)
end)

describe("settings.continuing", function()
  it("takes the recorded connection over variables, a flag over both", function()
    local args = settings.resolve({ identity = "flag" }, env_of({ FLEETSNAP_ICP = "/env/icp",
      FLEETSNAP_NETWORK = "ic" }))
    settings.continuing(args, { icp = "/plan/icp", network = "ic", identity = "plan", root_key = "k" }, "backup b")
    assert.equal("/plan/icp", args.icp)
    assert.equal("flag", args.identity)
    assert.equal("ic", args.network)
    assert.equal("k", args.root_key)
  end)

  -- A simulator home holding the fleet under `root`.
  local function sim_home(root)
    local home = helpers.tmpdir()
    helpers.write(home .. "/sim.json", string.format('{"root": "%s"}', root))
    return home
  end

  it("refuses a flag naming another simulated fleet", function()
    local fleet, other = sim_home("aaaaa-aa"), sim_home("2vxsx-fae")
    local args = settings.resolve({ sim = other }, env_of({}))
    local e = raised(function() settings.continuing(args, { sim = fleet }, "backup b") end)
    assert.equal("EPRECONDITION", e.code)
    assert.matches("backup b was started against the simulated fleet " .. fleet .. "; this run names the simulated "
      .. "fleet " .. other, e.message, 1, true)
  end)

  it("accepts a copy of the recorded simulated fleet, and runs against the copy", function()
    local fleet, copy = sim_home("aaaaa-aa"), sim_home("aaaaa-aa")
    local args = settings.resolve({ sim = copy }, env_of({}))
    settings.continuing(args, { sim = fleet }, "backup b")
    assert.equal(copy, args.sim)
  end)

  it("refuses another root key at the recorded network address (another replica there)", function()
    local args = settings.resolve({ network = "http://127.0.0.1:4943", root_key = "bb" }, env_of({}))
    local e = raised(function()
      settings.continuing(args, { network = "http://127.0.0.1:4943", root_key = "aa" }, "backup b")
    end)
    assert.equal("EPRECONDITION", e.code)
    assert.matches("(root key ...aa); this run names network http://127.0.0.1:4943 (root key ...bb)", e.message, 1, true)
  end)

  it("accepts the recorded root key given again", function()
    local args = settings.resolve({ network = "http://127.0.0.1:4943", root_key = "aa" }, env_of({}))
    settings.continuing(args, { network = "http://127.0.0.1:4943", root_key = "aa" }, "backup b")
    assert.equal("aa", args.root_key)
  end)

  it("refuses a flag naming another network, or the simulator for a real one", function()
    local e = raised(function()
      settings.continuing(settings.resolve({ network = "ic" }, env_of({})), { environment = "local" }, "backup b")
    end)
    assert.matches("environment local; this run names network ic", e.message, 1, true)
    e = raised(function()
      settings.continuing(settings.resolve({ sim = "/h" }, env_of({})), { network = "ic" }, "backup b")
    end)
    assert.equal("EPRECONDITION", e.code)
  end)

  it("accepts the same network named again, and the default environment spelt out", function()
    local args = settings.resolve({ environment = "local" }, env_of({}))
    settings.continuing(args, {}, "backup b")
    assert.equal("local", args.environment)
  end)

  it("leaves a run without a recorded connection as resolved", function()
    local args = settings.resolve({}, env_of({ FLEETSNAP_IDENTITY = "env" }))
    settings.continuing(args, nil, "backup b")
    assert.equal("env", args.identity)
  end)
end)
