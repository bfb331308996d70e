-- A policy's health checks run as node-signed queries through the real icp:
-- answered, they pass; rejected (a signed query reject), the backup fails
-- with the verification exit code, the fleet keeps running, and a resume
-- runs the checks again.
local helpers = require "helpers"
local replica = require "e2e.replica"

local POLICY = helpers.root .. "/spec/e2e/fixtures/health-policy.lua"

describe("e2e: policy checks as queries", function()
  local r
  local start = replica.each_test()

  it("passes when every member answers its health query", function()
    r = start()
    local res = r:fleetsnap({ "backup", "create", "--root", r.root, "--policy", POLICY,
      "--out", helpers.tmpdir() .. "/backup" })
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    for _, m in ipairs(r:members()) do
      assert.is_true(#r:requests({ endpoint = "query", method = "health", canister = m.canister_id,
        outcome = "replied" }) >= 1, m.canister_id .. " was not checked")
    end
  end)

  it("fails with exit 6 on a rejected health query, keeps the fleet running, and passes on resume", function()
    r = start()
    local member = r:members()[1].canister_id
    r:faults({ { endpoint = "query", method = "health", canister = member, kind = "reject", code = "IC0508",
      times = 0 } })
    local dir = helpers.tmpdir() .. "/backup"
    local res = r:fleetsnap({ "backup", "create", "--root", r.root, "--policy", POLICY, "--out", dir })
    assert.is_true(#r:requests({ endpoint = "query", method = "health", canister = member,
      outcome = "rejected:IC0508" }) >= 1, "the health query was never rejected")
    assert.are.equal(6, res.status, res.stdout .. res.stderr)
    for cid, c in pairs(r:canisters()) do
      assert.are.equal("running", c.status, cid)
    end

    r:faults({})
    res = r:fleetsnap({ "backup", "resume", dir })
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    assert.is_true(#r:requests({ endpoint = "query", method = "health", canister = member,
      outcome = "replied" }) >= 1)
  end)
end)
