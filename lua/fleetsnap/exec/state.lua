--- A run's state, replayed from its write-ahead journal. One record type
-- per transition: attempt (a new consistency window re-arms every
-- operation), claim (pending), artifact (a download's intermediate
-- state), done (terminal state and receipt), rearm, contained, finalized,
-- and a client's own records through `extra`.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"

local M = {}

function M.empty()
  return { attempt = 0, ops = {}, contained = {}, created_at = nil, finalized = nil }
end

--- Replays journal j. `extra(st, record)`, if given, sees every record
-- too (a client keeps its own record types that way).
function M.replay(j, extra)
  local st = M.empty()
  for r in j:records() do
    if extra then extra(st, r) end
    M.apply(st, r)
  end
  return st
end

--- Opens the journal at path (the caller holds its lock) and replays it
-- with `extra`. Returns the journal and the state; raises a registry
-- error naming the file when it cannot be opened or read.
function M.open(path, extra)
  local j, jerr, jcode = engine.journal.open(path)
  if not j then errors.raise(errors.engine_code(jcode), path .. ": " .. tostring(jerr)) end
  local ok, st = pcall(M.replay, j, extra)
  if not ok then
    j:close()
    errors.raise("ECORRUPT", path .. ": " .. tostring(errors.wrap(st).message))
  end
  return j, st
end

-- Engine codes that say a journal's bytes are wrong, not that the file
-- system failed: a torn or overwritten record, a symlink in its place.
local CORRUPT = { ECORRUPT = true, EJSON = true, EUNSAFE = true, ELOOP = true }

--- The replayed state of the journal at `path`, read without its lock (a
-- runner may be appending: the journal is opened read-only, so a record
-- being written is left out, never cut); an empty state when there is no
-- journal. A journal that cannot be read as one raises ECORRUPT naming it
-- (a failing disk raises as the engine code says).
function M.peek(path, extra)
  if not engine.fs.lstat(path) then return M.empty() end
  local j, err, code = engine.journal.open(path, { readonly = true })
  if not j then
    if code == "ENOENT" then return M.empty() end -- removed since the lstat
    if CORRUPT[code] then errors.raise("ECORRUPT", path .. ": " .. tostring(err), { cause = code }) end
    error(errors.from_engine(path, err, code), 0)
  end
  -- records() raises on corruption found past the open, and a record of
  -- the wrong shape raises in replay: both mean the journal is corrupt.
  local ok, st = pcall(M.replay, j, extra)
  j:close()
  if not ok then
    errors.raise("ECORRUPT", path .. ": " .. (errors.is(st) and st.message or tostring(st)))
  end
  return st
end

--- Applies one record to a state (also used live, so that the state in
-- memory is always what a replay would give).
function M.apply(st, r)
  if r.t == "attempt" then
    st.attempt = r.n
    st.attempt_at = r.at
    st.attempt_record = r
    -- A new attempt re-arms every operation: artifacts of the abandoned
    -- consistency window are not kept either.
    for id, o in pairs(st.ops) do
      st.ops[id] = { previous = o, kind = o.kind }
    end
  elseif r.t == "claim" then
    local old = st.ops[r.op]
    st.ops[r.op] = { state = "pending", claim = r, kind = r.kind, previous = old and old.previous }
  elseif r.t == "artifact" then
    local o = st.ops[r.op]
    if o then o.artifact = r end
  elseif r.t == "done" then
    local o = st.ops[r.op] or {}
    o.state, o.receipt, o.error, o.done = r.state, r.receipt, r.error, r
    st.ops[r.op] = o
  elseif r.t == "rearm" then
    local old = st.ops[r.op]
    st.ops[r.op] = { kind = old and old.kind, previous = old and (old.claim and old or old.previous) }
  elseif r.t == "contained" then
    st.contained[r.attempt] = r
  elseif r.t == "created_at" then
    st.created_at = r.value
  elseif r.t == "finalized" then
    st.finalized = r
  elseif r.t == "retention" then
    st.retained = r
  end
end

return M
