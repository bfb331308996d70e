-- Phase barriers (issue #10): the barrier kind the executor runs, the
-- builder's barrier, plans linear in the fleet, check_plan's refusals over
-- a graph with barriers, and the builder outside the instruction budget.
local executor = require "fleetsnap.exec.executor"
local exec_state = require "fleetsnap.exec.state"
local lifecycle = require "fleetsnap.exec.lifecycle"
local operations = require "fleetsnap.restore.operations"
local policy = require "fleetsnap.policy"
local principal = require "fleetsnap.principal"
local sandbox = require "fleetsnap.sandbox"
local helpers = require "helpers"

-- A selection of n members at depths 1..3: one at the top, about sqrt(n)
-- below it, the rest below those.
local function selection(n)
  local out, k = {}, math.max(2, math.floor(math.sqrt(n)))
  local function pid(i) return principal.canister_id(5000 + i) end
  for i = 1, n do
    local depth = i == 1 and 1 or (i <= k and 2 or 3)
    local parent = depth == 2 and pid(1) or depth == 3 and pid(2 + i % (k - 1)) or nil
    out[i] = { canister_id = pid(i), role = "r", parent = parent, depth = depth }
  end
  return out
end

-- Total `after` entries of a plan: what its size grows with.
local function edges(ops)
  local n = 0
  for _, op in ipairs(ops) do n = n + #op.after end
  return n
end

-- A policy from source, loaded through a file as any other.
local function policy_of(source)
  local path = helpers.tmpdir() .. "/p.lua"
  helpers.write(path, source)
  return assert(policy.load(path))
end

-- An executor over a fresh journal whose `step` kind records the order
-- operations complete in and fails the ids in `fail`; the driver refuses
-- every call (a barrier makes none).
local function run(ops, fail)
  local dir = helpers.tmpdir()
  local j, st = exec_state.open(dir .. "/journal")
  local order = {}
  local step = { bucket = "lifecycle", run = function(x, op)
    x:claim(op)
    if fail and fail[op.id] then return nil, { code = "EFAILED", message = op.id .. " failed" } end
    return { ok = true }
  end }
  local driver = setmetatable({}, { __index = function(_, k) error("driver." .. k .. " called") end })
  local x = executor.new({ dir = dir, journal = j, state = st, operations = ops, driver = driver,
    kinds = { step = step, barrier = lifecycle.barrier }, limits = { lifecycle = 4, transfer = 1 },
    events = function(e) if e.type == "operation-completed" then order[#order + 1] = e.op end end })
  local ok = x:schedule()
  j:close()
  local pos = {}
  for i, id in ipairs(order) do pos[id] = i end
  return ok, pos, st
end

describe("lifecycle.barrier", function()
  local ops = {
    { id = "a", kind = "step", canister = "x", after = {} },
    { id = "b", kind = "step", canister = "y", after = {} },
    { id = "barrier-ab", kind = "barrier", after = { "a", "b" } },
    { id = "c", kind = "step", canister = "x", after = { "barrier-ab" } },
  }

  it("completes only after everything it waits on", function()
    local ok, pos = run(ops)
    assert.is_true(ok)
    assert.is_true(pos["barrier-ab"] > pos.a)
    assert.is_true(pos["barrier-ab"] > pos.b)
  end)

  it("holds back what waits on it until it completes", function()
    local _, pos = run(ops)
    assert.is_true(pos.c > pos["barrier-ab"])
  end)

  it("never completes, nor lets its dependents run, when something before it fails", function()
    local ok, pos, st = run(ops, { b = true })
    assert.is_false(ok)
    assert.is_nil(pos["barrier-ab"])
    assert.is_nil(st.ops["barrier-ab"])
    assert.is_nil(st.ops.c)
  end)

  it("records a receipt and no icp call", function()
    local _, _, st = run(ops)
    assert.equal("completed", st.ops["barrier-ab"].state)
    assert.is_number(st.ops["barrier-ab"].receipt.passed_at)
  end)
end)

describe("plan:barrier", function()
  local function build(plan_body, sel)
    return policy.build(policy_of("return { name = 't', leaves_stopped = true, plan = function(selection, plan) "
      .. plan_body .. " end }"), sel or selection(4))
  end

  it("returns the id barrier-<name>, an operation on no canister", function()
    local ops = assert(build([[
      local stops = {}
      for i, m in ipairs(selection) do stops[i] = plan:stop(m) end
      local b = plan:barrier("stopped", { after = stops })
      assert(b == "barrier-stopped")
      for _, m in ipairs(selection) do plan:download(m, { after = { plan:snapshot(m, { after = { b } }) } }) end
    ]]))
    for _, op in ipairs(ops) do
      if op.kind == "barrier" then
        assert.equal("barrier-stopped", op.id)
        assert.is_nil(op.canister)
        assert.equal(4, #op.after)
      end
    end
  end)

  it("refuses a dependency on an unknown operation", function()
    local ops, err, code = build('plan:barrier("x", { after = { "stop-nobody" } })')
    assert.is_nil(ops)
    assert.equal("EPOLICY", code)
    assert.matches("barrier%-x depends on unknown operation stop%-nobody", err)
  end)

  it("refuses the same name twice", function()
    local _, err = build('plan:barrier("x") plan:barrier("x")')
    assert.matches("operation barrier%-x added twice", err)
  end)

  it("refuses a name that is not letters, digits, - or _", function()
    local _, err = build('plan:barrier("a b")')
    assert.matches("a barrier needs a name", err)
  end)
end)

describe("plan size", function()
  for _, name in ipairs({ "consistent", "directory", "rolling", "hold", "sequential" }) do
    it("is linear in the fleet for " .. name .. " at 1,000 members", function()
      local ops = assert(policy.build(assert(policy.load(name)), selection(1000)))
      assert.is_true(#ops <= 4 * 1000 + 10)
      assert.is_true(edges(ops) <= 2 * #ops)
    end)
  end

  it("is linear in the fleet for a restore at 1,000 members", function()
    local rows = {}
    for i = 1, 1000 do
      rows[i] = { target = "t" .. i, parent = i > 1 and "t" .. (i // 2) or nil, steps = { upload = true, stop = true,
        snapshot = true, load = true, verify_data = true, start = true, verify = true, delete = true } }
    end
    local ops = operations.build(rows)
    assert.is_true(#ops <= 8 * 1000 + 10)
    assert.is_true(edges(ops) <= 3 * #ops)
  end)

  it("lets the default policy plan 10,000 members under the default budget", function()
    local ops, err = policy.build(assert(policy.load("consistent")), selection(10000))
    assert.is_table(ops, err)
    assert.is_true(edges(ops) <= 8 * #ops)
  end)
end)

describe("check_plan", function()
  local function refusal(plan_body, opts)
    local ops, err, code = policy.build(policy_of("return { name = 't', " .. ((opts or {}).leaves_stopped and
      "leaves_stopped = true, " or "") .. "plan = function(selection, plan) " .. plan_body .. " end }"), selection(4))
    assert.is_nil(ops)
    assert.equal("EPOLICY", code)
    return err
  end

  it("refuses a snapshot that waits on a barrier its stop is not behind", function()
    assert.matches("snapshot of .* must come after its stop", refusal([[
      local stops = {}
      for i = 2, #selection do stops[#stops + 1] = plan:stop(selection[i]) end
      local b = plan:barrier("stopped", { after = stops })
      plan:stop(selection[1])
      for _, m in ipairs(selection) do
        local s = plan:snapshot(m, { after = { b } })
        plan:start(m, { after = { s } })
        plan:download(m, { after = { s } })
      end
    ]]))
  end)

  it("refuses a snapshot placed before its stop in one chain", function()
    local want = "snapshot of " .. selection(4)[1].canister_id .. " must come after its stop"
    assert.truthy(refusal([[
      local last = plan:stop(selection[2])
      last = plan:snapshot(selection[1], { after = { last } })
      last = plan:stop(selection[1], { after = { last } })
      for i = 3, #selection do last = plan:stop(selection[i], { after = { last } }) end
      for i = 2, #selection do last = plan:snapshot(selection[i], { after = { last } }) end
      for _, m in ipairs(selection) do last = plan:download(m, { after = { last } }) end
    ]], { leaves_stopped = true }):find(want, 1, true))
  end)

  it("accepts the same chain with the stop first", function()
    local ops = policy.build(policy_of([[return { name = "t", leaves_stopped = true, plan = function(selection, plan)
      local last = plan:stop(selection[2])
      last = plan:stop(selection[1], { after = { last } })
      last = plan:snapshot(selection[1], { after = { last } })
      for i = 3, #selection do last = plan:stop(selection[i], { after = { last } }) end
      for i = 2, #selection do last = plan:snapshot(selection[i], { after = { last } }) end
      for _, m in ipairs(selection) do last = plan:download(m, { after = { last } }) end
    end }]]), selection(4))
    assert.is_table(ops)
  end)

  it("refuses a start that is not behind its snapshot", function()
    assert.matches("start of .* must come after its snapshot", refusal([[
      local stopped = plan:barrier("stopped", { after = plan:stop_by_level() })
      for _, m in ipairs(selection) do
        local s = plan:snapshot(m, { after = { stopped } })
        plan:start(m, { after = { stopped } })
        plan:download(m, { after = { s } })
      end
    ]]))
  end)

  it("refuses a download that is not behind its snapshot", function()
    assert.matches("download of .* must come after its snapshot", refusal([[
      local stopped = plan:barrier("stopped", { after = plan:stop_by_level() })
      for _, m in ipairs(selection) do plan:snapshot(m, { after = { stopped } }) end
      for _, m in ipairs(selection) do plan:download(m, { after = { stopped } }) end
    ]], { leaves_stopped = true }))
  end)

  it("refuses a member without a stop", function()
    assert.matches("no stop operation for", refusal([[
      for _, m in ipairs(selection) do plan:download(m, { after = { plan:snapshot(m) } }) end
    ]], { leaves_stopped = true }))
  end)

  it("refuses a member without a start unless the policy leaves the selection stopped", function()
    assert.matches("no start operation for", refusal([[
      local stopped = plan:barrier("stopped", { after = plan:stop_by_level() })
      for _, m in ipairs(selection) do plan:download(m, { after = { plan:snapshot(m, { after = { stopped } }) } }) end
    ]]))
  end)

  it("refuses a dependency cycle made by changing the builder's operations", function()
    assert.matches("dependency cycle", refusal([[
      local stopped = plan:barrier("stopped", { after = plan:stop_by_level() })
      for _, m in ipairs(selection) do plan:download(m, { after = { plan:snapshot(m, { after = { stopped } }) } }) end
      plan.ops[1].after = { "barrier-stopped" }
    ]], { leaves_stopped = true }))
  end)

  it("refuses a dependency on an unknown operation made by changing the builder's operations", function()
    assert.matches("depends on unknown operation nowhere", refusal([[
      local stopped = plan:barrier("stopped", { after = plan:stop_by_level() })
      for _, m in ipairs(selection) do plan:download(m, { after = { plan:snapshot(m, { after = { stopped } }) } }) end
      plan.ops[1].after = { "nowhere" }
    ]], { leaves_stopped = true }))
  end)
end)

describe("sandbox.metered", function()
  local function spin(n) local x = 0 for i = 1, n do x = x + i end return x end

  it("runs the wrapped function outside the budget", function()
    local f = sandbox.metered(spin)
    assert.same({ true, 50005000 }, { sandbox.call(5000, f, 10000) })
  end)

  it("charges each call the cost it declares", function()
    local f = sandbox.metered(function() end, function(n) return n end)
    local ok, _, code = sandbox.call(5000, f, 10000)
    assert.is_false(ok)
    assert.equal("EBUDGET", code)
  end)

  it("ends a loop of calls with the budget", function()
    local f = sandbox.metered(function() end)
    local ok, _, code = sandbox.call(5000, function() while true do f() end end)
    assert.is_false(ok)
    assert.equal("EBUDGET", code)
  end)

  it("passes the wrapped function's error on", function()
    local f = sandbox.metered(function() error("mine", 0) end)
    assert.same({ false, "mine" }, { sandbox.call(5000, f) })
  end)

  it("calls the function as it is outside a budgeted call", function()
    assert.equal(55, sandbox.metered(spin)(10))
  end)
end)
