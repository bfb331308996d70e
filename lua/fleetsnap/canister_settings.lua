--- A canister's settings as fleetsnap records and compares them: a
-- snapshot holds module and memories, not settings, so a backup records
-- what `canister status` reported and a restore compares a target with it.
-- The record is one canonical shape, independent of how icp prints it:
--   controllers            sorted array of principals
--   <nat fields>           decimal strings without separators (a nat has
--                          no upper bound; JSON integers would cap it)
--   <visibility fields>    {type = "controllers"|"public"|"allowed_viewers",
--                          viewers = sorted principals (allowed_viewers only)}
--   environment_variables  array of {name, value}, sorted by name
--   cycles                 decimal string: recorded, never compared (a
--                          canister's balance moves by itself)
local engine = require "fleetsnap.engine"
local schema = require "fleetsnap.schema"

local json = engine.json
local S = schema

local M = {}

--- The nat settings, in icp's status order.
M.NATS = { "compute_allocation", "memory_allocation", "freezing_threshold", "reserved_cycles_limit",
  "wasm_memory_limit", "wasm_memory_threshold", "log_memory_limit" }

M.VISIBILITIES = { "log_visibility", "snapshot_visibility", "status_visibility" }

--- Every compared field, in the order differences are reported.
M.FIELDS = { "controllers" }
for _, k in ipairs(M.NATS) do M.FIELDS[#M.FIELDS + 1] = k end
for _, k in ipairs(M.VISIBILITIES) do M.FIELDS[#M.FIELDS + 1] = k end
M.FIELDS[#M.FIELDS + 1] = "environment_variables"

local KEYS = { "controllers" }
for _, k in ipairs(M.NATS) do KEYS[#KEYS + 1] = k end
for _, k in ipairs(M.VISIBILITIES) do KEYS[#KEYS + 1] = k end
KEYS[#KEYS + 1] = "environment_variables"
KEYS[#KEYS + 1] = "cycles"

local VIS_TYPES = { Controllers = "controllers", Public = "public", AllowedViewers = "allowed_viewers" }

local function nat_text(v)
  if math.type(v) == "integer" and v >= 0 then return tostring(v) end
  if type(v) ~= "string" then return nil end
  local digits = v:gsub("_", "")
  if not digits:match("^%d+$") then return nil end
  return (digits:gsub("^0+(%d)", "%1"))
end

local function sorted_strings(list)
  local out = {}
  for i, p in ipairs(list) do
    if type(p) ~= "string" then return nil end
    out[i] = p
  end
  table.sort(out)
  return out
end

-- A visibility as icp prints it ({type = "Controllers"|"Public"|
-- "AllowedViewers", value}) in the record's terms ({type, viewers}).
local function visibility(v)
  if type(v) ~= "table" then return nil end
  local t = VIS_TYPES[v.type]
  if not t then return nil end
  if t ~= "allowed_viewers" then return { type = t } end
  return { type = t, viewers = type(v.value) == "table" and v.value or {} }
end

-- A record's visibility in its canonical shape.
local function record_visibility(v)
  if type(v) ~= "table" then return nil end
  if v.type == "controllers" or v.type == "public" then return json.ordered({ type = v.type }, { "type" }) end
  if v.type ~= "allowed_viewers" then return nil end
  local viewers = sorted_strings(type(v.viewers) == "table" and v.viewers or {})
  if not viewers then return nil end
  return json.ordered({ type = "allowed_viewers", viewers = json.array(viewers) }, { "type", "viewers" })
end

-- The sorted {name, value} array of a list of variables; nil if one is not.
local function variables(ev)
  local vars = {}
  for i, v in ipairs(ev) do
    if type(v) ~= "table" or type(v.name) ~= "string" or type(v.value) ~= "string" then return nil end
    vars[i] = json.ordered({ name = v.name, value = v.value }, { "name", "value" })
  end
  table.sort(vars, function(a, b) return a.name < b.name end)
  return json.array(vars)
end

--- The canonical record of a record: the same values in the one shape the
-- manifest prints (keys in KEYS order, arrays marked, principals and
-- variables sorted), whether the record was just built from a status or
-- decoded back from a journal (where key order and markers are lost).
-- Equal records give equal bytes, so a resumed backup rebuilds the very
-- manifest it may already have linked. Returns the record, or nil and the
-- field that is not a record's.
function M.canonical(rec)
  if type(rec) ~= "table" then return nil, "settings" end
  local r = {}
  local controllers = type(rec.controllers) == "table" and sorted_strings(rec.controllers)
  if not controllers then return nil, "controllers" end
  r.controllers = json.array(controllers)
  for _, k in ipairs(M.NATS) do
    r[k] = nat_text(rec[k])
    if not r[k] then return nil, k end
  end
  for _, k in ipairs(M.VISIBILITIES) do
    r[k] = record_visibility(rec[k])
    if not r[k] then return nil, k end
  end
  r.environment_variables = type(rec.environment_variables) == "table" and variables(rec.environment_variables)
  if not r.environment_variables then return nil, "environment_variables" end
  if rec.cycles == nil or rec.cycles == json.null then
    r.cycles = json.null
  else
    r.cycles = nat_text(rec.cycles)
    if not r.cycles then return nil, "cycles" end
  end
  return json.ordered(r, KEYS)
end

--- The record of a status's settings (icp 1.5.0's `canister status
-- --json`: its `settings` object and its `cycles`). Returns the record, or
-- nil and the field that did not parse.
function M.from_status(settings, cycles)
  if type(settings) ~= "table" then return nil, "settings" end
  local r = { controllers = settings.controllers, cycles = nat_text(cycles) or json.null }
  for _, k in ipairs(M.NATS) do r[k] = settings[k] end
  for _, k in ipairs(M.VISIBILITIES) do
    r[k] = visibility(settings[k])
    if not r[k] then return nil, k end
  end
  -- icp prints the Candid vec as an array; null (older icp-sim) is none.
  local ev = settings.environment_variables
  if ev ~= nil and ev ~= json.null and type(ev) ~= "table" then return nil, "environment_variables" end
  r.environment_variables = type(ev) == "table" and ev or {}
  return M.canonical(r)
end

-- The text of a field's value, for messages and the JSON differences.
function M.show(field, v)
  if v == nil or v == json.null then return "(none)" end
  if field == "controllers" then return #v == 0 and "(none)" or table.concat(v, ", ") end
  if field == "environment_variables" then
    local parts = {}
    for i, e in ipairs(v) do parts[i] = e.name .. "=" .. e.value end
    return #parts == 0 and "(none)" or table.concat(parts, ", ")
  end
  if type(v) == "table" then
    if v.type == "allowed_viewers" then return "allowed viewers " .. table.concat(v.viewers or {}, ", ") end
    return v.type
  end
  return tostring(v)
end

local function same(field, a, b)
  return M.show(field, a) == M.show(field, b)
end

--- The differences of a target's settings from the recorded ones, in
-- FIELDS order (cycles never): array of {field, backup, target} (texts).
function M.compare(recorded, current)
  local out = {}
  for _, f in ipairs(M.FIELDS) do
    if not same(f, recorded[f], current[f]) then
      out[#out + 1] = json.ordered({ field = f, backup = M.show(f, recorded[f]), target = M.show(f, current[f]) },
        { "field", "backup", "target" })
    end
  end
  return out
end

local VISIBILITY = S.object({
  { "type", S.string({ one_of = { "controllers", "public", "allowed_viewers" } }) },
  { "viewers", S.optional(S.array(S.principal())) },
})

--- The record's schema (a manifest member's `settings`).
M.SCHEMA = (function()
  local fields = { { "controllers", S.array(S.principal()) } }
  for _, k in ipairs(M.NATS) do fields[#fields + 1] = { k, S.string({ check = function(v)
    if not v:match("^%d+$") then return "not a decimal nat" end
  end }) } end
  for _, k in ipairs(M.VISIBILITIES) do fields[#fields + 1] = { k, VISIBILITY } end
  fields[#fields + 1] = { "environment_variables", S.array(S.object({ { "name", S.string() },
    { "value", S.string() } })) }
  fields[#fields + 1] = { "cycles", S.nullable(S.string()) }
  return S.object(fields)
end)()

return M
