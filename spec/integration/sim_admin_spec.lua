-- `icp-sim sim ...`: building, showing and changing the simulated fleet.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json = engine.json


-- The state of canister `cid` changed since `before` (helpers.fleet's
-- view), and no other member's.
local function assert_only_changed(home, before, cid)
  for i, m in ipairs(helpers.fleet(home).members) do
    if m.canister_id == cid then
      assert.are_not.equal(before.members[i].state_sha256, m.state_sha256)
    else
      assert.equal(before.members[i].state_sha256, m.state_sha256)
    end
  end
end
describe("icp-sim sim init", function()
  after_each(function() helpers.cleanup() end)

  it("builds a root plus members over every level, with unique roles", function()
    local home = helpers.sim_home({ members = 12, depth = 3 })
    local fleet = helpers.fleet(home)
    assert.equal(13, #fleet.members)
    assert.equal(fleet.root, fleet.members[1].canister_id)
    assert.equal(json.null, fleet.members[1].parent)
    local by_id, roles = {}, {}
    for _, m in ipairs(fleet.members) do
      by_id[m.canister_id] = m
      assert.is_nil(roles[m.role])
      roles[m.role] = true
      assert.equal("running", m.status)
      assert.matches("^%x+$", m.state_sha256)
    end
    local deepest = 0
    for _, m in ipairs(fleet.members) do
      local d, p = 0, m
      while p.parent ~= json.null do
        p = by_id[p.parent]
        d = d + 1
      end
      deepest = math.max(deepest, d)
    end
    assert.equal(3, deepest)
  end)

  it("is deterministic from the seed", function()
    local a = helpers.fleet(helpers.sim_home({ seed = 5 }))
    local dir = helpers.tmpdir() .. "/again"
    assert.equal(0, helpers.icp(dir, { "sim", "init", "--members", "6", "--depth", "2", "--heap", "65536",
      "--stable", "65536", "--seed", "5" }).status)
    assert.same(a, helpers.fleet(dir))
  end)

  it("refuses a home that already holds a fleet", function()
    local home = helpers.sim_home()
    local r = helpers.icp(home, { "sim", "init" })
    assert.equal(1, r.status)
    assert.matches("already holds a fleet", r.stderr)
  end)

  it("refuses bad sizes with exit 2", function()
    local r = helpers.icp(helpers.tmpdir() .. "/h", { "sim", "init", "--depth", "0" })
    assert.equal(2, r.status)
    r = helpers.icp(helpers.tmpdir() .. "/h", { "sim", "init", "--members", "x" })
    assert.equal(2, r.status)
  end)
end)

describe("icp-sim sim show, mutate and effects", function()
  local home, fleet
  before_each(function()
    home = helpers.sim_home()
    fleet = helpers.fleet(home)
  end)
  after_each(function() helpers.cleanup() end)

  it("mutates the live memory of one canister only", function()
    local c = fleet.members[3].canister_id
    assert.equal(0, helpers.icp(home, { "sim", "mutate", c }).status)
    assert_only_changed(home, fleet, c)
  end)

  it("mutates every canister with --all", function()
    helpers.icp(home, { "sim", "mutate", "--all" })
    for i, m in ipairs(helpers.fleet(home).members) do
      assert.are_not.equal(fleet.members[i].state_sha256, m.state_sha256)
    end
  end)

  it("refuses to mutate an unknown canister", function()
    assert.equal(2, helpers.icp(home, { "sim", "mutate", "ryjl3-tyaaa-aaaaa-aaaba-cai" }).status)
  end)

  it("reports zero effects on a fresh fleet", function()
    local e = helpers.effects(home)
    assert.same({ stop = 0, start = 0, snapshot_create = 0, snapshot_load = 0, snapshot_upload = 0,
      snapshot_delete = 0 }, e[fleet.root])
  end)

  it("fails clearly on a directory without a fleet", function()
    local r = helpers.icp(helpers.tmpdir(), { "sim", "show" })
    assert.equal(1, r.status)
    assert.matches("holds no fleet", r.stderr)
  end)

  it("logs a killed invocation", function()
    local c = fleet.members[2].canister_id
    helpers.icp(home, { "canister", "stop", c, "-e", "local" })
    local id = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", helpers.tmpdir() .. "/d", "-e",
      "local" }, { ICP_SIM_CRASH = "snapshot.download:0" })
    assert.equal(9, r.signal)
    local last
    for line in engine.fs.read(home .. "/log.jsonl"):gmatch("[^\n]+") do last = json.decode(line) end
    assert.equal("killed", last.rc)
    assert.same({ "crash:0:kill" }, last.faults)
  end)
end)

