-- The --json contract: every output of every command, empty cases
-- included, against its JSON Schema under docs/schemas/ (closed objects),
-- and the checker itself shown to reject a wrong document.
local engine = require "fleetsnap.engine"
local json = engine.json
local helpers = require "helpers"
local schema = require "json_schema"

local SCHEMAS = helpers.root .. "/docs/schemas/"
local used = {}

local function load(name)
  used[name] = true
  return schema.load(SCHEMAS .. name .. ".schema.json")
end

local function assert_valid(name, doc)
  local ok, errs = schema.validate(load(name), doc)
  assert(ok, name .. ": " .. table.concat(errs or {}, "; ") .. "\n" .. json.encode(doc))
end

-- The documents a command printed (one per line), and its status.
local function run(home, argv, env)
  local r = helpers.fleetsnap(home, argv, env)
  local docs = {}
  for line in r.stdout:gmatch("[^\n]+") do docs[#docs + 1] = assert(json.decode(line), line) end
  return docs, r
end

-- A stream: every event and progress document, then its last one.
local function assert_stream(docs, last)
  assert.is_true(#docs >= 2)
  for i = 1, #docs - 1 do
    assert_valid(docs[i].type == "progress" and "progress" or "event", docs[i])
  end
  assert_valid(last, docs[#docs])
end

local home, work

setup(function()
  home = helpers.sim_home({ members = 2, depth = 1 })
  work = helpers.tmpdir()
end)
teardown(function() helpers.cleanup() end)

describe("the --json output of", function()
  it("--version", function()
    assert_valid("version", run(nil, { "--json", "--version" })[1])
  end)

  it("a usage error and a failure", function()
    local docs, r = run(nil, { "--json", "backup", "bogus" })
    assert.equal(2, r.status)
    assert_valid("error", docs[#docs])
    docs, r = run(nil, { "--json", "backup", "status", work .. "/none" })
    assert.equal(3, r.status)
    assert_valid("error", docs[#docs])
  end)

  it("backup create --dry-run, create, status, verify and a failed create's stream", function()
    assert_valid("backup-plan", run(home, { "--json", "backup", "create", "--dry-run", "--out", work .. "/d" })[1])
    assert_stream(run(home, { "--json", "backup", "create", "--out", work .. "/b1" }), "backup-result")
    assert_valid("backup-status", run(nil, { "--json", "backup", "status", work .. "/b1" })[1])
    assert_valid("backup-verify", run(nil, { "--json", "backup", "verify", work .. "/b1" })[1])
    local docs, r = run(home, { "--json", "backup", "create", "--out", work .. "/bad" }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    assert_stream(docs, "error")
  end)

  it("backup verify with a subset, and --all over verified, failed, corrupt and incomplete backups", function()
    local docs, r = run(nil, { "--json", "backup", "verify", work .. "/b1", "--read-data-subset", "50%" })
    assert.equal(0, r.status)
    assert_valid("backup-verify", docs[1])
    local all = helpers.tmpdir()
    helpers.sh("cp -a " .. work .. "/b1 " .. all .. "/good && cp -a " .. work .. "/b1 " .. all .. "/failed && cp -a "
      .. work .. "/b1 " .. all .. "/corrupt && cp -a " .. work .. "/bad " .. all .. "/incomplete")
    helpers.write(all .. "/corrupt/fleet-backup-manifest.json", "{")
    local m = json.decode(engine.fs.read(all .. "/failed/fleet-backup-manifest.json")).fleet.members[1]
    local file = all .. "/failed/" .. m.source_snapshot.artifact_path .. "/metadata.json"
    local before = engine.fs.read(file)
    helpers.write(file, before .. " ")
    docs, r = run(nil, { "--json", "backup", "verify", "--all", "--dir", all })
    assert.equal(6, r.status)
    assert_valid("backup-verify-all", docs[1])
    local states = {}
    for _, b in ipairs(docs[1].backups) do states[b.name] = b.state end
    assert.same({ good = "verified", failed = "failed", corrupt = "corrupt", incomplete = "incomplete" }, states)
  end)

  it("restore plan, its dry run, run, status", function()
    assert_valid("restore-plan", run(home, { "--json", "restore", "plan", work .. "/b1" })[1])
    assert_valid("restore-dry-run", run(home, { "--json", "restore", "run", work .. "/b1" })[1])
    assert_stream(run(home, { "--json", "restore", "run", work .. "/b1", "--execute" }), "restore-result")
    assert_valid("restore-status", run(nil, { "--json", "restore", "status", work .. "/b1" })[1])
  end)

  it("restore drill: a passing drill's stream, a corrupt one, and a clean-up with nothing to do", function()
    local b = work .. "/drill-b"
    helpers.sh("cp -a " .. work .. "/b1 " .. b)
    local docs, r = run(home, { "--json", "restore", "drill", b })
    assert.equal(0, r.status, r.stderr)
    assert_stream(docs, "restore-drill")
    local m = json.decode(engine.fs.read(b .. "/fleet-backup-manifest.json")).fleet.members[1]
    helpers.write(b .. "/" .. m.source_snapshot.artifact_path .. "/metadata.json", "{}")
    docs, r = run(home, { "--json", "restore", "drill", b })
    assert.equal(6, r.status, r.stderr)
    assert.equal("corrupt", docs[#docs].outcome)
    assert_valid("restore-drill", docs[#docs])
    docs, r = run(home, { "--json", "restore", "drill", b, "--cleanup" })
    assert.equal(0, r.status, r.stderr)
    assert_valid("restore-drill", docs[#docs])
  end)

  it("policy list, show and check", function()
    assert_valid("policies", run(nil, { "--json", "policy", "list" })[1])
    assert_valid("policy", run(nil, { "--json", "policy", "show", "consistent" })[1])
    assert_valid("policy-check", run(nil, { "--json", "policy", "check", "consistent" })[1])
  end)
end)

describe("the --json output of the catalogue and the clean-up", function()
  local dir
  setup(function()
    dir = work .. "/B"
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b1" }).status)
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b2" }).status)
    -- An incomplete one, whose snapshots are orphans.
    helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b3" }, { ICP_SIM_FAIL = "snapshot.download" })
  end)

  it("backup list, empty and not", function()
    assert_valid("backup-list", run(nil, { "--json", "backup", "list", "--dir", work .. "/empty" })[1])
    local doc = run(nil, { "--json", "backup", "list", "--dir", dir })[1]
    assert.equal(3, #doc.backups)
    assert_valid("backup-list", doc)
  end)

  it("backup inspect and diff", function()
    assert_valid("backup-inspect", run(nil, { "--json", "backup", "inspect", "b1", "--dir", dir })[1])
    assert_valid("backup-diff", run(nil, { "--json", "backup", "diff", "b1", "b2", "--dir", dir })[1])
  end)

  it("backup pull and backup prune --repo (a local restic repository)", function()
    local repo = work .. "/restic"
    local env = { RESTIC_PASSWORD = "contract", RESTIC_REPOSITORY = repo, FLEETSNAP_CACHE_DIR = work .. "/cache" }
    assert.equal(0, engine.proc.run({ argv = { "restic", "--no-cache", "init" }, env = env }).status)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "push", dir .. "/b1" }, env).status)
    assert_valid("backup-pull", run(nil, { "--json", "backup", "pull", "b1", "--out", work .. "/pulled" }, env)[1])
    assert_valid("backup-prune-repo", run(nil, { "--json", "backup", "prune", "--repo", repo, "--keep-last", "1",
      "--dir", dir }, env)[1])
  end)

  it("backup prune and forget (dry runs), snapshots and snapshots clean", function()
    assert_valid("backup-prune", run(home, { "--json", "backup", "prune", "--keep-last", "1", "--dir", dir })[1])
    assert_valid("backup-forget", run(home, { "--json", "backup", "forget", "b3", "--dir", dir })[1])
    assert_valid("snapshots", run(home, { "--json", "snapshots", "--dir", dir })[1])
    assert_valid("snapshots-clean", run(home, { "--json", "snapshots", "clean", "--dir", dir })[1])
  end)

  it("restore undo (the dry run)", function()
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", dir .. "/b1" }).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "run", dir .. "/b1", "--execute", "--safety-snapshot" }).status)
    assert_valid("undo-dry-run", run(home, { "--json", "restore", "undo", dir .. "/b1" })[1])
    assert_stream(run(home, { "--json", "restore", "undo", dir .. "/b1", "--execute" }), "restore-result")
  end)

  it("backup resume of a complete backup (no summary) and of a failed one", function()
    assert_valid("backup-result", run(home, { "--json", "backup", "resume", dir .. "/b2" })[1])
    assert_stream(run(home, { "--json", "backup", "resume", dir .. "/b3" }), "backup-result")
  end)
end)

describe("the schema check", function()
  it("rejects an empty array written as an object, an unknown key and a missing field", function()
    local good = run(nil, { "--json", "backup", "status", work .. "/b1" })[1]
    assert_valid("backup-status", good)
    local s = load("backup-status")
    local bad = json.decode(json.encode(good))
    bad.pending = json.object({})
    assert.is_false((schema.validate(s, bad)))
    bad = json.decode(json.encode(good))
    bad.extra = 1
    assert.is_false((schema.validate(s, bad)))
    bad = json.decode(json.encode(good))
    bad.counts = nil
    assert.is_false((schema.validate(s, bad)))
  end)

  it("has been used for every schema under docs/schemas", function()
    for _, name in ipairs(engine.fs.list(SCHEMAS)) do
      local base = name:match("^(.*)%.schema%.json$")
      assert.is_truthy(base, name)
      assert.is_true(used[base] == true, base .. " is checked by no spec")
    end
  end)
end)
