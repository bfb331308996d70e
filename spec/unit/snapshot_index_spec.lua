-- A backup's snapshot index (snapshot_index.lua) and its use by
-- ownership.known: it stands for the manifest and plan only while it names
-- the manifest's digest; otherwise the backup is read as before.
local engine = require "fleetsnap.engine"
local backup_plan = require "fleetsnap.backup.plan"
local manifest = require "fleetsnap.manifest"
local ownership = require "fleetsnap.exec.ownership"
local snapshot_index = require "fleetsnap.snapshot_index"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local json = engine.json

local CONNECTION = { sim = "/home/a" }

-- A complete backup (docs.backup) in parent/name whose plan recorded
-- CONNECTION; with its index when `indexed`. Returns the directory and the
-- manifest's text.
local function backup(parent, name, indexed)
  local dir = parent .. "/" .. name
  assert(engine.fs.mkdir_private(dir))
  docs.backup(dir)
  helpers.write(dir .. "/" .. backup_plan.FILE, json.encode({ connection = CONNECTION }))
  local text = helpers.read(dir .. "/" .. manifest.FILE_036)
  if indexed then
    assert(snapshot_index.write(dir, snapshot_index.build(json.decode(text), text, CONNECTION)))
  end
  return dir, text
end

local function index_doc(dir)
  return json.decode(helpers.read(dir .. "/" .. snapshot_index.FILE))
end

local function rewrite_index(dir, doc)
  helpers.write(dir .. "/" .. snapshot_index.FILE, json.encode(doc))
end

describe("snapshot_index.build", function()
  after_each(function() helpers.cleanup() end)

  it("lists each member's snapshot id with its canister and names the manifest's digest", function()
    local _, text = backup(helpers.tmpdir(), "b", false)
    local man = json.decode(text)
    local index = snapshot_index.build(man, text, CONNECTION)
    assert.equal(engine.hash.sha256(text), index.manifest_sha256)
    assert.equal(manifest.FILE_036, index.manifest_file)
    assert.equal("b1", index.backup_id)
    assert.same(CONNECTION, index.connection)
    assert.equal(2, #man.fleet.members)
    for i, m in ipairs(man.fleet.members) do
      assert.same({ canister_id = m.canister_id, snapshot_id = m.source_snapshot.snapshot_id }, index.snapshots[i])
    end
  end)

  it("records an unknown connection as null", function()
    local _, text = backup(helpers.tmpdir(), "b", false)
    assert.equal(json.null, snapshot_index.build(json.decode(text), text, nil).connection)
  end)
end)

describe("snapshot_index.read", function()
  after_each(function() helpers.cleanup() end)

  it("returns the index while the manifest beside it is the one it names", function()
    local dir = backup(helpers.tmpdir(), "b", true)
    local index, why = snapshot_index.read(dir)
    assert.is_table(index, why)
    assert.equal(2, #index.snapshots)
  end)

  it("ignores an index whose manifest changed since (stale)", function()
    local dir, text = backup(helpers.tmpdir(), "b", true)
    helpers.write(dir .. "/" .. manifest.FILE_036, text .. "\n")
    local index, why = snapshot_index.read(dir)
    assert.is_nil(index)
    assert.matches("stale", why)
  end)

  it("ignores a missing index", function()
    local dir = backup(helpers.tmpdir(), "b", false)
    local index, why = snapshot_index.read(dir)
    assert.is_nil(index)
    assert.matches(snapshot_index.FILE, why, 1, true)
  end)

  it("ignores an index that is not of its shape, naming the field", function()
    local dir = backup(helpers.tmpdir(), "b", true)
    local doc = index_doc(dir)
    doc.snapshots[1].snapshot_id = 5
    rewrite_index(dir, doc)
    local index, why = snapshot_index.read(dir)
    assert.is_nil(index)
    assert.matches("snapshots[1].snapshot_id", why, 1, true)
    for _, text in ipairs({ "false", "null", "[]", "{" }) do
      helpers.write(dir .. "/" .. snapshot_index.FILE, text)
      index, why = snapshot_index.read(dir)
      assert.is_nil(index)
      assert.is_string(why)
    end
  end)

  it("ignores an index whose manifest_file is a path, not a file of the directory", function()
    local parent = helpers.tmpdir()
    local dir = backup(parent, "b", true)
    local other = backup(parent, "c", false)
    local doc = index_doc(dir)
    -- The digest is right for the file it names: only the name is wrong.
    doc.manifest_file = "../c/" .. manifest.FILE_036
    doc.manifest_sha256 = engine.hash.sha256(helpers.read(other .. "/" .. manifest.FILE_036))
    rewrite_index(dir, doc)
    local index, why = snapshot_index.read(dir)
    assert.is_nil(index)
    assert.matches("manifest_file", why, 1, true)
  end)
end)

describe("ownership.known", function()
  after_each(function() helpers.cleanup() end)

  it("reads a backup's snapshots from its index, without its plan", function()
    local parent = helpers.tmpdir()
    local dir = backup(parent, "b", true)
    -- Without the plan, only the index can say which network it was.
    assert.is_true(os.remove(dir .. "/" .. backup_plan.FILE))
    local known = ownership.known(parent, CONNECTION)
    local n = 0
    for id, k in pairs(known) do
      n = n + 1
      assert.equal(dir, k.backup)
      assert.is_string(id)
    end
    assert.equal(2, n)
  end)

  it("believes the index while it names the manifest's digest", function()
    local parent = helpers.tmpdir()
    local dir = backup(parent, "b", true)
    local doc = index_doc(dir)
    doc.snapshots[1].snapshot_id = "from-the-index"
    rewrite_index(dir, doc)
    local known = ownership.known(parent, CONNECTION)
    assert.same({ backup = dir, canister = doc.snapshots[1].canister_id }, known["from-the-index"])
  end)

  it("reads the manifest and plan when the index is stale", function()
    local parent = helpers.tmpdir()
    local dir, text = backup(parent, "b", true)
    local doc = index_doc(dir)
    doc.snapshots[1].snapshot_id = "from-the-index"
    rewrite_index(dir, doc)
    -- The same manifest in other bytes: the index no longer names it.
    helpers.write(dir .. "/" .. manifest.FILE_036, json.encode(json.decode(text)))
    assert.is_nil(snapshot_index.read(dir))
    local known = ownership.known(parent, CONNECTION)
    assert.is_nil(known["from-the-index"])
    local man = json.decode(text)
    for _, m in ipairs(man.fleet.members) do
      assert.same({ backup = dir, canister = m.canister_id }, known[m.source_snapshot.snapshot_id])
    end
  end)

  it("reads backups with and without an index in one directory alike", function()
    local parent = helpers.tmpdir()
    local new = backup(parent, "new", true)
    local old, text = backup(parent, "old", false)
    -- docs.backup records the same ids in both: the index of "new" is made
    -- to name others, so that each id says which reading found it.
    local doc = index_doc(new)
    for i, s in ipairs(doc.snapshots) do s.snapshot_id = "new-" .. i end
    rewrite_index(new, doc)
    local known = ownership.known(parent, CONNECTION)
    for i, s in ipairs(doc.snapshots) do
      assert.same({ backup = new, canister = s.canister_id }, known["new-" .. i])
    end
    for _, m in ipairs(json.decode(text).fleet.members) do
      assert.same({ backup = old, canister = m.canister_id }, known[m.source_snapshot.snapshot_id])
    end
  end)

  it("knows nothing from an index of another network", function()
    local parent = helpers.tmpdir()
    backup(parent, "b", true)
    assert.same({}, ownership.known(parent, { sim = "/home/other" }))
  end)
end)
