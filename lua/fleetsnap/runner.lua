--- The backup runner: executes the persisted plan's operations, several at
-- once (a coroutine per operation over non-blocking engine calls), each as
-- durable claim -> effect -> one durable record of terminal state and
-- receipt in the write-ahead journal. A claim found without its record on
-- restart is reconciled from evidence (status, snapshot inventory, bytes on
-- disk), never replayed blindly. If a step fails while members are stopped,
-- the runner restarts them and records why; the next run then takes the
-- whole quiesce phase again as a new attempt.
local engine = require "fleetsnap.engine"
local hex = require "fleetsnap.hex"

local json, fs = engine.json, engine.fs

local M = {}
M.__index = M

local LIFECYCLE = { stop = true, snapshot = true, start = true, call = true }

--- Replays the journal into the run state. `extra(st, record)`, if given,
-- sees every record too (the restore runner keeps its own record types).
local function replay(j, extra)
  local st = { attempt = 0, ops = {}, contained = {}, created_at = nil, finalized = nil }
  for r in j:records() do
    if extra then extra(st, r) end
    if r.t == "attempt" then
      st.attempt = r.n
      st.attempt_at = r.at
      -- A new attempt re-arms every operation: artifacts of the abandoned
      -- consistency window are not kept either.
      for id, o in pairs(st.ops) do
        st.ops[id] = { previous = o, kind = o.kind }
      end
    elseif r.t == "claim" then
      local prev = st.ops[r.op] and st.ops[r.op].previous
      st.ops[r.op] = { state = "pending", claim = r, kind = r.kind, previous = prev }
    elseif r.t == "artifact" then
      local o = st.ops[r.op]
      if o then o.artifact = r end
    elseif r.t == "done" then
      local o = st.ops[r.op] or {}
      o.state, o.receipt, o.error, o.done = r.state, r.receipt, r.error, r
      st.ops[r.op] = o
    elseif r.t == "rearm" then
      st.ops[r.op] = { kind = st.ops[r.op] and st.ops[r.op].kind }
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
  return st
end
M.replay = replay

--- A runner over a backup directory's plan. ctx: dir, plan (document),
-- driver, events (function(event)), concurrency, downloads.
function M.new(ctx)
  local self = setmetatable(ctx, M)
  self.journal_path = ctx.dir .. "/fleetsnap-journal.wal"
  self.by_id = {}
  for _, op in ipairs(ctx.plan.operations) do self.by_id[op.id] = op end
  self.events = ctx.events or function() end
  return self
end

function M:emit(kind, fields)
  fields = fields or {}
  fields.type = kind
  self.events(fields)
end

function M:now()
  return engine.realtime_ns()
end

function M:record(rec, key)
  rec.at = rec.at or self:now()
  local ok, err, code = self.j:append(rec, key)
  if not ok then error({ fleetsnap = true, code = code or "EIO", message = "journal: " .. err }, 0) end
end

-- Terminal records are buffered and made durable together once per
-- scheduler tick (group commit). Losing one to a crash only leaves its
-- claim pending, which the next run reconciles from evidence; every claim
-- (an append) flushes what is buffered before its effect.
function M:record_lazy(rec, key)
  rec.at = rec.at or self:now()
  local ok, err, code = self.j:write(rec, key)
  if not ok then error({ fleetsnap = true, code = code or "EIO", message = "journal: " .. err }, 0) end
end

function M:flush()
  local ok, err, code = self.j:sync()
  if not ok then error({ fleetsnap = true, code = code or "EIO", message = "journal: " .. err }, 0) end
end

-- {=== command-lifetime locks ===}

-- Command locks live in a private directory removed once the backup is
-- final, so that the published layout holds only the backup itself.
function M:command_lock_path(op)
  return self.dir .. "/.fleetsnap-commands/" .. op.id .. ".lock"
end

--- Whether a command of op started by an earlier (dead) runner still runs.
function M:in_flight(op)
  if not fs.lstat(self:command_lock_path(op)) then return nil end
  local ok, msg = engine.lock.probe(self:command_lock_path(op), { wait_ms = 250 })
  if ok then return nil end
  return msg
end

