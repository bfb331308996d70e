-- The canonical settings record: parsed from icp's status JSON, compared
-- field by field, cycles never.
local canister_settings = require "fleetsnap.canister_settings"
local engine = require "fleetsnap.engine"
local finalize = require "fleetsnap.backup.finalize"
local helpers = require "helpers"

local json = engine.json

-- A sorts before B.
local A, B = "rrkah-fqaaa-aaaaa-aaaaq-cai", "ryjl3-tyaaa-aaaaa-aaaba-cai"

local function status_settings(over)
  local s = { controllers = { B, A }, compute_allocation = "0", memory_allocation = "0",
    freezing_threshold = "2_592_000", reserved_cycles_limit = "5_000_000_000_000", wasm_memory_limit = "3_221_225_472",
    wasm_memory_threshold = "0", log_memory_limit = "4_096", log_visibility = { type = "Controllers" },
    snapshot_visibility = { type = "AllowedViewers", value = { B, A } }, status_visibility = { type = "Public" },
    environment_variables = { { name = "Z", value = "1" }, { name = "A", value = "2" } } }
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

describe("canister settings", function()
  it("reads icp's status settings into the canonical record", function()
    local r = assert(canister_settings.from_status(status_settings(), "2_999_876_543_210"))
    assert.same({ A, B }, r.controllers)
    assert.equal("2592000", r.freezing_threshold)
    assert.equal("4096", r.log_memory_limit)
    assert.same({ type = "controllers" }, r.log_visibility)
    assert.same({ type = "allowed_viewers", viewers = { A, B } }, r.snapshot_visibility)
    assert.same({ type = "public" }, r.status_visibility)
    assert.same({ { name = "A", value = "2" }, { name = "Z", value = "1" } }, r.environment_variables)
    assert.equal("2999876543210", r.cycles)
  end)

  it("names the field that does not parse", function()
    local r, bad = canister_settings.from_status(status_settings({ freezing_threshold = "soon" }))
    assert.is_nil(r)
    assert.equal("freezing_threshold", bad)
    r, bad = canister_settings.from_status(status_settings({ log_visibility = { type = "Everyone" } }))
    assert.is_nil(r)
    assert.equal("log_visibility", bad)
  end)

  it("reports each differing field, and never cycles", function()
    local a = assert(canister_settings.from_status(status_settings(), "1"))
    local b = assert(canister_settings.from_status(status_settings({ freezing_threshold = "86_400",
      controllers = { A }, environment_variables = {} }), "999"))
    local d = canister_settings.compare(a, b)
    assert.same({
      { field = "controllers", backup = A .. ", " .. B, target = A },
      { field = "freezing_threshold", backup = "2592000", target = "86400" },
      { field = "environment_variables", backup = "A=2, Z=1", target = "(none)" },
    }, d)
    assert.same({}, canister_settings.compare(a, a))
  end)

  it("a manifest's settings are the same bytes fresh and read back from the journal", function()
    -- A backup killed after it linked its manifest rebuilds the manifest
    -- on resume from the journal's attempt record, and publishes only if
    -- the bytes are the ones linked.
    local with_vars = assert(canister_settings.from_status(status_settings(), "3_000_000_000_000"))
    local bare = assert(canister_settings.from_status(status_settings({ environment_variables = json.null,
      snapshot_visibility = { type = "AllowedViewers", value = {} } })))
    local attempt = { t = "attempt", n = 1, stopped_before = json.array({}), settings = json.array({
      json.ordered({ canister_id = A, settings = with_vars }, { "canister_id", "settings" }),
      json.ordered({ canister_id = B, settings = bare }, { "canister_id", "settings" }) }) }
    local path = helpers.tmpdir() .. "/journal.wal"
    local j = assert(engine.journal.open(path))
    assert(j:append(attempt))
    j:close()
    j = assert(engine.journal.open(path))
    local replayed
    for r in j:records() do replayed = r end
    j:close()
    local fresh, back = finalize.recorded_settings(attempt), finalize.recorded_settings(replayed)
    for _, cid in ipairs({ A, B }) do
      assert.equal(json.encode(fresh[cid], { pretty = true }), json.encode(back[cid], { pretty = true }), cid)
    end
    -- Both are the record as the status gave it, in the record's key order
    -- (not the decoder's sorted one).
    assert.equal(json.encode(with_vars, { pretty = true }), json.encode(back[A], { pretty = true }))
    assert.equal(json.encode(bare, { pretty = true }), json.encode(back[B], { pretty = true }))
    assert.truthy(json.encode(back[A]):find('^{"controllers":'))
    assert.truthy(json.encode(back[B]):find('"environment_variables":%[%],"cycles":null}$'))
  end)

  it("a journal's settings that do not parse are a corrupt journal", function()
    local ok, e = pcall(finalize.recorded_settings, { settings = { { canister_id = A,
      settings = { controllers = { A }, compute_allocation = "lots" } } } })
    assert.is_false(ok)
    assert.equal("ECORRUPT", e.code)
    assert.truthy(e.message:find("compute_allocation", 1, true))
  end)
end)
