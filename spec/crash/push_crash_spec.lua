-- Crash safety of backup push: SIGKILL at every failpoint a push of a
-- small backup (2 members, KiB memories) to a local restic repository
-- reaches (the push record's durable writes, before and after the restic
-- backup), then push again, and check: exactly one restic snapshot carries
-- the backup's id tag, it holds every file of the backup, and the push
-- record names it.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "store_support"

local json = engine.json

local function push_argv(b, repo)
  return { helpers.root .. "/scripts/fleetsnap", "backup", "push", b.dir, "--repo", repo.repo,
    "--repo-password-file", repo.password_file }
end

-- The restic snapshot's files (restic ls), path -> size.
local function snapshot_files(repo, id)
  local r = support.restic(repo.repo, { "ls", "--json", id }, repo.password_file)
  assert(r.status == 0, r.stderr)
  local out = {}
  for line in r.stdout:gmatch("[^\n]+") do
    local n = json.decode(line)
    if n.struct_type == "node" and n.type == "file" then out[n.path] = n.size end
  end
  return out
end

-- The backup's own files (what a push holds), path -> size.
local function backup_files(dir)
  local out = {}
  local r = helpers.sh("cd '" .. dir .. "' && find . -type f ! -name fleetsnap-push.json ! -name '*.lock' "
    .. "! -path './.fleetsnap-commands/*' -printf '%P %s\\n'")
  for path, size in r:gmatch("(%S+) (%d+)\n") do out["/" .. path] = tonumber(size) end
  return out
end

describe("backup push crash safety", function()
  after_each(function() helpers.cleanup() end)

  it("after a SIGKILL while restic backup runs, pushes again until one succeeds: one snapshot, adopted", function()
    local repo, b = support.local_repo(), support.backup()
    -- Enough bytes that restic is still reading when fleetsnap dies.
    helpers.sh("head -c 33554432 /dev/urandom > '" .. b.dir .. "/big.bin'")
    local h = assert(engine.proc.spawn({ argv = push_argv(b, repo), unset_env = support.RESTIC_VARS }))
    local marker = b.dir .. "/fleetsnap-push.json"
    local seen = false
    for _ = 1, 2000 do
      local r = engine.proc.run({ argv = { "pgrep", "-f", "--", "--exclude " .. marker } })
      if r.status == 0 then
        seen = true
        break
      end
      assert(not h:done(), "the push ended before restic was seen")
      engine.sleep_ms(10)
    end
    h:kill(9)
    h:result()
    h:close()
    assert.is_true(seen)
    assert.equal("pushing", support.record(b.dir).state)
    -- restic goes on, holding the directory's lock: a push meanwhile is
    -- refused (exit 4); the first one after it ends adopts its snapshot.
    local r
    for _ = 1, 600 do
      r = support.fleetsnap({ "backup", "push", b.dir, "--repo", repo.repo, "--repo-password-file",
        repo.password_file })
      if r.status ~= 4 then break end
      engine.sleep_ms(100)
    end
    assert.equal(0, r.status, r.stderr)
    assert.matches("adopted", r.stdout)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=" .. b.backup_id))
  end)

  it("after a SIGKILL at each failpoint, a second push leaves exactly one complete, recorded snapshot", function()
    local trace_repo, trace_b = support.local_repo(), support.backup()
    local points = helpers.crash_points("push", push_argv(trace_b, trace_repo), { per_site = "ends" })
    assert.is_true(#points >= 6, "few failpoints: " .. table.concat(points, ", "))
    local have = table.concat(points, " ")
    assert.matches("before-effect@restic-backup-", have, 1, true)
    assert.matches("after-effect@restic-backup-", have, 1, true)
    helpers.crash_loop(points, function(point)
      local repo, b = support.local_repo(), support.backup()
      return { argv = push_argv(b, repo), work = repo.dir, repo = repo, b = b, point = point }
    end, function(case)
      local repo, b = case.repo, case.b
      local r = support.fleetsnap({ "backup", "push", b.dir, "--repo", repo.repo, "--repo-password-file",
        repo.password_file })
      assert(r.status == 0, case.point .. ": " .. r.stderr)
      local snaps = support.snapshots(repo.repo, repo.password_file, "backup_id=" .. b.backup_id)
      assert(#snaps == 1, case.point .. ": " .. #snaps .. " snapshots")
      local rec = support.record(b.dir)
      assert(rec.state == "pushed" and rec.snapshot_id == snaps[1].id:sub(1, 8), case.point .. ": record "
        .. json.encode(rec))
      local want, got = backup_files(b.dir), snapshot_files(repo, snaps[1].id)
      for path, size in pairs(want) do
        assert(got[path] == size, case.point .. ": " .. path .. " missing or of another size")
      end
      for path in pairs(got) do assert(want[path], case.point .. ": " .. path .. " is not the backup's") end
      r = support.restic(repo.repo, { "check" }, repo.password_file)
      assert(r.status == 0, case.point .. ": restic check: " .. r.stderr)
      helpers.sh("rm -rf '" .. b.dir .. "'")
    end)
  end)
end)
