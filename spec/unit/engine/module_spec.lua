local helpers = require "helpers"

describe("require 'fleetsnap'", function()
  it("gives the engine and its parts", function()
    local fleetsnap = require "fleetsnap"
    local engine = require "fleetsnap.engine"
    assert.equal(engine, fleetsnap.engine)
    assert.equal(engine.json, fleetsnap.json)
    assert.equal(engine.hash, fleetsnap.hash)
    assert.is_string(fleetsnap.version)
  end)

  it("returns nil for a module that does not exist", function()
    assert.is_nil(require("fleetsnap").no_such_module)
  end)

  it("leaves _G unchanged", function()
    local r = helpers.lua([[
      local before = {}
      for k in pairs(_G) do before[k] = true end
      require "fleetsnap"
      require "fleetsnap.engine"
      for k in pairs(_G) do
        if not before[k] and k ~= "fleetsnap" then error("new global " .. k) end
      end
      if rawget(_G, "fleetsnap") ~= nil then error("global fleetsnap") end
    ]])
    assert.equal(0, r.status, r.stderr)
  end)
end)

describe("engine clocks", function()
  local engine = require "fleetsnap.engine"

  it("monotonic_ns never goes back", function()
    local a = engine.monotonic_ns()
    local b = engine.monotonic_ns()
    assert.is_true(math.type(a) == "integer" and b >= a)
  end)

  it("realtime_ns is nanoseconds since the epoch", function()
    local ns = engine.realtime_ns()
    assert.is_true(math.abs(ns // 1000000000 - os.time()) <= 2)
  end)
end)

describe("engine.sleep_ms", function()
  local engine = require "fleetsnap.engine"

  it("sleeps at least that long", function()
    local t0 = engine.monotonic_ns()
    engine.sleep_ms(30)
    assert.is_true(engine.monotonic_ns() - t0 >= 30000000)
  end)

  it("raises on a negative duration", function()
    assert.has_error(function() engine.sleep_ms(-1) end)
  end)
end)

describe("engine.isatty", function()
  it("says a pipe or /dev/null is not a terminal", function()
    local r = require("helpers").lua([[io.write(tostring(require("fleetsnap.engine").isatty(0)),
      tostring(require("fleetsnap.engine").isatty(1)))]])
    assert.equal("falsefalse", r.stdout)
  end)

  it("says a pseudo-terminal is one", function()
    -- Under AddressSanitizer the child needs the preloaded runtime: keep
    -- the environment as it is.
    local r = require("fleetsnap.engine").proc.run({ argv = { "script", "-qec",
      "lua5.4 -e 'io.write(tostring(require(\"fleetsnap.engine\").isatty(1)))'", "/dev/null" },
      env = { LUA_CPATH = package.cpath } })
    assert.matches("true", r.stdout)
  end)
end)
