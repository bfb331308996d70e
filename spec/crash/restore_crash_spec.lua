-- Crash safety of restore: SIGKILL at the failpoints a full restore of a
-- 6-member fleet reaches (KiB-size snapshots, concurrency 1), then run
-- again to completion, and check: every member holds the backup's state,
-- exactly one upload completed per member, every load ran while its
-- target was stopped, every target runs, nothing is left over.
--
-- Most failpoints are the same journal record or effect once per member,
-- so the loops kill at every site (`helpers.choose_failpoints`) plus a
-- seeded sample of the repeats; FLEETSNAP_CRASH_ALL=1 kills at every
-- failpoint, FLEETSNAP_CRASH_SEED=<n> repeats a printed sample.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local SIZES = { members = 6, depth = 2, heap = 4096, stable = 2048 }

local base

-- A backed-up, then mutated fleet with a restore planned at concurrency 1.
local function prepare(extra)
  local dir = helpers.sh("mktemp -d /tmp/fsn-rcrash-XXXXXX"):gsub("%s+$", "")
  local home, b = dir .. "/home", dir .. "/b"
  helpers.sh("cp -a " .. helpers.sim_home(SIZES) .. " " .. home)
  assert(helpers.fleetsnap(home, { "backup", "create", "--out", b }).status == 0)
  local p = { dir = dir, home = home, backup = b, backed_up = helpers.digests(home), effects = helpers.effects(home),
    root = helpers.fleet(home).root }
  assert(helpers.icp(home, { "sim", "mutate", "--all" }).status == 0)
  p.mutated = helpers.digests(home)
  local r = helpers.fleetsnap(home, { "restore", "plan", b, "--concurrency", "1", "--uploads", "1" })
  assert(r.status == 0, r.stderr)
  if extra then
    r = helpers.fleetsnap(home, { "restore", "run", b, "--execute", table.unpack(extra) })
    assert(r.status == 0, r.stderr)
  end
  return p
end

