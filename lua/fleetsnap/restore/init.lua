--- Restore, a client of the executor: plan (a verified backup, an
-- optional mapping), preflight, the journaled run, abort before the first
-- load, undo from safety snapshots, and status. State lives in the restore
-- state directory (by default `<backup>/restore/`): the plan,
-- fleetsnap-restore.wal and its lock, private upload stages, command locks.
-- A run holds the state directory's lock and the lock of every fleet it
-- touches (the backup's, and the targets' when they are mapped elsewhere).
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local dirs = require "fleetsnap.dirs"
local manifest = require "fleetsnap.manifest"
local policy_mod = require "fleetsnap.policy"
local survey = require "fleetsnap.survey"
local verify = require "fleetsnap.verify"
local executor = require "fleetsnap.exec.executor"
local exec_state = require "fleetsnap.exec.state"
local fleet_lock = require "fleetsnap.exec.fleet_lock"
local ownership = require "fleetsnap.exec.ownership"
local kinds = require "fleetsnap.restore.kinds"
local operations = require "fleetsnap.restore.operations"
local plan_mod = require "fleetsnap.restore.plan"
local rstate = require "fleetsnap.restore.state"
local rsettings = require "fleetsnap.restore.settings"

local json, fs = engine.json, engine.fs

local M = {}

M.JOURNAL = rstate.JOURNAL
M.UNDO_JOURNAL = rstate.UNDO_JOURNAL
M.plan_doc = plan_mod
M.operations = operations
M.in_use = rstate.in_use
M.progress = rstate.progress
M.state_dir = rstate.dir
M.realpath = dirs.realpath

local raise = errors.raise
local peek = rstate.peek

local function lock_state(state)
  local lock, err, code = engine.lock.acquire(state .. "/" .. M.JOURNAL .. ".lock")
  if not lock then raise(errors.engine_code(code), "restore state " .. state .. ": " .. tostring(err)) end
  return lock
end

-- {=== next steps (data; the CLI renders them as command lines) ===}

local function step(command, doc_or_dir, state, options)
  local ref = type(doc_or_dir) == "table" and doc_or_dir.backup.dir or doc_or_dir
  local o = {}
  for k, v in pairs(options or {}) do o[k] = v end
  if state then o.state = state end
  return { command = command, ref = ref, options = next(o) and o or nil }
end

-- The state option only when it is not the default place.
local function state_opt(doc, state)
  return state ~= rstate.dir(doc.backup.dir) and state or nil
end

-- {=== plan ===}

