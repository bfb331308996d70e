-- Crash safety of backup: SIGKILL at the failpoints a full backup reaches
-- (a 6-member fleet, KiB-size snapshots, concurrency 1), then run again to
-- completion, and check that every effect happened exactly once and every
-- byte is right. A sample of the same runs at concurrency 4.
--
-- Most failpoints are the same journal record or effect once per member,
-- so the loops kill at every site (`helpers.choose_failpoints`: first and
-- last member at concurrency 1, one member at concurrency 4) plus a seeded
-- sample of the repeats; FLEETSNAP_CRASH_ALL=1 kills at every failpoint,
-- FLEETSNAP_CRASH_SEED=<n> repeats a printed sample.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local snapshot_index = require "fleetsnap.snapshot_index"

local json, fs = engine.json, engine.fs

local SIZES = { members = 6, depth = 2, heap = 4096, stable = 2048 }

local function backup_argv(home, out, args)
  local argv = { helpers.root .. "/scripts/fleetsnap", "--sim", home, "backup", "create", "--out", out }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
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
  -- Finished by whichever run, the backup has the index of its manifest.
  local index, why = snapshot_index.read(out)
  assert.is_table(index, label .. ": " .. tostring(why))
  assert.equal(#m.fleet.members, #index.snapshots, label)
  for _, name in ipairs(fs.list(out)) do
    assert.is_nil(name:find("%.tmp$"), label .. ": staging left: " .. name)
    assert.is_nil(name:find("fsn%-tmp"), label .. ": temp file left: " .. name)
  end
  assert.is_nil(fs.lstat(out .. "/.fleetsnap-commands"), label)
end

-- Kills a backup with `args` at the chosen failpoints (`sampling`: options
-- of `helpers.choose_failpoints`); returns how many cases ran and how many
-- sites the backup has.
local function loop(label, args, sampling)
  local base = helpers.sim_home(SIZES)
  local chosen, sites, total = helpers.crash_points(label,
    backup_argv(helpers.sim_home(SIZES), helpers.tmpdir() .. "/trace-run", args), sampling)
  assert.is_true(total > 50, "only " .. total .. " failpoints")
  helpers.crash_loop(chosen, function()
    local work = helpers.sh("mktemp -d /tmp/fsn-crash-XXXXXX"):gsub("%s+$", "")
    local home, out = work .. "/home", work .. "/b"
    helpers.sh("cp -a " .. base .. " " .. home)
    return { work = work, home = home, out = out, argv = backup_argv(home, out, args) }
  end, function(case)
    local done = finish(case.home, case.out, args)
    assert.equal(0, done and done.status, case.point .. ": " .. (done and done.stderr or "no result"))
    check(case.home, case.out, case.point)
  end)
  return #chosen, sites
end

describe("backup crash safety", function()
  after_each(function() helpers.cleanup() end)

  it("survives a SIGKILL at every failpoint site at concurrency 1", function()
    local n, sites = loop("backup, concurrency 1", { "--concurrency", "1", "--downloads", "1" },
      { per_site = "ends", extra = 16 })
    -- A site per journal record kind, effect kind, barrier and file write.
    assert.is_true(sites > 30, "only " .. sites .. " sites")
    assert.is_true(n > 50, "only " .. n .. " cases")
  end)

  it("survives a SIGKILL at every failpoint site at concurrency 4", function()
    local n, sites = loop("backup, concurrency 4", { "--concurrency", "4", "--downloads", "4" }, { per_site = "one" })
    assert.is_true(sites > 30, "only " .. sites .. " sites")
    assert.is_true(n >= sites)
  end)
end)
