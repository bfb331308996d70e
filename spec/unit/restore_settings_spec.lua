-- The change a settings apply makes: only differing fields, controllers
-- only when asked and never the operator's removal, environment variables
-- added, changed and removed.
local canister_settings = require "fleetsnap.canister_settings"
local rsettings = require "fleetsnap.restore.settings"

local ME, X, Y = "2vxsx-fae", "rrkah-fqaaa-aaaaa-aaaaq-cai", "ryjl3-tyaaa-aaaaa-aaaba-cai"

local function record(over)
  local s = { controllers = { ME }, compute_allocation = "0", memory_allocation = "0",
    freezing_threshold = "2592000", reserved_cycles_limit = "5000000000000", wasm_memory_limit = "3221225472",
    wasm_memory_threshold = "0", log_memory_limit = "4096", log_visibility = { type = "Controllers" },
    snapshot_visibility = { type = "Controllers" }, status_visibility = { type = "Controllers" },
    environment_variables = {} }
  for k, v in pairs(over or {}) do s[k] = v end
  return assert(canister_settings.from_status(s, "1"))
end

describe("restore settings change", function()
  it("is nil when nothing differs (cycles aside)", function()
    assert.is_nil(rsettings.change(record(), record(), { controllers = true, operator = ME }))
    assert.is_true(rsettings.applied(record(), record(), { controllers = true, operator = ME }))
  end)

  it("sets only the differing fields", function()
    local ch = rsettings.change(record({ freezing_threshold = "86400", log_visibility = { type = "Public" } }),
      record(), { operator = ME })
    assert.same({ freezing_threshold = "86400" }, ch.nats)
    assert.same({ log = { type = "public" } }, ch.visibility)
    assert.same({ "freezing_threshold", "log_visibility" }, rsettings.fields(ch))
  end)

  it("leaves controllers alone unless asked, and never removes the operator", function()
    local want, have = record({ controllers = { X } }), record({ controllers = { ME, Y } })
    assert.is_nil(rsettings.change(want, have, { controllers = false, operator = ME }))
    local ch = rsettings.change(want, have, { controllers = true, operator = ME })
    assert.same({ X }, ch.add_controllers)
    assert.same({ Y }, ch.remove_controllers)
  end)

  it("adds, changes and removes environment variables", function()
    local want = record({ environment_variables = { { name = "A", value = "1" }, { name = "B", value = "2" } } })
    local have = record({ environment_variables = { { name = "B", value = "3" }, { name = "C", value = "4" } } })
    local ch = rsettings.change(want, have, { operator = ME })
    assert.same({ "A=1", "B=2" }, ch.add_env)
    assert.same({ "C" }, ch.remove_env)
  end)

  it("reports an empty allowed-viewers list as not applied", function()
    local want = record({ status_visibility = { type = "AllowedViewers", value = {} } })
    local ch, not_applied = rsettings.change(want, record(), { operator = ME })
    assert.is_nil(ch)
    assert.equal("status_visibility", not_applied[1].field)
  end)
end)
