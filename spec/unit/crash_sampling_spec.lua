-- The crash loops' choice of failpoints (spec/helpers.lua): what the crash
-- suites prove rests on every site being killed at, whatever the seed.
local helpers = require "helpers"

local A, B, C = "utdrl-wiaaa-aaaaa-aatuq-cai", "u2a2x-aaaaa-aaaaa-aatva-cai", "u5b4d-nyaaa-aaaaa-aatvq-cai"

-- A trace in the shape of a backup's: a plan write, then per member a
-- stop (two journal records around an effect), a barrier, the end.
local function trace()
  local points = { "before-write@fleetsnap-plan.json:1", "before-append@:1" }
  for _, id in ipairs({ A, B, C }) do
    points[#points + 1] = "before-append@stop-" .. id .. ":1"
    points[#points + 1] = "before-effect@stop-" .. id .. ":1"
    points[#points + 1] = "before-append@stop-" .. id .. ":2"
  end
  points[#points + 1] = "before-append@barrier-stopped:1"
  points[#points + 1] = "before-append@:2"
  return points
end

local function sites_of(points)
  local set = {}
  for _, p in ipairs(points) do set[helpers.failpoint_site(p)] = true end
  return set
end

local function in_order(chosen, points)
  local pos = {}
  for i, p in ipairs(points) do pos[p] = i end
  for k = 2, #chosen do
    if pos[chosen[k - 1]] >= pos[chosen[k]] then return false end
  end
  return true
end

describe("helpers.failpoint_site", function()
  it("masks canister ids, keeping the point, the rest of the key and the repeat", function()
    assert.equal("before-append@stop-<id>:2", helpers.failpoint_site("before-append@stop-" .. A .. ":2"))
    assert.equal("before-stage@<id>:1", helpers.failpoint_site("before-stage@" .. B .. ":1"))
    assert.equal("before-effect@snapshot_create-<id>:1",
      helpers.failpoint_site("before-effect@snapshot_create-" .. C .. ":1"))
  end)

  it("leaves keys without a canister id alone", function()
    assert.equal("before-append@barrier-stopped-depth-1:1", helpers.failpoint_site("before-append@barrier-stopped-depth-1:1"))
    assert.equal("before-append@:3", helpers.failpoint_site("before-append@:3"))
  end)
end)

describe("helpers.choose_failpoints", function()
  it("keeps every site for any seed", function()
    local points = trace()
    for seed = 1, 50 do
      for _, per_site in ipairs({ "ends", "one" }) do
        local chosen, sites = helpers.choose_failpoints(points, { per_site = per_site, seed = seed })
        assert.equal(7, sites)
        assert.same(sites_of(points), sites_of(chosen))
      end
    end
  end)

  it("keeps the first and last member of each site and the run's first and last failpoint", function()
    local points = trace()
    local chosen = helpers.choose_failpoints(points, { per_site = "ends", seed = 3 })
    local set = {}
    for _, p in ipairs(chosen) do set[p] = true end
    for _, p in ipairs({ points[1], points[#points], "before-append@stop-" .. A .. ":1",
      "before-append@stop-" .. C .. ":1", "before-effect@stop-" .. A .. ":1", "before-effect@stop-" .. C .. ":1" }) do
      assert.is_true(set[p], p)
    end
    assert.is_nil(set["before-append@stop-" .. B .. ":1"])
  end)

  it("adds `extra` more of the rest, in trace order", function()
    local points = trace()
    local base = helpers.choose_failpoints(points, { per_site = "ends", seed = 3 })
    local more = helpers.choose_failpoints(points, { per_site = "ends", seed = 3, extra = 2 })
    assert.equal(#base + 2, #more)
    assert.is_true(in_order(more, points))
  end)

  it("chooses the same points for the same seed, and other repeats for other seeds", function()
    local points = trace()
    local one = helpers.choose_failpoints(points, { per_site = "one", seed = 11 })
    assert.same(one, helpers.choose_failpoints(points, { per_site = "one", seed = 11 }))
    local differs = false
    for seed = 12, 40 do
      if table.concat(helpers.choose_failpoints(points, { per_site = "one", seed = seed }), ",")
        ~= table.concat(one, ",") then
        differs = true
      end
    end
    assert.is_true(differs)
  end)

  it("keeps a point's rank when other points come or go", function()
    local points = trace()
    local chosen = helpers.choose_failpoints(points, { per_site = "one", seed = 5 })
    -- A new site in front of the members' does not move their choice.
    table.insert(points, 3, "before-write@download-journal.json:1")
    local again = helpers.choose_failpoints(points, { per_site = "one", seed = 5 })
    table.remove(again, 3)
    assert.same(chosen, again)
  end)

  it("keeps every point with `all`", function()
    local points = trace()
    assert.same(points, (helpers.choose_failpoints(points, { all = true, seed = 1 })))
  end)
end)
