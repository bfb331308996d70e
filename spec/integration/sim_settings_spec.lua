-- icp-sim's `canister settings update`: icp 1.5.0's flags change what the
-- status reports, and unchanged settings keep their values.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json = engine.json

describe("icp-sim canister settings update", function()
  local home, c, me
  before_each(function()
    home = helpers.sim_home()
    local fleet = helpers.fleet(home)
    c = fleet.members[2].canister_id
    me = fleet.members[1].canister_id
  end)
  after_each(function() helpers.cleanup() end)

  local function status()
    local r = helpers.icp(home, { "canister", "status", c, "-e", "local", "--json" })
    assert.equal(0, r.status, r.stderr)
    return json.decode(r.stdout).settings
  end

  it("sets nats, visibilities, controllers and environment variables", function()
    local before = status()
    assert.equal("2_592_000", before.freezing_threshold)
    local r = helpers.icp(home, { "canister", "settings", "update", c, "-e", "local",
      "--freezing-threshold", "86400", "--compute-allocation", "3", "--wasm-memory-limit", "1gib",
      "--log-visibility", "public", "--set-snapshot-viewer", me,
      "--add-controller", me, "--add-environment-variable", "A=1", "--add-environment-variable", "B=x=y" })
    assert.equal(0, r.status, r.stderr)
    local s = status()
    assert.equal("86_400", s.freezing_threshold)
    assert.equal("3", s.compute_allocation)
    assert.equal("1_073_741_824", s.wasm_memory_limit)
    assert.equal(before.reserved_cycles_limit, s.reserved_cycles_limit)
    assert.same({ type = "Public" }, s.log_visibility)
    assert.same({ type = "AllowedViewers", value = { me } }, s.snapshot_visibility)
    assert.same({ type = "Controllers" }, s.status_visibility)
    local has = false
    for _, p in ipairs(s.controllers) do if p == me then has = true end end
    assert.is_true(has)
    assert.same({ { name = "A", value = "1" }, { name = "B", value = "x=y" } }, s.environment_variables)
    r = helpers.icp(home, { "canister", "settings", "update", c, "-e", "local", "--remove-controller", me,
      "--remove-environment-variable", "A" })
    assert.equal(0, r.status, r.stderr)
    s = status()
    for _, p in ipairs(s.controllers) do assert.not_equal(me, p) end
    assert.same({ { name = "B", value = "x=y" } }, s.environment_variables)
    assert.equal(1 + 1, helpers.effects(home)[c].settings_update)
  end)

  it("refuses a visibility outside icp's values as clap does (exit 2)", function()
    local r = helpers.icp(home, { "canister", "settings", "update", c, "-e", "local", "--log-visibility", "all" })
    assert.equal(2, r.status)
    assert.matches("Must be `controllers` or `public`.", r.stderr, 1, true)
  end)
end)