local function verified(dir)
  local man, err, code = manifest.read(dir)
  if not man then raise(code == "ENOENT" and "ENOTFOUND" or "ECORRUPT", err) end
  local report = verify.backup(dir, man)
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
-- network, scratch (a drill's), verified ({manifest, report}: the backup
-- as a drill verified it, members that failed left out by the drill).
-- Returns {plan, state, status = "created"|"adopted"|"replaced"|
-- "archived", archived}.
function M.plan(dir, opts)
  dir = dirs.realpath(dir)
  local man, report
  if opts.verified then
    man, report = opts.verified.manifest, opts.verified.report
  else
    man, report = verified(dir)
  end
  if not opts.policy then
    -- The policy the backup was taken with (its manifest says), when it is
    -- a bundled one.
    local fsn = type(man.doc.fleetsnap) == "table" and man.doc.fleetsnap or {}
    local name = type(fsn.policy) == "string" and fsn.policy or nil
    opts.policy = name and policy_mod.load(name) and name or "consistent"
  end
  local doc = plan_mod.build({ dir = dir, manifest = man, report = report,
    manifest_sha256 = man.sha256 }, opts)
  doc.fingerprint = plan_mod.fingerprint(doc)
  local state = M.state_dir(dir, opts.state)
  if opts.state then dirs.make_parents(state) end
  local ok, merr, mcode = fs.mkdir_private(state)
  if not ok then raise(errors.engine_code(mcode), "restore state " .. state .. ": " .. tostring(merr)) end
  local _lock <close> = lock_state(state)
  dirs.clean_temp(state)
  local path = state .. "/" .. plan_mod.FILE
  local status, archived = "created", nil
  if fs.lstat(path) then
    local old, oerr = plan_mod.read(state)
    if not old then
      -- Its journal may hold progress: nothing here is replaced blindly.
      raise("ECORRUPT", oerr .. "; the restore state is left as it is")
    end
    local progress = rstate.progress(state)
    if old.fingerprint == doc.fingerprint and progress ~= "finished" then
      return { plan = old, state = state, status = "adopted" }
    end
    if progress == "unfinished" then
      raise("ECONFLICT", string.format("restore state %s holds restore %s, which is not finished; finish it, "
        .. "abort it, or plan into another state directory", state, old.restore_id),
        { next_steps = { step("restore run", dir, opts.state, { execute = true }),
          step("restore run", dir, opts.state, { abort = true }) } })
    end
    if progress == "finished" then
      -- A finished restore stays as a record beside the new one (its
      -- history); planning the same backup again is a new restore.
      archived = state .. "." .. old.restore_id
      local moved, rerr = os.rename(state, archived)
      if not moved then
        raise("EIO", "restore state " .. state .. ": cannot move it aside to " .. archived .. ": " .. tostring(rerr))
      end
      local made, merr2, mcode2 = fs.mkdir_private(state)
      if not made then raise(errors.engine_code(mcode2), "restore state " .. state .. ": " .. tostring(merr2)) end
      -- Both names durable before the new plan is written into one of them.
      local synced, serr, scode = fs.fsync_dir(state:match("^(.*)/[^/]+$") or ".")
      if not synced then raise(errors.engine_code(scode), "restore state " .. state .. ": " .. tostring(serr)) end
      status = "archived"
    else
      status = "replaced"
      for _, name in ipairs({ M.JOURNAL, plan_mod.FILE }) do os.remove(state .. "/" .. name) end
    end
  end
  local res, werr, wcode = fs.write_create(state .. "/" .. plan_mod.FILE, json.encode(doc, { pretty = true }))
  if not res then raise(errors.engine_code(wcode), state .. "/" .. plan_mod.FILE .. ": " .. tostring(werr)) end
  return { plan = plan_mod.read(state), state = state, status = status, archived = archived }
end

--- The connection the restore planned in dir (state_arg as for open)
-- recorded, or nil (no plan yet, or one from before plans recorded it).
function M.recorded_connection(dir, state_arg)
  local doc = plan_mod.read(M.state_dir(dir, state_arg))
  return doc and doc.connection or nil
end

--- The plan of a state directory, with the backup checked unchanged.
function M.open(dir, state_arg)
  local state = M.state_dir(dir, state_arg)
  local doc, err, code = plan_mod.read(state)
  if not doc then
    raise(code == "ENOTFOUND" and "ENOTFOUND" or "ECORRUPT", err,
      code == "ENOTFOUND" and { next = step("restore plan", dir, state_arg) } or nil)
  end
  -- The backup is where the reference points now (a backup directory may
  -- be moved or copied with its restore state).
  doc.backup.dir = dirs.realpath(dir)
  local mfile = doc.backup.dir .. "/" .. doc.backup.manifest_file
  local sum = engine.hash.file(mfile)
  if sum ~= doc.backup.manifest_sha256 then
    raise("ECORRUPT", string.format("%s changed since restore %s was planned (sha256 %s, planned %s)", mfile,
      doc.restore_id, tostring(sum), doc.backup.manifest_sha256))
  end
  return doc, state
end

-- {=== preflight ===}

