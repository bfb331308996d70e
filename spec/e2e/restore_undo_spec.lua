-- A restore whose load is rejected (IC0210, heap-delta rate limited) through
-- the real icp: the fault is seen, the run fails with exit 1 and reports the
-- stopped targets; `restore undo` then loads the safety snapshots back and
-- restarts them, every member's memories as they were before the restore.
local helpers = require "helpers"
local replica = require "e2e.replica"

local function memories(r)
  local out = {}
  for _, c in ipairs(r:members()) do
    out[c.canister_id] = { c.wasm_module.sha256, c.wasm_memory.sha256, c.stable_memory.sha256 }
  end
  return out
end

describe("e2e: a failed restore undone", function()
  local r
  local start = replica.each_test()

  it("puts the safety snapshots back after a rejected load", function()
    r = start()
    local dir = helpers.tmpdir() .. "/backup"
    local res = r:fleetsnap({ "backup", "create", "--root", r.root, "--out", dir })
    assert.are.equal(0, res.status, res.stderr)
    local members = r:members()
    for _, m in ipairs(members) do r:mutate(m.canister_id, "wasm_memory", 8, "cafe") end
    local before = memories(r)

    local failing = members[1].canister_id
    r:faults({ { endpoint = "call", method = "load_canister_snapshot", canister = failing, kind = "reject",
      code = "IC0210", times = 0 } })
    res = r:fleetsnap({ "restore", "plan", dir })
    assert.are.equal(0, res.status, res.stderr)
    res = r:fleetsnap({ "restore", "run", dir, "--execute", "--safety-snapshot" })
    assert.is_true(#r:requests({ method = "load_canister_snapshot", canister = failing,
      outcome = "rejected:IC0210" }) >= 1, "the load was never rejected")
    assert.are.equal(1, res.status, res.stderr)
    assert.matches('Some("IC0210")', res.stderr, 1, true)
    assert.matches("target(s) are stopped", res.stderr, 1, true)
    assert.are.same(before[failing], memories(r)[failing])

    r:faults({})
    local loads = #r:requests({ method = "load_canister_snapshot", canister = failing, outcome = "replied" })
    res = r:fleetsnap({ "restore", "undo", dir, "--execute" })
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    -- The undo really loaded the safety snapshot of the failed member.
    assert.are.equal(loads + 1, #r:requests({ method = "load_canister_snapshot", canister = failing,
      outcome = "replied" }))
    assert.are.same(before, memories(r))
    for cid, c in pairs(r:canisters()) do
      assert.are.equal("running", c.status, cid)
    end
  end)
end)
