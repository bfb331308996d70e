-- What fleetsnap leaves on the canisters, and the commands that clean it
-- up: `backup forget`, `snapshots`, `snapshots clean`, and `backup prune`'s
-- on-canister part. Every destructive command is a dry run without
-- --execute; foreign snapshots are never deleted.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local home, fleet, dir, members

local function snapshots(cid)
  local r = helpers.icp(home, { "canister", "snapshot", "list", cid, "-e", "local", "--json" })
  assert.equal(0, r.status, r.stderr)
  local ids = {}
  for i, s in ipairs(json.decode(r.stdout).snapshots) do ids[i] = s.snapshot_id end
  table.sort(ids)
  return ids
end

local function has(list, id)
  for _, x in ipairs(list) do if x == id then return true end end
  return false
end

local function deletes()
  local out = {}
  for cid, e in pairs(helpers.effects(home)) do out[cid] = e.snapshot_delete end
  return out
end

local function backup(name, env)
  return helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/" .. name }, env)
end

-- The snapshot ids a complete backup records, by canister.
local function recorded(name)
  local m = json.decode(fs.read(dir .. "/" .. name .. "/fleet-backup-manifest.json"))
  local out = {}
  for _, x in ipairs(m.fleet.members) do out[x.canister_id] = x.source_snapshot.snapshot_id end
  return out
end

-- A snapshot made by hand (not by fleetsnap) of the first member.
local function foreign()
  local c = members[1]
  helpers.icp(home, { "canister", "stop", c, "-e", "local" })
  local id = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:gsub("%s+$", "")
  helpers.icp(home, { "canister", "start", c, "-e", "local" })
  return id
end

-- An incomplete backup that made a snapshot of every member: its
-- downloads failed.
local function incomplete(name)
  local r = backup(name, { ICP_SIM_FAIL = "snapshot.download" })
  assert.is_not.equal(0, r.status)
  assert.is_nil(fs.lstat(dir .. "/" .. name .. "/fleet-backup-manifest.json"))
end

