--- The executor: runs a persisted plan's operations, several at once (a
-- coroutine per operation over non-blocking engine calls), each as durable
-- claim -> effect -> one durable record of terminal state and receipt in
-- the write-ahead journal. Backup and restore are its clients: they
-- register operation kinds (exec/lifecycle.lua has stop, start, snapshot
-- and call; backup adds download, restore upload, load, verify...), and
-- run their phases inside `guard`, whose `finally` is containment.
--
-- What the executor owns for every client:
--   * claim before effect; a claim found without its record on restart is
--     reconciled from evidence by its kind, never replayed blindly;
--   * command-lifetime locks: an icp command of a dead run that is still
--     alive blocks recovery until it exits;
--   * interrupts (SIGINT, SIGTERM, SIGHUP) at safe points only;
--   * containment on every exit path (icp failure, journal or disk failure,
--     internal error, interrupt): what this run stopped and was running
--     before is started again, unless the client says the fleet may no
--     longer be restarted blindly (a restore after its first load).
--
-- The scheduler does work proportional to what changed, not to the plan
-- per tick: schedule() counts each operation's unfinished dependencies
-- once (O(N + E) for N operations and E `after` edges), then a completion
-- decrements its dependents' counts and queues those reaching 0 in a
-- per-bucket queue in plan order (O(E) in all, O(log N) a start). A tick
-- costs O(what finished + what starts) plus the running handles it waits
-- on; `examined` counts the operations looked at (about 2(N + E)).
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local exec_state = require "fleetsnap.exec.state"

local json, fs = engine.json, engine.fs

local M = {}
M.__index = M

local REQUIRED = { "dir", "journal", "state", "operations", "kinds", "driver", "limits" }

