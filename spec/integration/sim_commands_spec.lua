-- icp-sim's commands: success outputs and errors, against a fresh fleet.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json = engine.json

local function member(fleet, i)
  return fleet.members[i + 1].canister_id
end

describe("icp-sim canister stop/start/status", function()
  local home, fleet, c
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
    c = member(fleet, 1)
  end)
  after_each(function() helpers.cleanup() end)

  it("stops and starts silently, counting the effects", function()
    local r = helpers.icp(home, { "canister", "stop", c, "-e", "local" })
    assert.same({ 0, "", "" }, { r.status, r.stdout, r.stderr })
    assert.equal("stopped", helpers.fleet(home).members[2].status)
    r = helpers.icp(home, { "canister", "start", c, "-e", "local" })
    assert.equal(0, r.status)
    assert.equal("running", helpers.fleet(home).members[2].status)
    assert.same({ stop = 1, start = 1, snapshot_create = 0, snapshot_load = 0, snapshot_upload = 0,
      snapshot_delete = 0 }, helpers.effects(home)[c])
  end)

  it("prints status JSON with icp's key order, grouped numbers and a newline", function()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" })
    assert.equal(0, r.status)
    assert.matches('^{"id":"' .. c:gsub("%-", "%%-") .. '","status":"Running","settings":{"controllers":%[', r.stdout)
    assert.matches('"freezing_threshold":"2_592_000"', r.stdout)
    assert.matches('"module_hash":"0x%x+","memory_size":"[%d_]+","cycles":', r.stdout)
    assert.equal("\n", r.stdout:sub(-1))
    assert.equal("Running", json.decode(r.stdout).status)
  end)

  it("prints the human status report", function()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local" })
    assert.matches("^Canister Id: " .. c:gsub("%-", "%%-") .. "\nCanister Status Report:\n  Status: Running\n", r.stdout)
    assert.matches("\n  Freezing threshold: 2_592_000\n", r.stdout)
  end)

  it("prints environment variables as icp does: [] and N/A when none, else name/value pairs", function()
    -- Observed through the real icp (spec/e2e/fidelity_spec.lua): the vec is
    -- an array, never null, and the report lists each variable.
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" })
    assert.equal(0, r.status, r.stderr)
    assert.matches('"environment_variables":%[%]}', r.stdout)
    assert.equal("array", json.kind(json.decode(r.stdout).settings.environment_variables))
    r = helpers.icp(home, { "canister", "status", c, "-e", "local" })
    assert.matches("\n  Environment Variables: N/A\n", r.stdout)

    local path = home .. "/canisters/" .. c .. "/canister.json"
    local doc = json.decode(helpers.read(path))
    doc.environment_variables = { { name = "FLEET_ROLE", value = "app" }, { name = "A", value = "b c" } }
    helpers.write(path, json.encode(doc))
    r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" })
    assert.matches('"environment_variables":%[{"name":"FLEET_ROLE","value":"app"},{"name":"A","value":"b c"}%]}',
      r.stdout)
    r = helpers.icp(home, { "canister", "status", c, "-e", "local" })
    assert.matches("\n  Status visibility: Controllers\n  Environment Variables:\n    Name: FLEET_ROLE, Value: app\n"
      .. "    Name: A, Value: b c\n  Module hash: ", r.stdout)
  end)

  it("names a canister by its role within the environment", function()
    local role = fleet.members[2].role
    local r = helpers.icp(home, { "canister", "status", role, "-e", "local", "--json" })
    assert.equal(0, r.status)
    assert.equal(role, json.decode(r.stdout).name)
  end)

  it("prints only the id with -i, without the network", function()
    local r = helpers.icp(home, { "canister", "status", c, "-i", "-e", "local" }, { ICP_SIM_UNREACHABLE = "1" })
    assert.equal(c .. "\n", r.stdout)
  end)

  it("reports a missing canister", function()
    local ghost = "ryjl3-tyaaa-aaaaa-aaaba-cai"
    local r = helpers.icp(home, { "canister", "status", ghost, "-e", "local" })
    assert.same({ 1, "Error: Canister " .. ghost .. " was not found.\n" }, { r.status, r.stderr })
    r = helpers.icp(home, { "canister", "stop", ghost, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches('error code Some%("IC0301"%)', r.stderr)
  end)

  it("refuses a caller that is not a controller (IC0512), status falls back to the public view", function()
    local r = helpers.icp(home, { "canister", "stop", c, "-e", "local", "--identity", "anonymous" })
    assert.equal(1, r.status)
    assert.matches("Only the controllers of the canister " .. c:gsub("%-", "%%-") .. " can control it", r.stderr)
    assert.matches('Some%("IC0512"%)', r.stderr)
    r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--identity", "anonymous", "--json" })
    assert.equal(0, r.status)
    assert.same({ "controllers", "id", "module_hash" }, (function()
      local keys = {}
      for k in pairs(json.decode(r.stdout)) do keys[#keys + 1] = k end
      table.sort(keys)
      return keys
    end)())
  end)
end)

describe("icp-sim main", function()
  local home, c
  before_each(function()
    home = helpers.sim_home()
    c = member(helpers.fleet(home), 1)
  end)
  after_each(function() helpers.cleanup() end)

  it("ends a failure nobody handled as icp does: Error: on stderr, exit 1, no traceback", function()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" })
    assert.equal(0, r.status, r.stderr)
    helpers.write(home .. "/sim.json", "{ not json")
    r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" })
    assert.equal(1, r.status)
    assert.equal("", r.stdout)
    assert.matches("^Error: icp%-sim: .*sim%.json", r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true))
    assert.is_nil(r.stderr:find("%.lua:%d+:"))
  end)

  it("adds the traceback only under ICP_SIM_TRACE=1", function()
    helpers.write(home .. "/sim.json", "{ not json")
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" }, { ICP_SIM_TRACE = "1" })
    assert.equal(1, r.status)
    assert.matches("^Error: icp%-sim: ", r.stderr)
    assert.truthy(r.stderr:find("stack traceback", 1, true))
  end)

  it("reports an unreadable fault plan as a usage error of the simulator, naming the variable", function()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" },
      { ICP_SIM_FAULT_PLAN = home .. "/no-such-plan.json" })
    assert.equal(1, r.status)
    assert.matches("^Error: icp%-sim: ICP_SIM_FAULT_PLAN: .*no%-such%-plan%.json", r.stderr)
  end)

  it("reports a bad fault selector as a usage error of the simulator", function()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" }, { ICP_SIM_HANG = "??" })
    assert.equal(1, r.status)
    assert.matches("^Error: icp%-sim: bad fault selector", r.stderr)
  end)
end)

