-- Crash safety of backup: SIGKILL at every failpoint a full backup
-- reaches (a 6-member fleet, KiB-size snapshots, concurrency 1), then run
-- again to completion, and check that every effect happened exactly once
-- and every byte is right. A sample of the same runs at concurrency 4.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local SIZES = { members = 6, depth = 2, heap = 4096, stable = 2048 }

local function trace_points(home, out, args)
  local trace = helpers.tmpdir() .. "/trace"
  local argv = { "backup", "create", "--out", out }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = helpers.fleetsnap(home, argv, { FLEETSNAP_FAILPOINT_TRACE = trace })
  assert(r.status == 0, r.stderr)
  local points, count = {}, {}
  for line in helpers.read(trace):gmatch("[^\n]+") do
    count[line] = (count[line] or 0) + 1
    points[#points + 1] = line .. ":" .. count[line]
  end
  return points
end

-- Runs the backup to completion after a crash, as an operator would.
local function finish(home, out, args)
  for _ = 1, 3 do
    local argv
    if fs.lstat(out .. "/fleetsnap-plan.json") then
      argv = { "backup", "resume", out }
    else
      argv = { "backup", "create", "--out", out }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
    end
    local r = helpers.fleetsnap(home, argv)
    if r.status == 0 then return r end
    if r.status ~= 4 then return r end
  end
end

local function check(home, out, label)
  local fleet = helpers.fleet(home)
  local effects = helpers.effects(home)
  for _, m in ipairs(fleet.members) do
    local e = effects[m.canister_id]
    local n = m.canister_id == fleet.root and 0 or 1
    assert.same({ stop = n, start = n, snapshot_create = n, snapshot_delete = 0, snapshot_load = 0,
      snapshot_upload = 0 }, e, label .. ": effects of " .. m.canister_id)
    assert.equal("running", m.status, label)
  end
  local r = helpers.fleetsnap(nil, { "backup", "verify", out })
  assert.equal(0, r.status, label .. ": " .. r.stdout .. r.stderr)
  local m = json.decode(fs.read(out .. "/fleet-backup-manifest.json"))
  assert.equal(#fleet.members - 1, #m.fleet.members, label)
  for _, name in ipairs(fs.list(out)) do
    assert.is_nil(name:find("%.tmp$"), label .. ": staging left: " .. name)
    assert.is_nil(name:find("fsn%-tmp"), label .. ": temp file left: " .. name)
  end
  assert.is_nil(fs.lstat(out .. "/.fleetsnap-commands"), label)
end

local function loop(args, pick)
  local base = helpers.sim_home(SIZES)
  local points = trace_points(helpers.sim_home(SIZES), helpers.tmpdir() .. "/trace-run", args)
  assert.is_true(#points > 50)
  local chosen = {}
  for i, p in ipairs(points) do
    if pick(i, p) then chosen[#chosen + 1] = p end
  end
  -- Two iterations at a time: each has its own home and backup directory.
  local i = 1
  while i <= #chosen do
    local batch = {}
    for k = i, math.min(i + 1, #chosen) do
      local work = helpers.sh("mktemp -d /tmp/fsn-crash-XXXXXX"):gsub("%s+$", "")
      local home, out = work .. "/home", work .. "/b"
      helpers.sh("cp -a " .. base .. " " .. home)
      local argv = { helpers.root .. "/scripts/fleetsnap", "--sim", home, "backup", "create", "--out", out }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      batch[#batch + 1] = { point = chosen[k], work = work, home = home, out = out, h = engine.proc.spawn({ argv = argv,
        env = { FLEETSNAP_FAILPOINT = chosen[k], RUST_BACKTRACE = "0" }, unset_env = { "LD_PRELOAD" },
        timeout_ms = 120000 }) }
    end
    for _, b in ipairs(batch) do
      local r = b.h:result()
      b.h:close()
      assert.equal(9, r.signal, b.point .. ": the failpoint was not reached: " .. r.stderr)
      local done = finish(b.home, b.out, args)
      assert.equal(0, done and done.status, b.point .. ": " .. (done and done.stderr or "no result"))
      check(b.home, b.out, b.point)
      helpers.sh("rm -rf " .. b.work)
    end
    i = i + #batch
  end
  return #chosen
end

describe("backup crash safety", function()
  after_each(function() helpers.cleanup() end)

  it("survives a SIGKILL at every failpoint at concurrency 1", function()
    local n = loop({ "--concurrency", "1", "--downloads", "1" }, function() return true end)
    assert.is_true(n > 50)
  end)

  it("survives a sample of failpoints at concurrency 4", function()
    loop({ "--concurrency", "4", "--downloads", "4" }, function(i) return i % 9 == 0 end)
  end)
end)
