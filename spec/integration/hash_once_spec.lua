-- One hash pass per byte: a backup reads every downloaded byte once (when
-- it arrives, on a background thread) and never again before its manifest.
-- Counted by the engine's own tally of bytes hashed in this process, with
-- the backup run in-process through the Lua API (icp-sim's own hashing
-- happens in its processes and is not counted). The backup's documents
-- (the plan and the manifest, hashed whole for the snapshot index) are
-- not downloaded bytes: what hash.file reads at the backup's top level is
-- taken out of the tally, and counted on its own.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local backup = require "fleetsnap.backup"
local connection = require "fleetsnap.cli.connection"

local json, fs = engine.json, engine.fs

-- Runs f; returns the bytes and files hashed meanwhile that are not
-- documents at the top level of `dir`, and the names of those documents.
local function artifact_hashing(dir, f)
  local real = engine.hash.file
  local doc_bytes, doc_files, docs = 0, 0, {}
  engine.hash.file = function(path, ...)
    local sum, size = real(path, ...)
    if sum and path:match("^(.*)/[^/]+$") == dir then
      doc_bytes, doc_files = doc_bytes + size, doc_files + 1
      docs[#docs + 1] = path:match("[^/]+$")
    end
    return sum, size
  end
  local before = engine.hash.stats()
  local ok, res = pcall(f)
  local after = engine.hash.stats()
  engine.hash.file = real
  assert(ok, res)
  return after.bytes - before.bytes - doc_bytes, after.files - before.files - doc_files, docs, res
end

describe("backup.create", function()
  local home, out
  before_each(function()
    home = helpers.sim_home({ members = 3, depth = 1, heap = 262144, stable = 131072 })
    out = helpers.tmpdir() .. "/b"
  end)
  after_each(function() helpers.cleanup() end)

  it("hashes each downloaded byte exactly once", function()
    local driver = connection.driver({ sim = home })
    local hashed, hashed_files, docs, res = artifact_hashing(out, function()
      return backup.create({ driver = driver, out = out, root = connection.sim_root(home) })
    end)
    assert.is_truthy(res.manifest)
    -- The documents: the plan when the index is written, then both when
    -- retention reads the backups directory (this backup among them).
    table.sort(docs)
    assert.same({ "fleet-backup-manifest.json", "fleetsnap-plan.json", "fleetsnap-plan.json" }, docs)
    local m = json.decode(fs.read(out .. "/fleet-backup-manifest.json"))
    local bytes, files = 0, 0
    for _, member in ipairs(m.fleetsnap.members) do
      bytes = bytes + member.bytes
      files = files + #member.files
    end
    -- The root's three children, each with 384 KiB of memory.
    assert.equal(3, #m.fleetsnap.members)
    assert.is_true(bytes > 3 * 393216)
    assert.equal(bytes, hashed)
    assert.equal(files, hashed_files)
  end)

  it("reads the bytes again before its manifest only when a fingerprint moved", function()
    local driver = connection.driver({ sim = home })
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { FLEETSNAP_FAILPOINT = "before-write@fleet-backup-manifest.json:1" })
    assert.equal(9, r.signal)
    local plan = json.decode(fs.read(out .. "/fleetsnap-plan.json"))
    local touched = plan.targets[1].canister_id
    -- Same bytes, new mtime and ctime: the fingerprint moves, the digest
    -- does not, so the manifest is written after one more read of them.
    helpers.sh("touch " .. out .. "/" .. touched .. "/stable_memory.bin")
    local hashed, _, _, res = artifact_hashing(out, function() return backup.run(out, { driver = driver }) end)
    assert.is_truthy(res.manifest)
    local m = json.decode(fs.read(out .. "/fleet-backup-manifest.json"))
    local expect
    for _, member in ipairs(m.fleetsnap.members) do
      if member.canister_id == touched then expect = member.bytes end
    end
    assert.is_true(expect > 0)
    assert.equal(expect, hashed)
  end)
end)
