--- Writes the seed documents of the `readers` and `json` corpora from the
-- spec fixtures (spec/fixtures/documents.lua), so that the seeds are the
-- documents a run writes. Usage, from the source tree with the specs'
-- LUA_PATH and a built engine (docs/fuzzing.md):
--   lua5.4 fuzz/seeds.lua fuzz/corpus
local docs = require "fixtures.documents"
local helpers = require "helpers"
local readers = dofile("fuzz/readers.lua")
local canic = require "fleetsnap.canic"
local manifest = require "fleetsnap.manifest"
local snapshot_index = require "fleetsnap.snapshot_index"
local engine = require "fleetsnap.engine"

local out = assert(arg[1], "usage: seeds.lua <corpus dir>")
local json = engine.json

local function index_of(name)
  for i, r in ipairs(readers.READERS) do
    if r[1] == name then return i - 1 end
  end
  error("no reader " .. name)
end

local function put(target, name, bytes)
  local f = assert(io.open(out .. "/" .. target .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end

local function reader_seed(name, bytes)
  put("readers", name, string.char(index_of(name)) .. bytes)
end

local dir = helpers.tmpdir()
docs.backup(dir)
local man = helpers.read(dir .. "/" .. manifest.FILE_036)
reader_seed("manifest-0.36", man)
reader_seed("download-journal", helpers.read(dir .. "/" .. manifest.DOWNLOAD_JOURNAL))
local plan = json.encode(docs.backup_plan(), { pretty = true })
reader_seed("backup-plan", plan)
local rplan = json.encode(docs.restore_plan(dir), { pretty = true })
reader_seed("restore-plan", rplan)
reader_seed("mapping", json.encode(docs.mapping()))
reader_seed("inventory", json.encode({ root = docs.ROOT, members = { { canister_id = docs.ROOT, role = "root" },
  { canister_id = docs.A, role = "app", parent = docs.ROOT } } }))
reader_seed("candid-registry", canic.encode_registry({
  { canister_id = docs.ROOT, role = "root", created_at = 1 },
  { canister_id = docs.A, role = "app", parent = docs.ROOT, module_hash = ("\1"):rep(32), created_at = 2 },
}))
-- The same backup in the 0.108 line's shape (as manifest_spec makes it).
local d108 = json.decode(man)
d108.deployment, d108.fleet, d108.fleetsnap = d108.fleet, nil, nil
d108.verification = json.decode('{"deployment_checks": [], "member_checks": []}')
-- The reply the real icp printed against a Canic-like root (as in
-- spec/unit/candid_spec.lua, reference icp-cli-interface.md §8.3).
local OBSERVED = "4449444c096d7b6e006e686c05cbb0d50268f6d6bbdd0471aaacd9d0067881cfaef40a01f6fee59a0f026c03cbb0d50268f6"
  .. "d6bbdd047191edb1ef0f036d046b07ddc6a0117fb38b96dc027fcfa0def2067fd4b4c59a097fb0f0f18a0e7fd9d18baf0e7ff28cd9ee0f7f"
  .. "6c02ade2928e0406c7ebc4d009716b02bc8a0105c5fed2010701080002010a0000000000000002010104726f6f74010a00000000000000020"
  .. "10104726f6f7401000000000000000000010a0000000000000006010103617070010a000000000000000601010361707001000000000000"
  .. "00010201ab01010a00000000000000020101"
put("readers", "candid-observed", string.char(index_of("candid-registry"))
  .. OBSERVED:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
reader_seed("manifest-0.108", json.encode(d108, { pretty = true }))
-- An index the reader accepts: it names the digests of the manifest and
-- plan the harness writes beside it.
reader_seed("snapshot-index", json.encode(snapshot_index.build(
  { backup_id = "b1", fleet = { members = { { canister_id = docs.A, source_snapshot = { snapshot_id = "s1" } } } } },
  engine.hash.sha256(readers.INDEXED_MANIFEST), engine.hash.sha256(readers.INDEXED_PLAN), { sim = "/h" }),
  { pretty = true }))
put("json", "manifest", man)
put("json", "restore-plan", rplan)
put("json", "scalars", '[0,-0,-0.0,1e-320,1.5e300,9223372036854775807,-9223372036854775808,'
  .. '9223372036854775808,"\\u00e9\\ud83d\\ude00\\n",true,false,null,{},[],{"":{"a":[[]]}}]')

-- Journals: three records; the same with a torn last frame; the header alone.
local jpath = dir .. "/journal"
local j = assert(engine.journal.open(jpath))
assert(j:append({ op = "begin", n = 1 }))
assert(j:append({ op = "done", id = docs.A, digest = ("ab"):rep(32) }))
assert(j:append({ op = "end" }))
assert(j:close())
local wal = helpers.read(jpath)
put("journal", "three-records", wal)
put("journal", "torn-tail", wal:sub(1, #wal - 3))
put("journal", "header", wal:sub(1, 16))
