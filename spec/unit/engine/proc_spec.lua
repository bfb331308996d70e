local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local proc = engine.proc

local function open_fds()
  return #engine.fs.list("/proc/self/fd")
end

local function alive(pid)
  local stat = helpers.sh("ps -o stat= -p " .. pid .. " || true"):gsub("%s", "")
  return stat ~= "" and not stat:find("Z")
end

local function zombies()
  local out = helpers.sh("ps -o stat= --ppid " .. helpers.sh("echo $PPID"):gsub("%s", "") .. " || true")
  local n = 0
  for stat in out:gmatch("%S+") do
    if stat:find("Z") then n = n + 1 end
  end
  return n
end

describe("engine.proc.run", function()
  it("captures stdout, stderr and the exit status", function()
    local r = proc.run({ argv = { "sh", "-c", "printf out; printf err >&2; exit 3" } })
    assert.equal(3, r.status)
    assert.is_nil(r.signal)
    assert.equal("out", r.stdout)
    assert.equal("err", r.stderr)
    assert.equal(3, r.stdout_bytes)
    assert.is_false(r.timed_out)
    assert.is_true(r.elapsed_ms >= 0)
  end)

  it("reports the CPU time and peak memory of the child and its descendants", function()
    -- A grandchild that burns CPU: counted once the child has reaped it.
    local r = proc.run({ argv = { "sh", "-c", "sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'" } })
    assert.equal(0, r.status)
    assert.is_true(r.cpu_ns > 0)
    assert.is_true(r.maxrss_kib > 0)
    local cpu = proc.cpu()
    assert.is_true(cpu.self_ns > 0)
    assert.is_true(cpu.children_ns >= r.cpu_ns)
  end)

  it("runs argv without a shell", function()
    local r = proc.run({ argv = { "printf", "%s", "$HOME; echo no" } })
    assert.equal("$HOME; echo no", r.stdout)
  end)

  it("keeps only the tail of a large output but counts every byte", function()
    local r = proc.run({ argv = { "seq", "1", "100000" }, capture_limit = 7 })
    assert.equal("100000\n", r.stdout)
    assert.equal(588895, r.stdout_bytes)
  end)

  it("captures output smaller than, equal to and larger than capture_limit", function()
    local all = proc.run({ argv = { "seq", "1", "100000" }, capture_limit = 1 << 20 })
    assert.equal(588895, #all.stdout)
    assert.equal(588895, all.stdout_bytes)
    for _, limit in ipairs({ 588895, 588894, 300000, 4096, 4097 }) do
      local r = proc.run({ argv = { "seq", "1", "100000" }, capture_limit = limit })
      assert.equal(all.stdout:sub(-limit), r.stdout)
      assert.equal(588895, r.stdout_bytes)
    end
  end)

  it("feeds stdin", function()
    assert.equal("hello", proc.run({ argv = { "cat" }, stdin = "hello" }).stdout)
  end)

  it("gives the child an empty stdin by default", function()
    assert.equal("", proc.run({ argv = { "cat" } }).stdout)
  end)

  it("sets, overrides and unsets environment variables", function()
    local r = proc.run({
      argv = { "sh", "-c", 'echo "$A|${HOME-unset}|$PATH"' },
      env = { A = "x", PATH = "/bin:/usr/bin" },
      unset_env = { "HOME" },
    })
    assert.equal("x|unset|/bin:/usr/bin\n", r.stdout)
  end)

  it("never passes an inherited FLEETSNAP_FAILPOINT to a child", function()
    local r = helpers.lua([[
      local r = require("fleetsnap.engine").proc.run({
        argv = { "sh", "-c", 'echo "${FLEETSNAP_FAILPOINT-unset}"' } })
      io.write(r.stdout)
    ]], { FLEETSNAP_FAILPOINT = "never-reached:1" })
    assert.equal("unset\n", r.stdout)
  end)

  it("passes FLEETSNAP_FAILPOINT when env sets it explicitly", function()
    local r = proc.run({ argv = { "sh", "-c", 'echo "${FLEETSNAP_FAILPOINT-unset}"' },
      env = { FLEETSNAP_FAILPOINT = "before-effect:1" } })
    assert.equal("before-effect:1\n", r.stdout)
  end)

  it("runs in cwd", function()
    assert.equal("/tmp\n", proc.run({ argv = { "pwd" }, cwd = "/tmp" }).stdout)
  end)

  it("reports a signal death", function()
    local r = proc.run({ argv = { "sh", "-c", "kill -9 $$" } })
    assert.is_nil(r.status)
    assert.equal(9, r.signal)
  end)

  it("times out with SIGTERM to the whole process group", function()
    local dir = helpers.tmpdir()
    local r = proc.run({
      argv = { "sh", "-c", "sleep 30 & echo $! > " .. dir .. "/bg; wait" },
      timeout_ms = 200,
    })
    assert.is_true(r.timed_out)
    assert.equal(15, r.signal)
    assert.is_true(r.elapsed_ms < 10000)
    local bg = helpers.read(dir .. "/bg"):gsub("%s", "")
    os.execute("sleep 0.1")
    assert.is_false(alive(bg))
    helpers.cleanup()
  end)

  it("escalates to SIGKILL after the grace period", function()
    local r = proc.run({ argv = { "sh", "-c", "trap '' TERM; while :; do sleep 0.05; done" },
      timeout_ms = 100, kill_grace_ms = 100 })
    assert.is_true(r.timed_out)
    assert.equal(9, r.signal)
  end)

  it("fails with ENOENT when the program does not exist", function()
    local r, msg, code = proc.run({ argv = { "fleetsnap-no-such-program" } })
    assert.is_nil(r)
    assert.equal("ENOENT", code)
    assert.matches("fleetsnap%-no%-such%-program", msg)
  end)

  it("fails with ENOENT for a missing cwd", function()
    local r, _, code = proc.run({ argv = { "true" }, cwd = "/no/such/dir" })
    assert.is_nil(r)
    assert.equal("ENOENT", code)
  end)

  it("raises on misuse", function()
    assert.has_error(function() proc.run({ argv = {} }) end, "option 'argv' must not be empty")
    assert.has_error(function() proc.run({ argv = { "true" }, bogus = 1 }) end, "unknown option 'bogus'")
    assert.has_error(function() proc.run({ argv = { 1 } }) end)
    assert.has_error(function() proc.run({ argv = { "true" }, env = { ["A=B"] = "x" } }) end)
  end)

  it("leaks no descriptors and leaves no zombies", function()
    local before = open_fds()
    for _ = 1, 50 do
      proc.run({ argv = { "true" } })
      proc.run({ argv = { "sleep", "5" }, timeout_ms = 1 })
      proc.run({ argv = { "fleetsnap-no-such-program" } })
    end
    collectgarbage("collect")
    assert.equal(before, open_fds())
    assert.equal(0, zombies())
  end)
end)

describe("engine.proc.spawn and wait_any", function()
  it("returns the first handle to finish", function()
    local slow = proc.spawn({ argv = { "sleep", "2" } })
    local fast = proc.spawn({ argv = { "sh", "-c", "echo fast" } })
    local first = proc.wait_any({ slow, fast })
    assert.equal(fast, first)
    assert.equal("fast\n", first:result().stdout)
    slow:close()
  end)

  it("returns nil on timeout", function()
    local p = proc.spawn({ argv = { "sleep", "2" } })
    assert.is_nil(proc.wait_any({ p }, 20))
    assert.is_false(p:done())
    p:close()
  end)

  it("drives many children at once", function()
    local handles = {}
    for i = 1, 20 do
      handles[i] = proc.spawn({ argv = { "sh", "-c", "sleep 0.2; echo " .. i } })
    end
    local seen = {}
    local t0 = os.time()
    while #handles > 0 do
      local h = proc.wait_any(handles)
      for i, x in ipairs(handles) do
        if x == h then table.remove(handles, i) break end
      end
      seen[#seen + 1] = tonumber(h:result().stdout)
      h:close()
    end
    assert.equal(20, #seen)
    assert.is_true(os.time() - t0 <= 3)
  end)

  it("kills the process group and reaps it on close", function()
    local p = proc.spawn({ argv = { "sleep", "30" } })
    local pid = p:pid()
    p:close()
    p:close()
    assert.is_false(alive(pid))
    assert.has_error(function() p:result() end, "process handle is closed")
  end)

  it("signals with kill", function()
    local p = proc.spawn({ argv = { "sleep", "30" } })
    assert.is_true(p:kill(15))
    assert.equal(15, p:result().signal)
    p:close()
  end)

  it("closes with <close>", function()
    local pid
    do
      local p <close> = proc.spawn({ argv = { "sleep", "30" } })
      pid = p:pid()
    end
    assert.is_false(alive(pid))
  end)
end)

describe("engine.proc.wait_any misuse", function()
  it("raises on an empty list and on a closed handle", function()
    assert.has_error(function() proc.wait_any({}) end)
    local p = proc.spawn({ argv = { "true" } })
    p:close()
    assert.has_error(function() proc.wait_any({ p }) end, "process handle is closed")
  end)
end)

describe("engine.proc.pid and signal", function()
  it("gives this process's pid", function()
    local r = helpers.lua([[io.write(require("fleetsnap.engine").proc.pid())]])
    assert.equal(tostring(r.pid), r.stdout)
  end)

  it("signals a process", function()
    local p = proc.spawn({ argv = { "sleep", "30" } })
    assert.is_true(proc.signal(p:pid(), 9))
    assert.equal(9, p:result().signal)
    p:close()
  end)

  it("fails with a code for a process that does not exist", function()
    local ok, _, code = proc.signal(2 ^ 22 + 12345, 0)
    assert.is_nil(ok)
    assert.equal("ESRCH", code)
  end)

  it("refuses to signal every process", function()
    assert.has_error(function() proc.signal(-1, 9) end)
  end)
end)
