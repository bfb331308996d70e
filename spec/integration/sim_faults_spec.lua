-- icp-sim's fault injection (reference §9.4) and its invocation log.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local function log_lines(home)
  local out = {}
  for line in (fs.read(home .. "/log.jsonl") or ""):gmatch("[^\n]+") do
    out[#out + 1] = json.decode(line)
  end
  return out
end

describe("icp-sim faults", function()
  local home, fleet, c, d
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
    c, d = fleet.members[2].canister_id, fleet.members[3].canister_id
  end)
  after_each(function() helpers.cleanup() end)

  local function icp(argv, env)
    local full = {}
    for _, a in ipairs(argv) do full[#full + 1] = a end
    full[#full + 1] = "-e"
    full[#full + 1] = "local"
    return helpers.icp(home, full, env)
  end

  it("fails with a transport error before any effect", function()
    local r = icp({ "canister", "stop", c }, { ICP_SIM_FAIL = "stop" })
    assert.equal(1, r.status)
    assert.equal("Error: direct update call failed: An error happened during communication with the replica: error "
      .. "sending request for url (http://localhost:8000/api/v4/canister/" .. c .. "/call)\n\nCaused by:\n    An error "
      .. "happened during communication with the replica: error sending request for url (http://localhost:8000/api/v4/"
      .. "canister/" .. c .. "/call)\n", r.stderr)
    assert.equal("running", helpers.fleet(home).members[2].status)
    assert.equal(0, helpers.effects(home)[c].stop)
  end)

  it("commits the effect and then fails with ICP_SIM_FAIL_AFTER", function()
    local r = icp({ "canister", "stop", c }, { ICP_SIM_FAIL_AFTER = "stop" })
    assert.equal(1, r.status)
    assert.matches("error sending request", r.stderr)
    assert.equal("stopped", helpers.fleet(home).members[2].status)
    assert.equal(1, helpers.effects(home)[c].stop)
    r = icp({ "canister", "snapshot", "create", c, "--json" }, { ICP_SIM_FAIL_AFTER = "snapshot.create=http503" })
    assert.equal(1, r.status)
    assert.equal("", r.stdout)
    assert.equal(1, #json.decode(icp({ "canister", "snapshot", "list", c, "--json" }).stdout).snapshots)
  end)

  it("fails with HTTP 503 and 429", function()
    assert.matches("status 503 Service Unavailable", icp({ "canister", "stop", c }, { ICP_SIM_FAIL = "stop=http503" })
      .stderr)
    assert.matches("status 429 Too Many Requests", icp({ "canister", "stop", c }, { ICP_SIM_FAIL = "stop=http429" })
      .stderr)
  end)

  it("rejects with a given IC code", function()
    local r = icp({ "canister", "start", c }, { ICP_SIM_FAIL = "start=reject:IC0207" })
    assert.matches('reject code SysTransient, .*Some%("IC0207"%)', r.stderr)
  end)

  it("selects by canister", function()
    local env = { ICP_SIM_FAIL = "stop@" .. d }
    assert.equal(0, icp({ "canister", "stop", c }, env).status)
    assert.equal(1, icp({ "canister", "stop", d }, env).status)
  end)

  it("selects the n-th matching invocation, and the n-th and later", function()
    local env = { ICP_SIM_FAIL = "status#2" }
    local rcs = {}
    for i = 1, 3 do rcs[i] = icp({ "canister", "status", c }, env).status end
    assert.same({ 0, 1, 0 }, rcs)
    env = { ICP_SIM_FAIL = "start#2+" }
    for i = 1, 3 do rcs[i] = icp({ "canister", "start", c }, env).status end
    assert.same({ 0, 1, 1 }, rcs)
  end)

  it("makes every command unreachable", function()
    local r = icp({ "canister", "snapshot", "list", c }, { ICP_SIM_UNREACHABLE = "1" })
    assert.equal(1, r.status)
    assert.matches("error sending request for url", r.stderr)
  end)

  it("hangs until killed, after a download's local side effects", function()
    local out = helpers.tmpdir() .. "/dl"
    local r = engine.proc.run({ argv = { helpers.root .. "/scripts/icp-sim", "canister", "snapshot", "download", c, "00",
      "-o", out .. "2", "-e", "local" }, env = { ICP_SIM_HOME = home, ICP_SIM_HANG = "snapshot.download" },
      timeout_ms = 1500, kill_grace_ms = 200 })
    assert.is_true(r.timed_out)
    assert.same({ ".lock", "wasm_chunk_store" }, fs.list(out .. "2"))
  end)

  it("succeeds silently without effect", function()
    assert.equal(0, icp({ "canister", "stop", c }, { ICP_SIM_SILENT_SUCCESS = "stop" }).status)
    assert.equal("running", helpers.fleet(home).members[2].status)
    icp({ "canister", "stop", c })
    local r = icp({ "canister", "snapshot", "create", c, "--json" }, { ICP_SIM_SILENT_SUCCESS = "snapshot.create" })
    assert.equal(0, r.status)
    assert.matches('^{"snapshot_id":"%x+"', r.stdout)
    assert.equal('{"snapshots":[]}', icp({ "canister", "snapshot", "list", c, "--json" }).stdout)
  end)

  it("lets a stop succeed without stopping", function()
    assert.equal(0, icp({ "canister", "stop", c }, { ICP_SIM_STOP_NOOP = "stop" }).status)
    assert.equal("Running", json.decode(icp({ "canister", "status", c, "--json" }).stdout).status)
  end)

  it("forces the reported status", function()
    local r = icp({ "canister", "status", c, "--json" }, { ICP_SIM_FORCE_STATUS = "stopped@" .. c })
    assert.equal("Stopped", json.decode(r.stdout).status)
  end)

  it("makes a stop that never completes hang while stopping", function()
    local r = engine.proc.run({ argv = { helpers.root .. "/scripts/icp-sim", "canister", "stop", c, "-e", "local" },
      env = { ICP_SIM_HOME = home, ICP_SIM_FORCE_STATUS = "stopping" }, timeout_ms = 1000, kill_grace_ms = 200 })
    assert.is_true(r.timed_out)
  end)

  it("treats the caller as a non-controller", function()
    local r = icp({ "canister", "snapshot", "list", c }, { ICP_SIM_NOT_CONTROLLER = "snapshot.list" })
    assert.matches('Some%("IC0512"%)', r.stderr)
  end)

  it("makes a canister missing", function()
    local r = icp({ "canister", "stop", c }, { ICP_SIM_MISSING_CANISTER = c })
    assert.matches("Canister " .. c:gsub("%-", "%%-") .. " not found%.", r.stderr)
  end)

  it("makes a snapshot vanish", function()
    icp({ "canister", "stop", c })
    local id = icp({ "canister", "snapshot", "create", c, "-q" }).stdout:sub(1, -2)
    local env = { ICP_SIM_SNAPSHOT_GONE = id }
    assert.equal('{"snapshots":[]}', icp({ "canister", "snapshot", "list", c, "--json" }, env).stdout)
    assert.matches('Some%("IC0305"%)', icp({ "canister", "snapshot", "delete", c, id }, env).stderr)
  end)

  it("corrupts one byte of a successful download", function()
    icp({ "canister", "stop", c })
    local id = icp({ "canister", "snapshot", "create", c, "-q" }).stdout:sub(1, -2)
    local out = helpers.tmpdir() .. "/dl"
    local r = icp({ "canister", "snapshot", "download", c, id, "-o", out },
      { ICP_SIM_CORRUPT = "snapshot.download:wasm_memory.bin:100" })
    assert.equal(0, r.status)
    local got = fs.read(out .. "/wasm_memory.bin")
    local want = fs.read(home .. "/canisters/" .. c .. "/snapshots/" .. id .. "/data/wasm_memory.bin")
    assert.equal(#want, #got)
    assert.are_not.equal(want, got)
    assert.equal(want:sub(1, 100), got:sub(1, 100))
    assert.equal(want:sub(102), got:sub(102))
  end)

  it("errors or stalls a transfer midway", function()
    icp({ "canister", "stop", c })
    local id = icp({ "canister", "snapshot", "create", c, "-q" }).stdout:sub(1, -2)
    local out = helpers.tmpdir()
    local r = icp({ "canister", "snapshot", "download", c, id, "-o", out .. "/a" },
      { ICP_SIM_CRASH = "snapshot.download:1:error" })
    assert.equal(1, r.status)
    assert.matches("Error: Failed to read snapshot data chunk at offset 0\n", r.stderr)
    r = engine.proc.run({ argv = { helpers.root .. "/scripts/icp-sim", "canister", "snapshot", "download", c, id,
      "-o", out .. "/b", "-e", "local" }, env = { ICP_SIM_HOME = home, ICP_SIM_CRASH = "snapshot.download:1:stall" },
      timeout_ms = 1500, kill_grace_ms = 200 })
    assert.is_true(r.timed_out)
  end)

  it("absorbs transient drops", function()
    icp({ "canister", "stop", c })
    local id = icp({ "canister", "snapshot", "create", c, "-q" }).stdout:sub(1, -2)
    local r = icp({ "canister", "snapshot", "download", c, id, "-o", helpers.tmpdir() .. "/dl" },
      { ICP_SIM_DROP = "snapshot.download:2" })
    assert.equal(0, r.status)
  end)

  it("adds latency per call", function()
    local r = icp({ "canister", "status", c }, { ICP_SIM_LATENCY_MS = "300" })
    assert.is_true(r.elapsed_ms >= 300)
  end)

  it("throttles a transfer to ICP_SIM_BPS", function()
    icp({ "canister", "stop", c })
    local id = icp({ "canister", "snapshot", "create", c, "-q" }).stdout:sub(1, -2)
    local r = icp({ "canister", "snapshot", "download", c, id, "-o", helpers.tmpdir() .. "/dl" },
      { ICP_SIM_BPS = "400000" }) -- ~131 KB at 400 KB/s
    assert.equal(0, r.status)
    assert.is_true(r.elapsed_ms >= 300, r.elapsed_ms)
  end)

  it("shares ICP_SIM_SHARED_BPS among concurrent transfers", function()
    local ids = {}
    for i, cid in ipairs({ c, d }) do
      icp({ "canister", "stop", cid })
      ids[i] = icp({ "canister", "snapshot", "create", cid, "-q" }).stdout:sub(1, -2)
    end
    local out = helpers.tmpdir()
    local t0 = engine.monotonic_ns()
    local handles = {}
    for i, cid in ipairs({ c, d }) do
      handles[i] = engine.proc.spawn({ argv = { helpers.root .. "/scripts/icp-sim", "canister", "snapshot", "download",
        cid, ids[i], "-o", out .. "/" .. i, "-e", "local" }, env = { ICP_SIM_HOME = home, ICP_SIM_SHARED_BPS = "500000" } })
    end
    for _, h in ipairs(handles) do
      assert.equal(0, h:result().status)
      h:close()
    end
    -- ~2 x 131 KB through one 500 KB/s pipe.
    assert.is_true((engine.monotonic_ns() - t0) / 1e6 >= 450)
  end)

  it("adds stderr noise and backtraces that a caller must not parse", function()
    local r = icp({ "canister", "stop", c }, { ICP_SIM_STDERR_NOISE = "1", ICP_SIM_FAIL = "stop",
      ICP_SIM_BACKTRACE = "1" })
    assert.matches("^icp collects anonymous usage data", r.stderr)
    assert.matches("Stack backtrace:", r.stderr)
  end)

  it("follows a fault plan in order", function()
    local plan = helpers.tmpdir() .. "/plan.json"
    helpers.write(plan, json.encode({
      { match = { path = "stop", canister = c }, fault = { fail = "http503" } },
      { match = { path = "stop" }, fault = { hang = false, fail = "transport" } },
    }))
    local env = { ICP_SIM_FAULT_PLAN = plan }
    assert.matches("503", icp({ "canister", "stop", c }, env).stderr)
    assert.matches("error sending request", icp({ "canister", "stop", d }, env).stderr)
    assert.equal(0, icp({ "canister", "stop", c }, env).status)
  end)

  it("refuses a malformed selector", function()
    local r = icp({ "canister", "stop", c }, { ICP_SIM_FAIL = "stop@@x" })
    assert.equal(1, r.status)
    assert.matches("bad fault selector", r.stderr)
  end)

  it("logs every invocation with its faults", function()
    icp({ "canister", "stop", c }, { ICP_SIM_FAIL = "stop=http503" })
    local entries = log_lines(home)
    local last = entries[#entries]
    assert.equal("stop", last.argv[2])
    assert.equal(1, last.rc)
    assert.same({ "fail:http503" }, last.faults)
    assert.is_true(last.end_ns >= last.start_ns)
  end)
end)

describe("icp-sim clock", function()
  local home, c
  before_each(function()
    home = helpers.sim_home()
    c = helpers.fleet(home).members[2].canister_id
  end)
  after_each(function() helpers.cleanup() end)

  it("starts at ICP_SIM_CLOCK_NS and steps once per management call", function()
    local env = { ICP_SIM_CLOCK_NS = "1700000000000000000" }
    helpers.icp(home, { "canister", "stop", c, "-e", "local" }, env)
    local a = json.decode(helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "--json" }, env)
      .stdout)
    local b = json.decode(helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "--json" }, env)
      .stdout)
    assert.equal(1700000001000000000, a.taken_at_timestamp)
    assert.equal(1700000002000000000, b.taken_at_timestamp)
  end)
end)

describe("icp-sim under 64 parallel invocations", function()
  after_each(function() helpers.cleanup() end)

  it("keeps every effect and every log line", function()
    local home = helpers.sim_home({ members = 16, depth = 2 })
    local fleet = helpers.fleet(home)
    local handles = {}
    for i = 1, 64 do
      local m = fleet.members[(i - 1) % 16 + 2].canister_id
      local argv = i <= 16 and { "canister", "stop", m, "-e", "local" }
        or { "canister", "status", m, "-e", "local", "--json" }
      local full = { helpers.root .. "/scripts/icp-sim" }
      for _, a in ipairs(argv) do full[#full + 1] = a end
      handles[i] = engine.proc.spawn({ argv = full, env = { ICP_SIM_HOME = home, ICP_SIM_LATENCY_MS = "200" } })
    end
    local t0 = engine.monotonic_ns()
    for _, h in ipairs(handles) do
      local r = h:result()
      assert.equal(0, r.status, r.stderr)
      h:close()
    end
    -- 64 x 200 ms of latency in parallel, not one after another.
    assert.is_true((engine.monotonic_ns() - t0) / 1e9 < 64 * 0.2 / 2)
    local effects = helpers.effects(home)
    for i = 2, 17 do
      assert.equal(1, effects[fleet.members[i].canister_id].stop)
    end
    local icp_lines = 0
    for _, e in ipairs(log_lines(home)) do
      if e.argv[1] ~= "sim" then icp_lines = icp_lines + 1 end
    end
    assert.equal(64, icp_lines)
  end)
end)
