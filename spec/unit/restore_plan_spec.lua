-- The restore plan: mapping rules, member choice, parent-before-child order,
-- the operation graph a plan gives under each option.
local engine = require "fleetsnap.engine"
local principal = require "fleetsnap.principal"
local plan_mod = require "fleetsnap.restore.plan"
local operations = require "fleetsnap.restore.operations"
local helpers = require "helpers"

local json = engine.json

local function id(n) return principal.canister_id(n) end

local SUM = ("ab"):rep(32)

-- A manifest of root(1) -> a(2) -> {b(3), c(4)}, listed children first so
-- that ordering has work to do.
local function manifest(opts)
  opts = opts or {}
  local function member(n, role, parent, mode)
    return { role = role, canister_id = id(n), parent_canister_id = parent and id(parent) or json.null,
      identity_mode = mode or "relocatable",
      source_snapshot = { snapshot_id = "s" .. n, module_hash = json.null, artifact_path = id(n),
        checksum_algorithm = "sha256", checksum = opts.no_checksum == n and json.null or SUM } }
  end
  local members = { member(3, "b", 2), member(4, "c", 2), member(2, "a", 1), member(1, "root", nil, "fixed") }
  return { members = members, file = "/x/fleet-backup-manifest.json", line = "0.36",
    doc = { backup_id = "bk", source = { environment = "local", root_canister = id(1) } } }
end

local function build(opts)
  return plan_mod.build({ dir = "/x", manifest = manifest(opts and opts.manifest), report = { members = {} },
    manifest_sha256 = SUM }, opts or {})
end

local function mapping_file(doc)
  local path = helpers.tmpdir() .. "/map.json"
  helpers.write(path, type(doc) == "string" and doc or json.encode(doc))
  return path
end

local function code_of(f)
  local ok, err = pcall(f)
  assert.is_false(ok)
  return err.code, err.message
end

