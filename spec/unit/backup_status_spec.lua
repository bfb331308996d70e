local engine = require "fleetsnap.engine"
local status = require "fleetsnap.backup.status"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local fs = engine.fs

-- A backup directory holding a plan as `backup create` writes it; its
-- first four operation ids in OPS.
local OPS
local function make_backup()
  local dir = helpers.tmpdir() .. "/b1"
  assert(fs.mkdir_private(dir))
  local plan = docs.backup_plan()
  OPS = {}
  for i = 1, 4 do OPS[i] = plan.operations[i].id end
  docs.write(dir, "fleetsnap-plan.json", plan)
  return dir, #plan.operations
end

local function journal(dir, records)
  local j = assert(engine.journal.open(dir .. "/" .. status.JOURNAL))
  for _, r in ipairs(records) do assert(j:append(r)) end
  j:close()
end

describe("backup.status.read", function()
  after_each(function() helpers.cleanup() end)

  it("counts every operation as waiting before the run starts", function()
    local dir, n = make_backup()
    local s = status.read(dir)
    assert.equal("b1", s.backup_id)
    assert.is_false(s.complete)
    assert.equal(0, s.attempt)
    assert.equal(n, s.operations)
    assert.same({ completed = 0, failed = 0, pending = 0, waiting = n }, s.counts)
  end)

  it("counts the journal's states, lists the failed with their error and the pending", function()
    local dir, n = make_backup()
    journal(dir, {
      { t = "attempt", n = 1 },
      { t = "claim", op = OPS[1] }, { t = "done", op = OPS[1], state = "completed" },
      { t = "claim", op = OPS[2] },
      { t = "done", op = OPS[2], state = "failed", error = { code = "ICP_FAILED", message = "no" } },
      { t = "claim", op = OPS[3] },
    })
    local s = status.read(dir)
    assert.equal(1, s.attempt)
    assert.same({ completed = 1, failed = 1, pending = 1, waiting = n - 3 }, s.counts)
    assert.equal(OPS[2], s.failed[1].op)
    assert.equal("no", s.failed[1].error.message)
    assert.same({ OPS[3] }, s.pending)
  end)

  it("says complete once the journal has the finalized record", function()
    local dir = make_backup()
    journal(dir, { { t = "attempt", n = 1 }, { t = "finalized", manifest_sha256 = "x" } })
    assert.is_true(status.read(dir).complete)
  end)

  it("raises ECORRUPT naming the journal when a record before the tail is damaged", function()
    local dir = make_backup()
    journal(dir, { { t = "attempt", n = 1 }, { t = "claim", op = OPS[1] }, { t = "done", op = OPS[1],
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
