-- Settings from FLEETSNAP_* variables and the config file, and the
-- connection a backup or restore records for the runs that continue it.
local engine = require "fleetsnap.engine"
local json = engine.json
local helpers = require "helpers"

local home, work

before_each(function()
  home = helpers.sim_home({ members = 2, depth = 1 })
  work = helpers.tmpdir()
end)
after_each(function() helpers.cleanup() end)

local function ids(stdout)
  local out = {}
  for _, b in ipairs(json.decode(stdout).backups) do out[#out + 1] = b.name end
  table.sort(out)
  return out
end

describe("fleetsnap settings", function()
  it("backs up into FLEETSNAP_DIR when --out is not given, and lists it from there", function()
    local r = helpers.fleetsnap(home, { "backup", "create" }, { FLEETSNAP_DIR = work .. "/vault" })
    assert.equal(0, r.status, r.stderr)
    local names = engine.fs.list(work .. "/vault")
    assert.equal(1, #names)
    r = helpers.fleetsnap(nil, { "--json", "backup", "list" }, { FLEETSNAP_DIR = work .. "/vault" })
    assert.same(names, ids(r.stdout))
  end)

  it("takes the config file's dir, a variable over it, and --dir over both", function()
    for _, name in ipairs({ "file", "env", "flag" }) do
      assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/" .. name .. "/b-" .. name })
        .status)
    end
    local config = work .. "/config.lua"
    helpers.write(config, string.format("return { dir = %q }\n", work .. "/file"))
    local function list(env, argv)
      local full = { "--json", "--config", config, "backup", "list" }
      for _, a in ipairs(argv or {}) do full[#full + 1] = a end
      local r = helpers.fleetsnap(nil, full, env)
      assert.equal(0, r.status, r.stderr)
      return ids(r.stdout)
    end
    assert.same({ "b-file" }, list())
    assert.same({ "b-env" }, list({ FLEETSNAP_DIR = work .. "/env" }))
    assert.same({ "b-flag" }, list({ FLEETSNAP_DIR = work .. "/env" }, { "--dir", work .. "/flag" }))
  end)

  it("reads the config file from XDG_CONFIG_HOME", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/xdg/b1" }).status)
    helpers.sh("mkdir -p " .. work .. "/cfg/fleetsnap")
    helpers.write(work .. "/cfg/fleetsnap/config.lua", string.format("return { dir = %q }\n", work .. "/xdg"))
    local r = helpers.fleetsnap(nil, { "--json", "backup", "list" }, { XDG_CONFIG_HOME = work .. "/cfg" })
    assert.same({ "b1" }, ids(r.stdout))
  end)

  it("refuses a config file with an unknown setting, naming the file and the setting (exit 7)", function()
    local config = work .. "/bad.lua"
    helpers.write(config, 'return { netwrok = "ic" }\n')
    local r = helpers.fleetsnap(nil, { "--config", config, "backup", "list" })
    assert.equal(7, r.status)
    assert.matches(config .. ": unknown setting netwrok", r.stderr, 1, true)
  end)

  it("refuses a --config file that does not exist (exit 3)", function()
    local r = helpers.fleetsnap(nil, { "--config", work .. "/none.lua", "backup", "list" })
    assert.equal(3, r.status)
    assert.matches("none.lua: no such file", r.stderr, 1, true)
  end)
end)

describe("a recorded connection", function()
  it("is written into the backup plan", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b1" }).status)
    local plan = json.decode(helpers.read(work .. "/b1/fleetsnap-plan.json"))
    assert.same({ sim = home }, plan.connection)
  end)

  it("lets a backup resume with no connection flag at all", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b1" }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status) -- the fault happened: the backup is incomplete
    r = helpers.fleetsnap(nil, { "backup", "resume", work .. "/b1" }, { ICP_SIM_HOME = "" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("backup b1 complete: 2 members", r.stdout, 1, true)
  end)

  it("refuses a resume that names another simulated fleet (exit 5)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b1" }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    -- Another fleet (another seed, another root): a copy of the same fleet
    -- would be the same network.
    local other = helpers.sim_home({ members = 2, depth = 1, seed = 2 })
    r = helpers.fleetsnap(other, { "backup", "resume", work .. "/b1" })
    assert.equal(5, r.status)
    assert.matches("was started against the simulated fleet " .. home, r.stderr, 1, true)
    -- Nothing was done to the other fleet.
    for cid, e in pairs(helpers.effects(other)) do assert.equal(0, e.stop, cid) end
  end)

  it("lets a restore run and undo with no connection flag", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b1" }).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", work .. "/b1" }).status)
    local r = helpers.fleetsnap(nil, { "restore", "run", work .. "/b1", "--execute", "--safety-snapshot" })
    assert.equal(0, r.status, r.stderr)
    r = helpers.fleetsnap(nil, { "restore", "undo", work .. "/b1", "--execute" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("undone", r.stdout)
  end)
end)