--- A new executor, built whole. opts:
--   dir         the run's directory (command locks live under it)
--   journal     the open engine journal (the caller holds the run's lock)
--   state       the state replayed from that journal (exec.state)
--   operations  the plan's operations {id, kind, canister, after}
--   kinds       operation kinds by name (see exec/lifecycle.lua)
--   driver      the icp driver
--   limits      {lifecycle = n, transfer = n}: operations at once per bucket
--   events      function(event), optional
--   max_steps   stop after starting this many operations, optional
--   lock_prefix prefix of command-lock names (an undo beside its restore)
--   keep_output whether receipts keep the tail of the last command's output
--   context     the client's table, handed to its kinds as x.context
--   was_running function(canister) -> bool: containment restarts only
--               canisters that were running before this run stopped them
--   may_contain function(x) -> bool, optional: false once starting what
--               was stopped would no longer leave the fleet as found
--   extra       function(state, record), optional: the client's own
--               records applied to the state, live as in its replay
function M.new(opts)
  for _, k in ipairs(REQUIRED) do
    if opts[k] == nil then error("executor: " .. k .. " is required", 2) end
  end
  for _, op in ipairs(opts.operations) do
    if not opts.kinds[op.kind] then error("executor: no kind " .. tostring(op.kind) .. " for " .. op.id, 2) end
  end
  local self = setmetatable({
    dir = opts.dir,
    j = opts.journal,
    state = opts.state,
    operations = opts.operations,
    kinds = opts.kinds,
    driver = opts.driver,
    limits = { lifecycle = opts.limits.lifecycle, transfer = opts.limits.transfer },
    events = opts.events or function() end,
    max_steps = opts.max_steps,
    lock_prefix = opts.lock_prefix or "",
    keep_output = opts.keep_output or false,
    -- Emit a "command" event with each icp command line as it starts.
    verbose = opts.verbose or false,
    context = opts.context or {},
    was_running = opts.was_running or function() return true end,
    may_contain = opts.may_contain or function() return true end,
    extra = opts.extra,
    by_id = {},
    failures = {},
    outputs = {},
    started = 0,
    -- Operations the scheduler looked at to decide what to start (see
    -- schedule: about twice the operations plus dependency edges).
    examined = 0,
    sched = nil,
    commands_dir = opts.dir .. "/.fleetsnap-commands",
    commands_dir_made = false,
    lock_bytes = {},
    -- What this process did, beyond the journal: the operations it
    -- claimed, and the icp kinds it spawned for each. A claim of this run
    -- whose effect command never started is known not to have happened.
    claimed = {},
    spawned = {},
    -- Claims written inside schedule() but not yet synced: their
    -- operations' first command waits for the scheduler's group commit.
    unsynced = {},
    in_schedule = false,
  }, M)
  for _, op in ipairs(opts.operations) do self.by_id[op.id] = op end
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

-- {=== the journal ===}

local function journal_failure(err, code)
  return errors.from_engine("journal", err, code)
end

--- Appends a record durably (fsync) and applies it to the state.
function M:record(rec, key)
  rec.at = rec.at or self:now()
  local ok, err, code = self.j:append(rec, key)
  if not ok then error(journal_failure(err, code), 0) end
  if next(self.unsynced) then self.unsynced = {} end
  exec_state.apply(self.state, rec)
  if self.extra then self.extra(self.state, rec) end
end

--- Sets how many operations of a bucket run at once (a client learns it
-- from its preflight, e.g. the uploads that fit the free space).
function M:set_limit(bucket, n)
  self.limits[bucket] = n
end

-- Terminal records, and the progress records of an operation between its
-- claim and its end (a download's Downloaded and ChecksumVerified), are
-- written without a sync and made durable together by the next claim (an
-- append syncs the journal, and with it every record before it) or by the
-- flush when the run ends (group commit). Losing one to a power loss only
-- takes the operation back to its claim, which the next run reconciles
-- from evidence, as after a crash between an effect and its record: no
-- effect on the network depends on one of them being durable first.
function M:record_lazy(rec, key)
  rec.at = rec.at or self:now()
  local ok, err, code = self.j:write(rec, key)
  if not ok then error(journal_failure(err, code), 0) end
  exec_state.apply(self.state, rec)
  if self.extra then self.extra(self.state, rec) end
end

function M:flush()
  local ok, err, code = self.j:sync()
  if not ok then error(journal_failure(err, code), 0) end
  if next(self.unsynced) then self.unsynced = {} end
end

-- What an operation's coroutine yields instead of a handle when its claim
-- is not durable yet: the scheduler syncs the journal once for every
-- operation that yielded it in the pass, then resumes each to spawn.
local AWAIT_CLAIM = setmetatable({}, { __name = "await-claim", __tostring = function() return "await-claim" end })

-- {=== command-lifetime locks ===}

-- Every command of a run holds one byte of one shared lock file, the byte
-- its operation's id hashes to, and hands that lock to its process tree.
-- One file per run rather than one per operation: creating a file per
-- command was a quarter of a 1,024-member backup's CPU on an ext4 without
-- a journal, whose inode allocator skips every recently deleted inode.
-- The lock file lives in a private directory removed once the run is
-- final, so that a published backup holds only the backup itself.

-- FNV-1a over the id, cut to 62 bits: two operations of one run share a
-- byte with a chance of about n^2 / 2^63 (1e-10 at 30,000 operations), and
-- a shared byte only makes the second command wait or refuse, never run
-- unguarded.
local FNV_OFFSET, FNV_PRIME = -3750763034362895579, 1099511628211

--- The byte of the command lock file that the operation id's commands hold.
function M.lock_byte(id)
  local h = FNV_OFFSET
  for i = 1, #id do h = (h ~ id:byte(i)) * FNV_PRIME end
  return h & 0x3FFFFFFFFFFFFFFF
end

--- The command lock of op: the shared file's path and op's byte in it.
function M:command_lock(op)
  local byte = self.lock_bytes[op.id]
  if not byte then
    byte = M.lock_byte(op.id)
    self.lock_bytes[op.id] = byte
  end
  return self.commands_dir .. "/" .. self.lock_prefix .. "commands.lock", byte
end

--- Whether a command of op started by an earlier (dead) run still runs:
-- nil, or the holder's description. earlier: op was claimed by another
-- run, which may have been a version that locked a file per operation
-- (<prefix><op id>.lock), probed too.
function M:in_flight(op, earlier)
  -- A missing lock file (no command started, or its directory removed):
  -- nothing runs. The probe tells so itself, without creating the file.
  local path, byte = self:command_lock(op)
  local ok, msg, code = engine.lock.probe(path, { wait_ms = 250, create = false, range = byte })
  if ok and earlier then
    ok, msg, code = engine.lock.probe(self.commands_dir .. "/" .. self.lock_prefix .. op.id .. ".lock",
      { wait_ms = 250, create = false })
  end
  if ok then return nil end
  if code ~= "ELOCKED" then error(errors.from_engine("command lock of " .. op.id, msg, code), 0) end
  return msg
end

--- Returns once op's claim is durable: at once when it is, else after the
-- scheduler's next group commit (inside schedule()) or a sync of its own.
-- x:command calls it before every icp command; a kind whose effect is
-- anything else calls it before that effect.
function M:before_effect(op)
  if not self.unsynced[op.id] then return end
  if self.in_schedule and coroutine.isyieldable() then coroutine.yield(AWAIT_CLAIM) end
  if self.unsynced[op.id] then self:flush() end
end

--- Runs one icp command inside an operation coroutine: the command's
-- process tree holds the operation's command lock; the coroutine yields
-- the handle and resumes with its result. Returns value, or nil and an
-- error table {code, message, ...}.
function M:command(op, kind, p)
  self:before_effect(op)
  if not self.commands_dir_made then
    local ok, err, code = fs.mkdir_private(self.commands_dir)
    if not ok then error(errors.from_engine(self.commands_dir, err, code), 0) end
    self.commands_dir_made = true
  end
  local path, byte = self:command_lock(op)
  local lock, lerr, lcode = engine.lock.acquire(path, { wait_ms = 250, range = byte })
  if not lock then
    if lcode ~= "ELOCKED" then error(errors.from_engine("command lock of " .. op.id, lerr, lcode), 0) end
    return nil, { code = "IN_FLIGHT", message = op.id .. ": " .. lerr }
  end
  local h, err = self.driver:spawn(kind, p, { inherit = { lock } })
  lock:close()
  if not h then return nil, err end
  if self.verbose then self:emit("command", { op = op.id, command = self.driver:render(kind, p) }) end
  self.spawned[op.id] = self.spawned[op.id] or {}
  self.spawned[op.id][kind] = true
  local r = coroutine.yield(h)
  h:close()
  if self.keep_output then self.outputs[op.id] = M.output_tail(r) end
  local value, ferr = self.driver:finish(kind, p, r)
  -- The command's whole process tree must be gone before its outcome counts.
  local busy = self:in_flight(op)
  if busy then
    return nil, { code = "IN_FLIGHT", message = op.id .. ": a process of the command is still running: " .. busy }
  end
  return value, ferr
end

--- Hashes a directory tree on a background thread (engine.hash.start_tree)
-- inside an operation coroutine: the coroutine yields the task like a
-- command's process, so the scheduler keeps collecting finished commands
-- and starting new ones while the bytes are read. Returns the tree, or nil,
-- message, code.
function M.hash_tree(_, path)
  local task, err, code = engine.hash.start_tree(path)
  if not task then return nil, err, code end
  local tree, terr, tcode
  if coroutine.isyieldable() then
    tree, terr, tcode = coroutine.yield(task)
  else
    tree, terr, tcode = task:result()
  end
  task:close()
  return tree, terr, tcode
end

--- The bounded tail of a command's output, for receipts: the last 4 KiB
-- of stdout and of stderr, and how many bytes there were.
function M.output_tail(r)
  local out, err = r.stdout or "", r.stderr or ""
  return { stdout = out:sub(-4096), stderr = err:sub(-4096), bytes = #out + #err,
    truncated = #out > 4096 or #err > 4096 }
end

--- A status command for op's canister (inside its coroutine).
function M:status(op)
  return self:command(op, "status", { canister = op.canister })
end

-- {=== operations ===}

--- Claims op durably before its effect. extra: what the claim records
-- (a snapshot's baseline inventory, an upload's staged digest...).
--
-- Inside schedule() the claim is written without a sync, and op's first
-- command (x:command) waits until the scheduler has synced the journal:
-- the claims of every operation started in one pass share one fdatasync
-- (group commit). Outside it, the claim is synced at once. Either way no
-- icp command of op starts before its claim is durable (x:before_effect,
-- which x:command calls and a kind whose effect is something else calls
-- itself).
function M:claim(op, extra)
  local rec = { t = "claim", op = op.id, kind = op.kind, attempt = self.state.attempt }
  for k, v in pairs(extra or {}) do rec[k] = v end
  if self.in_schedule then
    self:record_lazy(rec, op.id)
    self.unsynced[op.id] = true
  else
    self:record(rec, op.id)
  end
  self.claimed[op.id] = true
end

--- Whether op's effect (icp command `kind`) may have happened: it is
-- recorded, or claimed by an earlier run, or its command was started.
function M:may_have_run(op, kind)
  local o = self.state.ops[op.id]
  if not (o and o.state) then return false end
  if o.state ~= "pending" then return true end
  if not self.claimed[op.id] then return true end
  return (self.spawned[op.id] or {})[kind] == true
end

--- The state of op `id` when it completed ({state, claim, receipt, ...}),
-- else nil.
function M:completed(id)
  local o = self.state.ops[id]
  return o and o.state == "completed" and o or nil
end

--- Runs the effect of op (inside its coroutine) and records the outcome.
function M:execute(op)
  local o = self.state.ops[op.id]
  local kind = self.kinds[op.kind]
  local receipt, err = kind.run(self, op, o and o.state == "pending" and o or nil)
  return self:complete(op, receipt, err)
end

--- Records op's terminal state (or leaves it pending while a command of
-- it may still run).
function M:complete(op, receipt, err)
  local kind = self.kinds[op.kind]
  if err and err.code == "IN_FLIGHT" then
    -- Leave the claim pending: nothing is known until the command is gone.
    self.failures[#self.failures + 1] = { op = op.id, error = err }
    self:emit("operation-failed", { op = op.id, canister = op.canister, code = err.code, message = err.message })
    return
  end
  if receipt and self.keep_output and self.outputs[op.id] then receipt.output = self.outputs[op.id] end
  local rec = { t = "done", op = op.id, kind = op.kind, attempt = self.state.attempt }
  if err then
    rec.state = "failed"
    rec.error = { code = err.code or "EFAILED", message = err.message, ic = err.ic, stderr_tail = err.stderr_tail }
  else
    rec.state = "completed"
    rec.receipt = receipt
  end
  self:record_lazy(rec, op.id)
  if err then
    self.failures[#self.failures + 1] = { op = op.id, error = rec.error }
    self:emit("operation-failed", { op = op.id, canister = op.canister, code = rec.error.code,
      message = rec.error.message })
  else
    -- The bytes a transfer moved and a snapshot's size: what progress and
    -- summaries count.
    self:emit("operation-completed", { op = op.id, kind = op.kind, canister = op.canister,
      bytes = type(receipt) == "table" and math.type(receipt.bytes) == "integer" and receipt.bytes or nil,
      snapshot_bytes = type(receipt) == "table" and op.kind == "snapshot" and math.type(receipt.total_size) == "integer"
        and receipt.total_size or nil })
    self:release(op.id)
  end
  if kind.recorded then kind.recorded(self, op, err) end
end

--- Makes a failed (or adopted) operation runnable again: one durable
-- record, so that the next run sees it re-armed too.
function M:rearm(id)
  self:record({ t = "rearm", op = id, attempt = self.state.attempt }, id)
end

--- Runs f(self) inside a coroutine whose commands yield process handles,
-- waiting for each in turn (reconciliation runs one operation at a time).
function M:run_inline(f)
  local co = coroutine.create(f)
  local ok, handle = coroutine.resume(co, self)
  while true do
    if not ok then error(handle, 0) end
    if coroutine.status(co) == "dead" then return handle end
    if type(handle) ~= "userdata" then error("executor: a coroutine yielded " .. tostring(handle), 0) end
    ok, handle = coroutine.resume(co, handle:result())
  end
end

-- {=== reconciliation ===}

--- Settles every claimed-but-unrecorded operation from evidence, through
-- its kind's `reconcile(x, op, o)`, which completes it (x:complete) or
-- leaves the claim standing for the effect to run again. Raises
-- EINFLIGHT while a command of a dead run is still alive.
function M:reconcile()
  for _, op in ipairs(self.operations) do
    local o = self.state.ops[op.id]
    if o and o.state == "pending" then
      local busy = self:in_flight(op, true)
      if busy then
        errors.raise("EINFLIGHT", string.format("%s: a command started by an earlier run is still running (%s); "
          .. "wait for it to exit, then run again", op.id, busy))
      end
      local kind = self.kinds[op.kind]
      if kind.reconcile then
        self:emit("reconcile", { op = op.id })
        self:run_inline(function() return kind.reconcile(self, op, o) end)
      end
    end
  end
  self:flush()
end

--- The failed operations: re-armed when retry (or the kind says a retry
-- is always safe), else listed for the caller to refuse.
function M:rearm_failed(retry)
  local refused = {}
  for _, op in ipairs(self.operations) do
    local o = self.state.ops[op.id]
    if o and o.state == "failed" then
      local kind = self.kinds[op.kind]
      if retry or kind.always_retry then
        self:rearm(op.id)
        if kind.rearmed then kind.rearmed(self, op, o) end
      else
        refused[#refused + 1] = { op = op.id, error = o.error }
      end
    end
  end
  return refused
end

-- {=== interrupts ===}

--- The signal caught since the last clear, if any (SIGINT, SIGTERM, SIGHUP).
function M.pending_signal()
  local signals = engine.signals
  return signals and signals.pending() or nil
end

--- Runs f() with SIGINT, SIGTERM and SIGHUP caught by the engine (seen
-- by the scheduler at its next tick, never in the middle of a record),
-- and the earlier handlers back afterwards.
function M.with_signals(f)
  local signals = engine.signals
  if signals then signals.catch() end
  local ok, res = pcall(f)
  if signals then signals.release() end
  if not ok then error(res, 0) end
  return res
end

local function interrupted(name)
  return errors.new("EINTERRUPTED", "interrupted by " .. (name or "a signal"), { signal = name })
end

-- {=== scheduling ===}

-- A min-heap of plan indices: among the operations ready at once, the
-- first in the plan starts first, as a scan in plan order would.
local function heap_push(h, v)
  local i = #h + 1
  h[i] = v
  while i > 1 do
    local p = i // 2
    if h[p] <= v then break end
    h[i], h[p] = h[p], v
    i = p
  end
end

local function heap_pop(h)
  local top, n = h[1], #h
  local v = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local c = 2 * i
    if c > n then break end
    if c < n and h[c + 1] < h[c] then c = c + 1 end
    if v <= h[c] then break end
    h[i] = h[c]
    i = c
  end
  if n > 0 then h[i] = v end
  return top
end

-- The scheduler's ready queues, built once per schedule() from the state:
-- waiting[i] counts op i's dependencies not completed (a failed, pending
-- or absent one counts), dependents[id] lists the plan indices that wait
-- on id (once per edge), and queues[bucket] holds the indices whose count
-- is 0 and that may run (neither completed nor failed: a pending one runs
-- again from its claim). Every op and edge is looked at once here.
function M:ready_queues()
  local sched = { waiting = {}, dependents = {}, queues = {} }
  for _, op in ipairs(self.operations) do
    sched.queues[self.kinds[op.kind].bucket or "lifecycle"] = {}
  end
  for i, op in ipairs(self.operations) do
    self.examined = self.examined + 1
    local n = 0
    for _, a in ipairs(op.after or {}) do
      self.examined = self.examined + 1
      local d = self.state.ops[a]
      if not (d and d.state == "completed") then
        n = n + 1
        local list = sched.dependents[a]
        if not list then
          list = {}
          sched.dependents[a] = list
        end
        list[#list + 1] = i
      end
    end
    sched.waiting[i] = n
    local o = self.state.ops[op.id]
    if n == 0 and not (o and (o.state == "completed" or o.state == "failed")) then
      heap_push(sched.queues[self.kinds[op.kind].bucket or "lifecycle"], i)
    end
  end
  return sched
end

-- Called by complete() once id's completion is recorded: each dependent
-- waits on one dependency fewer, and is queued when none is left. The list
-- is consumed, so an edge is released at most once.
function M:release(id)
  local sched = self.sched
  local list = sched and sched.dependents[id]
  if not list then return end
  sched.dependents[id] = nil
  for _, i in ipairs(list) do
    self.examined = self.examined + 1
    local n = sched.waiting[i] - 1
    sched.waiting[i] = n
    if n == 0 then
      local op = self.operations[i]
      heap_push(sched.queues[self.kinds[op.kind].bucket or "lifecycle"], i)
    end
  end
end

--- Executes operations until all are done or one fails (the running ones
-- are finished first). Returns true, or false after a failure; raises
-- EINTERRUPTED on a signal (the running commands are killed first).
--
-- Cost: ready_queues() looks at every operation and dependency edge once
-- (O(N + E)); then each completion looks at its dependents once (O(E) in
-- all) and each start pops a ready queue (O(log N)); a tick never rescans
-- the plan, only the handles running (at most the sum of the limits).
-- self.examined counts the operations looked at, about 2(N + E).
--
-- Readiness is counted, not re-read: a dependency completed once stays so
-- for this call. Only a download that finds its snapshot a phantom turns
-- a completed operation failed, and it fails itself in the same step, so
-- nothing starts after it.
function M:schedule()
  local running = {} -- handle -> {co, op}
  local counts = {}
  for b in pairs(self.limits) do counts[b] = 0 end
  local function bucket(op) return self.kinds[op.kind].bucket or "lifecycle" end
  self.sched = self:ready_queues()
  self.in_schedule = true
  local _ <close> = setmetatable({}, { __close = function() self.in_schedule = false end })
  local queues = self.sched.queues
  -- Coroutines waiting for their claim to be durable (AWAIT_CLAIM).
  local awaiting = {}
  local function resume(co, op, ...)
    local ok, handle = coroutine.resume(co, ...)
    if not ok then
      counts[bucket(op)] = counts[bucket(op)] - 1
      for h in pairs(running) do h:close() end
      if errors.is(handle) then error(handle, 0) end
      error(errors.wrap(handle, debug.traceback(co, tostring(handle))), 0)
    end
    if coroutine.status(co) == "dead" then
      counts[bucket(op)] = counts[bucket(op)] - 1
    elseif handle == AWAIT_CLAIM then
      awaiting[#awaiting + 1] = { co = co, op = op }
    else
      running[handle] = { co = co, op = op }
    end
  end
  -- Group commit: one sync makes every claim of the pass durable, then
  -- each waiting operation spawns its command.
  local function commit_claims()
    while #awaiting > 0 do
      -- A journal that cannot sync ends the run as a failed record does
      -- (resume's error path): the running commands are closed first.
      local ok, err = pcall(self.flush, self)
      if not ok then
        for h in pairs(running) do h:close() end
        error(err, 0)
      end
      local batch = awaiting
      awaiting = {}
      for _, e in ipairs(batch) do resume(e.co, e.op) end
    end
  end
  local function stop_all(name)
    for h in pairs(running) do h:close() end
    running = {}
    local ok, e = pcall(self.flush, self)
    if not ok then error(e, 0) end
    error(interrupted(name), 0)
  end
  -- The next op to start: the first in plan order at the head of a queue
  -- whose bucket has room. Checked before every start, so that a failure
  -- (or the last step) seen in this pass stops the next start at once.
  local function next_ready()
    if #self.failures > 0 or (self.max_steps and self.started >= self.max_steps) then return nil end
    local best, bq
    for b, q in pairs(queues) do
      if q[1] and counts[b] < self.limits[b] and (not best or q[1] < best) then best, bq = q[1], q end
    end
    if not best then return nil end
    heap_pop(bq)
    return self.operations[best]
  end
  while true do
    local sig = M.pending_signal()
    if sig then stop_all(sig) end
    while true do
      local op = next_ready()
      if not op then break end
      self.examined = self.examined + 1
      -- Queued ops are neither completed nor failed when queued; a kind may
      -- still have settled one since.
      local o = self.state.ops[op.id]
      if not (o and (o.state == "completed" or o.state == "failed")) then
        self.started = self.started + 1
        counts[bucket(op)] = counts[bucket(op)] + 1
        self:emit("operation-started", { op = op.id, kind = op.kind, canister = op.canister })
        resume(coroutine.create(function() return self:execute(op) end), op)
      end
    end
    commit_claims()
    local handles = {}
    for h in pairs(running) do handles[#handles + 1] = h end
    if #handles == 0 then break end
    local done = engine.proc.wait_any(handles)
    if not done then stop_all(M.pending_signal()) end
    -- Everything that finished in this tick. Their terminal records are
    -- made durable by the next claim (an append syncs the journal, and
    -- with it every record before it) or by the flush when the run ends:
    -- a record lost to a crash before then leaves its claim pending, which
    -- the next run reconciles from evidence, as after a crash between an
    -- effect and its record.
    repeat
      local entry = running[done]
      running[done] = nil
      for i, h in ipairs(handles) do
        if h == done then table.remove(handles, i) break end
      end
      resume(entry.co, entry.op, done:result())
      done = #handles > 0 and engine.proc.wait_any(handles, 0) or nil
    until not done
  end
  self:flush()
  self.sched = nil
  return #self.failures == 0
end

-- {=== containment ===}

--- The canisters this run stopped (a stop claimed or completed, or failed
-- while the canister reports stopped), was running before, and has not
-- started again.
function M:stopped_by_us()
  local out = {}
  for _, op in ipairs(self.operations) do
    if op.kind == "stop" then
      local o = self.state.ops[op.id]
      local start = self.state.ops["start-" .. op.canister]
      local stopped = o and (o.state == "completed" or o.state == "pending")
      if o and o.state == "failed" then
        -- A stop that reported failure may still have stopped the canister
        -- (CT-01): the canister's status decides.
        local st = self.driver:run("status", { canister = op.canister })
        stopped = st ~= nil and st.status ~= "running"
      end
      local started = start and start.state == "completed"
      if stopped and not started and self.was_running(op.canister) then out[#out + 1] = op.canister end
    end
  end
  return out
end

--- Starts again what this run stopped (see stopped_by_us), each start
-- proved by the canister's status. Best effort on a broken journal: the
-- canisters are started even when their records cannot be written.
-- Returns started, failed (texts), and the journal error if any.
function M:contain(reason)
  local targets = self:stopped_by_us()
  local started, failed = {}, {}
  if #targets == 0 then return started, failed end
  -- Claimed before the starts: a crash among them still leaves the attempt
  -- contained, so the next run re-quiesces and restarts everything.
  local jok, jerr = pcall(self.record, self, { t = "contained", attempt = self.state.attempt, reason = reason,
    targets = json.array(targets) }, "contain")
  for _, cid in ipairs(targets) do
    local _, err = self.driver:run("start", { canister = cid })
    local st = not err and self.driver:run("status", { canister = cid })
    if err then
      failed[#failed + 1] = cid .. ": " .. err.message
    elseif not st or st.status ~= "running" then
      failed[#failed + 1] = cid .. ": icp reported the start, but the canister is "
        .. (st and tostring(st.status) or "of unknown status")
    else
      started[#started + 1] = cid
    end
  end
  if jok then
    jok, jerr = pcall(self.record, self, { t = "containment", attempt = self.state.attempt,
      started = json.array(started), failed = json.array(failed) }, "contain")
  end
  self:emit("contained", { attempt = self.state.attempt, started = started, failed = failed })
  return started, failed, not jok and jerr or nil
end

--- Runs body(self) with containment as its `finally`: on any error
-- (icp failure, journal or disk failure, internal error, interrupt) the
-- canisters this run stopped are started again, unless a command of a dead
-- run is still in flight (nothing is known then) or the client's
-- may_contain says no. The error is re-raised as a registry error whose
-- message says what containment did.
function M:guard(body)
  local tb
  local ok, res = xpcall(body, function(e)
    tb = debug.traceback(tostring(e), 2)
    return e
  end, self)
  if ok then return res end
  local e = errors.wrap(res, tb)
  if e.code == "EINFLIGHT" or e.contained ~= nil then error(e, 0) end
  local allowed_ok, allowed = pcall(self.may_contain, self)
  if not allowed_ok or not allowed then
    e.contained = false
    error(e, 0)
  end
  local cok, started, failed, jerr = pcall(self.contain, self, e.code .. ": " .. e.message)
  e.contained = true
  if not cok then
    e.message = e.message .. "\nand starting the stopped canisters again failed: " .. tostring(errors.wrap(started))
  else
    e.restarted = started
    if #started > 0 then
      e.message = e.message .. string.format("\n%d canister(s) this run stopped were started again", #started)
    end
    if #failed > 0 then
      -- Both causes: the operator must know some canisters stay stopped (CT-03).
      e.message = e.message .. "\nand starting stopped canisters again failed:\n  " .. table.concat(failed, "\n  ")
      e.still_stopped = failed
    end
    if jerr then
      e.message = e.message .. "\n(the journal could not record the containment: "
        .. tostring(errors.wrap(jerr).message) .. ")"
    end
  end
  error(e, 0)
end

return M
