--- A restore drill: proves that a backup restores, before it is needed.
-- Each member chosen is restored into a scratch canister made for it
-- (`canister create`), its data checked against the backup while the copy
-- is still stopped, and the copy deleted (`canister delete`). A copy is
-- never started: a started copy of a production canister would run its
-- timers and call the real fleet (so the policy's checks, which need a
-- running canister, are not part of a drill).
--
-- State lives in the drill state directory (by default `<backup>/drill/`):
-- fleetsnap-drill.wal (and its lock), the generated mapping, and the
-- restore state of the drill's restore (`restore/`, the restore
-- machinery's own journal). The run holds the directory's lock and the
-- backup fleet's lock.
--
-- Nothing leaks: a create is claimed in the journal before icp runs, and
-- its id recorded as soon as icp prints it; deletion runs at the end of
-- every drill, also after a failed restore, a failed check or an
-- interrupt. A drill the process did not finish (a crash) is cleaned up by
-- the next drill of the same state directory before anything else. icp
-- cannot list the canisters one controls: a create whose id was never
-- recorded (the run died while icp created it, or icp failed after the
-- create) is reported as unidentified, with when it was claimed, for the
-- operator to look for.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local dirs = require "fleetsnap.dirs"
local manifest = require "fleetsnap.manifest"
local verify = require "fleetsnap.verify"
local executor = require "fleetsnap.exec.executor"
local exec_state = require "fleetsnap.exec.state"
local fleet_lock = require "fleetsnap.exec.fleet_lock"
local plan_mod = require "fleetsnap.restore.plan"
local operations = require "fleetsnap.restore.operations"
local rstate = require "fleetsnap.restore.state"

local json, fs = engine.json, engine.fs

local M = {}

M.JOURNAL = rstate.DRILL_JOURNAL
M.MAPPING = "fleetsnap-drill-mapping.json"
M.RESTORE = "restore"

local raise = errors.raise

--- The drill state directory of the backup in `backup_dir`.
function M.state_dir(backup_dir, state)
  return state or (backup_dir .. "/" .. rstate.DRILL_DIR)
end

-- The drill's own records, seen by the executor's replay.
local function extra(st, r)
  if r.t == "begin" then st.begin = r end
end

local function create_id(src) return "create-" .. src end
local function delete_id(src) return "delete-" .. src end

-- {=== the kinds ===}

--- The scratch canister made for member `src`, from its create's receipt.
local function scratch_of(st, src)
  local o = st.ops[create_id(src)]
  return o and o.state == "completed" and o.receipt and o.receipt.canister_id or nil
end

-- Whether a create's outcome may have left a canister whose id nobody
-- knows: a claim never recorded, or a failure after icp may have reached
-- the network (icp exits 2 on a usage error before it does: only then is
-- it known that no canister was made).
local function unidentified(o)
  return o.state == "pending" or (o.state == "failed" and not (o.error and o.error.code == "ICP_USAGE"))
end

local KINDS = {}

