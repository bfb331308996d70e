--- The executor's scheduler over fake commands: a kind's effect yields a
-- fake handle and engine.proc.wait_any is stubbed to finish the oldest
-- running one per tick, so that order and counts are deterministic and
-- nothing is spawned.
local engine = require "fleetsnap.engine"
local executor = require "fleetsnap.exec.executor"
local exec_state = require "fleetsnap.exec.state"

-- A journal in memory: records kept, syncs counted.
local function fake_journal()
  local j = { records = {}, syncs = 0 }
  function j:append(rec)
    self.records[#self.records + 1] = rec
    self.syncs = self.syncs + 1
    return true
  end
  function j:write(rec)
    self.records[#self.records + 1] = rec
    return true
  end
  function j:sync()
    self.syncs = self.syncs + 1
    return true
  end
  return j
end

local seq = 0
local closed = {}

local function fake_handle(op)
  seq = seq + 1
  local h = { seq = seq, op = op }
  function h:close() closed[self.op.id] = true end
  function h:result() return { status = self.op.fail and 1 or 0 } end
  return h
end

-- An effect: a claim, then one fake command (as x:command does, it
-- first waits for the claim to be durable).
local function effect(x, op, pending)
  if not pending then x:claim(op) end
  x:before_effect(op)
  local r = coroutine.yield(fake_handle(op))
  if r.status ~= 0 then return nil, { code = "EFAILED", message = op.id .. " failed" } end
  return { pending = pending ~= nil }
end

local KINDS = {
  work = { bucket = "lifecycle", run = effect },
  move = { bucket = "transfer", run = effect },
  -- Like a barrier: no canister, no command, done as soon as it starts.
  barrier = { bucket = "lifecycle", run = function() return {} end },
}

local function op(id, kind, after, extra)
  local o = { id = id, kind = kind, after = after or {} }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

--- Stops, a barrier on all of them, a snapshot of each after it, and a
-- download of each snapshot: consistent's shape with one fan-in op.
local function fan_in_plan(n)
  local ops, stops = {}, {}
  for i = 1, n do
    ops[#ops + 1] = op("stop-" .. i, "work")
    stops[i] = "stop-" .. i
  end
  ops[#ops + 1] = op("stopped", "barrier", stops)
  for i = 1, n do ops[#ops + 1] = op("snapshot-" .. i, "work", { "stopped" }) end
  for i = 1, n do ops[#ops + 1] = op("download-" .. i, "move", { "snapshot-" .. i }) end
  return ops
end

local function edges(ops)
  local e = 0
  for _, o in ipairs(ops) do e = e + #o.after end
  return e
end

-- An executor over ops; events are logged in x.log.
local function new_x(ops, opts)
  opts = opts or {}
  local log = {}
  local x = executor.new({
    dir = "/nonexistent", journal = fake_journal(), state = opts.state or exec_state.empty(),
    operations = ops, kinds = KINDS, driver = {}, limits = opts.limits or { lifecycle = 2, transfer = 1 },
    events = function(e) log[#log + 1] = e end, max_steps = opts.max_steps,
  })
  x.log = log
  return x
end

local function started(x)
  local out = {}
  for _, e in ipairs(x.log) do
    if e.type == "operation-started" then out[#out + 1] = e.op end
  end
  return out
end

local real_wait_any, real_pending_signal

before_each(function()
  seq, closed = 0, {}
  real_wait_any, real_pending_signal = engine.proc.wait_any, executor.pending_signal
  -- The oldest running command finishes, one per tick.
  engine.proc.wait_any = function(handles, timeout)
    if timeout == 0 then return nil end
    local best
    for _, h in ipairs(handles) do
      if not best or h.seq < best.seq then best = h end
    end
    return best
  end
end)

after_each(function()
  engine.proc.wait_any, executor.pending_signal = real_wait_any, real_pending_signal
end)

describe("executor:schedule", function()
  it("runs every operation of the plan once", function()
    local ops = fan_in_plan(5)
    local x = new_x(ops)
    assert.is_true(x:schedule())
    assert.equal(#ops, #started(x))
    for _, o in ipairs(ops) do assert.equal("completed", x.state.ops[o.id].state, o.id) end
  end)

  it("starts an operation only once all its dependencies completed", function()
    local ops = fan_in_plan(6)
    local x = new_x(ops, { limits = { lifecycle = 3, transfer = 2 } })
    assert.is_true(x:schedule())
    local done = {}
    for _, e in ipairs(x.log) do
      if e.type == "operation-started" then
        for _, a in ipairs(x.by_id[e.op].after) do assert.is_true(done[a] == true, e.op .. " before " .. a) end
      elseif e.type == "operation-completed" then
        done[e.op] = true
      end
    end
  end)

  it("starts the operations ready at once in plan order", function()
    local ops = { op("c", "work"), op("a", "work"), op("d", "work", { "b" }), op("b", "work") }
    local x = new_x(ops, { limits = { lifecycle = 1, transfer = 1 } })
    assert.is_true(x:schedule())
    assert.same({ "c", "a", "b", "d" }, started(x))
  end)

  it("keeps plan order within each bucket across many operations ready at once", function()
    local ops, moves, works = {}, {}, {}
    for i = 1, 40 do
      local id = string.format("%02d-%02d", (i * 7) % 40, i) -- ids out of order: the plan's order counts
      local kind = i % 3 == 0 and "move" or "work"
      ops[i] = op(id, kind)
      local list = kind == "move" and moves or works
      list[#list + 1] = id
    end
    -- One lifecycle op at a time, every transfer op at once: the first
    -- lifecycle op, then every transfer op, then the other lifecycle ops.
    local want = { works[1] }
    for _, id in ipairs(moves) do want[#want + 1] = id end
    for i = 2, #works do want[#want + 1] = works[i] end
    local x = new_x(ops, { limits = { lifecycle = 1, transfer = 40 } })
    assert.is_true(x:schedule())
    assert.same(want, started(x))
  end)

  it("starts operations that became ready out of plan order in plan order", function()
    -- d1 waits on g20, ..., d20 on g1: the gates finish g1 first, so the
    -- d's queue up from d20 down to d1 behind the one transfer slot.
    local ops, want = {}, {}
    for i = 1, 20 do ops[i] = op("d" .. i, "move", { "g" .. (21 - i) }) end
    for i = 1, 20 do
      ops[20 + i] = op("g" .. i, "work")
      want[i] = "g" .. i
    end
    want[21] = "d20"
    for i = 1, 19 do want[21 + i] = "d" .. i end
    local x = new_x(ops, { limits = { lifecycle = 20, transfer = 1 } })
    assert.is_true(x:schedule())
    assert.same(want, started(x))
  end)

  it("never runs more operations of a bucket at once than its limit, and reaches it", function()
    local ops = fan_in_plan(10)
    local x = new_x(ops, { limits = { lifecycle = 3, transfer = 2 } })
    assert.is_true(x:schedule())
    local now, most = { lifecycle = 0, transfer = 0 }, { lifecycle = 0, transfer = 0 }
    for _, e in ipairs(x.log) do
      local b = e.op and KINDS[x.by_id[e.op].kind].bucket
      if e.type == "operation-started" then
        now[b] = now[b] + 1
        most[b] = math.max(most[b], now[b])
      elseif e.type == "operation-completed" then
        now[b] = now[b] - 1
      end
    end
    assert.same({ lifecycle = 3, transfer = 2 }, most)
  end)

  it("starts no more than max_steps operations", function()
    local ops = fan_in_plan(4)
    local x = new_x(ops, { max_steps = 3 })
    assert.is_true(x:schedule())
    assert.same({ "stop-1", "stop-2", "stop-3" }, started(x))
    assert.is_nil(x.state.ops["stop-4"])
  end)

  it("starts nothing after the first failure and finishes the running operations", function()
    local ops = { op("a", "work", {}, { fail = true }), op("b", "work"), op("c", "work"), op("d", "work") }
    local x = new_x(ops)
    assert.is_false(x:schedule())
    assert.same({ "a", "b" }, started(x))
    assert.equal("failed", x.state.ops.a.state)
    assert.equal("completed", x.state.ops.b.state)
    assert.is_nil(x.state.ops.c)
    assert.equal(1, #x.failures)
  end)

  it("never runs a failed operation, nor one waiting on it", function()
    local ops = { op("a", "work"), op("b", "work", { "a" }), op("c", "work") }
    local st = exec_state.empty()
    exec_state.apply(st, { t = "claim", op = "a", kind = "work" })
    exec_state.apply(st, { t = "done", op = "a", state = "failed", error = { code = "EFAILED" } })
    local x = new_x(ops, { state = st })
    assert.is_true(x:schedule())
    assert.same({ "c" }, started(x))
  end)

  it("runs a pending operation again from its claim once its dependencies completed", function()
    local ops = { op("a", "work"), op("b", "work", { "a" }) }
    local st = exec_state.empty()
    exec_state.apply(st, { t = "claim", op = "b", kind = "work" })
    local x = new_x(ops, { state = st })
    assert.is_true(x:schedule())
    assert.same({ "a", "b" }, started(x))
    assert.is_true(x.state.ops.b.receipt.pending)
  end)

  it("does not run a completed operation again, and counts it as done for what waits on it", function()
    local ops = { op("a", "work"), op("b", "work", { "a" }) }
    local st = exec_state.empty()
    exec_state.apply(st, { t = "claim", op = "a", kind = "work" })
    exec_state.apply(st, { t = "done", op = "a", state = "completed", receipt = {} })
    local x = new_x(ops, { state = st })
    assert.is_true(x:schedule())
    assert.same({ "b" }, started(x))
  end)

  it("starts what waits on an operation that completes without a command", function()
    local ops = { op("b", "work", { "gate" }), op("gate", "barrier") }
    local x = new_x(ops)
    assert.is_true(x:schedule())
    assert.same({ "gate", "b" }, started(x))
  end)

  it("raises EINTERRUPTED on a signal seen at a tick and closes the running commands", function()
    local ticks = 0
    executor.pending_signal = function()
      ticks = ticks + 1
      return ticks >= 2 and "SIGTERM" or nil
    end
    local x = new_x({ op("a", "work"), op("b", "work"), op("c", "work") })
    local ok, e = pcall(x.schedule, x)
    assert.is_false(ok)
    assert.equal("EINTERRUPTED", e.code)
    assert.same({ "a", "b" }, started(x)) -- a finished at the first tick, then the signal
    assert.is_true(closed.b)
    assert.is_nil(x.state.ops.c)
  end)

  -- A journal that counts the records written since its last sync (an
  -- append syncs, as the engine's does), and each effect's count when it
  -- starts.
  local function counting(x)
    local c = { unsynced = 0, at_effect = {} }
    x.j.write = function(j, rec)
      c.unsynced = c.unsynced + 1
      j.records[#j.records + 1] = rec
      return true
    end
    x.j.append = function(j, rec)
      j.records[#j.records + 1] = rec
      c.unsynced = 0
      j.syncs = j.syncs + 1
      return true
    end
    x.j.sync = function(j)
      c.unsynced = 0
      j.syncs = j.syncs + 1
      return true
    end
    x.kinds = setmetatable({ work = { bucket = "lifecycle", run = function(ex, o, pending)
      if not pending then ex:claim(o) end
      ex:before_effect(o)
      c.at_effect[o.id] = c.unsynced
      coroutine.yield(fake_handle(o))
      return {}
    end } }, { __index = KINDS })
    return c
  end

  it("starts every effect with all earlier records durable (its claim syncs them)", function()
    local x = new_x({ op("a", "work"), op("b", "work", { "a" }), op("c", "work", { "b" }) })
    local c = counting(x)
    assert.is_true(x:schedule())
    assert.same({ a = 0, b = 0, c = 0 }, c.at_effect)
  end)

  it("makes the claims of the operations started in one pass durable with one sync", function()
    local x = new_x({ op("a", "work"), op("b", "work"), op("c", "work") }, { limits = { lifecycle = 3, transfer = 1 } })
    local c = counting(x)
    assert.is_true(x:schedule())
    assert.same({ a = 0, b = 0, c = 0 }, c.at_effect)
    -- One group commit for the three claims, and the flush at the end.
    assert.equal(2, x.j.syncs)
  end)

  it("closes the running commands and raises when the group commit cannot sync", function()
    local x = new_x({ op("a", "work"), op("b", "work"), op("c", "work") })
    local syncs = 0
    x.j.sync = function()
      syncs = syncs + 1
      if syncs == 2 then return nil, "fdatasync: No space left on device", "ENOSPC" end
      return true
    end
    local ok, e = pcall(x.schedule, x)
    assert.is_false(ok)
    assert.equal(2, syncs)
    assert.matches("No space left on device", e.message)
    -- a finished at the first tick; c's claim could not be made durable,
    -- so c never started its command, and b (still running) was closed.
    assert.same({ "a", "b", "c" }, started(x))
    assert.is_true(closed.b)
    assert.is_nil(closed.c)
  end)

  it("syncs a claim made outside schedule() at once", function()
    local x = new_x({ op("a", "work") })
    x:claim(x.operations[1])
    assert.equal(1, x.j.syncs)
    assert.is_nil(next(x.unsynced))
  end)

  it("gives a terminal record no sync of its own: the next claim covers it", function()
    local x = new_x({ op("a", "work"), op("b", "work", { "a" }), op("c", "work", { "b" }) })
    counting(x)
    assert.is_true(x:schedule())
    -- Three claims and the flush at the end; not one more per done record.
    assert.equal(4, x.j.syncs)
    local dones = 0
    for _, r in ipairs(x.j.records) do
      if r.t == "done" then dones = dones + 1 end
    end
    assert.equal(3, dones)
  end)

  it("leaves no record unsynced when the run ends", function()
    local x = new_x({ op("a", "work"), op("b", "work") })
    local c = counting(x)
    assert.is_true(x:schedule())
    assert.equal(0, c.unsynced)
  end)

  it("leaves no record unsynced when a signal ends the run", function()
    local ticks = 0
    executor.pending_signal = function()
      ticks = ticks + 1
      return ticks >= 2 and "SIGTERM" or nil
    end
    local x = new_x({ op("a", "work"), op("b", "work"), op("c", "work") })
    local c = counting(x)
    local ok, e = pcall(x.schedule, x)
    assert.is_false(ok)
    assert.equal("EINTERRUPTED", e.code)
    assert.equal(0, c.unsynced)
  end)
end)

describe("executor.examined", function()
  for _, n in ipairs({ 100, 1000 }) do
    it("stays within 4 times the operations plus edges of a fan-in plan of " .. (3 * n + 1) .. " operations",
      function()
        local ops = fan_in_plan(n)
        local x = new_x(ops, { limits = { lifecycle = 16, transfer = 4 } })
        assert.is_true(x:schedule())
        assert.equal(#ops, x.started)
        assert.is_true(x.examined <= 4 * (#ops + edges(ops)),
          string.format("%d examined for %d operations and %d edges", x.examined, #ops, edges(ops)))
      end)
  end
end)

describe("executor:hash_tree", function()
  local helpers = require "helpers"
  local dir
  before_each(function()
    engine.proc.wait_any = real_wait_any
    dir = helpers.tmpdir()
    helpers.sh("mkdir -p " .. dir .. "/t && head -c 100000 /dev/urandom > " .. dir .. "/t/f")
  end)
  after_each(function() helpers.cleanup() end)

  it("hashes while the scheduler keeps running other operations' commands", function()
    local flag = dir .. "/hashed"
    local kinds = {
      -- Its command can only end once the hash op has completed and made
      -- the flag: both ran at once, and the scheduler collected the hash
      -- while the process was still running. (Gives up after ~10 s.)
      wait = { bucket = "lifecycle", run = function(x, o)
        x:claim(o)
        local h = assert(engine.proc.spawn({ argv = { "sh", "-c",
          "i=0; while [ ! -e '" .. flag .. "' ]; do i=$((i+1)); [ $i -gt 1000 ] && exit 1; sleep 0.01; done" } }))
        local r = coroutine.yield(h)
        h:close()
        if r.status ~= 0 then return nil, { code = "EFAILED", message = "the flag never came" } end
        return {}
      end },
      hash = { bucket = "lifecycle", run = function(x, o)
        x:claim(o)
        local tree, err, code = x:hash_tree(dir .. "/t")
        if not tree then return nil, { code = code, message = err } end
        helpers.write(flag, "")
        return { digest = tree.digest }
      end },
    }
    local x = executor.new({
      dir = "/nonexistent", journal = fake_journal(), state = exec_state.empty(),
      operations = { op("w", "wait"), op("h", "hash") }, kinds = kinds, driver = {},
      limits = { lifecycle = 2 }, events = function() end,
    })
    assert.is_true(x:schedule())
    assert.equal("completed", x.state.ops.w.state)
    assert.equal(engine.hash.tree(dir .. "/t").digest, x.state.ops.h.receipt.digest)
  end)

  it("hashes synchronously outside a coroutine, and returns a failure as nil, message, code", function()
    local x = new_x({})
    assert.equal(engine.hash.tree(dir .. "/t").digest, x:hash_tree(dir .. "/t").digest)
    local tree, msg, code = x:hash_tree(dir .. "/none")
    assert.is_nil(tree)
    assert.equal("ENOENT", code, msg)
  end)
end)
