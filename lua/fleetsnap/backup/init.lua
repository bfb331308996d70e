--- Backups, a client of the executor: create (plan, persist, run) and run
-- (or resume): preflight, drift check, the schedule, the policy's checks,
-- the manifest, retention. Under the backup directory's lock and the
-- fleet's lock, with containment as the executor's `finally`.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local dirs = require "fleetsnap.dirs"
local checks = require "fleetsnap.checks"
local survey = require "fleetsnap.survey"
local backup_plan = require "fleetsnap.backup.plan"
local backup_status = require "fleetsnap.backup.status"
local download = require "fleetsnap.backup.download"
local finalize = require "fleetsnap.backup.finalize"
local preflight = require "fleetsnap.backup.preflight"
local executor = require "fleetsnap.exec.executor"
local exec_state = require "fleetsnap.exec.state"
local fleet_lock = require "fleetsnap.exec.fleet_lock"
local lifecycle = require "fleetsnap.exec.lifecycle"
local ownership = require "fleetsnap.exec.ownership"

local json, fs = engine.json, engine.fs

local M = {}

M.PLAN = backup_plan.FILE
M.JOURNAL = backup_status.JOURNAL

local raise = errors.raise

M.KINDS = { stop = lifecycle.stop, start = lifecycle.start, snapshot = lifecycle.snapshot, call = lifecycle.call,
  download = download.kind, barrier = lifecycle.barrier }

-- Starting a canister again is always safe to retry (containment may have
-- done it already; the start proves itself by status).
M.KINDS.start = setmetatable({ always_retry = true }, { __index = lifecycle.start })

-- Failures that need the operator's look before anything runs again.
local OPERATOR_CODES = { OPERATOR = true, AMBIGUOUS = true }

--- The step that continues a backup in dir.
local function resume_step(dir, retry)
  return { command = "backup resume", ref = dir, options = retry and { retry_failed = true } or nil }
end

--- The snapshot a member's earlier attempts left that this attempt
-- replaces: proven ours by the inventory (new since one of its claims, or
-- the snapshot that claim was to replace and is still there). A phantom id
-- (icp printed it, the canister never had it) is never used.
local function leftover(o, list)
  local seen, found = {}, nil
  while o do
    if o.claim and not seen[o.claim] then
      seen[o.claim] = true
      for _, s in ipairs(ownership.left_by(o.claim, list)) do
        found = found or s.snapshot_id
      end
    end
    o = o.previous
  end
  return found
end

--- Which members were stopped when this attempt found them: they are
-- left stopped. A member that an earlier attempt of ours stopped counts
-- as running (containment may have failed to start it).
local function stopped_before(plan, st, statuses)
  local out = {}
  local previous = st.attempt_record and st.attempt_record.stopped_before or {}
  local was = {}
  for _, cid in ipairs(previous) do was[cid] = true end
  for _, t in ipairs(plan.targets) do
    local cid = t.canister_id
    local ours = false
    local o = st.ops["stop-" .. cid]
    while o do
      if o.claim then ours = true end
      o = o.previous
    end
    if was[cid] or (statuses[cid] and statuses[cid] ~= "running" and not ours) then out[#out + 1] = cid end
  end
  return out
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v] = true end
  return s
end

--- Whether a snapshot of the current attempt failed after the window:
-- one proven a phantom by its download. Then only a new window helps.
local function snapshot_lost(plan, st)
  for _, op in ipairs(plan.operations) do
    local o = op.kind == "snapshot" and st.ops[op.id]
    if o and o.state == "failed" and o.error and o.error.phantom then return true end
  end
  return false
end

--- Whether every snapshot of the current attempt is taken: then a
-- containment did not break the consistency window.
local function window_complete(plan, st)
  local any = false
  for _, op in ipairs(plan.operations) do
    if op.kind == "snapshot" then
      any = true
      local o = st.ops[op.id]
      if not (o and o.state == "completed") then return false end
    end
  end
  return any
end

--- Whether a member this attempt stopped runs again before its snapshot
-- was taken, by its status now. A run that contained its fleet but could
-- not write the record saying so (a full disk takes the journal's room
-- too) leaves stops completed and the canisters running: the window is
-- broken all the same, and a new attempt begins, as after a recorded
-- containment. Asked only of members in that state, so only after an
-- interruption inside the window; a status that cannot be read proves
-- nothing and the run goes on as recorded.
local function window_broken(x, plan, st)
  if window_complete(plan, st) then return false end
  for _, t in ipairs(plan.targets) do
    local cid = t.canister_id
    local stop, snap, start = st.ops["stop-" .. cid], st.ops["snapshot-" .. cid], st.ops["start-" .. cid]
    if stop and stop.state == "completed" and not (snap and snap.state == "completed")
      and not (start and start.state == "completed") then
      local status = x.driver:run("status", { canister = cid })
      if status and status.status == "running" then return true end
    end
  end
  return false