describe("restore plan build", function()
  after_each(function() helpers.cleanup() end)

  it("orders members parent before child, keeping manifest order among the ready", function()
    local doc = build()
    local roles = {}
    for i, m in ipairs(doc.members) do
      roles[i] = m.role
      assert.equal(i - 1, m.member_order)
    end
    assert.same({ "root", "a", "b", "c" }, roles)
    assert.equal(id(2), doc.members[3].parent_target_canister)
    assert.equal(json.null, doc.members[1].parent_target_canister)
  end)

  it("restores in place without a mapping", function()
    for _, m in ipairs(build().members) do assert.equal(m.source_canister, m.target_canister) end
  end)

  it("maps members one to one and projects parents onto their targets", function()
    local doc = build({ members = id(2) .. "," .. id(3), mapping = mapping_file({ members = {
      { source_canister = id(2), target_canister = id(12) }, { source_canister = id(3), target_canister = id(13) } } }) })
    assert.equal(2, #doc.members)
    assert.equal(id(12), doc.members[1].target_canister)
    assert.equal(id(13), doc.members[2].target_canister)
    assert.equal(id(12), doc.members[2].parent_target_canister)
    assert.is_true(doc.mapping_supplied)
  end)

  it("chooses a subtree by role", function()
    local doc = build({ subtree = "a" })
    assert.equal(3, #doc.members)
    assert.equal("a", doc.members[1].role)
    -- The parent of the subtree's top is not restored, so it has no target.
    assert.equal(json.null, doc.members[1].parent_target_canister)
  end)

  it("refuses a member the backup does not have (ESELECT)", function()
    assert.equal("ESELECT", code_of(function() build({ members = "nope" }) end))
  end)

  it("refuses a mapping that misses a chosen member", function()
    local code, msg = code_of(function()
      build({ members = "a,b", mapping = mapping_file({ members = { { source_canister = id(2),
        target_canister = id(12) } } }) })
    end)
    assert.equal("EMAPPING", code)
    assert.matches("no target for member " .. id(3), msg, 1, true)
  end)

  it("refuses a duplicate target, naming the field", function()
    local code, msg = code_of(function()
      build({ members = "a,b", mapping = mapping_file({ members = { { source_canister = id(2), target_canister = id(12) },
        { source_canister = id(3), target_canister = id(12) } } }) })
    end)
    assert.equal("ECORRUPT", code)
    assert.matches("members[2].target_canister: duplicate target", msg, 1, true)
  end)

  it("refuses a duplicate source", function()
    local code = code_of(function()
      build({ mapping = mapping_file({ members = { { source_canister = id(2), target_canister = id(12) },
        { source_canister = id(2), target_canister = id(13) } } }) })
    end)
    assert.equal("ECORRUPT", code)
  end)

  it("refuses a source that is not a member of the backup", function()
    local code, msg = code_of(function()
      build({ members = "a", mapping = mapping_file({ members = { { source_canister = id(2), target_canister = id(12) },
        { source_canister = id(99), target_canister = id(13) } } }) })
    end)
    assert.equal("EMAPPING", code)
    assert.matches("not a member of the backup", msg)
  end)

  it("refuses an invalid principal, naming the field", function()
    local code, msg = code_of(function()
      build({ members = "a", mapping = mapping_file({ members = { { source_canister = id(2),
        target_canister = "not-a-principal" } } }) })
    end)
    assert.equal("ECORRUPT", code)
    assert.matches("members[1].target_canister", msg, 1, true)
  end)

  it("refuses unknown fields (strict document)", function()
    local code, msg = code_of(function()
      build({ mapping = mapping_file({ members = {}, extra = true }) })
    end)
    assert.equal("ECORRUPT", code)
    assert.matches("extra: unknown field", msg, 1, true)
  end)

  it("refuses malformed JSON, naming the file (ECORRUPT)", function()
    local path = mapping_file("{\"members\": [")
    local code, msg = code_of(function() build({ mapping = path }) end)
    assert.equal("ECORRUPT", code)
    assert.matches(path, msg, 1, true)
  end)

  it("never remaps a fixed-identity member", function()
    local code, msg = code_of(function()
      build({ members = "root", mapping = mapping_file({ members = { { source_canister = id(1),
        target_canister = id(11) } } }) })
    end)
    assert.equal("EMAPPING", code)
    assert.matches("fixed identity", msg)
  end)

  it("refuses a member without an artifact checksum", function()
    local code, msg = code_of(function() build({ manifest = { no_checksum = 3 } }) end)
    assert.equal("EMANIFEST", code)
    assert.matches(id(3), msg, 1, true)
  end)

  it("takes the restore shape from the policy", function()
    assert.is_true(build({ policy = "sequential" }).policy.serial)
    local doc = build()
    assert.is_false(doc.policy.serial)
    assert.equal(16, doc.options.concurrency)
  end)
end)

describe("restore plan fingerprint", function()
  it("ignores the id and time but not the members", function()
    local a, b = build(), build()
    b.restore_id, b.created_ns = "other", 1
    assert.equal(plan_mod.fingerprint(a), plan_mod.fingerprint(b))
    b.members[1].target_canister = id(50)
    assert.not_equal(plan_mod.fingerprint(a), plan_mod.fingerprint(b))
  end)
end)

describe("restore operations", function()
  local function by_id(ops)
    local out = {}
    for _, op in ipairs(ops) do out[op.id] = op end
    return out
  end
  -- Whether op waits on `other`, directly or through what it waits on
  -- (phase barriers stand between the phases).
  local function waits(ops, op, other, seen)
    seen = seen or {}
    for _, a in ipairs(op.after) do
      if a == other then return true end
      if not seen[a] then
        seen[a] = true
        if waits(ops, ops[a], other, seen) then return true end
      end
    end
    return false
  end

  it("uploads first, stops parents first, loads once all are stopped, starts children first", function()
    local doc = build()
    local ops = by_id(operations.restore(doc, {}))
    local r, a, b = id(1), id(2), id(3)
    assert.same({}, ops["upload-" .. a].after)
    assert.is_true(waits(ops, ops["stop-" .. a], "upload-" .. b))
    assert.is_true(waits(ops, ops["stop-" .. a], "stop-" .. r))
    assert.is_true(waits(ops, ops["load-" .. a], "stop-" .. b))
    assert.is_true(waits(ops, ops["start-" .. a], "start-" .. b))
    assert.is_true(waits(ops, ops["start-" .. r], "load-" .. b))
    assert.is_true(waits(ops, ops["verify-" .. a], "start-" .. r))
    assert.is_true(waits(ops, ops["delete-uploaded-" .. a], "verify-" .. b))
  end)

  it("adds the safety snapshot between stop and load, and the data check before the starts", function()
    local ops = by_id(operations.restore(build(), { safety_snapshot = true, verify_data = true }))
    local a = id(2)
    assert.is_true(waits(ops, ops["safety-" .. a], "stop-" .. a))
    assert.is_true(waits(ops, ops["load-" .. a], "safety-" .. a))
    assert.is_true(waits(ops, ops["load-" .. a], "safety-" .. id(4)))
    assert.is_true(waits(ops, ops["verify-data-" .. a], "load-" .. a))
    assert.is_true(waits(ops, ops["start-" .. a], "verify-data-" .. id(4)))
  end)

  it("keeps the uploads with keep_uploaded", function()
    for _, op in ipairs(operations.restore(build(), { keep_uploaded = true })) do
      assert.not_equal("delete", op.kind)
    end
  end)

  it("chains every operation after the one before it when serial", function()
    local ops = operations.restore(build({ policy = "sequential" }), {})
    for i = 2, #ops do assert.same({ ops[i - 1].id }, ops[i].after) end
    -- children start before their parents
    local pos = {}
    for i, op in ipairs(ops) do pos[op.id] = i end
    assert.is_true(pos["start-" .. id(3)] < pos["start-" .. id(2)])
  end)
end)

describe("restore plan read", function()
  local docs = require "fixtures.documents"
  local backup, plan_doc, state
  setup(function()
    backup = helpers.tmpdir()
    docs.backup(backup)
    plan_doc = json.encode(docs.restore_plan(backup))
  end)
  teardown(function() helpers.cleanup() end)
  before_each(function() state = helpers.tmpdir() end)

  local function read(mutate)
    local d = json.decode(plan_doc)
    if mutate then d = mutate(d) or d end
    docs.write(state, plan_mod.FILE, d)
    return plan_mod.read(state)
  end

  it("reads back the plan that planning made", function()
    local doc = assert(read())
    assert.equal(2, #doc.members)
    assert.equal(docs.A, doc.members[1].source_canister)
  end)

  it("says ENOTFOUND when there is no plan", function()
    local doc, msg, code = plan_mod.read(state)
    assert.is_nil(doc)
    assert.equal("ENOTFOUND", code)
    assert.matches("no restore plan in " .. state, msg, 1, true)
  end)

  it("refuses malformed JSON, naming the file (ECORRUPT)", function()
    local doc, msg, code = read(function() return "[" end)
    assert.is_nil(doc)
    assert.equal("ECORRUPT", code)
    assert.matches(plan_mod.FILE .. ": line 1", msg, 1, true)
  end)

  local cases = {
    { "a member that is a number", function(d) d.members[1] = 5 end, "members[1]: expected object, got integer" },
    { "members that are an object", function(d) d.members = json.object({}) end,
      "members: expected array, got object" },
    { "a checksum that is null (nothing to check the bytes against)", function(d) d.members[1].checksum = json.null end,
      "members[1].checksum: expected a SHA-256 hex digest (64 hex digits), got null" },
    { "an artifact path through ..", function(d) d.members[2].artifact_path = "../x" end,
      "members[2].artifact_path: not a safe relative path (component ..)" },
    { "a manifest file of its own", function(d) d.backup.manifest_file = "../../etc/passwd" end,
      'backup.manifest_file: expected one of "fleet-backup-manifest.json", "deployment-backup-manifest.json", '
      .. 'got "../../etc/passwd"' },
    { "an upload bound of 0", function(d) d.options.uploads = 0 end,
      "options.uploads: expected an integer >= 1, got 0" },
    { "a serial flag that is a string", function(d) d.policy.serial = "no" end,
      "policy.serial: expected boolean, got string" },
    { "checks that are a number", function(d) d.members[2].checks = 7 end,
      "members[2].checks: expected array, got integer" },
    { "a bytes count that is a string", function(d) d.members[1].bytes = "1" end,
      "members[1].bytes: expected an integer >= 0, got string" },
    { "another plan version", function(d) d.plan_version = 2 end, "plan_version: expected version 1, got 2" },
    { "members out of order", function(d) d.members[2].member_order = 5 end,
      "members[2].member_order: expected 1, got 5 (out of order)" },
    { "a duplicate target", function(d) d.members[2].target_canister = d.members[1].target_canister end,
      "members[2].target_canister: duplicate " .. docs.A },
    { "a parent restored after its child", function(d)
      d.members[1].parent_target_canister = d.members[2].target_canister
    end, "members[1].parent_target_canister: " .. docs.B .. " is not the target of an earlier member" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1] .. ", naming the file and field", function()
      local doc, msg, code = read(c[2])
      assert.is_nil(doc)
      assert.equal("ECORRUPT", code)
      assert.equal(state .. "/" .. plan_mod.FILE .. ": " .. c[3], msg)
    end)
  end
end)

describe("restore plan read_mapping", function()
  after_each(function() helpers.cleanup() end)

  it("reads sources to targets, in canonical form", function()
    local map = assert(plan_mod.read_mapping(mapping_file({ members = { { source_canister = id(2):upper(),
      target_canister = id(12) } } })))
    assert.same({ [id(2)] = id(12) }, map)
  end)

  it("says ENOTFOUND for a file that does not exist", function()
    local map, msg, code = plan_mod.read_mapping("/nonexistent/map.json")
    assert.is_nil(map)
    assert.equal("ENOTFOUND", code)
    assert.matches("/nonexistent/map.json", msg, 1, true)
  end)

  local cases = {
    { "a document that is an array", "[]", "(document): expected object, got array" },
    { "members that are a number", { members = 5 }, "members: expected array, got integer" },
    { "a member that is a string", { members = { "x" } }, "members[1]: expected object, got string" },
    { "a target that is missing", { members = { { source_canister = id(2) } } },
      "members[1].target_canister: missing (expected a principal)" },
    { "an unknown field in a member", { members = { { source_canister = id(2), target_canister = id(3), x = 1 } } },
      "members[1].x: unknown field" },
    { "the same principal written twice", { members = { { source_canister = id(2), target_canister = id(12) },
      { source_canister = id(2):upper(), target_canister = id(13) } } },
      "members[2].source_canister: duplicate source " .. id(2) },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1] .. ", naming the file and field (ECORRUPT)", function()
      local path = mapping_file(c[2])
      local map, msg, code = plan_mod.read_mapping(path)
      assert.is_nil(map)
      assert.equal("ECORRUPT", code)
      assert.equal(path .. ": " .. c[3], msg)
    end)
  end
end)
