local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local proc, signals = engine.proc, engine.signals

-- A child lua5.4 that catches the signals, starts `sleep 30` and waits for
-- it; the spec signals the child once it is about to wait (the file appears
-- whole, by rename, with sleep's pid). The child reports what
-- it saw and exits 0 through its own code: no "interrupted!" error, no death.
local WAITER = [[
  local engine = require "fleetsnap.engine"
  local ready = ...
  assert(engine.signals.catch())
  local sleeper = assert(engine.proc.spawn({ argv = { "sleep", "30" } }))
  local f = assert(io.open(ready .. ".tmp", "w"))
  f:write(sleeper:pid())
  f:close()
  assert(os.rename(ready .. ".tmp", ready))
  local done, msg, code = engine.proc.wait_any({ sleeper })
  -- The safe point: what the executor does here is contain.
  local name, count = engine.signals.pending()
  local alive = not sleeper:done()
  sleeper:close()
  engine.signals.release()
  print(string.format("done=%s msg=%s code=%s pending=%s count=%s sleeper_alive=%s",
    tostring(done), tostring(msg), tostring(code), tostring(name), tostring(count), tostring(alive)))
  os.exit(0)
]]

local function start(code, dir)
  local ready = dir .. "/ready"
  local h = assert(proc.spawn({
    argv = { "lua5.4", "-", ready },
    stdin = code,
    env = { LUA_PATH = package.path, LUA_CPATH = package.cpath },
    timeout_ms = 60000,
  }))
  for _ = 1, 2000 do
    if helpers.read(ready) then break end
    engine.sleep_ms(10)
  end
  local pid = assert(helpers.read(ready), "the child never got ready")
  return h, tonumber(pid)
end

describe("engine.signals in a waiting child", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  for _, case in ipairs({ { "SIGTERM", 15 }, { "SIGHUP", 1 } }) do
    local name, number = case[1], case[2]
    it("turns " .. name .. " into nil, 'interrupted by " .. name .. "', 'EINTR' from wait_any", function()
      local h = start(WAITER, dir)
      assert.is_true(proc.signal(h:pid(), number))
      local r = h:result()
      h:close()
      assert.equal(0, r.status, r.stderr)
      assert.equal("done=nil msg=interrupted by " .. name .. " code=EINTR pending=" .. name
        .. " count=1 sleeper_alive=true\n", r.stdout)
    end)
  end

  it("turns a terminal's SIGINT (to the whole process group) into the same, without lua5.4's error", function()
    local h = start(WAITER, dir)
    -- The child leads its own group, as a shell job would; its commands run
    -- in groups of their own, so the Ctrl-C reaches only the executor.
    assert.is_true(proc.signal(-h:pid(), 2))
    local r = h:result()
    h:close()
    assert.equal(0, r.status, r.stderr)
    assert.equal("done=nil msg=interrupted by SIGINT code=EINTR pending=SIGINT count=1 sleeper_alive=true\n",
      r.stdout)
    assert.is_nil(r.stderr:find("interrupted!", 1, true))
  end)

  it("lets a script end while still catching (the state's finalizer releases)", function()
    local r = helpers.lua([[assert(require("fleetsnap.engine").signals.catch()) print("ok")]])
    assert.equal(0, r.status, r.stderr)
    assert.equal("ok\n", r.stdout)
  end)

  it("leaves the default disposition back after release", function()
    local h, sleeper = start([[
      local engine = require "fleetsnap.engine"
      local ready = ...
      assert(engine.signals.catch())
      engine.signals.release()
      local sleeper = assert(engine.proc.spawn({ argv = { "sleep", "30" } }))
      local f = assert(io.open(ready .. ".tmp", "w"))
      f:write(sleeper:pid())
      f:close()
      assert(os.rename(ready .. ".tmp", ready))
      engine.proc.wait_any({ sleeper })
      print("not reached")
    ]], dir)
    proc.signal(h:pid(), 15)
    local r = h:result()
    h:close()
    proc.signal(sleeper, 9) -- in its own group: the child's death left it running
    assert.equal(15, r.signal)
    assert.equal("", r.stdout)
  end)
end)

describe("engine.signals", function()
  -- These send signals to the busted process itself, only while caught.
  after_each(function()
    signals.release()
    signals.clear()
  end)

  it("reports nothing before a signal", function()
    assert.is_true(signals.catch())
    assert.is_nil(signals.pending())
  end)

  it("keeps the first signal's name and counts the others until clear", function()
    assert.is_true(signals.catch())
    proc.signal(proc.pid(), 1)
    proc.signal(proc.pid(), 15)
    local name, count = signals.pending()
    assert.equal("SIGHUP", name)
    assert.equal(2, count)
    signals.clear()
    assert.is_nil(signals.pending())
  end)

  it("does not lose a signal caught before wait_any starts, and repeats it until clear", function()
    assert.is_true(signals.catch())
    local p = assert(proc.spawn({ argv = { "sleep", "30" } }))
    proc.signal(proc.pid(), 15)
    for _ = 1, 2 do
      local done, msg, code = proc.wait_any({ p }, 20000)
      assert.is_nil(done)
      assert.equal("interrupted by SIGTERM", msg)
      assert.equal("EINTR", code)
    end
    signals.clear()
    assert.equal(1, select("#", proc.wait_any({ p }, 10))) -- a plain timeout: nil alone
    p:close()
  end)

  it("returns a finished handle before a pending signal", function()
    assert.is_true(signals.catch())
    local slow = assert(proc.spawn({ argv = { "sleep", "30" } }))
    local quick = assert(proc.spawn({ argv = { "true" } }))
    quick:result()
    proc.signal(proc.pid(), 2)
    assert.equal(quick, proc.wait_any({ slow, quick }))
    assert.is_nil(proc.wait_any({ slow }))
    slow:close()
    quick:close()
  end)

  it("lets proc.run finish when a caught signal arrives meanwhile", function()
    assert.is_true(signals.catch())
    local r = proc.run({ argv = { "sh", "-c", "kill -TERM $PPID; sleep 0.2; echo ok" } })
    assert.equal(0, r.status)
    assert.equal("ok\n", r.stdout)
    assert.equal("SIGTERM", signals.pending())
  end)

  it("starts children with default dispositions while catching", function()
    assert.is_true(signals.catch())
    -- Without LD_PRELOAD: under AddressSanitizer its runtime would catch
    -- SIGSEGV, SIGBUS and SIGFPE in cat.
    local status = proc.run({ argv = { "cat", "/proc/self/status" }, unset_env = { "LD_PRELOAD" } }).stdout
    assert.matches("SigCgt:%s+0000000000000000\n", status)
    assert.matches("SigIgn:%s+0000000000000000\n", status)
    assert.matches("SigBlk:%s+0000000000000000\n", status)
  end)
end)
