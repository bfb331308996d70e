-- A backup killed with SIGKILL (fleetsnap and the icp it was running, as a
-- machine losing the process tree would) while a member's snapshot hangs,
-- then resumed: the resume completes the backup with one snapshot per
-- member, and further resumes change nothing on the network (counted from
-- the replica's request log).
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local replica = require "e2e.replica"

-- Every descendant of pid (from /proc), deepest last.
local function descendants(pid, out)
  out = out or {}
  local tasks = engine.fs.list("/proc/" .. pid .. "/task") or {}
  for _, tid in ipairs(tasks) do
    local text = helpers.read("/proc/" .. pid .. "/task/" .. tid .. "/children") or ""
    for child in text:gmatch("%d+") do
      out[#out + 1] = tonumber(child)
      descendants(child, out)
    end
  end
  return out
end

-- The requests that change a canister, as answered by the replica.
local EFFECTS = {
  stop_canister = true, start_canister = true, take_canister_snapshot = true, delete_canister_snapshot = true,
  load_canister_snapshot = true, upload_canister_snapshot_metadata = true, update_settings = true,
}

local function effects(r)
  local n = 0
  for _, e in ipairs(r:log()) do
    if e.endpoint == "call" and EFFECTS[e.method] and e.outcome == "replied" then n = n + 1 end
  end
  return n
end

describe("e2e: SIGKILL mid-backup, then resume", function()
  local r
  local start = replica.each_test()

  it("completes the backup once and further resumes have no effect", function()
    r = start()
    local members = r:members()
    local held = members[2].canister_id
    r:faults({ { endpoint = "call", method = "take_canister_snapshot", canister = held, kind = "hang" } })
    local dir = helpers.tmpdir() .. "/backup"
    local proc = r:spawn_fleetsnap({ "backup", "create", "--root", r.root, "--out", dir })

    -- Wait until the snapshot is held, then kill the whole tree at once.
    local hung = false
    for _ = 1, 1500 do
      for _, e in ipairs(r:log()) do
        if e.outcome == "fault:hang" then hung = true end
      end
      if hung then break end
      engine.sleep_ms(20)
    end
    assert.is_true(hung, "the snapshot never hung")
    local pids = descendants(proc:pid())
    table.insert(pids, 1, proc:pid())
    for _, pid in ipairs(pids) do engine.proc.signal(pid, 9) end
    local killed = proc:result()
    assert.are.equal(9, killed.signal)
    -- The kill left the member stopped: the resume has to finish its work.
    assert.are.equal("stopped", r:canisters()[held].status)
    assert.are.equal(0, #r:requests({ method = "take_canister_snapshot", canister = held, outcome = "replied" }))
    r:faults({})

    local res = r:fleetsnap({ "backup", "resume", dir })
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    res = r:fleetsnap({ "backup", "verify", dir })
    assert.are.equal(0, res.status, res.stderr)
    for _, m in ipairs(members) do
      assert.are.equal(1, #r:requests({ method = "take_canister_snapshot", canister = m.canister_id,
        outcome = "replied" }), m.canister_id)
      local c = r:canisters()[m.canister_id]
      assert.are.equal("running", c.status)
      assert.are.equal(1, #c.snapshots, m.canister_id .. " holds a stray snapshot")
    end

    local before = effects(r)
    for _ = 1, 2 do
      res = r:fleetsnap({ "backup", "resume", dir })
      assert.are.equal(0, res.status, res.stdout .. res.stderr)
      assert.are.equal(before, effects(r))
    end
  end)
end)
