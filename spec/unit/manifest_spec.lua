local engine = require "fleetsnap.engine"
local manifest = require "fleetsnap.manifest"
local principal = require "fleetsnap.principal"

local json = engine.json
local ROOT, A, B = principal.canister_id(1), principal.canister_id(2), principal.canister_id(3)
local DIGEST = string.rep("ab", 32)

-- fleetsnap's section as finalize writes it.
local function fleetsnap_section()
  local function member(cid, snap)
    return { canister_id = cid, snapshot_id = snap, stopped_at = 1, started_at = 3, downtime_ns = 2, digest = DIGEST,
      bytes = 3, files = { { path = "wasm_memory.bin", size = 3, sha256 = DIGEST } } }
  end
  return { format_version = 1, policy = "consistent", policy_sha256 = DIGEST, scope = "fleet", attempt = 1,
    consistency_window = { first_stop_at = 1, last_start_at = 3, window_ns = 2 },
    members = { member(A, "00"), member(B, "01") } }
end

local function build()
  local doc = manifest.build({
    backup_id = "b1", created_at = "unix:1", tool_version = "0.1.0", environment = "local", root = ROOT,
    topology = { hash = DIGEST, input = "test" },
    targets = { { canister_id = A, role = "app", parent = ROOT }, { canister_id = B, role = "worker", parent = A } },
    artifacts = { [A] = { snapshot_id = "00", artifact_path = A, digest = DIGEST },
      [B] = { snapshot_id = "01", artifact_path = B, digest = DIGEST } },
    fleetsnap = fleetsnap_section(),
  })
  return json.decode(json.encode(doc))
end

-- The same backup in the current line's shape (0.108).
local function build_108()
  local d = build()
  d.deployment, d.fleet = d.fleet, nil
  d.verification = json.decode('{"deployment_checks": [], "member_checks": []}')
  d.fleetsnap = nil
  return d
end