describe("icp-sim sim directory", function()
  local candid = require "fleetsnap.candid"
  local canic = require "fleetsnap.canic"
  local directory = require "fleetsnap.directory"
  local hex = require "fleetsnap.hex"
  after_each(function() helpers.cleanup() end)

  local function directory_home()
    local home = helpers.tmpdir() .. "/home"
    local r = helpers.icp(home, { "sim", "init", "--members", "4", "--depth", "2", "--heap", "4096", "--stable", "0",
      "--directory-page", "3" })
    assert.equal(0, r.status, r.stderr)
    local me = helpers.icp(home, { "identity", "principal" }).stdout:match("%S+")
    assert.equal(0, helpers.icp(home, { "sim", "directory", "--allow", me }).status)
    return home, helpers.fleet(home)
  end

  local function page(home, root, args)
    local r = helpers.icp(home, { "canister", "call", root, canic.DIRECTORY_METHOD, args, "--query", "--json", "-e",
      "local" })
    assert.equal(0, r.status, r.stderr)
    return assert(candid.decode(hex.decode(json.decode(r.stdout).response_bytes), canic.DIRECTORY_NAMES))[1]
  end

  it("serves at most its page size, then the rest after the cursor, bound to the revision", function()
    local home, fleet = directory_home()
    local first = page(home, fleet.root, directory.request(nil, nil, 100))
    assert.equal(3, #first.Ok.entries)
    assert.equal(4, first.Ok.directory.descendant_count)
    local second = page(home, fleet.root, directory.request(1, first.Ok.next_cursor, 100))
    assert.equal(1, #second.Ok.entries)
    assert.is_nil(second.Ok.next_cursor)
    assert.equal(fleet.members[5].canister_id, second.Ok.entries[1].binding.canister_id)
    -- A change makes a new revision: the old cursor and head are refused.
    assert.equal(0, helpers.icp(home, { "sim", "directory", "--status", fleet.members[2].canister_id, "Draining" })
      .status)
    local stale = page(home, fleet.root, directory.request(1, first.Ok.next_cursor, 100))
    assert.equal("Conflict", next(stale.Err.code))
  end)

  it("refuses a limit outside 1..100", function()
    local home, fleet = directory_home()
    for _, limit in ipairs({ 0, 101 }) do
      assert.equal("InvalidInput", next(page(home, fleet.root, directory.request(nil, nil, limit)).Err.code))
    end
  end)

  it("has no canic_subnet_registry on a directory-style root", function()
    local home, fleet = directory_home()
    local r = helpers.icp(home, { "canister", "call", fleet.root, canic.METHOD, "()", "--query", "--json", "-e",
      "local" })
    assert.equal(1, r.status)
    assert.matches("IC0536", r.stderr, 1, true)
  end)

  it("refuses a bad --status and a registry-style fleet", function()
    local home, fleet = directory_home()
    local r = helpers.icp(home, { "sim", "directory", "--status", fleet.root, "Draining" })
    assert.equal(2, r.status)
    r = helpers.icp(home, { "sim", "directory", "--status", fleet.members[2].canister_id, "Gone" })
    assert.equal(2, r.status)
    local plain = helpers.sim_home()
    r = helpers.icp(plain, { "sim", "directory", "--allow", fleet.root })
    assert.equal(1, r.status)
    assert.matches("registry-style", r.stderr, 1, true)
  end)
end)

describe("icp-sim sim init --random-memory", function()
  after_each(function() helpers.cleanup() end)

  local function random_home(seed)
    local home = helpers.tmpdir() .. "/home"
    local r = helpers.icp(home, { "sim", "init", "--members", "2", "--depth", "1", "--heap", "262144", "--stable",
      "131072", "--seed", tostring(seed or 1), "--random-memory" })
    assert(r.status == 0, r.stderr)
    return home
  end

  local function live(home, cid, blob)
    return helpers.read(home .. "/canisters/" .. cid .. "/live/" .. blob)
  end

  it("fills heap and stable memory with bytes gzip cannot shrink", function()
    local home = random_home()
    local cid = helpers.fleet(home).members[2].canister_id
    for _, blob in ipairs({ "wasm_memory.bin", "stable_memory.bin" }) do
      local path = home .. "/canisters/" .. cid .. "/live/" .. blob
      local size = #live(home, cid, blob)
      assert.equal(blob == "wasm_memory.bin" and 262144 or 131072, size)
      local packed = math.tointeger(tonumber(helpers.sh("gzip -9 -c " .. path .. " | wc -c")))
      assert.is_true(packed >= size, blob .. ": gzip made " .. size .. " bytes into " .. packed)
    end
  end)

  -- The default memory repeats a 64 KiB block past each copy's 32-byte
  -- stamp (64 hex digits): a compressor with a window over 64 KiB (restic's
  -- zstd) shrinks it.
  local function repeats(data) return data:sub(65, 65536) == data:sub(65536 + 65, 131072) end

  it("does not repeat the default memory's 64 KiB block", function()
    local plain = helpers.sim_home({ members = 2, depth = 1, heap = 262144, stable = 131072 })
    local random = random_home()
    local cid = helpers.fleet(plain).members[2].canister_id
    assert.equal(cid, helpers.fleet(random).members[2].canister_id)
    assert.is_true(repeats(live(plain, cid, "wasm_memory.bin")))
    assert.is_false(repeats(live(random, cid, "wasm_memory.bin")))
    assert.is_false(repeats(live(random, cid, "stable_memory.bin")))
  end)

  it("is deterministic from the seed, and differs between canisters and seeds", function()
    local a, b, c = helpers.fleet(random_home(3)), helpers.fleet(random_home(3)), helpers.fleet(random_home(4))
    assert.same(a, b)
    assert.are_not.equal(a.members[2].state_sha256, a.members[3].state_sha256)
    assert.are_not.equal(a.members[2].state_sha256, c.members[2].state_sha256)
  end)
end)

describe("icp-sim sim mutate --region", function()
  local home, fleet, cid
  before_each(function()
    home = helpers.tmpdir() .. "/home"
    local r = helpers.icp(home, { "sim", "init", "--members", "2", "--depth", "1", "--heap", "200000", "--stable",
      "100000", "--random-memory" })
    assert(r.status == 0, r.stderr)
    fleet = helpers.fleet(home)
    cid = fleet.members[2].canister_id
  end)
  after_each(function() helpers.cleanup() end)

  -- The canister's memory as one address space: heap, then stable memory.
  local function memory(dir)
    return helpers.read(dir .. "/wasm_memory.bin") .. helpers.read(dir .. "/stable_memory.bin")
  end

  -- First and last differing position (1-based) and how many bytes differ.
  local function diff(a, b)
    local first, last, count = nil, nil, 0
    for i = 1, #a do
      if a:byte(i) ~= b:byte(i) then
        first, last, count = first or i, i, count + 1
      end
    end
    return first, last, count
  end

  local function mutate(region, target)
    local r = helpers.icp(home, { "sim", "mutate", target or cid, "--region", region })
    assert.equal(0, r.status, r.stderr)
    local c, length, offset, size = r.stdout:match("(%S+): rewrote (%d+) bytes at offset (%d+) of (%d+)")
    return { canister = c, length = tonumber(length), offset = tonumber(offset), size = tonumber(size),
      stdout = r.stdout }
  end

  it("rewrites exactly one contiguous region of P% of the memory, where it says", function()
    local dir = home .. "/canisters/" .. cid .. "/live"
    local before = memory(dir)
    local m = mutate("5%")
    assert.equal(cid, m.canister)
    assert.equal(300000, m.size)
    assert.equal(15000, m.length)
    local after = memory(dir)
    assert.equal(#before, #after)
    local first, last, count = diff(before, after)
    -- Fresh random bytes equal the old ones at about 1 position in 256.
    assert.is_true(first > m.offset and last <= m.offset + m.length, "changed " .. first .. ".." .. last)
    assert.is_true(count > m.length * 0.98, count .. " of " .. m.length .. " bytes changed")
  end)

  it("takes a byte count, and crosses from the heap into the stable memory", function()
    local dir = home .. "/canisters/" .. cid .. "/live"
    local heap, stable = helpers.read(dir .. "/wasm_memory.bin"), helpers.read(dir .. "/stable_memory.bin")
    local m = mutate("300000")
    assert.same({ 0, 300000 }, { m.offset, m.length })
    local _, _, heap_changed = diff(heap, helpers.read(dir .. "/wasm_memory.bin"))
    local _, _, stable_changed = diff(stable, helpers.read(dir .. "/stable_memory.bin"))
    assert.is_true(heap_changed > 190000 and stable_changed > 95000, heap_changed .. " + " .. stable_changed)
  end)

  it("draws a new offset for each mutation, the same in a copy of the home", function()
    local copy = helpers.tmpdir() .. "/copy"
    helpers.sh("cp -a " .. home .. " " .. copy)
    local offsets = {}
    for i = 1, 3 do offsets[i] = mutate("1%").offset end
    assert.is_true(offsets[1] ~= offsets[2] or offsets[2] ~= offsets[3], table.concat(offsets, ","))
    local r = helpers.icp(copy, { "sim", "mutate", cid, "--region", "1%" })
    assert.matches("at offset " .. offsets[1] .. " ", r.stdout)
  end)

  it("leaves a snapshot taken before it as it was", function()
    assert.equal(0, helpers.icp(home, { "canister", "stop", cid, "-e", "local" }).status)
    local id = helpers.icp(home, { "canister", "snapshot", "create", cid, "-e", "local", "-q" }).stdout:sub(1, -2)
    local snap = home .. "/canisters/" .. cid .. "/snapshots/" .. id .. "/data"
    local before = memory(snap)
    mutate("50%")
    assert.are_not.equal(before, memory(home .. "/canisters/" .. cid .. "/live"))
    assert.equal(before, memory(snap))
  end)

  it("changes only the canister named", function()
    mutate("5%")
    assert_only_changed(home, fleet, cid)
  end)

  it("refuses a value that is neither a byte count nor a percentage up to 100%, with exit 2", function()
    for _, bad in ipairs({ "5x", "150%", "1e3", "%" }) do
      local r = helpers.icp(home, { "sim", "mutate", cid, "--region", bad })
      assert.equal(2, r.status, bad)
      assert.matches("--region", r.stderr, 1, true)
    end
    assert.same(fleet, helpers.fleet(home))
  end)
end)
