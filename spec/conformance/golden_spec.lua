-- The outputs the reference quotes from the real icp 1.5.0
-- (icp-cli-interface.md, marked [observed]) against icp-sim, byte for byte
-- after both sides are normalised: canister ids, snapshot ids, hashes,
-- timestamps, sizes, grouped numbers and directories become placeholders.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local function normalise(s, dir)
  if dir then s = s:gsub(dir:gsub("%p", "%%%0"), "<DIR>") end
  s = s:gsub("%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC", "<TS>")
  s = s:gsub("0x%x+", "0x<HEX>")
  s = s:gsub("%f[%w]%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x[%x]*", "<HEX>")
  s = s:gsub("%f[%w][a-z2-7]+%-[a-z2-7%-]+%f[^%w%-]", function(p)
    return require("fleetsnap.principal").is_valid(p) and "<P>" or p
  end)
  s = s:gsub("[%d%.]+ [KMGT]?i?B%f[^%w]", "<SIZE>")
  s = s:gsub("%d[%d_]*", "<N>")
  return s
end

-- Quoted in the reference (§2.2, §3.1-3.6, §6.3); the blank-separated
-- sections of these texts are copied as printed.
local STATUS_HUMAN = [[
Canister Id: ryjl3-tyaaa-aaaaa-aaaba-cai
Canister Status Report:
  Status: Running
  Controllers:
    controller: 2vxsx-fae
    controller: rrkah-fqaaa-aaaaa-aaaaq-cai
  Compute allocation: 0
  Memory allocation: 0
  Freezing threshold: 2_592_000
  Reserved cycles limit: 5_000_000_000_000
  Wasm memory limit: 3_221_225_472
  Wasm memory threshold: 0
  Log memory limit: 4_096
  Log visibility: Controllers
  Snapshot visibility: Controllers
  Status visibility: Controllers
  Environment Variables: N/A
  Module hash: 0x33b30671907fa91cd6745a296904507bcf0b1239376e7d44c98dca9337c19bfe
  Memory size: 3_456_789
  Cycles: 2_999_876_543_210
  Reserved cycles: 0
  Idle cycles burned per day: 12_345_678
  Query stats:
    Calls: 0
    Instructions: 0
    Req payload bytes: 0
    Res payload bytes: 0
]]

local CREATE_HUMAN = [[
Created snapshot 000000000000000000000000000000020101 for canister ryjl3-tyaaa-aaaaa-aaaba-cai (ryjl3-tyaaa-aaaaa-aaaba-cai)
  Timestamp: 2025-11-22 02:40:00 UTC
  Size: 3.2717514038085938 MiB
]]

local DOWNLOAD_STDERR = [[
Downloading snapshot 000000000000000000000000000000020101 from canister ryjl3-tyaaa-aaaaa-aaaba-cai (ryjl3-tyaaa-aaaaa-aaaba-cai)
  Timestamp: 2025-11-22 02:40:00 UTC
  Total size: 3.268890380859375 MiB
Downloading 2 WASM chunks...
WASM chunks: done
Snapshot downloaded to /path/to/snapA
]]

local PROGRESS = '{\n  "wasm_module": {\n    "frontier": 3100000,\n    "ahead": []\n  },\n  "wasm_memory": {\n'
  .. '    "frontier": 0,\n    "ahead": []\n  },\n  "stable_memory": {\n    "frontier": 0,\n    "ahead": []\n  }\n}'

local UPLOAD_PROGRESS = '{\n  "snapshot_id": "000000000000000600000000000000020101",\n  "metadata_uploaded": true,\n'
  .. '  "wasm_module_offset": 3100000,\n  "wasm_memory_offset": 0,\n  "stable_memory_offset": 0,\n'
  .. '  "wasm_chunks_uploaded": []\n}'

local LIMIT = [[
Error: direct update call failed: The replica returned a rejection error: reject code CanisterReject, reject message Canister ryjl3-tyaaa-aaaaa-aaaba-cai has reached the maximum number of snapshots allowed: 10.
Consider deleting an unnecessary snapshot of the specified canister before creating a new one. See documentation: canister-snapshot-limit-exceeded, error code Some("IC0406")

Caused by:
    The replica returned a rejection error: reject code CanisterReject, reject message Canister ryjl3-tyaaa-aaaaa-aaaba-cai has reached the maximum number of snapshots allowed: 10.
    Consider deleting an unnecessary snapshot of the specified canister before creating a new one. See documentation: canister-snapshot-limit-exceeded, error code Some("IC0406")
]]

local METADATA_KEYS = { "source", "taken_at_timestamp", "wasm_module_size", "globals", "wasm_memory_size",
  "stable_memory_size", "wasm_chunk_store", "canister_version", "certified_data", "global_timer",
  "on_low_wasm_memory_hook_status" }

