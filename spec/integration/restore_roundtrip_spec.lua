-- The round trip property: for seeded random fleets, a backup, then any
-- mutation, then a restore gives every member the state it had when it was
-- backed up (the simulator's state_sha256), and every canister runs.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json = engine.json

local digests = helpers.digests

local SEEDS = { 11, 29, 47, 83 }
local POLICIES = { "consistent", "rolling", "sequential" }

describe("backup then restore", function()
  after_each(function() helpers.cleanup() end)

  for _, seed in ipairs(SEEDS) do
    it("restores every member's backed-up state (seed " .. seed .. ")", function()
      math.randomseed(seed)
      local members = math.random(3, 9)
      local depth = math.random(1, math.min(3, members))
      local opts = { members = members, depth = depth, heap = math.random(1, 64) * 1024,
        stable = math.random(0, 32) * 1024, seed = seed }
      local home = helpers.sim_home(opts)
      local out = helpers.tmpdir() .. "/b"
      local policy = POLICIES[math.random(#POLICIES)]
      local r = helpers.fleetsnap(home, { "backup", "create", "--out", out, "--policy", policy })
      assert.equal(0, r.status, r.stderr)
      local backed_up = digests(home)
      local fleet = helpers.fleet(home)
      -- Mutate a random non-empty subset, some members more than once.
      local changed = 0
      for _, m in ipairs(fleet.members) do
        for _ = 1, math.random(0, 2) do
          assert.equal(0, helpers.icp(home, { "sim", "mutate", m.canister_id }).status)
          changed = changed + 1
        end
      end
      if changed == 0 then assert.equal(0, helpers.icp(home, { "sim", "mutate", "--all" }).status) end
      local plan = { "restore", "plan", out }
      if math.random() < 0.5 then
        plan[#plan + 1] = "--concurrency"
        plan[#plan + 1] = tostring(math.random(1, 8))
      end
      assert.equal(0, helpers.fleetsnap(home, plan).status)
      local run = { "restore", "run", out, "--execute" }
      if math.random() < 0.3 then run[#run + 1] = "--verify-data" end
      r = helpers.fleetsnap(home, run)
      assert.equal(0, r.status, r.stderr)
      local now = digests(home)
      for _, m in ipairs(fleet.members) do
        if m.canister_id ~= fleet.root then
          assert.equal(backed_up[m.canister_id], now[m.canister_id], json.encode(opts) .. " " .. policy)
        end
      end
      for _, m in ipairs(helpers.fleet(home).members) do assert.equal("running", m.status) end
    end)
  end
end)
