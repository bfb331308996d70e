local engine = require "fleetsnap.engine"
local manifest = require "fleetsnap.manifest"
local principal = require "fleetsnap.principal"

local json = engine.json
local ROOT, A, B = principal.canister_id(1), principal.canister_id(2), principal.canister_id(3)
local DIGEST = string.rep("ab", 32)

local function build()
  local doc = manifest.build({
    backup_id = "b1", created_at = "unix:1", tool_version = "0.1.0", environment = "local", root = ROOT,
    topology = { hash = DIGEST, input = "test" },
    targets = { { canister_id = A, role = "app", parent = ROOT }, { canister_id = B, role = "worker", parent = A } },
    artifacts = { [A] = { snapshot_id = "00", artifact_path = A, digest = DIGEST },
      [B] = { snapshot_id = "01", artifact_path = B, digest = DIGEST } },
    fleetsnap = json.object({}),
  })
  return json.decode(json.encode(doc))
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
    { "an unsupported version", function(d) d.manifest_version = 2 end, "manifest_version" },
    { "a bad principal", function(d) d.fleet.members[1].canister_id = "nope" end, "fleet.members%[1%].canister_id" },
    { "an unsafe artifact path", function(d) d.fleet.members[2].source_snapshot.artifact_path = "../x" end,
      "artifact_path" },
    { "a bad checksum", function(d) d.fleet.members[1].source_snapshot.checksum = "xyz" end, "checksum" },
    { "a duplicate member", function(d) d.fleet.members[2].canister_id = A end, "duplicate" },
    { "a bad hash algorithm", function(d) d.fleet.topology_hash_algorithm = "md5" end, "must be sha256" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1] .. ", naming the field", function()
      local d = build()
      c[2](d)
      local ok, msg, code = manifest.validate(d, "m.json", "0.36")
      assert.is_nil(ok)
      assert.equal("EMANIFEST", code)
      assert.matches("^m%.json: ", msg)
      assert.matches(c[3], msg)
    end)
  end

  it("reads 0.108 strictly: an unknown field is refused", function()
    local d = build()
    d.deployment, d.fleet = d.fleet, nil
    d.verification = { deployment_checks = {}, member_checks = {} }
    d.fleetsnap = nil
    assert.is_true(manifest.validate(d, "d.json", "0.108"))
    d.extra = 1
    local ok, msg = manifest.validate(d, "d.json", "0.108")
    assert.is_nil(ok)
    assert.matches("extra: unknown field", msg)
  end)
end)
