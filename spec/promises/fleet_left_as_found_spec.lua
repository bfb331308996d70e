-- Promise: the fleet is left as found on every exit path of backup and
-- restore: an icp failure, a full disk (a real ENOSPC on a small tmpfs),
-- an internal error, SIGINT, SIGTERM and SIGHUP. What a run stopped and
-- was running, it starts again; what was stopped before stays stopped.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "promises.support"

local function backup_argv(out)
  return { "backup", "create", "--out", out }
end

describe("the fleet is left as found: backup", function()
  local home, work
  support.each_fleet(nil, function(h, w) home, work = h, w end)

  it("after an icp failure while members are stopped", function()
    local cid = support.members(home)[2]
    local r = helpers.fleetsnap(home, backup_argv(work .. "/b"), { ICP_SIM_FAIL = "snapshot.create@" .. cid })
    assert.equal(1, r.status, r.stderr)
    assert.is_true(support.stops(home) >= 4, "the members were stopped")
    support.assert_as_found(home)
    assert.matches("started again", r.stderr)
  end)

  it("after an internal error (a Lua error inside a run)", function()
    local cid = support.members(home)[1]
    local r = helpers.fleetsnap(home, backup_argv(work .. "/b"),
      { FLEETSNAP_FAULT_RAISE = "after-effect@snapshot_create-" .. cid })
    assert.equal(70, r.status, r.stderr)
    assert.matches("internal error", r.stderr)
    assert.is_true(support.stops(home) >= 4, "the members were stopped")
    support.assert_as_found(home)
    -- The run can be resumed to completion.
    r = helpers.fleetsnap(home, { "backup", "resume", work .. "/b" })
    assert.equal(0, r.status, r.stderr)
  end)

  for _, sig in ipairs({ { 2, "SIGINT" }, { 15, "SIGTERM" }, { 1, "SIGHUP" } }) do
    it("after " .. sig[2] .. " while members are stopped", function()
      local h = support.spawn(home, backup_argv(work .. "/b"), { ICP_SIM_HANG = "snapshot.create" })
      local r = support.signal_after_stops(h, home, 4, sig[1])
      assert.equal(130, r.status, r.stderr)
      assert.matches("interrupted by " .. sig[2], r.stderr)
      support.assert_as_found(home)
      r = helpers.fleetsnap(home, { "backup", "resume", work .. "/b" })
      assert.equal(0, r.status, r.stderr)
      support.assert_as_found(home)
    end)
  end

  it("after a full disk (ENOSPC on the backup's file system) while members are stopped", function()
    local mnt = work .. "/small"
    helpers.sh("mkdir -p " .. mnt .. " && mount -t tmpfs -o size=24m tmpfs " .. mnt)
    finally(function() engine.proc.run({ argv = { "umount", "-l", mnt } }) end)
    local h = support.spawn(home, backup_argv(mnt .. "/b"), { ICP_SIM_LATENCY_MS = "1500" })
    support.wait_for(function() return support.stops(home) >= 1 end, "the first stop")
    -- Fill the file system while the members are being stopped.
    engine.proc.run({ argv = { "sh", "-c", "dd if=/dev/zero of=" .. mnt .. "/fill bs=1M 2>/dev/null; true" } })
    local r = h:result()
    h:close()
    assert.is_true(support.stops(home) >= 1, "members were stopped")
    assert.equal(8, r.status, r.stderr)
    assert.matches("No space left on device", r.stderr)
    assert.matches("were started again", r.stderr)
    support.assert_as_found(home, {}, "after ENOSPC")
    os.remove(mnt .. "/fill")
    r = helpers.fleetsnap(home, { "backup", "resume", mnt .. "/b" })
    assert.equal(0, r.status, r.stderr)
    support.assert_as_found(home)
  end)

  it("after a full disk under icp's downloads: the file system's failure (exit 8), resumed once there is room",
    function()
      -- Room for the journal and the plan, not for a member's 3 MB memory,
      -- once preflight has seen room for all: icp (here icp-sim) fails its
      -- download writing a blob.
      local big = helpers.sim_home({ members = 4, depth = 2, heap = 3000000 })
      local mnt = work .. "/small"
      helpers.sh("mkdir -p " .. mnt .. " && mount -t tmpfs -o size=40m tmpfs " .. mnt)
      finally(function() engine.proc.run({ argv = { "umount", "-l", mnt } }) end)
      local h = support.spawn(big, backup_argv(mnt .. "/b"), { ICP_SIM_LATENCY_MS = "300" })
      support.wait_for(function() return support.stops(big) >= 1 end, "the first stop")
      helpers.sh("dd if=/dev/zero of=" .. mnt .. "/fill bs=1K count=$(($(df -k --output=avail " .. mnt
        .. " | tail -1) - 1024)) 2>/dev/null")
      local r = h:result()
      h:close()
      assert.equal(8, r.status, r.stderr)
      assert.matches("Failed to write to file " .. mnt:gsub("%p", "%%%0") .. "/b/.- No space left on device %(os "
        .. "error 28%)", r.stderr)
      assert.is_true(support.count(big, "snapshot_create") >= 4, "the snapshots were taken before the downloads")
      support.assert_as_found(big, {}, "after ENOSPC in a download")
      os.remove(mnt .. "/fill")
      r = helpers.fleetsnap(big, { "backup", "resume", mnt .. "/b" })
      assert.equal(0, r.status, r.stderr)
      assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", mnt .. "/b" }).status)
    end)

  it("after a symlink planted where the command lock belongs (exit 7) while members are stopped", function()
    local members = support.members(home)
    local b = work .. "/b"
    -- Stopped, the first snapshot hanging: then the run's command lock file
    -- is swapped for a symlink and the hanging command dies, so the next
    -- command (the check of whether that snapshot was taken) meets it.
    local h = support.spawn(home, backup_argv(b), { ICP_SIM_HANG = "snapshot.create@" .. members[1] })
    support.wait_for(function() return support.stops(home) >= 4 end, "the stops")
    local lock = b .. "/.fleetsnap-commands/commands.lock"
    assert.is_not_nil(engine.fs.lstat(lock), "the run holds its command locks in " .. lock)
    -- Swapped by a rename: a command taking its lock between an unlink
    -- and a symlink would make the file again.
    helpers.sh("ln -s " .. work .. "/elsewhere " .. lock .. ".new && mv -f " .. lock .. ".new " .. lock)
    support.kill_sims(home)
    local r = h:result()
    h:close()
    assert.equal(7, r.status, r.stderr)
    assert.matches("symbolic link", r.stderr)
    assert.is_true(support.stops(home) >= 4, "the members were stopped")
    support.assert_as_found(home)
    assert.is_nil(engine.fs.lstat(work .. "/elsewhere"), "nothing was written through the symlink")
  end)

  it("leaves a member that was stopped before the backup stopped after it", function()
    local cid = support.members(home)[3]
    assert.equal(0, helpers.icp(home, { "canister", "stop", cid, "-e", "local" }).status)
    local r = helpers.fleetsnap(home, backup_argv(work .. "/b"))
    assert.equal(0, r.status, r.stderr)
    support.assert_as_found(home, { [cid] = true })
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", work .. "/b" }).status)
  end)

  it("leaves a member that was stopped before stopped when a failure contains the rest", function()
    local members = support.members(home)
    local cid = members[3]
    assert.equal(0, helpers.icp(home, { "canister", "stop", cid, "-e", "local" }).status)
    local r = helpers.fleetsnap(home, backup_argv(work .. "/b"), { ICP_SIM_FAIL = "snapshot.create@" .. members[1] })
    assert.equal(1, r.status, r.stderr)
    support.assert_as_found(home, { [cid] = true })
  end)
end)

