-- The restic driver's methods against a real local repository (restic
-- 0.14): what push, list and the pull side build on.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "store_support"
local restic = require "fleetsnap.store.restic"

local fs = engine.fs

local function source_dir()
  local dir = helpers.tmpdir() .. "/src"
  helpers.sh("mkdir -p '" .. dir .. "/m1' && printf 12345 > '" .. dir .. "/m1/a.bin' && printf xy > '" .. dir
    .. "/top.json' && printf l > '" .. dir .. "/skip.lock'")
  return dir
end

describe("store.restic", function()
  local r, repo
  before_each(function()
    r = support.local_repo()
    repo = restic.open({ repository = r.repo, password_file = r.password_file })
  end)
  after_each(function() helpers.cleanup() end)

  describe("init", function()
    it("creates a repository", function()
      local dir = helpers.tmpdir() .. "/new"
      local fresh = restic.open({ repository = dir, password_file = r.password_file })
      assert.is_true(fresh:init())
      assert.is_not_nil(fs.lstat(dir .. "/config"))
    end)
  end)

  describe("backup", function()
    it("backs up a directory as '.', with tags, host, UTC time and excludes", function()
      local b = assert(repo:backup(source_dir(), { tags = { "fleetsnap", "backup_id=x" }, host = "h1",
        time = "2026-01-02 03:04:05", excludes = { "*.lock" } }))
      assert.is_false(b.partial)
      assert.equal(2, b.files)
      local snaps = assert(repo:snapshots({ tags = { "backup_id=x" } }))
      assert.equal(1, #snaps)
      assert.equal(b.snapshot_id, snaps[1].id:sub(1, #b.snapshot_id))
      assert.equal("h1", snaps[1].hostname)
      assert.equal("2026-01-02T03:04:05Z", snaps[1].time)
    end)

    it("reports restic's exit 3 as partial, with the snapshot it still wrote", function()
      local fake = support.fake_restic("backup-exit-3")
      local faked = restic.open({ repository = r.repo, password_file = r.password_file, restic = fake .. "/restic" })
      local b = assert(faked:backup(source_dir(), { tags = { "t" } }))
      assert.is_true(b.partial)
      assert.is_string(b.snapshot_id)
      assert.matches("could not be read", b.stderr_tail, 1, true)
    end)

    it("returns ENOREPO for a missing repository", function()
      local none = restic.open({ repository = r.dir .. "/none", password_file = r.password_file })
      local b, err = none:backup(source_dir(), {})
      assert.is_nil(b)
      assert.equal("ENOREPO", err.code)
    end)

    it("returns EREPO when restic cannot be run", function()
      local missing = restic.open({ repository = r.repo, password_file = r.password_file,
        restic = "/nonexistent/restic" })
      local b, err = missing:backup(source_dir(), {})
      assert.is_nil(b)
      assert.equal("EREPO", err.code)
    end)
  end)

  describe("snapshots", function()
    it("requires every tag given", function()
      assert(repo:backup(source_dir(), { tags = { "a", "b" } }))
      assert(repo:backup(source_dir(), { tags = { "a" } }))
      assert.equal(2, #assert(repo:snapshots({ tags = { "a" } })))
      assert.equal(1, #assert(repo:snapshots({ tags = { "a", "b" } })))
      assert.equal(0, #assert(repo:snapshots({ tags = { "c" } })))
    end)
  end)

  describe("ls", function()
    it("names the nodes from the directory's root, with file sizes", function()
      local b = assert(repo:backup(source_dir(), {}))
      local by = {}
      for _, n in ipairs(assert(repo:ls(b.snapshot_id))) do by[n.path] = n end
      assert.same({ path = "/m1/a.bin", type = "file", size = 5 }, by["/m1/a.bin"])
      assert.equal("dir", by["/m1"].type)
      assert.equal(2, by["/top.json"].size)
    end)
  end)

  describe("restore", function()
    it("restores only what include names", function()
      local b = assert(repo:backup(source_dir(), {}))
      local target = helpers.tmpdir() .. "/out"
      local restored = assert(repo:restore(b.snapshot_id, target, { include = { "/m1" } }))
      assert.equal(b.snapshot_id, restored.snapshot_id)
      assert.equal("12345", helpers.read(target .. "/m1/a.bin"))
      assert.is_nil(fs.lstat(target .. "/top.json"))
    end)

    it("restores latest of the snapshots carrying every tag, and names the one it chose", function()
      local old = assert(repo:backup(source_dir(), { tags = { "fleetsnap", "backup_id=x" } }))
      assert(repo:backup(source_dir(), { tags = { "fleetsnap", "backup_id=y" } }))
      local chosen = assert(repo:restore("latest", helpers.tmpdir() .. "/out", { tags = { "fleetsnap", "backup_id=x" } }))
      assert.equal(old.snapshot_id, chosen.snapshot_id)
      assert.is_nil(repo:restore("latest", helpers.tmpdir() .. "/none", { tags = { "backup_id=z" } }))
    end)
  end)

  describe("forget and check", function()
    it("forgets a snapshot, prunes its data, and the repository checks clean", function()
      local b = assert(repo:backup(source_dir(), { tags = { "f" } }))
      local id = assert(repo:snapshots({ tags = { "f" } }))[1].id
      assert.is_true(repo:forget({ id }, { prune = true }))
      assert.equal(0, #assert(repo:snapshots({ tags = { "f" } })))
      assert.is_string(b.snapshot_id)
      assert.is_true(repo:check({ read_data = true }))
    end)

    it("check fails with EREPO on a damaged pack", function()
      assert(repo:backup(source_dir(), {}))
      local packs = helpers.sh("find '" .. r.repo .. "/data' -type f")
      local pack = packs:match("([^\n]+)")
      helpers.sh("chmod u+w '" .. pack .. "' && printf 'XXXXXXXX' | dd of='" .. pack
        .. "' bs=1 seek=40 conv=notrunc 2>/dev/null")
      local ok, err = repo:check({ read_data = true })
      assert.is_nil(ok)
      assert.equal("EREPO", err.code)
    end)
  end)
end)
