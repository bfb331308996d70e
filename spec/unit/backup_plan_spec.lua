-- Reading fleetsnap-plan.json back: every field the runner uses has the
-- type it is used as, and the operation graph is one the runner can run.
local engine = require "fleetsnap.engine"
local plan_mod = require "fleetsnap.backup.plan"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local json = engine.json

describe("backup plan read", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  local function read(doc)
    docs.write(dir, plan_mod.FILE, doc)
    return plan_mod.read(dir)
  end

  it("reads back the plan that planning made", function()
    local doc = assert(read(docs.backup_plan()))
    assert.equal("b1", doc.backup_id)
    assert.equal(2, #doc.targets)
  end)

  it("says ENOENT when there is no plan", function()
    local doc, msg, code = plan_mod.read(dir)
    assert.is_nil(doc)
    assert.equal("ENOENT", code)
    assert.matches(dir, msg, 1, true)
  end)

  it("refuses malformed JSON, naming the file (ECORRUPT)", function()
    local doc, msg, code = read("{")
    assert.is_nil(doc)
    assert.equal("ECORRUPT", code)
    assert.matches(plan_mod.FILE .. ": line 1", msg, 1, true)
  end)

  local cases = {
    { "another format", function(d) d.format = "x" end, 'format: expected "fleetsnap-plan", got "x"' },
    { "an unsupported version", function(d) d.plan_version = 2 end, "plan_version: expected version 1, got 2" },
    { "a backup id that is a number", function(d) d.backup_id = 5 end,
      "backup_id: expected a non-empty string, got integer" },
    { "a root that is not a principal", function(d) d.root = "x" end, 'root: expected a principal, got "x" (Text must be in valid Base32 encoding.)' },
    { "a target that is a number", function(d) d.targets[2] = 5 end, "targets[2]: expected object, got integer" },
    { "a parent that is missing", function(d) d.targets[1].parent = nil end,
      "targets[1].parent: missing (expected a principal or null)" },
    { "a depth that is a string", function(d) d.targets[1].depth = "1" end,
      "targets[1].depth: expected an integer >= 0, got string" },
    { "checks that are an object", function(d) d.targets[1].checks = json.object({}) end,
      "targets[1].checks: expected array, got object" },
    { "a check reply that is not hex", function(d) d.targets[1].checks[1].expect_hex = "zz" end,
      'targets[1].checks[1].expect_hex: expected hex digits, got "zz"' },
    { "an operation kind of its own", function(d) d.operations[1].kind = "reboot" end,
      'operations[1].kind: expected one of "stop", "snapshot", "start", "download", "call", "barrier", got "reboot"' },
    { "dependencies that are a string", function(d) d.operations[2].after = "x" end,
      "operations[2].after: expected array, got string" },
    { "a dependency that is a number", function(d) d.operations[2].after = json.array({ 7 }) end,
      "operations[2].after[1]: expected a non-empty string, got integer" },
    { "a call without its method", function(d) d.operations[#d.operations].method = nil end,
      "operations[11].method: missing (expected a non-empty string)" },
    { "a call whose idempotence is a string", function(d) d.operations[#d.operations].idempotent = "yes" end,
      "operations[11].idempotent: expected boolean, got string" },
    { "a concurrency of 0", function(d) d.options.concurrency = 0 end,
      "options.concurrency: expected an integer >= 1, got 0" },
    { "a download bound that is a float", function(d) d.options.downloads = 1.5 end,
      "options.downloads: expected an integer >= 1, got number" },
    { "a negative retention", function(d) d.options.keep_on_canister = -1 end,
      "options.keep_on_canister: expected an integer >= 0, got -1" },
    { "a snapshot limit that is null", function(d) d.options.snapshot_limit = json.null end,
      "options.snapshot_limit: expected an integer >= 1, got null" },
    { "a scope kind of its own", function(d) d.scope.kind = "all" end,
      'scope.kind: expected one of "fleet", "subtree", "member", got "all"' },
    { "a topology hash that is not a digest", function(d) d.scope.topology_hash = "x" end,
      'scope.topology_hash: expected a SHA-256 hex digest (64 hex digits), got "x"' },
    { "policy that is an array", function(d) d.policy = json.array({}) end, "policy: expected object, got array" },
    { "no operations", function(d) d.operations = json.array({}) end,
      "operations: expected at least 1 element, got 0" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1] .. ", naming the file and field", function()
      local d = docs.backup_plan()
      c[2](d)
      local doc, msg, code = read(d)
      assert.is_nil(doc)
      assert.equal("ECORRUPT", code)
      assert.equal(dir .. "/" .. plan_mod.FILE .. ": " .. c[3], msg)
    end)
  end

  local function op_index(d, id)
    for i, op in ipairs(d.operations) do
      if op.id == id then return i end
    end
  end

  it("refuses a duplicate operation id", function()
    local d = docs.backup_plan()
    d.operations[2].id = d.operations[1].id
    local _, msg = read(d)
    assert.matches("operations[2].id: duplicate", msg, 1, true)
  end)

  it("refuses an operation on a canister that is not a target", function()
    local d = docs.backup_plan()
    d.operations[1].canister = docs.ROOT
    d.operations[1].id = d.operations[1].kind .. "-" .. docs.ROOT
    local _, msg = read(d)
    assert.matches("operations[1].canister: " .. docs.ROOT .. " is not a target", msg, 1, true)
  end)

  it("refuses a lifecycle operation whose id is not <kind>-<canister> (the runner finds it by that name)", function()
    local d = docs.backup_plan()
    d.operations[1].id = "mine"
    local _, msg = read(d)
    assert.matches("operations[1].id: expected", msg, 1, true)
  end)

  it("refuses a dependency on an unknown operation", function()
    local d = docs.backup_plan()
    d.operations[1].after = json.array({ "nothing" })
    local _, msg = read(d)
    assert.matches("operations[1].after[1]: unknown operation nothing", msg, 1, true)
  end)

  it("refuses a dependency cycle", function()
    local d = docs.backup_plan()
    local stop, snap = op_index(d, "stop-" .. docs.A), "snapshot-" .. docs.A
    d.operations[stop].after = json.array({ snap })
    local doc, msg, code = read(d)
    assert.is_nil(doc)
    assert.equal("ECORRUPT", code)
    assert.matches("dependency cycle", msg, 1, true)
  end)

  it("refuses a target without a download", function()
    local d = docs.backup_plan()
    local i = op_index(d, "download-" .. docs.B)
    table.remove(d.operations, i)
    local _, msg = read(d)
    assert.matches("targets[2]: no download operation for " .. docs.B, msg, 1, true)
  end)

  it("ignores fields it does not know", function()
    local d = docs.backup_plan()
    d.future = { x = 1 }
    assert.is_table(read(d))
  end)
end)
