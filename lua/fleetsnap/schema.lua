--- A small declarative type checker for decoded JSON documents. A reader
-- describes its document with the constructors below and checks it once,
-- right after decoding, so that the code which then uses the document can
-- rely on every field having the type it is used as: bad input is refused
-- with a message naming the file and the field
-- (`m.json: fleet.members[3].source_snapshot.checksum: expected ...`),
-- never a Lua error further on.
--
-- A spec is a plain table: {t = "string"|"integer"|"boolean"|"array"|
-- "object"|"any", ...}. Wrappers mark a field `optional` (the key may be
-- absent) or `nullable` (its value may be null). The checker never raises,
-- whatever the value (it is given decoded JSON, or hand-built tables).
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local principal = require "fleetsnap.principal"

local json = engine.json

local M = {}

-- {=== constructors ===}

local function copy(spec, extra)
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  for k, v in pairs(extra) do s[k] = v end
  return s
end

--- A string. opts: nonempty, one_of (allowed values), what (the
-- description in messages), valid (function(v) -> true, or false and an
-- optional reason), check (function(v) -> nil or why).
function M.string(opts)
  return copy(opts or {}, { t = "string" })
end

--- An integer (a JSON number without fraction or exponent). opts: min,
-- max, one_of, what, check.
function M.integer(opts)
  return copy(opts or {}, { t = "integer" })
end

function M.boolean(opts)
  return copy(opts or {}, { t = "boolean" })
end

--- Any JSON value (a field that is carried, never interpreted).
function M.any()
  return { t = "any" }
end

--- An array of `item`. opts: min (least number of elements), check.
function M.array(item, opts)
  return copy(opts or {}, { t = "array", item = item })
end

