-- `backup prune --repo`: the local prune's keep rules applied per root to
-- the repository's fleetsnap backups; a dry run by default, `--execute`
-- forgets the chosen snapshots (`restic forget --prune <ids>`), never a
-- backup a restore is using.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local store = require "store_pull_support"

local json = engine.json

local fleet, work, repo, cache

setup(function()
  fleet = store.fleet({ "b1" })
end)
teardown(function() helpers.cleanup() end)

-- Four backups of one root, a day apart (the same bytes: restic dedups
-- them; only b1 is pulled, whose manifest says b1), and one of another
-- root.
before_each(function()
  work = helpers.tmpdir()
  repo = store.init(work .. "/repo")
  cache = work .. "/cache"
  for i, id in ipairs({ "b1", "d2", "d3", "d4" }) do
    store.push(repo, fleet.dir .. "/b1", id, fleet.root, string.format("2026-11-2%d 10:00:00", i))
  end
  store.push(repo, fleet.dir .. "/b1", "other", "aaaaa-aa", "2026-11-20 10:00:00")
end)

local function prune(argv, env)
  local full = { "--json", "backup", "prune", "--repo", repo, "--dir", work .. "/backups" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local e = { FLEETSNAP_CACHE_DIR = cache }
  for k, v in pairs(env or {}) do e[k] = v end
  local r = helpers.fleetsnap(fleet.home, full, store.env(repo, e))
  assert.equal(0, r.status, r.stderr)
  return json.decode(r.stdout)
end

local function actions(doc)
  local out = {}
  for _, b in ipairs(doc.backups) do out[b.backup_id] = b.action end
  return out
end

describe("backup prune --repo", function()
  it("lists what it would forget and forgets nothing without --execute", function()
    local before = store.backup_ids(repo)
    local doc = prune({ "--keep-last", "2" })
    assert.equal("prune-repo", doc.type)
    assert.is_true(doc.dry_run)
    assert.same({ b1 = "forget", d2 = "forget", d3 = "keep (last)", d4 = "keep (last)", other = "keep (last)" },
      actions(doc))
    assert.equal(2, #doc.forget)
    assert.same({}, doc.forgotten)
    assert.same(before, store.backup_ids(repo))
  end)

  it("forgets the snapshots of the backups no rule keeps with --execute", function()
    local doc = prune({ "--keep-last", "2", "--execute" })
    assert.is_false(doc.dry_run)
    assert.equal(2, #doc.forgotten)
    assert.same({ "d3", "d4", "other" }, store.backup_ids(repo))
  end)

  it("keeps a backup whose pulled copy a restore is using", function()
    local r = helpers.fleetsnap(fleet.home, { "restore", "plan", "restic:b1" },
      store.env(repo, { FLEETSNAP_CACHE_DIR = cache }))
    assert.equal(0, r.status, r.stderr)
    local doc = prune({ "--keep-last", "1", "--execute" })
    local a = actions(doc)
    assert.equal("keep (in use)", a.b1)
    assert.equal("forget", a.d2)
    assert.same({ "b1", "d4", "other" }, store.backup_ids(repo))
  end)

  it("keeps a backup whose local copy of the same id is in use", function()
    helpers.sh("mkdir -p '" .. work .. "/backups' && cp -a '" .. fleet.dir .. "/b1' '" .. work .. "/backups/b1'")
    -- Its runner alive: the journal lock held.
    local lock = assert(engine.lock.acquire(work .. "/backups/b1/fleetsnap-journal.wal.lock"))
    local ok, doc = pcall(prune, { "--keep-last", "1", "--execute" })
    lock:close()
    assert(ok, doc)
    assert.equal("keep (in use)", actions(doc).b1)
    assert.equal("forget", actions(doc).d2)
    assert.same({ "b1", "d4", "other" }, store.backup_ids(repo))
  end)
end)

describe("backup prune --repo on a REST repository (rclone serve restic on loopback)", function()
  local server
  after_each(function()
    if server then server.stop() end
    server = nil
  end)

  it("forgets what no rule keeps, and restic no longer lists it", function()
    server = store.rest_server(work .. "/rest")
    repo = store.init(server.url .. "fleet")
    for i, id in ipairs({ "r1", "r2", "r3" }) do
      store.push(repo, fleet.dir .. "/b1", id, fleet.root, string.format("2026-11-2%d 10:00:00", i))
    end
    local doc = prune({ "--keep-last", "1", "--execute" })
    assert.same({ r1 = "forget", r2 = "forget", r3 = "keep (last)" }, actions(doc))
    assert.equal(2, #doc.forgotten)
    assert.same({ "r3" }, store.backup_ids(repo))
  end)
end)