-- Runs one icp command inside an operation coroutine: the command's process
-- tree holds the operation's command lock; the coroutine yields the handle
-- and resumes with its result. Returns value, or nil and an error table.
function M:command(op, kind, p)
  if not self.commands_dir then
    assert(fs.mkdir_private(self.dir .. "/.fleetsnap-commands"))
    self.commands_dir = true
  end
  local lock, lerr, lcode = engine.lock.acquire(self:command_lock_path(op), { wait_ms = 250 })
  if not lock then
    return nil, { code = lcode == "ELOCKED" and "IN_FLIGHT" or lcode, message = op.id .. ": " .. lerr }
  end
  local h, err = self.driver:spawn(kind, p, { inherit = { lock } })
  lock:close()
  if not h then return nil, err end
  local r = coroutine.yield(h)
  h:close()
  if self.outputs then self.outputs[op.id] = M.output_tail(r) end
  local value, ferr = self.driver:finish(kind, p, r)
  -- The command's whole process tree must be gone before its outcome counts.
  local busy = self:in_flight(op)
  if busy then
    return nil, { code = "IN_FLIGHT", message = op.id .. ": a process of the command is still running: " .. busy }
  end
  return value, ferr
end

--- The bounded tail of a command's output, for receipts: the last 4 KiB
-- of stdout and of stderr, and how many bytes there were.
function M.output_tail(r)
  local out, err = r.stdout or "", r.stderr or ""
  return { stdout = out:sub(-4096), stderr = err:sub(-4096), bytes = #out + #err,
    truncated = #out > 4096 or #err > 4096 }
end

-- {=== operations ===}

local function fail(code, message)
  return nil, { code = code, message = message }
end

--- The ids of a snapshot inventory (a claim's baseline).
function M.ids(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = s.snapshot_id end
  return out
end
local ids = M.ids

function M:status(op)
  return self:command(op, "status", { canister = op.canister })
end

-- Stop and start make one call each: every extra call would sit inside
-- the downtime window. A stop without effect is caught by the snapshot
-- (icp refuses a running canister), a start without effect by the check
-- after the window (check_started).
function M:op_stop(op)
  local _, err = self:command(op, "stop", { canister = op.canister })
  if err then return nil, err end
  return { stopped_at = self:now(), module_hash = self.module_hashes and self.module_hashes[op.canister] }
end

function M:op_start(op)
  local _, err = self:command(op, "start", { canister = op.canister })
  if err then return nil, err end
  return { started_at = self:now() }
end

--- After the schedule: every started member must really be running.
function M:check_started()
  local jobs, ops = {}, {}
  for _, op in ipairs(self.plan.operations) do
    local o = self.state.ops[op.id]
    if op.kind == "start" and o and o.state == "completed" then
      jobs[#jobs + 1] = { "status", { canister = op.canister } }
      ops[#ops + 1] = op
    end
  end
  local first
  for i, res in ipairs(self.driver:run_many(jobs, math.max(self.concurrency, 32))) do
    local st, err = res[1], res[2]
    if not st then
      first = first or err
    elseif st.status ~= "running" then
      self.unstarted = self.unstarted or {}
      self.unstarted[ops[i].canister] = true
      first = first or { code = "EVERIFY", message = string.format("start of %s: icp reported success but the "
        .. "canister is %s", ops[i].canister, tostring(st.status)) }
    end
  end
  return first
end

function M.new_snapshots(baseline, list)
  local before = {}
  for _, id in ipairs(baseline) do before[id] = true end
  local new = {}
  for _, s in ipairs(list) do
    if not before[s.snapshot_id] then new[#new + 1] = s end
  end
  return new
end

function M:op_snapshot(op, claim_extra)
  -- The inventory listed by preflight, before any stop, is the baseline.
  local baseline = self.baselines and self.baselines[op.canister]
  if not baseline then
    local list, err = self:command(op, "snapshot_list", { canister = op.canister })
    if not list then return nil, err end
    baseline = ids(list)
  end
  local replace = self.replace and self.replace[op.canister]
  claim_extra.baseline = json.array(baseline)
  claim_extra.replace = replace
  self:claim(op, claim_extra)
  -- A snapshot that icp reports but the canister does not have is caught
  -- by its download (IC0305), outside the downtime window.
  local v, cerr = self:command(op, "snapshot_create", { canister = op.canister, replace = replace })
  if not v then return nil, self:stop_evidence(op, cerr) end
  return { snapshot_id = v.snapshot_id, taken_at = v.taken_at, total_size = v.total_size, replaced = replace }
end

-- A snapshot refused because the canister runs, after its stop completed:
-- the stop had no effect.
function M:stop_evidence(op, err)
  local stop = self.state.ops["stop-" .. op.canister]
  if err.code == "NOT_STOPPED" and stop and stop.state == "completed" then
    return { code = "EVERIFY", message = string.format("stop of %s: icp reported success but the canister is running",
      op.canister), ic = err.ic, stderr_tail = err.stderr_tail }
  end
  return err
end

function M:snapshot_of(canister)
  local o = self.state.ops["snapshot-" .. canister]
  return o and o.state == "completed" and o.receipt or nil
end

--- Checks a downloaded directory against its metadata: blob sizes, chunk
-- files named by their digest. Returns nil or an error.
function M.check_download(dir, canister)
  local text = fs.read(dir .. "/metadata.json")
  if not text then return { code = "EVERIFY", message = "download of " .. canister .. ": no metadata.json" } end
  local meta = json.decode(text)
  if type(meta) ~= "table" then
    return { code = "EVERIFY", message = "download of " .. canister .. ": metadata.json is not JSON" }
  end
  for _, b in ipairs({ "wasm_module", "wasm_memory", "stable_memory" }) do
    local want = meta[b .. "_size"] or 0
    local st = fs.lstat(dir .. "/" .. b .. ".bin")
    local have = st and st.size or 0
    if have ~= want then
      return { code = "EVERIFY", message = string.format("download of %s: %s.bin has %d bytes, metadata says %d",
        canister, b, have, want) }
    end
  end
  for _, c in ipairs(meta.wasm_chunk_store or {}) do
    local name = hex.encode_list(c.hash)
    local got = engine.hash.file(dir .. "/wasm_chunk_store/" .. name .. ".bin")
    if got ~= name then
      return { code = "EVERIFY", message = string.format("download of %s: chunk %s is missing or corrupt", canister,
        name) }
    end
  end
  return nil, meta
end

function M:artifact_paths(op)
  local seg = op.canister:gsub("[^%w%-_]", "_")
  return self.dir .. "/" .. seg .. ".tmp", self.dir .. "/" .. seg, seg
end

-- The artifact state machine: Downloaded (bytes in the private staging
-- dir, checked against metadata) -> ChecksumVerified (tree digest recorded)
-- -> Durable (published; the operation's done record). Each state is a
-- journal record, so a resumed run continues from the last one.

function M:expected_module_hash(op)
  local stopped = self.state.ops["stop-" .. op.canister]
  local expected = stopped and stopped.receipt and stopped.receipt.module_hash
  if not expected then
    -- Resumed without preflight: ask the canister (outside any window).
    local st = self:status(op)
    expected = st and st.module_hash
  end
  return expected
end

--- Checks the staged bytes (sizes, chunk digests, module hash) and
-- records Downloaded. Returns nil or an error.
function M:check_staged(op, staging)
  local bad, meta = M.check_download(staging, op.canister)
  if bad then return bad end
  local expected = self:expected_module_hash(op)
  if expected and meta.wasm_module_size > 0 then
    local mh = engine.hash.file(staging .. "/wasm_module.bin")
    if mh ~= expected then
      return { code = "EVERIFY", message = string.format("download of %s: wasm_module.bin hashes to %s, the "
        .. "canister's module hash is %s", op.canister, mh, expected) }
    end
  end
  self:record({ t = "artifact", op = op.id, attempt = self.state.attempt, state = "Downloaded" }, op.id)
end

--- From Downloaded on: digest, record ChecksumVerified (unless recorded),
-- re-verify right before publication, publish without replacing.
function M:publish_staged(op, snap, recorded)
  local staging, final, seg = self:artifact_paths(op)
  assert(fs.mkdir_private(staging))
  local tree, terr, tcode = engine.hash.tree(staging)
  if not tree then return fail(tcode, terr) end
  if recorded then
    if tree.digest ~= recorded.digest then
      return fail("EVERIFY", string.format("artifact of %s: the staged bytes changed after verification (digest %s, "
        .. "recorded %s); nothing was published", op.canister, tree.digest, recorded.digest))
    end
  else
    self:record({ t = "artifact", op = op.id, attempt = self.state.attempt, state = "ChecksumVerified",
      digest = tree.digest, bytes = tree.bytes, files = tree.files }, op.id)
    local again = engine.hash.tree(staging)
    if not again or again.digest ~= tree.digest then
      return fail("EVERIFY", "artifact of " .. op.canister .. ": the staged bytes changed before publication")
    end
  end
  local pok, perr, pcode = fs.publish_dir(staging, final, { key = "artifact-" .. op.canister, private = true })
  if not pok then return fail(pcode, perr) end
  return { snapshot_id = snap.snapshot_id, artifact_path = seg, digest = tree.digest, bytes = tree.bytes,
    files = tree.files, taken_at = snap.taken_at, total_size = snap.total_size }
end

function M:op_download(op)
  local snap = self:snapshot_of(op.canister)
  if not snap then return fail("EPLAN", "download of " .. op.canister .. ": no completed snapshot") end
  local staging, final = self:artifact_paths(op)
  local ok, rerr = fs.remove_tree(staging)
  if not ok then return fail("EIO", rerr) end
  -- An artifact already published here belongs to an abandoned attempt
  -- (this attempt's own is settled by reconciliation): another consistency
  -- window, never to be mixed into this backup.
  ok, rerr = fs.remove_tree(final)
  if not ok then return fail("EIO", rerr) end
  local _, derr = self:command(op, "snapshot_download", { canister = op.canister, snapshot_id = snap.snapshot_id,
    dir = staging, size_bytes = snap.total_size })
  if derr and derr.code == "SNAPSHOT_GONE" then
    derr.code = "EVERIFY"
    derr.message = string.format("snapshot %s of %s: icp reported it created, but the canister does not have it (%s)",
      snap.snapshot_id, op.canister, derr.message)
  end
  if derr then return nil, derr end
  for _, f in ipairs({ ".lock", ".download_progress.json" }) do os.remove(staging .. "/" .. f) end
  local bad = self:check_staged(op, staging)
  if bad then return nil, bad end
  return self:publish_staged(op, snap)
end

function M:op_call(op)
  local v, err = self:command(op, "call", { canister = op.canister, method = op.method, args = op.args,
    query = op.query })
  if not v then return nil, err end
  return { reply_hex = hex.encode(v):sub(1, 4096) }
end

function M:claim(op, extra)
  local rec = { t = "claim", op = op.id, kind = op.kind, attempt = self.state.attempt }
  for k, v in pairs(extra or {}) do rec[k] = v end
  self:record(rec, op.id)
  self.state.ops[op.id] = self.state.ops[op.id] or {}
  self.state.ops[op.id].state = "pending"
  self.state.ops[op.id].claim = rec
end

--- Runs the effect of op (inside its coroutine) and records the outcome.
function M:execute(op)
  local o = self.state.ops[op.id]
  local claimed = o and o.state == "pending"
  local receipt, err
  if op.kind == "snapshot" and not claimed then
    receipt, err = self:op_snapshot(op, {})
  else
    if not claimed then self:claim(op) end
    if op.kind == "stop" then receipt, err = self:op_stop(op)
    elseif op.kind == "start" then receipt, err = self:op_start(op)
    elseif op.kind == "snapshot" then receipt, err = self:op_snapshot_redo(op)
    elseif op.kind == "download" then receipt, err = self:op_download(op)
    elseif op.kind == "call" then receipt, err = self:op_call(op)
    else err = { code = "EPLAN", message = "unknown operation kind " .. tostring(op.kind) } end
  end
  return self:complete(op, receipt, err)
end

-- A snapshot claimed earlier and found to need a redo: the claim's
-- baseline stands; create again.
function M:op_snapshot_redo(op)
  local replace = self.state.ops[op.id].claim.replace
  local v, cerr = self:command(op, "snapshot_create", { canister = op.canister, replace = replace })
  if not v then return nil, self:stop_evidence(op, cerr) end
  return { snapshot_id = v.snapshot_id, taken_at = v.taken_at, total_size = v.total_size, replaced = replace }
end

function M:complete(op, receipt, err)
  if err and err.code == "IN_FLIGHT" then
    -- Leave the claim pending: nothing is known until the command is gone.
    self.failures[#self.failures + 1] = { op = op.id, error = err }
    self:emit("operation-failed", { op = op.id, canister = op.canister, code = err.code, message = err.message })
    return
  end
  local rec = { t = "done", op = op.id, kind = op.kind, attempt = self.state.attempt }
  if err then
    rec.state = "failed"
    rec.error = { code = err.code or "EFAILED", message = err.message, ic = err.ic, stderr_tail = err.stderr_tail }
  else
    rec.state = "completed"
    rec.receipt = receipt
  end
  self:record_lazy(rec, op.id)
  local o = self.state.ops[op.id] or {}
  o.state, o.receipt, o.error, o.done = rec.state, rec.receipt, rec.error, rec
  self.state.ops[op.id] = o
  if err then
    self.failures[#self.failures + 1] = { op = op.id, error = rec.error }
    self:emit("operation-failed", { op = op.id, canister = op.canister, code = rec.error.code,
      message = rec.error.message })
  else
    self:emit("operation-completed", { op = op.id, kind = op.kind, canister = op.canister })
  end
end

-- {=== reconciliation ===}

--- Settles every claimed-but-unrecorded operation of the current attempt
-- from evidence. Returns nil, or an error that stops the run.
function M:reconcile()
  for _, op in ipairs(self.plan.operations) do
    local o = self.state.ops[op.id]
    if o and o.state == "pending" then
      local busy = self:in_flight(op)
      if busy then
        return { code = "IN_FLIGHT", message = string.format("%s: a command started by an earlier run is still "
          .. "running (%s); wait for it to exit, then resume", op.id, busy) }
      end
      self:emit("reconcile", { op = op.id })
      local co = coroutine.wrap(function() return self:reconcile_one(op, o) end)
      local handle = co()
      while type(handle) == "userdata" do
        handle = co(handle:result())
      end
    end
  end
  self:flush()
end

-- Runs inside a coroutine (commands yield handles).
function M:reconcile_one(op, o)
  if op.kind == "stop" or op.kind == "start" then
    local st, err = self:status(op)
    if not st then return self:complete(op, nil, err) end
    local want = op.kind == "stop" and "stopped" or "running"
    if st.status == want then
      local receipt = op.kind == "stop" and { stopped_at = o.claim.at, module_hash = st.module_hash, reconciled = true }
        or { started_at = o.claim.at, reconciled = true }
      return self:complete(op, receipt)
    end
    -- Not in effect: the claim stands and the effect runs again.
    return
  elseif op.kind == "snapshot" then
    local list, err = self:command(op, "snapshot_list", { canister = op.canister })
    if not list then return self:complete(op, nil, err) end
    local new = M.new_snapshots(o.claim.baseline or {}, list)
    if #new == 1 then
      return self:complete(op, { snapshot_id = new[1].snapshot_id, taken_at = new[1].taken_at,
        total_size = new[1].total_size, replaced = o.claim.replace, reconciled = true })
    elseif #new > 1 then
      return self:complete(op, nil, { code = "AMBIGUOUS", message = string.format("snapshot of %s: %d snapshots "
        .. "appeared since the claim; cannot tell which is ours (the operator must decide)", op.canister, #new) })
    end
    return -- none: create again
  elseif op.kind == "download" then
    local staging, final = self:artifact_paths(op)
    local art = o.artifact
    local snap = self:snapshot_of(op.canister)
    if snap and art and not fs.lstat(final) and fs.lstat(staging) then
      -- Downloaded or ChecksumVerified, not yet published: continue from
      -- the recorded state, with no second download.
      local recorded = art.state == "ChecksumVerified" and art or nil
      if not recorded then
        local bad = self:check_staged(op, staging)
        if bad then return self:complete(op, nil, bad) end
      end
      local receipt, err = self:publish_staged(op, snap, recorded)
      return self:complete(op, receipt, err)
    end
    if fs.lstat(final) and art and art.state == "ChecksumVerified" then
      local tree = engine.hash.tree(final)
      if tree and tree.digest == art.digest then
        return self:complete(op, { snapshot_id = snap.snapshot_id, artifact_path = select(3, self:artifact_paths(op)),
          digest = tree.digest, bytes = tree.bytes, files = tree.files, taken_at = snap.taken_at,
          total_size = snap.total_size, reconciled = true })
      end
    end
    if fs.lstat(final) then
      -- Published bytes we cannot vouch for: move them out of the way.
      assert(fs.remove_tree(final))
    end
    return -- download again (read-only on the network)
  elseif op.kind == "call" then
    if not op.idempotent then
      return self:complete(op, nil, { code = "OPERATOR", message = string.format("%s: a non-idempotent call may or "
        .. "may not have run; check the canister, then `backup resume --retry-failed`", op.id) })
    end
    return
  end
end

-- {=== scheduling ===}

--- Which concurrency bound an operation counts against: lifecycle calls,
-- or transfers ("download").
function M:bucket(op)
  return LIFECYCLE[op.kind] and "lifecycle" or "download"
end

function M:ready(op)
  local o = self.state.ops[op.id]
  if o and (o.state == "completed" or o.state == "failed") then return false end
  for _, a in ipairs(op.after) do
    local d = self.state.ops[a]
    if not d or d.state ~= "completed" then return false end
  end
  return true
end

--- Executes operations until all are done or one fails. Returns true, or
-- false after a failure (running ones are finished first).
function M:schedule(filter)
  local running = {} -- handle -> coroutine
  local active = {}  -- op id -> true
  local counts = { lifecycle = 0, download = 0 }
  local function bucket(op) return self:bucket(op) end
  local limits = { lifecycle = self.concurrency, download = self.downloads }
  self.started = self.started or 0
  local function resume(co, op, ...)
    local ok, handle = coroutine.resume(co, ...)
    if not ok then
      active[op.id] = nil
      counts[bucket(op)] = counts[bucket(op)] - 1
      if type(handle) == "table" and handle.fleetsnap then error(handle, 0) end
      error(debug.traceback(co, tostring(handle)), 0)
    end
    if coroutine.status(co) == "dead" then
      active[op.id] = nil
      counts[bucket(op)] = counts[bucket(op)] - 1
    else
      running[handle] = { co = co, op = op }
    end
  end
  while true do
    if #self.failures == 0 then
      for _, op in ipairs(self.plan.operations) do
        local b = bucket(op)
        if not active[op.id] and (not filter or filter(op)) and self:ready(op) and counts[b] < limits[b]
            and not (self.max_steps and self.started >= self.max_steps) then
          active[op.id] = true
          self.started = self.started + 1
          counts[b] = counts[b] + 1
          self:emit("operation-started", { op = op.id, kind = op.kind, canister = op.canister })
          resume(coroutine.create(function() return self:execute(op) end), op)
        end
      end
    end
    local handles = {}
    for h in pairs(running) do handles[#handles + 1] = h end
    if #handles == 0 then break end
    local done = engine.proc.wait_any(handles)
    if not done then
      -- A signal (the operator's Ctrl-C): stop every command now; the
      -- caller contains what was stopped.
      self:flush()
      for h in pairs(running) do h:close() end
      error({ fleetsnap = true, code = "EINTERRUPTED", message = "interrupted" }, 0)
    end
    -- Everything that finished in this tick, then one fdatasync for all
    -- their terminal records.
    repeat
      local entry = running[done]
      running[done] = nil
      for i, h in ipairs(handles) do
        if h == done then table.remove(handles, i) break end
      end
      resume(entry.co, entry.op, done:result())
      done = #handles > 0 and engine.proc.wait_any(handles, 0) or nil
    until not done
    self:flush()
  end
  self:flush()
  return #self.failures == 0
end

return M
