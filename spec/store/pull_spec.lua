-- `backup pull`: a backup of a restic repository (local, and REST through
-- `rclone serve restic` on loopback) restored into a staging directory,
-- verified against its manifest and published no-replace.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local store = require "store_pull_support"
local support = require "store_support"

local json, fs = engine.json, engine.fs

local fleet, work, repo

setup(function()
  fleet = store.fleet({ "b1", "b2" })
end)
teardown(function() helpers.cleanup() end)

before_each(function()
  work = helpers.tmpdir()
  repo = store.init(work .. "/repo")
end)

local function pull(argv, env)
  local full = { "backup", "pull" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return helpers.fleetsnap(nil, full, store.env(repo, env))
end

-- Every file's SHA-256 under a backup's artifacts, by path.
local function artifacts(dir)
  local m = json.decode(helpers.read(dir .. "/fleet-backup-manifest.json"))
  local out = {}
  for _, x in ipairs(m.fleet.members) do
    out[x.canister_id] = assert(engine.hash.tree(dir .. "/" .. x.source_snapshot.artifact_path)).digest
  end
  return out
end

-- No staging directory of a pull is left beside the destination.
local function no_staging(parent)
  for _, name in ipairs(store.names(parent)) do
    assert.is_nil(name:match("fleetsnap%-pull$"), parent .. "/" .. name .. " was left")
  end
end

describe("backup pull from a local repository", function()
  it("restores, verifies and publishes the backup under the backups directory", function()
    local sid = store.push_backup(repo, fleet.dir .. "/b1")
    local r = pull({ "--json", "b1", "--dir", work .. "/pulled" })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equal("pull", doc.type)
    assert.equal("b1", doc.backup_id)
    assert.equal(sid:sub(1, 8), doc.snapshot_id)
    assert.equal(work .. "/pulled/b1", doc.dir)
    assert.equal(2, doc.members)
    assert.same(artifacts(fleet.dir .. "/b1"), artifacts(work .. "/pulled/b1"))
    local v = helpers.fleetsnap(nil, { "backup", "verify", work .. "/pulled/b1" })
    assert.equal(0, v.status, v.stderr)
    no_staging(work .. "/pulled")
  end)

  it("takes latest as the newest capture time (not the greatest id)", function()
    store.push(repo, fleet.dir .. "/b1", "b1", fleet.root, "2026-11-30 11:00:00")
    store.push(repo, fleet.dir .. "/b2", "b2", fleet.root, "2026-11-30 10:00:00")
    local r = pull({ "--json", "latest", "--out", work .. "/latest" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("b1", json.decode(r.stdout).backup_id)
    assert.equal("b1", json.decode(helpers.read(work .. "/latest/fleet-backup-manifest.json")).backup_id)
  end)

  it("finds the backup under the snapshot's path when restic backed up an absolute path", function()
    store.push(repo, fleet.dir .. "/b1", "b1", fleet.root, "2026-11-30 10:00:00", true)
    local r = pull({ "b1", "--out", work .. "/abs" })
    assert.equal(0, r.status, r.stderr)
    assert.same(artifacts(fleet.dir .. "/b1"), artifacts(work .. "/abs"))
    no_staging(work)
  end)

  it("refuses a destination that exists (exit 5) and leaves it as it was", function()
    store.push_backup(repo, fleet.dir .. "/b1")
    fs.mkdir_private(work .. "/dest")
    helpers.write(work .. "/dest/mine", "operator's file")
    local r = pull({ "b1", "--out", work .. "/dest" })
    assert.equal(5, r.status)
    assert.matches("exists: a pull never replaces anything", r.stderr)
    assert.same({ "mine" }, store.names(work .. "/dest"))
    assert.equal("operator's file", helpers.read(work .. "/dest/mine"))
    no_staging(work)
  end)

  it("says not found (exit 3) for an id the repository does not hold", function()
    store.push_backup(repo, fleet.dir .. "/b1")
    local r = pull({ "nosuch", "--dir", work .. "/pulled" })
    assert.equal(3, r.status)
    assert.matches("no fleetsnap backup nosuch in the repository", r.stderr)
    assert.is_nil(fs.lstat(work .. "/pulled/nosuch"))
  end)

  it("fails at once (exit 10) on a wrong password: one restic command, no listing after it", function()
    store.push_backup(repo, fleet.dir .. "/b1")
    local restic = support.logging_restic(helpers.tmpdir() .. "/restic.log")
    local r = pull({ "b1", "--dir", work .. "/pulled" },
      { RESTIC_PASSWORD = "not the password", PATH = support.path_with(restic.dir) })
    assert.equal(10, r.status, r.stderr)
    assert.same({ "restore" }, restic.commands())
    assert.is_nil(fs.lstat(work .. "/pulled/b1"))
    no_staging(work .. "/pulled")
  end)

  it("publishes nothing and leaves no staging when a pack file is damaged", function()
    store.push_backup(repo, fleet.dir .. "/b1")
    store.damage_pack(repo)
    local r = pull({ "b1", "--dir", work .. "/pulled" })
    assert.equal(6, r.status, r.stderr)
    assert.matches("b1 was not pulled; nothing was published", r.stderr)
    assert.matches("the repository's data does not verify %(restic: .*ciphertext verification failed", r.stderr)
    assert.is_nil(fs.lstat(work .. "/pulled/b1"))
    no_staging(work .. "/pulled")
  end)

  it("publishes nothing when a snapshot's manifest does not match its artifacts (exit 6)", function()
    -- A backup whose artifact changed after its manifest was written,
    -- pushed as it is: restic stores it faithfully, the verify refuses it.
    helpers.sh("cp -a '" .. fleet.dir .. "/b1' '" .. work .. "/bad'")
    local m = json.decode(helpers.read(work .. "/bad/fleet-backup-manifest.json"))
    local art = work .. "/bad/" .. m.fleet.members[1].source_snapshot.artifact_path .. "/wasm_memory.bin"
    local before = helpers.read(art)
    helpers.write(art, string.char(before:byte(1) ~ 1) .. before:sub(2))
    assert.is_not.equal(before, helpers.read(art))
    store.push_backup(repo, work .. "/bad")
    local r = pull({ "b1", "--dir", work .. "/pulled" })
    assert.equal(6, r.status, r.stderr)
    assert.matches("does not verify", r.stderr)
    assert.is_nil(fs.lstat(work .. "/pulled/b1"))
    no_staging(work .. "/pulled")
  end)
end)

describe("backup pull killed (SIGKILL at a failpoint)", function()
  it("before its publication leaves only its staging, which the next pull removes", function()
    store.push_backup(repo, fleet.dir .. "/b1")
    local r = pull({ "b1", "--dir", work .. "/pulled" }, { FLEETSNAP_FAILPOINT = "before-publish@b1:1" })
    assert.equal(9, r.signal, r.stderr)
    assert.matches("fleetsnap failpoint before%-publish@b1: kill", r.stderr)
    assert.is_nil(fs.lstat(work .. "/pulled/b1"))
    assert.equal("directory", fs.lstat(work .. "/pulled/.b1.fleetsnap-pull").type)
    r = pull({ "b1", "--dir", work .. "/pulled" })
    assert.equal(0, r.status, r.stderr)
    assert.same(artifacts(fleet.dir .. "/b1"), artifacts(work .. "/pulled/b1"))
    no_staging(work .. "/pulled")
  end)

  it("after its publication leaves the verified backup, which a second pull does not replace", function()
    store.push_backup(repo, fleet.dir .. "/b1")
    local r = pull({ "b1", "--dir", work .. "/pulled" }, { FLEETSNAP_FAILPOINT = "after-publish@b1:1" })
    assert.equal(9, r.signal, r.stderr)
    assert.same(artifacts(fleet.dir .. "/b1"), artifacts(work .. "/pulled/b1"))
    r = pull({ "b1", "--dir", work .. "/pulled" })
    assert.equal(5, r.status)
    no_staging(work .. "/pulled")
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", work .. "/pulled/b1" }).status)
  end)
end)

describe("backup pull from a REST repository (rclone serve restic on loopback)", function()
  local server
  after_each(function()
    if server then server.stop() end
    server = nil
  end)

  it("restores, verifies and publishes the backup", function()
    server = store.rest_server(work .. "/rest")
    repo = store.init(server.url .. "fleet")
    store.push_backup(repo, fleet.dir .. "/b2")
    local r = pull({ "--json", "latest", "--repo", repo, "--out", work .. "/from-rest" }, { RESTIC_REPOSITORY = "" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("b2", json.decode(r.stdout).backup_id)
    assert.same(artifacts(fleet.dir .. "/b2"), artifacts(work .. "/from-rest"))
    -- By id: restored by its tag, without a listing.
    r = pull({ "--json", "b2", "--repo", repo, "--out", work .. "/from-rest-by-id" }, { RESTIC_REPOSITORY = "" })
    assert.equal(0, r.status, r.stderr)
    assert.same(artifacts(fleet.dir .. "/b2"), artifacts(work .. "/from-rest-by-id"))
    no_staging(work)
  end)
end)
