-- fleetsnap restore drill against icp-sim: a drill that passes, one that
-- finds a corrupt artifact, one whose restored copy differs, SIGKILLs
-- mid-drill cleaned up by the next drill; no scratch canister is ever
-- started, and every one made is deleted (or, when its id was never
-- recorded, reported).
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "drill_support"

local json, fs = engine.json, engine.fs
local sim, scratch_alive = support.sim, support.scratch_alive

local base

local function fresh()
  local work = helpers.tmpdir()
  helpers.sh(string.format("cp -a %s %s/home && cp -a %s %s/b", base.home, work, base.backup, work))
  return work .. "/home", work .. "/b"
end

local function drill(home, b, args, env)
  local argv = { "restore", "drill", b }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return helpers.fleetsnap(home, argv, env)
end

-- After a SIGKILL, icp commands of the dead runner may still be finishing
-- (they hold their command locks, exit 4): run again once they are gone.
local function again(home, b, args)
  local r
  for _ = 1, 20 do
    r = drill(home, b, args)
    if r.status ~= 4 then return r end
    engine.sleep_ms(300)
  end
  return r
end

-- The last line of --json output: the result document.
local function result_doc(r)
  return support.last_doc(r.stdout)
end

-- The canisters `canister start` was run on, and those made by create.
local function started_and_created(home)
  local started, created = support.started(home), {}
  for _, id in ipairs(sim(home).deleted or {}) do created[id] = true end
  for _, id in ipairs(scratch_alive(home)) do created[id] = true end
  return started, created
end

local function assert_never_started(home)
  local started, created = started_and_created(home)
  local n = 0
  for id in pairs(created) do
    n = n + 1
    assert.is_nil(started[id], "scratch canister " .. id .. " was started")
  end
  return n
end

local function row_of(doc, cid)
  for _, r in ipairs(doc.members) do
    if r.canister_id == cid then return r end
  end
end

