local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local lock = engine.lock

describe("engine.lock.acquire", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() collectgarbage("collect") end)

  it("refuses a second holder with ELOCKED naming the first", function()
    local l = assert(lock.acquire(dir .. "/j.lock"))
    local l2, msg, code = lock.acquire(dir .. "/j.lock")
    assert.is_nil(l2)
    assert.equal("ELOCKED", code)
    assert.matches("is locked by pid " .. helpers.sh("echo $PPID"):gsub("%s", ""), msg, 1, true)
    l:release()
  end)

  it("writes owner info only once it holds the lock", function()
    local l = assert(lock.acquire(dir .. "/j.lock", { owner = "pid=42\nhost=box\n" }))
    assert.is_nil(lock.acquire(dir .. "/j.lock", { owner = "pid=43\n" }))
    assert.same({ pid = 42, host = "box" }, lock.owner(dir .. "/j.lock"))
    l:close()
  end)

  it("releases idempotently through close, release and <close>", function()
    do
      local l <close> = assert(lock.acquire(dir .. "/j.lock"))
      assert.is_true(l:held())
    end
    local l = assert(lock.acquire(dir .. "/j.lock"))
    l:release()
    l:release()
    l:close()
    assert.is_false(l:held())
    assert.truthy(tostring(l):find("released"))
  end)

  it("is released when the holder is garbage collected", function()
    lock.acquire(dir .. "/j.lock")
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_truthy(lock.acquire(dir .. "/j.lock"))
  end)

  it("is free again after a SIGKILLed holder", function()
    local r = helpers.lua(string.format([[
      local l = require("fleetsnap.engine").lock.acquire(%q)
      os.execute("kill -9 $PPID")
    ]], dir .. "/j.lock"))
    assert.equal(9, r.signal)
    assert.is_truthy(lock.acquire(dir .. "/j.lock"))
  end)

  it("waits up to wait_ms, then gives up", function()
    local l = assert(lock.acquire(dir .. "/j.lock"))
    local t0 = os.clock()
    local l2, _, code = lock.acquire(dir .. "/j.lock", { wait_ms = 30 })
    assert.is_nil(l2)
    assert.equal("ELOCKED", code)
    assert.is_true(os.clock() - t0 < 5)
    l:close()
  end)

  it("gets the lock while waiting once the holder lets go", function()
    local holder = engine.proc.spawn({
      argv = { "lua5.4", "-e", string.format([[
        local l = assert(require("fleetsnap.engine").lock.acquire(%q, { wait_ms = 10000 }))
        io.open(%q, "w"):close()
        os.execute("sleep 0.3")
      ]], dir .. "/j.lock", dir .. "/held") },
      env = { LUA_CPATH = package.cpath },
    })
    local deadline = os.time() + 20
    while not engine.fs.lstat(dir .. "/held") and os.time() < deadline do
      os.execute("sleep 0.01")
    end
    assert.is_truthy(engine.fs.lstat(dir .. "/held"), "the holder never took the lock")
    assert.is_nil(lock.acquire(dir .. "/j.lock"))
    local l = lock.acquire(dir .. "/j.lock", { wait_ms = 10000 })
    assert.is_truthy(l)
    assert.equal(0, holder:result().status)
    l:close()
    holder:close()
  end)

  it("refuses a symlink, a directory, and a missing parent", function()
    helpers.sh("touch " .. dir .. "/real && ln -s real " .. dir .. "/l.lock && mkdir " .. dir .. "/d.lock")
    assert.equal("EUNSAFE", select(3, lock.acquire(dir .. "/l.lock")))
    assert.equal("EUNSAFE", select(3, lock.acquire(dir .. "/d.lock")))
    assert.equal("ENOENT", select(3, lock.acquire(dir .. "/no/x.lock")))
  end)
end)

describe("engine.lock.probe", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("says whether a lock is free without taking it", function()
    assert.is_true(lock.probe(dir .. "/j.lock"))
    local l = lock.acquire(dir .. "/j.lock")
    assert.equal("ELOCKED", select(3, lock.probe(dir .. "/j.lock")))
    l:close()
    assert.is_true(lock.probe(dir .. "/j.lock"))
  end)

  it("with create = false, counts a missing file as free and does not make it", function()
    assert.is_true(lock.probe(dir .. "/m.lock", { create = false }))
    assert.is_nil(engine.fs.lstat(dir .. "/m.lock"))
    assert.is_true(lock.probe(dir .. "/no/m.lock", { create = false }))
    local l = lock.acquire(dir .. "/m.lock")
    assert.equal("ELOCKED", select(3, lock.probe(dir .. "/m.lock", { create = false })))
    l:close()
    assert.is_true(lock.probe(dir .. "/m.lock", { create = false }))
    assert.equal("EUNSAFE", select(3, lock.probe(dir, { create = false })))
  end)
end)

describe("command-lifetime locks", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("stay held while a descendant of the child lives", function()
    local l = assert(lock.acquire(dir .. "/cmd.lock"))
    local p = engine.proc.spawn({ argv = { "sh", "-c", "sleep 1 >/dev/null 2>&1 & exit 0" }, inherit = { l } })
    p:result() -- the child exited; its background sleep still holds the lock
    l:close()
    assert.equal("ELOCKED", select(3, lock.probe(dir .. "/cmd.lock")))
    assert.is_true(lock.probe(dir .. "/cmd.lock", { wait_ms = 10000 }))
  end)

  it("are not inherited unless passed", function()
    local l = assert(lock.acquire(dir .. "/cmd.lock"))
    local p = engine.proc.spawn({ argv = { "sleep", "0.5" } })
    l:close()
    assert.is_true(lock.probe(dir .. "/cmd.lock"))
    p:close()
  end)

  it("cannot pass a released lock", function()
    local l = assert(lock.acquire(dir .. "/cmd.lock"))
    l:close()
    assert.has_error(function() engine.proc.spawn({ argv = { "true" }, inherit = { l } }) end)
  end)
end)

describe("engine.lock.owner", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("reads the default owner text of this process", function()
    local l = assert(lock.acquire(dir .. "/j.lock"))
    local o = lock.owner(dir .. "/j.lock")
    assert.equal("integer", math.type(o.pid))
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", o.started)
    assert.matches("lua5.4", o.argv)
    l:close()
  end)

  it("fails with ENOENT and EUNSAFE", function()
    assert.equal("ENOENT", select(3, lock.owner(dir .. "/none.lock")))
    helpers.sh("ln -s x " .. dir .. "/l.lock")
    assert.equal("EUNSAFE", select(3, lock.owner(dir .. "/l.lock")))
  end)
end)
