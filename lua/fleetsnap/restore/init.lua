--- Restore: plan (a verified backup, an optional mapping), preflight, the
-- journaled run, abort before the first load, undo from safety snapshots,
-- and status. State lives in the restore state directory (by default
-- `<backup>/restore/`): the plan, fleetsnap-restore.wal and its lock,
-- private upload stages, command locks.
local engine = require "fleetsnap.engine"
local backup = require "fleetsnap.backup"
local manifest = require "fleetsnap.manifest"
local base_runner = require "fleetsnap.runner"
local plan_mod = require "fleetsnap.restore.plan"
local operations = require "fleetsnap.restore.operations"
local runner_mod = require "fleetsnap.restore.runner"

local json, fs = engine.json, engine.fs

local M = {}

M.JOURNAL = "fleetsnap-restore.wal"
M.UNDO_JOURNAL = "fleetsnap-restore-undo.wal"
M.plan_doc = plan_mod
M.operations = operations

local failure = backup.failure

local function raise(code, message, extra)
  error(failure(code, message, extra), 0)
end

--- The absolute, symlink-free path of an existing directory.
function M.realpath(dir)
  local r = engine.proc.run({ argv = { "realpath", "-e", "--", dir } })
  if r.status ~= 0 then raise("ENOTFOUND", "no directory " .. dir) end
  return (r.stdout:gsub("\n$", ""))
end

function M.state_dir(backup_dir, state)
  return state or (backup_dir .. "/restore")
end

--- Replays a restore (or undo) journal.
function M.replay(j)
  return base_runner.replay(j, function(st, r)
    if r.t == "begin" then st.begin = r
    elseif r.t == "abort" then st.abort = r
    elseif r.t == "aborted" then st.aborted = r end
  end)
end

--- Reads the journal of a state directory without taking its lock (a
-- runner may be appending): the replayed state, or an empty one.
local function peek(path)
  if not fs.lstat(path) then return { ops = {}, attempt = 0, contained = {} } end
  local j, err, code = engine.journal.open(path, { readonly = true })
  if not j then raise(code == "ECORRUPT" and "ECORRUPT" or code, err) end
  local st = M.replay(j)
  j:close()
  return st
end

--- How far the restore in a state directory got: "none" (nothing run),
-- "unfinished", or "finished" (complete, aborted, or undone).
function M.progress(state)
  local st = peek(state .. "/" .. M.JOURNAL)
  if next(st.ops) == nil and not st.begin then return "none" end
  if st.finalized or st.aborted or peek(state .. "/" .. M.UNDO_JOURNAL).finalized then return "finished" end
  return "unfinished"
end

--- Whether a restore from the backup in `dir` (default state directory)
-- is running or unfinished: then the backup is in use (X-08). A restore
-- state that cannot be read counts as in use.
function M.in_use(dir)
  local state = M.state_dir(dir)
  if not fs.lstat(state .. "/" .. plan_mod.FILE) then return false end
  if not engine.lock.probe(state .. "/" .. M.JOURNAL .. ".lock") then return true end
  local ok, progress = pcall(M.progress, state)
  return not ok or progress == "unfinished"
end

local function lock_state(state)
  local lock, err, code = engine.lock.acquire(state .. "/" .. M.JOURNAL .. ".lock")
  if not lock then
    raise(code == "ELOCKED" and "ELOCKED" or code, "restore state " .. state .. ": " .. err)
  end
  return lock
end

-- {=== plan ===}

