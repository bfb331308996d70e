local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local fs, json = engine.fs, engine.json
local DAY = 86400 * 1000000000

-- A backup directory: `complete` writes the manifest too; `damage(plan,
-- man)` may mistype either document before it is written.
local function make(parent, name, opts)
  opts = opts or {}
  local dir = parent .. "/" .. name
  assert(fs.mkdir_private(dir))
  local created = opts.created_ns or DAY
  local plan = docs.backup_plan()
  plan.backup_id, plan.created_ns = name, created
  local man
  if opts.complete ~= false then
    man = docs.backup(dir)
    man.backup_id, man.created_at = name, "unix:" .. (created // 1000000000)
  end
  if opts.damage then opts.damage(plan, man) end
  docs.write(dir, "fleetsnap-plan.json", plan)
  if man then docs.write(dir, manifest.FILE_036, man) end
  return dir
end

-- The three ways of mistyping a manifest that broke every listing.
local DAMAGE = {
  { "a member that is 5", function(_, m) m.fleet.members[1] = 5 end, "fleet%.members%[1%]" },
  { "a file list that is 7", function(_, m) m.fleetsnap.members[1].files = 7 end, "fleetsnap.members%[1%]%.files" },
  { "a removed checksum", function(_, m) m.fleet.members[2].source_snapshot.checksum = nil end, "checksum" },
}

describe("catalog.read", function()
  local parent
  before_each(function() parent = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("reads a complete backup: members, creation time, both documents", function()
    local e = catalog.read(make(parent, "b1", { created_ns = 3 * DAY }))
    assert.equal("complete", e.state)
    assert.is_true(e.complete)
    assert.equal(2, e.members)
    assert.equal(3 * DAY, e.created_ns)
    assert.equal("b1", e.backup_id)
    assert.is_table(e.plan)
    assert.is_table(e.manifest)
  end)

  it("reads a backup with a plan and no manifest as incomplete", function()
    local e = catalog.read(make(parent, "b1", { complete = false }))
    assert.equal("incomplete", e.state)
    assert.is_false(e.complete)
    assert.equal(2, e.members)
  end)

  for _, case in ipairs(DAMAGE) do
    it("reads a manifest with " .. case[1] .. " as corrupt, with the reason", function()
      local e = catalog.read(make(parent, "b1", { damage = case[2] }))
      assert.equal("corrupt", e.state)
      assert.is_false(e.complete)
      assert.matches(parent .. "/b1", e.reason, 1, true)
      assert.matches(case[3], e.reason)
    end)
  end

  it("reads a truncated plan as corrupt, naming the file", function()
    local dir = make(parent, "b1", { complete = false })
    helpers.write(dir .. "/fleetsnap-plan.json", "{\"format\": ")
    local e = catalog.read(dir)
    assert.equal("corrupt", e.state)
    assert.matches("fleetsnap%-plan%.json", e.reason)
  end)

  it("reads a plan whose targets are not a list as corrupt", function()
    local e = catalog.read(make(parent, "b1", { damage = function(p) p.targets = 7 end }))
    assert.equal("corrupt", e.state)
    assert.matches("fleetsnap%-plan%.json: targets", e.reason)
  end)

  it("reads a valid manifest beside a corrupt plan as corrupt", function()
    local e = catalog.read(make(parent, "b1", { damage = function(p) p.operations = "x" end }))
    assert.equal("corrupt", e.state)
  end)
end)

describe("catalog.list", function()
  local parent
  before_each(function() parent = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("lists a corrupt backup as corrupt and the others as they are", function()
    make(parent, "b1", { created_ns = 3 * DAY })
    make(parent, "b2", { damage = DAMAGE[1][2] })
    make(parent, "b3", { complete = false, created_ns = 2 * DAY })
    local rows = catalog.list(parent)
    assert.equal(3, #rows)
    local by = {}
    for _, r in ipairs(rows) do by[r.id] = r end
    assert.same({ "complete", "corrupt", "incomplete" }, { by.b1.state, by.b2.state, by.b3.state })
    assert.is_string(by.b2.reason)
    assert.equal(2, by.b1.members)
  end)

  it("lists newest first, a corrupt backup (no time) last", function()
    make(parent, "a", { created_ns = 2 * DAY })
    make(parent, "b", { damage = DAMAGE[1][2] })
    make(parent, "c", { created_ns = 3 * DAY })
    make(parent, "d", { created_ns = 1 * DAY })
    local ids = {}
    for i, r in ipairs(catalog.list(parent)) do ids[i] = r.id end
    assert.same({ "c", "a", "d", "b" }, ids)
  end)

  it("numbers no row: a row carries no list number", function()
    make(parent, "b1")
    assert.is_nil(catalog.list(parent)[1].n)
  end)

  it("gives a complete backup's time, root, policy, bytes and window", function()
    make(parent, "b1", { created_ns = 3 * DAY })
    local r = catalog.list(parent)[1]
    assert.equal(3 * DAY, r.created_ns)
    assert.equal(docs.ROOT, r.root)
    assert.equal("consistent", r.policy)
    assert.equal(12, r.window_ns)
    local m = manifest.read(parent .. "/b1")
    assert.equal(m.doc.fleetsnap.members[1].bytes + m.doc.fleetsnap.members[2].bytes, r.bytes)
  end)

  it("gives no bytes nor window for an incomplete backup, and no time for a corrupt one", function()
    make(parent, "b1", { complete = false })
    make(parent, "b2", { damage = DAMAGE[1][2] })
    local rows = catalog.list(parent)
    assert.is_nil(rows[1].bytes)
    assert.is_nil(rows[1].window_ns)
    assert.equal(DAY, rows[1].created_ns)
    assert.is_nil(rows[2].created_ns)
  end)

  it("lists only the backups of one root with opts.root", function()
    make(parent, "b1")
    make(parent, "b2", { damage = function(p) p.root = docs.A end })
    local rows = catalog.list(parent, { root = docs.A })
    assert.equal(1, #rows)
    assert.equal("b2", rows[1].id)
  end)

  it("skips directories that hold no backup", function()
    make(parent, "b1")
    assert(fs.mkdir_private(parent .. "/notes"))
    local rows = catalog.list(parent)
    assert.equal(1, #rows)
    assert.equal("b1", rows[1].id)
  end)

  it("lists nothing under a directory that does not exist", function()
    assert.same({}, catalog.list(parent .. "/none"))
  end)
end)

describe("catalog.resolve", function()
  local parent
  before_each(function()
    parent = helpers.tmpdir()
    make(parent, "b1", { damage = DAMAGE[2][2] })
    make(parent, "b2", { created_ns = 2 * DAY })
    make(parent, "c-20261130-aa", { created_ns = 3 * DAY })
    make(parent, "c-20261201-bb", { created_ns = 4 * DAY, complete = false })
  end)
  after_each(function() helpers.cleanup() end)

  it("takes a directory as it is", function()
    assert.equal(parent .. "/b2", catalog.resolve(parent .. "/b2", "elsewhere"))
  end)

  it("finds a backup by id", function()
    assert.equal(parent .. "/b1", catalog.resolve("b1", parent))
  end)

  it("finds a backup by a unique prefix of its id", function()
    assert.equal(parent .. "/c-20261130-aa", catalog.resolve("c-202611", parent))
  end)

  it("prefers an exact id to a longer id it begins", function()
    make(parent, "b2x")
    assert.equal(parent .. "/b2", catalog.resolve("b2", parent))
  end)

  it("refuses an ambiguous prefix as a usage error, naming the candidates", function()
    local dir, err, code = catalog.resolve("c-", parent)
    assert.is_nil(dir)
    assert.equal("EUSAGE", code)
    assert.matches("c%-20261130%-aa, c%-20261201%-bb", err)
  end)

  it("takes a number as an id prefix, never as a row", function()
    local dir, _, code = catalog.resolve("2", parent)
    assert.is_nil(dir)
    assert.equal("ENOTFOUND", code)
  end)

  it("resolves latest to the newest complete backup, passing over an incomplete one", function()
    assert.equal(parent .. "/c-20261130-aa", catalog.resolve("latest", parent))
  end)

  it("refuses latest when the directory holds complete backups of two roots, naming them", function()
    make(parent, "other", { created_ns = 5 * DAY, damage = function(p) p.root = docs.A end })
    local dir, err, code = catalog.resolve("latest", parent)
    assert.is_nil(dir)
    assert.equal("EUSAGE", code)
    assert.matches(docs.ROOT:gsub("%-", "%%-"), err)
    assert.matches(docs.A:gsub("%-", "%%-"), err)
  end)

  it("resolves latest of one root with opts.root", function()
    make(parent, "other", { created_ns = 5 * DAY, damage = function(p) p.root = docs.A end })
    assert.equal(parent .. "/c-20261130-aa", catalog.resolve("latest", parent, { root = docs.ROOT }))
    assert.equal(parent .. "/other", catalog.resolve("latest", parent, { root = docs.A }))
  end)

  it("returns ENOTFOUND for latest when no backup is complete", function()
    local empty = helpers.tmpdir()
    make(empty, "b1", { complete = false })
    local dir, err, code = catalog.resolve("latest", empty)
    assert.is_nil(dir)
    assert.equal("ENOTFOUND", code)
    assert.matches("no complete backup", err)
  end)

  it("returns ENOTFOUND for an unknown reference, naming the directory", function()
    local dir, err, code = catalog.resolve("b9", parent)
    assert.is_nil(dir)
    assert.equal("ENOTFOUND", code)
    assert.matches("no backup b9 %(nor under " .. parent:gsub("%-", "%%-"), err)
  end)
end)

describe("catalog.find", function()
  it("raises ENOTFOUND as an error object", function()
    local ok, e = pcall(catalog.find, "b9", helpers.tmpdir())
    assert.is_false(ok)
    assert.is_true(errors.is(e))
    assert.equal("ENOTFOUND", e.code)
    helpers.cleanup()
  end)

  it("raises EUSAGE for an ambiguous prefix", function()
    local parent = helpers.tmpdir()
    make(parent, "b1")
    make(parent, "b2")
    local ok, e = pcall(catalog.find, "b", parent)
    assert.is_false(ok)
    assert.equal("EUSAGE", e.code)
    helpers.cleanup()
  end)
end)

describe("catalog.diff", function()
  local parent
  before_each(function() parent = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("finds nothing changed between a backup and itself", function()
    local d = make(parent, "b1")
    local res = catalog.diff(d, d)
    assert.same({ 0, 0, 0, 2 }, { #res.added, #res.removed, #res.changed, #res.same })
  end)

  it("names the changed files of a member whose artifact differs, with both sizes", function()
    local a, b = make(parent, "b1"), make(parent, "b2")
    -- Rewrite one file of b2's first member and the manifest's record of it.
    local m = json.decode(helpers.read(b .. "/" .. manifest.FILE_036))
    local cid = m.fleet.members[1].canister_id
    helpers.write(b .. "/" .. cid .. "/stable_memory.bin", "changed")
    local tree = assert(engine.hash.tree(b .. "/" .. cid))
    m.fleet.members[1].source_snapshot.checksum = tree.digest
    m.fleetsnap.members[1].digest, m.fleetsnap.members[1].bytes = tree.digest, tree.bytes
    m.fleetsnap.members[1].files = json.array(tree.files)
    docs.write(b, manifest.FILE_036, m)
    local res = catalog.diff(a, b)
    assert.equal(1, #res.changed)
    local c = res.changed[1]
    assert.equal(cid, c.canister_id)
    assert.same({ "stable_memory.bin" }, c.files_changed)
    assert.is_true(c.data_changed)
    assert.is_false(c.module_hash_changed)
    assert.equal(tree.bytes, c.bytes_b)
    assert.is_true(c.bytes_a > c.bytes_b)
    assert.equal(1, #res.same)
  end)

  it("reports a member only in the first as removed and only in the second as added", function()
    local a, b = make(parent, "b1"), make(parent, "b2")
    local m = json.decode(helpers.read(b .. "/" .. manifest.FILE_036))
    local gone = table.remove(m.fleet.members, 2).canister_id
    table.remove(m.fleetsnap.members, 2)
    docs.write(b, manifest.FILE_036, m)
    local res = catalog.diff(a, b)
    assert.same({ gone }, { res.removed[1].canister_id })
    assert.equal(0, #res.added)
    res = catalog.diff(b, a)
    assert.same({ gone }, { res.added[1].canister_id })
    assert.equal(0, #res.removed)
  end)

  it("refuses an incomplete backup", function()
    local ok, e = pcall(catalog.diff, make(parent, "b1"), make(parent, "b2", { complete = false }))
    assert.is_false(ok)
    assert.equal("EPRECONDITION", e.code)
    assert.same({ "backup", "resume" }, e.next.command)
    assert.equal(parent .. "/b2", e.next.ref)
  end)
end)

describe("catalog.open", function()
  local parent
  before_each(function() parent = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("raises ECORRUPT with the reason for a corrupt backup", function()
    local ok, e = pcall(catalog.open, make(parent, "b1", { damage = DAMAGE[3][2] }))
    assert.is_false(ok)
    assert.equal("ECORRUPT", e.code)
    assert.matches("checksum", e.message)
  end)

  it("raises ENOTFOUND for a directory without a backup", function()
    local ok, e = pcall(catalog.open, parent)
    assert.is_false(ok)
    assert.equal("ENOTFOUND", e.code)
  end)

  it("returns the entry of a usable backup", function()
    assert.equal("complete", catalog.open(make(parent, "b1")).state)
  end)
end)

describe("catalog.prune_plan", function()
  local function b(name, day, fields)
    local e = { name = name, dir = "/x/" .. name, complete = true, state = "complete", locked = false,
      created_ns = day * DAY }
    for k, v in pairs(fields or {}) do e[k] = v end
    return e
  end

  it("keeps the newest `last` complete backups and deletes the rest", function()
    local delete, keep = catalog.prune_plan({ b("c", 3), b("b", 2), b("a", 1) }, { last = 1 })
    assert.equal("last", keep["/x/c"])
    assert.same({ "b", "a" }, { delete[1].name, delete[2].name })
  end)

  it("never deletes nor counts a corrupt, incomplete or locked backup", function()
    local all = { b("x", 9, { state = "corrupt", complete = false }), b("y", 8, { complete = false, state = "incomplete" }),
      b("z", 7, { locked = true }), b("c", 3), b("a", 1) }
    local delete, keep = catalog.prune_plan(all, { last = 1 })
    assert.equal("last", keep["/x/c"])
    assert.equal(1, #delete)
    assert.equal("a", delete[1].name)
  end)

  it("keeps the newest backup of each of the `daily` most recent days", function()
    local delete, keep = catalog.prune_plan({ b("c2", 3), b("c1", 3), b("b", 2), b("a", 1) }, { daily = 2 })
    assert.equal("daily", keep["/x/c2"])
    assert.equal("daily", keep["/x/b"])
    assert.same({ "c1", "a" }, { delete[1].name, delete[2].name })
  end)
end)

describe("catalog.prune", function()
  local parent
  before_each(function()
    parent = helpers.tmpdir()
    make(parent, "b1", { created_ns = 1 * DAY })
    make(parent, "b2", { created_ns = 2 * DAY, damage = DAMAGE[1][2] })
    make(parent, "b3", { created_ns = 3 * DAY })
  end)
  after_each(function() helpers.cleanup() end)

  it("deletes by the rules among the readable backups and keeps the corrupt one", function()
    local res = catalog.prune(parent, { last = 1 })
    assert.same({ "b1" }, res.deleted)
    assert.is_nil(fs.lstat(parent .. "/b1"))
    assert.equal("directory", fs.lstat(parent .. "/b2").type)
    assert.equal("directory", fs.lstat(parent .. "/b3").type)
    local actions = {}
    for _, r in ipairs(res.backups) do actions[r.backup] = r.action end
    assert.same({ b1 = "delete", b2 = "keep (corrupt)", b3 = "keep (last)" }, actions)
  end)

  it("deletes nothing with dry_run, yet says what it would", function()
    local res = catalog.prune(parent, { last = 1 }, { dry_run = true })
    assert.same({ "b1" }, res.delete)
    assert.same({}, res.deleted)
    assert.equal("directory", fs.lstat(parent .. "/b1").type)
  end)

  it("keeps a backup whose runner holds its lock", function()
    local lock = assert(engine.lock.acquire(parent .. "/b1/fleetsnap-journal.wal.lock"))
    local res = catalog.prune(parent, { last = 1 })
    lock:close()
    assert.same({}, res.deleted)
    local actions = {}
    for _, r in ipairs(res.backups) do actions[r.backup] = r.action end
    assert.equal("keep (in use)", actions.b1)
  end)

  it("keeps a backup its before_remove refuses, reporting why", function()
    local seen = {}
    local res = catalog.prune(parent, { last = 1 }, { before_remove = function(b, all, delete)
      seen[#seen + 1] = { b.name, #all, #delete }
      return nil, "its snapshots could not be deleted"
    end })
    assert.same({ { "b1", 3, 1 } }, seen)
    assert.same({}, res.deleted)
    assert.same({ { backup = "b1", message = "its snapshots could not be deleted" } }, res.failed)
    assert.equal("directory", fs.lstat(parent .. "/b1").type)
  end)

  it("asks before_remove in a dry run too, deleting nothing", function()
    local asked = 0
    local res = catalog.prune(parent, { last = 1 }, { dry_run = true,
      before_remove = function() asked = asked + 1 return true end })
    assert.equal(1, asked)
    assert.same({}, res.deleted)
    assert.equal("directory", fs.lstat(parent .. "/b1").type)
  end)

  it("refuses to run without a keep rule", function()
    local ok, e = pcall(catalog.prune, parent, {})
    assert.is_false(ok)
    assert.equal("EUSAGE", e.code)
    assert.equal("directory", fs.lstat(parent .. "/b1").type)
  end)
end)

describe("catalog.remove", function()
  it("refuses a corrupt backup", function()
    local parent = helpers.tmpdir()
    local dir = make(parent, "b1", { damage = DAMAGE[1][2] })
    local ok, _, code = catalog.remove(catalog.read(dir))
    assert.is_nil(ok)
    assert.equal("ECORRUPT", code)
    assert.equal("directory", fs.lstat(dir).type)
    helpers.cleanup()
  end)
end)

describe("the catalogue module", function()
  it("requires neither the backup nor the restore domain", function()
    local r = helpers.lua([[
      require "fleetsnap.catalog"
      io.write(tostring(package.loaded["fleetsnap.backup"]), " ", tostring(package.loaded["fleetsnap.restore"]))
    ]])
    assert.equal(0, r.status, r.stderr)
    assert.equal("nil nil", r.stdout)
  end)
end)
