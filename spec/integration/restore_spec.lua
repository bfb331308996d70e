-- fleetsnap restore against icp-sim: in place, mapped and subtree
-- restores, faults at each phase, abort, safety snapshots and undo, the
-- data check, upstream layouts, preflight refusals.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local executor = require "fleetsnap.exec.executor"

local json, fs = engine.json, engine.fs

-- One backed-up fleet, mutated afterwards, copied for every test.
local base

local digests = helpers.digests

local function prepare()
  local dir = helpers.sh("mktemp -d /tmp/fsn-restore-base-XXXXXX"):gsub("%s+$", "")
  local home = dir .. "/home"
  helpers.sh("cp -a " .. helpers.sim_home() .. " " .. home)
  local r = helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b" })
  assert(r.status == 0, r.stderr)
  local b = { dir = dir, home = home, backup = dir .. "/b", fleet = helpers.fleet(home) }
  b.backed_up = digests(home)
  b.effects = helpers.effects(home)
  assert(helpers.icp(home, { "sim", "mutate", "--all" }).status == 0)
  b.mutated = digests(home)
  b.members = {}
  for _, m in ipairs(b.fleet.members) do
    if m.canister_id ~= b.fleet.root then b.members[#b.members + 1] = m end
  end
  return b
end

local function fresh()
  local work = helpers.tmpdir()
  helpers.sh(string.format("cp -a %s %s/home && cp -a %s %s/b", base.home, work, base.backup, work))
  return work .. "/home", work .. "/b", work
end

-- Effects since the backup, per canister.
local function delta(home)
  local now, out = helpers.effects(home), {}
  for cid, e in pairs(now) do
    local d = {}
    for k, v in pairs(e) do d[k] = v - (base.effects[cid][k] or 0) end
    out[cid] = d
  end
  return out
end

local function snapshot_count(home, cid)
  local r = helpers.icp(home, { "canister", "snapshot", "list", cid, "--json", "-e", "local" })
  assert(r.status == 0, r.stderr)
  return #json.decode(r.stdout).snapshots
end

local function restore(home, _, argv, env)
  local full = { "restore" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return helpers.fleetsnap(home, full, env)
end

-- After a SIGKILL, icp commands of the dead runner may still be finishing
-- (they hold their command locks, exit 4): run again once they are gone.
local function rerun(home, b, argv, env)
  local r
  for _ = 1, 10 do
    r = restore(home, b, argv, env)
    if r.status ~= 4 then return r end
    engine.sleep_ms(300)
  end
  return r
end

local function plan_and_run(home, b, plan_args, run_args, env)
  local p = { "plan", b }
  for _, a in ipairs(plan_args or {}) do p[#p + 1] = a end
  local r = restore(home, b, p)
  assert.equal(0, r.status, r.stderr)
  local x = { "run", b, "--execute" }
  for _, a in ipairs(run_args or {}) do x[#x + 1] = a end
  return restore(home, b, x, env)
end

local function status(home, b)
  local r = helpers.fleetsnap(home, { "--json", "restore", "status", b })
  assert.equal(0, r.status, r.stderr)
  return json.decode(r.stdout)
end

local function all_running(home)
  for _, m in ipairs(helpers.fleet(home).members) do
    if m.status ~= "running" then return false, m.canister_id .. " is " .. m.status end
  end
  return true
end

local function restored(home, which)
  local now = digests(home)
  for _, m in ipairs(which or base.members) do
    if now[m.canister_id] ~= base.backed_up[m.canister_id] then return false, m.canister_id end
  end
  return true
end

describe("fleetsnap restore", function()
  setup(function() base = prepare() end)
  teardown(function() helpers.sh("rm -rf " .. base.dir) end)
  after_each(function() helpers.cleanup() end)

  describe("in place", function()
    it("puts every member back to the backup's state with one upload and one load each", function()
      local home, b = fresh()
      local r = plan_and_run(home, b)
      assert.equal(0, r.status, r.stderr)
      assert.matches("complete: 6 member%(s%), stopped window", r.stdout)
      assert.is_true(restored(home))
      assert.is_true(all_running(home))
      local d = delta(home)
      for _, m in ipairs(base.members) do
        assert.same({ stop = 1, start = 1, snapshot_create = 0, snapshot_load = 1, snapshot_upload = 1,
          snapshot_delete = 1 }, d[m.canister_id], m.canister_id)
      end
      -- The root was not in the backup and is left alone.
      assert.equal(0, d[base.fleet.root].stop)
      assert.equal("complete", status(home, b).phase)
    end)

    it("deletes only the snapshots it uploaded", function()
      local home, b = fresh()
      local before = snapshot_count(home, base.members[1].canister_id)
      assert.equal(0, plan_and_run(home, b).status)
      assert.equal(before, snapshot_count(home, base.members[1].canister_id))
    end)

    it("keeps the uploaded snapshots with --keep-uploaded", function()
      local home, b = fresh()
      local before = snapshot_count(home, base.members[1].canister_id)
      assert.equal(0, plan_and_run(home, b, {}, { "--keep-uploaded" }).status)
      assert.equal(before + 1, snapshot_count(home, base.members[1].canister_id))
    end)

    it("leaves no staging, data-check or command-lock directory behind", function()
      local home, b = fresh()
      assert.equal(0, plan_and_run(home, b, {}, { "--verify-data" }).status)
      assert.same({ "fleetsnap-restore-plan.json", "fleetsnap-restore.wal", "fleetsnap-restore.wal.lock" },
        (function() local l = fs.list(b .. "/restore") table.sort(l) return l end)())
    end)

    it("runs again as a no-op once complete", function()
      local home, b = fresh()
      assert.equal(0, plan_and_run(home, b).status)
      local e = helpers.effects(home)
      local r = restore(home, b, { "run", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.matches("already complete", r.stdout)
      assert.same(e, helpers.effects(home))
    end)

    it("previews the exact icp command lines by default, changing nothing", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = restore(home, b, { "run", b })
      assert.equal(0, r.status, r.stderr)
      local cid = base.members[1].canister_id
      assert.matches("canister snapshot upload " .. cid .. " --input " .. b .. "/restore/staging/" .. cid
        .. " --json -e local", r.stdout, 1, true)
      assert.matches("canister snapshot restore " .. cid, r.stdout, 1, true)
      assert.same(base.mutated, digests(home))
      for _, e in pairs(delta(home)) do assert.equal(0, e.snapshot_upload + e.stop) end
    end)

    it("pauses after --max-steps and continues where it stopped", function()
      local home, b = fresh()
      local r = plan_and_run(home, b, {}, { "--max-steps", "3" })
      assert.equal(0, r.status, r.stderr)
      assert.matches("paused after %-%-max%-steps: 3/", r.stdout)
      assert.equal(3, status(home, b).counts.completed)
      r = restore(home, b, { "run", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
    end)

    it("refuses options that contradict each other (exit 2)", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      assert.equal(2, restore(home, b, { "run", b, "--dry-run", "--retry-failed" }).status)
      assert.equal(2, restore(home, b, { "run", b, "--abort", "--max-steps", "2" }).status)
      assert.equal(2, restore(home, b, { "run", b, "--dry-run", "--execute" }).status)
    end)

    it("reports progress, the next operations and failures with status --json", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local s = status(home, b)
      assert.equal("planned", s.phase)
      assert.equal(#base.members, #s.next)
      assert.equal(0, s.counts.completed)
    end)

    it("adopts an identical plan and refuses a different one while a restore is unfinished (exit 5)", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = restore(home, b, { "plan", b })
      assert.equal(0, r.status)
      assert.matches("%(adopted%)", r.stdout)
      assert.equal(0, restore(home, b, { "run", b, "--execute", "--max-steps", "1" }).status)
      r = restore(home, b, { "plan", b, "--subtree", base.members[1].role })
      assert.equal(5, r.status)
      assert.matches("not finished", r.stderr)
    end)

    it("keeps a finished restore as a record when a new one is planned", function()
      local home, b = fresh()
      assert.equal(0, plan_and_run(home, b).status)
      local r = restore(home, b, { "plan", b, "--subtree", base.members[1].role })
      assert.equal(0, r.status, r.stderr)
      assert.matches("previous restore kept in", r.stdout)
    end)
  end)

  describe("mapped and partial", function()
    it("restores one member's backup into another canister", function()
      local home, b, work = fresh()
      local src, dst = base.members[#base.members], base.members[#base.members - 1]
      local map = work .. "/map.json"
      helpers.write(map, json.encode({ members = { { source_canister = src.canister_id,
        target_canister = dst.canister_id } } }))
      local r = plan_and_run(home, b, { "--members", src.canister_id, "--mapping", map })
      assert.equal(0, r.status, r.stderr)
      local now = digests(home)
      assert.equal(base.backed_up[src.canister_id], now[dst.canister_id])
      -- The source canister itself is untouched.
      assert.equal(base.mutated[src.canister_id], now[src.canister_id])
      assert.equal(0, delta(home)[src.canister_id].stop)
    end)

    it("restores a subtree and nothing else", function()
      local home, b = fresh()
      local top = base.members[1]
      local r = plan_and_run(home, b, { "--subtree", top.role })
      assert.equal(0, r.status, r.stderr)
      local inside = { [top.canister_id] = true }
      for _ = 1, 4 do
        for _, m in ipairs(base.members) do
          if m.parent and inside[m.parent] then inside[m.canister_id] = true end
        end
      end
      local now, d = digests(home), delta(home)
      for _, m in ipairs(base.members) do
        if inside[m.canister_id] then
          assert.equal(base.backed_up[m.canister_id], now[m.canister_id])
        else
          assert.equal(base.mutated[m.canister_id], now[m.canister_id])
          assert.equal(0, d[m.canister_id].stop)
        end
      end
    end)

    it("refuses a target that does not exist in preflight, before anything (exit 5)", function()
      local home, b, work = fresh()
      local src = base.members[1]
      local map = work .. "/map.json"
      local ghost = require("fleetsnap.principal").canister_id(999999)
      helpers.write(map, json.encode({ members = { { source_canister = src.canister_id, target_canister = ghost } } }))
      local r = plan_and_run(home, b, { "--members", src.canister_id, "--mapping", map })
      assert.equal(5, r.status)
      assert.matches(ghost .. ": does not exist", r.stderr, 1, true)
      for _, e in pairs(delta(home)) do assert.equal(0, e.snapshot_upload + e.stop) end
    end)

    it("refuses a malformed mapping file, naming it (exit 7)", function()
      local home, b, work = fresh()
      local map = work .. "/map.json"
      helpers.write(map, "{\"members\": [{\"source_canister\": 1}]}")
      local r = restore(home, b, { "plan", b, "--mapping", map })
      assert.equal(7, r.status)
      assert.matches(map, r.stderr, 1, true)
    end)
  end)

  describe("refusals before any effect", function()
    it("refuses an unverified backup, naming the corrupt member (exit 6)", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      local path = b .. "/" .. cid .. "/wasm_memory.bin"
      local data = helpers.read(path)
      helpers.write(path, data:sub(1, 10) .. string.char((data:byte(11) + 1) % 256) .. data:sub(12))
      local r = restore(home, b, { "plan", b })
      assert.equal(6, r.status)
      assert.matches(cid, r.stderr, 1, true)
      assert.is_nil(fs.lstat(b .. "/restore/fleetsnap-restore-plan.json"))
    end)

    it("refuses when a target has no free snapshot slot, stopping nothing (exit 5)", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b, "--snapshot-limit", "1" }).status)
      local r = restore(home, b, { "run", b, "--execute" }, { ICP_SIM_SNAPSHOT_LIMIT = "1" })
      assert.equal(5, r.status)
      assert.matches("snapshot slots are taken", r.stderr)
      for _, e in pairs(delta(home)) do assert.equal(0, e.snapshot_upload + e.stop) end
    end)

    it("refuses when the operator does not control a target (exit 5)", function()
      local home, b = fresh()
      local cid = base.members[3].canister_id
      local r = plan_and_run(home, b, {}, {}, { ICP_SIM_NOT_CONTROLLER = "*@" .. cid })
      assert.equal(5, r.status)
      assert.matches(cid .. ": the operator", r.stderr, 1, true)
    end)

    it("refuses a backup whose manifest changed since the plan (exit 7)", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local path = b .. "/fleet-backup-manifest.json"
      helpers.write(path, helpers.read(path) .. "\n")
      local r = restore(home, b, { "run", b, "--execute" })
      assert.equal(7, r.status)
      assert.matches("changed since restore", r.stderr)
    end)

    it("refuses a second runner on the same restore (exit 4)", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local lock = assert(engine.lock.acquire(b .. "/restore/fleetsnap-restore.wal.lock"))
      local r = restore(home, b, { "run", b, "--execute" })
      lock:close()
      assert.equal(4, r.status)
    end)

    it("says there is no plan yet (exit 3)", function()
      local home, b = fresh()
      local r = restore(home, b, { "run", b, "--execute" })
      assert.equal(3, r.status)
      assert.matches("restore plan", r.stderr)
    end)
  end)

  describe("faults", function()
    local function fault_then_retry(env, expect_code, check)
      local home, b = fresh()
      local r = plan_and_run(home, b, {}, {}, env)
      assert.equal(expect_code, r.status, r.stderr)
      local s = status(home, b)
      assert.equal("failed", s.phase)
      assert.equal(1, #s.failed)
      if check then check(home, s, r) end
      r = restore(home, b, { "run", b, "--retry-failed" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
      assert.is_true(all_running(home))
      for _, e in pairs(delta(home)) do assert.is_true(e.snapshot_upload <= 1) end
      return home
    end

    it("an upload that keeps failing fails before anything is stopped (exit 1)", function()
      local cid = base.members[2].canister_id
      fault_then_retry({ ICP_SIM_FAIL = "snapshot.upload@" .. cid }, 1, function(home, s)
        assert.equal("upload-" .. cid, s.failed[1].op)
        for _, e in pairs(delta(home)) do assert.equal(0, e.stop) end
      end)
    end)

    it("a transient upload failure is retried within the run", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      local r = plan_and_run(home, b, {}, {}, { ICP_SIM_FAIL = "snapshot.upload@" .. cid .. "#1" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
    end)

    it("an upload whose answer is lost is found by the inventory, not repeated", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      local r = plan_and_run(home, b, {}, {}, { ICP_SIM_FAIL_AFTER = "snapshot.upload@" .. cid .. "#1" })
      assert.equal(0, r.status, r.stderr)
      assert.equal(1, delta(home)[cid].snapshot_upload)
      assert.is_true(restored(home))
    end)

    it("an upload broken part-way is resumed into the same snapshot", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      local r = plan_and_run(home, b, {}, {}, { ICP_SIM_CRASH = "snapshot.upload@" .. cid .. "#1:1000:error" })
      assert.equal(0, r.status, r.stderr)
      assert.equal(1, delta(home)[cid].snapshot_upload)
      assert.is_true(restored(home))
      local log = helpers.read(home .. "/log.jsonl")
      assert.matches("\"--resume\"", log, 1, true)
    end)

    it("a failed stop leaves the others stopped and loads nothing (exit 1)", function()
      local cid = base.members[4].canister_id
      fault_then_retry({ ICP_SIM_FAIL = "stop@" .. cid }, 1, function(home, s)
        assert.equal("stop-" .. cid, s.failed[1].op)
        assert.is_false(s.loads_begun)
        for _, e in pairs(delta(home)) do assert.equal(0, e.snapshot_load) end
      end)
    end)

    it("a failed load is never reported done, and nothing starts (exit 1)", function()
      local cid = base.members[3].canister_id
      fault_then_retry({ ICP_SIM_FAIL = "snapshot.restore@" .. cid }, 1, function(home, s, r)
        assert.equal("load-" .. cid, s.failed[1].op)
        assert.matches("loads have begun", r.stderr)
        assert.equal(base.mutated[cid], digests(home)[cid])
        for _, e in pairs(delta(home)) do assert.equal(0, e.start) end
      end)
    end)

    it("a failed start stops the run after every load (exit 1)", function()
      local cid = base.members[5].canister_id
      fault_then_retry({ ICP_SIM_FAIL = "start@" .. cid }, 1, function(_, s)
        assert.equal("start-" .. cid, s.failed[1].op)
      end)
    end)

    it("a failed verification leaves the restore incomplete (exit 1)", function()
      local cid = base.members[1].canister_id
      -- status of cid: preflight, the load's stopped proof, the start's
      -- proof, then verification.
      fault_then_retry({ ICP_SIM_FAIL = "status@" .. cid .. "#4+" }, 1, function(_, s)
        assert.equal("verify-" .. cid, s.failed[1].op)
      end)
    end)

    it("kills a hanging load at the timeout, records it failed, and retries it (exit 1)", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = helpers.fleetsnap(home, { "--timeout", "3", "restore", "run", b, "--execute" },
        { ICP_SIM_HANG = "snapshot.restore@" .. cid })
      assert.equal(1, r.status)
      assert.matches("did not finish within 3 s", r.stderr)
      assert.equal("load-" .. cid, status(home, b).failed[1].op)
      r = restore(home, b, { "run", b, "--retry-failed" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
    end)

    it("an unreachable network fails preflight, before anything (exit 1)", function()
      local home, b = fresh()
      local r = plan_and_run(home, b, {}, {}, { ICP_SIM_UNREACHABLE = "1" })
      assert.equal(1, r.status)
      assert.matches("preflight", r.stderr)
      for _, e in pairs(delta(home)) do assert.equal(0, e.snapshot_upload + e.stop) end
      assert.equal("planned", status(home, b).phase)
    end)

    it("refuses a load into a canister that is not stopped (exit 5)", function()
      local cid = base.members[2].canister_id
      fault_then_retry({ ICP_SIM_STOP_NOOP = "stop@" .. cid }, 5, function(home, s)
        assert.equal("load-" .. cid, s.failed[1].op)
        assert.equal(0, delta(home)[cid].snapshot_load)
      end)
    end)
  end)

  describe("abort", function()
    it("before the first load restarts the targets and deletes the uploads", function()
      local home, b = fresh()
      local cid = base.members[4].canister_id
      local before = snapshot_count(home, cid)
      assert.equal(1, plan_and_run(home, b, {}, {}, { ICP_SIM_FAIL = "stop@" .. cid }).status)
      local r = restore(home, b, { "run", b, "--abort" })
      assert.equal(0, r.status, r.stderr)
      assert.matches("aborted", r.stdout)
      assert.is_true(all_running(home))
      assert.equal(before, snapshot_count(home, cid))
      assert.same(base.mutated, digests(home))
      assert.equal("aborted", status(home, b).phase)
      r = restore(home, b, { "run", b, "--execute" })
      assert.equal(5, r.status)
      assert.matches("was aborted", r.stderr)
    end)

    it("deletes the safety snapshots it took too", function()
      local home, b = fresh()
      local cid = base.members[6].canister_id
      local before = snapshot_count(home, base.members[1].canister_id)
      assert.equal(1, plan_and_run(home, b, {}, { "--safety-snapshot" }, { ICP_SIM_FAIL = "snapshot.create@" .. cid })
        .status)
      -- Its upload and its safety snapshot.
      assert.equal(before + 2, snapshot_count(home, base.members[1].canister_id))
      local r = restore(home, b, { "run", b, "--abort" })
      assert.equal(0, r.status, r.stderr)
      assert.equal(before, snapshot_count(home, base.members[1].canister_id))
      assert.is_true(all_running(home))
    end)

    it("killed part-way, finishes when run again", function()
      local home, b = fresh()
      local cid = base.members[6].canister_id
      assert.equal(1, plan_and_run(home, b, {}, {}, { ICP_SIM_FAIL = "stop@" .. cid }).status)
      local first = base.members[1].canister_id
      -- The failed run restarted the targets it stopped; the abort deletes
      -- the uploads, and is killed after the first delete.
      local r = restore(home, b, { "run", b, "--abort" }, { FLEETSNAP_FAILPOINT = "after-effect@snapshot_delete-"
        .. first .. ":1" })
      assert.equal(9, r.signal, r.stderr)
      r = rerun(home, b, { "run", b, "--execute" })
      assert.equal(5, r.status)
      assert.matches("an abort of this restore was begun", r.stderr)
      assert.matches("next: .*restore run %S+ %-%-abort", r.stderr)
      r = restore(home, b, { "run", b, "--abort" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(all_running(home))
      for _, e in pairs(delta(home)) do assert.equal(e.snapshot_upload, e.snapshot_delete) end
    end)

    it("is refused once a load has begun (exit 5)", function()
      local home, b = fresh()
      local cid = base.members[5].canister_id
      assert.equal(1, plan_and_run(home, b, {}, {}, { ICP_SIM_FAIL = "start@" .. cid }).status)
      local r = restore(home, b, { "run", b, "--abort" })
      assert.equal(5, r.status)
      assert.matches("cannot be aborted", r.stderr)
    end)
  end)

  describe("safety snapshots and undo", function()
    it("undo puts the pre-restore state back", function()
      local home, b = fresh()
      local r = plan_and_run(home, b, {}, { "--safety-snapshot" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
      r = restore(home, b, { "undo", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.same(base.mutated, digests(home))
      assert.is_true(all_running(home))
      assert.equal("undone", status(home, b).phase)
    end)

    it("undo is a dry run without --execute: it lists the operations and loads nothing", function()
      local home, b = fresh()
      assert.equal(0, plan_and_run(home, b, {}, { "--safety-snapshot" }).status)
      local before = helpers.effects(home)
      local r = helpers.fleetsnap(home, { "--json", "restore", "undo", b })
      assert.equal(0, r.status, r.stderr)
      local doc = json.decode(r.stdout)
      assert.equal("undo-dry-run", doc.type)
      assert.is_true(#doc.operations > 0)
      assert.same(before, helpers.effects(home))
      assert.is_true(restored(home))
      assert.equal("complete", status(home, b).phase)
    end)

    it("undo after a failed load puts every target back and starts it", function()
      local home, b = fresh()
      local cid = base.members[3].canister_id
      assert.equal(1, plan_and_run(home, b, {}, { "--safety-snapshot" },
        { ICP_SIM_FAIL = "snapshot.restore@" .. cid }).status)
      local r = restore(home, b, { "undo", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.same(base.mutated, digests(home))
      assert.is_true(all_running(home))
    end)

    it("the restore cannot go forward again once undone (exit 5)", function()
      local home, b = fresh()
      local cid = base.members[3].canister_id
      assert.equal(1, plan_and_run(home, b, {}, { "--safety-snapshot" },
        { ICP_SIM_FAIL = "snapshot.restore@" .. cid }).status)
      assert.equal(0, restore(home, b, { "undo", b, "--execute" }).status)
      local r = restore(home, b, { "run", b, "--retry-failed" })
      assert.equal(5, r.status)
      assert.matches("undone", r.stderr)
      assert.same(base.mutated, digests(home))
    end)

    it("undo is refused without safety snapshots (exit 5)", function()
      local home, b = fresh()
      assert.equal(0, plan_and_run(home, b).status)
      assert.equal(5, restore(home, b, { "undo", b, "--execute" }).status)
    end)

    it("options cannot change once a restore has begun (exit 2)", function()
      local home, b = fresh()
      assert.equal(0, plan_and_run(home, b, {}, { "--max-steps", "1" }).status)
      local r = restore(home, b, { "run", b, "--execute", "--safety-snapshot" })
      assert.equal(2, r.status)
    end)
  end)

  describe("verification by the policy's checks", function()
    local function check_policy(work, expect)
      local file = work .. "/checks.lua"
      helpers.write(file, [[return { name = "checked", summary = "test",
        plan = function(sel, plan) end,
        checks = function(m) return { { method = "health", expect_hex = "]] .. expect .. [[" } } end }]])
      return file
    end
    local function canned(home, hex)
      for _, m in ipairs(base.members) do
        helpers.sh("mkdir -p " .. home .. "/canisters/" .. m.canister_id .. "/calls")
        helpers.write(home .. "/canisters/" .. m.canister_id .. "/calls/health.json", json.encode({ reply_hex = hex }))
      end
    end

    it("completes when every restored member answers its checks", function()
      local home, b, work = fresh()
      canned(home, "4449444c00017e01")
      local r = plan_and_run(home, b, { "--policy", check_policy(work, "4449444c00017e01") })
      assert.equal(0, r.status, r.stderr)
      local log = helpers.read(home .. "/log.jsonl")
      local calls = 0
      for _ in log:gmatch('"call","[^"]+","health"') do calls = calls + 1 end
      assert.equal(#base.members, calls)
    end)

    it("fails the member's verification when a reply differs (exit 6)", function()
      local home, b, work = fresh()
      canned(home, "4449444c00017e00")
      local r = plan_and_run(home, b, { "--policy", check_policy(work, "4449444c00017e01") })
      assert.equal(6, r.status)
      assert.matches("check health of %S+ after the restore: reply 4449444c00017e00, expected 4449444c00017e01",
        r.stderr)
      assert.equal("failed", status(home, b).phase)
    end)
  end)

  describe("--json", function()
    it("streams events and ends with a result", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = helpers.fleetsnap(home, { "--json", "restore", "run", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      local types, last = {}, nil
      for line in r.stdout:gmatch("[^\n]+") do
        last = json.decode(line)
        types[last.type] = (types[last.type] or 0) + 1
      end
      assert.equal("result", last.type)
      assert.equal("complete", last.status)
      assert.equal(last.operations, types["operation-completed"])
    end)

    it("reports a failure as an error document with its exit code", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = helpers.fleetsnap(home, { "--json", "restore", "run", b, "--execute" },
        { ICP_SIM_FAIL = "start@" .. base.members[1].canister_id })
      assert.equal(1, r.status)
      local last
      for line in r.stdout:gmatch("[^\n]+") do last = json.decode(line) end
      assert.equal("error", last.type)
      assert.equal(1, last.exit)
    end)
  end)

  describe("--verify-data", function()
    it("proves the loaded data equals the backup's", function()
      local home, b = fresh()
      local r = plan_and_run(home, b, {}, { "--verify-data" })
      assert.equal(0, r.status, r.stderr)
      for _, e in pairs(delta(home)) do assert.equal(e.snapshot_create, e.snapshot_delete - e.snapshot_upload) end
    end)

    it("catches a load that did not take, and leaves the member stopped (exit 6)", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      local before = snapshot_count(home, cid)
      local r = plan_and_run(home, b, {}, { "--verify-data", "--keep-uploaded" },
        { ICP_SIM_SILENT_SUCCESS = "snapshot.restore@" .. cid })
      assert.equal(6, r.status, r.stderr)
      assert.matches("data check of " .. cid, r.stderr, 1, true)
      assert.matches("wasm_memory.bin differs", r.stderr, 1, true)
      local s = status(home, b)
      assert.equal("verify-data-" .. cid, s.failed[1].op)
      for _, m in ipairs(helpers.fleet(home).members) do
        if m.canister_id == cid then assert.equal("stopped", m.status) end
      end
      -- The check snapshot is gone; only the upload was added.
      assert.equal(before + 1, snapshot_count(home, cid))
    end)
  end)

  describe("catalogue scenarios", function()
    local function crash_then_finish(point)
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = restore(home, b, { "run", b, "--execute" }, { FLEETSNAP_FAILPOINT = point })
      assert.equal(9, r.signal, point .. ": " .. r.stderr)
      r = rerun(home, b, { "run", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
      assert.is_true(all_running(home))
      return home, b
    end

    it("RS-05: a symlinked staging root is refused, nothing uploaded (exit 7)", function()
      local home, b, work = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      helpers.sh("mkdir " .. work .. "/elsewhere && ln -s " .. work .. "/elsewhere " .. b .. "/restore/staging")
      local r = restore(home, b, { "run", b, "--execute" })
      assert.equal(7, r.status, r.stderr)
      assert.matches("staging root", r.stderr)
      for _, e in pairs(delta(home)) do assert.equal(0, e.snapshot_upload) end
      assert.same({}, fs.list(work .. "/elsewhere"))
    end)

    it("RS-19: an upload committed before the crash is found by the inventory, not repeated", function()
      local cid = base.members[2].canister_id
      local home = crash_then_finish("after-effect@snapshot_upload-" .. cid .. ":1")
      assert.equal(1, delta(home)[cid].snapshot_upload)
    end)

    it("RS-18/21: a load claimed before the crash runs once, after a fresh stopped proof", function()
      local cid = base.members[3].canister_id
      local home = crash_then_finish("before-effect@snapshot_restore-" .. cid .. ":1")
      assert.equal(1, delta(home)[cid].snapshot_load)
    end)

    it("RS-20: a stop committed before the crash is settled by status, not repeated", function()
      local cid = base.members[4].canister_id
      local home = crash_then_finish("after-effect@stop-" .. cid .. ":1")
      assert.equal(1, delta(home)[cid].stop)
    end)

    it("RS-22: a start committed before the crash is settled by status, not repeated", function()
      local cid = base.members[4].canister_id
      local home = crash_then_finish("after-effect@start-" .. cid .. ":1")
      assert.equal(1, delta(home)[cid].start)
    end)

    it("an adopted upload that proves not loadable is uploaded again on --retry-failed", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      assert.equal(0, restore(home, b, { "plan", b }).status)
      -- icp dies right after creating the snapshot, and fleetsnap with it.
      local r = restore(home, b, { "run", b, "--execute" }, {
        ICP_SIM_CRASH = "snapshot.upload@" .. cid .. "#1:0:kill",
        FLEETSNAP_FAILPOINT = "after-effect@snapshot_upload-" .. cid .. ":1" })
      assert.equal(9, r.signal, r.stderr)
      -- The instant before icp writes its progress file.
      os.remove(b .. "/restore/staging/" .. cid .. "/.upload_progress.json")
      r = rerun(home, b, { "run", b, "--execute" })
      assert.equal(5, r.status, r.stderr)
      assert.matches("not currently loadable", r.stderr)
      r = restore(home, b, { "run", b, "--retry-failed" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
      local d = delta(home)[cid]
      assert.equal(1, d.snapshot_upload)
      assert.equal(d.snapshot_upload + 1, d.snapshot_delete)
    end)

    it("RS-38: a command of a dead runner still holding its lock blocks the run (exit 4)", function()
      local home, b = fresh()
      local cid = base.members[2].canister_id
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = restore(home, b, { "run", b, "--execute" },
        { FLEETSNAP_FAILPOINT = "after-effect@snapshot_upload-" .. cid .. ":1" })
      assert.equal(9, r.signal)
      local journal = helpers.read(b .. "/restore/fleetsnap-restore.wal")
      local lock = assert(engine.lock.acquire(b .. "/restore/.fleetsnap-commands/commands.lock",
        { range = executor.lock_byte("upload-" .. cid) }))
      r = restore(home, b, { "run", b, "--execute" })
      lock:close()
      assert.equal(4, r.status)
      assert.matches("still running", r.stderr)
      assert.equal(journal, helpers.read(b .. "/restore/fleetsnap-restore.wal"))
      assert.equal(0, rerun(home, b, { "run", b, "--execute" }).status)
      assert.equal(1, delta(home)[cid].snapshot_upload)
    end)

    it("RS-37: a rerun of a complete restore runs no command and changes no byte", function()
      local home, b = fresh()
      assert.equal(0, plan_and_run(home, b).status)
      local journal = helpers.read(b .. "/restore/fleetsnap-restore.wal")
      local log = helpers.read(home .. "/log.jsonl")
      assert.equal(0, restore(home, b, { "run", b, "--execute" }).status)
      assert.equal(journal, helpers.read(b .. "/restore/fleetsnap-restore.wal"))
      assert.equal(log, helpers.read(home .. "/log.jsonl"))
    end)

    it("restores a read-only backup with --state elsewhere, writing nothing into it", function()
      local home, b, work = fresh()
      local before = helpers.sh("cd " .. b .. " && find . -printf '%p %s %T@\\n' | sort")
      local state = work .. "/state"
      assert.equal(0, restore(home, b, { "plan", b, "--state", state }).status)
      local r = restore(home, b, { "run", b, "--execute", "--state", state })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
      assert.equal(before, helpers.sh("cd " .. b .. " && find . -printf '%p %s %T@\\n' | sort"))
      assert.equal("complete", json.decode(helpers.fleetsnap(home, { "--json", "restore", "status", b, "--state",
        state }).stdout).phase)
    end)

    it("X-08: prune never deletes a backup a restore is using", function()
      local home, b, work = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      assert.equal(0, restore(home, b, { "run", b, "--execute", "--max-steps", "2" }).status)
      local r = helpers.fleetsnap(nil, { "backup", "prune", "--dir", work, "--keep-last", "0", "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.matches("keep %(in use%)", r.stdout)
      assert.truthy(fs.lstat(b .. "/fleet-backup-manifest.json"))
    end)

    it("X-08: an undone restore no longer keeps its backup from prune", function()
      local home, b, work = fresh()
      assert.equal(0, plan_and_run(home, b, {}, { "--safety-snapshot" }).status)
      assert.equal(0, restore(home, b, { "undo", b, "--execute" }).status)
      local r = helpers.fleetsnap(nil, { "backup", "prune", "--dir", work, "--keep-last", "0", "--dry-run" })
      assert.equal(0, r.status, r.stderr)
      assert.matches("b +delete", r.stdout)
    end)

    it("a corrupt restore plan is refused by a new plan, its journal kept (exit 7)", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      assert.equal(0, restore(home, b, { "run", b, "--execute", "--max-steps", "2" }).status)
      local journal = helpers.read(b .. "/restore/fleetsnap-restore.wal")
      helpers.write(b .. "/restore/fleetsnap-restore-plan.json", "{\"format\": ")
      local r = restore(home, b, { "plan", b, "--subtree", base.members[1].role })
      assert.equal(7, r.status)
      assert.matches("fleetsnap-restore-plan.json", r.stderr, 1, true)
      assert.equal(journal, helpers.read(b .. "/restore/fleetsnap-restore.wal"))
    end)

    it("X-09: a backup moved after planning is restored from where it is now", function()
      local home, b, work = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      assert.equal(0, restore(home, b, { "run", b, "--execute", "--max-steps", "3" }).status)
      helpers.sh("mv " .. b .. " " .. work .. "/moved")
      local r = restore(home, nil, { "run", work .. "/moved", "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
    end)

    it("X-14: a restore planned for one environment does not run against another (exit 5)", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local r = helpers.fleetsnap(home, { "-e", "staging", "restore", "run", b, "--execute" })
      assert.equal(5, r.status)
      assert.matches("planned for environment local", r.stderr)
    end)

    it("exits 130 on SIGINT and continues on the next run", function()
      local home, b = fresh()
      assert.equal(0, restore(home, b, { "plan", b }).status)
      local h = engine.proc.spawn({ argv = { helpers.root .. "/scripts/fleetsnap", "--sim", home, "restore", "run", b,
        "--execute" }, env = { ICP_SIM_HANG = "snapshot.restore", RUST_BACKTRACE = "0" },
        unset_env = { "LD_PRELOAD" } })
      local deadline = os.time() + 60
      repeat
        engine.sleep_ms(100)
        local stopped = 0
        for _, e in pairs(delta(home)) do stopped = stopped + e.stop end
      until stopped == #base.members or os.time() > deadline
      engine.sleep_ms(300)
      engine.proc.signal(h:pid(), 2)
      local r = h:result()
      h:close()
      assert.equal(130, r.status, r.stderr)
      assert.matches("interrupted by SIGINT", r.stderr)
      assert.matches("next: .*restore run %S+ %-%-execute", r.stderr)
      r = restore(home, b, { "run", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.is_true(restored(home))
    end)
  end)

  describe("upstream layouts", function()
    local function to_upstream(b, line)
      local m = json.decode(helpers.read(b .. "/fleet-backup-manifest.json"))
      m.fleetsnap = nil
      m.tool = { name = "canic", version = line == "0.108" and "0.108.0" or "0.36.2" }
      os.remove(b .. "/fleetsnap-plan.json")
      os.remove(b .. "/fleetsnap-journal.wal")
      os.remove(b .. "/fleetsnap-journal.wal.lock")
      os.remove(b .. "/fleet-backup-manifest.json")
      if line == "0.108" then
        m.deployment, m.fleet = m.fleet, nil
        m.verification = { deployment_checks = json.array({}), member_checks = json.array({}) }
        helpers.write(b .. "/deployment-backup-manifest.json", json.encode(m))
      else
        -- 0.36 readers are lenient: absent nullable fields, unknown keys.
        for _, member in ipairs(m.fleet.members) do
          member.subnet_canister_id, member.controller_hint = nil, nil
          member.source_snapshot.code_version = nil
          member.upstream_only = true
        end
        helpers.write(b .. "/fleet-backup-manifest.json", json.encode(m))
      end
    end

    for _, line in ipairs({ "0.36", "0.108" }) do
      it("verifies and restores a " .. line .. " backup", function()
        local home, b = fresh()
        to_upstream(b, line)
        local r = helpers.fleetsnap(nil, { "backup", "verify", b })
        assert.equal(0, r.status, r.stdout .. r.stderr)
        r = plan_and_run(home, b)
        assert.equal(0, r.status, r.stderr)
        assert.is_true(restored(home))
      end)
    end

    it("refuses a 0.108 manifest with an unknown field (exit 7)", function()
      local home, b = fresh()
      to_upstream(b, "0.108")
      local path = b .. "/deployment-backup-manifest.json"
      local m = json.decode(helpers.read(path))
      m.extra = 1
      helpers.write(path, json.encode(m))
      local r = restore(home, b, { "plan", b })
      assert.equal(7, r.status)
      assert.matches("extra: unknown field", r.stderr)
    end)
  end)
end)
