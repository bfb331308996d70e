--- How far a backup got, as data: the plan's operations counted by the
-- state the journal gives them. Read without the backup's lock, because a
-- runner may be appending right now: the journal is opened read-only, so a
-- record being written is left out, never cut. The CLI renders what `read`
-- returns; it computes nothing itself.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local backup_plan = require "fleetsnap.backup.plan"
local exec_state = require "fleetsnap.exec.state"

local json, fs = engine.json, engine.fs

local M = {}

-- The backup's write-ahead journal (its lock is this name plus ".lock").
M.JOURNAL = "fleetsnap-journal.wal"

-- Engine codes that say the journal's bytes are wrong, not that the file
-- system failed: a torn or overwritten record, a symlink in its place.
local CORRUPT = { ECORRUPT = true, EJSON = true, EUNSAFE = true, ELOOP = true }

--- The replayed state of the journal at `path`; an empty state when the
-- run never started. A journal that cannot be read as one raises ECORRUPT
-- naming it (a failing disk raises as the engine code says).
function M.replay(path)
  if not fs.lstat(path) then return exec_state.empty() end
  local j, err, code = engine.journal.open(path, { readonly = true })
  if not j then
    if code == "ENOENT" then return exec_state.empty() end -- removed since the lstat
    if CORRUPT[code] then errors.raise("ECORRUPT", path .. ": " .. tostring(err), { cause = code }) end
    error(errors.from_engine(path, err, code), 0)
  end
  -- records() raises on corruption found past the open, and a record of
  -- the wrong shape raises in replay: both mean the journal is corrupt.
  local ok, st = pcall(exec_state.replay, j)
  j:close()
  if not ok then
    errors.raise("ECORRUPT", path .. ": " .. (errors.is(st) and st.message or tostring(st)))
  end
  return st
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