describe("icp-sim against the outputs observed from icp 1.5.0", function()
  local home, root, c, id
  setup(function()
    home = helpers.sim_home({ heap = 3000000, stable = 196608 })
    local fleet = helpers.fleet(home)
    root = fleet.members[1].canister_id -- keeps two Wasm chunks
    c = fleet.members[2].canister_id
    assert(helpers.icp(home, { "canister", "stop", root, "-e", "local" }).status == 0)
    id = helpers.icp(home, { "canister", "snapshot", "create", root, "-e", "local", "-q" }).stdout:sub(1, -2)
  end)
  teardown(function() helpers.cleanup() end)

  it("prints the status report", function()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local" })
    assert.equal(normalise(STATUS_HUMAN), normalise(r.stdout))
  end)

  it("prints status JSON with the observed key order", function()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" })
    local keys = {}
    for k in r.stdout:gmatch('"([%w_]+)":') do keys[#keys + 1] = k end
    assert.same({ "id", "status", "settings", "controllers", "compute_allocation", "memory_allocation",
      "freezing_threshold", "reserved_cycles_limit", "wasm_memory_limit", "wasm_memory_threshold", "log_memory_limit",
      "log_visibility", "type", "snapshot_visibility", "type", "status_visibility", "type", "environment_variables",
      "module_hash", "memory_size", "cycles", "reserved_cycles", "idle_cycles_burned_per_day", "query_stats",
      "num_calls_total", "num_instructions_total", "request_payload_bytes_total", "response_payload_bytes_total" }, keys)
  end)

  it("prints the create report", function()
    local r = helpers.icp(home, { "canister", "snapshot", "create", root, "-e", "local" })
    assert.equal(normalise(CREATE_HUMAN), normalise(r.stdout))
    helpers.icp(home, { "canister", "snapshot", "delete", root, r.stdout:match("snapshot (%x+)"), "-e", "local" })
  end)

  it("prints create and list JSON without a trailing newline", function()
    local r = helpers.icp(home, { "canister", "snapshot", "list", root, "-e", "local", "--json" })
    assert.equal(normalise('{"snapshots":[{"snapshot_id":"00","taken_at_timestamp":1,"total_size_bytes":1}]}')
      :gsub('"<N>"', '"<HEX>"'), normalise(r.stdout))
  end)

  it("prints the download lines and writes the observed tree", function()
    local out = helpers.tmpdir() .. "/snapA"
    local r = helpers.icp(home, { "canister", "snapshot", "download", root, id, "-o", out, "-e", "local" })
    assert.equal(normalise(DOWNLOAD_STDERR, "/path/to/snapA"), normalise(r.stderr, out))
    assert.same({ ".lock", "metadata.json", "stable_memory.bin", "wasm_chunk_store", "wasm_memory.bin",
      "wasm_module.bin" }, fs.list(out))
    local text = fs.read(out .. "/metadata.json")
    local keys = {}
    for k in text:gmatch('\n  "([%w_]+)":') do keys[#keys + 1] = k end
    assert.same(METADATA_KEYS, keys)
    assert.matches('\n  "certified_data": %[\n    %d+,\n', text)
  end)

  it("writes the download progress file in the observed shape", function()
    local out = helpers.tmpdir() .. "/snapB"
    helpers.icp(home, { "canister", "snapshot", "download", root, id, "-o", out, "-e", "local" },
      { ICP_SIM_CRASH = "snapshot.download:1" })
    assert.equal(normalise(PROGRESS), normalise(fs.read(out .. "/.download_progress.json")))
  end)

  it("writes the upload progress file in the observed shape", function()
    local src = helpers.tmpdir() .. "/snapC"
    helpers.icp(home, { "canister", "snapshot", "download", root, id, "-o", src, "-e", "local" })
    helpers.icp(home, { "canister", "snapshot", "upload", root, "-i", src, "-e", "local" },
      { ICP_SIM_CRASH = "snapshot.upload:1" })
    assert.equal(normalise(UPLOAD_PROGRESS), normalise(fs.read(src .. "/.upload_progress.json")))
  end)

  it("prints the limit reject", function()
    local r = helpers.icp(home, { "canister", "snapshot", "create", root, "-e", "local" },
      { ICP_SIM_SNAPSHOT_LIMIT = "1" })
    assert.equal(normalise(LIMIT), normalise(r.stderr))
  end)

  it("prints delete and restore confirmations", function()
    local r = helpers.icp(home, { "canister", "snapshot", "restore", root, id, "-e", "local" })
    assert.equal(normalise("Restored canister ryjl3-tyaaa-aaaaa-aaaba-cai (ryjl3-tyaaa-aaaaa-aaaba-cai) from snapshot "
      .. "000000000000000000000000000000020101\n"), normalise(r.stderr))
    assert.equal("", r.stdout)
  end)

  it("prints the transport failure", function()
    local r = helpers.icp(home, { "canister", "stop", c, "-n", "http://127.0.0.1:9", "-k", "mainnet" },
      { ICP_SIM_UNREACHABLE = "1" })
    assert.equal("Error: direct update call failed: An error happened during communication with the replica: error "
      .. "sending request for url (http://127.0.0.1:9/api/v4/canister/" .. c .. "/call)\n\nCaused by:\n    An error "
      .. "happened during communication with the replica: error sending request for url (http://127.0.0.1:9/api/v4/"
      .. "canister/" .. c .. "/call)\n", r.stderr)
  end)

  it("prints the registry envelope", function()
    local r = helpers.icp(home, { "canister", "call", root, "canic_subnet_registry", "()", "--json", "-e", "local" })
    local doc = json.decode(r.stdout)
    assert.matches("^4449444c", doc.response_bytes)
    assert.matches('^{"response_bytes":"%x+","response_text":null,"response_candid":', r.stdout)
    assert.are_not.equal("\n", r.stdout:sub(-1))
  end)
end)
