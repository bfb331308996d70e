-- Promise: one operation per fleet at a time, whatever the directory. A
-- second backup or restore of a fleet that another run holds gets exit 4
-- naming the holder, and touches nothing.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "promises.support"

local fs = engine.fs

describe("one operation per fleet", function()
  local home, work, lockdir
  before_each(function()
    home = helpers.sim_home({ members = 4, depth = 2 })
    work = helpers.tmpdir()
    lockdir = work .. "/locks"
  end)
  after_each(function() helpers.cleanup() end)

  local function env(extra)
    local e = { FLEETSNAP_LOCK_DIR = lockdir }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  -- A first backup that holds the fleet: stopped and hanging on its
  -- snapshots until it is interrupted.
  local function holder()
    local stops = support.stops(home)
    local h = support.spawn(home, { "backup", "create", "--out", work .. "/a" }, env({ ICP_SIM_HANG = "snapshot.create" }))
    support.wait_for(function() return support.stops(home) >= stops + 4 end, "the first backup's stops")
    return h
  end

  it("refuses a second backup of the fleet into another directory (exit 4), naming the holder", function()
    local h = holder()
    local before = helpers.effects(home)
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b" }, env())
    assert.equal(4, r.status, r.stderr)
    assert.matches("is busy", r.stderr)
    assert.matches("pid " .. h:pid(), r.stderr, 1, true)
    assert.matches("backup create", r.stderr, 1, true)
    assert.same(before, helpers.effects(home))
    engine.proc.signal(h:pid(), 2)
    local rr = h:result()
    h:close()
    assert.equal(130, rr.status, rr.stderr)
    support.assert_as_found(home, {}, "after the interrupt")
  end)

  it("refuses a restore of the fleet while a backup holds it (exit 4)", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/done" }, env()).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", work .. "/done" }, env()).status)
    local h = holder()
    local before = helpers.effects(home)
    local r = helpers.fleetsnap(home, { "restore", "run", work .. "/done", "--execute" }, env())
    assert.equal(4, r.status, r.stderr)
    assert.matches("pid " .. h:pid(), r.stderr, 1, true)
    assert.same(before, helpers.effects(home))
    engine.proc.signal(h:pid(), 2)
    h:result()
    h:close()
  end)

  it("lets the second run go once the first is gone", function()
    local h = holder()
    engine.proc.signal(h:pid(), 9)
    h:result()
    h:close()
    -- The dead run's hanging icp commands go too (an operator would wait
    -- for them, or kill them).
    support.kill_sims(home)
    local r = helpers.fleetsnap(home, { "backup", "resume", work .. "/a" }, env())
    assert.equal(0, r.status, r.stderr)
    r = helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b" }, env())
    assert.equal(0, r.status, r.stderr)
  end)

  it("keeps one lock file per fleet, not one per canister", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/a" }, env()).status)
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b" }, env()).status)
    local files = fs.list(lockdir)
    assert.equal(1, #files)
    assert.matches("%.lock$", files[1])
  end)

  it("tells two simulated fleets apart (a lock per network)", function()
    local other = helpers.sim_home({ members = 4, depth = 2 })
    local h = holder()
    local r = helpers.fleetsnap(other, { "backup", "create", "--out", work .. "/other" }, env())
    assert.equal(0, r.status, r.stderr)
    engine.proc.signal(h:pid(), 2)
    h:result()
    h:close()
  end)
end)
