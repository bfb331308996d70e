-- backup verify that scales, through icp-sim: --read-data-subset N/T and
-- P% (--seed), --member, and --all over a backups directory.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local subset = require "fleetsnap.subset"

local json, fs = engine.json, engine.fs

local T = 3

-- One fleet and one backup for the file; each test copies the backup, so
-- that a corruption stays in its test.
local home, work, pristine

setup(function()
  home = helpers.sim_home()
  work = helpers.tmpdir()
  pristine = work .. "/pristine"
  local r = helpers.fleetsnap(home, { "backup", "create", "--out", pristine })
  assert(r.status == 0, r.stderr)
end)
teardown(function() helpers.cleanup() end)

local function members(dir)
  return json.decode(fs.read(dir .. "/fleet-backup-manifest.json")).fleet.members
end

local function esc(s)
  return (s:gsub("%p", "%%%0"))
end

-- A fresh copy of the backup under a fresh directory: its path.
local function copy(name)
  local parent = helpers.tmpdir()
  local dir = parent .. "/" .. (name or "b1")
  helpers.sh("cp -a " .. pristine .. " " .. dir)
  return dir, parent
end

-- Changes one byte of a member's stable memory in place (same size: only a
-- re-hash can see it), and proves the byte changed.
local function corrupt(dir, member)
  local path = dir .. "/" .. member.source_snapshot.artifact_path .. "/stable_memory.bin"
  local before = assert(fs.read(path))
  local f = assert(io.open(path, "r+b"))
  f:seek("set", 10)
  f:write(before:sub(11, 11) == "X" and "Y" or "X")
  f:close()
  local after = assert(fs.read(path))
  assert(#after == #before and after ~= before, "the corruption did not happen")
  return path
end

local function verify(argv)
  local full = { "backup", "verify" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return helpers.fleetsnap(nil, full)
end

local function verify_json(argv)
  local full = { "--json" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local r = verify(full)
  return assert(json.decode(r.stdout), r.stdout .. r.stderr), r
end

describe("backup verify --read-data-subset N/T", function()
  local dir, victim

  before_each(function()
    dir = copy()
    victim = members(dir)[2]
    corrupt(dir, victim)
  end)

  it("finds a changed byte with the slice that holds its member", function()
    local n = subset.slice_of(victim.canister_id, T)
    local r = verify({ dir, "--read-data-subset", n .. "/" .. T })
    assert.equal(6, r.status, r.stdout .. r.stderr)
    assert.matches(esc(victim.canister_id) .. ": [^\n]*/stable_memory%.bin: content differs", r.stdout)
  end)

  it("passes with every other slice (their members' bytes are intact)", function()
    local n = subset.slice_of(victim.canister_id, T)
    local others = 0
    for k = 1, T do
      if k ~= n then
        local r = verify({ dir, "--read-data-subset", k .. "/" .. T })
        assert.equal(0, r.status, k .. "/" .. T .. ": " .. r.stdout .. r.stderr)
        others = others + 1
      end
    end
    assert.equal(T - 1, others)
  end)

  it("finds it with a full verify", function()
    local r = verify({ dir })
    assert.equal(6, r.status)
    assert.matches(esc(victim.canister_id) .. ": [^\n]*content differs", r.stdout)
  end)

  it("re-hashes each member in exactly one of the T slices", function()
    local seen, total = {}, nil
    for k = 1, T do
      local doc = verify_json({ dir, "--read-data-subset", k .. "/" .. T })
      total = doc.checked.members_total
      for _, m in ipairs(doc.members) do
        if m.rehashed then
          assert.is_nil(seen[m.canister_id], m.canister_id .. " re-hashed twice")
          seen[m.canister_id] = k
        end
      end
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(#members(dir), total)
    assert.equal(total, n)
  end)

  it("says how much it re-hashed of the total", function()
    local k = subset.slice_of(victim.canister_id, T) % T + 1
    local doc = verify_json({ dir, "--read-data-subset", k .. "/" .. T })
    local want_members, want_bytes, all_bytes = 0, 0, 0
    for _, m in ipairs(doc.members) do
      all_bytes = all_bytes + m.bytes
      if m.rehashed then want_members, want_bytes = want_members + 1, want_bytes + m.bytes end
    end
    assert.equal(k .. "/" .. T, doc.checked.subset)
    assert.same({ want_members, #doc.members, want_bytes, all_bytes },
      { doc.checked.members, doc.checked.members_total, doc.checked.bytes, doc.checked.bytes_total })
    assert.is_true(doc.checked.members < doc.checked.members_total)
  end)

  it("still checks every member's file sizes: a truncated file outside the slice fails", function()
    -- Undo the byte change, then truncate the victim's file instead.
    dir = copy()
    local path = dir .. "/" .. victim.source_snapshot.artifact_path .. "/stable_memory.bin"
    local before = assert(fs.read(path))
    helpers.write(path, before:sub(1, #before - 1))
    assert.equal(#before - 1, #assert(fs.read(path)))
    local k = subset.slice_of(victim.canister_id, T) % T + 1
    local r = verify({ dir, "--read-data-subset", k .. "/" .. T })
    assert.equal(6, r.status, r.stdout)
    assert.matches(esc(victim.canister_id) .. ": [^\n]*stable_memory%.bin: " .. (#before - 1) .. " bytes, the "
      .. "manifest says " .. #before, r.stdout)
  end)
end)

describe("backup verify --member", function()
  local dir, victim, other

  before_each(function()
    dir = copy()
    victim, other = members(dir)[2], members(dir)[3]
    corrupt(dir, victim)
  end)

  it("finds the changed byte of the member named", function()
    local r = verify({ dir, "--member", victim.canister_id })
    assert.equal(6, r.status)
    assert.matches("content differs", r.stdout)
  end)

  it("re-hashes only the members named (repeatable)", function()
    local doc, r = verify_json({ dir, "--member", other.canister_id, "--member", members(dir)[4].canister_id })
    assert.equal(0, r.status)
    assert.equal(2, doc.checked.members)
    for _, m in ipairs(doc.members) do
      assert.equal(m.canister_id == other.canister_id or m.canister_id == members(dir)[4].canister_id, m.rehashed)
    end
  end)

  it("refuses a canister that is not a member, naming --member (exit 2)", function()
    local r = verify({ dir, "--member", "aaaaa-aa" })
    assert.equal(2, r.status)
    assert.matches("%-%-member aaaaa%-aa is not a member of backup", r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true))
  end)
end)

describe("backup verify --read-data-subset P%", function()
  local dir

  before_each(function() dir = copy() end)

  local function chosen(doc)
    local out = {}
    for _, m in ipairs(doc.members) do
      if m.rehashed then out[#out + 1] = m.canister_id end
    end
    return out
  end

  it("re-hashes ceil(P% of the members), at least one", function()
    local doc = verify_json({ dir, "--read-data-subset", "1%" })
    assert.equal(1, doc.checked.members)
    assert.equal(1, #chosen(doc))
    doc = verify_json({ dir, "--read-data-subset", "50%" })
    assert.equal(3, #chosen(doc))
  end)

  it("chooses the same members again with the seed it printed", function()
    local r = verify({ dir, "--read-data-subset", "50%" })
    assert.equal(0, r.status)
    local seed = assert(r.stdout:match("%-%-seed (%x+) chooses them again"), r.stdout)
    local listed = assert(r.stdout:match("re%-hashed: ([^\n]+)"), r.stdout)
    local again = verify({ dir, "--read-data-subset", "50%", "--seed", seed })
    assert.equal(listed, again.stdout:match("re%-hashed: ([^\n]+)"))
  end)

  it("chooses the same members for the same --seed", function()
    local a = verify_json({ dir, "--read-data-subset", "50%", "--seed", "nightly-7" })
    local b = verify_json({ dir, "--read-data-subset", "50%", "--seed", "nightly-7" })
    assert.equal("nightly-7", a.checked.seed)
    assert.same(chosen(a), chosen(b))
  end)

  it("with 0% checks the structure of every member and re-hashes none", function()
    local doc, r = verify_json({ dir, "--read-data-subset", "0%" })
    assert.equal(0, r.status)
    assert.same({ 0, 0 }, { doc.checked.members, doc.checked.bytes })
    assert.equal(#members(dir), #doc.members)
  end)
end)

describe("backup verify refuses, naming the option (exit 2, no traceback)", function()
  local dir

  setup(function() dir = copy() end)

  for _, v in ipairs({ "0/3", "4/3", "150%", "abc" }) do
    it("--read-data-subset " .. v, function()
      local r = verify({ dir, "--read-data-subset", v })
      assert.equal(2, r.status)
      assert.truthy(r.stderr:find("--read-data-subset must be N/T (1 <= N <= T) or P%", 1, true), r.stderr)
      assert.truthy(r.stderr:find("'" .. v .. "'", 1, true))
      assert.is_nil(r.stderr:find("traceback", 1, true))
    end)
  end

  it("--seed without P%", function()
    local r = verify({ dir, "--read-data-subset", "1/2", "--seed", "x" })
    assert.equal(2, r.status)
    assert.matches("%-%-seed goes only with %-%-read%-data%-subset P%%", r.stderr)
  end)

  it("--member with --read-data-subset", function()
    local r = verify({ dir, "--read-data-subset", "1/2", "--member", members(dir)[1].canister_id })
    assert.equal(2, r.status)
    assert.matches("%-%-member cannot be combined with %-%-read%-data%-subset", r.stderr)
  end)

  it("neither a <ref> nor --all", function()
    local r = verify({})
    assert.equal(2, r.status)
    assert.matches("needs a <ref> or %-%-all", r.stderr)
  end)

  it("--all with a <ref>", function()
    local r = verify({ dir, "--all" })
    assert.equal(2, r.status)
    assert.matches("%-%-all verifies every backup under %-%-dir", r.stderr)
  end)
end)

describe("backup verify --all", function()
  local parent, victim

  -- good: intact; corrupt: a byte changed; incomplete: a create that failed
  -- at its first snapshot (a plan, no manifest).
  setup(function()
    local good
    good, parent = copy("good")
    helpers.sh("cp -a " .. good .. " " .. parent .. "/corrupt")
    victim = members(parent .. "/corrupt")[1]
    corrupt(parent .. "/corrupt", victim)
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", parent .. "/incomplete" },
      { ICP_SIM_FAIL = "snapshot.create" })
    assert(r.status ~= 0, "the incomplete backup completed")
    assert(fs.lstat(parent .. "/incomplete/fleetsnap-plan.json"), "no plan in the incomplete backup")
    assert(not fs.lstat(parent .. "/incomplete/fleet-backup-manifest.json"), "the incomplete backup has a manifest")
  end)

  it("prints one line per backup, and exits 6 for the corrupt one", function()
    local r = verify({ "--all", "--dir", parent })
    assert.equal(6, r.status, r.stdout .. r.stderr)
    assert.matches("3 backup%(s%) under " .. esc(parent) .. ": 1 verified, 1 failed, 0 corrupt, 1 incomplete, "
      .. "0 running\n", r.stdout)
    assert.matches("\n  good +verified +re%-hashed 6 of 6 members", r.stdout)
    assert.matches("\n  corrupt +FAILED +1 of 6 members failed %(" .. esc(victim.canister_id) .. ": artifact "
      .. "digest %x+, manifest says %x+%)", r.stdout)
    assert.matches("\n  incomplete +incomplete +not verified %(incomplete%)", r.stdout)
    local _, lines = r.stdout:gsub("\n", "")
    assert.equal(4, lines)
  end)

  it("lists a backup whose runner holds its lock as running, neither verified nor failed", function()
    local lock = assert(engine.lock.acquire(parent .. "/incomplete/fleetsnap-journal.wal.lock"))
    local doc = verify_json({ "--all", "--dir", parent })
    lock:release()
    local states = {}
    for _, b in ipairs(doc.backups) do states[b.name] = { b.state, b.ok } end
    assert.same({ "running", json.null }, states.incomplete)
  end)

  it("exits 0 when every complete backup verifies, the incomplete one listed", function()
    local only = helpers.tmpdir()
    helpers.sh("cp -a " .. parent .. "/good " .. parent .. "/incomplete " .. only .. "/")
    local doc, r = verify_json({ "--all", "--dir", only })
    assert.equal(0, r.status, r.stdout)
    assert.is_true(doc.ok)
    local states = {}
    for _, b in ipairs(doc.backups) do states[b.name] = b.state end
    assert.same({ good = "verified", incomplete = "incomplete" }, states)
  end)

  it("combines with a subset: the slice without the changed member passes it", function()
    local k = subset.slice_of(victim.canister_id, T) % T + 1
    local doc, r = verify_json({ "--all", "--dir", parent, "--read-data-subset", k .. "/" .. T })
    assert.equal(0, r.status, r.stdout)
    assert.equal(k .. "/" .. T, doc.subset)
    local n = subset.slice_of(victim.canister_id, T)
    doc, r = verify_json({ "--all", "--dir", parent, "--read-data-subset", n .. "/" .. T })
    assert.equal(6, r.status)
    assert.is_false(doc.ok)
  end)

  it("uses one seed for every backup with P%", function()
    local doc = verify_json({ "--all", "--dir", parent, "--read-data-subset", "50%" })
    assert.matches("^%x+$", doc.seed)
    for _, b in ipairs(doc.backups) do
      if b.report ~= json.null then assert.equal(doc.seed, b.report.checked.seed) end
    end
  end)

  it("refuses a directory that is not there (exit 3)", function()
    local r = verify({ "--all", "--dir", parent .. "/nosuch" })
    assert.equal(3, r.status)
    assert.matches("no backups directory", r.stderr)
  end)

  it("refuses --member (exit 2)", function()
    local r = verify({ "--all", "--dir", parent, "--member", victim.canister_id })
    assert.equal(2, r.status)
    assert.matches("%-%-member cannot be combined with %-%-all", r.stderr)
  end)
end)
