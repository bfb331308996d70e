-- The declarative type checker every document reader uses: types, value
-- rules, optional and nullable fields, strict objects, and the path of the
-- first field that is wrong.
local engine = require "fleetsnap.engine"
local principal = require "fleetsnap.principal"
local schema = require "fleetsnap.schema"

local json = engine.json
local S = schema

local function decode(text) return assert(json.decode(text)) end

describe("schema.type_of", function()
  it("names every JSON type", function()
    assert.equal("null", S.type_of(json.null))
    assert.equal("boolean", S.type_of(true))
    assert.equal("integer", S.type_of(5))
    assert.equal("number", S.type_of(5.5))
    assert.equal("string", S.type_of("x"))
    assert.equal("array", S.type_of(decode("[]")))
    assert.equal("object", S.type_of(decode("{}")))
  end)

  it("tells decoded integers from floats", function()
    assert.equal("number", S.type_of(decode("[1.0]")[1]))
    assert.equal("integer", S.type_of(decode("[1700000000123456789]")[1]))
  end)

  it("reads a hand-built table as the encoder would", function()
    assert.equal("array", S.type_of({ 1, 2 }))
    assert.equal("object", S.type_of({ a = 1 }))
  end)
end)

describe("schema.check", function()
  local spec = S.object({
    { "name", S.string({ nonempty = true }) },
    { "count", S.integer({ min = 1 }) },
    { "members", S.array(S.object({ { "id", S.principal() }, { "sum", S.nullable(S.hex64()) } }), { min = 1 }) },
    { "note", S.optional(S.string()) },
  })
  local function doc()
    return decode(string.format('{"name": "n", "count": 2, "members": [{"id": "%s", "sum": null}, '
      .. '{"id": "%s", "sum": "%s"}]}', principal.canister_id(1), principal.canister_id(2), ("ab"):rep(32)))
  end

  it("accepts a document that fits", function()
    assert.is_true(S.check(doc(), spec, "f.json"))
  end)

  it("names the file and the path of a wrongly typed field", function()
    local d = doc()
    d.members[2].sum = 5
    local ok, msg, code = S.check(d, spec, "f.json")
    assert.is_nil(ok)
    assert.equal("ECORRUPT", code)
    assert.equal("f.json: members[2].sum: expected a SHA-256 hex digest (64 hex digits) or null, got integer", msg)
  end)

  it("names a missing field and what it should have been", function()
    local d = doc()
    d.count = nil
    local _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: count: missing (expected an integer >= 1)", msg)
  end)

  it("lets an optional field be absent but not wrongly typed", function()
    local d = doc()
    assert.is_true(S.check(d, spec, "f.json"))
    d.note = true
    local _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: note: expected string, got boolean", msg)
  end)

  it("refuses null where null is not allowed", function()
    local d = doc()
    d.name = json.null
    local _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: name: expected a non-empty string, got null", msg)
  end)

  it("refuses a value outside the rules, quoting it", function()
    local d = doc()
    d.members[1].id = "nope"
    local _, msg = S.check(d, spec, "f.json")
    assert.equal('f.json: members[1].id: expected a principal, got "nope" (Text is too short.)', msg)
    d = doc()
    d.count = 0
    _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: count: expected an integer >= 1, got 0", msg)
  end)

  it("refuses a float where an integer belongs", function()
    local d = doc()
    d.count = 2.0
    local _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: count: expected an integer >= 1, got number", msg)
  end)

  it("refuses an array that is too short", function()
    local d = doc()
    d.members = json.array({})
    local _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: members: expected at least 1 element, got 0", msg)
  end)

  it("tells an array from an object", function()
    local d = doc()
    d.members = json.object({})
    local _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: members: expected array, got object", msg)
    d = doc()
    d.members[1] = json.array({})
    _, msg = S.check(d, spec, "f.json")
    assert.equal("f.json: members[1]: expected object, got array", msg)
  end)

  it("accepts a hand-built empty table as either", function()
    assert.is_true(S.check({}, S.array(S.integer()), "f"))
    assert.is_true(S.check({}, S.object({}), "f"))
  end)

  it("names the document itself when it is not an object", function()
    local ok, msg = S.check(decode("[1]"), spec, "f.json")
    assert.is_nil(ok)
    assert.equal("f.json: (document): expected object, got array", msg)
  end)

  it("checks one of a set of values", function()
    local s = S.object({ { "kind", S.string({ one_of = { "a", "b" } }) }, { "v", S.integer({ one_of = { 1 },
      what = "version 1" }) } })
    assert.is_true(S.check({ kind = "a", v = 1 }, s, "f"))
    local _, msg = S.check({ kind = "c", v = 1 }, s, "f")
    assert.equal('f: kind: expected one of "a", "b", got "c"', msg)
    _, msg = S.check({ kind = "a", v = 2 }, s, "f")
    assert.equal("f: v: expected version 1, got 2", msg)
  end)

  it("ignores unknown fields unless the object is strict", function()
    local loose = S.object({ { "a", S.integer() } })
    local strict = S.object({ { "a", S.integer() } }, { strict = true })
    assert.is_true(S.check({ a = 1, b = 2 }, loose, "f"))
    local _, msg = S.check({ a = 1, zz = 2, b = 2 }, strict, "f")
    assert.equal("f: b: unknown field", msg)
  end)

  it("quotes a field name that is not a plain word", function()
    local strict = S.object({}, { strict = true })
    local _, msg = S.check({ ["a b"] = 1 }, strict, "f")
    assert.equal('f: "a b": unknown field', msg)
  end)

  it("runs a field's own check after its type", function()
    local s = S.object({ { "p", S.string({ check = function(v) if v:find("%.%.") then return "has .." end end }) } })
    assert.is_true(S.check({ p = "a/b" }, s, "f"))
    local _, msg = S.check({ p = "../b" }, s, "f")
    assert.equal("f: p: has ..", msg)
  end)

  it("prefixes the path of a part checked on its own", function()
    local _, msg = S.check({ method = 5 }, S.object({ { "method", S.string() } }), "f", "operations[3]")
    assert.equal("f: operations[3].method: expected string, got integer", msg)
  end)

  it("never raises, whatever it is given", function()
    local values = { json.null, true, 0, -1, 1.5, "", "x", {}, { 1 }, { a = 1 }, decode("[]"), decode("{}"),
      print, io.stdout }
    for _, v in ipairs(values) do
      for _, s in ipairs({ spec, S.array(spec), S.hex64(), S.principal(), S.nullable(S.integer()) }) do
        local ok, res = pcall(S.check, v, s, "f")
        assert.is_true(ok, tostring(res))
      end
    end
  end)
end)

describe("schema.fail", function()
  it("returns what a reader returns for a document that is not valid", function()
    local ok, msg, code = S.fail("f.json", "a.b[2]", "duplicate x")
    assert.is_nil(ok)
    assert.equal("f.json: a.b[2]: duplicate x", msg)
    assert.equal("ECORRUPT", code)
  end)
end)

describe("schema.read_code", function()
  it("calls a symlink, a directory or an oversized file where a document belongs corrupt", function()
    assert.equal("ECORRUPT", S.read_code("EUNSAFE"))
    assert.equal("ECORRUPT", S.read_code("EISDIR"))
    assert.equal("ECORRUPT", S.read_code("ETOOBIG"))
  end)

  it("keeps what the file system said otherwise", function()
    assert.equal("EIO", S.read_code("EACCES"))
    assert.equal("ENOTFOUND", S.read_code("ENOENT"))
  end)
end)
