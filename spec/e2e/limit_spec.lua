-- The replica's 10-snapshot limit met through the real icp: a member whose
-- slots are all the operator's is refused before anything is stopped; a
-- member whose tenth slot holds fleetsnap's snapshot of a durable backup
-- gets its new snapshot by `create --replace` of that one, the operator's
-- nine untouched.
local helpers = require "helpers"
local replica = require "e2e.replica"

-- n snapshots of the operator's own on a member (stopped meanwhile).
local function fill(r, cid, n)
  assert.are.equal(0, r:icp({ "stop", cid }).status)
  for _ = 1, n do
    local res = r:icp({ "snapshot", "create", cid, "-q" })
    assert.are.equal(0, res.status, res.stderr)
  end
  assert.are.equal(0, r:icp({ "start", cid }).status)
end

local function snapshot_ids(r, cid)
  local out = {}
  for _, s in ipairs(r:canisters()[cid].snapshots) do out[#out + 1] = s.snapshot_id end
  return out
end

describe("e2e: the snapshot limit", function()
  local r
  local start = replica.each_test()

  it("refuses a member with ten snapshots of the operator's before stopping anything", function()
    r = start()
    local member = r:members()[1].canister_id
    fill(r, member, 10)
    local res = r:icp({ "stop", member })
    assert.are.equal(0, res.status)
    res = r:icp({ "snapshot", "create", member })
    assert.are.equal(1, res.status)
    assert.matches("maximum number of snapshots allowed: 10", res.stderr, 1, true)
    assert.matches('Some("IC0406")', res.stderr, 1, true)
    assert.are.equal(0, r:icp({ "start", member }).status)
    local stops = #r:requests({ method = "stop_canister", outcome = "replied" })

    res = r:fleetsnap({ "backup", "create", "--root", r.root, "--out", helpers.tmpdir() .. "/backup" })
    assert.are.equal(5, res.status, res.stderr)
    assert.matches("all 10 snapshot slots are taken", res.stderr, 1, true)
    assert.are.equal(stops, #r:requests({ method = "stop_canister", outcome = "replied" }))
    assert.are.equal(10, #snapshot_ids(r, member))
  end)

  it("replaces fleetsnap's own snapshot of a durable backup, never the operator's", function()
    r = start()
    local member = r:members()[1].canister_id
    fill(r, member, 9)
    local operators = snapshot_ids(r, member)
    local parent = helpers.tmpdir()
    local res = r:fleetsnap({ "backup", "create", "--root", r.root, "--out", parent .. "/first" })
    assert.are.equal(0, res.status, res.stderr)
    local full = snapshot_ids(r, member)
    assert.are.equal(10, #full)
    local ours = full[10]

    res = r:fleetsnap({ "backup", "create", "--root", r.root, "--out", parent .. "/second" })
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    local after = snapshot_ids(r, member)
    assert.are.equal(10, #after)
    for i = 1, 9 do assert.are.equal(operators[i], after[i]) end
    assert.are_not.equal(ours, after[10])
    res = r:fleetsnap({ "backup", "verify", parent .. "/second" })
    assert.are.equal(0, res.status, res.stderr)
  end)
end)
