-- The sandbox itself: its calls, its loading, its globals. How a policy
-- fails to escape the budget is in policy_spec (run in a child process).
local sandbox = require "fleetsnap.sandbox"

local function loop() while true do end end

describe("sandbox.call", function()
  it("returns true and every result of the function", function()
    assert.same({ true, 3, "x", n = 3 }, table.pack(sandbox.call(1000, function(a, b) return a + b, "x" end, 1, 2)))
  end)

  it("returns false and the function's own error", function()
    local ok, err, code = sandbox.call(1000, function() error({ mine = true }) end)
    assert.is_false(ok)
    assert.same({ mine = true }, err)
    assert.is_nil(code)
  end)

  it("returns false, the budget and EBUDGET when the budget runs out", function()
    assert.same({ false, "instruction budget of 1000 exceeded", "EBUDGET", n = 3 },
      table.pack(sandbox.call(1000, loop)))
  end)

  it("reports the budget spent even when a C function caught the error and returned", function()
    -- the raw pcall as the call's body: it returns to the coroutine's base
    -- without another instruction for the hook to stop
    assert.same({ false, "instruction budget of 1000 exceeded", "EBUDGET", n = 3 },
      table.pack(sandbox.call(1000, pcall, loop)))
  end)

  it("gives each call a budget of its own", function()
    -- about 200 instructions a call: ten calls would spend one budget of 1000
    local function spend() for _ = 1, 200 do end return "done" end
    for _ = 1, 10 do assert.same({ true, "done", n = 2 }, table.pack(sandbox.call(1000, spend))) end
  end)

  it("leaves the caller's hook in place", function()
    local saved = table.pack(debug.gethook())
    local function mine() end
    debug.sethook(mine, "", 1 << 30)
    sandbox.call(1000, loop)
    local hook, mask, count = debug.gethook()
    debug.sethook(table.unpack(saved, 1, saved.n))
    assert.same({ mine, "", 1 << 30 }, { hook, mask, count })
  end)

  it("works inside a caller's coroutine", function()
    local res = table.pack(coroutine.wrap(function() return sandbox.call(1000, loop) end)())
    assert.same({ false, "instruction budget of 1000 exceeded", "EBUDGET", n = 3 }, res)
  end)
end)

describe("sandbox.load", function()
  it("compiles a text chunk over the sandbox's globals", function()
    local chunk = assert(sandbox.load("return type(os), type(string.format)", "t"))
    assert.same({ "nil", "function" }, { chunk() })
  end)

  it("refuses a binary chunk, naming it", function()
    local chunk, err = sandbox.load(string.dump(function() end), "bin.lua")
    assert.is_nil(chunk)
    assert.equal("bin.lua: binary chunks are refused", err)
  end)

  it("returns the syntax error of a chunk that does not compile", function()
    local chunk, err = sandbox.load("return {", "bad.lua")
    assert.is_nil(chunk)
    assert.matches("^bad%.lua:1:", err)
  end)
end)

describe("sandbox.env", function()
  it("wraps pcall and xpcall instead of handing out the raw ones", function()
    local env = sandbox.env()
    assert.is_function(env.pcall)
    assert.is_function(env.xpcall)
    assert.are_not.equal(pcall, env.pcall)
    assert.are_not.equal(xpcall, env.xpcall)
  end)

  it("gives copies of the libraries, so a chunk cannot change fleetsnap's", function()
    local env = sandbox.env()
    env.string.format = nil
    assert.is_function(string.format)
    assert.are_not.equal(string, env.string)
  end)

  it("refuses an xpcall without a message handler, as Lua does", function()
    local env = sandbox.env()
    local ok, err = pcall(env.xpcall, function() end, nil)
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'xpcall' (function expected)", err, 1, true)
  end)
end)
