-- One hash pass per byte: a backup reads every downloaded byte once (when
-- it arrives, on a background thread) and never again before its manifest.
-- Counted by the engine's own tally of bytes hashed in this process, with
-- the backup run in-process through the Lua API (icp-sim's own hashing
-- happens in its processes and is not counted).
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local backup = require "fleetsnap.backup"
local connection = require "fleetsnap.cli.connection"

local json, fs = engine.json, engine.fs

describe("backup.create", function()
  local home, out
  before_each(function()
    home = helpers.sim_home({ members = 3, depth = 1, heap = 262144, stable = 131072 })
    out = helpers.tmpdir() .. "/b"
  end)
  after_each(function() helpers.cleanup() end)

  it("hashes each downloaded byte exactly once", function()
    local driver = connection.driver({ sim = home })
    local before = engine.hash.stats()
    local res = backup.create({ driver = driver, out = out, root = connection.sim_root(home) })
    local after = engine.hash.stats()
    assert.is_truthy(res.manifest)
    local m = json.decode(fs.read(out .. "/fleet-backup-manifest.json"))
    local bytes, files = 0, 0
    for _, member in ipairs(m.fleetsnap.members) do
      bytes = bytes + member.bytes
      files = files + #member.files
    end
    -- The root's three children, each with 384 KiB of memory.
    assert.equal(3, #m.fleetsnap.members)
    assert.is_true(bytes > 3 * 393216)
    assert.equal(bytes, after.bytes - before.bytes)
    assert.equal(files, after.files - before.files)
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
    local before = engine.hash.stats()
    local res = backup.run(out, { driver = driver })
    local after = engine.hash.stats()
    assert.is_truthy(res.manifest)
    local m = json.decode(fs.read(out .. "/fleet-backup-manifest.json"))
    local expect
    for _, member in ipairs(m.fleetsnap.members) do
      if member.canister_id == touched then expect = member.bytes end
    end
    assert.is_true(expect > 0)
    assert.equal(expect, after.bytes - before.bytes)
  end)
end)
