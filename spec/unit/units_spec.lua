local units = require "fleetsnap.units"
local engine = require "fleetsnap.engine"

describe("units.bytes", function()
  it("prints bytes under 1 KiB as whole bytes", function()
    assert.equal("512 B", units.bytes(512))
    assert.equal("0 B", units.bytes(0))
  end)

  it("prints binary units with one decimal", function()
    assert.equal("1.5 KiB", units.bytes(1536))
    assert.equal("48.0 MiB", units.bytes(48 * 1024 * 1024))
    assert.equal("1.5 GiB", units.bytes(3 * 512 * 1024 * 1024))
  end)

  it("moves to the next unit rather than print 1024.0", function()
    assert.equal("1.0 MiB", units.bytes(1024 * 1024 - 1))
  end)

  it("prints an unknown size as -", function()
    assert.equal("-", units.bytes(nil))
    assert.equal("-", units.bytes(engine.json.null))
  end)
end)

describe("units.bytes_change", function()
  it("signs a growth and a shrink, and prints no change as 0 B", function()
    assert.equal("+1.0 MiB", units.bytes_change(0, 1024 * 1024))
    assert.equal("-512 B", units.bytes_change(1024, 512))
    assert.equal("0 B", units.bytes_change(7, 7))
  end)
end)

describe("units.duration", function()
  it("prints seconds with milliseconds under a minute", function()
    assert.equal("0.445 s", units.duration(445000000))
  end)

  it("prints minutes and seconds, then hours and minutes", function()
    assert.equal("2 min 3 s", units.duration(123 * 1000000000))
    assert.equal("1 h 2 min", units.duration(3720 * 1000000000))
  end)

  it("prints an unknown duration as n/a", function()
    assert.equal("n/a", units.duration(engine.json.null))
  end)
end)

describe("units.utc", function()
  it("prints RFC 3339 UTC with seconds", function()
    assert.equal("2026-11-30T17:02:51Z", units.utc(1796058171 * 1000000000))
  end)
end)

describe("units.table", function()
  it("pads every column but the last to its widest cell", function()
    assert.equal("id    size\nlong  1 B\n", units.table({ { "id", "size" }, { "long", "1 B" } }))
  end)
end)
