local candid = require "fleetsnap.candid"
local canic = require "fleetsnap.canic"

local function unhex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

-- The registry reply the real icp printed against a Canic-like root
-- (reference icp-cli-interface.md §8.3).
local OBSERVED = "4449444c096d7b6e006e686c05cbb0d50268f6d6bbdd0471aaacd9d0067881cfaef40a01f6fee59a0f026c03cbb0d50268f6"
  .. "d6bbdd047191edb1ef0f036d046b07ddc6a0117fb38b96dc027fcfa0def2067fd4b4c59a097fb0f0f18a0e7fd9d18baf0e7ff28cd9ee0f7f"
  .. "6c02ade2928e0406c7ebc4d009716b02bc8a0105c5fed2010701080002010a0000000000000002010104726f6f74010a00000000000000020"
  .. "10104726f6f7401000000000000000000010a0000000000000006010103617070010a000000000000000601010361707001000000000000"
  .. "00010201ab01010a00000000000000020101"

describe("candid.hash", function()
  it("computes field ids", function()
    assert.equal(17724, candid.hash("Ok"))
    assert.equal(5593163, candid.hash("pid"))
    assert.equal(4260132497, candid.hash("record"))
  end)
end)

describe("candid.decode", function()
  it("decodes the observed registry reply", function()
    local v = assert(candid.decode(unhex(OBSERVED), canic.NAMES))
    local entries = v[1].Ok
    assert.equal(2, #entries)
    assert.equal("ryjl3-tyaaa-aaaaa-aaaba-cai", entries[1].pid)
    assert.equal("root", entries[1].role)
    assert.is_nil(entries[1].record.parent_pid)
    assert.equal("app", entries[2].record.role)
    assert.equal("ryjl3-tyaaa-aaaaa-aaaba-cai", entries[2].record.parent_pid)
    assert.equal("\1\171", entries[2].record.module_hash)
    assert.equal(1, entries[2].record.created_at)
  end)

  it("keys unknown fields by their id", function()
    local v = candid.decode(unhex(OBSERVED))
    assert.is_table(v[1][17724])
  end)

  local bad = {
    { "a missing magic", "DIDX\0\0" },
    { "a truncated message", "DIDL\0\1\120" },
    { "trailing bytes", "DIDL\0\1\113\0\0" },
    { "an out-of-range type index", "DIDL\0\1\5" },
    -- Found by the readers fuzz target (fuzz/corpus/readers/crash-candid-
    -- text-length-overflow): a text of 2^63 - 1 bytes wrapped the bounds
    -- check's position + length round to a negative number; the text read
    -- as "" and the next value raised from string.unpack.
    { "a text length that overflows the position", "DIDL\0\2\113\120" .. ("\255"):rep(8) .. "\127" },
  }
  for _, b in ipairs(bad) do
    it("refuses " .. b[1] .. " with ECANDID", function()
      local v, msg, code = candid.decode(b[2])
      assert.is_nil(v)
      assert.equal("ECANDID", code)
      assert.matches("^candid: ", msg)
    end)
  end
end)

describe("candid.encode", function()
  it("round-trips the registry through the decoder", function()
    local bytes = canic.encode_registry({
      { canister_id = "ryjl3-tyaaa-aaaaa-aaaba-cai", role = "root", created_at = 7 },
      { canister_id = "renrk-eyaaa-aaaaa-aaada-cai", role = "app", parent = "ryjl3-tyaaa-aaaaa-aaaba-cai",
        module_hash = "\1\2", created_at = 1700000000123456789 },
    })
    local v = assert(candid.decode(bytes, canic.NAMES))
    assert.equal("app", v[1].Ok[2].role)
    assert.equal(1700000000123456789, v[1].Ok[2].record.created_at)
    assert.equal("\1\2", v[1].Ok[2].record.module_hash)
  end)

  it("encodes an error reply", function()
    local v = candid.decode(canic.encode_error("NotFound", "no registry"), canic.NAMES)
    assert.same({ code = { NotFound = true }, message = "no registry" }, v[1].Err)
  end)

  it("encodes signed and unsigned LEB128 at the edges", function()
    local v = candid.decode(candid.encode({ candid.int, candid.nat, candid.int, candid.nat64 },
      { math.mininteger, math.maxinteger, -129, -1 }))
    assert.same({ math.mininteger, math.maxinteger, -129, -1, n = 4 }, v)
  end)

  it("raises on a value of the wrong type", function()
    assert.has_error(function() candid.encode({ candid.text }, { 1 }) end)
    assert.has_error(function() candid.encode({ candid.principal }, { "bad" }) end)
  end)
end)