end

--- Begins a new attempt (a new consistency window): preflight, the
-- snapshots to replace, the drift check, one durable attempt record.
local function new_attempt(x, plan, dir, ctx)
  local st = x.state
  local pf = preflight.run(x.driver, dir, plan)
  ctx.module_hashes, ctx.baselines = pf.module_hashes, pf.baselines
  ctx.replace = {}
  for _, t in ipairs(plan.targets) do
    local cid = t.canister_id
    local list = pf.lists[cid] or {}
    ctx.replace[cid] = leftover(st.ops["snapshot-" .. cid], list) or pf.replace_full[cid]
  end
  preflight.check_drift(x.driver, plan)
  local before = stopped_before(plan, st, pf.statuses)
  -- Each member's settings, from this attempt's preflight status: the
  -- last status read before the window, of the attempt whose window the
  -- manifest records. Nothing fleetsnap does in the window changes
  -- settings, and the attempt record keeps them across a resume.
  local settings = {}
  for _, t in ipairs(plan.targets) do
    settings[#settings + 1] = json.ordered({ canister_id = t.canister_id,
      settings = pf.settings[t.canister_id] or json.null }, { "canister_id", "settings" })
  end
  x:record({ t = "attempt", n = st.attempt + 1, stopped_before = json.array(before),
    settings = json.array(settings) })
  ctx.stopped_before = set_of(before)
  x:emit("attempt", { n = x.state.attempt })
end

--- The error that ends a run after failed operations.
local function failed_error(x, dir)
  local f = x.failures[1]
  local e = errors.from_driver(f.error, { failures = x.failures, op = f.op })
  e.message = f.op .. ": " .. e.message
  e.next = resume_step(dir)
  return e
end

--- Runs (or resumes) the backup in dir to completion. opts: driver,
-- events, retry_failed. Returns the summary {manifest} or {already}, or
-- raises a registry error (with `next` when a run continues it).
function M.run(dir, opts)
  local plan, perr, pcode = backup_plan.read(dir)
  if not plan then raise(pcode == "ENOENT" and "ENOTFOUND" or "ECORRUPT", perr) end
  local lock, lerr, lcode = engine.lock.acquire(dir .. "/" .. M.JOURNAL .. ".lock")
  if not lock then raise(errors.engine_code(lcode), "backup " .. dir .. ": " .. tostring(lerr)) end
  local _lock <close> = lock
  -- Under the lock no other writer is alive here: leftovers are stale.
  dirs.clean_temp(dir)
  local j, st = exec_state.open(dir .. "/" .. M.JOURNAL)
  local _journal <close> = j
  local _fleet <close> = fleet_lock.acquire({ { network = opts.driver:network_key(), root = plan.root } },
    "backup " .. plan.backup_id)
  return executor.with_signals(function() return M.execute(dir, plan, j, st, opts) end)
end

