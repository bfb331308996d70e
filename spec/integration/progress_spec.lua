-- What a long run shows while it goes and when it ends: the progress line
-- on a terminal, progress events under --json, -q and -v, the summary
-- block, and a reader that goes away (a closed pipe) mid-run.
local engine = require "fleetsnap.engine"
local json = engine.json
local helpers = require "helpers"

local home, work

before_each(function()
  -- 4 MiB heaps: the bytes are large enough to be counted in MiB.
  home = helpers.sim_home({ members = 3, depth = 1, heap = 4194304 })
  work = helpers.tmpdir()
end)
after_each(function() helpers.cleanup() end)

local function fleetsnap_argv(argv)
  local full = { helpers.root .. "/scripts/fleetsnap", "--sim", home }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return full
end

local function quoted(argv)
  local out = {}
  for i, a in ipairs(argv) do out[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  return table.concat(out, " ")
end

-- Every canister of the fleet runs, and the run started each it stopped.
local function all_running()
  for cid, e in pairs(helpers.effects(home)) do
    assert.equal(e.stop, e.start, cid)
  end
  for _, m in ipairs(helpers.fleet(home).members) do assert.equal("running", m.status, m.canister_id) end
end

describe("a backup on a terminal", function()
  it("shows one progress line with operations, bytes, rate, ETA and stopped canisters, cleared before the summary",
    function()
      -- script(1) gives the run a pseudo-terminal as stdout and stderr.
      local r = engine.proc.run({ argv = { "script", "-qfec", quoted(fleetsnap_argv({ "backup", "create", "--out",
        work .. "/b1" })), "/dev/null" }, env = { FLEETSNAP_SOURCE = helpers.root }, timeout_ms = 120000 })
      assert.equal(0, r.status, r.stderr)
      local out = r.stdout
      local line = out:match("%[%d+:%d%d%]  %d+/%d+ ops[^\r\n]*")
      assert.is_truthy(line, out)
      assert.matches("%d+%.%d MiB / %d+%.%d MiB", out)
      assert.matches("ETA %d+:%d%d", out)
      assert.matches(" %d+ stopped", line)
      -- The summary starts on a cleared line, not after the progress text.
      assert.matches("\r\27%[Kbackup b1 complete", out)
      assert.matches("\n  snapshots +3 taken, 0 deleted", out)
    end)
end)

describe("a backup under --json", function()
  it("streams progress events with the same fields and ends with a result carrying a summary", function()
    local r = helpers.fleetsnap(home, { "--json", "backup", "create", "--out", work .. "/b1" })
    assert.equal(0, r.status, r.stderr)
    local progress, result = {}, nil
    for line in r.stdout:gmatch("[^\n]+") do
      local e = json.decode(line)
      if e.type == "progress" then progress[#progress + 1] = e end
      if e.type == "result" then result = e end
    end
    assert.is_true(#progress >= 1)
    for _, p in ipairs(progress) do
      for _, k in ipairs({ "elapsed_ns", "done", "total", "bytes_done", "bytes_total", "rate_bps", "stopped" }) do
        assert.equal("integer", math.type(p[k]), k)
      end
      assert.is_true(p.eta_ns == json.null or math.type(p.eta_ns) == "integer")
    end
    assert.equal(3, result.summary.members)
    assert.equal(3, #result.summary.snapshot_ids)
    assert.equal(3, result.summary.snapshots_taken)
    assert.is_true(result.summary.bytes > 3 * 4194304)
    assert.equal("integer", math.type(result.summary.window_ns))
  end)
end)

describe("fleetsnap -q and -v", function()
  it("-q prints nothing on success", function()
    local r = helpers.fleetsnap(home, { "-q", "backup", "create", "--out", work .. "/b1" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("", r.stdout)
    assert.equal("", r.stderr)
    assert.is_truthy(engine.fs.lstat(work .. "/b1/fleet-backup-manifest.json"))
  end)

  it("-q still prints a failure", function()
    local r = helpers.fleetsnap(home, { "-q", "backup", "create", "--out", work .. "/b1" },
      { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    assert.matches("fleetsnap: ", r.stderr)
  end)

  it("-v prints each icp command as it starts", function()
    local r = helpers.fleetsnap(home, { "-v", "backup", "create", "--out", work .. "/b1" })
    assert.equal(0, r.status, r.stderr)
    for _, m in ipairs(helpers.fleet(home).members) do
      if m.role ~= "root" then
        assert.matches("$ icp-sim canister stop " .. m.canister_id .. " -e local\n", r.stderr, 1, true)
      end
    end
  end)
end)

describe("a restore's summary", function()
  it("names members, bytes, the stopped window and the snapshots", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b1" }).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", work .. "/b1" }).status)
    local r = helpers.fleetsnap(home, { "restore", "run", work .. "/b1", "--execute" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("\n  members +3\n", r.stdout)
    assert.matches("\n  bytes +%d+%.%d MiB\n", r.stdout)
    assert.matches("\n  stopped window +%d", r.stdout)
    assert.matches("\n  snapshots +3 taken, 3 deleted\n", r.stdout)
  end)
end)

describe("a reader that goes away", function()
  it("does not kill a backup: it completes and leaves every canister running", function()
    -- head exits after one line; the run's later writes meet a closed pipe.
    local r = engine.proc.run({ argv = { "sh", "-c", quoted(fleetsnap_argv({ "-v", "backup", "create", "--out",
      work .. "/b1" })) .. " 2>&1 | head -1" }, env = { FLEETSNAP_SOURCE = helpers.root }, timeout_ms = 120000 })
    assert.equal(0, r.status, r.stderr)
    assert.matches("^%$ icp%-sim canister stop", r.stdout)
    -- The run outlives head: wait for the backup's journal lock to be free.
    local lock = assert(engine.lock.acquire(work .. "/b1/fleetsnap-journal.wal.lock", { wait_ms = 60000 }))
    lock:close()
    assert.is_truthy(engine.fs.lstat(work .. "/b1/fleet-backup-manifest.json"))
    all_running()
  end)
end)