before_each(function()
  home = helpers.sim_home({ members = 2, depth = 1 })
  fleet = helpers.fleet(home)
  dir = helpers.tmpdir() .. "/backups"
  members = {}
  for _, m in ipairs(fleet.members) do
    if m.canister_id ~= fleet.root then members[#members + 1] = m.canister_id end
  end
end)
after_each(function() helpers.cleanup() end)

describe("fleetsnap backup forget", function()
  it("does nothing without --execute, saying what it would delete", function()
    incomplete("b1")
    local before = { snapshots(members[1]), snapshots(members[2]) }
    local r = helpers.fleetsnap(nil, { "--json", "backup", "forget", "b1", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equal("forget", doc.type)
    assert.is_true(doc.dry_run)
    assert.equal(2, #doc.snapshots)
    for _, s in ipairs(doc.snapshots) do assert.equal("delete", s.action) end
    assert.same(before, { snapshots(members[1]), snapshots(members[2]) })
    assert.equal("directory", fs.lstat(dir .. "/b1").type)
  end)

  it("deletes an incomplete backup's snapshots and then its directory with --execute", function()
    assert.equal(0, backup("b0").status)
    local kept = recorded("b0")
    local other = foreign()
    incomplete("b1")
    local r = helpers.fleetsnap(nil, { "backup", "forget", "b1", "--dir", dir, "--execute" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("forgot backup b1: deleted 2 snapshot%(s%) and its directory", r.stdout)
    assert.is_nil(fs.lstat(dir .. "/b1"))
    for _, cid in ipairs(members) do
      assert.equal(1, deletes()[cid])
      local left = snapshots(cid)
      assert.is_true(has(left, kept[cid]))
      assert.equal(cid == members[1] and 2 or 1, #left)
    end
    assert.is_true(has(snapshots(members[1]), other))
  end)

  it("is refused for a complete backup (exit 5), which prune deletes", function()
    assert.equal(0, backup("b1").status)
    local r = helpers.fleetsnap(nil, { "backup", "forget", "b1", "--dir", dir, "--execute" })
    assert.equal(5, r.status)
    assert.matches("backup prune", r.stderr)
    assert.equal("directory", fs.lstat(dir .. "/b1").type)
    assert.same({ 0, 0 }, { deletes()[members[1]], deletes()[members[2]] })
  end)

  it("is refused while the backup's runner holds its lock (exit 4)", function()
    incomplete("b1")
    local lock = assert(engine.lock.acquire(dir .. "/b1/fleetsnap-journal.wal.lock"))
    local r = helpers.fleetsnap(nil, { "backup", "forget", "b1", "--dir", dir, "--execute" })
    local dry = helpers.fleetsnap(nil, { "backup", "forget", "b1", "--dir", dir })
    lock:close()
    assert.equal(4, r.status)
    assert.matches("is running", r.stderr)
    assert.equal(4, dry.status)
    assert.equal("directory", fs.lstat(dir .. "/b1").type)
    assert.same({ 0, 0 }, { deletes()[members[1]], deletes()[members[2]] })
  end)
end)

describe("fleetsnap snapshots", function()
  local owned, other
  before_each(function()
    assert.equal(0, backup("b1").status)
    owned = recorded("b1")
    other = foreign()
    incomplete("b2")
  end)

  local function classes()
    local r = helpers.fleetsnap(nil, { "--json", "snapshots", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equal("snapshots", doc.type)
    local out = {}
    for _, c in ipairs(doc.canisters) do
      for _, s in ipairs(c.snapshots) do out[c.canister_id .. "/" .. s.snapshot_id] = s end
    end
    return out, doc
  end

  it("marks each snapshot owned (by its backup), orphan or foreign", function()
    local all, doc = classes()
    assert.same({ owned = 2, orphan = 2, foreign = 1 }, doc.counts)
    for _, cid in ipairs(members) do
      assert.equal("owned", all[cid .. "/" .. owned[cid]].class)
      assert.equal("b1", all[cid .. "/" .. owned[cid]].backup)
    end
    assert.equal("foreign", all[members[1] .. "/" .. other].class)
    for key, s in pairs(all) do
      if s.class == "orphan" then
        assert.equal("b2", s.backup, key)
      end
    end
  end)

  it("says it in text too", function()
    local r = helpers.fleetsnap(nil, { "snapshots", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    assert.matches(other .. "  foreign", r.stdout, 1, true)
    assert.matches(owned[members[2]] .. "  owned   b1", r.stdout, 1, true)
    assert.matches("2 owned, 2 orphan, 1 foreign snapshot(s) on 2 canister(s)", r.stdout, 1, true)
  end)

  it("clean deletes nothing without --execute", function()
    local r = helpers.fleetsnap(nil, { "snapshots", "clean", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    assert.matches("would delete 2 orphan snapshot%(s%)", r.stdout)
    assert.same({ 0, 0 }, { deletes()[members[1]], deletes()[members[2]] })
  end)

  it("clean --execute deletes only the orphans: owned and foreign stay", function()
    local r = helpers.fleetsnap(nil, { "snapshots", "clean", "--dir", dir, "--execute" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("deleted 2 orphan snapshot%(s%)", r.stdout)
    local all, doc = classes()
    assert.same({ owned = 2, orphan = 0, foreign = 1 }, doc.counts)
    assert.truthy(all[members[1] .. "/" .. other])
    for _, cid in ipairs(members) do
      assert.equal(1, deletes()[cid])
      assert.truthy(all[cid .. "/" .. owned[cid]])
    end
  end)
end)

describe("fleetsnap snapshots clean, refusals and failures", function()
  before_each(function()
    assert.equal(0, backup("b1").status)
    incomplete("b2")
  end)

  it("keeps the orphans of a backup whose runner is alive", function()
    local lock = assert(engine.lock.acquire(dir .. "/b2/fleetsnap-journal.wal.lock"))
    local r = helpers.fleetsnap(nil, { "--json", "snapshots", "clean", "--dir", dir, "--execute" })
    lock:close()
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equal(2, #doc.orphans)
    for _, o in ipairs(doc.orphans) do assert.equal("keep", o.action) end
    assert.same({ 0, 0 }, { deletes()[members[1]], deletes()[members[2]] })
  end)

  it("reports each snapshot it could not delete and exits 1", function()
    local r = helpers.fleetsnap(nil, { "--json", "snapshots", "clean", "--dir", dir, "--execute" },
      { ICP_SIM_FAIL = "snapshot.delete@" .. members[1] })
    assert.equal(1, r.status)
    local doc = json.decode(r.stdout)
    local actions = {}
    for _, o in ipairs(doc.orphans) do actions[o.canister_id] = o.action end
    assert.same({ [members[1]] = "failed", [members[2]] = "deleted" }, actions)
    assert.equal(2, #snapshots(members[1]))
    assert.equal(1, #snapshots(members[2]))
  end)
end)

describe("fleetsnap backup prune on the canisters", function()
  before_each(function()
    assert.equal(0, backup("b1").status)
    assert.equal(0, backup("b2").status)
  end)

  it("deletes nothing without --execute", function()
    local r = helpers.fleetsnap(nil, { "backup", "prune", "--keep-last", "1", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    assert.matches("would delete 1 backup%(s%)", r.stdout)
    assert.equal("directory", fs.lstat(dir .. "/b1").type)
    assert.same({ 0, 0 }, { deletes()[members[1]], deletes()[members[2]] })
  end)

  it("--execute deletes the removed backups' snapshots, not the kept ones'", function()
    local gone, kept = recorded("b1"), recorded("b2")
    local other = foreign()
    local r = helpers.fleetsnap(nil, { "--json", "backup", "prune", "--keep-last", "1", "--dir", dir, "--execute" })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.same({ "b1" }, doc.deleted)
    assert.equal(2, #doc.snapshots)
    assert.is_nil(fs.lstat(dir .. "/b1"))
    for _, cid in ipairs(members) do
      local left = snapshots(cid)
      assert.is_false(has(left, gone[cid]))
      assert.is_true(has(left, kept[cid]))
      assert.equal(1, deletes()[cid])
    end
    assert.is_true(has(snapshots(members[1]), other))
  end)

  it("--execute keeps a snapshot that a kept backup also records, saying why", function()
    -- A copy of b1 records the same snapshots; it sorts as the older one.
    helpers.sh("cp -a " .. dir .. "/b1 " .. dir .. "/b0")
    local shared = recorded("b1")
    local r = helpers.fleetsnap(nil, { "backup", "prune", "--keep-last", "2", "--dir", dir, "--execute" })
    assert.equal(0, r.status, r.stderr)
    assert.is_nil(fs.lstat(dir .. "/b0"))
    assert.matches("also recorded by kept backup b1", r.stdout)
    for _, cid in ipairs(members) do
      assert.is_true(has(snapshots(cid), shared[cid]))
      assert.equal(0, deletes()[cid])
    end
  end)
end)