-- The command under test: `restore run --execute <args>`, or `restore undo --execute`.
local function run_argv(home, b, args)
  local argv = { helpers.root .. "/scripts/fleetsnap", "--sim", home, "restore" }
  if args and args[1] == "undo" then
    argv[#argv + 1] = "undo"
    argv[#argv + 1] = b
    argv[#argv + 1] = "--execute"
    return argv
  end
  argv[#argv + 1] = "run"
  argv[#argv + 1] = b
  argv[#argv + 1] = "--execute"
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return argv
end

local function trace_points(label, args, sampling)
  local work = helpers.tmpdir()
  helpers.sh(string.format("cp -a %s %s/home && cp -a %s %s/b", base.home, work, base.backup, work))
  return helpers.crash_points(label, run_argv(work .. "/home", work .. "/b", args), sampling)
end

-- Runs the restore to completion after a crash, as an operator would.
local function finish(home, b, args)
  local r
  for _ = 1, 3 do
    local argv = run_argv(home, b, args)
    table.remove(argv, 1)
    table.remove(argv, 1)
    table.remove(argv, 1)
    r = helpers.fleetsnap(home, argv)
    if r.status ~= 4 then return r end
  end
  return r
end

-- Every successful load happened while its target was stopped (from the
-- simulator's invocation log, in order).
local function loads_only_while_stopped(home, label)
  local entries = {}
  for line in helpers.read(home .. "/log.jsonl"):gmatch("[^\n]+") do
    entries[#entries + 1] = json.decode(line)
  end
  table.sort(entries, function(a, b) return a.end_ns < b.end_ns end)
  local status = {}
  for _, e in ipairs(entries) do
    local a = e.argv
    if e.rc == 0 and a[1] == "canister" then
      if a[2] == "stop" then status[a[3]] = "stopped"
      elseif a[2] == "start" then status[a[3]] = "running"
      elseif a[2] == "snapshot" and a[3] == "restore" then
        assert.equal("stopped", status[a[4]] or "running", label .. ": a load into " .. a[4] .. " while running")
      end
    end
  end
end

-- After an undo: every member holds its pre-restore state again.
local function check_undone(home, b, label)
  local fleet = helpers.fleet(home)
  local now = {}
  for _, m in ipairs(fleet.members) do now[m.canister_id] = m.state_sha256 end
  for cid, want in pairs(base.mutated) do
    assert.equal(want, now[cid], label .. ": state of " .. cid)
  end
  for _, m in ipairs(fleet.members) do assert.equal("running", m.status, label) end
  loads_only_while_stopped(home, label)
  local st = json.decode(helpers.fleetsnap(home, { "--json", "restore", "status", b }).stdout)
  assert.equal("undone", st.phase, label)
end

local function check(home, b, label, opts)
  if opts and opts.undo then return check_undone(home, b, label) end
  -- One `sim show` gives both the states and the statuses.
  local fleet = helpers.fleet(home)
  local now = {}
  for _, m in ipairs(fleet.members) do now[m.canister_id] = m.state_sha256 end
  local effects = helpers.effects(home)
  for cid, want in pairs(base.backed_up) do
    if cid ~= base.root then
      assert.equal(want, now[cid], label .. ": state of " .. cid)
      local e, e0 = effects[cid], base.effects[cid]
      assert.equal(1, e.snapshot_upload - e0.snapshot_upload, label .. ": uploads of " .. cid)
      assert.is_true(e.snapshot_load - e0.snapshot_load >= 1, label .. ": loads of " .. cid)
    end
  end
  for _, m in ipairs(fleet.members) do assert.equal("running", m.status, label) end
  loads_only_while_stopped(home, label)
  if not (opts and opts.keep) then
    -- Every uploaded snapshot (and any data-check snapshot) is gone again.
    for cid, e in pairs(effects) do
      local e0 = base.effects[cid]
      local made = (e.snapshot_upload - e0.snapshot_upload) + (e.snapshot_create - e0.snapshot_create)
      assert.is_true(e.snapshot_delete - e0.snapshot_delete >= made, label .. ": snapshots left on " .. cid)
    end
  end
  local left = fs.list(b .. "/restore")
  table.sort(left)
  assert.same({ "fleetsnap-restore-plan.json", "fleetsnap-restore.wal", "fleetsnap-restore.wal.lock" }, left, label)
end

-- Kills the restore command of `args` at the chosen failpoints (`sampling`:
-- options of `helpers.choose_failpoints`) and checks each recovery (`opts`
-- of `check`); returns how many cases ran and how many sites it has.
local function loop(label, args, sampling, opts)
  local chosen, sites, total = trace_points(label, args, sampling)
  assert.is_true(total > 20, "only " .. total .. " failpoints")
  assert.is_true(sites > 20, "only " .. sites .. " sites")
  helpers.crash_loop(chosen, function()
    local work = helpers.sh("mktemp -d /tmp/fsn-rcrash-XXXXXX"):gsub("%s+$", "")
    local home, b = work .. "/home", work .. "/b"
    helpers.sh(string.format("cp -a %s %s && cp -a %s %s", base.home, home, base.backup, b))
    return { work = work, home = home, b = b, argv = run_argv(home, b, args) }
  end, function(case)
    local done = finish(case.home, case.b, args)
    assert.equal(0, done.status, case.point .. ": " .. done.stderr)
    check(case.home, case.b, case.point, opts)
  end)
  return #chosen, sites
end

describe("restore crash safety", function()
  after_each(function() helpers.cleanup() end)

  describe("a plain restore", function()
    setup(function() base = prepare() end)
    teardown(function() helpers.sh("rm -rf " .. base.dir) end)

    it("survives a SIGKILL at every failpoint site at concurrency 1", function()
      local n = loop("restore", {}, { per_site = "ends", extra = 16 })
      assert.is_true(n > 50, "only " .. n .. " cases")
    end)
  end)

  describe("restore undo", function()
    setup(function() base = prepare({ "--safety-snapshot" }) end)
    teardown(function() helpers.sh("rm -rf " .. base.dir) end)

    it("survives a SIGKILL at every failpoint site", function()
      local n, sites = loop("restore undo", { "undo" }, { per_site = "ends" }, { undo = true })
      assert.is_true(n > sites, "only " .. n .. " cases")
    end)
  end)

  describe("with --safety-snapshot and --verify-data", function()
    setup(function() base = prepare() end)
    teardown(function() helpers.sh("rm -rf " .. base.dir) end)

    it("survives a SIGKILL at every failpoint site", function()
      local n, sites = loop("restore --safety-snapshot --verify-data",
        { "--safety-snapshot", "--verify-data", "--keep-uploaded" }, { per_site = "one" }, { keep = true })
      assert.is_true(n >= sites)
    end)
  end)
end)
