local principal = require "fleetsnap.principal"

describe("principal.to_text", function()
  it("encodes the well-known ids", function()
    assert.equal("aaaaa-aa", principal.to_text(""))
    assert.equal("2vxsx-fae", principal.to_text("\4"))
  end)
end)

describe("principal.canister_id", function()
  it("forms canister ids from their index", function()
    assert.equal("rwlgt-iiaaa-aaaaa-aaaaa-cai", principal.canister_id(0))
    assert.equal("rrkah-fqaaa-aaaaa-aaaaq-cai", principal.canister_id(1))
    assert.equal("ryjl3-tyaaa-aaaaa-aaaba-cai", principal.canister_id(2))
    assert.equal("qaa6y-5yaaa-aaaaa-aaafa-cai", principal.canister_id(10))
  end)
end)

describe("principal.from_text", function()
  it("accepts canonical text and any case", function()
    assert.equal(principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai"), principal.from_text("RYJL3-TYAAA-AAAAA-AAABA-CAI"))
    assert.is_truthy(principal.from_text("t3qpl-t2or5-mj2lj-kevse-kfotu-zwfks-lyj6a-hnbfx-wv7if-ipats-lae"))
  end)

  local cases = {
    { "not base32", "bad!", "Text must be in valid Base32 encoding." },
    { "an impossible length", "abc", "Text must be in valid Base32 encoding." },
    { "too short", "aaaa", "Text is too short." },
    { "a bad checksum", "ryjl3-tyaaa-aaaaa-aaaba-caa", "CRC32 check sequence doesn't match" },
    { "missing dashes", "ryjl3tyaaaaaaaaaaabacai", 'expected "ryjl3-tyaaa-aaaaa-aaaba-cai"' },
    { "non-canonical trailing bits", "ryjl3-tyaaa-aaaaa-aaaba-caj", "Text should be separated by - (dash)" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1], function()
      local bytes, reason = principal.from_text(c[2])
      assert.is_nil(bytes)
      assert.truthy(reason:find(c[3], 1, true), reason)
    end)
  end
end)

describe("principal.parse", function()
  it("returns the canonical text", function()
    assert.equal("ryjl3-tyaaa-aaaaa-aaaba-cai", principal.parse("RYJL3-TYAAA-AAAAA-AAABA-CAI"))
  end)

  it("names the input and the field on failure", function()
    local p, msg, code = principal.parse("no!pe", "--member")
    assert.is_nil(p)
    assert.equal("EPRINCIPAL", code)
    assert.equal([[--member "no!pe" is not a valid principal: Text must be in valid Base32 encoding.]], msg)
  end)
end)

describe("principal.crc32", function()
  it("is IEEE CRC-32", function()
    assert.equal(0xCBF43926, principal.crc32("123456789"))
  end)
end)
