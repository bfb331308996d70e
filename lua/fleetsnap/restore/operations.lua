--- The operations of a restore (or of its undo) and their order: upload
-- every artifact while the fleet runs, stop parents first, (safety
-- snapshot,) load each member only once every target is stopped, (check the
-- loaded data,) start children first once every load is in, verify, and
-- delete the uploaded snapshots. `serial` chains everything into
-- upstream's one-at-a-time order (the benchmark's baseline).
local engine = require "fleetsnap.engine"

local json = engine.json

local M = {}

local PHASES = { "upload", "stop", "snapshot", "load", "verify_data", "settings", "start", "verify", "delete" }

local PREFIX = { upload = "upload", stop = "stop", snapshot = "safety", load = "load", verify_data = "verify-data",
  start = "start", verify = "verify", delete = "delete-uploaded", settings = "settings" }

--- The id of a member's operation of `kind`.
function M.id(kind, target)
  return PREFIX[kind] .. "-" .. target
end

--- Builds the operation list. rows: array (parent-before-child order) of
-- {target, parent (target of the parent, or nil), steps = {kind = true}};
-- serial: one operation at a time.
function M.build(rows, serial)
  local ops = {}
  local function add(kind, row, after)
    local op = { id = M.id(kind, row.target), kind = kind, canister = row.target, after = json.array(after) }
    ops[#ops + 1] = op
    return op.id
  end
  local function all(kind)
    local out = {}
    for _, row in ipairs(rows) do
      if row.steps[kind] then out[#out + 1] = M.id(kind, row.target) end
    end
    return out
  end
  local function with(list, ...)
    local out = {}
    for _, x in ipairs(list) do out[#out + 1] = x end
    for _, x in ipairs({ ... }) do out[#out + 1] = x end
    return out
  end
  local function has(row, kind) return row.steps[kind] and true or false end

  if serial then
    local last
    local function chain(kind, row)
      last = add(kind, row, last and { last } or {})
    end
    for _, row in ipairs(rows) do if has(row, "upload") then chain("upload", row) end end
    for _, row in ipairs(rows) do
      if has(row, "stop") then chain("stop", row) end
      if has(row, "snapshot") then chain("snapshot", row) end
    end
    for _, row in ipairs(rows) do
      if has(row, "load") then chain("load", row) end
      if has(row, "verify_data") then chain("verify_data", row) end
      if has(row, "settings") then chain("settings", row) end
    end
    for i = #rows, 1, -1 do if has(rows[i], "start") then chain("start", rows[i]) end end
    for _, row in ipairs(rows) do if has(row, "verify") then chain("verify", row) end end
    for _, row in ipairs(rows) do if has(row, "delete") then chain("delete", row) end end
    return ops
  end

  -- Each phase waits on one barrier after the phase before it, not on
  -- each of its operations: the graph stays linear in the fleet. `rank`
  -- places a barrier, for humans, right after the phase it closes.
  local rank_of = {}
  local function barrier(name, phase, after)
    if #after == 0 then return {} end
    local op = { id = "barrier-" .. name, kind = "barrier", after = json.array(after) }
    ops[#ops + 1] = op
    rank_of[op.id] = phase
    return { op.id }
  end

  for _, row in ipairs(rows) do if has(row, "upload") then add("upload", row, {}) end end
  local uploaded = barrier("uploaded", "upload", all("upload"))
  local stopped = {}
  for _, row in ipairs(rows) do
    if has(row, "stop") then
      stopped[row.target] = true
      local after = with(uploaded)
      -- Parents first: the top of the restored subtree stops taking
      -- ingress before anything below it.
      if row.parent and stopped[row.parent] then after[#after + 1] = M.id("stop", row.parent) end
      add("stop", row, after)
    end
  end
  for _, row in ipairs(rows) do
    if has(row, "snapshot") then add("snapshot", row, { M.id("stop", row.target) }) end
  end
  -- Nothing is replaced before every target is stopped and every safety
  -- snapshot taken: a failure until then leaves the fleet as it was, so
  -- the restore can still be aborted.
  local quiesced = barrier("stopped", "snapshot", with(all("stop"), table.unpack(all("snapshot"))))
  for _, row in ipairs(rows) do
    if has(row, "load") then
      local after = with(quiesced)
      -- Implied by the stops, but explicit: an upload re-armed after the
      -- stops must still come before its load.
      if has(row, "upload") then after[#after + 1] = M.id("upload", row.target) end
      add("load", row, after)
    end
  end
  for _, row in ipairs(rows) do
    if has(row, "verify_data") then add("verify_data", row, { M.id("load", row.target) }) end
  end
  -- Settings after the load (and its data check), before any start.
  for _, row in ipairs(rows) do
    if has(row, "settings") then
      local after = { M.id("load", row.target) }
      if has(row, "verify_data") then after[#after + 1] = M.id("verify_data", row.target) end
      add("settings", row, after)
    end
  end
  -- Children first, and only once every load (data check, settings) is
  -- in, and every stop (a plan without loads still starts after its stops).
  local loaded = barrier("loaded", "settings",
    with(with(with(all("load"), table.unpack(all("verify_data"))), table.unpack(all("settings"))),
      table.unpack(all("stop"))))
  local children = {}
  for _, row in ipairs(rows) do
    if row.parent and has(row, "start") then
      children[row.parent] = children[row.parent] or {}
      table.insert(children[row.parent], M.id("start", row.target))
    end
  end
  for i = #rows, 1, -1 do
    local row = rows[i]
    if has(row, "start") then add("start", row, with(loaded, table.unpack(children[row.target] or {}))) end
  end
  local started = barrier("started", "start", all("start"))
  for _, row in ipairs(rows) do
    if has(row, "verify") then add("verify", row, with(started)) end
  end
  local verified = barrier("verified", "verify", all("verify"))
  for _, row in ipairs(rows) do
    if has(row, "delete") then add("delete", row, with(verified)) end
  end
  -- Stable order for humans: by phase, then member order.
  local rank, pos = {}, {}
  for i, k in ipairs(PHASES) do rank[k] = i end
  for i, op in ipairs(ops) do pos[op.id] = i end
  local function rank_op(op)
    if op.kind == "barrier" then return rank[rank_of[op.id]] + 0.5 end
    return rank[op.kind]
  end
  table.sort(ops, function(a, b)
    local ra, rb = rank_op(a), rank_op(b)
    if ra ~= rb then return ra < rb end
    return pos[a.id] < pos[b.id]
  end)
  return ops
end

--- The operations of a restore plan under the run options
-- {safety_snapshot, verify_data, keep_uploaded, settings}.
function M.restore(plan, options)
  local rows = {}
  for i, m in ipairs(plan.members) do
    rows[i] = { target = m.target_canister,
      parent = m.parent_target_canister ~= json.null and m.parent_target_canister or nil,
      steps = { upload = true, stop = true, snapshot = options.safety_snapshot or nil, load = true,
        verify_data = options.verify_data or nil, settings = options.settings == "apply" or nil, start = true,
        verify = true,
        delete = not options.keep_uploaded or nil } }
  end
  return M.build(rows, plan.policy.serial)
end

--- The operations of a drill's restore into scratch copies: upload, stop
-- (a new canister runs, a load needs it stopped), load and the data
-- check, and nothing that starts a copy (a started copy of a production
-- canister would run its timers and call the real fleet) or only tidies
-- it (the copy is deleted with its snapshots).
function M.drill(plan)
  local rows = {}
  for i, m in ipairs(plan.members) do
    rows[i] = { target = m.target_canister,
      parent = m.parent_target_canister ~= json.null and m.parent_target_canister or nil,
      steps = { upload = true, stop = true, load = true, verify_data = true } }
  end
  return M.build(rows, plan.policy.serial)
end

return M