describe("restore drill", function()
  setup(function() base = support.prepare({ members = 3 }) end)
  teardown(function() helpers.sh("rm -rf " .. base.dir) end)
  after_each(function() helpers.cleanup() end)

  it("passes: every member restored into a scratch copy, data equal, the copies deleted, none started", function()
    local home, b = fresh()
    local before = helpers.digests(home)
    local r = drill(home, b, { "--json" })
    assert.equal(0, r.status, r.stderr)
    local doc = result_doc(r)
    assert.equal("restore-drill", doc.type)
    assert.equal("passed", doc.outcome)
    assert.equal(#base.members, #doc.members)
    local scratch = {}
    for _, cid in ipairs(base.members) do
      local row = row_of(doc, cid)
      assert.is_true(row.restored)
      assert.is_true(row.data_equal)
      assert.is_true(row.deleted)
      assert.is_true(math.type(row.time_ms) == "integer")
      assert.is_not.equal(cid, row.scratch_canister)
      scratch[#scratch + 1] = row.scratch_canister
    end
    table.sort(scratch)
    local deleted = sim(home).deleted
    table.sort(deleted)
    assert.same(scratch, deleted)
    assert.same({}, scratch_alive(home))
    assert.equal(#base.members, assert_never_started(home))
    -- The fleet itself is untouched.
    assert.same(before, helpers.digests(home))
    -- The text report names each member.
    r = drill(home, b, { "--members", base.members[1] })
    assert.equal(0, r.status, r.stderr)
    assert.matches("PASSED", r.stdout)
    assert.matches(base.members[1], r.stdout, 1, true)
    assert.is_nil(r.stdout:find(base.members[2], 1, true))
    assert.equal(#base.members + 1, assert_never_started(home))
    assert.same({}, scratch_alive(home))
  end)

  it("finds a corrupt artifact: that member is reported, not drilled; the rest are, and every copy is deleted",
    function()
      local home, b = fresh()
      local bad = base.members[2]
      local file = b .. "/" .. bad .. "/stable_memory.bin"
      local was = engine.hash.file(file)
      helpers.sh(string.format("printf X | dd of=%s bs=1 seek=7 conv=notrunc 2>/dev/null", file))
      assert.is_not.equal(was, engine.hash.file(file))
      local r = drill(home, b, { "--json" })
      assert.equal(6, r.status, r.stderr)
      local doc = result_doc(r)
      assert.equal("corrupt", doc.outcome)
      local row = row_of(doc, bad)
      assert.is_false(row.restored)
      assert.is_false(row.data_equal)
      assert.equal(json.null, row.scratch_canister)
      assert.matches("^artifact: ", row.problems[1])
      for _, cid in ipairs(base.members) do
        if cid ~= bad then
          assert.is_true(row_of(doc, cid).data_equal)
          assert.is_true(row_of(doc, cid).deleted)
        end
      end
      assert.equal(#base.members - 1, sim(home).detached_counter)
      assert.same({}, scratch_alive(home))
      assert.equal(#base.members - 1, assert_never_started(home))
    end)

  it("finds a restored copy whose data differs from the backup, and still deletes it", function()
    local home, b = fresh()
    local r = drill(home, b, { "--json" }, { ICP_SIM_CORRUPT = "snapshot.download#1" })
    assert.equal(6, r.status, r.stderr)
    local doc = result_doc(r)
    assert.equal("corrupt", doc.outcome)
    local differs = 0
    for _, row in ipairs(doc.members) do
      if not row.data_equal then
        differs = differs + 1
        assert.is_true(row.restored)
        assert.matches("differs from the backup", row.problems[1])
      end
      assert.is_true(row.deleted)
    end
    assert.equal(1, differs)
    assert.same({}, scratch_alive(home))
    assert.equal(#base.members, assert_never_started(home))
  end)

  it("fails (not corrupt) when the data check cannot run, and still deletes every copy", function()
    local home, b = fresh()
    local r = drill(home, b, { "--json" }, { ICP_SIM_FAIL = "snapshot.download#1+" })
    assert.equal(5, r.status, r.stderr)
    local doc = result_doc(r)
    assert.equal("failed", doc.outcome)
    for _, row in ipairs(doc.members) do
      assert.is_true(row.restored)
      assert.is_false(row.data_equal)
      assert.is_true(row.deleted)
    end
    assert.same({}, scratch_alive(home))
    assert.equal(#base.members, assert_never_started(home))
  end)

  -- After the creates, mid-restore (every copy stopped), mid-deletion (a
  -- delete claimed, not run). Delete claims are keyed by the member.
  for _, point in ipairs({ "after-link@fleetsnap-drill-mapping.json:1", "after-append@barrier-stopped:1",
    "after-append@delete-%s:1" }) do
    it("leaks no canister after a SIGKILL mid-drill (" .. point .. "): the next drill deletes the copies first",
      function()
        local home, b = fresh()
        local r = drill(home, b, {}, { FLEETSNAP_FAILPOINT = point:format(base.members[1]) })
        assert.equal(9, r.signal, r.stderr)
        assert.is_true(#scratch_alive(home) > 0)
        -- Its journal is the only record of the copies: pruning keeps the
        -- backup until a drill has deleted them.
        local in_use = require("fleetsnap.restore.state").in_use
        assert.is_true(in_use(b))
        r = again(home, b, { "--cleanup", "--json" })
        assert.equal(0, r.status, r.stderr)
        assert.is_false(in_use(b))
        local doc = result_doc(r)
        assert.is_true(doc.cleanup)
        assert.equal("interrupted", doc.earlier.outcome)
        assert.same({}, doc.earlier.unidentified)
        assert.same({}, scratch_alive(home))
        assert_never_started(home)
        -- The directory is free for the next drill, which passes.
        r = drill(home, b, {})
        assert.equal(0, r.status, r.stderr)
        assert.same({}, scratch_alive(home))
        assert_never_started(home)
      end)
  end

  it("reports a create whose id was never recorded (SIGKILL between icp's create and the record)", function()
    local home, b = fresh()
    local r = drill(home, b, {}, { FLEETSNAP_FAILPOINT = "after-effect@canister_create-nil:1" })
    assert.equal(9, r.signal, r.stderr)
    assert.equal(1, #scratch_alive(home))
    -- The next drill cleans up first, names the unidentified create, and
    -- then drills: its own copies are deleted.
    r = again(home, b, { "--json" })
    assert.equal(5, r.status, r.stderr)
    local doc = result_doc(r)
    assert.equal("interrupted", doc.earlier.outcome)
    assert.equal(1, #doc.earlier.unidentified)
    assert.equal("integer", math.type(doc.earlier.unidentified[1].claimed_at_ns))
    assert.equal("passed", doc.outcome)
    -- The one canister left is the one reported (found here only through
    -- icp-sim's own state, which no product code reads).
    assert.equal(1, #scratch_alive(home))
    assert_never_started(home)
    r = drill(home, b, {})
    assert.equal(0, r.status, r.stderr)
  end)

  it("deletes its copies when interrupted (SIGTERM during an upload), and says the next step is another drill",
    function()
      local home, b = fresh()
      local out = helpers.tmpdir()
      -- The upload hangs until the runner kills it; SIGTERM once icp-sim
      -- logged an upload.
      local rc = helpers.sh(string.format("cd %s && { ICP_SIM_HANG=snapshot.upload %s/scripts/fleetsnap --sim %s restore "
        .. "drill %s >%s/out 2>%s/err & p=$!; for i in $(seq 1 300); do grep -q '\"upload\"' %s/log.jsonl 2>/dev/null "
        .. "&& break; sleep 0.1; done; kill -TERM $p; wait $p; echo $?; }", helpers.root, helpers.root, home, b, out,
        out, home))
      assert.equal("130", rc:match("%d+"))
      local err = helpers.read(out .. "/err")
      -- The count said is the copies made: every one was deleted.
      local said = err:match("interrupted by SIGTERM; (%d+) scratch canister%(s%) deleted")
      assert.is_not_nil(said, err)
      assert.matches("next: [^\n]*restore drill", err)
      assert.is_true(sim(home).detached_counter > 0)
      assert.equal(sim(home).detached_counter, tonumber(said))
      assert.same({}, scratch_alive(home))
      assert_never_started(home)
    end)

  it("refuses a second drill of the same state directory while one runs", function()
    local home, b = fresh()
    local dir = b .. "/drill"
    assert.is_true(fs.mkdir_private(dir))
    local lock = engine.lock.acquire(dir .. "/fleetsnap-drill.wal.lock")
    local r = drill(home, b, {})
    assert.equal(4, r.status, r.stderr)
    lock:close()
    assert.equal(0, sim(home).detached_counter or 0)
  end)

  it("refuses --cycles that is not a count, before anything runs", function()
    local home, b = fresh()
    local r = drill(home, b, { "--cycles", "lots" })
    assert.equal(2, r.status)
    assert.matches("%-%-cycles", r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true))
  end)
end)