function M.execute(dir, plan, j, st, opts)
  local ctx = { stopped_before = set_of(st.attempt_record and st.attempt_record.stopped_before), inventories = {} }
  local x = executor.new({
    dir = dir, journal = j, state = st, operations = plan.operations, kinds = M.KINDS, driver = opts.driver,
    limits = { lifecycle = plan.options.concurrency, transfer = plan.options.downloads },
    events = opts.events, verbose = opts.verbose, context = ctx,
    was_running = function(cid) return not ctx.stopped_before[cid] end,
  })
  if st.finalized then
    -- A crash after the final record may have left the command locks and
    -- an unfinished retention.
    errors.check("command locks", fs.remove_tree(dir .. "/.fleetsnap-commands"))
    if not st.retained then finalize.retain(x, plan, preflight.parent(dir)) end
    return { already = true }
  end
  local ok, res = pcall(x.guard, x, function()
    -- A failure only the operator can settle (a non-idempotent call that
    -- may have run, an ambiguous inventory) is never re-armed by a new
    -- attempt on its own: only --retry-failed says the operator looked.
    if not opts.retry_failed then
      local lines = {}
      for _, op in ipairs(plan.operations) do
        local o = st.ops[op.id]
        if o and o.state == "failed" and o.error and OPERATOR_CODES[o.error.code] then
          lines[#lines + 1] = op.id .. ": " .. tostring(o.error.message)
        end
      end
      if #lines > 0 then
        raise("EFAILED", "backup " .. dir .. ": operations failed; check them, then retry:\n  "
          .. table.concat(lines, "\n  "), { next = resume_step(dir, true) })
      end
    end
    local contained = st.contained[st.attempt]
    if st.attempt == 0 or (contained and not window_complete(plan, st)) or snapshot_lost(plan, st)
      or (not contained and window_broken(x, plan, st)) then
      new_attempt(x, plan, dir, ctx)
    else
      x:reconcile()
      ctx.replace = {}
      for _, t in ipairs(plan.targets) do
        local o = x.state.ops["snapshot-" .. t.canister_id]
        if o and o.claim and o.claim.replace then ctx.replace[t.canister_id] = o.claim.replace end
      end
    end
    local refused = x:rearm_failed(opts.retry_failed)
    if #refused > 0 then
      local lines = {}
      for i, f in ipairs(refused) do lines[i] = f.op .. ": " .. tostring(f.error and f.error.message) end
      raise("EFAILED", "backup " .. dir .. ": operations failed; check them, then retry:\n  "
        .. table.concat(lines, "\n  "), { next = resume_step(dir, true) })
    end
    if not x:schedule() then error(failed_error(x, dir), 0) end
    local bad = checks.run_all(x.driver, plan.targets, survey.read_bound(plan.options.concurrency),
      "after the restart", function(cid, c) x:emit("check-passed", { canister = cid, method = c.method }) end)
    if bad then
      x.failures[#x.failures + 1] = { op = "checks", error = bad }
      error(failed_error(x, dir), 0)
    end
    local man = finalize.manifest(x, plan)
    finalize.retain(x, plan, preflight.parent(dir))
    return { manifest = man }
  end)
  if ok then return res end
  local e = errors.wrap(res)
  if not e.next and e.code ~= "ECORRUPT" and e.code ~= "ENOTFOUND" then e.next = resume_step(dir) end
  error(e, 0)
end

--- The icp command lines a plan's operations run (a dry run): {op, after,
-- command}. A barrier runs no command: it is listed without one, so that
-- the `after` of what waits on it still names a listed operation.
function M.commands(driver, plan, dir)
  local out = {}
  for _, op in ipairs(plan.operations) do
    if op.kind == "barrier" then
      out[#out + 1] = { op = op.id, after = op.after }
      goto continue
    end
    local kind = ({ stop = "stop", start = "start", snapshot = "snapshot_create", download = "snapshot_download",
      call = "call" })[op.kind]
    local p = { canister = op.canister, snapshot_id = "<snapshot-id>", dir = download.paths(dir, op.canister),
      method = op.method, args = op.args, query = op.query }
    out[#out + 1] = { op = op.id, after = op.after, command = driver:render(kind, p) }
    ::continue::
  end
  return out
end

--- The connection the backup in dir was created with (its plan's), or
-- nil (no readable plan, or one from before plans recorded it).
function M.recorded_connection(dir)
  local plan = backup_plan.read(dir)
  return plan and plan.connection or nil
end

--- Creates a backup: plan, persist, run. opts: driver, out (else
-- <backups>/<id>), backups (the backups directory), connection (recorded
-- in the plan), root, inventory, subtree, member, include_root, policy,
-- concurrency, downloads, keep_on_canister, snapshot_limit, dry_run,
-- events, push (a store.restic repository: push the complete backup there
-- last; result.push or result.push_error, an EPUSH error object).
function M.create(opts)
  local plan = backup_plan.build(opts.driver, opts)
  local dir = opts.out or ((opts.backups or "backups") .. "/" .. plan.backup_id)
  if opts.out then
    plan.backup_id = dir:match("([^/]+)/*$")
  end
  if opts.dry_run then
    return { dry_run = true, plan = plan, dir = dir, commands = M.commands(opts.driver, plan, dir) }
  end
  dirs.make_parents(dir)
  if fs.lstat(dir .. "/" .. M.PLAN) then
    raise("ECONFLICT", "backup directory " .. dir .. " already holds a backup (resume it)",
      { next = resume_step(dir) })
  end
  for _, name in ipairs(fs.list(dir) or {}) do
    -- Only what an interrupted create leaves may be there already.
    if not (name:find("%.fsn%-tmp%-") or name == M.JOURNAL .. ".lock") then
      raise("ECONFLICT", "backup directory " .. dir .. " already exists and is not empty")
    end
  end
  local ok, err, code = fs.mkdir_private(dir)
  if not ok then raise(errors.engine_code(code), dir .. ": " .. tostring(err)) end
  dirs.clean_temp(dir)
  local res
  res, err, code = fs.write_create(dir .. "/" .. M.PLAN, json.encode(plan, { pretty = true }))
  if not res then raise(errors.engine_code(code), dir .. "/" .. M.PLAN .. ": " .. tostring(err)) end
  if opts.events then
    local barriers = 0
    for _, op in ipairs(plan.operations) do if op.kind == "barrier" then barriers = barriers + 1 end end
    opts.events({ type = "created", backup_id = plan.backup_id, dir = dir, operations = #plan.operations,
      barriers = barriers })
  end
  local result = M.run(dir, opts)
  result.dir = dir
  result.plan = plan
  if opts.push then
    -- The last step, after the fleet's and the directory's locks are
    -- released: the backup is complete whatever the push does.
    result.push, result.push_error = require("fleetsnap.store.push").after_backup(dir, opts.push)
  end
  return result
end

return M
