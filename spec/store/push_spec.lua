-- fleetsnap backup push and backup list --repo on a local restic
-- repository and on a REST one (rclone serve restic on loopback, started
-- and stopped here): one snapshot per backup, idempotent, adopting only a
-- complete snapshot, and restic's failures mapped to the registry without
-- printing a secret.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "store_support"

local json = engine.json

local function push(b, repo, extra, env)
  local argv = { "backup", "push", b.dir, "--repo", repo.repo, "--repo-password-file", repo.password_file }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  return support.fleetsnap(argv, env)
end

local function tagged(repo, b)
  return support.snapshots(repo.repo, repo.password_file, "backup_id=" .. b.backup_id)
end

-- The error document of a --json run that failed.
local function error_doc(r)
  local last
  for line in r.stdout:gmatch("[^\n]+") do last = line end
  return json.decode(last)
end

describe("backup push to a local repository", function()
  local repo, b
  before_each(function()
    repo = support.local_repo()
    b = support.backup()
  end)
  after_each(function() helpers.cleanup() end)

  it("makes one snapshot tagged with the backup's id, root and policy, host the root, time the capture",
    function()
      local r = push(b, repo)
      assert.equal(0, r.status, r.stderr)
      local want = string.format("pushed backup %s to %s: restic snapshot %%x+ %%(new", (b.backup_id:gsub("%p", "%%%0")),
        (repo.repo:gsub("%p", "%%%0")))
      assert.matches(want, r.stdout)
      local snaps = tagged(repo, b)
      assert.equal(1, #snaps)
      local s = snaps[1]
      table.sort(s.tags)
      assert.same({ "backup_id=" .. b.backup_id, "fleetsnap", "policy=consistent", "root=" .. b.root }, s.tags)
      assert.equal(b.root, s.hostname)
      local man = json.decode(helpers.read(b.dir .. "/fleet-backup-manifest.json"))
      local first = man.fleetsnap.consistency_window.first_stop_at // 1000000000
      assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", first), s.time)
    end)

  it("records the snapshot durably in the push record", function()
    assert.equal(0, push(b, repo).status)
    local rec = support.record(b.dir)
    assert.equal("pushed", rec.state)
    assert.equal(tagged(repo, b)[1].id:sub(1, 8), rec.snapshot_id)
    assert.equal(repo.repo, rec.repository)
    assert.is_false(rec.adopted)
  end)

  it("leaves out the locks and the push record, and keeps every file of the backup", function()
    -- A restore's state directory and a durable write's temp file, as a
    -- restore or a dead writer leaves them.
    helpers.sh("mkdir -p '" .. b.dir .. "/restore' && echo x > '" .. b.dir .. "/restore/state' && echo t > '"
      .. b.dir .. "/.fleetsnap-plan.json.fsn-tmp-1-ab'")
    assert.equal(0, push(b, repo).status)
    local r = support.restic(repo.repo, { "ls", "--json", tagged(repo, b)[1].id }, repo.password_file)
    local paths = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local n = json.decode(line)
      if n.struct_type == "node" then paths[n.path] = n end
    end
    assert.is_nil(paths["/fleetsnap-push.json"])
    assert.is_nil(paths["/fleetsnap-journal.wal.lock"])
    assert.is_nil(paths["/restore"])
    assert.is_nil(paths["/.fleetsnap-plan.json.fsn-tmp-1-ab"])
    assert.is_not_nil(paths["/fleet-backup-manifest.json"])
    assert.is_not_nil(paths["/fleetsnap-journal.wal"])
  end)

  it("keeps the local backup verifiable and listed with its push record", function()
    assert.equal(0, push(b, repo).status)
    local r = support.fleetsnap({ "backup", "verify", b.dir })
    assert.equal(0, r.status, r.stderr)
    r = support.fleetsnap({ "--json", "backup", "list", "--dir", b.dir:match("^(.*)/[^/]+$") })
    assert.equal(0, r.status, r.stderr)
    assert.equal("complete", json.decode(r.stdout).backups[1].state)
  end)

  it("pushed twice makes one snapshot: the second adopts the first's", function()
    assert.equal(0, push(b, repo).status)
    local r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    assert.matches("adopted an earlier push's snapshot", r.stdout)
    assert.equal(1, #tagged(repo, b))
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file))
  end)

  it("pushes a directory without a record (a copy) as new, without looking; a second push adopts", function()
    assert.equal(0, push(b, repo).status)
    os.remove(b.dir .. "/fleetsnap-push.json")
    assert.is_nil(support.record(b.dir))
    local r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    assert.matches("%(new", r.stdout)
    assert.equal(2, #tagged(repo, b))
    r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    assert.matches("adopted an earlier push's snapshot", r.stdout)
    assert.equal(2, #tagged(repo, b))
  end)

  it("does not adopt a snapshot that lacks a file of the backup: it pushes again", function()
    assert.equal(0, push(b, repo).status)
    local first = tagged(repo, b)[1].id:sub(1, 8)
    -- The backup now holds a file the snapshot does not.
    helpers.write(b.dir .. "/extra-file", "more")
    local r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    assert.matches("%(new", r.stdout)
    local rec = support.record(b.dir)
    assert.is_not.equal(first, rec.snapshot_id)
  end)

  it("refuses an incomplete backup", function()
    os.remove(b.dir .. "/fleet-backup-manifest.json")
    local r = push(b, repo)
    assert.equal(5, r.status, r.stderr)
    assert.matches("not complete", r.stderr)
    assert.equal(0, #tagged(repo, b))
  end)

  it("fails a push whose restic exited 3, and forgets that snapshot instead of adopting it", function()
    local fake = support.fake_restic("backup-exit-3")
    local r = push(b, repo, { "--json" }, { PATH = support.path_with(fake) })
    assert.equal(9, r.status, r.stderr)
    assert.equal("EREPO", error_doc(r).code)
    assert.matches("could not read some files", r.stderr)
    local rec = support.record(b.dir)
    assert.equal("failed", rec.state)
    assert.equal(1, #rec.rejected)
    assert.equal(0, #tagged(repo, b))
    -- The real restic then pushes it: one snapshot, not the rejected one.
    r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    local snaps = tagged(repo, b)
    assert.equal(1, #snaps)
    assert.is_not.equal(rec.rejected[1], snaps[1].id:sub(1, 8))
  end)

  it("never adopts a rejected snapshot even when its forget failed", function()
    local fake = support.fake_restic("backup-exit-3-forget-fails")
    assert.equal(9, push(b, repo, {}, { PATH = support.path_with(fake) }).status)
    local rejected = support.record(b.dir).rejected[1]
    -- The rejected snapshot (its short id, as restic's summary named it)
    -- is still there, and holds every file.
    assert.equal(rejected, tagged(repo, b)[1].id:sub(1, 8))
    local r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    assert.matches("%(new", r.stdout)
    local snaps = tagged(repo, b)
    assert.equal(1, #snaps)
    assert.is_not.equal(rejected, snaps[1].id:sub(1, 8))
    assert.equal(snaps[1].id:sub(1, 8), support.record(b.dir).snapshot_id)
  end)

  it("maps a wrong password to exit 10 without printing a password", function()
    local bad = support.password_file(helpers.tmpdir(), "wrong-secret-pw-91")
    local r = support.fleetsnap({ "--json", "backup", "push", b.dir, "--repo", repo.repo, "--repo-password-file",
      bad })
    assert.equal(10, r.status, r.stderr)
    assert.equal("EREPOKEY", error_doc(r).code)
    assert.matches("wrong password or no key found", r.stderr)
    for _, out in ipairs({ r.stdout, r.stderr, helpers.read(b.dir .. "/fleetsnap-push.json") }) do
      assert.is_nil(out:find("wrong-secret-pw-91", 1, true))
      assert.is_nil(out:find(support.PASSWORD, 1, true))
    end
    assert.equal("failed", support.record(b.dir).state)
  end)

  it("maps a missing repository to exit 3", function()
    local r = support.fleetsnap({ "--json", "backup", "push", b.dir, "--repo", repo.dir .. "/nothing-here",
      "--repo-password-file", repo.password_file })
    assert.equal(3, r.status, r.stderr)
    assert.equal("ENOREPO", error_doc(r).code)
  end)

  it("without any repository is a usage error naming --repo and RESTIC_REPOSITORY", function()
    local r = support.fleetsnap({ "backup", "push", b.dir })
    assert.equal(2, r.status, r.stderr)
    assert.matches("--repo", r.stderr, 1, true)
    assert.matches("RESTIC_REPOSITORY", r.stderr, 1, true)
    assert.is_nil(support.record(b.dir))
  end)

  it("takes the repository and password from restic's own variables", function()
    local r = support.fleetsnap({ "backup", "push", b.dir }, { RESTIC_REPOSITORY = repo.repo,
      RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #tagged(repo, b))
  end)

  it("takes the repository and its password file from the config file", function()
    local cfg = helpers.tmpdir() .. "/config.lua"
    helpers.write(cfg, string.format("return { repository = %q, repository_password_file = %q }", repo.repo,
      repo.password_file))
    local r = support.fleetsnap({ "--config", cfg, "backup", "push", b.dir })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #tagged(repo, b))
  end)

  it("prefers --repo to RESTIC_REPOSITORY", function()
    local other = support.local_repo()
    local r = support.fleetsnap({ "backup", "push", b.dir, "--repo", repo.repo }, { RESTIC_REPOSITORY = other.repo,
      RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #tagged(repo, b))
    assert.equal(0, #support.snapshots(other.repo, other.password_file))
  end)

  it("maps a locked repository to exit 4, live holder or dead one, and names restic unlock", function()
    local fifo = helpers.tmpdir() .. "/new-password"
    helpers.sh("mkfifo '" .. fifo .. "'")
    -- `restic key passwd` takes the exclusive lock, then waits to read its
    -- new password from the FIFO.
    local holder = assert(engine.proc.spawn({ argv = { "restic", "--no-cache", "key", "passwd",
      "--new-password-file", fifo }, env = { RESTIC_REPOSITORY = repo.repo, RESTIC_PASSWORD_FILE = repo.password_file },
      unset_env = support.RESTIC_VARS }))
    local ok, err = pcall(function()
      local locked = false
      for _ = 1, 400 do
        if #(engine.fs.list(repo.repo .. "/locks") or {}) > 0 then
          locked = true
          break
        end
        assert(not holder:done(), "restic key passwd ended")
        engine.sleep_ms(25)
      end
      assert.is_true(locked)
      local r = support.fleetsnap({ "--json", "backup", "push", b.dir, "--repo", repo.repo,
        "--repo-password-file", repo.password_file })
      assert.equal(4, r.status, r.stderr)
      assert.equal("EREPOLOCKED", error_doc(r).code)
      assert.matches("restic unlock", r.stderr, 1, true)
      -- Its holder SIGKILLed: restic 0.14 still refuses the stale lock.
      holder:kill(9)
      holder:result()
      r = push(b, repo)
      assert.equal(4, r.status, r.stderr)
      assert.equal(0, support.restic(repo.repo, { "unlock" }, repo.password_file).status)
      r = push(b, repo)
      assert.equal(0, r.status, r.stderr)
    end)
    holder:close()
    assert(ok, err)
  end)
end)

describe("backup list --repo", function()
  local repo
  before_each(function() repo = support.local_repo() end)
  after_each(function() helpers.cleanup() end)

  it("lists the pushed backups newest first, as text and JSON", function()
    local b1, b2 = support.backup("first", "a"), support.backup("second", "b")
    assert.equal(0, push(b1, repo).status)
    assert.equal(0, push(b2, repo).status)
    local r = support.fleetsnap({ "--json", "backup", "list", "--repo", repo.repo, "--repo-password-file",
      repo.password_file })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equal("repository-list", doc.type)
    assert.equal(2, #doc.backups)
    local ids = {}
    for _, x in ipairs(doc.backups) do
      ids[x.backup_id] = x
      assert.equal(b1.root, x.root)
      assert.equal("consistent", x.policy)
      assert.equal(64, #x.snapshot_id)
    end
    assert.is_not_nil(ids[b1.backup_id])
    assert.is_not_nil(ids[b2.backup_id])
    r = support.fleetsnap({ "backup", "list", "--repo", repo.repo, "--repo-password-file", repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.matches("2 backup%(s%) in " .. repo.repo:gsub("%p", "%%%0"), r.stdout)
    assert.matches(b1.backup_id, r.stdout, 1, true)
  end)

  it("says so when the repository holds no fleetsnap backup", function()
    local r = support.fleetsnap({ "backup", "list", "--repo", repo.repo, "--repo-password-file", repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.matches("no fleetsnap backups in", r.stdout)
  end)
end)

describe("backup push to a REST repository (rclone serve restic)", function()
  local server, repo, b
  before_each(function()
    server = support.rest_server()
    local dir = helpers.tmpdir()
    repo = { repo = server.url .. "fleet", password_file = support.password_file(dir) }
    local r = support.restic(repo.repo, { "init" }, repo.password_file)
    assert(r.status == 0, r.stderr)
    b = support.backup()
  end)
  after_each(function()
    server.stop()
    helpers.cleanup()
  end)

  it("pushes once, adopts on the second push, and lists the backup", function()
    local r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    r = push(b, repo)
    assert.equal(0, r.status, r.stderr)
    assert.matches("adopted", r.stdout)
    assert.equal(1, #tagged(repo, b))
    r = support.fleetsnap({ "--json", "backup", "list", "--repo", repo.repo, "--repo-password-file",
      repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.equal(b.backup_id, json.decode(r.stdout).backups[1].backup_id)
  end)

  it("refuses a URL with a password on the command line", function()
    local with_secret = { repo = server.url:gsub("^rest:http://", "rest:http://alice:url-secret-77@") .. "fleet",
      password_file = repo.password_file }
    local r = push(b, with_secret)
    assert.equal(2, r.status, r.stderr)
    assert.matches("RESTIC_REPOSITORY", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("url-secret-77", 1, true))
    assert.is_nil(support.record(b.dir))
  end)

  it("keeps a URL's password (from RESTIC_REPOSITORY) out of the output, the record and the lock", function()
    local url = server.url:gsub("^rest:http://", "rest:http://alice:url-secret-77@") .. "fleet"
    local r = support.fleetsnap({ "backup", "push", b.dir, "--repo-password-file", repo.password_file },
      { RESTIC_REPOSITORY = url })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #tagged(repo, b))
    assert.matches("alice:***@", r.stdout, 1, true)
    for _, out in ipairs({ r.stdout, r.stderr, helpers.read(b.dir .. "/fleetsnap-push.json"),
      helpers.read(b.dir .. "/fleetsnap-journal.wal.lock") }) do
      assert.is_nil(out:find("url-secret-77", 1, true))
    end
  end)

  it("maps a repository whose server is down to exit 11, without the URL's password", function()
    server.stop()
    local url = server.url:gsub("^rest:http://", "rest:http://alice:url-secret-77@") .. "fleet"
    local r = support.fleetsnap({ "--json", "backup", "push", b.dir, "--repo-password-file", repo.password_file },
      { RESTIC_REPOSITORY = url })
    assert.equal(11, r.status, r.stderr)
    assert.equal("EREPONET", error_doc(r).code)
    for _, out in ipairs({ r.stdout, r.stderr, helpers.read(b.dir .. "/fleetsnap-push.json") }) do
      assert.is_nil(out:find("url-secret-77", 1, true))
    end
  end)

  it("maps a REST server without the repository to exit 3", function()
    local r = push(b, { repo = server.url .. "no-such-repo", password_file = repo.password_file }, { "--json" })
    assert.equal(3, r.status, r.stderr)
    assert.equal("ENOREPO", error_doc(r).code)
  end)
end)
