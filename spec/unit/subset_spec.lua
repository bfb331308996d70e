-- subset.lua: --read-data-subset's values, the slices by canister id and
-- the seeded percentage.
local principal = require "fleetsnap.principal"
local subset = require "fleetsnap.subset"

-- n canister ids of the kind a fleet has (textual principals of distinct
-- bytes), so that the hash sees realistic text.
local function ids(n)
  local out = {}
  for i = 1, n do out[i] = principal.to_text(string.pack(">I4I4", 0x5eed, i)) end
  return out
end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

describe("subset.parse", function()
  it("reads N/T", function()
    assert.same({ kind = "slice", n = 2, t = 3, text = "2/3" }, subset.parse("2/3"))
  end)

  it("reads P% in hundredths", function()
    assert.same({ kind = "percent", hundredths = 1250, text = "12.5%" }, subset.parse("12.5%"))
  end)

  it("accepts 0% (the structural checks alone) and 100%", function()
    assert.equal(0, subset.parse("0%").hundredths)
    assert.equal(10000, subset.parse("100%").hundredths)
  end)

  for _, v in ipairs({ "0/3", "4/3", "3/0", "-1/3", "1/-3", "150%", "100.01%", "abc", "", "1/3/5", "5", "1.5/3",
    "12.345%", "%", "99999999999999999999/3" }) do
    it("refuses '" .. v .. "', naming the option", function()
      local spec, err = subset.parse(v)
      assert.is_nil(spec)
      assert.matches("^must be N/T", err)
      assert.truthy(err:find("'" .. v .. "'", 1, true))
    end)
  end
end)

describe("subset slices", function()
  it("put every member in exactly one of T slices", function()
    local all = ids(200)
    for _, t in ipairs({ 1, 2, 3, 7, 16 }) do
      local seen = {}
      for n = 1, t do
        for cid in pairs(subset.choose(all, { kind = "slice", n = n, t = t })) do
          assert.is_nil(seen[cid], cid .. " in two slices of " .. t)
          seen[cid] = n
        end
      end
      assert.equal(#all, count(seen), "members covered by the slices of " .. t)
    end
  end)

  it("are a property of the canister id, not of the other members or their order", function()
    local all = ids(50)
    local reversed, half = {}, {}
    for i = #all, 1, -1 do reversed[#reversed + 1] = all[i] end
    for i = 1, #all, 2 do half[#half + 1] = all[i] end
    local a = subset.choose(all, { kind = "slice", n = 2, t = 5 })
    assert.same(a, subset.choose(reversed, { kind = "slice", n = 2, t = 5 }))
    for _, cid in ipairs(half) do
      assert.equal(a[cid], subset.choose(half, { kind = "slice", n = 2, t = 5 })[cid])
    end
  end)

  it("spread the members over every slice", function()
    -- 200 ids over 4 slices: an empty slice would mean the hash is not used.
    local all = ids(200)
    for n = 1, 4 do assert.is_true(count(subset.choose(all, { kind = "slice", n = n, t = 4 })) > 0) end
  end)

  it("are the first 6 bytes of SHA-256 of the id text mod T, plus one", function()
    -- The documented rule, computed independently of slice_of.
    local engine = require "fleetsnap.engine"
    local cid = ids(1)[1]
    local head = engine.hash.sha256(cid):sub(1, 12)
    assert.equal(math.tointeger(tonumber(head, 16)) % 7 + 1, subset.slice_of(cid, 7))
  end)
end)

describe("subset percentages", function()
  it("choose ceil(P * n / 100) members", function()
    local all = ids(30)
    for _, c in ipairs({ { "10%", 3 }, { "11%", 4 }, { "33.33%", 10 }, { "50%", 15 }, { "100%", 30 }, { "0%", 0 } }) do
      assert.equal(c[2], count(subset.choose(all, subset.parse(c[1]), "s")), c[1])
    end
  end)

  it("choose at least one member when P > 0", function()
    assert.equal(1, count(subset.choose(ids(3), subset.parse("0.01%"), "s")))
  end)

  it("choose the same members for the same seed, in any order", function()
    local all = ids(40)
    local reversed = {}
    for i = #all, 1, -1 do reversed[#reversed + 1] = all[i] end
    assert.same(subset.choose(all, subset.parse("25%"), "seed-1"),
      subset.choose(reversed, subset.parse("25%"), "seed-1"))
  end)

  it("choose other members for another seed", function()
    local all = ids(40)
    assert.are_not.same(subset.choose(all, subset.parse("25%"), "seed-1"),
      subset.choose(all, subset.parse("25%"), "seed-2"))
  end)

  it("get a fresh seed of 16 hex digits each time", function()
    local a, b = subset.new_seed(), subset.new_seed()
    assert.matches("^%x+$", a)
    assert.equal(16, #a)
    assert.are_not.equal(a, b)
  end)
end)
