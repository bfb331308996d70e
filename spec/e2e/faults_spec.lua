-- One fault of each kind the replica injects, met by fleetsnap through the
-- real icp 1.5.0: the fault is seen to happen (the replica's request log),
-- the command fails with the exit code of an icp failure, and the fleet is
-- left as found (every canister that was running is running, no snapshot
-- of the failed backup is left behind on a member unless recorded).
local helpers = require "helpers"
local replica = require "e2e.replica"

local function assert_all_running(r)
  for cid, c in pairs(r:canisters()) do
    assert.are.equal("running", c.status, cid .. " was left " .. c.status)
  end
end

local function faulted(r, kind)
  local n = 0
  for _, e in ipairs(r:log()) do
    if e.outcome == "fault:" .. kind or (kind == "reject" and e.fault == "reject") then n = n + 1 end
  end
  return n
end

describe("e2e: faults injected by the replica", function()
  local r
  local start = replica.each_test()

  local function backup(extra)
    local argv = {}
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    for _, a in ipairs({ "backup", "create", "--root", r.root, "--out", helpers.tmpdir() .. "/backup" }) do
      argv[#argv + 1] = a
    end
    return r:fleetsnap(argv)
  end

  it("a replica reject (IC0207) of a member's snapshot fails the backup and restarts the fleet", function()
    r = start()
    local member = r:members()[1].canister_id
    r:faults({ { endpoint = "call", method = "take_canister_snapshot", canister = member, kind = "reject",
      code = "IC0207", times = 0 } })
    local res = backup()
    assert.is_true(faulted(r, "reject") >= 1, "the reject was never injected")
    assert.is_true(#r:requests({ method = "take_canister_snapshot", canister = member,
      outcome = "rejected:IC0207" }) >= 1)
    assert.are.equal(1, res.status, res.stderr)
    assert.matches("IC0207", res.stderr)
    assert_all_running(r)
  end)

  it("HTTP 503 after two status calls fails the backup and restarts the fleet", function()
    r = start()
    r:faults({ { endpoint = "call", method = "canister_status", kind = "http503", after = 2, times = 0 } })
    local res = backup()
    assert.is_true(faulted(r, "http503") >= 1, "no 503 was served")
    assert.are.equal(1, res.status, res.stderr)
    assert.matches("503 Service Unavailable", res.stderr)
    assert_all_running(r)
  end)

  it("a stop that never answers is cut by fleetsnap's timeout and the fleet restarted", function()
    r = start()
    local member = r:members()[2].canister_id
    r:faults({ { endpoint = "call", method = "stop_canister", canister = member, kind = "hang" } })
    local res = backup({ "--timeout", "5" })
    assert.are.equal(1, faulted(r, "hang"), "the stop was never held")
    assert.are.equal(1, res.status, res.stderr)
    assert.matches("icp did not finish within 5 s", res.stderr, 1, true)
    assert_all_running(r)
  end)

  it("a dropped connection of a stop fails the backup and restarts the fleet", function()
    r = start()
    local member = r:members()[1].canister_id
    r:faults({ { endpoint = "call", method = "stop_canister", canister = member, kind = "drop" } })
    local res = backup()
    assert.are.equal(1, faulted(r, "drop"), "the connection was never dropped")
    assert.are.equal(1, res.status, res.stderr)
    assert.matches("error sending request", res.stderr)
    assert_all_running(r)
  end)
end)
