--- How far a backup got, as data: the plan's operations counted by the
-- state the journal gives them. Read without the backup's lock, because a
-- runner may be appending right now: the journal is opened read-only, so a
-- record being written is left out, never cut. The CLI renders what `read`
-- returns; it computes nothing itself.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local backup_plan = require "fleetsnap.backup.plan"
local exec_state = require "fleetsnap.exec.state"

local json = engine.json

local M = {}

-- The backup's write-ahead journal (its lock is this name plus ".lock").
M.JOURNAL = "fleetsnap-journal.wal"

--- The replayed state of the backup journal at `path` (read-only).
function M.replay(path)
  return exec_state.peek(path)
end

--- The progress of the backup in `dir`: {backup_id, dir, complete,
-- attempt, operations (count), counts {completed, failed, pending,
-- waiting}, failed [{op, error}], pending [op ids]}. Raises ENOTFOUND
-- without a plan, ECORRUPT for a plan or journal that cannot be read (the
-- plan reader checks every field and the operation graph).
function M.read(dir)
  local plan, err, code = backup_plan.read(dir)
  if not plan then errors.raise(code == "ENOENT" and "ENOTFOUND" or code, err) end
  local st = M.replay(dir .. "/" .. M.JOURNAL)
  local counts = { completed = 0, failed = 0, pending = 0, waiting = 0 }
  local failed, pending = json.array({}), json.array({})
  for _, op in ipairs(plan.operations) do
    local o = st.ops[op.id]
    local s = o and o.state or "waiting"
    -- A state this version does not know is counted under its own name
    -- rather than dropped.
    counts[s] = (counts[s] or 0) + 1
    if s == "failed" then
      failed[#failed + 1] = { op = op.id, error = type(o.error) == "table" and o.error or json.null }
    end
    if s == "pending" then pending[#pending + 1] = op.id end
  end
  return {
    backup_id = plan.backup_id,
    dir = dir,
    complete = st.finalized ~= nil,
    attempt = st.attempt,
    operations = #plan.operations,
    counts = counts,
    failed = failed,
    pending = pending,
  }
end

return M
