-- Canister settings travel with the backup: recorded in the manifest's
-- fleetsnap section from the status icp reports.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local manifest = require "fleetsnap.manifest"

local json, fs = engine.json, engine.fs

local function icp_ok(home, argv)
  local r = helpers.icp(home, argv)
  assert.equal(0, r.status, r.stderr)
  return r
end

describe("settings recorded by a backup", function()
  local home, fleet, out
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
    out = helpers.tmpdir() .. "/backups/b1"
  end)
  after_each(function() helpers.cleanup() end)

  it("writes each member's settings, as its status reports them, into the fleetsnap section", function()
    local c = fleet.members[2].canister_id
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400",
      "--log-visibility", "public", "--add-environment-variable", "MODE=prod" })
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out })
    assert.equal(0, r.status, r.stderr)
    local text = fs.read(out .. "/fleet-backup-manifest.json")
    local doc = json.decode(text)
    -- Our own reader accepts it, and the upstream part is untouched.
    assert.is_truthy(manifest.validate(doc, manifest.FILE_036, "0.36"))
    local by = {}
    for _, m in ipairs(doc.fleetsnap.members) do by[m.canister_id] = m.settings end
    local s = assert(by[c])
    assert.equal("86400", s.freezing_threshold)
    assert.equal("5000000000000", s.reserved_cycles_limit)
    assert.same({ type = "public" }, s.log_visibility)
    assert.same({ type = "controllers" }, s.snapshot_visibility)
    assert.same({ { name = "MODE", value = "prod" } }, s.environment_variables)
    assert.matches("^%d+$", s.cycles)
    local st = json.decode(icp_ok(home, { "canister", "status", c, "-e", "local", "--json" }).stdout)
    local want = {}
    for i, p in ipairs(st.settings.controllers) do want[i] = p end
    table.sort(want)
    assert.same(want, s.controllers)
    -- Every member has its record.
    for _, m in ipairs(doc.fleetsnap.members) do assert.is_table(m.settings, m.canister_id) end
  end)
end)