describe("the fleet is left as found: restore", function()
  local home, work, b
  before_each(function()
    home = helpers.sim_home({ members = 4, depth = 2 })
    work = helpers.tmpdir()
    b = work .. "/b"
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", b }).status)
    assert.equal(0, helpers.icp(home, { "sim", "mutate", "--all" }).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", b }).status)
  end)
  after_each(function() helpers.cleanup() end)

  for _, sig in ipairs({ { 2, "SIGINT" }, { 15, "SIGTERM" }, { 1, "SIGHUP" } }) do
    it("restarts the targets it stopped after " .. sig[2] .. " before the first load", function()
      local stops = support.stops(home)
      -- The safety snapshots hang: every target is stopped, nothing loaded.
      local h = support.spawn(home, { "restore", "run", b, "--execute", "--safety-snapshot" },
        { ICP_SIM_HANG = "snapshot.create" })
      local r = support.signal_after_stops(h, home, stops + 4, sig[1])
      assert.equal(130, r.status, r.stderr)
      support.assert_as_found(home, {}, sig[2])
      -- Continuing stops them again and completes.
      r = helpers.fleetsnap(home, { "restore", "run", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      support.assert_as_found(home)
    end)
  end

  it("restarts the targets it stopped after a failure before the first load", function()
    local cid = support.members(home)[2]
    local stops = support.stops(home)
    local r = helpers.fleetsnap(home, { "restore", "run", b, "--execute", "--safety-snapshot" },
      { ICP_SIM_FAIL = "snapshot.create@" .. cid })
    assert.equal(1, r.status, r.stderr)
    assert.is_true(support.stops(home) > stops, "targets were stopped")
    support.assert_as_found(home)
    r = helpers.fleetsnap(home, { "restore", "run", b, "--retry-failed" })
    assert.equal(0, r.status, r.stderr)
  end)

  it("restarts the targets it stopped after an internal error before the first load (exit 70)", function()
    local cid = support.members(home)[2]
    local stops = support.stops(home)
    local r = helpers.fleetsnap(home, { "restore", "run", b, "--execute" },
      { FLEETSNAP_FAULT_RAISE = "after-effect@stop-" .. cid })
    assert.equal(70, r.status, r.stderr)
    assert.is_true(support.stops(home) > stops, "targets were stopped")
    support.assert_as_found(home)
    r = helpers.fleetsnap(home, { "restore", "run", b, "--execute" })
    assert.equal(0, r.status, r.stderr)
  end)

  it("after a full disk (ENOSPC in its state directory) while targets are stopped: restarted before any load, "
    .. "else resumable", function()
      local mnt = work .. "/small"
      helpers.sh("mkdir -p " .. mnt .. " && mount -t tmpfs -o size=24m tmpfs " .. mnt)
      finally(function() engine.proc.run({ argv = { "umount", "-l", mnt } }) end)
      local state = mnt .. "/state"
      assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", b, "--state", state }).status)
      local stops, loads = support.stops(home), support.count(home, "snapshot_load")
      local h = support.spawn(home, { "restore", "run", b, "--execute", "--state", state },
        { ICP_SIM_LATENCY_MS = "1500" })
      support.wait_for(function() return support.stops(home) > stops end, "the first stop")
      engine.proc.run({ argv = { "sh", "-c", "dd if=/dev/zero of=" .. mnt .. "/fill bs=1M 2>/dev/null; true" } })
      local r = h:result()
      h:close()
      assert.equal(8, r.status, r.stderr)
      assert.matches("No space left on device", r.stderr)
      -- The run meets the full disk when a journal append needs a new page,
      -- which the journal's slack may put after the first load: then the
      -- targets may hold the backup's state already, and the restore says
      -- how it continues instead of restarting a mixed fleet.
      if support.count(home, "snapshot_load") == loads then
        support.assert_as_found(home, {}, "after ENOSPC: " .. r.stderr)
      else
        assert.matches("loads have begun", r.stderr)
        assert.matches("next: .*restore run", r.stderr)
      end
      os.remove(mnt .. "/fill")
      r = helpers.fleetsnap(home, { "restore", "run", b, "--execute", "--state", state })
      assert.equal(0, r.status, r.stderr)
      support.assert_as_found(home, {}, "after the restore ran to its end")
    end)

  it("after the first load names the one command that continues, with the backup and connection", function()
    local cid = support.members(home)[2]
    local r = helpers.fleetsnap(home, { "restore", "run", b, "--execute" }, { ICP_SIM_FAIL = "start@" .. cid })
    assert.equal(1, r.status, r.stderr)
    assert.matches("loads have begun", r.stderr)
    assert.matches("next: fleetsnap %-%-sim " .. home:gsub("%p", "%%%0") .. " .*restore run "
      .. b:gsub("%p", "%%%0") .. ".* %-%-retry%-failed", r.stderr)
  end)
end)