describe("manifest.build", function()
  it("builds a document its own validator accepts", function()
    assert.is_true(manifest.validate(build(), "m.json", "0.36"))
  end)

  it("writes upstream's key order", function()
    local text = json.encode(manifest.build({ backup_id = "b", created_at = "unix:1", tool_version = "v",
      environment = "local", root = ROOT, topology = { hash = DIGEST, input = "t" },
      targets = { { canister_id = A, role = "app", parent = ROOT } },
      artifacts = { [A] = { snapshot_id = "00", artifact_path = A, digest = DIGEST } }, fleetsnap = json.object({}) }),
      { pretty = true })
    local keys = {}
    for k in text:gmatch('\n  "([%w_]+)":') do keys[#keys + 1] = k end
    assert.same({ "manifest_version", "backup_id", "created_at", "tool", "source", "consistency", "fleet",
      "verification", "fleetsnap" }, keys)
  end)
end)

describe("manifest.backup_units", function()
  it("makes one unit per connected component of the selection", function()
    local units = manifest.backup_units({ { canister_id = A, role = "app", parent = ROOT },
      { canister_id = B, role = "worker", parent = A } })
    assert.equal(1, #units)
    assert.same({ "app", "worker" }, units[1].roles)
    assert.equal("subtree", units[1].kind)
    units = manifest.backup_units({ { canister_id = A, role = "app", parent = ROOT },
      { canister_id = B, role = "worker", parent = ROOT } })
    assert.equal(2, #units)
    assert.equal("backup-selection-1", units[1].unit_id)
    assert.equal("single", units[2].kind)
  end)
end)

describe("manifest.validate", function()
  local cases = {
    { "an unsupported version", function(d) d.manifest_version = 2 end, "manifest_version: expected version 1, got 2" },
    { "a bad principal", function(d) d.fleet.members[1].canister_id = "nope" end,
      'fleet.members[1].canister_id: expected a principal, got "nope" (Text is too short.)' },
    { "an unsafe artifact path", function(d) d.fleet.members[2].source_snapshot.artifact_path = "../x" end,
      "fleet.members[2].source_snapshot.artifact_path: not a safe relative path (component ..)" },
    { "a bad checksum", function(d) d.fleet.members[1].source_snapshot.checksum = "xyz" end,
      'fleet.members[1].source_snapshot.checksum: expected a SHA-256 hex digest (64 hex digits) or null, got "xyz"' },
    { "a duplicate member", function(d) d.fleet.members[2].canister_id = A end,
      "fleet.members[2].canister_id: duplicate " .. A },
    { "a bad hash algorithm", function(d) d.fleet.topology_hash_algorithm = "md5" end,
      'fleet.topology_hash_algorithm: expected "sha256", got "md5"' },
    { "a member that is a number", function(d) d.fleet.members[2] = 5 end,
      "fleet.members[2]: expected object, got integer" },
    { "members that are not an array", function(d) d.fleet.members = json.object({}) end,
      "fleet.members: expected array, got object" },
    { "no members", function(d) d.fleet.members = json.array({}) end,
      "fleet.members: expected at least 1 element, got 0" },
    { "a source snapshot that is a string", function(d) d.fleet.members[1].source_snapshot = "x" end,
      "fleet.members[1].source_snapshot: expected object, got string" },
    { "a missing snapshot id", function(d) d.fleet.members[1].source_snapshot.snapshot_id = nil end,
      "fleet.members[1].source_snapshot.snapshot_id: missing (expected a non-empty string)" },
    { "an identity mode of its own", function(d) d.fleet.members[1].identity_mode = "roaming" end,
      'fleet.members[1].identity_mode: expected one of "fixed", "relocatable", got "roaming"' },
    { "a parent that is not a principal", function(d) d.fleet.members[1].parent_canister_id = true end,
      "fleet.members[1].parent_canister_id: expected a principal or null, got boolean" },
    { "a file list that is a number", function(d) d.fleetsnap.members[1].files = 7 end,
      "fleetsnap.members[1].files: expected array, got integer" },
    { "a file digest that is not hex", function(d) d.fleetsnap.members[2].files[1].sha256 = "zz" end,
      'fleetsnap.members[2].files[1].sha256: expected a SHA-256 hex digest (64 hex digits), got "zz"' },
    { "a file size that is a string", function(d) d.fleetsnap.members[1].files[1].size = "3" end,
      "fleetsnap.members[1].files[1].size: expected an integer >= 0, got string" },
    { "a fleetsnap section of another version", function(d) d.fleetsnap.format_version = 2 end,
      "fleetsnap.format_version: expected version 1, got 2" },
    { "a fleetsnap member listed twice", function(d) d.fleetsnap.members[2].canister_id = A end,
      "fleetsnap.members[2].canister_id: duplicate " .. A },
    { "a document that is not an object", function() return json.array({}) end,
      "(document): expected object, got array" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1] .. ", naming the file and field", function()
      local d = build()
      d = c[2](d) or d
      local ok, msg, code = manifest.validate(d, "m.json", "0.36")
      assert.is_nil(ok)
      assert.equal("ECORRUPT", code)
      assert.equal("m.json: " .. c[3], msg)
    end)
  end

  it("reads 0.36 leniently: absent nullable fields and unknown keys", function()
    local d = build()
    for _, m in ipairs(d.fleet.members) do
      m.subnet_canister_id, m.controller_hint, m.parent_canister_id = nil, nil, nil
      m.source_snapshot.code_version, m.source_snapshot.module_hash = nil, nil
      m.upstream_only = true
    end
    d.verification, d.fleetsnap = nil, nil
    d.extra = { anything = 1 }
    assert.is_true(manifest.validate(d, "m.json", "0.36"))
  end)

  it("reads a 0.36 member without a checksum (verify then fails it)", function()
    local d = build()
    d.fleet.members[1].source_snapshot.checksum = nil
    d.fleet.members[2].source_snapshot.checksum = json.null
    assert.is_true(manifest.validate(d, "m.json", "0.36"))
  end)

  it("reads 0.108 strictly: an unknown field is refused", function()
    local d = build_108()
    assert.is_true(manifest.validate(d, "d.json", "0.108"))
    d.extra = 1
    local ok, msg = manifest.validate(d, "d.json", "0.108")
    assert.is_nil(ok)
    assert.matches("extra: unknown field", msg)
  end)

  it("reads 0.108 strictly: an unknown field inside a member is refused", function()
    local d = build_108()
    d.deployment.members[2].source_snapshot.extra = 1
    local ok, msg = manifest.validate(d, "d.json", "0.108")
    assert.is_nil(ok)
    assert.equal("d.json: deployment.members[2].source_snapshot.extra: unknown field", msg)
  end)

  it("reads 0.108 strictly: a required-nullable key must be present", function()
    local d = build_108()
    d.deployment.members[1].source_snapshot.checksum = nil
    local ok, msg = manifest.validate(d, "d.json", "0.108")
    assert.is_nil(ok)
    assert.equal("d.json: deployment.members[1].source_snapshot.checksum: missing (expected a SHA-256 hex digest "
      .. "(64 hex digits) or null)", msg)
  end)

  it("reads 0.108 strictly: no fleetsnap section", function()
    local d = build_108()
    d.fleetsnap = fleetsnap_section()
    local ok, msg = manifest.validate(d, "d.json", "0.108")
    assert.is_nil(ok)
    assert.equal("d.json: fleetsnap: unknown field", msg)
  end)
end)

describe("manifest.read", function()
  local helpers = require "helpers"
  after_each(function() helpers.cleanup() end)

  local function write(dir, name, doc)
    helpers.write(dir .. "/" .. name, type(doc) == "string" and doc or json.encode(doc))
  end

  it("reads the 0.36 manifest, with its line and the digest of its bytes", function()
    local dir = helpers.tmpdir()
    write(dir, manifest.FILE_036, build())
    local m = assert(manifest.read(dir))
    assert.equal("0.36", m.line)
    assert.equal(2, #m.members)
    assert.equal(engine.hash.sha256(helpers.read(dir .. "/" .. manifest.FILE_036)), m.sha256)
  end)

  it("reads the 0.108 manifest when there is no 0.36 one", function()
    local dir = helpers.tmpdir()
    write(dir, manifest.FILE_108, build_108())
    local m = assert(manifest.read(dir))
    assert.equal("0.108", m.line)
    assert.equal(m.doc.deployment, m.section)
  end)

  it("says ENOENT when there is no manifest", function()
    local m, msg, code = manifest.read(helpers.tmpdir())
    assert.is_nil(m)
    assert.equal("ENOENT", code)
    assert.matches("no fleet%-backup%-manifest%.json or deployment%-backup%-manifest%.json", msg)
  end)

  it("refuses malformed JSON, naming the file (ECORRUPT)", function()
    local dir = helpers.tmpdir()
    write(dir, manifest.FILE_036, "{")
    local m, msg, code = manifest.read(dir)
    assert.is_nil(m)
    assert.equal("ECORRUPT", code)
    assert.matches(dir .. "/" .. manifest.FILE_036 .. ": line 1", msg, 1, true)
  end)

  it("refuses a wrongly typed field, naming the file and field", function()
    local dir = helpers.tmpdir()
    local d = build()
    d.fleet.members[1] = 5
    write(dir, manifest.FILE_036, d)
    local m, msg, code = manifest.read(dir)
    assert.is_nil(m)
    assert.equal("ECORRUPT", code)
    assert.equal(dir .. "/" .. manifest.FILE_036 .. ": fleet.members[1]: expected object, got integer", msg)
  end)

  it("refuses a symlink where the manifest belongs instead of reading another one", function()
    local dir = helpers.tmpdir()
    write(dir, manifest.FILE_108, build_108())
    write(dir, "elsewhere.json", build())
    helpers.sh(string.format("ln -s elsewhere.json %s/%s", dir, manifest.FILE_036))
    local m, _, code = manifest.read(dir)
    assert.is_nil(m)
    assert.equal("ECORRUPT", code)
  end)
end)

describe("manifest.read_download_journal", function()
  local helpers = require "helpers"
  after_each(function() helpers.cleanup() end)

  local function journal()
    return json.decode(json.encode(manifest.download_journal({ backup_id = "b1", created_at = "unix:1",
      topology = { hash = DIGEST }, targets = { { canister_id = A }, { canister_id = B } },
      artifacts = { [A] = { snapshot_id = "00", artifact_path = A, digest = DIGEST },
        [B] = { snapshot_id = "01", artifact_path = B, digest = DIGEST } } })))
  end

  it("returns nothing when there is none", function()
    assert.is_nil(manifest.read_download_journal(helpers.tmpdir()))
    assert.is_nil(select(2, manifest.read_download_journal(helpers.tmpdir())))
  end)

  it("reads the entries by canister", function()
    local dir = helpers.tmpdir()
    helpers.write(dir .. "/" .. manifest.DOWNLOAD_JOURNAL, json.encode(journal()))
    local dj = assert(manifest.read_download_journal(dir))
    assert.equal("01", dj.by_canister[B].snapshot_id)
  end)

  it("reads 0.36's shape: no snapshot metadata, no topology hashes", function()
    local dir = helpers.tmpdir()
    local d = journal()
    d.discovery_topology_hash, d.pre_snapshot_topology_hash, d.operation_metrics = nil, nil, nil
    for _, a in ipairs(d.artifacts) do a.snapshot_taken_at_timestamp, a.snapshot_total_size_bytes = nil, nil end
    helpers.write(dir .. "/" .. manifest.DOWNLOAD_JOURNAL, json.encode(d))
    assert.is_table(manifest.read_download_journal(dir))
  end)

  local bad = {
    { "an entry that is a number", function(d) d.artifacts[2] = 5 end, "artifacts[2]: expected object, got integer" },
    { "a state of its own", function(d) d.artifacts[1].state = "Done" end,
      'artifacts[1].state: expected one of "Created", "Downloaded", "ChecksumVerified", "Durable", got "Done"' },
    { "a checksum that is a number", function(d) d.artifacts[1].checksum = 5 end,
      "artifacts[1].checksum: expected a SHA-256 hex digest (64 hex digits) or null, got integer" },
    { "artifacts that are a string", function(d) d.artifacts = "x" end, "artifacts: expected array, got string" },
  }
  for _, c in ipairs(bad) do
    it("refuses " .. c[1] .. ", naming the file and field", function()
      local dir = helpers.tmpdir()
      local d = journal()
      c[2](d)
      helpers.write(dir .. "/" .. manifest.DOWNLOAD_JOURNAL, json.encode(d))
      local dj, msg, code = manifest.read_download_journal(dir)
      assert.is_nil(dj)
      assert.equal("ECORRUPT", code)
      assert.equal(dir .. "/" .. manifest.DOWNLOAD_JOURNAL .. ": " .. c[3], msg)
    end)
  end
end)
