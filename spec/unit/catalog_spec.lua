local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local fs = engine.fs
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
    make(parent, "b1")
    make(parent, "b2", { damage = DAMAGE[1][2] })
    make(parent, "b3", { complete = false })
    local rows = catalog.list(parent)
    assert.equal(3, #rows)
    assert.same({ "complete", "corrupt", "incomplete" }, { rows[1].state, rows[2].state, rows[3].state })
    assert.same({ 1, 2, 3 }, { rows[1].n, rows[2].n, rows[3].n })
    assert.is_string(rows[2].reason)
    assert.equal(2, rows[1].members)
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
    make(parent, "b2")
  end)
  after_each(function() helpers.cleanup() end)

  it("takes a directory as it is", function()
    assert.equal(parent .. "/b2", catalog.resolve(parent .. "/b2", "elsewhere"))
  end)

  it("numbers backups as list does, corrupt ones included", function()
    assert.equal(parent .. "/b2", catalog.resolve("2", parent))
    assert.equal(parent .. "/b2", catalog.resolve(tostring(catalog.list(parent)[2].n), parent))
  end)

  it("finds a backup by id", function()
    assert.equal(parent .. "/b1", catalog.resolve("b1", parent))
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
