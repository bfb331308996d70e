-- Promise: only our own snapshots are touched. A snapshot is replaced,
-- loaded or deleted only when the claim's baseline and the inventory prove
-- this tool created it; an id icp printed that is not new in the inventory
-- is a failure (exit 6); snapshots answered before an interrupt are adopted
-- or replaced by the next run; a phantom id is never reused. After any
-- sequence of kills, interrupts and faults, the canisters hold no
-- fleetsnap snapshot that no backup records.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "promises.support"

local json = engine.json

describe("only our own snapshots are touched", function()
  local home, work
  support.each_fleet(nil, function(h, w) home, work = h, w end)

  it("refuses an uploaded id that icp printed but the upload never created (exit 6), loading and deleting nothing",
    function()
      local b = work .. "/b"
      assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", b }).status)
      local cid = support.members(home)[2]
      local before = support.snapshot_ids(home, cid)
      assert.equal(1, #before)
      assert.equal(0, helpers.icp(home, { "sim", "mutate", "--all" }).status)
      assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", b }).status)
      local r = helpers.fleetsnap(home, { "restore", "run", b, "--execute" },
        { ICP_SIM_SILENT_SUCCESS = "snapshot.upload@" .. cid .. "#1" })
      assert.equal(6, r.status, r.stderr)
      assert.matches("icp reported it created, but", r.stderr)
      -- The backup's own snapshot is still there, and nothing was loaded.
      assert.same(before, support.snapshot_ids(home, cid))
      for _, e in pairs(helpers.effects(home)) do assert.equal(0, e.snapshot_load) end
      support.assert_as_found(home)
    end)

  it("never replaces a snapshot of another network whose id a backup in the same directory records (exit 5)",
    function()
      -- Canister and snapshot ids repeat across networks: a second fleet
      -- made the same way has the same ids, as fresh local replicas do.
      local other = helpers.sim_home({ members = 4, depth = 2 })
      local cid = support.members(home)[1]
      assert.equal(cid, support.members(other)[1])
      assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/a" }).status)
      -- The operator's own snapshot on the other network, with the id the
      -- first backup recorded for this canister.
      helpers.icp(other, { "canister", "stop", cid, "-e", "local" })
      assert.equal(0, helpers.icp(other, { "canister", "snapshot", "create", cid, "-e", "local" }).status)
      helpers.icp(other, { "canister", "start", cid, "-e", "local" })
      local theirs = support.snapshot_ids(other, cid)
      assert.equal(1, #theirs)
      assert.is_true(support.recorded({ work .. "/a" })[theirs[1]], "the ids did not collide")
      local r = helpers.fleetsnap(other, { "backup", "create", "--snapshot-limit", "1", "--out", work .. "/b" },
        { ICP_SIM_SNAPSHOT_LIMIT = "1" })
      assert.equal(5, r.status, r.stderr)
      assert.matches("snapshot slots are taken", r.stderr)
      assert.same(theirs, support.snapshot_ids(other, cid))
      support.assert_as_found(other)
    end)

  it("never reuses a phantom snapshot id (a create reported without effect) as --replace", function()
    local b = work .. "/b"
    local cid = support.members(home)[1]
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", b },
      { ICP_SIM_SILENT_SUCCESS = "snapshot.create@" .. cid .. "#1" })
    assert.equal(6, r.status, r.stderr)
    assert.matches("icp reported it created, but the canister does not have it", r.stderr)
    r = helpers.fleetsnap(home, { "backup", "resume", b })
    assert.equal(0, r.status, r.stderr)
    -- Two stop/start cycles in all: the failed attempt and the one that
    -- completed, never one per retry of a phantom --replace.
    for _, m in ipairs(support.members(home)) do
      local e = helpers.effects(home)[m]
      assert.equal(2, e.stop, m)
      assert.equal(2, e.start, m)
    end
    local recorded = support.recorded({ b })
    for _, m in ipairs(support.members(home)) do
      for _, id in ipairs(support.snapshot_ids(home, m)) do
        assert.is_true(recorded[id] ~= nil, m .. ": snapshot " .. id .. " is recorded by no backup")
      end
    end
  end)

  it("adopts or replaces the snapshots answered before an interrupt, leaving none unrecorded", function()
    local b = work .. "/b"
    -- Every snapshot create is slow: the interrupt comes while they run.
    local h = support.spawn(home, { "backup", "create", "--out", b }, { ICP_SIM_LATENCY_MS = "700" })
    support.wait_for(function()
      local n = 0
      for _, e in pairs(helpers.effects(home)) do n = n + e.snapshot_create end
      return n >= 1
    end, "the first snapshot")
    engine.proc.signal(h:pid(), 2)
    local r = h:result()
    h:close()
    assert.equal(130, r.status, r.stderr)
    local made = 0
    for _, e in pairs(helpers.effects(home)) do made = made + e.snapshot_create end
    assert.is_true(made >= 1, "a snapshot was answered before the interrupt")
    r = helpers.fleetsnap(home, { "backup", "resume", b })
    assert.equal(0, r.status, r.stderr)
    local recorded = support.recorded({ b })
    for _, m in ipairs(support.members(home)) do
      local ids = support.snapshot_ids(home, m)
      assert.equal(1, #ids, m)
      assert.is_true(recorded[ids[1]] ~= nil, m .. ": snapshot " .. ids[1] .. " is recorded by no backup")
    end
  end)

  it("leaves no unrecorded fleetsnap snapshot after a sampled sequence of kills, interrupts and faults", function()
    local b = work .. "/b"
    local members = support.members(home)
    -- 1. A create whose answer is lost (the snapshot exists, icp failed).
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", b, "--concurrency", "1" },
      { ICP_SIM_FAIL_AFTER = "snapshot.create@" .. members[2] })
    assert.equal(1, r.status, r.stderr)
    -- 2. An interrupt while a create hangs in the next window.
    local h = support.spawn(home, { "backup", "resume", b }, { ICP_SIM_HANG = "snapshot.create@" .. members[3] })
    support.wait_for(function() return support.stops(home) >= 8 end, "the second window's stops")
    engine.sleep_ms(500)
    engine.proc.signal(h:pid(), 2)
    r = h:result()
    h:close()
    assert.equal(130, r.status, r.stderr)
    -- 3. A kill right after a create in the third window.
    h = support.spawn(home, { "backup", "resume", b },
      { FLEETSNAP_FAILPOINT = "after-effect@snapshot_create-" .. members[4] .. ":1" })
    r = h:result()
    h:close()
    assert.equal(9, r.signal, r.stderr)
    -- 4. The run that completes.
    r = helpers.fleetsnap(home, { "backup", "resume", b })
    assert.equal(0, r.status, r.stderr)
    local made = 0
    for _, m in ipairs(members) do made = made + helpers.effects(home)[m].snapshot_create end
    assert.is_true(made > #members, "earlier windows made snapshots too")
    local recorded = support.recorded({ b })
    for _, m in ipairs(members) do
      local ids = support.snapshot_ids(home, m)
      assert.equal(1, #ids, m)
      assert.is_true(recorded[ids[1]] ~= nil, m .. ": snapshot " .. ids[1] .. " is recorded by no backup")
    end
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", b }).status)
    local m = json.decode(helpers.read(b .. "/fleet-backup-manifest.json"))
    assert.equal(#members, #m.fleet.members)
  end)
end)
