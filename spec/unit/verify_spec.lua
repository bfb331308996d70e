-- Offline verification of a backup: every artifact re-hashed against its
-- checksum and per-file digests; a member that cannot be checked fails; an
-- artifact path through a symlink is refused (exit 7).
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local verify = require "fleetsnap.verify"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local json = engine.json
local A, B = docs.A, docs.B

local function raised(f)
  local ok, err = pcall(f)
  assert.is_false(ok)
  assert.is_true(errors.is(err), tostring(err))
  return err
end

local function member(report, cid)
  for _, m in ipairs(report.members) do
    if m.canister_id == cid then return m end
  end
end

describe("verify.backup", function()
  local dir, doc
  before_each(function()
    dir = helpers.tmpdir()
    doc = docs.backup(dir)
  end)
  after_each(function() helpers.cleanup() end)

  local function rewrite()
    docs.write(dir, manifest.FILE_036, doc)
  end

  it("verifies an intact backup, member by member", function()
    local report = verify.backup(dir)
    assert.is_true(report.ok)
    assert.equal("b1", report.backup_id)
    assert.equal("0.36", report.manifest_line)
    assert.equal(2, #report.members)
    for _, m in ipairs(report.members) do
      assert.is_true(m.ok)
      assert.is_true(m.bytes > 0)
    end
  end)

  it("uses the manifest the caller read already", function()
    local m = assert(manifest.read(dir))
    m.doc.backup_id = "given"
    assert.equal("given", verify.backup(dir, m).backup_id)
  end)

  it("reports problems as a JSON array, also when there are none", function()
    local text = json.encode(verify.backup(dir))
    assert.matches('"problems":[]', text, 1, true)
  end)

  it("fails a member whose checksum is null: it cannot be verified", function()
    doc.fleet.members[1].source_snapshot.checksum = json.null
    rewrite()
    local report = verify.backup(dir)
    assert.is_false(report.ok)
    assert.is_false(member(report, A).ok)
    assert.same({ "no checksum: cannot be verified" }, member(report, A).problems)
    assert.is_true(member(report, B).ok)
  end)

  it("fails a member without a checksum key (0.36 reads it as null)", function()
    doc.fleet.members[2].source_snapshot.checksum = nil
    rewrite()
    local report = verify.backup(dir)
    assert.is_false(report.ok)
    assert.is_false(member(report, B).ok)
    assert.same({ "no checksum: cannot be verified" }, member(report, B).problems)
  end)

  it("fails a member without a checksum in a backup without fleetsnap's section or journal", function()
    doc.fleetsnap = nil
    doc.fleet.members[1].source_snapshot.checksum = nil
    rewrite()
    os.remove(dir .. "/" .. manifest.DOWNLOAD_JOURNAL)
    local report = verify.backup(dir)
    assert.is_false(report.ok)
    assert.same({ "no checksum: cannot be verified" }, member(report, A).problems)
  end)

  it("fails a member whose artifact is absent, naming the path", function()
    helpers.sh("rm -rf " .. dir .. "/" .. B)
    local report = verify.backup(dir)
    assert.is_false(report.ok)
    assert.same({ dir .. "/" .. B .. ": does not exist" }, member(report, B).problems)
    assert.is_true(member(report, A).ok)
  end)

  it("names a file whose bytes changed", function()
    local f = assert(io.open(dir .. "/" .. A .. "/stable_memory.bin", "r+b"))
    f:seek("set", 3)
    f:write("X")
    f:close()
    local problems = member(verify.backup(dir), A).problems
    assert.equal(2, #problems)
    assert.matches("^artifact digest %x+, manifest says %x+$", problems[1])
    assert.equal(A .. "/stable_memory.bin: content differs", problems[2])
  end)

  it("names a file that is not part of the backup", function()
    helpers.write(dir .. "/" .. A .. "/extra.bin", "x")
    local problems = member(verify.backup(dir), A).problems
    assert.equal(A .. "/extra.bin: not part of the backup", problems[#problems])
  end)

  it("fails a member the download journal does not call durable", function()
    local dj = json.decode(helpers.read(dir .. "/" .. manifest.DOWNLOAD_JOURNAL))
    dj.artifacts[1].state = "Downloaded"
    docs.write(dir, manifest.DOWNLOAD_JOURNAL, dj)
    assert.same({ "download-journal.json says Downloaded" }, member(verify.backup(dir), A).problems)
  end)

  it("fails a member whose snapshot the download journal does not list", function()
    local dj = json.decode(helpers.read(dir .. "/" .. manifest.DOWNLOAD_JOURNAL))
    dj.artifacts[2].snapshot_id = "other"
    docs.write(dir, manifest.DOWNLOAD_JOURNAL, dj)
    local problems = member(verify.backup(dir), B).problems
    assert.matches("^no entry for snapshot %d+ in download%-journal%.json$", problems[1])
  end)

  it("refuses a download journal that is not valid (ECORRUPT), naming the file and field", function()
    local dj = json.decode(helpers.read(dir .. "/" .. manifest.DOWNLOAD_JOURNAL))
    dj.artifacts[1].checksum = 5
    docs.write(dir, manifest.DOWNLOAD_JOURNAL, dj)
    local err = raised(function() verify.backup(dir) end)
    assert.equal("ECORRUPT", err.code)
    assert.matches(manifest.DOWNLOAD_JOURNAL .. ": artifacts[1].checksum: expected", err.message, 1, true)
  end)

  it("refuses a manifest that is not valid (ECORRUPT)", function()
    doc.fleet.members[1] = 5
    rewrite()
    local err = raised(function() verify.backup(dir) end)
    assert.equal("ECORRUPT", err.code)
    assert.matches("fleet.members[1]: expected object, got integer", err.message, 1, true)
  end)

  it("says ENOTFOUND without a manifest", function()
    os.remove(dir .. "/" .. manifest.FILE_036)
    assert.equal("ENOTFOUND", raised(function() verify.backup(dir) end).code)
  end)

  it("refuses an artifact path through a symlinked directory (ECORRUPT), naming it, the report attached", function()
    helpers.sh(string.format("mkdir %s/real && mv %s/%s %s/real/ && ln -s real %s/via", dir, dir, A, dir, dir))
    doc.fleet.members[1].source_snapshot.artifact_path = "via/" .. A
    rewrite()
    local err = raised(function() verify.backup(dir) end)
    assert.equal("ECORRUPT", err.code)
    assert.equal(7, errors.exit_code(err))
    assert.matches(A .. ": " .. dir .. "/via/" .. A .. ": " .. dir .. "/via is a symlink", err.message, 1, true)
    assert.is_false(member(err.report, A).ok)
    assert.is_true(member(err.report, B).ok)
  end)

  it("refuses a symlinked artifact directory (ECORRUPT)", function()
    helpers.sh(string.format("mv %s/%s %s/moved && ln -s moved %s/%s", dir, A, dir, dir, A))
    local err = raised(function() verify.backup(dir) end)
    assert.equal("ECORRUPT", err.code)
    assert.matches(dir .. "/" .. A .. " is a symlink", err.message, 1, true)
  end)

  it("refuses a symlink inside an artifact (ECORRUPT)", function()
    helpers.sh(string.format("ln -s /etc/passwd %s/%s/wasm_chunk_store/evil.bin", dir, A))
    local err = raised(function() verify.backup(dir) end)
    assert.equal("ECORRUPT", err.code)
    assert.matches("evil.bin", err.message, 1, true)
  end)

  it("verifies a 0.108 backup", function()
    os.remove(dir .. "/" .. manifest.FILE_036)
    doc.deployment, doc.fleet, doc.fleetsnap = doc.fleet, nil, nil
    doc.verification = { deployment_checks = json.array({}), member_checks = json.array({}) }
    docs.write(dir, manifest.FILE_108, doc)
    local report = verify.backup(dir)
    assert.is_true(report.ok)
    assert.equal("0.108", report.manifest_line)
  end)
end)
