-- Promise: success means the effect happened. A start or stop reported
-- successful without effect is caught (the canister's status proves it)
-- and repaired by running again; a load without effect is caught by the
-- data check (--verify-data), which reads the loaded state back. A restore
-- can be run again: a finished restore of a backup is kept in history and
-- planning the same backup again starts a new one.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "promises.support"

local json = engine.json

-- The members' state digests (the root is not backed up).
local function member_digests(home)
  local all, out = helpers.digests(home), {}
  for _, cid in ipairs(support.members(home)) do out[cid] = all[cid] end
  return out
end

describe("success means the effect happened", function()
  local home, work
  support.each_fleet(nil, function(h, w) home, work = h, w end)

  it("catches a backup's start reported without effect (exit 6) and repairs it on resume", function()
    local b = work .. "/b"
    local cid = support.members(home)[2]
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", b },
      { ICP_SIM_SILENT_SUCCESS = "start@" .. cid .. "#1" })
    assert.equal(6, r.status, r.stderr)
    assert.matches("start of " .. cid .. ": icp reported success but the canister is stopped", r.stderr, 1, true)
    -- Containment started it (for real this time).
    support.assert_as_found(home)
    r = helpers.fleetsnap(home, { "backup", "resume", b, "--retry-failed" })
    assert.equal(0, r.status, r.stderr)
    support.assert_as_found(home)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", b }).status)
  end)

  it("catches a restore's start reported without effect and repairs it with --retry-failed", function()
    local b = work .. "/b"
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", b }).status)
    assert.equal(0, helpers.icp(home, { "sim", "mutate", "--all" }).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", b }).status)
    local cid = support.members(home)[3]
    local r = helpers.fleetsnap(home, { "restore", "run", b, "--execute" },
      { ICP_SIM_SILENT_SUCCESS = "start@" .. cid .. "#1" })
    assert.equal(6, r.status, r.stderr)
    assert.equal("stopped", support.statuses(home)[cid])
    r = helpers.fleetsnap(home, { "restore", "run", b, "--retry-failed" })
    assert.equal(0, r.status, r.stderr)
    support.assert_as_found(home)
  end)

  it("catches a load without effect with --verify-data (exit 6), and repairs it with --retry-failed", function()
    local b = work .. "/b"
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", b }).status)
    local backed_up = member_digests(home)
    assert.equal(0, helpers.icp(home, { "sim", "mutate", "--all" }).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", b }).status)
    local cid = support.members(home)[1]
    local r = helpers.fleetsnap(home, { "restore", "run", b, "--execute", "--verify-data" },
      { ICP_SIM_SILENT_SUCCESS = "snapshot.restore@" .. cid .. "#1" })
    assert.equal(6, r.status, r.stderr)
    assert.matches("data check of " .. cid, r.stderr, 1, true)
    assert.are_not.equal(backed_up[cid], member_digests(home)[cid])
    r = helpers.fleetsnap(home, { "restore", "run", b, "--retry-failed" })
    assert.equal(0, r.status, r.stderr)
    assert.same(backed_up, member_digests(home))
  end)
end)

describe("a restore can be run again", function()
  after_each(function() helpers.cleanup() end)

  it("restores a backup again after a complete restore, keeping the old one in history", function()
    local home = helpers.sim_home({ members = 4, depth = 2 })
    local b = helpers.tmpdir() .. "/b"
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", b }).status)
    local backed_up = member_digests(home)
    for round = 1, 2 do
      assert.equal(0, helpers.icp(home, { "sim", "mutate", "--all" }).status)
      assert.are_not.same(backed_up, member_digests(home))
      local r = helpers.fleetsnap(home, { "restore", "plan", b })
      assert.equal(0, r.status, r.stderr)
      r = helpers.fleetsnap(home, { "restore", "run", b, "--execute" })
      assert.equal(0, r.status, r.stderr)
      assert.is_nil(r.stdout:find("already", 1, true), "round " .. round)
      assert.same(backed_up, member_digests(home))
    end
    local r = helpers.fleetsnap(home, { "--json", "restore", "status", b })
    assert.equal(0, r.status, r.stderr)
    local s = json.decode(r.stdout)
    assert.equal("complete", s.phase)
    assert.equal(1, #s.history)
    assert.equal("complete", s.history[1].phase)
    assert.are_not.equal(s.restore_id, s.history[1].restore_id)
  end)
end)