--- Before the first effect: every target exists and is controlled by the
-- operator, has the snapshot slots the run needs, and the stage has room
-- for the copies staged at once. Returns the operator, the upload bound
-- that fits, and the targets found stopped (left stopped by containment).
function M.preflight(driver, state, doc, options)
  local targets = {}
  for i, m in ipairs(doc.members) do targets[i] = m.target_canister end
  local me, rows, refusals, code = survey.run(driver, targets, survey.read_bound(doc.options.concurrency),
    "restore preflight")
  local stopped = {}
  for _, row in ipairs(rows) do
    if row.status and row.status.status ~= "running" then stopped[#stopped + 1] = row.canister end
  end
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
  local avail = fs.free_space(state)
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
      refusals[#refusals + 1] = string.format("%s: %d MiB free, the largest artifact needs %d MiB staged", state,
        avail >> 20, (math.ceil((sizes[1] or 0) * 1.05) + extra) >> 20)
    end
    uploads = math.max(fit, 1)
  end
  if #refusals > 0 then
    raise(code, "restore preflight " .. (code == "EICP" and "failed" or "refused")
      .. ", nothing was uploaded or stopped:\n  " .. table.concat(refusals, "\n  "), { refusals = refusals })
  end
  -- Each target's settings as its status reported them (for the check).
  local current = {}
  for _, row in ipairs(rows) do
    if row.status then current[row.canister] = row.status.settings end
  end
  return me, uploads, stopped, current
end

-- {=== commands to run (dry run) ===}

--- The icp command lines an operation still runs, as text.
function M.commands(x, op)
  -- A barrier runs nothing.
  if op.kind == "barrier" then return {} end
  local d, c = x.driver, op.canister
  local m = x.context.members[c]
  local uploaded = kinds.uploaded_id(x, c) or ("<snapshot id of " .. operations.id("upload", c) .. ">")
  if op.kind == "upload" then
    return { d:render("snapshot_list", { canister = c }),
      d:render("snapshot_upload", { canister = c, dir = kinds.stage_path(x, op) }) }
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
      snapshot_id = sid, dir = kinds.check_path(x, op) }),
      d:render("snapshot_delete", { canister = c, snapshot_id = sid }) }
  elseif op.kind == "verify" then
    local out = { d:render("status", { canister = c }) }
    for _, k in ipairs(m and m.checks or {}) do
      out[#out + 1] = d:render("call", { canister = c, method = k.method, args = k.args, query = true })
    end
    return out
  elseif op.kind == "delete" then
    return { d:render("snapshot_delete", { canister = c, snapshot_id = uploaded }) }
  elseif op.kind == "settings" then
    -- The update sets only the fields that differ when it runs; the
    -- preview shows every recorded one.
    local ctx = x.context.settings
    local want = ctx and ctx.want[c]
    if not want then return {} end
    local ch = rsettings.change(want, { controllers = {}, environment_variables = {} },
      { controllers = ctx.controllers[c] })
    return { d:render("status", { canister = c }), d:render("settings_update", { canister = c, change = ch }) }
  end
  return {}
end

-- {=== run ===}

local OPTION_NAMES = { "safety_snapshot", "verify_data", "keep_uploaded", "settings_controllers" }

--- The run options: the ones the restore began with, which later runs may
-- not change. `settings` is the settings mode (check, apply, ignore); a
-- restore begun before it existed ran no check and applies nothing.
local function options_of(st, opts)
  local given = {}
  for _, k in ipairs(OPTION_NAMES) do given[k] = opts[k] or false end
  given.settings = opts.settings or "check"
  if not rsettings.MODES[given.settings] then
    raise("EUSAGE", "unknown settings mode " .. tostring(given.settings) .. " (check, apply or ignore)")
  end
  if given.settings_controllers and given.settings ~= "apply" then
    raise("EUSAGE", "applying controllers needs the settings mode apply")
  end
  if not st.begin then return given, false end
  local began = st.begin.options
  for _, k in ipairs(OPTION_NAMES) do
    if opts[k] and not began[k] then
      raise("EUSAGE", string.format("this restore began without the option %s; options cannot change once it has "
        .. "begun", k), { option = k })
    end
  end
  if opts.settings and opts.settings ~= (began.settings or "ignore") then
    raise("EUSAGE", string.format("this restore began with the settings mode %s; options cannot change once it has "
      .. "begun", tostring(began.settings or "ignore")), { option = "settings" })
  end
  return began, true
end

--- The executor context of --settings apply (nil otherwise).
local function settings_extra(doc, options)
  if options.settings ~= "apply" then return nil end
  return { settings = rsettings.context(doc, options) }
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
    local started = op.kind == "stop" and st.ops[operations.id("start", op.canister)]
    if op.kind == "stop" and o and o.state and not (started and started.state == "completed") then
      out[#out + 1] = op.canister
    end
  end
  return out
end


--- Targets this restore stopped that are still stopped (containment's
-- restarts excepted).
local function still_stopped(st, ops)
  local out = {}
  for _, cid in ipairs(stopped_targets(st, ops)) do
    if not (st.restarted and st.restarted[cid]) then out[#out + 1] = cid end
  end
  return out
end

--- What the operator is told after a failure, and the steps that
-- continue: before the first load, retry or abort; after it, the one
-- command that continues (and undo, with safety snapshots).
local function advice(doc, state, st, ops, contained)
  local stopped = still_stopped(st, ops)
  local lines, steps = {}, {}
  local s = state_opt(doc, state)
  if #stopped > 0 and contained ~= true then
    lines[#lines + 1] = string.format("%d target(s) are stopped: %s", #stopped, table.concat(stopped, ", "))
  end
  if load_begun(st, ops) and contained ~= true then
    lines[#lines + 1] = "loads have begun, so the fleet may be mixed: fix the cause and continue the restore"
      .. (st.begin and st.begin.options.safety_snapshot and ", or put the safety snapshots back (undo)" or "")
    steps[1] = step("restore run", doc, s, { retry_failed = true })
    if st.begin and st.begin.options.safety_snapshot then
      steps[2] = step("restore undo", doc, s, { execute = true })
    end
  else
    lines[#lines + 1] = "nothing was loaded yet" .. (contained and ", and the targets this restore stopped were "
      .. "started again" or "") .. ": fix the cause and retry, or give up with an abort (it deletes what this "
      .. "restore uploaded and snapshotted)"
    steps[1] = step("restore run", doc, s, { retry_failed = true })
    steps[2] = step("restore run", doc, s, { abort = true })
  end
  return table.concat(lines, "\n"), steps
end

--- Removes what only a live run needs.
local function tidy(state)
  for _, sub in ipairs({ "staging", "verify-data", ".fleetsnap-commands" }) do
    local ok, err, code = fs.remove_tree(state .. "/" .. sub)
    if ok == nil then raise(errors.engine_code(code), "restore state " .. state .. ": " .. tostring(err)) end
  end
end

-- The barriers that wait on each operation, per executor: built once.
local barriers_after = setmetatable({}, { __mode = "k" })

--- Re-arms operation `id` and every phase barrier that passed behind it
-- (through barriers too): a barrier that stayed completed would let what
-- waits on it run before the re-armed operation, where waiting on each
-- operation of the phase would not (a load before its re-armed stop).
local function rearm(x, id)
  local map = barriers_after[x]
  if not map then
    map = {}
    for _, op in ipairs(x.operations) do
      if op.kind == "barrier" then
        for _, a in ipairs(op.after) do
          map[a] = map[a] or {}
          table.insert(map[a], op.id)
        end
      end
    end
    barriers_after[x] = map
  end
  x:rearm(id)
  for _, b in ipairs(map[id] or {}) do
    local o = x.state.ops[b]
    if o and o.state then rearm(x, b) end
  end
end

--- A load refused as not loadable, of an upload adopted from evidence
-- (one new snapshot, icp's progress file gone) rather than from icp's own
-- success: icp may have died between creating the snapshot and writing
-- its progress file, leaving it empty. That upload is deleted and runs
-- again. An upload icp confirmed is left alone: the IC's "not currently
-- loadable" then only asks to wait.
local function rearm_adopted_upload(x, target)
  local id = operations.id("upload", target)
  local up = x.state.ops[id]
  if not (up and up.state == "completed" and up.receipt and up.receipt.reconciled) then return end
  local _, err = x.driver:run("snapshot_delete", { canister = target, snapshot_id = up.receipt.uploaded_snapshot_id })
  if err and err.code ~= "SNAPSHOT_GONE" then
    raise("EICP", "re-arming the upload to " .. target .. ": " .. err.message)
  end
  rearm(x, id)
end

--- A failed load re-armed: a load refused because its target runs means
-- the stop had no effect, so the stop runs again too; a load refused as
-- not loadable re-arms an upload adopted from evidence.
local function load_rearmed(x, op, o)
  local stop = operations.id("stop", op.canister)
  if o.error and o.error.code == "NOT_STOPPED" and x.state.ops[stop] then rearm(x, stop) end
  if o.error and o.error.code == "NOT_LOADABLE" then rearm_adopted_upload(x, op.canister) end
end

M.KINDS = {}
for k, v in pairs(kinds.KINDS) do M.KINDS[k] = v end
M.KINDS.load = setmetatable({ rearmed = load_rearmed }, { __index = kinds.KINDS.load })
-- A data check that found the loaded state different from the backup: the
-- load had no (or a wrong) effect, so it runs again before the check.
M.KINDS.verify_data = setmetatable({
  rearmed = function(x, op, o)
    local load = operations.id("load", op.canister)
    if o.error and o.error.code == "EVERIFY" and x:completed(load) then rearm(x, load) end
  end,
}, { __index = kinds.KINDS.verify_data })

--- A restore runs against the network it was planned for (X-14).
local function check_target(doc, driver)
  local want = doc.target or {}
  local env, net = want.environment, want.network
  local planned = (env ~= nil and env ~= json.null) and ("environment " .. env)
    or (net ~= nil and net ~= json.null) and ("network " .. net) or nil
  local given = driver.network and ("network " .. driver.network) or ("environment " .. tostring(driver.environment))
  if planned and planned ~= given then
    raise("EPRECONDITION", string.format("restore %s was planned for %s; this run targets %s (run on the same "
      .. "network, or plan again)", doc.restore_id, planned, given))
  end
end

--- The fleets a restore touches: the backup's (its root), and the
-- targets' when mapped elsewhere: the root of the target tree is the
-- parent target of a top member that is not itself restored, or that top
-- member.
function M.fleets(doc, driver)
  local network = driver:network_key()
  local out = { { network = network, root = doc.source.root_canister } }
  local restored = {}
  for _, m in ipairs(doc.members) do restored[m.target_canister] = m end
  for _, m in ipairs(doc.members) do
    local parent = m.parent_target_canister
    if parent == json.null or parent == nil then
      out[#out + 1] = { network = network, root = m.target_canister }
    elseif not restored[parent] then
      out[#out + 1] = { network = network, root = parent }
    end
  end
  return out
end

--- Takes the restore's fleet locks (none for a dry run).
local function lock_fleets(doc, driver, what)
  return fleet_lock.acquire(M.fleets(doc, driver), what .. " " .. doc.restore_id)
end

--- The executor of a restore (or its undo) over ops.
local function new_executor(doc, state, j, st, opts, ops, extra)
  -- The targets found stopped, from the begin record (live or replayed).
  local stopped_before
  local function was_running(x, cid)
    if not stopped_before and x.state.begin then
      stopped_before = {}
      for _, t in ipairs(x.state.begin.stopped_before or {}) do stopped_before[t] = true end
    end
    return not (stopped_before and stopped_before[cid])
  end
  local x
  local ctx = { members = {}, backup_dir = doc.backup.dir, prove_snapshots = true }
  for _, m in ipairs(doc.members) do ctx.members[m.target_canister] = m end
  for k, v in pairs(extra or {}) do ctx[k] = v end
  -- A drill's targets are scratch copies: containment never starts one
  -- (a started copy would run its timers and call the real fleet).
  local scratch = opts.drill
  x = executor.new({
    dir = state, journal = j, state = st, operations = ops, kinds = M.KINDS, driver = opts.driver,
    extra = rstate.extra,
    limits = { lifecycle = doc.options.concurrency,
      transfer = math.min(doc.options.uploads, st.begin and st.begin.uploads or doc.options.uploads) },
    events = opts.events, verbose = opts.verbose, max_steps = opts.max_steps,
    lock_prefix = extra and extra.lock_prefix,
    keep_output = true, context = ctx,
    was_running = function(cid) return not scratch and was_running(x, cid) end,
    -- Once a load has begun, starting targets again would run a mixed
    -- fleet: the operator decides (continue, or undo).
    may_contain = function(self)
      if scratch then return false end
      for _, op in ipairs(ops) do
        if op.kind == "load" and self:may_have_run(op, "snapshot_restore") then return false end
      end
      return true
    end,
  })
  return x
end

--- After a containment before the first load, the targets run again: the
-- stops run again, and safety snapshots taken while they were stopped
-- are deleted and taken again (they would no longer be what undo must
-- put back).
local function restop(x, ops)
  local st = x.state
  -- Containment ran only while no load could have happened (may_contain):
  -- its record is the proof, so a load claimed then is re-armed too.
  if not st.needs_restop then return end
  local again = {}
  for _, cid in ipairs(st.needs_restop) do again[cid] = true end
  for _, op in ipairs(ops) do
    local o = st.ops[op.id]
    if again[op.canister] and o and o.state then
      if op.kind == "snapshot" and o.state == "completed" and o.receipt and o.receipt.snapshot_id then
        local _, err = x.driver:run("snapshot_delete", { canister = op.canister, snapshot_id = o.receipt.snapshot_id })
        if err and err.code ~= "SNAPSHOT_GONE" then raise("EICP", "safety snapshot of " .. op.canister .. ": "
          .. err.message) end
        rearm(x, op.id)
      elseif op.kind == "stop" or op.kind == "start" or (op.kind == "load" and o.state == "pending") then
        rearm(x, op.id)
      end
    end
  end
  x:record({ t = "restop" })
end

--- Drives an executor over its operations: reconcile, re-arm or refuse
-- failures, schedule, and record the end. Returns the summary.
local function drive(x, doc, state, ops, opts, what)
  local barriers = 0
  for _, op in ipairs(ops) do if op.kind == "barrier" then barriers = barriers + 1 end end
  x:emit("restore", { what = what, operations = #ops, barriers = barriers })
  x:reconcile()
  restop(x, ops)
  local refused = x:rearm_failed(opts.retry_failed)
  if #refused > 0 then
    local lines = {}
    for i, f in ipairs(refused) do lines[i] = f.op .. ": " .. tostring(f.error and f.error.message) end
    local text, steps = advice(doc, state, x.state, ops)
    raise("EFAILED", what .. ": operations failed:\n  " .. table.concat(lines, "\n  ") .. "\n" .. text,
      { next_steps = steps })
  end
  if not x:schedule() then
    local f = x.failures[1]
    local e = errors.from_driver(f.error, { failures = x.failures, op = f.op })
    e.message = f.op .. ": " .. tostring(f.error.message)
    error(e, 0)
  end
  local done = 0
  for _, op in ipairs(ops) do
    if x:completed(op.id) then done = done + 1 end
  end
  if done < #ops then
    return { paused = true, completed = done, operations = #ops }
  end
  local first, last = window(x.state, ops)
  local rec = { t = "finalized", window_ns = (first and last) and (last - first) or json.null,
    first_stop_at = first or json.null, last_start_at = last or json.null }
  x:record(rec)
  return { complete = true, completed = done, operations = #ops, window_ns = rec.window_ns }
end

--- Runs the guarded body; a failure gets the advice and next steps.
local function guarded(x, doc, state, ops, body)
  local ok, res = pcall(x.guard, x, body)
  if ok then return res end
  local e = errors.wrap(res)
  if e.code == "EINFLIGHT" then
    e.next = e.next or step("restore run", doc, state_opt(doc, state), { execute = true })
    error(e, 0)
  end
  if not e.next and not e.next_steps then
    local text, steps = advice(doc, state, x.state, ops, e.contained)
    e.message = e.message .. "\n" .. text
    if e.code == "EINTERRUPTED" then
      e.next = step("restore run", doc, state_opt(doc, state), { execute = true })
    else
      e.next_steps = steps
    end
  end
  error(e, 0)
end

--- Runs (or resumes) the restore planned in the state directory.
-- opts: driver, events, state, dry_run, max_steps, retry_failed, abort,
-- safety_snapshot, verify_data, keep_uploaded, drill (the drill's restore
-- into scratch copies: operations.drill, no fleet locks, never a start).
function M.run(dir, opts)
  local doc, state = M.open(dir, opts.state)
  local jpath = state .. "/" .. M.JOURNAL
  if opts.dry_run then
    local st = peek(jpath)
    local options = options_of(st, opts)
    local ops = operations.restore(doc, options)
    local x = new_executor(doc, state, {}, st, opts, ops, settings_extra(doc, options))
    local out = {}
    for _, op in ipairs(ops) do
      local o = st.ops[op.id]
      if not (o and o.state == "completed") then
        out[#out + 1] = { op = op.id, kind = op.kind, canister = op.canister, after = op.after,
          state = o and o.state or "waiting", commands = json.array(M.commands(x, op)) }
      end
    end
    return { dry_run = true, plan = doc, state = state, options = options, operations = #ops, remaining = out,
      complete = st.finalized ~= nil, aborted = st.aborted ~= nil,
      next = step("restore run", doc, state_opt(doc, state), { execute = true }) }
  end
  check_target(doc, opts.driver)
  local _lock <close> = lock_state(state)
  dirs.clean_temp(state)
  local j, st = exec_state.open(jpath, rstate.extra)
  local _journal <close> = j
  if st.aborted then
    raise("EPRECONDITION", "restore " .. doc.restore_id .. " was aborted; plan a new one to restore again",
      { next = step("restore plan", doc, state_opt(doc, state)) })
  end
  if next(peek(state .. "/" .. M.UNDO_JOURNAL).ops) then
    -- Going forward again would fight the undo over the same targets.
    raise("EPRECONDITION", "restore " .. doc.restore_id .. " is being or was undone; plan a new one to restore again",
      { next = step("restore plan", doc, state_opt(doc, state)) })
  end
  local options, begun = options_of(st, opts)
  local ops = opts.drill and operations.drill(doc) or operations.restore(doc, options)
  if st.finalized then
    tidy(state)
    return { already = true, complete = true, plan = doc, state = state, window_ns = st.finalized.window_ns }
  end
  -- A drill holds the backup's fleet lock itself, for its whole run; its
  -- scratch copies are no fleet of anybody's.
  local _fleets <close> = not opts.drill and lock_fleets(doc, opts.driver, "restore") or nil
  local x = new_executor(doc, state, j, st, opts, ops, settings_extra(doc, options))
  if opts.abort or st.abort then
    if not opts.abort then
      raise("EPRECONDITION", "an abort of this restore was begun; finish it",
        { next = step("restore run", doc, state_opt(doc, state), { abort = true }) })
    end
    return executor.with_signals(function() return M.abort(x, doc, ops, state) end)
  end
  local result = executor.with_signals(function()
    return guarded(x, doc, state, ops, function()
      if not begun then
        local me, uploads, stopped, current = M.preflight(opts.driver, state, doc, options)
        -- Before the first stop: the targets' settings against the
        -- backup's, reported as warnings (never a refusal).
        local check = options.settings ~= "ignore"
          and rsettings.check(doc, rsettings.recorded(doc), current, options) or nil
        x:record({ t = "begin", options = options, operator = me, uploads = uploads,
          stopped_before = json.array(stopped), settings_check = check })
        -- Shown as it is made, not only with the result: a run that fails
        -- later still showed the differences before its first stop.
        if check then
          x:emit("settings-check", { mode = check.mode, recorded = check.recorded, note = check.note,
            differences = check.differences })
        end
        x:set_limit("transfer", math.min(doc.options.uploads, uploads))
      end
      local res = drive(x, doc, state, ops, opts, "restore " .. doc.restore_id)
      if res.complete then tidy(state) end
      return res
    end)
  end)
  result.plan, result.state, result.options = doc, state, options
  result.settings = x.state.begin and x.state.begin.settings_check
  return result
end

-- {=== abort ===}

--- Before the first load only: restart the stopped targets, delete the
-- snapshots this restore made (uploads, safety snapshots), mark the
-- restore aborted. Re-runnable.
function M.abort(x, doc, ops, state)
  local first = load_begun(x.state, ops)
  if first then
    local s = state_opt(doc, state)
    raise("EPRECONDITION", string.format("restore %s cannot be aborted: %s has begun, so targets may already hold "
      .. "the backup's state; continue it%s", doc.restore_id, first,
      x.state.begin and x.state.begin.options.safety_snapshot and ", or put the safety snapshots back (undo)" or ""),
      { next_steps = { step("restore run", doc, s, { execute = true }),
        x.state.begin and x.state.begin.options.safety_snapshot
          and step("restore undo", doc, s, { execute = true }) or nil } })
  end
  for _, op in ipairs(ops) do
    local o = x.state.ops[op.id]
    if o and o.state == "pending" then
      local busy = x:in_flight(op, true)
      if busy then raise("EINFLIGHT", op.id .. ": a command of an earlier run is still running: " .. busy) end
    end
  end
  if not x.state.abort then x:record({ t = "abort" }) end
  local driver = x.driver
  local deleted, started, problems = {}, {}, {}
  for _, op in ipairs(ops) do
    local o = x.state.ops[op.id]
    -- What this restore put on the targets: uploads, and safety
    -- snapshots (nothing was loaded, so they only hold slots). Only what
    -- the receipts or the inventory delta since the claim prove ours.
    if (op.kind == "upload" or op.kind == "snapshot") and o and o.state then
      local ids = {}
      if o.state == "completed" then
        ids[1] = o.receipt.uploaded_snapshot_id or o.receipt.snapshot_id
      elseif o.claim then
        local list, lerr = driver:run("snapshot_list", { canister = op.canister })
        if not list then
          problems[#problems + 1] = op.canister .. ": " .. lerr.message
        else
          local new = ownership.new_snapshots(o.claim.baseline or {}, list)
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
  for _, target in ipairs(stopped_targets(x.state, ops)) do
    local st, serr = driver:run("status", { canister = target })
    if not st then
      problems[#problems + 1] = serr.message
    elseif st.status ~= "running" and x.was_running(target) then
      local _, err = driver:run("start", { canister = target })
      if err then problems[#problems + 1] = err.message else started[#started + 1] = target end
    end
  end
  if #problems > 0 then
    raise("EICP", "abort of restore " .. doc.restore_id .. " is incomplete (run the abort again):\n  "
      .. table.concat(problems, "\n  "), { next = step("restore run", doc, state_opt(doc, state), { abort = true }) })
  end
  x:record({ t = "aborted", started = json.array(started), deleted = json.array(deleted) })
  tidy(state)
  x:emit("aborted", { started = started, deleted = deleted })
  return { aborted = true, started = started, deleted = deleted, plan = doc, state = state }
end

-- {=== undo ===}

--- Puts the safety snapshots back the way the restore loaded: stop
-- parents first, load after a fresh stopped proof, start children first,
-- check every target runs; then deletes what the restore uploaded.
-- opts.dry_run: only the operations it would run ({dry_run, operations}).
function M.undo(dir, opts)
  local doc, state = M.open(dir, opts.state)
  check_target(doc, opts.driver)
  local _lock <close> = lock_state(state)
  local rst = peek(state .. "/" .. M.JOURNAL)
  if not (rst.begin and rst.begin.options.safety_snapshot) then
    raise("EPRECONDITION", "restore " .. doc.restore_id .. " took no safety snapshots; there is nothing to undo to")
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
  if opts.dry_run then
    -- Like `restore run`: undo acts only when told to (--execute).
    local done = peek(state .. "/" .. M.UNDO_JOURNAL).finalized ~= nil
    return { dry_run = true, already = done, plan = doc, state = state, operations = ops }
  end
  local j, st = exec_state.open(state .. "/" .. M.UNDO_JOURNAL, rstate.extra)
  local _journal <close> = j
  if st.finalized then return { already = true, complete = true, plan = doc, state = state } end
  local _fleets <close> = lock_fleets(doc, opts.driver, "undo of restore")
  -- The undo's executor sees the restore's begin (its upload bound and the
  -- targets found stopped).
  st.begin = rst.begin
  local x = new_executor(doc, state, j, st, opts, ops, {
    restore_state = rst, lock_prefix = "undo-", skip_module_hash = true, skip_checks = true,
    source_of = function(_, op)
      local s = rst.ops[operations.id("snapshot", op.canister)]
      if not (s and s.receipt) then
        return nil, { code = "EPLAN", message = "undo of " .. op.canister .. ": no safety snapshot" }
      end
      return s.receipt.snapshot_id
    end,
  })
  local res = executor.with_signals(function()
    return guarded(x, doc, state, ops, function()
      local r = drive(x, doc, state, ops, opts, "undo of restore " .. doc.restore_id)
      if r.complete then tidy(state) end
      return r
    end)
  end)
  res.plan, res.state = doc, state
  return res
end

-- {=== status ===}

--- Finished restores of the same state directory kept beside it
-- (`<state>.<restore_id>`), oldest first: {restore_id, dir, phase}.
function M.history(state)
  local parent, base = state:match("^(.*)/([^/]+)$")
  parent, base = parent or ".", base or state
  local out = {}
  for _, name in ipairs(fs.list(parent) or {}) do
    local id = name:sub(1, #base + 1) == base .. "." and name:sub(#base + 2) or nil
    if id and id:match("^restore%-") then
      local dir = parent .. "/" .. name
      local ok, st = pcall(peek, dir .. "/" .. M.JOURNAL)
      local undo_ok, undo = pcall(peek, dir .. "/" .. M.UNDO_JOURNAL)
      local phase = not ok and "corrupt" or st.aborted and "aborted" or (undo_ok and undo.finalized) and "undone"
        or st.finalized and "complete" or "unfinished"
      out[#out + 1] = { restore_id = id, dir = dir, phase = phase }
    end
  end
  table.sort(out, function(a, b) return a.restore_id < b.restore_id end)
  return out
end

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
    loads_begun = load_begun(st, ops) ~= nil, stopped = json.array(still_stopped(st, ops)),
    window_ns = (first and last) and (last - first) or json.null,
    undo = json.object({ begun = next(undo.ops) ~= nil, complete = undo.finalized ~= nil }),
    history = json.array(M.history(state)),
  }
end

return M
