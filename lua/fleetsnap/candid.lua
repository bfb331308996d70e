--- Candid binary encoding and decoding (the subset fleetsnap meets: the
-- Canic registry reply and the small arguments of custom calls). Written
-- once, shared by icp-sim and the icp driver.
--
-- Types are tables: `candid.nat64`, `candid.text`, `candid.principal`, ...,
-- `candid.opt(t)`, `candid.vec(t)`, `candid.blob`, `candid.record{{"name", t}, ...}`,
-- `candid.variant{{"Ok", t}, ...}`. Values: records are tables keyed by field
-- name, a variant is a table with one key, an absent `opt` is nil, a blob
-- is a Lua string, a principal is its text, integers are Lua integers.
local principal = require "fleetsnap.principal"

local M = {}

local PRIM = {
  null = 0x7f, bool = 0x7e, nat = 0x7d, int = 0x7c,
  nat8 = 0x7b, nat16 = 0x7a, nat32 = 0x79, nat64 = 0x78,
  int8 = 0x77, int16 = 0x76, int32 = 0x75, int64 = 0x74,
  float32 = 0x73, float64 = 0x72, text = 0x71, reserved = 0x70, empty = 0x6f,
  principal = 0x68,
}
local PRIM_BY_CODE = {}
for name, code in pairs(PRIM) do
  PRIM_BY_CODE[code] = name
  M[name] = { t = name }
end
local OPT, VEC, RECORD, VARIANT = 0x6e, 0x6d, 0x6c, 0x6b

--- The Candid field id of a name: fold(h * 223 + byte) mod 2^32.
function M.hash(name)
  local h = 0
  for i = 1, #name do
    h = (h * 223 + name:byte(i)) & 0xFFFFFFFF
  end
  return h
end

function M.opt(t) return { t = "opt", of = t } end
function M.vec(t) return { t = "vec", of = t } end
M.blob = M.vec(M.nat8)

local function fields_of(list, is_variant)
  local fields = {}
  for i, f in ipairs(list) do
    local name, ty = f[1], f[2]
    if is_variant and ty == nil then
      ty = M.null
    end
    local id = type(name) == "number" and name or M.hash(name)
    fields[i] = { name = name, id = id, type = ty }
  end
  table.sort(fields, function(a, b) return a.id < b.id end)
  for i = 2, #fields do
    assert(fields[i].id ~= fields[i - 1].id, "candid: field hash collision")
  end
  return fields
end

function M.record(list) return { t = "record", fields = fields_of(list, false) } end
function M.variant(list) return { t = "variant", fields = fields_of(list, true) } end

-- {=== LEB128 ===}

local function uleb(n)
  assert(math.type(n) == "integer", "candid: integer expected")
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7 -- logical shift: nat64 values above 2^63 stay unsigned
    if n ~= 0 then b = b | 0x80 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end