describe("restore --settings", function()
  local home, fleet, out, c
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
    c = fleet.members[2].canister_id
    out = helpers.tmpdir() .. "/backups/b1"
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
  end)
  after_each(function() helpers.cleanup() end)

  local function freezing(cid)
    local st = json.decode(icp_ok(home, { "canister", "status", cid, "-e", "local", "--json" }).stdout)
    return st.settings.freezing_threshold
  end

  local function restore(argv)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", out }).status)
    local full = { "restore", "run", out, "--execute" }
    for _, a in ipairs(argv or {}) do full[#full + 1] = a end
    return helpers.fleetsnap(home, full)
  end

  it("check (the default) warns about a setting changed since the backup, and exits as before", function()
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400" })
    assert.equal("86_400", freezing(c))
    local r = restore()
    assert.equal(0, r.status, r.stderr)
    assert.matches("warning: " .. c:gsub("%-", "%%-") .. ": setting freezing_threshold differs from the backup "
      .. "%(backup 2592000, target 86400%)", r.stdout)
    -- Only that one: nothing else changed.
    local _, n = r.stdout:gsub("warning: ", "")
    assert.equal(1, n)
    -- A check changes nothing.
    assert.equal("86_400", freezing(c))
  end)

  it("reports the differences in the JSON result", function()
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--log-visibility", "public" })
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", out }).status)
    local r = helpers.fleetsnap(home, { "--json", "restore", "run", out, "--execute" })
    assert.equal(0, r.status, r.stderr)
    local last
    for line in r.stdout:gmatch("[^\n]+") do last = line end
    local doc = json.decode(last)
    assert.equal("result", doc.type)
    assert.same({ mode = "check", recorded = true, differences = { { target_canister = c, source_canister = c,
      field = "log_visibility", backup = "controllers", target = "public" } } }, doc.settings)
  end)

  it("shows the differences while the restore runs, before its first stop, when a later step fails", function()
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400" })
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", out }).status)
    -- The load fails: the run ends with an error, never with a result.
    local r = helpers.fleetsnap(home, { "--json", "restore", "run", out, "--execute" },
      { ICP_SIM_FAIL = "snapshot.restore" })
    assert.not_equal(0, r.status)
    local docs = {}
    for line in r.stdout:gmatch("[^\n]+") do docs[#docs + 1] = json.decode(line) end
    assert.equal("error", docs[#docs].type)
    local check_at, first_stop
    for i, d in ipairs(docs) do
      if d.type == "settings-check" then
        assert.is_nil(check_at, "one settings-check event")
        check_at = i
        assert.same({ mode = "check", recorded = true, differences = { { target_canister = c, source_canister = c,
          field = "freezing_threshold", backup = "2592000", target = "86400" } } },
          { mode = d.mode, recorded = d.recorded, differences = d.differences })
      elseif d.type == "operation-started" and d.kind == "stop" and not first_stop then
        first_stop = i
      end
    end
    assert.is_number(check_at)
    assert.is_number(first_stop)
    assert.is_true(check_at < first_stop)
  end)

  it("prints the warnings on stderr as the check is made, when the run fails later too", function()
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400" })
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", out }).status)
    local r = helpers.fleetsnap(home, { "restore", "run", out, "--execute" }, { ICP_SIM_FAIL = "snapshot.restore" })
    assert.not_equal(0, r.status)
    assert.matches("warning: " .. c:gsub("%-", "%%-") .. ": setting freezing_threshold differs from the backup "
      .. "%(backup 2592000, target 86400%)", r.stderr)
    -- The warning comes before the failure it preceded.
    assert.is_true(r.stderr:find("warning: ", 1, true) < r.stderr:find("failed", 1, true))
  end)

  it("ignore checks nothing", function()
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400" })
    local r = restore({ "--settings", "ignore" })
    assert.equal(0, r.status, r.stderr)
    assert.is_nil(r.stdout:find("warning:", 1, true))
  end)

  it("skips the check of a backup without recorded settings with one note", function()
    local path = out .. "/fleet-backup-manifest.json"
    local doc = json.decode(fs.read(path))
    for _, m in ipairs(doc.fleetsnap.members) do m.settings = nil end
    helpers.write(path, json.encode(doc, { pretty = true }))
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400" })
    local r = restore()
    assert.equal(0, r.status, r.stderr)
    local _, notes = r.stdout:gsub("note: the backup recorded no canister settings", "")
    assert.equal(1, notes)
    assert.is_nil(r.stdout:find("warning:", 1, true))
  end)
end)

describe("restore --settings apply", function()
  local home, fleet, out, c, other
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
    c = fleet.members[2].canister_id
    -- A principal that controls no member: the anonymous one.
    other = "2vxsx-fae"
    out = helpers.tmpdir() .. "/backups/b1"
  end)
  after_each(function() helpers.cleanup() end)

  local function backup()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out })
    assert.equal(0, r.status, r.stderr)
  end

  local function settings_of(cid)
    return json.decode(icp_ok(home, { "canister", "status", cid, "-e", "local", "--json" }).stdout).settings
  end

  local function has(list, p)
    for _, x in ipairs(list) do if x == p then return true end end
    return false
  end

  local function operator()
    return (icp_ok(home, { "identity", "principal" }).stdout:gsub("%s+$", ""))
  end

  local function run(plan_args, run_args, env)
    local p = { "restore", "plan", out }
    for _, a in ipairs(plan_args or {}) do p[#p + 1] = a end
    local r = helpers.fleetsnap(home, p)
    assert.equal(0, r.status, r.stderr)
    local x = { "restore", "run", out, "--execute", "--settings", "apply" }
    for _, a in ipairs(run_args or {}) do x[#x + 1] = a end
    return helpers.fleetsnap(home, x, env)
  end

  local function updates(cid)
    return helpers.effects(home)[cid].settings_update or 0
  end

  it("sets a changed setting back after the load, with one update, and the status shows it", function()
    backup()
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400",
      "--add-environment-variable", "MODE=test" })
    assert.equal("86_400", settings_of(c).freezing_threshold)
    local r = run()
    assert.equal(0, r.status, r.stderr)
    local s = settings_of(c)
    assert.equal("2_592_000", s.freezing_threshold)
    assert.same({}, s.environment_variables)
    -- The one update of the spec's own change, and fleetsnap's one.
    assert.equal(2, updates(c))
    -- Members whose settings match get no update at all.
    assert.equal(0, updates(fleet.members[3].canister_id))
  end)

  it("previews the settings update in the dry run, after the load and before the start", function()
    backup()
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", out }).status)
    local r = helpers.fleetsnap(home, { "--json", "restore", "run", out, "--settings", "apply" })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equal("apply", doc.options.settings)
    local pos, found = {}, nil
    for i, row in ipairs(doc.remaining) do
      pos[row.op] = i
      if row.op == "settings-" .. c then found = row end
    end
    assert.is_table(found)
    assert.equal("settings", found.kind)
    assert.matches("canister settings update " .. c:gsub("%-", "%%-") .. " %-%-force %-%-compute%-allocation 0 ",
      found.commands[2])
    assert.is_true(pos["load-" .. c] < pos["settings-" .. c])
    assert.is_true(pos["settings-" .. c] < pos["start-" .. c])
  end)

  it("leaves controllers alone without --settings-controllers", function()
    backup()
    icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--add-controller", other })
    local r = run()
    assert.equal(0, r.status, r.stderr)
    assert.is_true(has(settings_of(c).controllers, other))
  end)

  it("applies controllers when asked, never removing the operator's own principal", function()
    backup()
    -- The backup's controllers without the operator (as if recorded by
    -- another identity): applying them must still keep the operator.
    local me = operator()
    local path = out .. "/fleet-backup-manifest.json"
    local doc = json.decode(fs.read(path))
    for _, m in ipairs(doc.fleetsnap.members) do
      if m.canister_id == c then m.settings.controllers = { other } end
    end
    helpers.write(path, json.encode(doc, { pretty = true }))
    local r = run({}, { "--settings-controllers" })
    assert.equal(0, r.status, r.stderr)
    local ctl = settings_of(c).controllers
    assert.is_true(has(ctl, other))
    assert.is_true(has(ctl, me))
  end)

  it("does not copy the source's controllers onto a mapped target unless asked", function()
    local src, dst = fleet.members[#fleet.members].canister_id, fleet.members[#fleet.members - 1].canister_id
    icp_ok(home, { "canister", "settings", "update", src, "-e", "local", "--add-controller", other,
      "--freezing-threshold", "1000" })
    backup()
    assert.is_false(has(settings_of(dst).controllers, other))
    local map = helpers.tmpdir() .. "/map.json"
    helpers.write(map, json.encode({ members = { { source_canister = src, target_canister = dst } } }))
    local r = run({ "--members", src, "--mapping", map })
    assert.equal(0, r.status, r.stderr)
    local s = settings_of(dst)
    -- The other settings travel; the controllers do not.
    assert.equal("1_000", s.freezing_threshold)
    assert.is_false(has(s.controllers, other))
    r = run({ "--members", src, "--mapping", map }, { "--settings-controllers" })
    assert.equal(0, r.status, r.stderr)
    assert.is_true(has(settings_of(dst).controllers, other))
  end)

  it("a crash between the update and its record is settled by reading the status back, not updating twice",
    function()
      backup()
      icp_ok(home, { "canister", "settings", "update", c, "-e", "local", "--freezing-threshold", "86400" })
      local r = run({}, {}, { FLEETSNAP_FAILPOINT = "after-effect@settings_update-" .. c .. ":1" })
      assert.not_equal(0, r.status)
      -- The update happened; its record did not.
      assert.equal("2_592_000", settings_of(c).freezing_threshold)
      assert.equal(2, updates(c))
      for _ = 1, 10 do
        r = helpers.fleetsnap(home, { "restore", "run", out, "--execute" })
        if r.status ~= 4 then break end
        engine.sleep_ms(300)
      end
      assert.equal(0, r.status, r.stderr)
      assert.equal(2, updates(c))
      assert.equal("2_592_000", settings_of(c).freezing_threshold)
      local j = fs.read(out .. "/restore/fleetsnap-restore.wal")
      assert.matches('"reconciled":true', j)
    end)
end)
