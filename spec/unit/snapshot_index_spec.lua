-- A backup's snapshot index (snapshot_index.lua) and its use by
-- ownership.known: it stands for the manifest and plan only while both are
-- the bytes it names; otherwise the backup is read from them as before.
local engine = require "fleetsnap.engine"
local backup_plan = require "fleetsnap.backup.plan"
local manifest = require "fleetsnap.manifest"
local ownership = require "fleetsnap.exec.ownership"
local snapshot_index = require "fleetsnap.snapshot_index"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local json = engine.json

local CONNECTION = { sim = "/home/a" }

local function plan_sum(dir)
  return engine.hash.sha256(helpers.read(dir .. "/" .. backup_plan.FILE))
end

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
    assert(snapshot_index.write(dir, snapshot_index.build(json.decode(text), engine.hash.sha256(text), plan_sum(dir),
      CONNECTION)))
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

  it("lists each member's snapshot id with its canister and names both documents' digests", function()
    local dir, text = backup(helpers.tmpdir(), "b", false)
    local man = json.decode(text)
    local index = snapshot_index.build(man, engine.hash.sha256(text), plan_sum(dir), CONNECTION)
    assert.equal(engine.hash.sha256(text), index.manifest_sha256)
    assert.equal(plan_sum(dir), index.plan_sha256)
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
    assert.equal(json.null, snapshot_index.build(json.decode(text), ("0"):rep(64), ("0"):rep(64), nil).connection)
  end)
end)

describe("snapshot_index.read", function()
  after_each(function() helpers.cleanup() end)

  it("returns the index while the manifest and plan beside it are the ones it names", function()
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

  it("ignores an index whose plan changed since (stale)", function()
    local dir = backup(helpers.tmpdir(), "b", true)
    helpers.write(dir .. "/" .. backup_plan.FILE, json.encode({ connection = { sim = "/home/other" } }))
    local index, why = snapshot_index.read(dir)
    assert.is_nil(index)
    assert.matches("stale (" .. backup_plan.FILE .. " changed", why, 1, true)
  end)

  it("ignores an index whose manifest is gone", function()
    local dir = backup(helpers.tmpdir(), "b", true)
    assert.is_true(os.remove(dir .. "/" .. manifest.FILE_036))
    local index, why = snapshot_index.read(dir)
    assert.is_nil(index)
    assert.matches(manifest.FILE_036, why, 1, true)
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

  -- Counts the manifest reads known makes while f runs (the index path
  -- reads none).
  local function manifest_reads(f)
    local real, n = manifest.read, 0
    manifest.read = function(...)
      n = n + 1
      return real(...)
    end
    local ok, err = pcall(f)
    manifest.read = real
    assert(ok, err)
    return n
  end

  it("reads a backup's snapshots from its index, reading no manifest", function()
    local parent = helpers.tmpdir()
    local dir, text = backup(parent, "b", true)
    local known
    assert.equal(0, manifest_reads(function() known = ownership.known(parent, CONNECTION) end))
    local want = {}
    for _, m in ipairs(json.decode(text).fleet.members) do
      want[m.source_snapshot.snapshot_id] = { backup = dir, canister = m.canister_id }
    end
    assert.same(want, known)
    -- The same backup without its index: the manifest is read, with the
    -- same answer.
    assert.is_true(os.remove(dir .. "/" .. snapshot_index.FILE))
    assert.equal(1, manifest_reads(function() known = ownership.known(parent, CONNECTION) end))
    assert.same(want, known)
  end)

  it("takes the snapshots the index lists while both documents are the bytes it names", function()
    local parent = helpers.tmpdir()
    local dir = backup(parent, "b", true)
    local doc = index_doc(dir)
    doc.snapshots[1].snapshot_id = "from-the-index"
    rewrite_index(dir, doc)
    local known = ownership.known(parent, CONNECTION)
    assert.same({ backup = dir, canister = doc.snapshots[1].canister_id }, known["from-the-index"])
  end)

  it("proves nothing from an index whose plan is gone, as from the manifest alone", function()
    local parent = helpers.tmpdir()
    local dir = backup(parent, "b", true)
    assert.is_true(os.remove(dir .. "/" .. backup_plan.FILE))
    assert.same({}, ownership.known(parent, CONNECTION))
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

  it("knows nothing from an index of another network, reading no manifest", function()
    local parent = helpers.tmpdir()
    backup(parent, "b", true)
    local known
    assert.equal(0, manifest_reads(function() known = ownership.known(parent, { sim = "/home/other" }) end))
    assert.same({}, known)
  end)
end)