local function sleb(n)
  local out = {}
  while true do
    local b = n & 0x7f
    n = n // 128 -- floor division: an arithmetic shift for negative numbers
    if (n == 0 and b & 0x40 == 0) or (n == -1 and b & 0x40 ~= 0) then
      out[#out + 1] = string.char(b)
      return table.concat(out)
    end
    out[#out + 1] = string.char(b | 0x80)
  end
end

-- {=== encode ===}

local function type_key(t)
  if PRIM[t.t] then return t.t end
  if t.t == "opt" or t.t == "vec" then return t.t .. "(" .. type_key(t.of) .. ")" end
  local parts = {}
  for _, f in ipairs(t.fields) do
    parts[#parts + 1] = f.id .. ":" .. type_key(f.type)
  end
  return t.t .. "{" .. table.concat(parts, ";") .. "}"
end

local function type_ref(t, tbl)
  if PRIM[t.t] then
    return sleb(PRIM[t.t] - 0x80)
  end
  local key = type_key(t)
  local idx = tbl.index[key]
  if idx then
    return uleb(idx)
  end
  idx = #tbl.entries
  tbl.index[key] = idx
  tbl.entries[idx + 1] = false -- reserve the slot (recursive children come after)
  local body
  if t.t == "opt" then
    body = sleb(OPT - 0x80) .. type_ref(t.of, tbl)
  elseif t.t == "vec" then
    body = sleb(VEC - 0x80) .. type_ref(t.of, tbl)
  else
    local parts = { sleb((t.t == "record" and RECORD or VARIANT) - 0x80), uleb(#t.fields) }
    for _, f in ipairs(t.fields) do
      parts[#parts + 1] = uleb(f.id) .. type_ref(f.type, tbl)
    end
    body = table.concat(parts)
  end
  tbl.entries[idx + 1] = body
  return uleb(idx)
end

local encode_value

local function encode_prim(t, v, out, path)
  local name = t.t
  if name == "null" or name == "reserved" then return end
  if name == "bool" then
    out[#out + 1] = v and "\1" or "\0"
  elseif name == "nat" then
    assert(math.type(v) == "integer" and v >= 0, "candid: nat expected at " .. path)
    out[#out + 1] = uleb(v)
  elseif name == "int" then
    assert(math.type(v) == "integer", "candid: int expected at " .. path)
    out[#out + 1] = sleb(v)
  elseif name == "text" then
    assert(type(v) == "string", "candid: text expected at " .. path)
    out[#out + 1] = uleb(#v) .. v
  elseif name == "principal" then
    local bytes = principal.from_text(v)
    assert(bytes, "candid: principal expected at " .. path)
    out[#out + 1] = "\1" .. uleb(#bytes) .. bytes
  elseif name == "float32" then
    out[#out + 1] = string.pack("<f", v)
  elseif name == "float64" then
    out[#out + 1] = string.pack("<d", v)
  else
    local signed, bits = name:match("^(%a+)(%d+)$")
    local fmt = "<" .. (signed == "int" and "i" or "I") .. (tonumber(bits) // 8)
    assert(math.type(v) == "integer", "candid: " .. name .. " expected at " .. path)
    out[#out + 1] = string.pack(fmt, v)
  end
end

encode_value = function(t, v, out, path)
  if PRIM[t.t] then
    return encode_prim(t, v, out, path)
  end
  if t.t == "opt" then
    if v == nil then
      out[#out + 1] = "\0"
    else
      out[#out + 1] = "\1"
      encode_value(t.of, v, out, path)
    end
  elseif t.t == "vec" then
    if t.of.t == "nat8" and type(v) == "string" then
      out[#out + 1] = uleb(#v) .. v
      return
    end
    assert(type(v) == "table", "candid: vec expected at " .. path)
    out[#out + 1] = uleb(#v)
    for i, x in ipairs(v) do
      encode_value(t.of, x, out, path .. "[" .. i .. "]")
    end
  elseif t.t == "record" then
    assert(type(v) == "table", "candid: record expected at " .. path)
    for _, f in ipairs(t.fields) do
      local x = v[f.name]
      assert(x ~= nil or f.type.t == "opt" or f.type.t == "null", "candid: missing field " .. tostring(f.name)
        .. " at " .. path)
      encode_value(f.type, x, out, path .. "." .. tostring(f.name))
    end
  else
    assert(type(v) == "table", "candid: variant expected at " .. path)
    for i, f in ipairs(t.fields) do
      if v[f.name] ~= nil then
        out[#out + 1] = uleb(i - 1)
        encode_value(f.type, v[f.name], out, path .. "." .. tostring(f.name))
        return
      end
    end
    error("candid: no known case of the variant at " .. path)
  end
end

--- Encodes values (an array) of the given types (an array) as one Candid
-- message (the "DIDL" bytes).
function M.encode(types, values)
  local tbl = { entries = {}, index = {} }
  local refs = {}
  for i, t in ipairs(types) do
    refs[i] = type_ref(t, tbl)
  end
  local out = {}
  for i, t in ipairs(types) do
    encode_value(t, values[i], out, "arg" .. i)
  end
  return "DIDL" .. uleb(#tbl.entries) .. table.concat(tbl.entries) .. uleb(#types) .. table.concat(refs)
    .. table.concat(out)
end

-- {=== decode ===}

local Reader = {}
Reader.__index = Reader

local function fail(r, msg)
  error({ candid = true, msg = string.format("candid: %s at byte %d", msg, r.pos - 1) }, 0)
end

function Reader:byte()
  if self.pos > #self.s then fail(self, "unexpected end of message") end
  local b = self.s:byte(self.pos)
  self.pos = self.pos + 1
  return b
end

function Reader:bytes(n)
  -- Against what is left, never pos + n: a length near 2^63 from the
  -- message would wrap that sum negative and pass.
  if n < 0 or n > #self.s - self.pos + 1 then fail(self, "unexpected end of message") end
  local b = self.s:sub(self.pos, self.pos + n - 1)
  self.pos = self.pos + n
  return b
end

function Reader:uleb()
  local n, shift = 0, 0
  repeat
    local b = self:byte()
    if shift >= 64 then fail(self, "LEB128 number too large") end
    n = n | ((b & 0x7f) << shift)
    shift = shift + 7
  until b & 0x80 == 0
  return n
end

function Reader:sleb()
  local n, shift = 0, 0
  local b
  repeat
    b = self:byte()
    if shift >= 64 then fail(self, "LEB128 number too large") end
    n = n | ((b & 0x7f) << shift)
    shift = shift + 7
  until b & 0x80 == 0
  if shift < 64 and b & 0x40 ~= 0 then
    n = n | (~0 << shift)
  end
  return n
end

local function read_type(r, code, table_types)
  if code >= 0 then
    if code >= #table_types then fail(r, "type index out of range") end
    return table_types[code + 1]
  end
  local name = PRIM_BY_CODE[code + 0x80]
  if not name then fail(r, "unknown type code " .. code) end
  return M[name]
end

local decode_value

local function decode_prim(r, t)
  local name = t.t
  if name == "null" or name == "reserved" then return nil end
  if name == "bool" then
    local b = r:byte()
    if b > 1 then fail(r, "bad bool") end
    return b == 1
  elseif name == "nat" then
    return r:uleb()
  elseif name == "int" then
    return r:sleb()
  elseif name == "text" then
    return r:bytes(r:uleb())
  elseif name == "principal" then
    if r:byte() ~= 1 then fail(r, "opaque principal reference") end
    local n = r:uleb()
    if n > 29 then fail(r, "principal longer than 29 bytes") end
    return principal.to_text(r:bytes(n))
  elseif name == "float32" then
    return (string.unpack("<f", r:bytes(4)))
  elseif name == "float64" then
    return (string.unpack("<d", r:bytes(8)))
  elseif name == "empty" then
    fail(r, "a value of type empty")
  end
  local signed, bits = name:match("^(%a+)(%d+)$")
  local n = tonumber(bits) // 8
  return (string.unpack("<" .. (signed == "int" and "i" or "I") .. n, r:bytes(n)))
end

decode_value = function(r, t, names, depth)
  if depth > 100 then fail(r, "nesting too deep") end
  if PRIM[t.t] then
    return decode_prim(r, t)
  end
  if t.t == "opt" then
    local tag = r:byte()
    if tag == 0 then return nil end
    if tag ~= 1 then fail(r, "bad opt tag") end
    return decode_value(r, t.of, names, depth + 1)
  elseif t.t == "vec" then
    local n = r:uleb()
    if t.of.t == "nat8" then
      return r:bytes(n)
    end
    if n > #r.s then fail(r, "vector longer than the message") end
    local out = {}
    for i = 1, n do
      out[i] = decode_value(r, t.of, names, depth + 1)
    end
    return out
  elseif t.t == "record" then
    local out = {}
    for _, f in ipairs(t.fields) do
      out[names[f.id] or f.id] = decode_value(r, f.type, names, depth + 1)
    end
    return out
  else
    local i = r:uleb()
    local f = t.fields[i + 1]
    if not f then fail(r, "variant index out of range") end
    local v = decode_value(r, f.type, names, depth + 1)
    if v == nil then v = true end
    return { [names[f.id] or f.id] = v }
  end
end

--- Decodes a Candid message into its values (an array). Field names are
-- restored from `names` (an array of the names you expect); unknown fields
-- are keyed by their numeric id. Returns nil, message, "ECANDID" on
-- malformed input.
function M.decode(bytes, names)
  local by_id = {}
  for _, n in ipairs(names or {}) do
    by_id[M.hash(n)] = n
  end
  local r = setmetatable({ s = bytes, pos = 1 }, Reader)
  local ok, res = pcall(function()
    if r:bytes(4) ~= "DIDL" then fail(r, "missing DIDL magic") end
    local ntypes = r:uleb()
    if ntypes > #bytes then fail(r, "type table longer than the message") end
    local types = {}
    for i = 1, ntypes do
      types[i] = {}
    end
    for i = 1, ntypes do
      local code = r:sleb()
      local t = types[i]
      if code + 0x80 == OPT or code + 0x80 == VEC then
        t.t = code + 0x80 == OPT and "opt" or "vec"
        t.of = read_type(r, r:sleb(), types)
      elseif code + 0x80 == RECORD or code + 0x80 == VARIANT then
        t.t = code + 0x80 == RECORD and "record" or "variant"
        t.fields = {}
        local last = -1
        for j = 1, r:uleb() do
          local id = r:uleb()
          if id <= last then fail(r, "field ids not strictly increasing") end
          last = id
          t.fields[j] = { id = id, name = by_id[id] or id, type = read_type(r, r:sleb(), types) }
        end
      else
        fail(r, "unsupported type constructor " .. code)
      end
    end
    local nargs = r:uleb()
    local arg_types = {}
    for i = 1, nargs do
      arg_types[i] = read_type(r, r:sleb(), types)
    end
    local values = {}
    for i = 1, nargs do
      values[i] = decode_value(r, arg_types[i], by_id, 0)
    end
    if r.pos <= #bytes then fail(r, "trailing bytes after the values") end
    values.n = nargs
    return values
  end)
  if not ok then
    if type(res) == "table" and res.candid then
      return nil, res.msg, "ECANDID"
    end
    error(res, 0)
  end
  return res
end

M._uleb, M._sleb = uleb, sleb

return M
