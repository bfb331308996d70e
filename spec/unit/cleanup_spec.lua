-- cleanup.lua's evidence: which snapshots a backup's journal proves it
-- made (completed snapshot receipts of every attempt, nothing else).
local engine = require "fleetsnap.engine"
local cleanup = require "fleetsnap.cleanup"
local helpers = require "helpers"

local function journal(dir, records)
  local j = assert(engine.journal.open(dir .. "/fleetsnap-journal.wal"))
  for _, r in ipairs(records) do assert(j:append(r)) end
  j:close()
end

describe("cleanup.journal_snapshots", function()
  after_each(function() helpers.cleanup() end)

  it("takes completed snapshot receipts of every attempt, and no claim, failure or download", function()
    local dir = helpers.tmpdir()
    journal(dir, {
      { t = "attempt", n = 1 },
      { t = "claim", op = "snapshot-aaaaa-aa", kind = "snapshot", baseline = {} },
      { t = "done", op = "snapshot-aaaaa-aa", kind = "snapshot", state = "completed",
        receipt = { snapshot_id = "0001" } },
      { t = "claim", op = "snapshot-bbbbb-bb", kind = "snapshot", baseline = {} },
      { t = "done", op = "snapshot-bbbbb-bb", kind = "snapshot", state = "failed", error = { code = "X" } },
      { t = "done", op = "download-aaaaa-aa", kind = "download", state = "completed",
        receipt = { snapshot_id = "0009" } },
      { t = "attempt", n = 2 },
      { t = "claim", op = "snapshot-aaaaa-aa", kind = "snapshot", baseline = { "0001" } },
      { t = "done", op = "snapshot-aaaaa-aa", kind = "snapshot", state = "completed",
        receipt = { snapshot_id = "0002", reconciled = true } },
      { t = "claim", op = "snapshot-bbbbb-bb", kind = "snapshot", baseline = {} },
    })
    assert.same({ { canister = "aaaaa-aa", snapshot_id = "0001" }, { canister = "aaaaa-aa", snapshot_id = "0002" } },
      cleanup.journal_snapshots(dir))
  end)

  it("is empty without a journal", function()
    assert.same({}, cleanup.journal_snapshots(helpers.tmpdir()))
  end)
end)
