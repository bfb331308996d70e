-- Policies: finding bundled ones on the module path, loading files, the
-- sandbox, and the bundled policies planning a sample fleet.
local engine = require "fleetsnap.engine"
local principal = require "fleetsnap.principal"
local policy = require "fleetsnap.policy"
local helpers = require "helpers"

local BUNDLED = { "consistent", "directory", "hold", "rolling", "sequential" }

-- Seven members, three levels: 1 -> {2, 3}, 2 -> {4, 5}, 3 -> {6, 7}.
local function sample()
  local out = {}
  for i = 1, 7 do
    out[i] = { canister_id = principal.canister_id(100 + i), role = "r" .. i,
      parent = i > 1 and principal.canister_id(100 + i // 2) or nil,
      depth = i == 1 and 1 or (i <= 3 and 2 or 3) }
  end
  return out
end

-- A policy file with `source` in a fresh directory.
local function policy_file(source, name)
  local path = helpers.tmpdir() .. "/" .. (name or "p.lua")
  helpers.write(path, source)
  return path
end

local MINIMAL = 'return { name = "minimal", plan = function() end }'

-- The child runs under this budget: small, so that spending it is quick.
local CHILD_BUDGET = 100000

-- Loads the policy `source` in a child lua5.4 with policy.BUDGET lowered
-- and, unless `call` is "load", runs policy[call] (build, checks or
-- discover) over a one-member selection. A policy that escapes the budget
-- would run forever: the child's timeout turns that into a failing spec
-- instead of a hung suite. Returns {ok, n, err, code} from the child.
local function in_child(source, call)
  local path = policy_file(source)
  local code = string.format([[
    local json = require("fleetsnap.engine").json
    local policy = require "fleetsnap.policy"
    policy.BUDGET = %d
    local function report(res, err, code)
      io.write(json.encode({ ok = res ~= nil, n = type(res) == "table" and #res or json.null,
        err = err or json.null, code = code or json.null }))
    end
    local p, err, code = policy.load(%q)
    if not p or %q == "load" then return report(p, err, code) end
    local selection = { { canister_id = "aaaaa-aa", role = "root", depth = 1 } }
    if %q == "build" then return report(policy.build(p, selection)) end
    if %q == "checks" then return report(policy.checks(p, selection)) end
    return report(policy.discover(p, {}))
  ]], CHILD_BUDGET, path, call, call, call)
  local r = assert(engine.proc.run({ argv = { "lua5.4", "-e", code },
    env = { LUA_PATH = package.path, LUA_CPATH = package.cpath }, timeout_ms = 20000 }))
  assert(not r.timed_out, "the policy escaped its instruction budget (the child ran until its timeout)")
  assert(r.status == 0, r.stderr)
  return assert(engine.json.decode(r.stdout))
end

-- A policy whose plan runs `body` and then plans every member (stop,
-- snapshot, start, download).
local function planning(body)
  return string.format([[return { name = "p", plan = function(selection, plan)
    %s
    for _, m in ipairs(selection) do
      local s = plan:snapshot(m, { after = { plan:stop(m) } })
      plan:start(m, { after = { s } })
      plan:download(m, { after = { s } })
    end
  end }]], body)
end

local OVER = "instruction budget of " .. CHILD_BUDGET .. " exceeded"

-- Asserts that the child's call failed on the budget.
local function assert_over(res, prefix)
  assert.is_false(res.ok)
  assert.equal("EPOLICY", res.code)
  assert.equal(prefix .. OVER, res.err)
end

describe("policy.load", function()
  after_each(function() helpers.cleanup() end)

  it("finds a bundled policy by name on the Lua module path", function()
    local p = assert(policy.load("consistent"))
    assert.equal("consistent", p.name)
    assert.equal(package.searchpath("fleetsnap.policies.consistent", package.path), p.path)
    assert.matches("/fleetsnap/policies/consistent%.lua$", p.path)
  end)

  it("records the bundled policy's source text and its digest", function()
    local p = assert(policy.load("consistent"))
    assert.equal(helpers.read(p.path), p.source)
    assert.equal(engine.hash.sha256(p.source), p.sha256)
  end)

  it("reads a bundled policy into the sandbox instead of requiring it", function()
    assert(policy.load("rolling"))
    assert.is_nil(package.loaded["fleetsnap.policies.rolling"])
  end)

  it("loads a policy file by path", function()
    local path = policy_file(MINIMAL)
    local p = assert(policy.load(path))
    assert.equal("minimal", p.name)
    assert.equal(path, p.path)
    assert.equal(MINIMAL, p.source)
  end)

  it("takes a name ending in .lua as a file, not a bundled name", function()
    local p, err, code = policy.load("consistent.lua")
    assert.is_nil(p)
    assert.equal("ENOTFOUND", code)
    assert.matches("consistent.lua", err, 1, true)
    assert.is_nil(err:find("no bundled policy", 1, true))
  end)

  it("refuses an unknown name as not found (ENOTFOUND), naming it and the bundled ones", function()
    local p, err, code = policy.load("no-such-policy")
    assert.is_nil(p)
    assert.equal("ENOTFOUND", code)
    assert.matches("policy no-such-policy: no bundled policy of that name", err, 1, true)
    assert.matches("consistent, directory, hold, rolling, sequential", err, 1, true)
  end)

  it("does not turn the dots of a name into directories", function()
    local p, err, code = policy.load("..consistent")
    assert.is_nil(p)
    assert.equal("ENOTFOUND", code)
    assert.matches("no bundled policy", err, 1, true)
  end)

  it("refuses a missing name", function()
    local p, err, code = policy.load("")
    assert.is_nil(p)
    assert.equal("EPOLICY", code)
    assert.matches("name or a file", err, 1, true)
  end)

  it("refuses a missing file as not found (ENOTFOUND), naming it", function()
    local path = helpers.tmpdir() .. "/absent.lua"
    local p, err, code = policy.load(path)
    assert.is_nil(p)
    assert.equal("ENOTFOUND", code)
    assert.matches(path, err, 1, true)
  end)

  it("refuses a binary chunk", function()
    local path = policy_file(string.dump(function() return { name = "bin", plan = function() end } end))
    local p, err, code = policy.load(path)
    assert.is_nil(p)
    assert.equal("EPOLICY", code)
    assert.matches("binary chunks are refused", err, 1, true)
  end)

  it("refuses a file that does not compile", function()
    local p, err, code = policy.load(policy_file("return {"))
    assert.is_nil(p)
    assert.equal("EPOLICY", code)
    assert.matches("expected", err, 1, true)
  end)

  it("refuses a policy without a name and a plan function", function()
    local p, err, code = policy.load(policy_file('return { name = "x" }'))
    assert.is_nil(p)
    assert.equal("EPOLICY", code)
    assert.matches("must return a table with name and plan", err, 1, true)
  end)

  it("gives the policy no os, io, require, load, debug or coroutine", function()
    local p = assert(policy.load(policy_file([[
      return { name = "probe", plan = function() end,
        seen = { os = os, io = io, require = require, load = load, debug = debug, coroutine = coroutine,
          dofile = dofile, setmetatable = setmetatable, rawset = rawset, collectgarbage = collectgarbage } }]])))
    assert.same({}, p.seen)
  end)

  it("fails a main chunk that spends its instruction budget", function()
    local res = in_child('while true do pcall(function() while true do end end) end return {}', "load")
    assert.is_false(res.ok)
    assert.equal("EPOLICY", res.code)
    assert.matches(": " .. OVER .. "$", res.err)
  end)

  it("refuses a policy whose main chunk raises, with the error", function()
    local p, err, code = policy.load(policy_file('os.execute("true") return {}'))
    assert.is_nil(p)
    assert.equal("EPOLICY", code)
    assert.matches("os", err, 1, true)
  end)
end)

describe("policy.bundled", function()
  local saved_path
  before_each(function() saved_path = package.path end)
  after_each(function()
    package.path = saved_path
    helpers.cleanup()
  end)

  it("lists the bundled policies", function()
    assert.same(BUNDLED, policy.bundled())
  end)

  it("lists the directory where the module path finds the default policy", function()
    local root = helpers.tmpdir()
    helpers.sh("mkdir -p " .. root .. "/fleetsnap/policies")
    helpers.write(root .. "/fleetsnap/policies/consistent.lua", MINIMAL)
    helpers.write(root .. "/fleetsnap/policies/extra.lua", MINIMAL)
    helpers.write(root .. "/fleetsnap/policies/notes.txt", "not a policy")
    package.path = root .. "/?.lua"
    assert.same({ "consistent", "extra" }, policy.bundled())
    assert.equal(root .. "/fleetsnap/policies/extra.lua", assert(policy.load("extra")).path)
  end)

  it("lists nothing, and loads no name, when the policies are not on the module path", function()
    package.path = helpers.tmpdir() .. "/?.lua"
    assert.same({}, policy.bundled())
    local p, err, code = policy.load("consistent")
    assert.is_nil(p)
    assert.equal("ENOTFOUND", code)
    assert.matches("none installed", err, 1, true)
  end)
end)

describe("policy.build", function()
  for _, name in ipairs(BUNDLED) do
    it("plans a sample fleet with the bundled policy " .. name, function()
      local p = assert(policy.load(name))
      local ops = assert(policy.build(p, sample()))
      local kinds = {}
      for _, op in ipairs(ops) do kinds[op.kind] = (kinds[op.kind] or 0) + 1 end
      assert.equal(7, kinds.stop)
      assert.equal(7, kinds.snapshot)
      assert.equal(7, kinds.download)
      if p.leaves_stopped then
        assert.is_nil(kinds.start)
      else
        assert.equal(7, kinds.start)
      end
    end)
  end

  it("refuses a plan that snapshots before stopping", function()
    local p = assert(policy.load(policy_file([[return { name = "bad", plan = function(sel, plan)
      for _, m in ipairs(sel) do
        local s = plan:snapshot(m)
        plan:stop(m, { after = { s } })
        plan:start(m, { after = { s } })
        plan:download(m, { after = { s } })
      end
    end }]])))
    local ops, err, code = policy.build(p, sample())
    assert.is_nil(ops)
    assert.equal("EPOLICY", code)
    assert.matches("must come after its stop", err, 1, true)
  end)

  describe("instruction budget", function()
    after_each(function() helpers.cleanup() end)

    it("fails a plan that loops forever", function()
      assert_over(in_child(planning("while true do end"), "build"), "policy p: ")
    end)

    it("cannot be caught by a pcall in a loop", function()
      assert_over(in_child(planning("while true do pcall(function() while true do end end) end"), "build"),
        "policy p: ")
    end)

    it("cannot be caught by nested pcalls", function()
      assert_over(in_child(planning([[
        while true do
          pcall(function()
            pcall(pcall, function() while true do end end)
            while true do end
          end)
        end]]), "build"), "policy p: ")
    end)

    it("cannot be swallowed by an xpcall message handler", function()
      assert_over(in_child(planning([[
        while true do xpcall(function() while true do end end, function() return "fine" end) end]]), "build"),
        "policy p: ")
    end)

    it("does not let an xpcall message handler loop on the budget error", function()
      assert_over(in_child(planning("xpcall(function() while true do end end, function() while true do end end)"),
        "build"), "policy p: ")
    end)

    it("stops a message handler that loops on the policy's own error", function()
      assert_over(in_child(planning('xpcall(error, function() while true do end end, "mine")'), "build"),
        "policy p: ")
    end)

    it("leaves pcall to the policy for its own errors", function()
      local res = in_child(planning([[
        local ok, err = pcall(error, "mine", 0)
        assert(ok == false and err == "mine", "pcall did not return the policy's error")]]), "build")
      assert.same({ ok = true, n = 4, err = engine.json.null, code = engine.json.null }, res)
    end)

    it("leaves xpcall's message handler to the policy for its own errors", function()
      local res = in_child(planning([[
        local ok, err = xpcall(error, function(e) return "handled " .. e end, "mine", 0)
        assert(ok == false and err == "handled mine", "xpcall did not run the policy's handler")]]), "build")
      assert.same({ ok = true, n = 4, err = engine.json.null, code = engine.json.null }, res)
    end)
  end)

  it("returns a policy's own error as EPOLICY", function()
    local p = assert(policy.load(policy_file('return { name = "e", plan = function() error("no plan today") end }')))
    local ops, err, code = policy.build(p, sample())
    assert.is_nil(ops)
    assert.equal("EPOLICY", code)
    assert.matches("no plan today", err, 1, true)
  end)
end)

describe("policy.checks", function()
  after_each(function() helpers.cleanup() end)

  it("fails checks that spend the instruction budget behind a pcall", function()
    local res = in_child([[return { name = "c", plan = function() end,
      checks = function() while true do pcall(function() while true do end end) end end }]], "checks")
    assert_over(res, "policy c: checks: ")
  end)
end)

describe("policy.discover", function()
  after_each(function() helpers.cleanup() end)

  it("fails a discover that spends the instruction budget behind an xpcall", function()
    local res = in_child([[return { name = "d", plan = function() end,
      discover = function() while true do xpcall(function() while true do end end, error) end end }]], "discover")
    assert_over(res, "policy d: discover: ")
  end)
end)
