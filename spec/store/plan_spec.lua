-- `restore plan restic:<ref>`: a backup of a restic repository pulled into
-- the cache of pulled backups (or reused there after a cheap check that
-- it is intact), then planned; the cache kept within its size limit by
-- evicting the least recently used backups, never one a restore is using.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local schema = require "json_schema"
local store = require "store_pull_support"

local json, fs = engine.json, engine.fs

local fleet, work, repo, cache

setup(function()
  fleet = store.fleet({ "b1", "b2" })
end)
teardown(function() helpers.cleanup() end)

before_each(function()
  work = helpers.tmpdir()
  repo = store.init(work .. "/repo")
  cache = work .. "/cache"
  store.push_backup(repo, fleet.dir .. "/b1")
  store.push_backup(repo, fleet.dir .. "/b2")
end)

local function fleetsnap(argv, env)
  local e = { FLEETSNAP_CACHE_DIR = cache }
  for k, v in pairs(env or {}) do e[k] = v end
  return helpers.fleetsnap(fleet.home, argv, store.env(repo, e))
end

local function plan(ref, env)
  local r = fleetsnap({ "--json", "restore", "plan", ref }, env)
  assert.equal(0, r.status, r.stderr)
  return json.decode(r.stdout)
end

describe("restore plan restic:<ref>", function()
  it("pulls the backup into the cache and plans from it", function()
    local doc = plan("restic:b1")
    assert.equal("restore-plan", doc.type)
    local valid, errs = schema.validate(schema.load(helpers.root .. "/docs/schemas/restore-plan.schema.json"), doc)
    assert(valid, table.concat(errs or {}, "; "))
    assert.equal("b1", doc.cache.backup_id)
    assert.is_false(doc.cache.reused)
    assert.equal(cache .. "/b1", doc.cache.dir)
    assert.equal(cache .. "/b1/restore", doc.state)
    assert.equal("b1", doc.plan.backup.backup_id)
    assert.equal("file", fs.lstat(cache .. "/b1/fleet-backup-manifest.json").type)
    -- The later restore commands take the same reference.
    local r = fleetsnap({ "restore", "status", "restic:b1" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("of backup b1: planned", r.stdout)
  end)

  it("takes restic:latest as the newest capture time", function()
    assert.equal("b2", plan("restic:latest").cache.backup_id)
  end)

  it("reuses the cached copy the second time, without asking the repository", function()
    plan("restic:b1")
    -- A repository that does not exist: the reuse must not need one.
    local doc = plan("restic:b1", { RESTIC_REPOSITORY = work .. "/no-such-repo" })
    assert.is_true(doc.cache.reused)
    assert.equal("adopted", doc.status)
  end)

  it("pulls again when the cached copy changed since the pull", function()
    local first = plan("restic:b1")
    local art = cache .. "/b1/" .. first.plan.members[1].artifact_path .. "/wasm_memory.bin"
    local before = helpers.read(art)
    helpers.write(art, string.char(before:byte(1) ~ 1) .. before:sub(2))
    assert.is_not.equal(before, helpers.read(art))
    -- The planned restore is finished (aborted), so the copy is not in use.
    assert.equal(0, fleetsnap({ "restore", "run", "restic:b1", "--abort" }).status)
    local doc = plan("restic:b1")
    assert.is_false(doc.cache.reused)
    assert.equal(before, helpers.read(art))
  end)

  it("refuses --state with a restic: reference (the cache must see the restore)", function()
    local r = fleetsnap({ "restore", "plan", "restic:b1", "--state", work .. "/state" })
    assert.equal(2, r.status)
    assert.matches("%-%-state cannot be combined with a restic: reference", r.stderr)
    assert.is_nil(fs.lstat(work .. "/state"))
  end)

  it("refuses a reference that is not a backup id (exit 2) and makes no cache", function()
    local r = fleetsnap({ "restore", "plan", "restic:../b1" })
    assert.equal(2, r.status)
    assert.matches("restic:%.%./b1: not a backup id nor latest", r.stderr)
    assert.is_nil(fs.lstat(cache))
  end)

  it("refuses restic:latest outside restore plan (it may name another backup by now)", function()
    plan("restic:b1")
    local r = fleetsnap({ "restore", "status", "restic:latest" })
    assert.equal(2, r.status)
    assert.matches("restic:latest names a backup for restore plan only", r.stderr)
  end)
end)

describe("the cache's size limit", function()
  it("evicts the least recently used backup that no restore is using", function()
    plan("restic:b1")
    assert.equal(0, fleetsnap({ "restore", "run", "restic:b1", "--abort" }).status)
    local doc = plan("restic:b2", { FLEETSNAP_CACHE_LIMIT = "1" })
    assert.same({ "b1" }, doc.cache.evicted)
    assert.is_nil(fs.lstat(cache .. "/b1"))
    assert.is_nil(fs.lstat(cache .. "/.b1.pulled"))
    -- The backup just planned stays even alone over the limit.
    assert.equal("directory", fs.lstat(cache .. "/b2").type)
    assert.is_true(doc.cache.over_limit)
  end)

  it("never evicts a backup a restore is using", function()
    plan("restic:b1")
    local doc = plan("restic:b2", { FLEETSNAP_CACHE_LIMIT = "1" })
    assert.same({}, doc.cache.evicted)
    assert.is_true(doc.cache.over_limit)
    assert.equal("directory", fs.lstat(cache .. "/b1").type)
    local r = fleetsnap({ "restore", "status", "restic:b1" })
    assert.equal(0, r.status, r.stderr)
  end)

  it("refuses a limit that is not a size (exit 2)", function()
    local r = fleetsnap({ "restore", "plan", "restic:b1" }, { FLEETSNAP_CACHE_LIMIT = "lots" })
    assert.equal(2, r.status)
    assert.matches("cache limit %(FLEETSNAP_CACHE_LIMIT or the config's cache_limit%) must be a size", r.stderr)
  end)
end)
