-- fleetsnap backup create --push: the push is the last step, after the
-- backup is complete and its locks are released; a failed push leaves the
-- complete backup and its own exit status (12, EPUSH), and backup push
-- pushes it again.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local support = require "store_support"

local json = engine.json

local home, out, repo

local function create(extra, env)
  local argv = { "--sim", home, "backup", "create", "--out", out }
  for _, a in ipairs(extra) do argv[#argv + 1] = a end
  return support.fleetsnap(argv, env)
end

local function stops()
  local n = 0
  for _, e in pairs(helpers.effects(home)) do n = n + (e.stop or 0) end
  return n
end

describe("backup create --push", function()
  before_each(function()
    home = helpers.sim_home({ members = 2, depth = 1, heap = 4096, stable = 4096 })
    out = helpers.tmpdir() .. "/backups/cp1"
    repo = support.local_repo()
  end)
  after_each(function() helpers.cleanup() end)

  it("pushes the complete backup as its last step", function()
    local r = create({ "--push", repo.repo, "--repo-password-file", repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.matches("backup cp1 complete", r.stdout)
    assert.matches("pushed backup cp1 to", r.stdout)
    local snaps = support.snapshots(repo.repo, repo.password_file, "backup_id=cp1")
    assert.equal(1, #snaps)
    assert.equal(snaps[1].id:sub(1, 8), support.record(out).snapshot_id)
  end)

  it("runs restic backup alone: its requested record proves no earlier push", function()
    local restic = support.logging_restic(helpers.tmpdir() .. "/restic.log")
    local r = create({ "--push", repo.repo, "--repo-password-file", repo.password_file },
      { PATH = support.path_with(restic.dir) })
    assert.equal(0, r.status, r.stderr)
    assert.same({ "backup" }, restic.commands())
    -- A second push looks for the first's snapshot, and adopts it.
    r = support.fleetsnap({ "backup", "push", out, "--repo", repo.repo, "--repo-password-file", repo.password_file },
      { PATH = support.path_with(restic.dir) })
    assert.equal(0, r.status, r.stderr)
    assert.same({ "backup", "snapshots", "ls" }, restic.commands())
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
  end)

  it("pushes to RESTIC_REPOSITORY when --push has no value", function()
    local r = create({ "--push" }, { RESTIC_REPOSITORY = repo.repo, RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
  end)

  it("keeps the complete backup when the push fails, exits 12, and backup push then pushes it", function()
    local r = create({ "--json", "--push", repo.dir .. "/no-repository", "--repo-password-file",
      repo.password_file })
    assert.equal(12, r.status, r.stderr)
    local docs = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local d = json.decode(line)
      docs[d.type] = d
    end
    assert.equal("complete", docs.result.status)
    assert.same({ "failed", "ENOREPO" }, { docs.result.push.state, docs.result.push.code })
    assert.equal("EPUSH", docs.error.code)
    assert.matches("backup push", docs.error.next, 1, true)
    assert.equal("failed", support.record(out).state)
    assert.equal(0, support.fleetsnap({ "backup", "verify", out }).status)
    r = support.fleetsnap({ "backup", "push", out, "--repo", repo.repo, "--repo-password-file",
      repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
  end)

  it("pushes every backup to the config file's push repository, without --push", function()
    local config = helpers.tmpdir() .. "/config.lua"
    helpers.write(config, string.format("return { push = %q, repository_password_file = %q }\n", repo.repo,
      repo.password_file))
    local r = create({}, { FLEETSNAP_CONFIG = config })
    assert.equal(0, r.status, r.stderr)
    assert.matches("pushed backup cp1 to", r.stdout)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
  end)

  it("pushes to FLEETSNAP_PUSH, and --push R on the command line wins over it", function()
    local r = create({}, { FLEETSNAP_PUSH = repo.dir .. "/no-repository", RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(12, r.status, r.stderr)
    assert.equal(0, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
    out = helpers.tmpdir() .. "/backups/cp1"
    r = create({ "--push", repo.repo }, { FLEETSNAP_PUSH = repo.dir .. "/no-repository",
      RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
  end)

  it("is pushed by the resume of a create --push killed before the backup completed", function()
    local cid = helpers.fleet(home).members[2].canister_id
    local r = create({ "--push", repo.repo, "--repo-password-file", repo.password_file },
      { FLEETSNAP_FAILPOINT = "after-effect@stop-" .. cid .. ":1" })
    assert.equal(9, r.signal, r.stderr)
    assert.equal("requested", support.record(out).state)
    r = support.fleetsnap({ "--sim", home, "backup", "resume", out }, { RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.matches("pushed backup cp1 to", r.stdout)
    assert.equal("pushed", support.record(out).state)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
  end)

  it("is pushed once by the resume of a create --push killed during its push", function()
    local r = create({ "--push", repo.repo, "--repo-password-file", repo.password_file },
      { FLEETSNAP_FAILPOINT = "after-effect@restic-backup-cp1:1" })
    assert.equal(9, r.signal, r.stderr)
    assert.equal("pushing", support.record(out).state)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
    r = support.fleetsnap({ "--sim", home, "backup", "resume", out }, { RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.matches("adopted an earlier push's snapshot", r.stdout, 1, true)
    assert.equal("pushed", support.record(out).state)
    assert.equal(1, #support.snapshots(repo.repo, repo.password_file, "backup_id=cp1"))
  end)

  it("is not pushed by a resume after its push failed (backup push retries it)", function()
    local r = create({ "--push", repo.dir .. "/no-repository", "--repo-password-file", repo.password_file })
    assert.equal(12, r.status, r.stderr)
    r = support.fleetsnap({ "--sim", home, "backup", "resume", out }, { RESTIC_PASSWORD_FILE = repo.password_file })
    assert.equal(0, r.status, r.stderr)
    assert.not_matches("pushed backup", r.stdout)
    assert.equal("failed", support.record(out).state)
  end)

  it("without any repository is a usage error before any canister stops", function()
    local r = create({ "--push" })
    assert.equal(2, r.status, r.stderr)
    assert.matches("RESTIC_REPOSITORY", r.stderr, 1, true)
    assert.equal(0, stops())
    assert.is_nil(helpers.read(out .. "/fleetsnap-plan.json"))
  end)
end)
