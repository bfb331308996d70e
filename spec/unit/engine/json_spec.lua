local engine = require "fleetsnap.engine"
local json = engine.json

describe("engine.json.decode", function()
  it("keeps u64 nanosecond timestamps exact as integers", function()
    local v = json.decode('{"t": 1700000000123456789}')
    assert.equal(1700000000123456789, v.t)
    assert.is_true(math.type(v.t) == "integer")
    assert.equal('{"t":1700000000123456789}', json.encode(v))
  end)

  it("decodes non-integers and out-of-range integers as floats", function()
    local v = json.decode("[1.5, 1e3, 9223372036854775808, -0.0]")
    assert.equal("float", math.type(v[1]))
    assert.equal(1000.0, v[2])
    assert.equal("float", math.type(v[3]))
  end)

  it("decodes null to the sentinel", function()
    local v = json.decode('{"a": null, "b": [null]}')
    assert.equal(json.null, v.a)
    assert.equal(json.null, v.b[1])
  end)

  it("keeps the kind of empty arrays and objects", function()
    assert.equal("[]", json.encode(json.decode("[]")))
    assert.equal("{}", json.encode(json.decode("{}")))
    assert.equal('{"a":[],"b":{}}', json.encode(json.decode('{"b":{},"a":[]}')))
    assert.equal("array", json.kind(json.decode("[]")))
    assert.equal("object", json.kind(json.decode("{}")))
  end)

  it("decodes escapes and surrogate pairs to UTF-8", function()
    assert.equal("é😀\n/", json.decode('"\\u00e9\\ud83d\\ude00\\n\\/"'))
  end)

  local refused = {
    { "trailing commas", "[1,]", "trailing comma" },
    { "duplicate keys", '{"a":1,"a":2}', "duplicate key" },
    { "trailing garbage", "{} x", "trailing characters" },
    { "NaN", "[NaN]", "NaN and Infinity" },
    { "Infinity", "[-Infinity]", "NaN and Infinity" },
    { "invalid UTF-8", '"\255"', "invalid UTF-8" },
    { "leading zeros", "[01]", "expected" },
    { "single quotes", "['a']", "unexpected character" },
    { "comments", "[1 /* x */]", "expected" },
  }
  for _, case in ipairs(refused) do
    it("refuses " .. case[1] .. " with EJSON and a position", function()
      local v, msg, code = json.decode(case[2])
      assert.is_nil(v)
      assert.equal("EJSON", code)
      assert.matches("^line %d+, column %d+: ", msg)
      assert.truthy(msg:find(case[3], 1, true), msg)
    end)
  end

  it("reports line and column of the error", function()
    local _, msg = json.decode('{\n  "a": 1,\n  "b": tru\n}')
    assert.equal("line 3, column 8: unexpected character", msg)
  end)

  it("refuses nesting deeper than 128", function()
    local ok = string.rep("[", 128) .. string.rep("]", 128)
    assert.is_table(json.decode(ok))
    local v, msg, code = json.decode(string.rep("[", 129) .. string.rep("]", 129))
    assert.is_nil(v)
    assert.equal("EJSON", code)
    assert.matches("nesting deeper than 128", msg)
  end)

  it("refuses documents over the size limit with ETOOBIG", function()
    local v, msg, code = json.decode("[1, 2, 3]", { max_bytes = 4 })
    assert.is_nil(v)
    assert.equal("ETOOBIG", code)
    assert.matches("exceeds the limit of 4 bytes", msg)
  end)

  it("names the document in messages when given a name", function()
    local _, msg = json.decode("{", { name = "plan.json" })
    assert.matches("^plan%.json: line 1", msg)
  end)

  it("raises on an unknown option", function()
    assert.has_error(function() json.decode("1", { bogus = 1 }) end, "unknown option 'bogus'")
  end)
end)

describe("engine.json.encode", function()
  it("sorts keys bytewise", function()
    assert.equal('{"A":1,"B":2,"a":3,"b":4}', json.encode({ b = 4, a = 3, B = 2, A = 1 }))
  end)

  it("produces the same bytes on every call", function()
    local doc = { z = { 3, 2, 1 }, m = { y = true, x = false }, a = "s" }
    local first = json.encode(doc)
    for _ = 1, 20 do
      assert.equal(first, json.encode(doc))
    end
  end)

  it("writes integers exactly and floats with a fractional part", function()
    assert.equal("[123456789012345,1.0,0.1,-2.5,1e+300]", json.encode({ 123456789012345, 1.0, 0.1, -2.5, 1e300 }))
  end)

  it("round-trips floats to the same value", function()
    for _, x in ipairs({ 0.1, 1 / 3, 2 ^ 53 + 0.0, 1e-310, 123.456 }) do
      assert.equal(x, json.decode(json.encode(x)))
    end
  end)

  it("encodes an unmarked empty table as an object", function()
    assert.equal("{}", json.encode({}))
  end)

  it("escapes quotes, backslashes and control characters", function()
    assert.equal('"a\\"b\\\\c\\n\\u0001"', json.encode('a"b\\c\n\1'))
  end)

  it("pretty-prints with two spaces", function()
    assert.equal('{\n  "a": [\n    1,\n    2\n  ],\n  "b": {},\n  "c": []\n}',
      json.encode({ a = { 1, 2 }, b = {}, c = json.array({}) }, { pretty = true }))
  end)

  it("raises on values that are not JSON", function()
    assert.has_error(function() json.encode({ f = print }) end)
    assert.has_error(function() json.encode(0 / 0) end, "json.encode: NaN and infinity are not JSON")
    assert.has_error(function() json.encode(math.huge) end)
    assert.has_error(function() json.encode("\255") end, "json.encode: string is not valid UTF-8")
    assert.has_error(function() json.encode({ 1, 2, x = 3 }) end, "json.encode: table mixes array and object keys")
    assert.has_error(function() json.encode({ [1] = 1, [3] = 3 }) end)
    assert.has_error(function() json.encode({ [true] = 1 }) end)
  end)

  it("raises on cycles instead of looping", function()
    local t = {}
    t.self = t
    assert.has_error(function() json.encode(t) end)
  end)
end)

describe("engine.json.array / object", function()
  it("mark empty tables", function()
    assert.equal("[]", json.encode(json.array({})))
    assert.equal("{}", json.encode(json.object({})))
  end)

  it("return the table itself", function()
    local t = {}
    assert.equal(t, json.array(t))
  end)

  it("raise on a table with a foreign metatable", function()
    local t = setmetatable({}, {})
    assert.has_error(function() json.array(t) end, "json: table already has a metatable")
  end)
end)

describe("engine.json.ordered", function()
  it("fixes the key order of one object, extra keys after in canonical order", function()
    local t = json.ordered({ id = 1, status = "Running", z = 0, a = 9 }, { "status", "id" })
    assert.equal('{"status":"Running","id":1,"a":9,"z":0}', json.encode(t))
  end)

  it("skips listed keys that are absent", function()
    local t = json.ordered({ b = 2 }, { "a", "b" })
    assert.equal('{"b":2}', json.encode(t))
  end)

  it("applies to the pretty form", function()
    local t = json.ordered({ b = 1, a = 2 }, { "b", "a" })
    assert.equal('{\n  "b": 1,\n  "a": 2\n}', json.encode(t, { pretty = true }))
  end)
end)
