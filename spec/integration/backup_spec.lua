-- fleetsnap backup against icp-sim: policies, scopes, faults, containment,
-- resume, locks and verification.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local executor = require "fleetsnap.exec.executor"
local snapshot_index = require "fleetsnap.snapshot_index"
local units = require "fleetsnap.units"

local json, fs = engine.json, engine.fs

local function manifest(dir)
  return json.decode(fs.read(dir .. "/fleet-backup-manifest.json"))
end

local function statuses(home)
  local out = {}
  for _, m in ipairs(helpers.fleet(home).members) do out[m.canister_id] = m.status end
  return out
end

local function all_running(home)
  for cid, s in pairs(statuses(home)) do
    if s ~= "running" then return false, cid .. " is " .. s end
  end
  return true
end

-- The fleet, and the backup directory, of the running test: a fresh
-- simulated fleet for every test of a block that calls fresh_fleet().
local home, fleet, out

local function fresh_fleet(opts)
  before_each(function()
    home = helpers.sim_home(opts)
    fleet = helpers.fleet(home)
    out = helpers.tmpdir() .. "/backups/b1"
  end)
  after_each(function() helpers.cleanup() end)
end

describe("fleetsnap backup create", function()
  fresh_fleet()

  it("backs up the whole non-root fleet with one effect per operation, and verifies", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out })
    assert.equal(0, r.status, r.stderr)
    assert.matches("backup b1 complete: 6 members", r.stdout)
    local m = manifest(out)
    assert.equal(6, #m.fleet.members)
    assert.equal(fleet.root, m.source.root_canister)
    local effects = helpers.effects(home)
    for _, member in ipairs(fleet.members) do
      local e = effects[member.canister_id]
      local n = member.canister_id == fleet.root and 0 or 1
      assert.same({ n, n, n }, { e.stop, e.start, e.snapshot_create })
    end
    assert.is_true(all_running(home))
    r = helpers.fleetsnap(nil, { "backup", "verify", out })
    assert.equal(0, r.status, r.stderr)
    assert.matches("verified %(6 members; re%-hashed 6 of 6 members", r.stdout)
    -- Nothing but the backup is left in the directory.
    for _, name in ipairs(fs.list(out)) do
      assert.is_nil(name:find("%.tmp$"), name)
      assert.is_nil(name:find("fsn%-tmp"), name)
    end
    assert.is_nil(fs.lstat(out .. "/.fleetsnap-commands"))
  end)

  it("stores each artifact's digest as the tree digest of the published bytes", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
    for _, member in ipairs(manifest(out).fleet.members) do
      local s = member.source_snapshot
      assert.equal(448, fs.lstat(out .. "/" .. s.artifact_path).mode) -- 0700
      assert.equal(384, fs.lstat(out .. "/" .. s.artifact_path .. "/metadata.json").mode) -- 0600
      assert.equal(engine.hash.tree(out .. "/" .. s.artifact_path).digest, s.checksum)
      assert.equal(member.canister_id, s.artifact_path)
    end
  end)

  it("writes a download journal upstream's verify can bind to", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
    local dj = json.decode(fs.read(out .. "/download-journal.json"))
    local m = manifest(out)
    assert.equal(m.backup_id, dj.backup_id)
    assert.equal(m.fleet.discovery_topology_hash, dj.discovery_topology_hash)
    for i, a in ipairs(dj.artifacts) do
      assert.equal("Durable", a.state)
      assert.equal(m.fleet.members[i].source_snapshot.checksum, a.checksum)
    end
  end)

  it("publishes a snapshot index of its manifest and plan: each member's snapshot, the plan's connection", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
    local index, why = snapshot_index.read(out)
    assert.is_table(index, why)
    assert.equal(engine.hash.sha256(fs.read(out .. "/fleet-backup-manifest.json")), index.manifest_sha256)
    assert.equal(engine.hash.sha256(fs.read(out .. "/fleetsnap-plan.json")), index.plan_sha256)
    local m = manifest(out)
    assert.equal(#m.fleet.members, #index.snapshots)
    for i, member in ipairs(m.fleet.members) do
      assert.same({ canister_id = member.canister_id, snapshot_id = member.source_snapshot.snapshot_id },
        index.snapshots[i])
    end
    assert.same(json.decode(fs.read(out .. "/fleetsnap-plan.json")).connection, index.connection)
    assert.equal(home, index.connection.sim)
  end)

  it("keeps one consistency window with the consistent policy", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
    local fsn = manifest(out).fleetsnap
    local last_stop, first_start = 0, math.maxinteger
    for _, m in ipairs(fsn.members) do
      last_stop = math.max(last_stop, m.stopped_at)
      first_start = math.min(first_start, m.started_at)
    end
    assert.is_true(last_stop < first_start)
    assert.equal("consistent", fsn.policy)
  end)

  it("leaves the selection stopped under hold", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--policy", "hold", "--out", out }).status)
    for cid, s in pairs(statuses(home)) do
      assert.equal(cid == fleet.root and "running" or "stopped", s)
    end
  end)

  it("backs up with rolling and sequential", function()
    for _, p in ipairs({ "rolling", "sequential" }) do
      local r = helpers.fleetsnap(home, { "backup", "create", "--policy", p, "--out", out .. p })
      assert.equal(0, r.status, r.stderr)
      assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", out .. p }).status)
    end
    assert.is_true(all_running(home))
  end)

  it("selects a subtree by role", function()
    local role = fleet.members[2].role
    local r = helpers.fleetsnap(home, { "backup", "create", "--subtree", role, "--out", out })
    assert.equal(0, r.status, r.stderr)
    local m = manifest(out)
    assert.equal(role, m.fleet.members[1].role)
    assert.equal(3, #m.fleet.members)
  end)

  it("selects one member, and the root only when asked", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--member", fleet.members[4].canister_id, "--out", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, #manifest(out).fleet.members)
    r = helpers.fleetsnap(home, { "backup", "create", "--member", fleet.root, "--include-root", "--out", out .. "r" })
    assert.equal(0, r.status, r.stderr)
    assert.equal(fleet.root, manifest(out .. "r").fleet.members[1].canister_id)
  end)

  it("refuses a subtree that matches nothing (exit 3)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--subtree", "nope", "--out", out })
    assert.equal(3, r.status)
    assert.matches("matches 0 members", r.stderr)
  end)

  it("prints the plan and the icp command lines with --dry-run, changing nothing", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--dry-run", "--out", out })
    assert.equal(0, r.status, r.stderr)
    assert.matches("icp%-sim canister stop %S+ %-e local", r.stdout)
    assert.matches("canister snapshot download %S+ '<snapshot%-id>' %-%-output", r.stdout)
    assert.is_nil(fs.lstat(out))
    assert.equal(0, helpers.effects(home)[fleet.members[2].canister_id].stop)
  end)

  it("streams NDJSON events and a result with --json", function()
    local r = helpers.fleetsnap(home, { "--json", "backup", "create", "--out", out })
    assert.equal(0, r.status, r.stderr)
    local types = {}
    for line in r.stdout:gmatch("[^\n]+") do types[#types + 1] = json.decode(line).type end
    assert.equal("created", types[1])
    assert.equal("result", types[#types])
  end)
end)

describe("fleetsnap backup failures", function()
  fresh_fleet()

  it("restarts stopped canisters when a snapshot fails, then resumes as a new attempt", function()
    local victim = fleet.members[3].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_FAIL = "snapshot.create@" .. victim })
    assert.equal(1, r.status)
    assert.matches("snapshot create of " .. victim:gsub("%-", "%%-"), r.stderr)
    assert.is_true(all_running(home))
    r = helpers.fleetsnap(nil, { "--json", "backup", "status", out })
    local st = json.decode(r.stdout)
    assert.is_false(st.complete)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(2, manifest(out).fleetsnap.attempt)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", out }).status)
    -- Snapshots of the abandoned attempt were replaced, not piled up.
    local list = helpers.icp(home, { "canister", "snapshot", "list", fleet.members[2].canister_id, "-e", "local",
      "--json" })
    assert.equal(1, #json.decode(list.stdout).snapshots)
    assert.is_true(all_running(home))
  end)

  it("discards artifacts published by an abandoned attempt", function()
    local last = fleet.members[#fleet.members].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--concurrency", "1", "--out", out },
      { ICP_SIM_FAIL = "snapshot.create@" .. last })
    assert.equal(1, r.status)
    local published = 0
    for _, m in ipairs(fleet.members) do
      if fs.lstat(out .. "/" .. m.canister_id) then published = published + 1 end
    end
    assert.is_true(published > 0, "no artifact of the first attempt was published")
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", out }).status)
    for _, m in ipairs(manifest(out).fleet.members) do
      local list = json.decode(helpers.icp(home, { "canister", "snapshot", "list", m.canister_id, "-e", "local",
        "--json" }).stdout).snapshots
      assert.equal(list[#list].snapshot_id, m.source_snapshot.snapshot_id)
    end
  end)

  it("kills a hanging icp at the timeout and restarts what it stopped", function()
    local r = helpers.fleetsnap(home, { "--timeout", "2", "backup", "create", "--out", out },
      { ICP_SIM_HANG = "snapshot.create" })
    assert.equal(1, r.status)
    assert.matches("did not finish within 2 s", r.stderr)
    assert.is_true(all_running(home))
  end)

  it("detects a stop that reports success without stopping (exit 6)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_STOP_NOOP = "stop" })
    assert.equal(6, r.status)
    assert.matches("icp reported success but the canister is running", r.stderr)
    assert.is_true(all_running(home))
  end)

  it("detects a corrupted download (exit 6)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_CORRUPT = "snapshot.download:wasm_module.bin:3" })
    assert.equal(6, r.status)
    assert.matches("wasm_module%.bin hashes to", r.stderr)
    assert.is_true(all_running(home))
  end)

  it("refuses in preflight when a canister has no free snapshot slot, stopping nothing (exit 5)", function()
    local c = fleet.members[2].canister_id
    helpers.icp(home, { "canister", "stop", c, "-e", "local" })
    assert.equal(0, helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local" }).status)
    helpers.icp(home, { "canister", "start", c, "-e", "local" })
    local r = helpers.fleetsnap(home, { "backup", "create", "--snapshot-limit", "1", "--out", out },
      { ICP_SIM_SNAPSHOT_LIMIT = "1" })
    assert.equal(5, r.status)
    assert.matches("preflight refused, nothing was stopped", r.stderr)
    assert.matches("snapshot slots are taken", r.stderr)
    for cid, e in pairs(helpers.effects(home)) do assert.equal(cid == c and 1 or 0, e.stop) end
  end)

  it("maps a limit hit during the run to exit 5 and restarts what it stopped", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_SNAPSHOT_LIMIT = "0" })
    assert.equal(5, r.status)
    assert.matches("maximum number of snapshots", r.stderr)
    assert.is_true(all_running(home))
  end)

  it("refuses in preflight when the operator is not a controller (exit 5)", function()
    local r = helpers.fleetsnap(home, { "--identity", "anonymous", "backup", "create", "--out", out })
    assert.equal(5, r.status)
    assert.matches("is not a controller", r.stderr)
  end)

  it("refuses a second runner on the same backup (exit 4)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL = "start" })
    assert.equal(1, r.status)
    local lock = assert(engine.lock.acquire(out .. "/fleetsnap-journal.wal.lock"))
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(4, r.status)
    assert.matches("is locked by pid", r.stderr)
    lock:close()
  end)

  it("says a backup does not exist (exit 3)", function()
    local r = helpers.fleetsnap(home, { "backup", "resume", out .. "-none" })
    assert.equal(3, r.status)
  end)

  it("refuses drift of the topology on a new attempt (exit 5)", function()
    local inv = helpers.tmpdir() .. "/inventory.json"
    local members = {}
    for i, m in ipairs(fleet.members) do
      members[i] = { canister_id = m.canister_id, role = m.role, parent = m.parent }
    end
    helpers.write(inv, json.encode({ root = fleet.root, members = members }))
    local r = helpers.fleetsnap(home, { "backup", "create", "--inventory", inv, "--out", out },
      { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    members[4].role = "renamed"
    helpers.write(inv, json.encode({ root = fleet.root, members = members }))
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(5, r.status)
    assert.matches("topology drift", r.stderr)
    assert.matches("role=renamed", r.stderr)
  end)
end)

describe("fleetsnap backup verify", function()
  fresh_fleet()
  before_each(function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
  end)

  it("names the file whose bytes changed (exit 6)", function()
    local m = manifest(out).fleet.members[2]
    local path = out .. "/" .. m.source_snapshot.artifact_path .. "/stable_memory.bin"
    local f = assert(io.open(path, "r+b"))
    f:seek("set", 10)
    f:write("X")
    f:close()
    local r = helpers.fleetsnap(nil, { "backup", "verify", out })
    assert.equal(6, r.status)
    assert.matches("VERIFICATION FAILED", r.stdout)
    assert.matches(m.canister_id:gsub("%-", "%%-") .. "/stable_memory%.bin: content differs", r.stdout)
  end)

  it("reports a corrupt manifest (exit 7)", function()
    helpers.write(out .. "/fleet-backup-manifest.json", "{")
    local r = helpers.fleetsnap(nil, { "backup", "verify", out })
    assert.equal(7, r.status)
    assert.matches("fleet%-backup%-manifest%.json: line 1", r.stderr)
  end)

  it("lists backups under a directory", function()
    local r = helpers.fleetsnap(nil, { "backup", "list", "--dir", out:match("^(.*)/") })
    assert.equal(0, r.status)
    assert.matches("\nb1 +%S+ +complete +6 ", r.stdout)
  end)
end)

describe("fleetsnap policy", function()
  it("lists the bundled policies", function()
    local r = helpers.fleetsnap(nil, { "policy", "list" })
    assert.equal(0, r.status)
    for _, p in ipairs({ "consistent", "hold", "rolling", "sequential" }) do assert.matches(p, r.stdout) end
  end)

  it("checks a policy by planning a sample", function()
    assert.equal(0, helpers.fleetsnap(nil, { "policy", "check", "consistent" }).status)
  end)

  it("refuses a policy that escapes its sandbox (exit 7)", function()
    local file = helpers.tmpdir() .. "/evil.lua"
    helpers.write(file, 'return { name = "evil", plan = function() os.execute("true") end }')
    local r = helpers.fleetsnap(nil, { "policy", "check", file })
    assert.equal(7, r.status)
    assert.matches("os", r.stderr)
    helpers.cleanup()
  end)

  it("refuses a policy that runs forever (instruction budget)", function()
    local file = helpers.tmpdir() .. "/loop.lua"
    helpers.write(file, 'return { name = "loop", plan = function() while true do end end }')
    local r = helpers.fleetsnap(nil, { "policy", "check", file })
    assert.equal(7, r.status)
    assert.matches("instruction budget", r.stderr)
    helpers.cleanup()
  end)

  it("refuses a plan that snapshots before stopping", function()
    local file = helpers.tmpdir() .. "/bad.lua"
    helpers.write(file, [[return { name = "bad", plan = function(sel, plan)
      for _, m in ipairs(sel) do
        local s = plan:snapshot(m)
        plan:stop(m, { after = { s } })
        plan:start(m, { after = { s } })
        plan:download(m, { after = { s } })
      end
    end }]])
    local r = helpers.fleetsnap(nil, { "policy", "check", file })
    assert.equal(7, r.status)
    assert.matches("must come after its stop", r.stderr)
    helpers.cleanup()
  end)
end)

describe("fleetsnap backup silent failures", function()
  fresh_fleet()

  it("detects a start that reports success without starting (exit 6), and starts it", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_SILENT_SUCCESS = "start#1" })
    assert.equal(6, r.status)
    assert.matches("start of %S+: icp reported success but the canister is stopped", r.stderr)
    for _, m in ipairs(helpers.fleet(home).members) do assert.equal("running", m.status) end
  end)

  it("detects a snapshot that icp reports but the canister does not have (exit 6)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_SILENT_SUCCESS = "snapshot.create#1" })
    assert.equal(6, r.status)
    assert.matches("icp reported it created, but the canister does not have it", r.stderr)
    assert.is_true((function()
      for _, m in ipairs(helpers.fleet(home).members) do
        if m.status ~= "running" then return false end
      end
      return true
    end)())
  end)
end)

describe("fleetsnap backup on-canister retention", function()
  fresh_fleet({ members = 2, depth = 1 })
  local dir
  before_each(function() dir = out:match("^(.*)/") end)

  local function snapshots(cid)
    local r = helpers.icp(home, { "canister", "snapshot", "list", cid, "-e", "local", "--json" })
    local ids = {}
    for i, s in ipairs(json.decode(r.stdout).snapshots) do ids[i] = s.snapshot_id end
    return ids
  end

  it("keeps the newest fleetsnap snapshots per canister and never touches others", function()
    local c = fleet.members[2].canister_id
    helpers.icp(home, { "canister", "stop", c, "-e", "local" })
    local foreign = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
    helpers.icp(home, { "canister", "start", c, "-e", "local" })
    local made = {}
    for i = 1, 3 do
      local bi = dir .. "/b" .. i
      local r = helpers.fleetsnap(home, { "backup", "create", "--keep-on-canister", "2", "--out", bi })
      assert.equal(0, r.status, r.stderr)
      made[i] = manifest(bi).fleet.members[1].source_snapshot.snapshot_id
    end
    local left = snapshots(c)
    table.sort(left)
    local want = { foreign, made[2], made[3] }
    table.sort(want)
    assert.same(want, left)
    assert.equal(1, helpers.effects(home)[c].snapshot_delete)
  end)

  it("lists each inventory twice, preflight and the download's proof, which retention reuses", function()
    local function lists()
      local n = 0
      for line in io.lines(home .. "/log.jsonl") do
        local a = json.decode(line).argv
        if a[1] == "canister" and a[2] == "snapshot" and a[3] == "list" then n = n + 1 end
      end
      return n
    end
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/r0" }).status)
    local before = lists()
    local r = helpers.fleetsnap(home, { "--json", "backup", "create", "--keep-on-canister", "1", "--out", dir .. "/r1" })
    assert.equal(0, r.status, r.stderr)
    local members = manifest(dir .. "/r1").fleet.members
    assert.equal(2 * #members, lists() - before)
    -- Retention still saw the first backup's snapshots and deleted them.
    for _, m in ipairs(members) do
      assert.same({ m.source_snapshot.snapshot_id }, snapshots(m.canister_id))
    end
  end)

  -- An earlier backup's snapshots are proved ours by its manifest and
  -- plan, through its index or without it; without its plan they are not
  -- (no network is named), index or not.
  for _, case in ipairs({ { "its index removed", snapshot_index.FILE, true },
    { "its plan removed", "fleetsnap-plan.json", false } }) do
    it("proves an earlier backup's snapshots ours only by its manifest and plan (" .. case[1] .. ")", function()
      assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/r0" }).status)
      local first = manifest(dir .. "/r0").fleet.members
      assert.is_true(os.remove(dir .. "/r0/" .. case[2]))
      local r = helpers.fleetsnap(home, { "backup", "create", "--keep-on-canister", "1", "--out", dir .. "/r1" })
      assert.equal(0, r.status, r.stderr)
      for i, m in ipairs(manifest(dir .. "/r1").fleet.members) do
        assert.equal(first[i].canister_id, m.canister_id)
        local want = { m.source_snapshot.snapshot_id }
        if not case[3] then want = { first[i].source_snapshot.snapshot_id, m.source_snapshot.snapshot_id } end
        local have = snapshots(m.canister_id)
        table.sort(have)
        table.sort(want)
        assert.same(want, have)
      end
    end)
  end
end)

describe("fleetsnap backup inspect and prune", function()
  local dir
  setup(function()
    home = helpers.sim_home({ members = 2, depth = 1 })
    dir = helpers.tmpdir() .. "/backups"
    for i = 1, 3 do
      assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b" .. i }).status)
    end
    -- An incomplete one, which prune must never touch.
    helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/b4" }, { ICP_SIM_FAIL = "snapshot.create" })
  end)
  teardown(function() helpers.cleanup() end)

  it("inspects the latest complete backup, passing over a newer incomplete one", function()
    local r = helpers.fleetsnap(nil, { "--json", "backup", "inspect", "latest", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equal("b3", doc.backup_id)
    assert.is_true(doc.complete)
    assert.equal(2, #doc.members)
    assert.equal("consistent", doc.policy)
  end)

  it("says what it would delete with --dry-run, deleting nothing", function()
    local r = helpers.fleetsnap(nil, { "--json", "backup", "prune", "--keep-last", "1", "--dry-run", "--dir", dir })
    assert.equal(0, r.status, r.stderr)
    local doc = json.decode(r.stdout)
    local actions = {}
    for _, b in ipairs(doc.backups) do actions[b.backup] = b.action end
    assert.equal("keep (incomplete)", actions.b4)
    assert.equal("delete", actions.b1)
    assert.equal("directory", fs.lstat(dir .. "/b1").type)
  end)

  it("keeps the newest, never an incomplete backup, and refuses without a rule", function()
    assert.equal(2, helpers.fleetsnap(nil, { "backup", "prune", "--dir", dir }).status)
    local r = helpers.fleetsnap(nil, { "backup", "prune", "--keep-last", "1", "--dir", dir, "--execute" })
    assert.equal(0, r.status, r.stderr)
    assert.is_nil(fs.lstat(dir .. "/b1"))
    assert.is_nil(fs.lstat(dir .. "/b2"))
    assert.equal("directory", fs.lstat(dir .. "/b3").type)
    assert.equal("directory", fs.lstat(dir .. "/b4").type)
  end)
end)

-- Lines of a text output.
local function lines_of(text)
  local result = {}
  for l in text:gmatch("[^\n]+") do result[#result + 1] = l end
  return result
end

-- Lua pattern for a literal string.
local function lit(s)
  return (s:gsub("%p", "%%%0"))
end

describe("fleetsnap backup list, references, inspect and diff", function()
  local dir, root, members, sizes
  setup(function()
    home = helpers.sim_home({ members = 2, depth = 1 })
    local f = helpers.fleet(home)
    root, members = f.root, {}
    for _, m in ipairs(f.members) do
      if m.canister_id ~= root then members[#members + 1] = m.canister_id end
    end
    dir = helpers.tmpdir() .. "/backups"
    local function create(name, extra)
      local argv = { "backup", "create", "--out", dir .. "/" .. name }
      for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
      local r = helpers.fleetsnap(home, argv)
      assert(r.status == 0, r.stderr)
    end
    create("b1")
    create("b2")
    assert(helpers.icp(home, { "sim", "mutate", "--all" }).status == 0)
    create("b3")
    -- One member only: the diffs with it add and remove the other.
    create("m4", { "--member", members[1] })
    sizes = {}
    for _, name in ipairs({ "b1", "b2", "b3", "m4" }) do
      local n = 0
      for _, x in ipairs(manifest(dir .. "/" .. name).fleetsnap.members) do n = n + x.bytes end
      sizes[name] = n
    end
  end)
  teardown(function() helpers.cleanup() end)

  local function run(argv)
    argv[#argv + 1] = "--dir"
    argv[#argv + 1] = dir
    return helpers.fleetsnap(nil, argv)
  end

  it("lists with a header line and says the order", function()
    local r = run({ "backup", "list" })
    assert.equal(0, r.status, r.stderr)
    local l = lines_of(r.stdout)
    assert.equal("4 backup(s) in " .. dir .. ", newest first", l[1])
    assert.matches("^id +created +status +members +size +root +policy +window$", l[2])
  end)

  it("lists newest first, without row numbers", function()
    local l = lines_of(run({ "backup", "list" }).stdout)
    local ids = {}
    for i = 3, #l do ids[#ids + 1] = l[i]:match("^(%S+)") end
    assert.same({ "m4", "b3", "b2", "b1" }, ids)
  end)

  it("lists the created time in UTC, status, members, human size, root, policy and window", function()
    local l = lines_of(run({ "backup", "list" }).stdout)
    assert.matches("^b1 +%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ +complete +2 +" .. lit(units.bytes(sizes.b1)) .. " +"
      .. lit(root) .. " +consistent +%d+%.%d%d%d s$", l[6])
    assert.matches("^m4 .* complete +1 +" .. lit(units.bytes(sizes.m4)) .. " ", l[3])
  end)

  it("gives exact values in JSON: bytes, created_ns and created, window_ns", function()
    local doc = json.decode(run({ "--json", "backup", "list" }).stdout)
    local b1 = doc.backups[4]
    assert.equal("b1", b1.name)
    assert.equal(sizes.b1, b1.bytes)
    assert.equal(math.type(b1.window_ns), "integer")
    assert.equal(units.utc(b1.created_ns), b1.created)
    assert.equal(root, b1.root)
    assert.equal("consistent", b1.policy)
    assert.is_nil(b1.n)
  end)

  it("lists only one root's backups with --root", function()
    local r = run({ "backup", "list", "--root", "aaaaa-aa" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("no backups in " .. dir .. ", root aaaaa-aa\n", r.stdout)
  end)

  it("finds a backup by exact id", function()
    local r = run({ "--json", "backup", "inspect", "b2" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("b2", json.decode(r.stdout).backup_id)
  end)

  it("finds a backup by a unique id prefix", function()
    local r = run({ "--json", "backup", "inspect", "m" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("m4", json.decode(r.stdout).backup_id)
  end)

  it("refuses an ambiguous id prefix (exit 2), naming the candidates", function()
    local r = run({ "backup", "inspect", "b" })
    assert.equal(2, r.status)
    assert.matches("b1, b2, b3", r.stderr)
  end)

  it("takes a number for an id, not a list row (exit 3)", function()
    assert.equal(3, run({ "backup", "inspect", "1" }).status)
  end)

  it("resolves latest to the newest complete backup", function()
    local r = run({ "--json", "backup", "status", "latest" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("m4", json.decode(r.stdout).backup_id)
  end)

  it("inspects with labelled lines: id, status, root, policy, created, window, members, size", function()
    local r = run({ "backup", "inspect", "b1" })
    assert.equal(0, r.status, r.stderr)
    local l = lines_of(r.stdout)
    assert.equal("backup   b1", l[1])
    assert.equal("dir      " .. dir .. "/b1", l[2])
    assert.equal("status   complete", l[3])
    assert.equal("root     " .. root, l[4])
    assert.equal("policy   consistent", l[5])
    assert.matches("^scope    fleet %(2 targets, %d+ operations%)$", l[6])
    assert.matches("^created  %d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", l[7])
    assert.matches("^window   %d+%.%d%d%d s$", l[8])
    assert.equal("members  2", l[9])
    assert.equal("size     " .. units.bytes(sizes.b1), l[10])
  end)

  it("inspects members in a table with a header: size, downtime and checksum prefix", function()
    local l = lines_of(run({ "backup", "inspect", "b1" }).stdout)
    assert.matches("^canister +role +snapshot id +size +downtime +checksum$", l[11])
    local fsn = manifest(dir .. "/b1").fleetsnap.members
    for i, x in ipairs(fsn) do
      assert.matches("^" .. lit(x.canister_id) .. " +%S+ +" .. lit(x.snapshot_id) .. " +" .. lit(units.bytes(x.bytes))
        .. " +" .. lit(units.duration(x.downtime_ns)) .. " +" .. x.digest:sub(1, 16) .. "$", l[11 + i])
    end
  end)

  it("keeps exact bytes and downtime in inspect's JSON", function()
    local doc = json.decode(run({ "--json", "backup", "inspect", "b1" }).stdout)
    local fsn = manifest(dir .. "/b1").fleetsnap.members
    assert.equal(sizes.b1, doc.bytes)
    assert.equal(fsn[1].bytes, doc.members[1].bytes)
    assert.equal(fsn[1].downtime_ns, doc.members[1].downtime_ns)
  end)

  it("diffs a backup with itself: nothing changed", function()
    local r = run({ "backup", "diff", "b1", "b1" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("^backup diff b1 %-> b1: 0 added, 0 removed, 0 changed %(0 in metadata%.json only%), 2 same\n",
      r.stdout)
    r = run({ "--json", "backup", "diff", "b1", "b1" })
    assert.matches('"changed":%[%]', r.stdout)
    assert.matches('"added":%[%]', r.stdout)
    assert.equal(2, #json.decode(r.stdout).same)
  end)

  it("diffs across a mutation: every member's data changed, with both sizes", function()
    local doc = json.decode(run({ "--json", "backup", "diff", "b2", "b3" }).stdout)
    assert.equal("diff", doc.type)
    assert.equal(2, #doc.changed)
    local a, b = {}, {}
    for _, x in ipairs(manifest(dir .. "/b2").fleetsnap.members) do a[x.canister_id] = x.bytes end
    for _, x in ipairs(manifest(dir .. "/b3").fleetsnap.members) do b[x.canister_id] = x.bytes end
    for _, c in ipairs(doc.changed) do
      assert.is_true(c.data_changed)
      assert.is_false(c.module_hash_changed)
      assert.equal(a[c.canister_id], c.bytes_a)
      assert.equal(b[c.canister_id], c.bytes_b)
      local others = 0
      for _, path in ipairs(c.files_changed) do
        if path ~= "metadata.json" then others = others + 1 end
      end
      assert.is_true(others > 0, table.concat(c.files_changed, ", "))
    end
  end)

  it("prints the changed members' sizes, size change and files in the text", function()
    local r = run({ "backup", "diff", "b2", "b3" })
    assert.equal(0, r.status, r.stderr)
    local l = lines_of(r.stdout)
    assert.matches("^change +canister +role +module hash +size a +size b +size change +files changed$", l[2])
    for i = 3, 4 do
      assert.matches("^changed +%S+ +%S+ +same +[%d.]+ %a+ +[%d.]+ %a+ +[-+]?[%d.]+ %a+ +.*%.bin", l[i])
    end
  end)

  it("diffs backups of the same unchanged fleet as changed in metadata.json only", function()
    local doc = json.decode(run({ "--json", "backup", "diff", "b1", "b2" }).stdout)
    for _, c in ipairs(doc.changed) do
      assert.is_false(c.data_changed)
      assert.same({ "metadata.json" }, c.files_changed)
    end
  end)

  it("reports a member only in the first backup as removed", function()
    local doc = json.decode(run({ "--json", "backup", "diff", "b3", "m4" }).stdout)
    assert.equal(1, #doc.removed)
    assert.equal(members[2], doc.removed[1].canister_id)
    assert.equal(0, #doc.added)
    assert.equal(members[1], doc.changed[1].canister_id)
  end)

  it("reports a member only in the second backup as added", function()
    local r = run({ "backup", "diff", "m4", "b3" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("\nadded +" .. lit(members[2]) .. " ", r.stdout)
    assert.matches(": 1 added, 0 removed,", r.stdout)
  end)

  it("refuses a diff with a backup that is not there (exit 3)", function()
    assert.equal(3, run({ "backup", "diff", "b1", "nosuch" }).status)
  end)
end)

describe("fleetsnap backup latest among two fleets", function()
  local dir, roots
  setup(function()
    dir = helpers.tmpdir() .. "/backups"
    roots = {}
    for i, seed in ipairs({ 1, 2 }) do
      local h = helpers.sim_home({ members = 2, depth = 1, seed = seed })
      roots[i] = helpers.fleet(h).root
      local r = helpers.fleetsnap(h, { "backup", "create", "--out", dir .. "/f" .. i })
      assert(r.status == 0, r.stderr)
    end
  end)
  teardown(function() helpers.cleanup() end)

  it("refuses latest without --root (exit 2), naming both roots", function()
    local r = helpers.fleetsnap(nil, { "backup", "inspect", "latest", "--dir", dir })
    assert.equal(2, r.status)
    assert.matches(lit(roots[1]), r.stderr)
    assert.matches(lit(roots[2]), r.stderr)
  end)

  it("takes latest of the root --root names", function()
    for i = 1, 2 do
      local r = helpers.fleetsnap(nil, { "--json", "backup", "inspect", "latest", "--root", roots[i], "--dir", dir })
      assert.equal(0, r.status, r.stderr)
      assert.equal("f" .. i, json.decode(r.stdout).backup_id)
    end
  end)

  it("does not take the root for latest from FLEETSNAP_ROOT", function()
    local r = helpers.fleetsnap(nil, { "backup", "inspect", "latest", "--dir", dir }, { FLEETSNAP_ROOT = roots[1] })
    assert.equal(2, r.status)
  end)

  it("lists one fleet's backups with --root", function()
    local doc = json.decode(helpers.fleetsnap(nil, { "--json", "backup", "list", "--root", roots[2], "--dir", dir })
      .stdout)
    assert.equal(1, #doc.backups)
    assert.equal("f2", doc.backups[1].name)
  end)
end)

describe("fleetsnap backup interrupted", function()
  after_each(function() helpers.cleanup() end)

  it("starts stopped canisters again and exits 130 on SIGINT", function()
    home = helpers.sim_home()
    out = helpers.tmpdir() .. "/backups/b1"
    local h = engine.proc.spawn({ argv = { helpers.root .. "/scripts/fleetsnap", "--sim", home, "backup", "create",
      "--out", out }, env = { ICP_SIM_HANG = "snapshot.create", RUST_BACKTRACE = "0" }, unset_env = { "LD_PRELOAD" } })
    -- Wait until every member is stopped and the snapshots hang.
    local deadline = os.time() + 60
    repeat
      engine.sleep_ms(100)
      local stopped = 0
      for _, e in pairs(helpers.effects(home)) do stopped = stopped + e.stop end
    until stopped == 6 or os.time() > deadline
    engine.sleep_ms(300)
    engine.proc.signal(h:pid(), 2)
    local r = h:result()
    h:close()
    assert.equal(130, r.status, r.stderr)
    assert.matches("interrupted by SIGINT", r.stderr)
    assert.matches("this run stopped were started again", r.stderr)
    for _, m in ipairs(helpers.fleet(home).members) do assert.equal("running", m.status) end
  end)
end)

describe("fleetsnap policy hooks", function()
  fresh_fleet({ members = 2, depth = 1 })

  local function policy_with(extra)
    local file = helpers.tmpdir() .. "/p.lua"
    helpers.write(file, [[return { name = "hooks", summary = "test",
      plan = function(sel, plan)
        for _, m in ipairs(sel) do
          local s = plan:snapshot(m, { after = { plan:stop(m) } })
          plan:start(m, { after = { s } })
          plan:download(m, { after = { s } })
        end
      end, ]] .. extra .. [[ }]])
    return file
  end

  local function canned(cid, method, hex)
    helpers.sh("mkdir -p " .. home .. "/canisters/" .. cid .. "/calls")
    helpers.write(home .. "/canisters/" .. cid .. "/calls/" .. method .. ".json", json.encode({ reply_hex = hex }))
  end

  it("runs the post-start checks and completes when replies match", function()
    for _, m in ipairs(fleet.members) do canned(m.canister_id, "health", "4449444c00017e01") end
    local p = policy_with([[checks = function(m) return { { method = "health", expect_hex = "4449444c00017e01" } } end]])
    local r = helpers.fleetsnap(home, { "--json", "backup", "create", "--policy", p, "--out", out })
    assert.equal(0, r.status, r.stderr)
    assert.matches('"type":"check%-passed"', r.stdout)
  end)

  it("fails the backup (exit 6) when a check's reply differs, leaving canisters running", function()
    for _, m in ipairs(fleet.members) do canned(m.canister_id, "health", "4449444c00017e00") end
    local p = policy_with([[checks = function(m) return { { method = "health", expect_hex = "4449444c00017e01" } } end]])
    local r = helpers.fleetsnap(home, { "backup", "create", "--policy", p, "--out", out })
    assert.equal(6, r.status)
    assert.matches("check health of %S+ after the restart: reply 4449444c00017e00", r.stderr)
    for _, m in ipairs(helpers.fleet(home).members) do assert.equal("running", m.status) end
  end)

  it("takes the members from the policy's discover", function()
    local only = fleet.members[2]
    local p = policy_with(string.format([[discover = function(ctx)
      return { root = %q, members = {
        { canister_id = %q, role = "root" },
        { canister_id = %q, role = "chosen", parent = %q } } }
    end]], fleet.root, fleet.root, only.canister_id, fleet.root))
    local r = helpers.fleetsnap(home, { "backup", "create", "--policy", p, "--out", out })
    assert.equal(0, r.status, r.stderr)
    local m = manifest(out)
    assert.equal(1, #m.fleet.members)
    assert.equal("chosen", m.fleet.members[1].role)
  end)
end)

describe("fleetsnap backup catalogue scenarios", function()
  fresh_fleet()

  -- Every path, type, size, time and byte, but the runner lock's owner text
  -- (rewritten by whoever takes the lock, by design).
  local function inventory(dir)
    return helpers.sh("cd " .. dir .. " && find . ! -name '*.lock' -printf '%p %y %s %T@\\n' | sort && "
      .. "find . -type f ! -name '*.lock' -exec sha256sum {} + | sort")
  end

  it("BK-48: resuming a complete backup makes no icp call and changes no byte", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
    local before = inventory(out)
    local r = helpers.fleetsnap(home, { "backup", "resume", out }, { ICP_SIM_UNREACHABLE = "1" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("already complete", r.stdout)
    assert.equal(before, inventory(out))
  end)

  it("VF-01..03: verify writes nothing, whatever it finds", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
    local before = inventory(out)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", out }).status)
    assert.equal(before, inventory(out))
  end)

  -- A backup killed after member 2's stop; hold(out, c) takes what a
  -- descendant of that icp command still alive would hold. Resume is
  -- refused until it lets go, then completes without a second stop.
  local function resume_blocked_by(hold)
    local c = fleet.members[2].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { FLEETSNAP_FAILPOINT = "after-effect@stop-" .. c .. ":1" })
    assert.equal(9, r.signal)
    local lock = hold(out, c)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(4, r.status)
    assert.matches("still running", r.stderr)
    lock:close()
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, helpers.effects(home)[c].stop)
  end

  it("BK-49: a command of a dead runner still holding its lock blocks resume (exit 4)", function()
    resume_blocked_by(function(dir, c)
      -- The operation's byte of the run's command lock file.
      local path = dir .. "/.fleetsnap-commands/commands.lock"
      -- (Other operations' bytes may still be held too: the killed run's
      -- other stops can outlive it, as this one's descendant does.)
      return assert(engine.lock.acquire(path, { range = executor.lock_byte("stop-" .. c) }))
    end)
  end)

  it("BK-49: a command lock file of an earlier version (one file per operation) still held blocks resume", function()
    resume_blocked_by(function(dir, c)
      return assert(engine.lock.acquire(dir .. "/.fleetsnap-commands/stop-" .. c .. ".lock"))
    end)
  end)

  it("BK-50: a member restarted behind an interrupted backup's back opens a new window on resume", function()
    local c = fleet.members[2].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { FLEETSNAP_FAILPOINT = "before-effect@snapshot_create-" .. c .. ":1" })
    assert.equal(9, r.signal)
    assert.equal(1, helpers.effects(home)[c].stop)
    -- Someone starts it while the backup is down: its recorded stop no
    -- longer holds, so a snapshot now would be outside any window.
    local s = helpers.icp(home, { "canister", "start", c, "-e", "local" })
    assert.equal(0, s.status, s.stderr)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(2, helpers.effects(home)[c].stop)
    assert.equal(1, helpers.effects(home)[c].snapshot_create)
    assert.truthy(fs.lstat(out .. "/fleet-backup-manifest.json"))
  end)

  it("BK-33: an artifact changed after its receipt never reaches a manifest", function()
    local last = fleet.members[#fleet.members].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { FLEETSNAP_FAILPOINT = "before-write@fleet-backup-manifest.json:1" })
    assert.equal(9, r.signal)
    local f = assert(io.open(out .. "/" .. last .. "/stable_memory.bin", "r+b"))
    f:write("X")
    f:close()
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(6, r.status)
    assert.matches("artifact of " .. last:gsub("%-", "%%-") .. " changed after it was published", r.stderr)
    assert.is_nil(fs.lstat(out .. "/fleet-backup-manifest.json"))
  end)
end)

describe("fleetsnap plans with custom calls", function()
  fresh_fleet({ members = 2, depth = 1 })
  local policy
  before_each(function()
    for _, m in ipairs(fleet.members) do
      helpers.sh("mkdir -p " .. home .. "/canisters/" .. m.canister_id .. "/calls")
      helpers.write(home .. "/canisters/" .. m.canister_id .. "/calls/drain.json", json.encode({ reply_hex = "4449444c0000" }))
    end
    policy = function(idempotent)
      local file = helpers.tmpdir() .. "/drain.lua"
      helpers.write(file, string.format([[return { name = "drain", summary = "drain, then stop",
        plan = function(sel, plan)
          for _, m in ipairs(sel) do
            local d = plan:call(m, "drain", "()", { idempotent = %s })
            local s = plan:snapshot(m, { after = { plan:stop(m, { after = { d } }) } })
            plan:start(m, { after = { s } })
            plan:download(m, { after = { s } })
          end
        end }]], tostring(idempotent)))
      return file
    end
  end)

  it("calls each member before stopping it", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--policy", policy(true), "--out", out })
    assert.equal(0, r.status, r.stderr)
    local order = {}
    for line in fs.read(home .. "/log.jsonl"):gmatch("[^\n]+") do
      local e = json.decode(line)
      if e.argv[1] == "canister" then order[#order + 1] = e.argv[2] .. ":" .. tostring(e.argv[3]) end
    end
    local seen_call = {}
    for _, o in ipairs(order) do
      local kind, cid = o:match("^(%w+):(.*)$")
      if kind == "call" then seen_call[cid] = true end
      if kind == "stop" then assert.is_true(seen_call[cid], "stop before drain of " .. cid) end
    end
  end)

  it("asks the operator instead of repeating a non-idempotent call found pending (exit 5, with the next step)", function()
    local c = fleet.members[2].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--policy", policy(false), "--out", out },
      { FLEETSNAP_FAILPOINT = "after-effect@call-" .. c .. ":1" })
    assert.equal(9, r.signal)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.are_not.equal(0, r.status)
    assert.matches("non%-idempotent call may or may not have run", r.stderr)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(5, r.status)
    -- The next step as a command line, with this run's connection flags.
    assert.matches("\nnext: fleetsnap --sim " .. home .. " backup resume " .. out .. " --retry-failed\n", r.stderr, 1,
      true)
    r = helpers.fleetsnap(home, { "backup", "resume", "--retry-failed", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", out }).status)
  end)
end)

describe("fleetsnap backup progress", function()
  after_each(function() helpers.cleanup() end)

  it("shows progress on a terminal only", function()
    home = helpers.sim_home({ members = 2, depth = 1 })
    out = helpers.tmpdir() .. "/b"
    local cmd = string.format("%s/scripts/fleetsnap --sim %s backup create --out %s", helpers.root, home, out)
    local tty = helpers.sh("script -qec '" .. cmd .. "' /dev/null")
    assert.matches("%[%d+:%d%d%]  %d/8 ops ", tty)
    local plain = helpers.fleetsnap(home, { "backup", "create", "--out", out .. "2" })
    assert.equal("", plain.stderr)
  end)
end)

describe("fleetsnap backup catalogue scenarios, continued", function()
  fresh_fleet()

  it("CT-05: a download failing after every start is retried, without stopping anything again", function()
    local c = fleet.members[2].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--policy", "sequential", "--out", out },
      { ICP_SIM_FAIL = "snapshot.download@" .. c })
    assert.equal(1, r.status)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(1, manifest(out).fleetsnap.attempt)
    for _, e in pairs(helpers.effects(home)) do assert.is_true(e.stop <= 1) end
  end)

  it("RJ-01: a malformed plan is refused before any effect (exit 7)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    local before = helpers.effects(home)
    local text = fs.read(out .. "/fleetsnap-plan.json")
    helpers.write(out .. "/fleetsnap-plan.json", text:sub(1, #text // 2))
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(7, r.status)
    assert.matches("fleetsnap%-plan%.json: line %d+", r.stderr)
    assert.same(before, helpers.effects(home))
  end)

  it("RJ-01: a journal corrupt before its tail is refused with its offset (exit 7)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    local f = assert(io.open(out .. "/fleetsnap-journal.wal", "r+b"))
    f:seek("set", 40)
    f:write("XX")
    f:close()
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(7, r.status)
    assert.matches("corrupt record at offset %d+", r.stderr)
  end)

  it("LK-03: a lock sidecar replaced by a symlink is refused, never followed (exit 7)", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    os.remove(out .. "/fleetsnap-journal.wal.lock")
    helpers.sh("ln -s /etc/passwd " .. out .. "/fleetsnap-journal.wal.lock")
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(7, r.status)
    assert.matches("symbolic link", r.stderr)
  end)

  it("LK-02: status reads a live journal without repairing it", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    local f = io.open(out .. "/fleetsnap-journal.wal", "ab")
    f:write("\161\245\50\0\0\0half") -- a record being appended right now
    f:close()
    local size = fs.lstat(out .. "/fleetsnap-journal.wal").size
    r = helpers.fleetsnap(nil, { "backup", "status", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(size, fs.lstat(out .. "/fleetsnap-journal.wal").size)
  end)
end)

describe("fleetsnap backup containment and transfers", function()
  fresh_fleet()

  it("CT-01: a stop that failed but took effect is started again", function()
    local c = fleet.members[4].canister_id
    -- The stop commits, but icp reports a transport failure.
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL_AFTER = "stop@" .. c })
    assert.equal(1, r.status)
    assert.matches("stop of " .. c:gsub("%-", "%%-"), r.stderr)
    assert.is_true(all_running(home))
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
  end)

  it("CT-02: a create that failed but committed is replaced by the next attempt", function()
    local c = fleet.members[3].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_FAIL_AFTER = "snapshot.create@" .. c })
    assert.equal(1, r.status)
    local list = json.decode(helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "--json" }).stdout)
    assert.equal(1, #list.snapshots) -- the orphan
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    list = json.decode(helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "--json" }).stdout)
    assert.equal(1, #list.snapshots)
    assert.equal(manifest(out).fleet.members[2].source_snapshot.snapshot_id, list.snapshots[1].snapshot_id)
  end)

  it("a crash during containment still leads to a new attempt that completes", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_FAIL = "snapshot.create", FLEETSNAP_FAILPOINT = "after-append@contain:1" })
    assert.equal(9, r.signal)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(2, manifest(out).fleetsnap.attempt)
    assert.is_true(all_running(home))
  end)

  it("CT-03: reports both causes when restarting fails too", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_FAIL = "snapshot.create,start" })
    assert.equal(1, r.status)
    assert.matches("and starting stopped canisters again failed", r.stderr)
  end)

  it("survives icp killed in the middle of a download, and resumes", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--policy", "sequential", "--out", out },
      { ICP_SIM_CRASH = "snapshot.download#2:100" })
    assert.equal(1, r.status)
    assert.matches("killed by signal 9", r.stderr)
    assert.is_true(all_running(home))
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(0, r.status, r.stderr)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", out }).status)
  end)

  it("refuses when a stopped canister still reports running to icp (exit 6)", function()
    local c = fleet.members[3].canister_id
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out },
      { ICP_SIM_FORCE_STATUS = "running@" .. c })
    assert.equal(6, r.status)
    assert.matches("stop of " .. c:gsub("%-", "%%-") .. ": icp reported success but the canister is running", r.stderr)
  end)
end)
