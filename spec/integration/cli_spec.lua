-- scripts/fleetsnap end to end on a small simulated fleet: a corrupt backup
-- among good ones, a corrupt journal, usage errors as the operator sees
-- them.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local MANIFEST = "fleet-backup-manifest.json"

-- Rewrites a backup's manifest through `change(doc)`.
local function damage(dir, change)
  local doc = assert(json.decode(assert(helpers.read(dir .. "/" .. MANIFEST))))
  change(doc)
  helpers.write(dir .. "/" .. MANIFEST, json.encode(doc))
end

describe("fleetsnap with a corrupt backup among good ones", function()
  local home, made, dir

  setup(function()
    home = helpers.sim_home({ members = 2, depth = 1 })
    made = helpers.tmpdir() .. "/backups"
    for i = 1, 3 do
      local r = helpers.fleetsnap(home, { "backup", "create", "--out", made .. "/b" .. i })
      assert(r.status == 0, r.stderr)
    end
  end)
  teardown(function() helpers.cleanup() end)

  -- A fresh copy of the three backups with b2's first member replaced by 5.
  before_each(function()
    dir = helpers.tmpdir() .. "/backups"
    helpers.sh("cp -a " .. made .. " " .. dir)
    damage(dir .. "/b2", function(doc) doc.fleet.members[1] = 5 end)
  end)

  it("lists the corrupt backup as corrupt, with the reason, and the others as complete", function()
    local r = helpers.fleetsnap(nil, { "backup", "list", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    assert.matches("\nb1 +%S+ +complete +2 ", r.stdout)
    assert.matches("\nb2 +%- +corrupt +[- ]+" .. dir:gsub("%p", "%%%0") .. "/b2/fleet%-backup%-manifest%.json: fleet%.members%[1%]",
      r.stdout)
    assert.matches("\nb3 +%S+ +complete +2 ", r.stdout)
  end)

  it("lists it as corrupt with --json", function()
    local r = helpers.fleetsnap(nil, { "--json", "backup", "list", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    local rows = json.decode(r.stdout).backups
    -- Newest first; the corrupt one, whose time nobody can tell, last.
    assert.same({ "b3", "b1", "b2" }, { rows[1].name, rows[2].name, rows[3].name })
    assert.same({ "complete", "complete", "corrupt" }, { rows[1].state, rows[2].state, rows[3].state })
    assert.is_string(rows[3].reason)
    assert.equal(json.null, rows[3].created_ns)
  end)

  it("prunes the others by the rules and keeps the corrupt one", function()
    local r = helpers.fleetsnap(nil, { "backup", "prune", "--keep-last", "1", "--dir", dir, "--execute" })
    assert.equal(0, r.status, r.stderr)
    assert.is_nil(fs.lstat(dir .. "/b1"))
    assert.equal("directory", fs.lstat(dir .. "/b2").type)
    assert.equal("directory", fs.lstat(dir .. "/b3").type)
    assert.matches("b2 +keep %(corrupt%)", r.stdout)
  end)

  it("creates a new backup beside it", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b4" })
    assert.equal(0, r.status, r.stderr)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", dir .. "/b4" }).status)
  end)

  it("refuses to inspect the corrupt backup (exit 7)", function()
    local r = helpers.fleetsnap(nil, { "backup", "inspect", "b2", "--dir", dir })
    assert.equal(7, r.status)
    assert.matches("b2", r.stderr)
  end)

  it("refuses to verify the corrupt backup (exit 7), naming the field", function()
    local r = helpers.fleetsnap(nil, { "backup", "verify", dir .. "/b2" })
    assert.equal(7, r.status)
    assert.matches("fleet%.members%[1%]", r.stderr)
  end)

  it("says the status of a backup whose journal is corrupt is unreadable (exit 7), naming the journal", function()
    local f = assert(io.open(dir .. "/b1/fleetsnap-journal.wal", "r+b"))
    f:seek("set", 40)
    f:write("XX")
    f:close()
    local r = helpers.fleetsnap(nil, { "backup", "status", dir .. "/b1" })
    assert.equal(7, r.status)
    assert.matches("fleetsnap%-journal%.wal: ", r.stderr)
  end)
end)

describe("fleetsnap usage errors", function()
  it("names the option of a bad value and prints one JSON document with --json (exit 2)", function()
    local r = helpers.fleetsnap(nil, { "--json", "backup", "create", "--concurrency", "abc" })
    assert.equal(2, r.status)
    local doc = json.decode(r.stdout)
    assert.equal("error", doc.type)
    assert.equal(2, doc.exit)
    assert.equal("backup create: --concurrency must be an integer >= 1, got 'abc'", doc.message)
  end)

  it("refuses --concurrency 0 before anything runs, without a traceback", function()
    local home = helpers.sim_home({ members = 2, depth = 1 })
    local out = helpers.tmpdir() .. "/b"
    local r = helpers.fleetsnap(home, { "backup", "create", "--concurrency", "0", "--out", out })
    assert.equal(2, r.status)
    assert.equal("fleetsnap: backup create: --concurrency must be an integer >= 1, got 0\n"
      .. "next: fleetsnap backup create --help\n", r.stderr)
    assert.is_nil(fs.lstat(out))
    helpers.cleanup()
  end)
end)
