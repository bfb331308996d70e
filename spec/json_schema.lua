--- A JSON Schema checker for the specs: the subset docs/schemas/ uses
-- (type, properties, required, additionalProperties, items, enum, const,
-- minimum, pattern, format date-time, anyOf, oneOf, $ref to "#/$defs/..."), over documents
-- decoded by fleetsnap.engine.json (json.null for null, json.array marks
-- arrays; an empty object and an empty array differ by that mark).
local engine = require "fleetsnap.engine"

local json = engine.json

local M = {}

-- The decoder marks each table with its JSON kind (json.kind).
local function is_array(v)
  return type(v) == "table" and json.kind(v) == "array"
end

local function type_of(v)
  if v == json.null then return "null" end
  local t = type(v)
  if t == "string" or t == "boolean" then return t end
  if t == "number" then return math.type(v) == "integer" and "integer" or "number" end
  if t == "table" then return is_array(v) and "array" or "object" end
  return t
end

local function type_ok(v, want)
  local got = type_of(v)
  if got == want then return true end
  return want == "number" and got == "integer"
end

local check

-- Errors are collected as "path: why" strings.
local function fail(errs, path, why)
  errs[#errs + 1] = (path == "" and "$" or path) .. ": " .. why
end

local function resolve(root, ref)
  local name = ref:match("^#/%$defs/(.+)$")
  assert(name and root["$defs"] and root["$defs"][name], "unresolvable $ref " .. ref)
  return root["$defs"][name]
end

function check(root, s, v, path, errs)
  if s["$ref"] then return check(root, resolve(root, s["$ref"]), v, path, errs) end
  if s.type then
    local types = type(s.type) == "table" and s.type or { s.type }
    local ok = false
    for _, t in ipairs(types) do ok = ok or type_ok(v, t) end
    if not ok then
      return fail(errs, path, "want " .. table.concat(types, "|") .. ", got " .. type_of(v))
    end
  end
  if s.const ~= nil and v ~= s.const then fail(errs, path, "want " .. tostring(s.const) .. ", got " .. tostring(v)) end
  if s.enum then
    local ok = false
    for _, e in ipairs(s.enum) do ok = ok or e == v end
    if not ok then fail(errs, path, "not one of the allowed values: " .. tostring(v)) end
  end
  if s.minimum and type(v) == "number" and v < s.minimum then fail(errs, path, "below " .. s.minimum) end
  if s.format == "date-time" and type(v) == "string"
    and not v:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.?%d*Z$") then
    fail(errs, path, "not an RFC 3339 UTC time: " .. v)
  end
  -- The schemas' patterns are plain enough to mean the same in ECMA
  -- regex and Lua patterns (anchors, classes, +).
  if s.pattern and type(v) == "string" and not v:match(s.pattern) then
    fail(errs, path, "does not match " .. s.pattern .. ": " .. v)
  end
  local kind = type_of(v)
  if kind == "object" then
    for _, k in ipairs(s.required or {}) do
      if v[k] == nil then fail(errs, path, "missing " .. k) end
    end
    for k, item in pairs(v) do
      local sub = s.properties and s.properties[k]
      if sub then
        check(root, sub, item, path .. "." .. k, errs)
      elseif s.additionalProperties == false then
        fail(errs, path, "unexpected key " .. tostring(k))
      elseif type(s.additionalProperties) == "table" then
        check(root, s.additionalProperties, item, path .. "." .. k, errs)
      end
    end
  elseif kind == "array" and s.items then
    for i, item in ipairs(v) do check(root, s.items, item, path .. "[" .. (i - 1) .. "]", errs) end
  end
  for _, key in ipairs({ "anyOf", "oneOf" }) do
    if s[key] then
      local passing = 0
      for _, alt in ipairs(s[key]) do
        local sub = {}
        check(root, alt, v, path, sub)
        if #sub == 0 then passing = passing + 1 end
      end
      if passing == 0 or (key == "oneOf" and passing > 1) then
        fail(errs, path, string.format("%s: %d alternatives match", key, passing))
      end
    end
  end
end

--- Checks document v against schema (a decoded schema document). Returns
-- true, or false and the list of "path: why" failures.
function M.validate(schema, v)
  local errs = {}
  check(schema, schema, v, "", errs)
  if #errs > 0 then return false, errs end
  return true
end

--- Reads and decodes a schema file.
function M.load(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return assert(json.decode(text, { name = path }))
end

return M
