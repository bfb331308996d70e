--- A restore's canister settings: the backup's record of each member's
-- settings compared with its target's before the first stop (`check`),
-- and the change that puts them back after the load (`apply`).
-- Controllers are compared in place, or on a mapped target when asked
-- (a mapped target's own controllers differ by design), and applied only
-- when asked; the operator's principal is never removed.
local engine = require "fleetsnap.engine"
local canister_settings = require "fleetsnap.canister_settings"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"

local json = engine.json

local M = {}

M.MODES = { check = true, apply = true, ignore = true }

--- The recorded settings of the backup, source canister -> record; nil
-- when the backup recorded none (made before settings travelled).
function M.recorded(doc)
  -- The manifest was proved unchanged since the plan when the restore
  -- was opened; one that cannot be read now is a failure, not "none".
  local man, err, code = manifest.read(doc.backup.dir)
  if not man then errors.raise(code or "EMANIFEST", err) end
  local section = man.doc.fleetsnap
  if type(section) ~= "table" then return nil end
  local out, any = {}, false
  for _, m in ipairs(section.members or {}) do
    if m.settings then
      out[m.canister_id] = m.settings
      any = true
    end
  end
  return any and out or nil
end

-- Whether the check compares this member's controllers.
local function with_controllers(member, options)
  return options.settings_controllers or member.source_canister == member.target_canister
end

local function without_controllers(diffs)
  local out = {}
  for _, d in ipairs(diffs) do
    if d.field ~= "controllers" then out[#out + 1] = d end
  end
  return out
end

--- The check before the first stop. current: target -> settings record
-- (nil when its status had none). Returns {mode, recorded, note?,
-- differences = [{target_canister, source_canister, field, backup, target}]}.
function M.check(doc, recorded, current, options)
  local res = { mode = options.settings, recorded = recorded ~= nil, differences = {} }
  if not recorded then
    res.note = "the backup recorded no canister settings (made before settings were recorded); not checked"
    res.differences = json.array({})
    return json.ordered(res, { "mode", "recorded", "note", "differences" })
  end
  for _, m in ipairs(doc.members) do
    local want, have = recorded[m.source_canister], current[m.target_canister]
    if want and have then
      local diffs = canister_settings.compare(want, have)
      if not with_controllers(m, options) then diffs = without_controllers(diffs) end
      for _, d in ipairs(diffs) do
        res.differences[#res.differences + 1] = json.ordered({ target_canister = m.target_canister,
          source_canister = m.source_canister, field = d.field, backup = d.backup, target = d.target },
          { "target_canister", "source_canister", "field", "backup", "target" })
      end
    end
  end
  res.differences = json.array(res.differences)
  return json.ordered(res, { "mode", "recorded", "note", "differences" })
end

local function set_of(list)
  local s = {}
  for _, x in ipairs(list or {}) do s[x] = true end
  return s
end

--- The change that makes `current` what `want` records, for the driver's
-- settings_update: {nats, visibility, add_controllers, remove_controllers,
-- add_env, remove_env}; nil when nothing differs. opts: controllers
-- (apply them), operator (never removed). Second value: fields left as
-- they are, with why ({field, reason}).
function M.change(want, current, opts)
  local ch, any, not_applied = { nats = {}, visibility = {} }, false, {}
  for _, k in ipairs(canister_settings.NATS) do
    if want[k] ~= current[k] then
      ch.nats[k], any = want[k], true
    end
  end
  for _, k in ipairs(canister_settings.VISIBILITIES) do
    if canister_settings.show(k, want[k]) ~= canister_settings.show(k, current[k]) then
      local v = want[k]
      if v.type == "allowed_viewers" and #(v.viewers or {}) == 0 then
        -- icp sets a viewers list only from at least one principal.
        not_applied[#not_applied + 1] = { field = k, reason = "an empty viewers list cannot be set" }
      else
        ch.visibility[k:match("^(%a+)_")], any = v, true
      end
    end
  end
  if opts.controllers then
    local have, need = set_of(current.controllers), set_of(want.controllers)
    ch.add_controllers, ch.remove_controllers = {}, {}
    for _, p in ipairs(want.controllers) do
      if not have[p] then ch.add_controllers[#ch.add_controllers + 1] = p end
    end
    for _, p in ipairs(current.controllers) do
      if not need[p] and p ~= opts.operator then ch.remove_controllers[#ch.remove_controllers + 1] = p end
    end
    if #ch.add_controllers + #ch.remove_controllers > 0 then any = true end
  end
  local have_env, want_env = {}, {}
  for _, e in ipairs(current.environment_variables) do have_env[e.name] = e.value end
  ch.add_env, ch.remove_env = {}, {}
  for _, e in ipairs(want.environment_variables) do
    want_env[e.name] = true
    if have_env[e.name] ~= e.value then ch.add_env[#ch.add_env + 1] = e.name .. "=" .. e.value end
  end
  for _, e in ipairs(current.environment_variables) do
    if not want_env[e.name] then ch.remove_env[#ch.remove_env + 1] = e.name end
  end
  if #ch.add_env + #ch.remove_env > 0 then any = true end
  return any and ch or nil, not_applied
end

--- Whether `current` already is what the change would make it (the
-- read-back that settles an apply).
function M.applied(want, current, opts)
  local ch = M.change(want, current, opts)
  return ch == nil
end

--- What an apply needs per target: want (target -> the source's
-- recorded settings; absent when none was recorded) and controllers
-- (target -> whether its controllers are applied: only when asked, in
-- place too).
function M.context(doc, options)
  local recorded = M.recorded(doc) or {}
  local ctx = { want = {}, controllers = {} }
  for _, m in ipairs(doc.members) do
    ctx.want[m.target_canister] = recorded[m.source_canister]
    ctx.controllers[m.target_canister] = options.settings_controllers and true or false
  end
  return ctx
end

--- The fields a change sets, in record order (for the receipt).
function M.fields(ch)
  local out = {}
  if not ch then return out end
  if #(ch.add_controllers or {}) + #(ch.remove_controllers or {}) > 0 then out[#out + 1] = "controllers" end
  for _, k in ipairs(canister_settings.NATS) do
    if ch.nats[k] then out[#out + 1] = k end
  end
  for _, k in ipairs(canister_settings.VISIBILITIES) do
    if ch.visibility[k:match("^(%a+)_")] then out[#out + 1] = k end
  end
  if #ch.add_env + #ch.remove_env > 0 then out[#out + 1] = "environment_variables" end
  return out
end

return M
