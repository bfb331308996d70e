local engine = require "fleetsnap.engine"
local status = require "fleetsnap.backup.status"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local OPS = { "stop-a", "snapshot-a", "start-a", "download-a" }

local function make_backup()
  local dir = helpers.tmpdir() .. "/b1"
  assert(fs.mkdir_private(dir))
  local ops = {}
  for i, id in ipairs(OPS) do ops[i] = { id = id, kind = id:match("^(%a+)"), canister = "a", after = json.array({}) } end
  helpers.write(dir .. "/fleetsnap-plan.json", json.encode({ format = "fleetsnap-plan", plan_version = 1,
    backup_id = "b1", root = "r", targets = json.array({ { canister_id = "a" } }), operations = json.array(ops),
    options = {}, scope = { kind = "fleet" }, policy = { name = "consistent" } }))
  return dir
end

local function journal(dir, records)
  local j = assert(engine.journal.open(dir .. "/" .. status.JOURNAL))
  for _, r in ipairs(records) do assert(j:append(r)) end
  j:close()
end

describe("backup.status.read", function()
  after_each(function() helpers.cleanup() end)

  it("counts every operation as waiting before the run starts", function()
    local s = status.read(make_backup())
    assert.equal("b1", s.backup_id)
    assert.is_false(s.complete)
    assert.equal(0, s.attempt)
    assert.equal(4, s.operations)
    assert.same({ completed = 0, failed = 0, pending = 0, waiting = 4 }, s.counts)
  end)

  it("counts the journal's states, lists the failed with their error and the pending", function()
    local dir = make_backup()
    journal(dir, {
      { t = "attempt", n = 1 },
      { t = "claim", op = "stop-a", kind = "stop" }, { t = "done", op = "stop-a", state = "completed" },
      { t = "claim", op = "snapshot-a", kind = "snapshot" },
      { t = "done", op = "snapshot-a", state = "failed", error = { code = "ICP_FAILED", message = "no" } },
      { t = "claim", op = "start-a", kind = "start" },
    })
    local s = status.read(dir)
    assert.equal(1, s.attempt)
    assert.same({ completed = 1, failed = 1, pending = 1, waiting = 1 }, s.counts)
    assert.equal("snapshot-a", s.failed[1].op)
    assert.equal("no", s.failed[1].error.message)
    assert.same({ "start-a" }, s.pending)
  end)

  it("says complete once the journal has the finalized record", function()
    local dir = make_backup()
    journal(dir, { { t = "attempt", n = 1 }, { t = "finalized", manifest_sha256 = "x" } })
    assert.is_true(status.read(dir).complete)
  end)

  it("raises ECORRUPT naming the journal when a record before the tail is damaged", function()
    local dir = make_backup()
    journal(dir, { { t = "attempt", n = 1 }, { t = "claim", op = "stop-a" }, { t = "done", op = "stop-a",
      state = "completed" } })
    local f = assert(io.open(dir .. "/" .. status.JOURNAL, "r+b"))
    f:seek("set", 40)
    f:write("XX")
    f:close()
    local ok, e = pcall(status.read, dir)
    assert.is_false(ok)
    assert.equal("ECORRUPT", e.code)
    assert.matches(dir .. "/" .. status.JOURNAL .. ": ", e.message, 1, true)
  end)

  it("raises ECORRUPT when a symlink stands where the journal belongs", function()
    local dir = make_backup()
    helpers.sh("ln -s /etc/passwd " .. dir .. "/" .. status.JOURNAL)
    local ok, e = pcall(status.read, dir)
    assert.is_false(ok)
    assert.equal("ECORRUPT", e.code)
  end)

  it("leaves a record being appended out, and the file as it was", function()
    local dir = make_backup()
    journal(dir, { { t = "attempt", n = 1 } })
    local f = assert(io.open(dir .. "/" .. status.JOURNAL, "ab"))
    f:write("\161\245\50\0\0\0half")
    f:close()
    local before = helpers.read(dir .. "/" .. status.JOURNAL)
    assert.equal(1, status.read(dir).attempt)
    assert.equal(before, helpers.read(dir .. "/" .. status.JOURNAL))
  end)

  it("raises ENOTFOUND without a plan", function()
    local ok, e = pcall(status.read, helpers.tmpdir())
    assert.is_false(ok)
    assert.equal("ENOTFOUND", e.code)
  end)

  it("raises ECORRUPT for a plan that is not JSON", function()
    local dir = make_backup()
    helpers.write(dir .. "/fleetsnap-plan.json", "{")
    local ok, e = pcall(status.read, dir)
    assert.is_false(ok)
    assert.equal("ECORRUPT", e.code)
  end)
end)