--- An object. fields: array of {name, spec}, checked in that order (the
-- first failure is reported, so the order is the document's). opts:
-- strict (an unknown key is refused), check.
function M.object(fields, opts)
  local known = {}
  for _, f in ipairs(fields) do known[f[1]] = true end
  return copy(opts or {}, { t = "object", fields = fields, known = known })
end

--- The same spec, whose key may be absent.
function M.optional(spec)
  return copy(spec, { optional = true })
end

--- The same spec, whose value may be null.
function M.nullable(spec)
  return copy(spec, { nullable = true })
end

--- The connection a backup or restore plan records (docs/formats.md): how
-- the run reached its network, each a non-empty string when present; the
-- runs that continue it take it up (strict: a misspelt key is refused).
function M.connection()
  local fields = {}
  for i, k in ipairs({ "sim", "icp", "environment", "network", "root_key", "identity", "identity_password_file",
    "project_root_override" }) do
    fields[i] = { k, M.optional(M.string({ nonempty = true })) }
  end
  return M.object(fields, { strict = true })
end

local function is_hex64(v)
  return #v == 64 and v:match("^%x+$") ~= nil
end

--- A SHA-256 digest: 64 hex digits of either case (upstream's rule; a
-- producer writes lowercase).
function M.hex64(opts)
  return copy(opts or {}, { t = "string", what = "a SHA-256 hex digest (64 hex digits)",
    valid = is_hex64 })
end

-- The Internet Computer parser's reason goes into the message.
local function is_principal(v)
  local bytes, why = principal.from_text(v)
  return bytes ~= nil, why
end

--- A principal in its textual form.
function M.principal(opts)
  return copy(opts or {}, { t = "string", what = "a principal", valid = is_principal })
end

-- {=== checking ===}

--- The JSON type of a value, as messages name it: "null", "boolean",
-- "integer", "number" (a float), "string", "array", "object" (or the Lua
-- type of something that is not JSON).
function M.type_of(v)
  if v == json.null then return "null" end
  local t = type(v)
  if t == "number" then return math.type(v) == "integer" and "integer" or "number" end
  if t == "table" then
    local kind = json.kind(v)
    if kind then return kind end
    -- Hand-built: keys 1..n make an array, as the encoder sees it.
    return v[1] ~= nil and "array" or "object"
  end
  return t
end

-- A hand-built empty table is either an array or an object (the encoder
-- writes it as an object; a document built in Lua means either).
local function is_kind(v, kind)
  if type(v) ~= "table" then return false end
  local k = json.kind(v)
  if k then return k == kind end
  if next(v) == nil then return true end
  return M.type_of(v) == kind
end

local function show(v)
  if type(v) == "string" then
    local s = v
    if #s > 64 then s = s:sub(1, 61) .. "..." end
    return (string.format("%q", s):gsub("\\\n", "\\n"))
  end
  if math.type(v) then return tostring(v) end
  return M.type_of(v)
end

local function describe(spec)
  local d = spec.what
  if not d then
    if spec.one_of then
      local parts = {}
      for i, x in ipairs(spec.one_of) do parts[i] = show(x) end
      d = #parts == 1 and parts[1] or ("one of " .. table.concat(parts, ", "))
    elseif spec.t == "string" and spec.nonempty then
      d = "a non-empty string"
    elseif spec.t == "integer" and spec.min and spec.max then
      d = string.format("an integer from %d to %d", spec.min, spec.max)
    elseif spec.t == "integer" and spec.min then
      d = string.format("an integer >= %d", spec.min)
    else
      d = spec.t
    end
  end
  if spec.nullable then d = d .. " or null" end
  return d
end

local function join(path, name)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then name = string.format("%q", tostring(name)) end
  return path == "" and name or (path .. "." .. name)
end

local function in_list(list, v)
  for _, x in ipairs(list) do
    if x == v then return true end
  end
  return false
end

-- The path of a value is built only when something is wrong: walking a
-- 10,000-member document would otherwise format a path string for every
-- field it visits. `segs` is a stack of the keys from the root to the
-- value (a string for an object's field, an integer for an array's
-- element), `depth` its height, `base` the path of the root.
local function path_of(base, segs, depth)
  local p = base
  for i = 1, depth do
    local k = segs[i]
    if math.type(k) == "integer" then p = string.format("%s[%d]", p, k) else p = join(p, k) end
  end
  return p
end

local function wrong_type(base, segs, depth, spec, got)
  return path_of(base, segs, depth), "expected " .. describe(spec) .. ", got " .. got
end

local function wrong_value(base, segs, depth, spec, v)
  return path_of(base, segs, depth), "expected " .. describe(spec) .. ", got " .. show(v)
end

-- Checks v against spec; returns nil, or the path and what is wrong.
local function walk(v, spec, base, segs, depth)
  if v == nil then return path_of(base, segs, depth), "missing (expected " .. describe(spec) .. ")" end
  if v == json.null and spec.nullable then return nil end
  local t = spec.t
  if t == "any" then return nil end
  local got = M.type_of(v)
  if t == "string" then
    if got ~= "string" then return wrong_type(base, segs, depth, spec, got) end
    if spec.nonempty and v == "" then return wrong_value(base, segs, depth, spec, v) end
    if spec.one_of and not in_list(spec.one_of, v) then return wrong_value(base, segs, depth, spec, v) end
    if spec.valid then
      local good, reason = spec.valid(v)
      if not good then
        local p, why = wrong_value(base, segs, depth, spec, v)
        return p, reason and (why .. " (" .. reason .. ")") or why
      end
    end
  elseif t == "integer" then
    if got ~= "integer" then return wrong_type(base, segs, depth, spec, got) end
    if spec.one_of and not in_list(spec.one_of, v) then return wrong_value(base, segs, depth, spec, v) end
    if (spec.min and v < spec.min) or (spec.max and v > spec.max) then
      return wrong_value(base, segs, depth, spec, v)
    end
  elseif t == "boolean" then
    if got ~= "boolean" then return wrong_type(base, segs, depth, spec, got) end
  elseif t == "array" then
    if not is_kind(v, "array") then return wrong_type(base, segs, depth, spec, got) end
    if spec.min and #v < spec.min then
      return path_of(base, segs, depth), string.format("expected at least %d element%s, got %d", spec.min,
        spec.min == 1 and "" or "s", #v)
    end
    local item = spec.item
    for i = 1, #v do
      segs[depth + 1] = i
      local p, why = walk(v[i], item, base, segs, depth + 1)
      if p then return p, why end
    end
  elseif t == "object" then
    if not is_kind(v, "object") then return wrong_type(base, segs, depth, spec, got) end
    if spec.strict then
      -- As a strict decoder would: an unknown key before anything else,
      -- the first in byte order so that the message is stable.
      local unknown
      for k in pairs(v) do
        if not spec.known[k] and (unknown == nil or tostring(k) < tostring(unknown)) then unknown = k end
      end
      if unknown ~= nil then return join(path_of(base, segs, depth), unknown), "unknown field" end
    end
    for _, f in ipairs(spec.fields) do
      local name, fspec = f[1], f[2]
      local fv = v[name]
      if not (fv == nil and fspec.optional) then
        segs[depth + 1] = name
        local p, why = walk(fv, fspec, base, segs, depth + 1)
        if p then return p, why end
      end
    end
  else
    return path_of(base, segs, depth), "bad schema: unknown type " .. tostring(t)
  end
  if spec.check then
    local why = spec.check(v)
    if why then return path_of(base, segs, depth), why end
  end
  return nil
end

--- The message of a document problem: "<file>: <path>: <why>" (the
-- document itself is "(document)").
function M.message(file, path, why)
  return string.format("%s: %s: %s", file, (path == nil or path == "") and "(document)" or path, why)
end

--- nil, the message of a document problem, "ECORRUPT": what a reader
-- returns for a document that is not valid.
function M.fail(file, path, why)
  return nil, M.message(file, path, why), "ECORRUPT"
end

--- The registry code of a document that could not be read (the engine's
-- code of fs.read): something other than a regular file of sane size
-- where a document belongs is a corrupt document; anything else is what
-- the file system said.
function M.read_code(code)
  if code == "EUNSAFE" or code == "ETOOBIG" or code == "EISDIR" then return "ECORRUPT" end
  return errors.engine_code(code)
end

--- Checks a decoded document against spec. `file` names it in messages;
-- `path` is the field path of `doc` within its file (for a part checked
-- on its own; default: the document). Returns true, or nil, message,
-- "ECORRUPT", the message naming the file and the first field that is
-- wrong.
function M.check(doc, spec, file, path)
  local p, why = walk(doc, spec, path or "", {}, 0)
  if p then return M.fail(file, p, why) end
  return true
end

return M
