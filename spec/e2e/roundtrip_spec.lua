-- The whole product path through the real icp 1.5.0 against the loopback
-- replica: discovery by the Canic registry query (a node-signed query),
-- backup, verify, a member mutated, restore with a safety snapshot and data
-- verification, and every member's memories compared with the backup.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local replica = require "e2e.replica"

local json = engine.json

-- The backup's files for each member, as sha256 by memory name.
local function backup_memories(dir)
  local manifest = json.decode(assert(helpers.read(dir .. "/fleet-backup-manifest.json")))
  local out = {}
  for _, m in ipairs(manifest.fleet.members) do
    local base = dir .. "/" .. m.source_snapshot.artifact_path
    out[m.canister_id] = {
      wasm_module = replica.file_sha256(base .. "/wasm_module.bin"),
      wasm_memory = replica.file_sha256(base .. "/wasm_memory.bin"),
      stable_memory = replica.file_sha256(base .. "/stable_memory.bin"),
    }
  end
  return out
end

local function assert_memories_equal(r, backup)
  local n = 0
  for cid, c in pairs(r:canisters()) do
    if replica.is_member(c) then
      n = n + 1
      local b = assert(backup[cid], "member " .. cid .. " is not in the backup")
      assert.are.equal(b.wasm_module, c.wasm_module.sha256, cid .. " module")
      assert.are.equal(b.wasm_memory, c.wasm_memory.sha256, cid .. " heap")
      assert.are.equal(b.stable_memory, c.stable_memory.sha256, cid .. " stable memory")
    end
  end
  assert.are.equal(2, n)
end

describe("e2e: real icp against the replica", function()
  local r
  local start = replica.each_test()

  it("backs up the registry's members, verifies, and restores a mutated member to the backup", function()
    r = start()
    local dir = helpers.tmpdir() .. "/backup"
    local res = r:fleetsnap({ "backup", "create", "--root", r.root, "--out", dir })
    assert.are.equal(0, res.status, res.stderr)

    -- Discovery went through the signed query path, not an update call.
    local queries = r:requests({ endpoint = "query", method = "canic_subnet_registry", outcome = "replied" })
    assert.is_true(#queries >= 1)
    assert.are.equal(0, #r:requests({ endpoint = "call", method = "canic_subnet_registry" }))

    res = r:fleetsnap({ "backup", "verify", dir })
    assert.are.equal(0, res.status, res.stderr)
    local backup = backup_memories(dir)
    assert_memories_equal(r, backup)

    local member = r:members()[1]
    r:mutate(member.canister_id, "stable_memory", 16, "deadbeef")
    r:mutate(member.canister_id, "wasm_memory", 100, "0badf00d")
    local mutated = r:canisters()[member.canister_id]
    assert.are_not.equal(backup[member.canister_id].stable_memory, mutated.stable_memory.sha256)
    assert.are_not.equal(backup[member.canister_id].wasm_memory, mutated.wasm_memory.sha256)

    res = r:fleetsnap({ "restore", "plan", dir })
    assert.are.equal(0, res.status, res.stderr)
    res = r:fleetsnap({ "restore", "run", dir, "--execute", "--safety-snapshot", "--verify-data" })
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    assert_memories_equal(r, backup)
    -- Both members were loaded (and the mutated one really changed back).
    assert.are.equal(2, #r:requests({ method = "load_canister_snapshot", outcome = "replied" }))
    for _, c in pairs(r:canisters()) do
      assert.are.equal("running", c.status, c.canister_id)
    end
  end)
end)