--- Claim, create, record the id (the receipt): the claim is durable before
-- icp runs, so a crash leaves evidence that a canister may exist.
KINDS.scratch_create = {
  bucket = "lifecycle",
  run = function(x, op)
    x:claim(op, { member = op.canister })
    local cid, err = x:command(op, "canister_create", { cycles = x.context.cycles })
    if not cid then return nil, err end
    return { canister_id = cid, created_at = x:now() }
  end,
  -- A claim without its record: icp may have made a canister whose id
  -- nobody kept, and no command lists it. It is never created again
  -- blindly; the report names it.
  reconcile = function(x, op, o)
    return x:complete(op, nil, { code = "OPERATOR", message = string.format("the scratch "
      .. "canister for %s was claimed at %s but its id was never recorded (the run ended between the claim and "
      .. "the record); icp may have made a canister, controlled by this identity, that no drill can find: look "
      .. "for it and delete it",
      op.canister, os.date("!%Y-%m-%dT%H:%M:%SZ", (o.claim.at or 0) // 1000000000)) })
  end,
}

--- Claim, make sure the copy is stopped (it never runs again), delete it.
-- Run again after a crash: a status that says the canister is gone is the
-- proof of an earlier delete.
KINDS.scratch_delete = {
  bucket = "lifecycle",
  always_retry = true,
  run = function(x, op, pending)
    local cid = x.context.scratch[op.canister]
    if not pending then x:claim(op, { canister_id = cid }) end
    local st, serr = x:command(op, "status", { canister = cid })
    if not st then
      if serr.code == "CANISTER_GONE" then return { canister_id = cid, already_gone = true, deleted_at = x:now() } end
      return nil, serr
    end
    if st.status ~= "stopped" then
      local _, e = x:command(op, "stop", { canister = cid })
      if e then return nil, e end
    end
    local _, derr = x:command(op, "canister_delete", { canister = cid })
    if derr and derr.code ~= "CANISTER_GONE" then return nil, derr end
    return { canister_id = cid, deleted_at = x:now() }
  end,
}

M.KINDS = KINDS

-- {=== the phases ===}

local function new_executor(state, j, st, ops, opts, ctx)
  return executor.new({ dir = state, journal = j, state = st, operations = ops, kinds = KINDS, driver = opts.driver,
    limits = { lifecycle = opts.concurrency or 4, transfer = 1 }, events = opts.events, verbose = opts.verbose,
    keep_output = true, context = ctx or {}, extra = extra,
    -- The drill stops only scratch copies, which never start.
    was_running = function() return false end, may_contain = function() return false end })
end

--- Creates the scratch canisters of the members not created yet, one at a
-- time: a crash then leaves at most one create whose id is unknown.
local function create_phase(state, j, st, members, opts)
  local ops = {}
  for _, src in ipairs(members) do
    ops[#ops + 1] = { id = create_id(src), kind = "scratch_create", canister = src, after = json.array({}) }
  end
  local x = new_executor(state, j, st, ops, opts, { cycles = opts.cycles })
  x:set_limit("lifecycle", 1)
  x:reconcile()
  x:schedule()
  x:flush()
end

--- Deletes every scratch canister the drill recorded. Returns whether
-- every one is gone.
local function delete_phase(state, j, st, opts)
  local ops, scratch = {}, {}
  for _, src in ipairs(st.begin.members) do
    local cid = scratch_of(st, src)
    if cid then
      scratch[src] = cid
      ops[#ops + 1] = { id = delete_id(src), kind = "scratch_delete", canister = src, after = json.array({}) }
    end
  end
  local x = new_executor(state, j, st, ops, opts, { scratch = scratch })
  x:reconcile()
  x:rearm_failed(true)
  x:schedule()
  x:flush()
  for _, op in ipairs(ops) do
    if not x:completed(op.id) then return false end
  end
  return true
end

--- Plans and runs the drill's restore into the scratch copies (the
-- restore machinery, its own journal under `restore/`): upload, stop,
-- load, data check; no start. Returns nil, or the error that ended it.
local function restore_phase(dir, state, st, man, report, opts)
  local restore = require "fleetsnap.restore"
  local rows, chosen = {}, {}
  for _, src in ipairs(st.begin.members) do
    local cid = scratch_of(st, src)
    if cid then
      rows[#rows + 1] = { source_canister = src, target_canister = cid }
      chosen[#chosen + 1] = src
    end
  end
  if #rows == 0 then return nil end
  local mpath = state .. "/" .. M.MAPPING
  fs.remove_tree(mpath)
  local ok, werr, wcode = fs.write_create(mpath, json.encode({ members = json.array(rows) }, { pretty = true }))
  if not ok then raise(errors.engine_code(wcode), mpath .. ": " .. tostring(werr)) end
  local rdir = state .. "/" .. M.RESTORE
  local done, err = pcall(function()
    restore.plan(dir, { state = rdir, mapping = mpath, members = table.concat(chosen, ","), scratch = true,
      verified = { manifest = man, report = report }, environment = opts.driver.environment,
      network = opts.driver.network, connection = opts.connection })
    return restore.run(dir, { state = rdir, driver = opts.driver, events = opts.events, drill = true,
      verify_data = true, settings = "ignore", verbose = opts.verbose })
  end)
  if done then return nil end
  return errors.wrap(err)
end

-- {=== the report ===}

--- One row per member of the drill: {canister_id, role, scratch_canister,
-- restored, data_equal, time_ms, deleted, unidentified, problems}; and the
-- set of members whose data was found to differ from the backup (an
-- artifact that does not verify, a copy that differs), as opposed to a
-- check that could not run.
local function report_rows(state, st, roles)
  local rst = rstate.peek(state .. "/" .. M.RESTORE .. "/" .. rstate.JOURNAL)
  local rows, differs = {}, {}
  local function row(src)
    local r = { canister_id = src, role = roles[src] or json.null, scratch_canister = json.null, restored = false,
      data_equal = false, time_ms = json.null, deleted = false, unidentified = false, problems = json.array({}) }
    rows[#rows + 1] = r
    return r
  end
  for _, s in ipairs(st.begin.skipped or {}) do
    local r = row(s.canister_id)
    differs[s.canister_id] = true
    for _, p in ipairs(s.problems) do r.problems[#r.problems + 1] = "artifact: " .. p end
  end
  for _, src in ipairs(st.begin.members) do
    local r = row(src)
    local c = st.ops[create_id(src)]
    local cid = scratch_of(st, src)
    if cid then
      r.scratch_canister = cid
      local load = rst.ops[operations.id("load", cid)]
      local check = rst.ops[operations.id("verify_data", cid)]
      r.restored = load ~= nil and load.state == "completed"
      r.data_equal = check ~= nil and check.state == "completed"
      differs[src] = check ~= nil and check.state == "failed" and check.error.code == "EVERIFY" or nil
      if r.data_equal and c.claim and c.claim.at and check.receipt.checked_at then
        r.time_ms = (check.receipt.checked_at - c.claim.at) // 1000000
      end
      for _, kind in ipairs({ "upload", "stop", "load", "verify_data" }) do
        local o = rst.ops[operations.id(kind, cid)]
        if o and o.state == "failed" then r.problems[#r.problems + 1] = o.error.message end
      end
      local d = st.ops[delete_id(src)]
      r.deleted = d ~= nil and d.state == "completed"
      if d and d.state == "failed" then r.problems[#r.problems + 1] = "delete: " .. d.error.message end
    elseif c and c.state then
      r.unidentified = unidentified(c)
      r.problems[#r.problems + 1] = "create: " .. tostring((c.error or {}).message or "claimed, never recorded")
    end
  end
  return rows, differs
end

--- The outcome of rows: "passed" (every member restored, data equal,
-- every copy deleted), "corrupt" (an artifact or a restored copy differs
-- from the backup), "failed" (anything else).
local function outcome(rows, differs)
  local corrupt, failed = false, false
  for _, r in ipairs(rows) do
    if r.unidentified or (r.scratch_canister ~= json.null and not r.deleted) then failed = true end
    if not (r.restored and r.data_equal) then
      if differs[r.canister_id] then corrupt = true else failed = true end
    end
  end
  return failed and "failed" or corrupt and "corrupt" or "passed"
end

-- {=== run ===}

local function lock_state(state)
  local lock, err, code = engine.lock.acquire(state .. "/" .. M.JOURNAL .. ".lock")
  if not lock then raise(errors.engine_code(code), "drill state " .. state .. ": " .. tostring(err)) end
  return lock
end

--- Moves a finished drill's journal and restore state aside (its
-- history), so that the directory holds one drill.
local function archive(state, st)
  local id = st.begin.drill_id
  for _, name in ipairs({ M.JOURNAL, M.RESTORE }) do
    if fs.lstat(state .. "/" .. name) then
      local moved, err = os.rename(state .. "/" .. name, state .. "/" .. name .. "." .. id)
      if not moved then raise("EIO", "drill state " .. state .. ": " .. tostring(err)) end
    end
  end
  -- The renames are durable before the next drill's journal is created:
  -- the order is stated here, not left to that creation's fsync.
  local synced, serr, scode = fs.fsync_dir(state)
  if not synced then raise(errors.engine_code(scode), "drill state " .. state .. ": " .. tostring(serr)) end
  fs.remove_tree(state .. "/" .. M.MAPPING)
end

local function roles_of(man)
  local roles = {}
  for _, m in ipairs(man.members) do roles[m.canister_id] = m.role end
  return roles
end

--- Finishes the drill in the journal (its copies deleted, or an error
-- raised naming the ones left): the final record holds the report.
local function finish(state, j, st, man, opts, ended, restore_error)
  local all_gone = delete_phase(state, j, st, opts)
  local rows, differs = report_rows(state, st, roles_of(man))
  local result = { drill_id = st.begin.drill_id, backup_id = man.doc.backup_id, state = state,
    members = json.array(rows),
    outcome = ended and (ended.code == "EINTERRUPTED" and "interrupted" or "failed") or outcome(rows, differs),
    unidentified = json.array({}) }
  if restore_error then
    -- A member's failure is in its row already; the error of the restore
    -- run itself (a refused preflight) is reported once, beside them.
    local explained = false
    for _, r in ipairs(rows) do
      if r.scratch_canister ~= json.null and #r.problems > 0 then explained = true end
    end
    if not explained then
      result.error = { code = restore_error.code, message = restore_error.message }
      if result.outcome == "passed" then result.outcome = "failed" end
    end
  end
  for _, r in ipairs(rows) do
    if r.unidentified then
      local c = st.ops[create_id(r.canister_id)]
      result.unidentified[#result.unidentified + 1] = { canister_id = r.canister_id,
        claimed_at_ns = c and c.claim and c.claim.at or json.null }
    end
  end
  if not all_gone then
    local left = {}
    for _, r in ipairs(rows) do
      if r.scratch_canister ~= json.null and not r.deleted then left[#left + 1] = r.scratch_canister end
    end
    raise("EFAILED", string.format("drill %s: %d scratch canister(s) could not be deleted yet: %s; the next drill "
      .. "of this state directory deletes them first", st.begin.drill_id, #left, table.concat(left, ", ")),
      { result = result, next = { command = "restore drill", ref = st.begin.backup_dir,
        options = { cleanup = true, state = opts.state } } })
  end
  local rec = { t = "finalized", outcome = result.outcome, members = result.members,
    unidentified = result.unidentified, error = result.error }
  local ok, err, code = j:append(rec, "finalized")
  if not ok then error(errors.from_engine("journal", err, code), 0) end
  exec_state.apply(st, rec)
  fs.remove_tree(state .. "/.fleetsnap-commands")
  return result
end

--- Runs a drill of the backup in `dir`. opts: driver, events, state,
-- members (principals or roles, comma-separated), cycles, cleanup (only
-- finish an earlier drill), connection, verbose. Returns {drill_id,
-- backup_id, state, members = rows, outcome, unidentified, earlier (the
-- earlier drill this run finished, if any)}; with cleanup, {cleanup =
-- true, earlier}.
function M.run(dir, opts)
  dir = dirs.realpath(dir)
  local man, merr, mcode = manifest.read(dir)
  if not man then raise(mcode == "ENOENT" and "ENOTFOUND" or "ECORRUPT", merr) end
  -- The members named are checked before anything is touched.
  local chosen = plan_mod.choose(man.members, { members = opts.members })
  local state = M.state_dir(dir, opts.state)
  if opts.state then dirs.make_parents(state) end
  local made, derr, dcode = fs.mkdir_private(state)
  if not made then raise(errors.engine_code(dcode), "drill state " .. state .. ": " .. tostring(derr)) end
  local _lock <close> = lock_state(state)
  dirs.clean_temp(state)
  local _fleet <close> = fleet_lock.acquire({ { network = opts.driver:network_key(),
    root = man.doc.source.root_canister } }, "restore drill of " .. tostring(man.doc.backup_id))
  return executor.with_signals(function()
    local jpath = state .. "/" .. M.JOURNAL
    local j, st = exec_state.open(jpath, extra)
    local earlier
    if st.begin and not st.finalized then
      -- An earlier drill died: its copies go first, whatever this run does.
      -- Its creates are settled (a claim without an id is unidentified),
      -- never run again.
      local ops = {}
      for _, src in ipairs(st.begin.members) do
        ops[#ops + 1] = { id = create_id(src), kind = "scratch_create", canister = src, after = json.array({}) }
      end
      new_executor(state, j, st, ops, opts):reconcile()
      earlier = finish(state, j, st, man, opts, { code = "EINTERRUPTED", message = "the drill did not finish" })
    end
    if opts.cleanup then
      j:close()
      return { cleanup = true, earlier = earlier, state = state }
    end
    if st.begin then
      j:close()
      archive(state, st)
      j, st = exec_state.open(jpath, extra)
    end
    local _journal <close> = j
    -- The members chosen, their artifacts verified first: a member whose
    -- artifact does not verify is reported, and not drilled.
    local ids = {}
    for i, m in ipairs(chosen) do ids[i] = m.canister_id end
    local report = verify.backup(dir, man, { members = ids })
    local bad = {}
    for _, e in ipairs(report.members) do
      if not e.ok then bad[e.canister_id] = e.problems end
    end
    local members, skipped = {}, {}
    for _, cid in ipairs(ids) do
      if bad[cid] then
        skipped[#skipped + 1] = { canister_id = cid, problems = bad[cid] }
      else
        members[#members + 1] = cid
      end
    end
    local now = engine.realtime_ns()
    local rec = { t = "begin", drill_id = string.format("drill-%s-%s", os.date("!%Y%m%d-%H%M%S", now // 1000000000),
      engine.hash.sha256(tostring(now) .. tostring({})):sub(1, 4)), backup_id = man.doc.backup_id, backup_dir = dir,
      members = json.array(members), skipped = json.array(skipped) }
    local ok, aerr, acode = j:append(rec, "begin")
    if not ok then error(errors.from_engine("journal", aerr, acode), 0) end
    exec_state.apply(st, rec)
    extra(st, rec)
    -- Whatever ends the creates or the restore (a failure, an interrupt),
    -- the copies are deleted before the drill returns.
    local ended, restore_error
    local cok, cerr = pcall(create_phase, state, j, st, members, opts)
    if not cok then
      ended = errors.wrap(cerr)
    else
      -- The restore's failures of a member are that member's result; an
      -- interrupt ends the drill, any other failure of the restore run
      -- (a refused preflight) is reported with the rows.
      restore_error = restore_phase(dir, state, st, man, report, opts)
      if restore_error and restore_error.code == "EINTERRUPTED" then ended, restore_error = restore_error, nil end
      -- The restore's run caught signals and let them go: the deletions
      -- are interruptible at safe points too.
      if engine.signals then engine.signals.catch() end
    end
    if ended and engine.signals then engine.signals.clear() end
    local result = finish(state, j, st, man, opts, ended, restore_error)
    result.earlier = earlier
    if ended then
      -- The restore's own advice (retry, abort) is not the drill's: its
      -- copies are gone, and the way on is another drill.
      -- finish raised if a known copy is left; what it says is counted
      -- from the rows, and a create with no recorded id is named apart.
      local deleted = 0
      for _, r in ipairs(result.members) do
        if r.deleted then deleted = deleted + 1 end
      end
      local said = string.format("%d scratch canister(s) deleted", deleted)
      if #result.unidentified > 0 then
        said = said .. string.format(", %d create(s) with no recorded canister id (see unidentified)",
          #result.unidentified)
      end
      error(errors.new(ended.code, string.format("drill %s: %s; %s", st.begin.drill_id,
        (ended.message:match("^[^\n]*")), said), { signal = ended.signal, result = result,
        next = { command = "restore drill", ref = dir, options = opts.state and { state = opts.state } or nil } }), 0)
    end
    return result
  end)
end

return M
