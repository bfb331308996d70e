--- The restore state directory (by default `<backup>/restore/`) as seen
-- from outside a run: where it is, what its journals say (read without
-- taking the lock: a runner may be appending), and whether the backup is
-- in use by an unfinished restore. Backup pruning asks this module, so it
-- requires nothing of the restore runner.
local engine = require "fleetsnap.engine"
local exec_state = require "fleetsnap.exec.state"

local fs = engine.fs

local M = {}

M.PLAN = "fleetsnap-restore-plan.json"
M.JOURNAL = "fleetsnap-restore.wal"
M.UNDO_JOURNAL = "fleetsnap-restore-undo.wal"
-- A restore drill's journal, in `<backup>/drill/` by default (restore/drill.lua).
M.DRILL_DIR = "drill"
M.DRILL_JOURNAL = "fleetsnap-drill.wal"

function M.dir(backup_dir, state)
  return state or (backup_dir .. "/restore")
end

--- The restore's own records (begin, abort, aborted, containment's
-- bookkeeping), seen by the executor's replay.
function M.extra(st, r)
  if r.t == "begin" then st.begin = r
  elseif r.t == "abort" then st.abort = r
  elseif r.t == "aborted" then st.aborted = r
  elseif r.t == "contained" then st.needs_restop = r.targets
  elseif r.t == "containment" then
    st.restarted = {}
    for _, cid in ipairs(r.started or {}) do st.restarted[cid] = true end
  elseif r.t == "restop" then st.needs_restop, st.restarted = nil, nil end
end

--- Replays a restore (or undo) journal.
function M.replay(j)
  return exec_state.replay(j, M.extra)
end

--- The replayed state of a restore (or undo) journal file, read-only; an
-- empty state when there is none. A corrupt journal raises ECORRUPT.
function M.peek(path)
  return exec_state.peek(path, M.extra)
end

--- How far the restore in a state directory got: "none" (nothing run),
-- "unfinished", or "finished" (complete, aborted, or undone).
function M.progress(state)
  local st = M.peek(state .. "/" .. M.JOURNAL)
  if next(st.ops) == nil and not st.begin then return "none" end
  if st.finalized or st.aborted or M.peek(state .. "/" .. M.UNDO_JOURNAL).finalized then return "finished" end
  return "unfinished"
end

--- Whether a drill of the backup in `dir` (default drill state directory)
-- is running, or did not finish: its journal is the only record of the
-- scratch canisters it made, so the backup is in use until they are gone.
local function drill_in_use(dir)
  local path = dir .. "/" .. M.DRILL_DIR .. "/" .. M.DRILL_JOURNAL
  if not fs.lstat(path) then return false end
  if not engine.lock.probe(path .. ".lock") then return true end
  local st = exec_state.peek(path, function(s, r) if r.t == "begin" then s.begin = r end end)
  return st.begin ~= nil and st.finalized == nil
end

--- Whether a restore from the backup in `dir` (default state directory)
-- is running or unfinished, or a drill of it (default drill state
-- directory) is: then the backup is in use (X-08). A restore or drill
-- state that cannot be read counts as in use.
function M.in_use(dir)
  local dok, drilling = pcall(drill_in_use, dir)
  if not dok or drilling then return true end
  local state = M.dir(dir)
  if not fs.lstat(state .. "/" .. M.PLAN) then return false end
  if not engine.lock.probe(state .. "/" .. M.JOURNAL .. ".lock") then return true end
  local ok, progress = pcall(M.progress, state)
  return not ok or progress == "unfinished"
end

return M
