-- Hex text of bytes, both ways.
local hex = require "fleetsnap.hex"

describe("hex.encode", function()
  it("gives two lowercase digits per byte", function()
    assert.equal("00ff10ab", hex.encode("\0\255\16\171"))
  end)

  it("gives nothing for nothing", function()
    assert.equal("", hex.encode(""))
  end)
end)

describe("hex.encode_list", function()
  it("encodes an array of byte values", function()
    assert.equal("0102ff", hex.encode_list({ 1, 2, 255 }))
  end)
end)

describe("hex.decode", function()
  it("reverses encode, in either case", function()
    assert.equal("\0\255\16\171", hex.decode("00FF10ab"))
  end)
end)
