--- The lifecycle operation kinds, written once for backup and restore:
-- stop, start, snapshot, call and the phase barrier. Each kind is a table the executor runs:
--   bucket     "lifecycle" or "transfer" (which concurrency bound it counts)
--   run        function(x, op, pending) -> receipt | nil, err; claims
--              (x:claim) before its effect unless `pending` (its claim
--              from an earlier run) stands
--   reconcile  function(x, op, o): settles a claim found without its
--              record from evidence (x:complete), or leaves it to run again
-- The client's context (x.context) gives: module_hashes (canister ->
-- hash, from preflight), baselines (canister -> snapshot ids, from
-- preflight), replace (canister -> a snapshot id proven ours to replace),
-- stopped_before (canister -> true: left stopped, as it was found), and
-- prove_snapshots (prove each new snapshot by the inventory at once,
-- instead of by the client later), and inventories (canister -> the last
-- inventory a proof listed in this run, for the client to reuse).
local engine = require "fleetsnap.engine"
local hex = require "fleetsnap.hex"
local ownership = require "fleetsnap.exec.ownership"

local json = engine.json

local M = {}

local function fail(code, message, extra)
  local e = { code = code, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return nil, e
end

local function ensure_claim(x, op, pending, extra)
  if not pending then x:claim(op, extra) end
end

-- {=== stop ===}

-- Stop and start make one call each inside the downtime window. A stop
-- without effect is caught by what needs the canister stopped: the
-- snapshot (icp refuses a running canister) or the load (a fresh status
-- proof before it).
M.stop = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    ensure_claim(x, op, pending)
    local _, err = x:command(op, "stop", { canister = op.canister })
    if err then return nil, err end
    local hashes = x.context.module_hashes
    return { stopped_at = x:now(), module_hash = hashes and hashes[op.canister] }
  end,
  reconcile = function(x, op, o)
    local st, err = x:status(op)
    if not st then return x:complete(op, nil, err) end
    if st.status == "stopped" then
      return x:complete(op, { stopped_at = o.claim.at, module_hash = st.module_hash, reconciled = true })
    end
    -- Not in effect: the claim stands and the stop runs again.
  end,
}

-- {=== barrier ===}

-- A phase barrier: no canister, no effect, no icp call. The executor runs
-- it once everything before it has completed; it completes at once. It
-- makes no claim: with no effect there is nothing to reconcile, and a
-- barrier whose record a crash lost simply passes again.
M.barrier = {
  bucket = "lifecycle",
  run = function(x)
    return { passed_at = x:now() }
  end,
}

-- {=== start ===}

--- A start is proved by the canister's status right after it (outside
-- the stopped window, which ends at the start): a start reported
-- successful without effect fails here, and `retry` runs it again.
M.start = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    ensure_claim(x, op, pending)
    local before = x.context.stopped_before
    if before and before[op.canister] then
      -- It was stopped when this run found it: it stays stopped.
      return { left_stopped = true }
    end
    local _, err = x:command(op, "start", { canister = op.canister })
    if err then return nil, err end
    local at = x:now()
    local st, serr = x:status(op)
    if not st then return nil, serr end
    if st.status ~= "running" then
      return fail("EVERIFY", string.format("start of %s: icp reported success but the canister is %s",
        op.canister, tostring(st.status)), { no_effect = true })
    end
    return { started_at = at }
  end,
  reconcile = function(x, op, o)
    local before = x.context.stopped_before
    if before and before[op.canister] then
      return x:complete(op, { left_stopped = true, reconciled = true })
    end
    local st, err = x:status(op)
    if not st then return x:complete(op, nil, err) end
    if st.status == "running" then
      return x:complete(op, { started_at = o.claim.at, reconciled = true })
    end
  end,
}

-- {=== snapshot ===}

-- A snapshot refused because the canister runs, after its stop completed:
-- the stop had no effect.
local function stop_evidence(x, op, err)
  local stop = x:completed("stop-" .. op.canister)
  if err.code == "NOT_STOPPED" and stop then
    return { code = "EVERIFY", message = string.format("stop of %s: icp reported success but the canister is "
      .. "running", op.canister), ic = err.ic, stderr_tail = err.stderr_tail, stop_no_effect = true }
  end
  return err
end

--- Proves a snapshot id icp printed against the inventory and the claim's
-- baseline (exec/ownership.lua). Returns the inventory entry or nil, err.
function M.prove_snapshot(x, op, id, baseline, what)
  local list, lerr = x:command(op, "snapshot_list", { canister = op.canister })
  if not list then return nil, lerr end
  if x.context.inventories then x.context.inventories[op.canister] = list end
  local entry, why = ownership.prove(id, baseline, list)
  if not entry then
    return fail("EVERIFY", string.format("%s %s of %s: icp reported it created, but %s; it is not used",
      what, id, op.canister, why), { phantom = id })
  end
  return entry
end

local function created(x, op, claim)
  local v, cerr = x:command(op, "snapshot_create", { canister = op.canister, replace = claim.replace })
  if not v then return nil, stop_evidence(x, op, cerr) end
  if x.context.prove_snapshots then
    local entry, perr = M.prove_snapshot(x, op, v.snapshot_id, claim.baseline, "snapshot")
    if not entry then return nil, perr end
  end
  return { snapshot_id = v.snapshot_id, taken_at = v.taken_at, total_size = v.total_size, replaced = claim.replace }
end

M.snapshot = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    if pending then return created(x, op, pending.claim) end
    -- The inventory listed by preflight, before any stop, is the baseline.
    local baseline = x.context.baselines and x.context.baselines[op.canister]
    if not baseline then
      local list, err = x:command(op, "snapshot_list", { canister = op.canister })
      if not list then return nil, err end
      baseline = ownership.ids(list)
    end
    local replace = x.context.replace and x.context.replace[op.canister]
    local claim = { baseline = json.array(baseline), replace = replace }
    x:claim(op, claim)
    return created(x, op, claim)
  end,
  reconcile = function(x, op, o)
    local list, err = x:command(op, "snapshot_list", { canister = op.canister })
    if not list then return x:complete(op, nil, err) end
    local new = ownership.new_snapshots(o.claim.baseline or {}, list)
    if #new == 1 then
      return x:complete(op, { snapshot_id = new[1].snapshot_id, taken_at = new[1].taken_at,
        total_size = new[1].total_size, replaced = o.claim.replace, reconciled = true })
    elseif #new > 1 then
      return x:complete(op, nil, { code = "AMBIGUOUS", message = string.format("snapshot of %s: %d snapshots "
        .. "appeared since the claim; cannot tell which is ours (the operator must decide)", op.canister, #new) })
    end
    -- None: the create runs again, under the same claim.
  end,
}

-- {=== call ===}

M.call = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    ensure_claim(x, op, pending)
    local v, err = x:command(op, "call", { canister = op.canister, method = op.method, args = op.args,
      query = op.query })
    if not v then return nil, err end
    return { reply_hex = hex.encode(v):sub(1, 4096) }
  end,
  reconcile = function(x, op)
    if not op.idempotent then
      return x:complete(op, nil, { code = "OPERATOR", message = string.format("%s: a non-idempotent call may or "
        .. "may not have run; check the canister, then retry the failed operations", op.id) })
    end
  end,
}

return M