local function verified(dir)
  local man, err, code = manifest.read(dir)
  if not man then raise(code == "ENOENT" and "ENOTFOUND" or "ECORRUPT", err) end
  local report = backup.verify(dir, man)
  if not report.ok then
    local lines = {}
    for _, m in ipairs(report.members) do
      for _, p in ipairs(m.problems) do lines[#lines + 1] = m.canister_id .. ": " .. p end
    end
    raise("EVERIFY", "backup " .. dir .. " does not verify; nothing was planned:\n  " .. table.concat(lines, "\n  "))
  end
  return man, report
end

--- Plans a restore of the backup in `dir`. opts: state, mapping, members,
-- subtree, policy, concurrency, uploads, snapshot_limit, environment,
-- network. Returns {plan, state, status = "created"|"adopted"|"replaced"|
-- "archived", archived}.
function M.plan(dir, opts)
  dir = M.realpath(dir)
  local man, report = verified(dir)
  if not opts.policy then
    -- The policy the backup was taken with, when it is a bundled one.
    local bplan = backup.read_plan(dir)
    local name = bplan and bplan.policy and bplan.policy.name
    opts.policy = name and require("fleetsnap.policy").load(name) and name or "consistent"
  end
  local doc = plan_mod.build({ dir = dir, manifest = man, report = report,
    manifest_sha256 = man.sha256 }, opts)
  doc.fingerprint = plan_mod.fingerprint(doc)
  local state = M.state_dir(dir, opts.state)
  if opts.state then engine.proc.run({ argv = { "mkdir", "-p", "--", state } }) end
  local ok, merr, mcode = fs.mkdir_private(state)
  if not ok then raise(mcode, "restore state " .. state .. ": " .. merr) end
  local _lock <close> = lock_state(state)
  backup.clean_temp(state)
  local path = state .. "/" .. plan_mod.FILE
  local status, archived = "created", nil
  if fs.lstat(path) then
    local old, oerr, ocode = plan_mod.read(state)
    if not old then
      -- Its journal may hold progress: nothing here is replaced blindly.
      raise(ocode == "EJSON" and "EJSON" or "EDOC", oerr .. "; the restore state is left as it is")
    end
    if old.fingerprint == doc.fingerprint then
      return { plan = old, state = state, status = "adopted" }
    end
    local progress = M.progress(state)
    if progress == "unfinished" then
      raise("ECONFLICT", string.format("restore state %s holds restore %s, which is not finished; finish it "
        .. "(`restore run --execute`), abort it (`restore run --abort`), or plan into another --state", state,
        old.restore_id))
    end
    if progress == "finished" then
      -- A finished restore stays as a record beside the new one.
      archived = state .. "." .. old.restore_id
      local moved, rerr = os.rename(state, archived)
      if not moved then
        raise("EIO", "restore state " .. state .. ": cannot move it aside to " .. archived .. ": " .. tostring(rerr))
      end
      local made, merr2, mcode2 = fs.mkdir_private(state)
      if not made then raise(mcode2, "restore state " .. state .. ": " .. merr2) end
      -- Both names durable before the new plan is written into one of them.
      local synced, serr, scode = fs.fsync_dir(state:match("^(.*)/[^/]+$") or ".")
      if not synced then raise(scode, "restore state " .. state .. ": " .. serr) end
      status = "archived"
    else
      status = "replaced"
      for _, name in ipairs({ M.JOURNAL, plan_mod.FILE }) do os.remove(state .. "/" .. name) end
    end
  end
  local res, werr, wcode = fs.write_create(state .. "/" .. plan_mod.FILE, json.encode(doc, { pretty = true }))
  if not res then raise(wcode, werr) end
  return { plan = plan_mod.read(state), state = state, status = status, archived = archived }
end

--- The plan of a state directory, with the backup checked unchanged.
function M.open(dir, state_opt)
  local state = M.state_dir(dir, state_opt)
  local doc, err, code = plan_mod.read(state)
  if not doc then raise(code == "EJSON" and "EJSON" or code, err) end
  -- The backup is where the reference points now (a backup directory may
  -- be moved or copied with its restore state).
  doc.backup.dir = M.realpath(dir)
  local mfile = doc.backup.dir .. "/" .. doc.backup.manifest_file
  local sum = engine.hash.file(mfile)
  if sum ~= doc.backup.manifest_sha256 then
    raise("ECORRUPT", string.format("%s changed since restore %s was planned (sha256 %s, planned %s)", mfile,
      doc.restore_id, tostring(sum), doc.backup.manifest_sha256))
  end
  return doc, state
end

local function members_by_target(doc)
  local out = {}
  for _, m in ipairs(doc.members) do out[m.target_canister] = m end
  return out
end

-- {=== preflight ===}

--- Before the first effect: every target exists and is controlled by the
-- operator, has the snapshot slots the run needs, and the stage has room
-- for the copies staged at once. Returns the upload bound that fits.
function M.preflight(r, doc, options)
  local targets = {}
  for i, m in ipairs(doc.members) do targets[i] = m.target_canister end
  local me, rows, refusals, code = backup.survey(r.driver, targets, math.max(doc.options.concurrency, 32),
    "restore preflight")
  local slots = 1 + (options.safety_snapshot and 1 or 0) + (options.verify_data and 1 or 0)
  for i, m in ipairs(doc.members) do
    local list = rows[i].list
    if list and doc.options.snapshot_limit - #list < slots then
      refusals[#refusals + 1] = string.format("%s: %d of %d snapshot slots are taken, this restore needs %d free "
        .. "(upload%s%s)", m.target_canister, #list, doc.options.snapshot_limit, slots,
        options.safety_snapshot and ", safety snapshot" or "", options.verify_data and ", data check" or "")
    end
    if not fs.lstat(doc.backup.dir .. "/" .. m.artifact_path) then
      refusals[#refusals + 1] = string.format("%s: artifact %s of %s is missing", m.target_canister, m.artifact_path,
        m.source_canister)
    end
  end
  -- Room for the copies staged at once: the largest `uploads` artifacts,
  -- with a margin. Data-check downloads come after every stage is gone and
  -- share the same bound.
  local sizes = {}
  for i, m in ipairs(doc.members) do sizes[i] = m.bytes or 0 end
  table.sort(sizes, function(a, b) return a > b end)
  local avail = fs.free_space(r.dir)
  local uploads = doc.options.uploads
  if avail then
    local extra = 16 << 20
    local fit, used = 0, extra
    for k = 1, math.min(uploads, #sizes) do
      used = used + math.ceil(sizes[k] * 1.05)
      if used > avail then break end
      fit = k
    end
    if fit == 0 then
      refusals[#refusals + 1] = string.format("%s: %d MiB free, the largest artifact needs %d MiB staged", r.dir,
        avail >> 20, (math.ceil((sizes[1] or 0) * 1.05) + extra) >> 20)
    end
    uploads = math.max(fit, 1)
  end
  if #refusals > 0 then
    raise(code, "restore preflight " .. (code == "EICP" and "failed" or "refused")
      .. ", nothing was uploaded or stopped:\n  " .. table.concat(refusals, "\n  "), { refusals = refusals })
  end
  return me, uploads
end

-- {=== commands to run (dry run) ===}

--- The icp command lines an operation still runs, as text.
function M.commands(r, op)
  local d, c = r.driver, op.canister
  local m = r.members[c]
  local uploaded = r:uploaded_id(c) or ("<snapshot id of " .. operations.id("upload", c) .. ">")
  if op.kind == "upload" then
    return { d:render("snapshot_list", { canister = c }),
      d:render("snapshot_upload", { canister = c, dir = r:stage_path(op) }) }
  elseif op.kind == "stop" or op.kind == "start" then
    return { d:render(op.kind, { canister = c }) }
  elseif op.kind == "snapshot" then
    return { d:render("snapshot_create", { canister = c }) }
  elseif op.kind == "load" then
    return { d:render("status", { canister = c }), d:render("snapshot_restore", { canister = c,
      snapshot_id = uploaded }) }
  elseif op.kind == "verify_data" then
    local sid = "<snapshot id of the check>"
    return { d:render("snapshot_create", { canister = c }), d:render("snapshot_download", { canister = c,
      snapshot_id = sid, dir = r:check_path(op) }), d:render("snapshot_delete", { canister = c, snapshot_id = sid }) }
  elseif op.kind == "verify" then
    local out = { d:render("status", { canister = c }) }
    for _, k in ipairs(m and m.checks or {}) do
      out[#out + 1] = d:render("call", { canister = c, method = k.method, args = k.args, query = true })
    end
    return out
  elseif op.kind == "delete" then
    return { d:render("snapshot_delete", { canister = c, snapshot_id = uploaded }) }
  end
  return {}
end

-- {=== run ===}

local OPTION_NAMES = { "safety_snapshot", "verify_data", "keep_uploaded" }

--- The run options: the ones the restore began with, which later runs may
-- not change.
local function options_of(st, opts)
  local given = {}
  for _, k in ipairs(OPTION_NAMES) do given[k] = opts[k] or false end
  if not st.begin then return given, false end
  local began = st.begin.options
  for _, k in ipairs(OPTION_NAMES) do
    if opts[k] and not began[k] then
      raise("EUSAGE", string.format("this restore began without --%s; options cannot change once it has begun",
        (k:gsub("_", "-"))))
    end
  end
  return began, true
end

local function new_runner(doc, state, j, opts, ops, extra)
  local r = runner_mod.new({ dir = state, plan = { operations = ops }, driver = opts.driver, events = opts.events,
    concurrency = doc.options.concurrency, downloads = doc.options.uploads })
  r.members = members_by_target(doc)
  r.backup_dir = doc.backup.dir
  r.j = j
  r.failures = {}
  r.max_steps = opts.max_steps
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

--- The stopped window: from the first stop issued to the last start.
local function window(st, ops)
  local first, last
  for _, op in ipairs(ops) do
    local o = st.ops[op.id]
    if op.kind == "stop" and o and o.claim and o.claim.at then
      if not first or o.claim.at < first then first = o.claim.at end
    elseif op.kind == "start" and o and o.receipt and o.receipt.started_at then
      if not last or o.receipt.started_at > last then last = o.receipt.started_at end
    end
  end
  return first, last
end

local function load_begun(st, ops)
  for _, op in ipairs(ops) do
    if op.kind == "load" and st.ops[op.id] and st.ops[op.id].state then return op.id end
  end
end

local function stopped_targets(st, ops)
  local out = {}
  for _, op in ipairs(ops) do
    local o = st.ops[op.id]
    local started = st.ops[operations.id("start", op.canister)]
    if op.kind == "stop" and o and o.state and not (started and started.state == "completed") then
      out[#out + 1] = op.canister
    end
  end
  return out
end

local function advice(st, ops)
  local stopped = stopped_targets(st, ops)
  local first_load = load_begun(st, ops)
  local lines = {}
  if #stopped > 0 then
    lines[#lines + 1] = string.format("%d target(s) are stopped: %s", #stopped, table.concat(stopped, ", "))
  end
  if first_load then
    lines[#lines + 1] = "loads have begun, so the fleet may be mixed: fix the cause and continue with "
      .. "`restore run --retry-failed`" .. (st.begin and st.begin.options.safety_snapshot
        and ", or put the safety snapshots back with `restore undo`" or "")
  else
    lines[#lines + 1] = "nothing was loaded yet: fix the cause and `restore run --retry-failed`, or give up with "
      .. "`restore run --abort` (restarts the targets, deletes what it uploaded and snapshotted)"
  end
  return table.concat(lines, "\n")
end

local function finish_failure(r, st, ops)
  local f = r.failures[1]
  local code = ({ IN_FLIGHT = "EINFLIGHT", EVERIFY = "EVERIFY", NOT_STOPPED = "EPRECONDITION",
    NOT_LOADABLE = "EPRECONDITION",
    LIMIT = "EPRECONDITION", NOT_CONTROLLER = "EPRECONDITION", EUNSAFE = "EUNSAFE",
    AMBIGUOUS = "EFAILED" })[f.error.code] or "EICP"
  raise(code, f.op .. ": " .. tostring(f.error.message) .. "\n" .. advice(st, ops),
    { failures = r.failures, op = f.op, icp_code = f.error.code })
end

--- Removes what only a live run needs.
local function tidy(state)
  for _, sub in ipairs({ "staging", "verify-data", ".fleetsnap-commands" }) do
    local ok, err, code = fs.remove_tree(state .. "/" .. sub)
    if ok == nil then raise(code, "restore state " .. state .. ": " .. err) end
  end
end

--- A load refused as not loadable, of an upload adopted from evidence
-- (one new snapshot, icp's progress file gone) rather than from icp's own
-- success: icp may have died between creating the snapshot and writing
-- its progress file, leaving it empty. That upload is deleted and runs
-- again. An upload icp confirmed is left alone: the IC's "not currently
-- loadable" then only asks to wait.
function M.rearm_adopted_upload(r, target)
  local id = operations.id("upload", target)
  local up = r.state.ops[id]
  if not (up and up.state == "completed" and up.receipt and up.receipt.reconciled) then return end
  local _, err = r.driver:run("snapshot_delete", { canister = target, snapshot_id = up.receipt.uploaded_snapshot_id })
  if err and err.code ~= "SNAPSHOT_GONE" then
    raise("EICP", "re-arming the upload to " .. target .. ": " .. err.message)
  end
  r:record({ t = "rearm", op = id }, id)
  r.state.ops[id] = { kind = "upload" }
end

--- A restore runs against the network it was planned for (X-14).
local function check_target(doc, driver)
  local want = doc.target or {}
  local env, net = want.environment, want.network
  local planned = (env ~= nil and env ~= json.null) and ("environment " .. env)
    or (net ~= nil and net ~= json.null) and ("network " .. net) or nil
  local given = driver.network and ("network " .. driver.network) or ("environment " .. tostring(driver.environment))
  if planned and planned ~= given then
    raise("EPRECONDITION", string.format("restore %s was planned for %s; this run targets %s (give the same -e/-n, "
      .. "or plan again)", doc.restore_id, planned, given))
  end
end

--- Drives a runner over its operations: reconcile, re-arm or refuse
-- failures, schedule, and record the end. Returns the summary.
local function drive(r, ops, opts, what)
  r:emit("restore", { what = what, operations = #ops })
  local err = r:reconcile()
  if err then raise("EINFLIGHT", err.message) end
  local failed = {}
  for _, op in ipairs(ops) do
    local o = r.state.ops[op.id]
    if o and o.state == "failed" then
      if opts.retry_failed then
        r:record({ t = "rearm", op = op.id }, op.id)
        r.state.ops[op.id] = { kind = op.kind }
        local stop = operations.id("stop", op.canister)
        if op.kind == "load" and o.error and o.error.code == "NOT_STOPPED" and r.state.ops[stop] then
          -- The stop reported success without effect: it runs again.
          r:record({ t = "rearm", op = stop }, stop)
          r.state.ops[stop] = { kind = "stop" }
        end
        if op.kind == "load" and o.error and o.error.code == "NOT_LOADABLE" then
          M.rearm_adopted_upload(r, op.canister)
        end
      else
        failed[#failed + 1] = op.id .. ": " .. tostring(o.error and o.error.message)
      end
    end
  end
  if #failed > 0 then
    raise("EFAILED", what .. ": operations failed:\n  " .. table.concat(failed, "\n  ") .. "\n" .. advice(r.state, ops))
  end
  local ok = r:schedule()
  if not ok then finish_failure(r, r.state, ops) end
  local done = 0
  for _, op in ipairs(ops) do
    local o = r.state.ops[op.id]
    if o and o.state == "completed" then done = done + 1 end
  end
  if done < #ops then
    return { paused = true, completed = done, operations = #ops }
  end
  local first, last = window(r.state, ops)
  local rec = { t = "finalized", window_ns = (first and last) and (last - first) or json.null,
    first_stop_at = first or json.null, last_start_at = last or json.null }
  r:record(rec)
  r.state.finalized = rec
  return { complete = true, completed = done, operations = #ops, window_ns = rec.window_ns }
end

--- Runs (or resumes) the restore planned in the state directory.
-- opts: driver, events, state, dry_run, max_steps, retry_failed, abort,
-- safety_snapshot, verify_data, keep_uploaded.
function M.run(dir, opts)
  local doc, state = M.open(dir, opts.state)
  local jpath = state .. "/" .. M.JOURNAL
  if opts.dry_run then
    local st = peek(jpath)
    local options = options_of(st, opts)
    local ops = operations.restore(doc, options)
    local r = new_runner(doc, state, nil, opts, ops)
    r.state = st
    local out = {}
    for _, op in ipairs(ops) do
      local o = st.ops[op.id]
      if not (o and o.state == "completed") then
        out[#out + 1] = { op = op.id, kind = op.kind, canister = op.canister, after = op.after,
          state = o and o.state or "waiting", commands = M.commands(r, op) }
      end
    end
    return { dry_run = true, plan = doc, state = state, options = options, operations = #ops, remaining = out,
      complete = st.finalized ~= nil, aborted = st.aborted ~= nil }
  end
  check_target(doc, opts.driver)
  local _lock <close> = lock_state(state)
  backup.clean_temp(state)
  local j, jerr, jcode = engine.journal.open(jpath)
  if not j then raise(jcode == "ECORRUPT" and "ECORRUPT" or jcode, jerr) end
  local _journal <close> = j
  local st = M.replay(j)
  if st.aborted then
    raise("EPRECONDITION", "restore " .. doc.restore_id .. " was aborted; plan a new one to restore again")
  end
  if next(peek(state .. "/" .. M.UNDO_JOURNAL).ops) then
    -- Going forward again would fight the undo over the same targets.
    raise("EPRECONDITION", "restore " .. doc.restore_id .. " is being or was undone (`restore undo`); plan a new "
      .. "one to restore again")
  end
  local options, begun = options_of(st, opts)
  local ops = operations.restore(doc, options)
  local r = new_runner(doc, state, j, opts, ops)
  r.state = st
  if st.finalized then
    tidy(state)
    return { already = true, complete = true, plan = doc, state = state, window_ns = st.finalized.window_ns }
  end
  if opts.abort or st.abort then
    if not opts.abort then
      raise("EPRECONDITION", "an abort of this restore was begun; finish it with `restore run --abort`")
    end
    return M.abort(r, doc, ops, state)
  end
  local ok, result = pcall(function()
    if not begun then
      local me, uploads = M.preflight(r, doc, options)
      r:record({ t = "begin", options = options, operator = me, uploads = uploads })
      r.state.begin = { options = options, uploads = uploads }
    end
    r.downloads = math.min(doc.options.uploads, r.state.begin.uploads or doc.options.uploads)
    local res = drive(r, ops, opts, "restore " .. doc.restore_id)
    if res.complete then tidy(state) end
    return res
  end)
  if not ok then
    if type(result) == "string" and result:find("interrupted!", 1, true)
        or type(result) == "table" and result.code == "EINTERRUPTED" then
      result = failure("EINTERRUPTED", "interrupted; continue with `restore run --execute`\n" .. advice(r.state, ops))
    end
    error(result, 0)
  end
  result.plan, result.state, result.options = doc, state, options
  return result
end

-- {=== abort ===}

--- Before the first load only: restart the stopped targets, delete the
-- snapshots this restore made (uploads, safety snapshots), mark the
-- restore aborted. Re-runnable.
function M.abort(r, doc, ops, state)
  local first = load_begun(r.state, ops)
  if first then
    raise("EPRECONDITION", string.format("restore %s cannot be aborted: %s has begun, so targets may already hold "
      .. "the backup's state; continue with `restore run --execute`%s", doc.restore_id, first,
      r.state.begin and r.state.begin.options.safety_snapshot and " or put the safety snapshots back with "
      .. "`restore undo`" or ""))
  end
  for _, op in ipairs(ops) do
    local o = r.state.ops[op.id]
    if o and o.state == "pending" then
      local busy = r:in_flight(op)
      if busy then raise("EINFLIGHT", op.id .. ": a command of an earlier run is still running: " .. busy) end
    end
  end
  if not r.state.abort then r:record({ t = "abort" }) end
  local driver = r.driver
  local deleted, started, problems = {}, {}, {}
  for _, op in ipairs(ops) do
    local o = r.state.ops[op.id]
    -- What this restore put on the targets: uploads, and safety
    -- snapshots (nothing was loaded, so they only hold slots).
    if (op.kind == "upload" or op.kind == "snapshot") and o and o.state then
      local ids = {}
      if o.state == "completed" then
        ids[1] = o.receipt.uploaded_snapshot_id or o.receipt.snapshot_id
      elseif o.claim then
        local list, lerr = driver:run("snapshot_list", { canister = op.canister })
        if not list then
          problems[#problems + 1] = op.canister .. ": " .. lerr.message
        else
          local new = base_runner.new_snapshots(o.claim.baseline or {}, list)
          if #new == 1 then ids[1] = new[1].snapshot_id
          elseif #new > 1 then
            problems[#problems + 1] = string.format("%s: %d snapshots appeared since the upload's claim; none was "
              .. "deleted (the operator must decide)", op.canister, #new)
          end
        end
      end
      for _, id in ipairs(ids) do
        local _, derr = driver:run("snapshot_delete", { canister = op.canister, snapshot_id = id })
        if derr and derr.code ~= "SNAPSHOT_GONE" then
          problems[#problems + 1] = derr.message
        else
          deleted[#deleted + 1] = op.canister .. "/" .. id
        end
      end
    end
  end
  for _, target in ipairs(stopped_targets(r.state, ops)) do
    local st, serr = driver:run("status", { canister = target })
    if not st then
      problems[#problems + 1] = serr.message
    elseif st.status ~= "running" then
      local _, err = driver:run("start", { canister = target })
      if err then problems[#problems + 1] = err.message else started[#started + 1] = target end
    end
  end
  if #problems > 0 then
    raise("EICP", "abort of restore " .. doc.restore_id .. " is incomplete (run `restore run --abort` again):\n  "
      .. table.concat(problems, "\n  "))
  end
  r:record({ t = "aborted", started = json.array(started), deleted = json.array(deleted) })
  tidy(state)
  r:emit("aborted", { started = started, deleted = deleted })
  return { aborted = true, started = started, deleted = deleted, plan = doc, state = state }
end

-- {=== undo ===}

--- Puts the safety snapshots back the way the restore loaded: stop
-- parents first, load after a fresh stopped proof, start children first,
-- check every target runs; then deletes what the restore uploaded.
function M.undo(dir, opts)
  local doc, state = M.open(dir, opts.state)
  check_target(doc, opts.driver)
  local _lock <close> = lock_state(state)
  local rj, rerr, rcode = engine.journal.open(state .. "/" .. M.JOURNAL, { readonly = true })
  if not rj then raise(rcode == "ENOENT" and "ENOTFOUND" or rcode, "restore " .. doc.restore_id .. ": " .. rerr) end
  local rst = M.replay(rj)
  rj:close()
  if not (rst.begin and rst.begin.options.safety_snapshot) then
    raise("EPRECONDITION", "restore " .. doc.restore_id .. " took no safety snapshots (`restore run "
      .. "--safety-snapshot`); there is nothing to undo to")
  end
  local rows = {}
  for i, m in ipairs(doc.members) do
    local t = m.target_canister
    local safety = rst.ops[operations.id("snapshot", t)]
    local stop = rst.ops[operations.id("stop", t)]
    local del = rst.ops[operations.id("delete", t)]
    local upload = rst.ops[operations.id("upload", t)]
    local steps = {}
    if safety and safety.state == "completed" then
      steps = { stop = true, load = true, start = true, verify = true }
    elseif stop and stop.state then
      steps = { start = true, verify = true }
    end
    if upload and upload.state == "completed" and not (del and del.state == "completed")
        and not rst.begin.options.keep_uploaded then
      steps.delete = true
    end
    rows[i] = { target = t, steps = steps,
      parent = m.parent_target_canister ~= json.null and m.parent_target_canister or nil }
  end
  local ops = operations.build(rows, doc.policy.serial)
  local j, jerr, jcode = engine.journal.open(state .. "/" .. M.UNDO_JOURNAL)
  if not j then raise(jcode, jerr) end
  local _journal <close> = j
  local r = new_runner(doc, state, j, opts, ops, {
    restore_state = rst, lock_prefix = "undo-", skip_module_hash = true, skip_checks = true,
    source_of = function(_, op)
      local s = rst.ops[operations.id("snapshot", op.canister)]
      if not (s and s.receipt) then
        return nil, { code = "EPLAN", message = "undo of " .. op.canister .. ": no safety snapshot" }
      end
      return s.receipt.snapshot_id
    end,
  })
  r.state = M.replay(j)
  if r.state.finalized then return { already = true, complete = true, plan = doc, state = state } end
  local res = drive(r, ops, opts, "undo of restore " .. doc.restore_id)
  if res.complete then tidy(state) end
  res.plan, res.state = doc, state
  return res
end

-- {=== status ===}

--- Progress of the restore planned in a state directory (read-only).
function M.status(dir, opts)
  local doc, state = M.open(dir, opts.state)
  local st = peek(state .. "/" .. M.JOURNAL)
  local options = options_of(st, {})
  local ops = operations.restore(doc, options)
  local counts = { completed = 0, failed = 0, pending = 0, waiting = 0 }
  local failed, pending, next_ops = json.array({}), json.array({}), json.array({})
  for _, op in ipairs(ops) do
    local o = st.ops[op.id]
    local s = o and o.state or "waiting"
    counts[s] = counts[s] + 1
    if s == "failed" then failed[#failed + 1] = { op = op.id, error = o.error } end
    if s == "pending" then pending[#pending + 1] = op.id end
    if s == "waiting" then
      local ready = true
      for _, a in ipairs(op.after) do
        if not (st.ops[a] and st.ops[a].state == "completed") then ready = false end
      end
      if ready then next_ops[#next_ops + 1] = op.id end
    end
  end
  local undo = peek(state .. "/" .. M.UNDO_JOURNAL)
  local phase = st.aborted and "aborted" or st.finalized and "complete" or #failed > 0 and "failed"
    or next(st.ops) and "in-progress" or "planned"
  if undo.finalized then phase = "undone" elseif next(undo.ops) then phase = "undoing" end
  local first, last = window(st, ops)
  return {
    restore_id = doc.restore_id, backup_id = doc.backup.backup_id, backup_dir = doc.backup.dir, state_dir = state,
    phase = phase, options = options, members = #doc.members, operations = #ops, counts = counts,
    failed = failed, pending = pending, next = next_ops,
    loads_begun = load_begun(st, ops) ~= nil, stopped = json.array(stopped_targets(st, ops)),
    window_ns = (first and last) and (last - first) or json.null,
    undo = json.object({ begun = next(undo.ops) ~= nil, complete = undo.finalized ~= nil }),
  }
end

return M