describe("icp-sim target and identity selection", function()
  local home, c
  before_each(function()
    home = helpers.sim_home()
    c = member(helpers.fleet(home), 1)
  end)
  after_each(function() helpers.cleanup() end)

  local cases = {
    { "no network", {}, "Error: No project found and no network specified." },
    { "an unknown environment", { "-e", "prod" }, "Error: project does not contain an environment named 'prod'" },
    { "a public network", { "-n", "https://icp-api.io", "-k", "mainnet" }, "only loopback URLs" },
    { "a network name", { "-n", "ic" }, "Error: project does not contain a network named 'ic'" },
    { "an unknown identity", { "-e", "local", "--identity", "nobody" },
      "Error: failed to load identity\n\nCaused by:\n    no identity found with name `nobody`" },
    { "a missing password file", { "-e", "local", "--identity-password-file", "/no/such/file" },
      "Error: failed to read identity password file '/no/such/file'" },
  }
  for _, case in ipairs(cases) do
    it("fails with exit 1 for " .. case[1], function()
      local argv = { "canister", "stop", c }
      for _, a in ipairs(case[2]) do argv[#argv + 1] = a end
      local r = helpers.icp(home, argv)
      assert.equal(1, r.status)
      assert.truthy(r.stderr:find(case[3], 1, true), r.stderr)
    end)
  end

  it("refuses a canister name with -n", function()
    local r = helpers.icp(home, { "canister", "stop", "hub", "-n", "http://127.0.0.1:4943", "-k", "mainnet" })
    assert.equal(1, r.status)
    assert.matches("Specifying a network is not supported if you are targeting a canister by name", r.stderr)
  end)

  it("accepts a loopback URL with a root key", function()
    local r = helpers.icp(home, { "canister", "stop", c, "-n", "http://127.0.0.1:4943", "-k", "mainnet" })
    assert.equal(0, r.status, r.stderr)
  end)

  it("prints the identity's principal", function()
    local r = helpers.icp(home, { "identity", "principal" })
    assert.equal(0, r.status)
    local p = r.stdout:sub(1, -2)
    assert.equal(63, #p)
    assert.is_true(require("fleetsnap.principal").is_valid(p))
    assert.equal("2vxsx-fae\n", helpers.icp(home, { "identity", "principal", "--identity", "anonymous" }).stdout)
  end)

  it("prints its version", function()
    assert.equal("icp 1.5.0\n", helpers.icp(home, { "--version" }).stdout)
  end)

  it("says plainly what it does not simulate", function()
    local r = helpers.icp(home, { "canister", "install", c })
    assert.equal(1, r.status)
    assert.equal("Error: not supported by the icp simulator: icp canister install\n", r.stderr)
  end)

  it("fails clearly without ICP_SIM_HOME", function()
    local r = helpers.icp("", { "canister", "stop", c, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("ICP_SIM_HOME is not set", r.stderr)
  end)
end)

describe("icp-sim canister snapshot create/list/delete/restore", function()
  local home, c
  before_each(function()
    home = helpers.sim_home()
    c = member(helpers.fleet(home), 1)
  end)
  after_each(function() helpers.cleanup() end)

  local function stop()
    assert.equal(0, helpers.icp(home, { "canister", "stop", c, "-e", "local" }).status)
  end

  it("refuses to snapshot a running canister, as icp checks client-side", function()
    local r = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local" })
    assert.equal(1, r.status)
    assert.equal(string.format("Error: Canister %s (%s) is currently running. Please stop the canister first with "
      .. "`icp canister stop`.\n", c, c), r.stderr)
  end)

  it("refuses a stopping canister", function()
    local r = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local" },
      { ICP_SIM_FORCE_STATUS = "stopping@" .. c })
    assert.equal(string.format("Error: Canister %s (%s) is still stopping. Please wait for it to fully stop.\n", c, c),
      r.stderr)
  end)

  it("creates snapshots with ids as the IC forms them, in JSON without a newline", function()
    stop()
    local r = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "--json" },
      { ICP_SIM_CLOCK_NS = "1700000000000000000" })
    assert.equal(0, r.status)
    local bytes = assert(require("fleetsnap.principal").from_text(c))
    local hex = (bytes:gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
    assert.matches('^{"snapshot_id":"0000000000000000' .. hex .. '","taken_at_timestamp":1700000000000000000,'
      .. '"total_size_bytes":%d+}$', r.stdout)
    r = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" })
    assert.equal("0000000000000001" .. hex .. "\n", r.stdout)
    r = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local" }, { ICP_SIM_CLOCK_NS = "0" })
    assert.matches("^Created snapshot 0000000000000002" .. hex .. " for canister " .. c:gsub("%-", "%%-") .. " %("
      .. c:gsub("%-", "%%-") .. "%)\n  Timestamp: 1970%-01%-01 00:00:00 UTC\n  Size: [%d%.]+ KiB\n$", r.stdout)
  end)

  it("lists snapshots in JSON and as text, empty and not", function()
    local r = helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "--json" })
    assert.equal('{"snapshots":[]}', r.stdout)
    r = helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local" })
    assert.equal(string.format("No snapshots found for canister %s (%s)\n", c, c), r.stdout)
    stop()
    local id = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
    r = helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "--json" })
    local doc = json.decode(r.stdout)
    assert.equal(id, doc.snapshots[1].snapshot_id)
    r = helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "-q" })
    assert.matches("^" .. id .. "\nSnapshots for canister", r.stdout)
  end)

  it("enforces the snapshot limit with the IC0406 text", function()
    stop()
    for _ = 1, 2 do
      helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local" }, { ICP_SIM_SNAPSHOT_LIMIT = "2" })
    end
    local r = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local" }, { ICP_SIM_SNAPSHOT_LIMIT = "2" })
    assert.equal(1, r.status)
    assert.matches("has reached the maximum number of snapshots allowed: 2%.", r.stderr)
    assert.matches('Some%("IC0406"%)', r.stderr)
  end)

  it("replaces a snapshot with a new id, deleting the old one", function()
    stop()
    local old = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
    local new = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q", "--replace", old })
      .stdout:sub(1, -2)
    assert.are_not.equal(old, new)
    local doc = json.decode(helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "--json" }).stdout)
    assert.equal(1, #doc.snapshots)
    assert.equal(new, doc.snapshots[1].snapshot_id)
  end)

  it("refuses to replace a snapshot that does not exist (IC0305)", function()
    stop()
    local r = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "--replace", "00ff" })
    assert.equal(1, r.status)
    assert.matches("Could not find the snapshot ID", r.stderr)
  end)

  it("deletes a snapshot, saying so on stderr", function()
    stop()
    local id = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
    local r = helpers.icp(home, { "canister", "snapshot", "delete", c, id, "-e", "local" })
    assert.same({ 0, "", string.format("Deleted snapshot %s from canister %s (%s)\n", id, c, c) },
      { r.status, r.stdout, r.stderr })
    r = helpers.icp(home, { "canister", "snapshot", "delete", c, id, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches('Some%("IC0305"%)', r.stderr)
  end)

  it("restores a snapshot into a stopped canister, bringing its state back", function()
    local before = helpers.fleet(home).members[2].state_sha256
    stop()
    local id = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
    assert.equal(0, helpers.icp(home, { "sim", "mutate", c }).status)
    assert.are_not.equal(before, helpers.fleet(home).members[2].state_sha256)
    local r = helpers.icp(home, { "canister", "snapshot", "restore", c, id, "-e", "local" })
    assert.same({ 0, string.format("Restored canister %s (%s) from snapshot %s\n", c, c, id) }, { r.status, r.stderr })
    assert.equal(before, helpers.fleet(home).members[2].state_sha256)
    assert.equal("stopped", helpers.fleet(home).members[2].status)
    assert.equal(1, helpers.effects(home)[c].snapshot_load)
  end)

  it("refuses to restore into a running canister", function()
    stop()
    local id = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
    helpers.icp(home, { "canister", "start", c, "-e", "local" })
    local r = helpers.icp(home, { "canister", "snapshot", "restore", c, id, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("is currently running%. Please stop the canister first", r.stderr)
  end)
end)

describe("icp-sim canister call", function()
  local home, fleet
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
  end)
  after_each(function() helpers.cleanup() end)

  it("answers the Canic registry with Candid bytes of the whole fleet", function()
    local r = helpers.icp(home, { "canister", "call", fleet.root, "canic_subnet_registry", "()", "--query", "--json",
      "-e", "local" })
    assert.equal(0, r.status, r.stderr)
    assert.matches('^{"response_bytes":"4449444c%x+","response_text":null,"response_candid":null}$', r.stdout)
    local bytes = json.decode(r.stdout).response_bytes:gsub("..", function(h) return string.char(tonumber(h, 16)) end)
    local v = assert(require("fleetsnap.candid").decode(bytes, require("fleetsnap.canic").NAMES))
    assert.equal(#fleet.members, #v[1].Ok)
    for i, m in ipairs(fleet.members) do
      assert.equal(m.canister_id, v[1].Ok[i].pid)
      assert.equal(m.role, v[1].Ok[i].record.role)
      assert.equal(m.parent ~= json.null and m.parent or nil, v[1].Ok[i].record.parent_pid)
    end
    assert.matches("WARN no Candid interface is available", r.stderr)
  end)

  it("prints the reply as hex", function()
    local r = helpers.icp(home, { "canister", "call", fleet.root, "canic_subnet_registry", "()", "-o", "hex", "-e",
      "local" })
    assert.matches("^4449444c%x+\n$", r.stdout)
  end)

  it("rejects an unknown method with IC0536", function()
    local r = helpers.icp(home, { "canister", "call", fleet.root, "nosuch", "()", "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("Canister has no update method 'nosuch'", r.stderr)
    assert.matches('Some%("IC0536"%)', r.stderr)
  end)

  it("refuses an interactive call", function()
    local r = helpers.icp(home, { "canister", "call", fleet.root, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("interactive canister call", r.stderr)
  end)
end)

describe("icp-sim commands on one canister", function()
  after_each(function() helpers.cleanup() end)

  -- Structural, not timed: a command's cost must not grow with the fleet,
  -- so it may not read (or rewrite) any other canister's state.
  it("touch no other canister's state", function()
    local home = helpers.sim_home({ members = 8, heap = 4096, stable = 4096 })
    local fleet = helpers.fleet(home)
    local c = member(fleet, 1)
    for _, m in ipairs(fleet.members) do
      if m.canister_id ~= c then
        local dir = home .. "/canisters/" .. m.canister_id
        -- Valid JSON but no canister: whoever reads it fails or misses.
        helpers.sh("printf '{\"poisoned\":true}' > " .. dir .. "/canister.json && rm -r " .. dir .. "/live " .. dir
          .. "/snapshots")
      end
    end
    local function ok(argv)
      local r = helpers.icp(home, argv)
      assert.equal(0, r.status, table.concat(argv, " ") .. ": " .. r.stderr)
      return r
    end
    ok({ "canister", "status", c, "-e", "local", "--json" })
    ok({ "canister", "stop", c, "-e", "local" })
    local id = json.decode(ok({ "canister", "snapshot", "create", c, "-e", "local", "--json" }).stdout).snapshot_id
    ok({ "canister", "snapshot", "list", c, "-e", "local", "--json" })
    ok({ "canister", "snapshot", "download", c, id, "--output", helpers.tmpdir() .. "/d", "-e", "local" })
    ok({ "canister", "snapshot", "restore", c, id, "-e", "local" })
    ok({ "canister", "snapshot", "delete", c, id, "-e", "local" })
    ok({ "canister", "start", c, "-e", "local" })
  end)
end)

describe("icp-sim canister create --detached / delete", function()
  local home, fleet
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
  end)
  after_each(function() helpers.cleanup() end)

  local function canister_json(cid)
    local text = helpers.read(home .. "/canisters/" .. cid .. "/canister.json")
    return text and json.decode(text)
  end

  it("creates an empty running canister owned by the caller, funded with 2T cycles by default", function()
    local r = helpers.icp(home, { "canister", "create", "--detached", "-e", "local" })
    assert.equal(0, r.status, r.stderr)
    local cid = r.stdout:match("^Created canister with ID ([%w%-]+)\n$")
    assert.is_truthy(cid, r.stdout)
    local me = helpers.icp(home, { "identity", "principal" }).stdout:gsub("\n$", "")
    local c = canister_json(cid)
    assert.same({ "running", true, 2000000000000, { me } }, { c.status, c.detached, c.cycles, c.controllers })
    local s = json.decode(helpers.icp(home, { "canister", "status", cid, "-e", "local", "--json" }).stdout)
    assert.same({ "Running", json.null }, { s.status, s.module_hash })
    -- A scratch canister is no fleet member: neither the registry nor the
    -- sim's own listing shows it.
    assert.equal(#fleet.members, #helpers.fleet(home).members)
    for _, m in ipairs(helpers.fleet(home).members) do assert.not_equal(cid, m.canister_id) end
  end)

  it("prints only the id with -q, takes --cycles with a suffix and repeated --controller", function()
    local other = fleet.members[1].canister_id
    local r = helpers.icp(home, { "canister", "create", "--detached", "-q", "--cycles", "1.5t", "--controller", other,
      "--controller", "aaaaa-aa", "-e", "local" })
    assert.equal(0, r.status, r.stderr)
    local cid = r.stdout:match("^([%w%-]+)\n$")
    assert.is_truthy(cid, r.stdout)
    local c = canister_json(cid)
    assert.same({ 1500000000000, { other, "aaaaa-aa" } }, { c.cycles, c.controllers })
    -- Each create makes a new id.
    local r2 = helpers.icp(home, { "canister", "create", "--detached", "-q", "-e", "local" })
    assert.not_equal(cid, r2.stdout:match("^([%w%-]+)\n$"))
  end)

  it("parses <CANISTER|--detached> as clap does, and says what it does not simulate", function()
    local r = helpers.icp(home, { "canister", "create", "-e", "local" })
    assert.same({ 2, "error: the following required arguments were not provided:\n  <CANISTER|--detached>\n\n"
      .. "Usage: icp canister create <CANISTER|--detached>\n\nFor more information, try '--help'.\n" },
      { r.status, r.stderr })
    r = helpers.icp(home, { "canister", "create", "x", "--detached", "-e", "local" })
    assert.same({ 2, "error: the argument '[CANISTER]' cannot be used with '--detached'" },
      { r.status, r.stderr:match("^[^\n]+") })
    r = helpers.icp(home, { "canister", "create", "--detached", "--json", "-e", "local" })
    assert.same({ 1, "Error: not supported by the icp simulator: icp canister create --json\n" },
      { r.status, r.stderr })
  end)

  it("refuses to delete a running canister, deletes a stopped one with its snapshots, recovering cycles", function()
    local cid = helpers.icp(home, { "canister", "create", "--detached", "-q", "-e", "local" }).stdout:gsub("\n$", "")
    local r = helpers.icp(home, { "canister", "delete", cid, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("is currently running. Please stop the canister first", r.stderr)
    assert.is_truthy(canister_json(cid))
    assert.equal(0, helpers.icp(home, { "canister", "stop", cid, "-e", "local" }).status)
    assert.equal(0, helpers.icp(home, { "canister", "snapshot", "create", cid, "-e", "local" }).status)
    r = helpers.icp(home, { "canister", "delete", cid, "-e", "local" })
    assert.equal(0, r.status, r.stderr)
    local me = helpers.icp(home, { "identity", "principal" }).stdout:gsub("\n$", "")
    assert.same({ "", "Recovered 2000000000000 cycles from canister " .. cid .. " to " .. me .. "\n" },
      { r.stdout, r.stderr })
    assert.is_nil(canister_json(cid))
    r = helpers.icp(home, { "canister", "status", cid, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("was not found", r.stderr)
    r = helpers.icp(home, { "canister", "delete", cid, "-e", "local" })
    assert.equal(1, r.status)
  end)

  it("burns the cycles with --no-recover-cycles, and only a controller may delete", function()
    local other = fleet.members[1].canister_id
    local cid = helpers.icp(home, { "canister", "create", "--detached", "-q", "--controller", other, "-e", "local" })
      .stdout:gsub("\n$", "")
    local r = helpers.icp(home, { "canister", "delete", cid, "-e", "local", "--no-recover-cycles" })
    assert.equal(1, r.status)
    assert.matches("Only the controllers of the canister", r.stderr)
    cid = helpers.icp(home, { "canister", "create", "--detached", "-q", "-e", "local" }).stdout:gsub("\n$", "")
    assert.equal(0, helpers.icp(home, { "canister", "stop", cid, "-e", "local" }).status)
    r = helpers.icp(home, { "canister", "delete", cid, "-e", "local", "--no-recover-cycles" })
    assert.same({ 0, "", "" }, { r.status, r.stdout, r.stderr })
    assert.is_nil(canister_json(cid))
  end)

  it("serves fleetsnap's driver: create returns the id, delete of a running copy is NOT_STOPPED", function()
    local d = require("fleetsnap.drivers.icp").new({ command = { helpers.root .. "/scripts/icp-sim" },
      env = { ICP_SIM_HOME = home } })
    local cid, err = d:run("canister_create", { cycles = 300000000000 })
    assert.is_nil(err)
    assert.equal(300000000000, canister_json(cid).cycles)
    local _, derr = d:run("canister_delete", { canister = cid })
    assert.equal("NOT_STOPPED", derr.code)
    assert.is_nil(select(2, d:run("stop", { canister = cid })))
    assert.is_nil(select(2, d:run("canister_delete", { canister = cid, burn_cycles = true })))
    assert.is_nil(canister_json(cid))
    _, derr = d:run("canister_delete", { canister = cid })
    assert.equal("CANISTER_GONE", derr.code)
  end)

  it("loses the id of a create whose reply is lost (fail_after), yet the canister exists", function()
    local r = helpers.icp(home, { "canister", "create", "--detached", "-q", "-e", "local" },
      { ICP_SIM_FAIL_AFTER = "create" })
    assert.equal(1, r.status)
    assert.equal("", r.stdout)
    local n = 0
    for _, id in ipairs(engine.fs.list(home .. "/canisters") or {}) do
      local c = canister_json(id)
      if c and c.detached then n = n + 1 end
    end
    assert.equal(1, n)
  end)
end)
