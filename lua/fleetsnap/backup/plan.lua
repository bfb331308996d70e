--- A backup's plan: discovery (the root's registry, an inventory file, or
-- the policy's own), selection, the policy's operations, persisted as
-- fleetsnap-plan.json before any effect; and reading it back.
local discovery = require "fleetsnap.discovery"
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local fleet_mod = require "fleetsnap.fleet"
local hex = require "fleetsnap.hex"
local policy_mod = require "fleetsnap.policy"
local schema = require "fleetsnap.schema"

local json, fs = engine.json, engine.fs

local M = {}

M.FILE = "fleetsnap-plan.json"
M.VERSION = 1

local raise = errors.raise

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local b = f:read(n)
  f:close()
  return hex.encode(b)
end

--- Discovery as configured: an inventory file, or the root's registry.
function M.discover(driver, opts)
  if opts.inventory then
    return fleet_mod.from_inventory(opts.inventory)
  end
  if not opts.root then
    return nil, "no root: the root principal (or an inventory file) is needed for discovery", "EUSAGE"
  end
  return fleet_mod.from_registry(driver, opts.root)
end

local function target_doc(m)
  return json.ordered({ canister_id = m.canister_id, role = m.role, parent = m.parent or json.null, depth = m.depth,
    module_hash = m.module_hash or json.null }, { "canister_id", "role", "parent", "depth", "module_hash" })
end

--- Builds the plan document (not yet written).
function M.build(driver, opts)
  local policy, perr, pcode = policy_mod.load(opts.policy or "consistent")
  if not policy then raise(pcode or "EPOLICY", perr, policy_mod.missing_step(pcode)) end
  local fleet, ferr, fcode, queries
  if type(policy.discover) == "function" then
    -- The policy's own discovery, given what the registry says (if anything).
    local registry = (opts.root or opts.inventory) and M.discover(driver, opts) or nil
    local raw = nil
    if registry then
      raw = {}
      for i, m in ipairs(registry.members) do
        raw[i] = { canister_id = m.canister_id, role = m.role, parent = m.parent, module_hash = m.module_hash }
      end
    end
    local ctx, state = discovery.context(driver, opts.root, raw)
    local res, derr, dcode = policy_mod.discover(policy, ctx)
    -- A query that failed is the fleet's error (a reject, a bad reply),
    -- not the policy's, unless the script caught it and went on.
    if not res and state.failure then errors.raise(state.failure.code, state.failure.message, state.failure) end
    if not res then raise(dcode or "EPOLICY", derr) end
    queries = {}
    for i, q in ipairs(state.queries) do
      queries[i] = json.ordered(q, { "canister", "method", "args", "reply_sha256" })
    end
    fleet, ferr, fcode = fleet_mod.build(res.root, res.members, "policy " .. policy.name .. " discovery")
  else
    fleet, ferr, fcode = M.discover(driver, opts)
  end
  if not fleet then raise(fcode or "EFLEET", ferr) end
  local selection, serr, scode = fleet_mod.select(fleet, opts)
  if not selection then raise(scode, serr) end
  local checks, cerr = policy_mod.checks(policy, selection)
  if not checks then raise("EPOLICY", cerr) end
  local ops, oerr = policy_mod.build(policy, selection)
  if not ops then raise("EPOLICY", oerr) end
  local hash, rows = fleet_mod.scope_hash(fleet, selection)
  local now = engine.realtime_ns()
  local stamp = os.date("!%Y%m%d-%H%M%S", now // 1000000000)
  local id = opts.backup_id or string.format("%s-%s-%s", fleet.root:sub(1, 5), stamp, random_hex(2))
  local targets, operations = {}, {}
  for i, m in ipairs(selection) do
    targets[i] = target_doc(m)
    if checks[m.canister_id] then targets[i].checks = json.array(checks[m.canister_id]) end
  end
  for i, op in ipairs(ops) do
    local o = { id = op.id, kind = op.kind, canister = op.canister, after = json.array(op.after) }
    if op.kind == "call" then
      o.method, o.args, o.query, o.idempotent = op.method, op.args, op.query, op.idempotent
    end
    operations[i] = o
  end
  return {
    format = "fleetsnap-plan",
    plan_version = M.VERSION,
    backup_id = id,
    created_ns = now,
    root = fleet.root,
    discovery = type(policy.discover) == "function" and { policy = policy.name, root = opts.root,
      inventory = opts.inventory, queries = json.array(queries) }
      or opts.inventory and { inventory = opts.inventory } or { registry = fleet.root },
    target = { environment = driver.environment, network = driver.network },
    -- How the run reached the network (the CLI's settings), for the runs
    -- that continue it: resume takes it when no flag says otherwise.
    connection = opts.connection,
    scope = {
      kind = opts.subtree and "subtree" or opts.member and "member" or "fleet",
      selector = opts.subtree or opts.member,
      include_root = opts.include_root or false,
      topology_hash = hash,
      topology_hash_input = "fleetsnap-scope:sorted(pid,parent_pid,role,module_hash) of the selection and its "
        .. "ancestors",
      rows = json.array(rows),
    },
    policy = { name = policy.name, summary = policy.summary, sha256 = policy.sha256,
      leaves_stopped = policy.leaves_stopped or false },
    options = {
      concurrency = opts.concurrency or policy.concurrency or 16,
      downloads = opts.downloads or policy.downloads or 4,
      keep_on_canister = opts.keep_on_canister or 2,
      snapshot_limit = opts.snapshot_limit or 10,
    },
    targets = json.array(targets),
    operations = json.array(operations),
  }
end

-- {=== reading ===}

local S = schema
local NONEMPTY = S.string({ nonempty = true })
local OPTIONAL_STRING = S.optional(S.nullable(S.string()))

-- The operation kinds the runner executes. A barrier is on no canister.
M.KINDS = { "stop", "snapshot", "start", "download", "call", "barrier" }

-- What a call operation carries besides the common fields.
local CALL = S.object({
  { "method", NONEMPTY },
  { "args", S.string() },
  { "query", S.boolean() },
  { "idempotent", S.boolean() },
})

-- Every field the runner, resume, status and restore planning use, with
-- the type they use it as. Unknown keys are ignored (a plan is read by the
-- version that wrote it; plan_version marks what is not compatible).
local SCHEMA = S.object({
  { "format", S.string({ one_of = { "fleetsnap-plan" } }) },
  { "plan_version", S.integer({ one_of = { M.VERSION }, what = "version " .. M.VERSION }) },
  { "backup_id", NONEMPTY },
  { "created_ns", S.integer({ min = 0 }) },
  { "root", S.principal() },
  { "discovery", S.object({ { "registry", OPTIONAL_STRING }, { "inventory", OPTIONAL_STRING },
    { "policy", OPTIONAL_STRING }, { "root", OPTIONAL_STRING },
    -- The policy's queries (older plans have none: nothing to ask again).
    { "queries", S.optional(S.array(S.object({
      { "canister", S.principal() },
      { "method", NONEMPTY },
      { "args", S.string() },
      { "reply_sha256", S.hex64() },
    }))) } }) },
  { "target", S.object({ { "environment", OPTIONAL_STRING }, { "network", OPTIONAL_STRING } }) },
  { "connection", S.optional(S.connection()) },
  { "scope", S.object({
    { "kind", S.string({ one_of = { "fleet", "subtree", "member" } }) },
    { "selector", OPTIONAL_STRING },
    { "include_root", S.boolean() },
    { "topology_hash", S.hex64() },
    { "topology_hash_input", S.string() },
    { "rows", S.array(S.string()) },
  }) },
  { "policy", S.object({ { "name", NONEMPTY }, { "summary", OPTIONAL_STRING }, { "sha256", S.hex64() },
    { "leaves_stopped", S.boolean() } }) },
  { "options", S.object({
    { "concurrency", S.integer({ min = 1 }) },
    { "downloads", S.integer({ min = 1 }) },
    { "keep_on_canister", S.integer({ min = 0 }) },
    { "snapshot_limit", S.integer({ min = 1 }) },
  }) },
  { "targets", S.array(S.object({
    { "canister_id", S.principal() },
    { "role", NONEMPTY },
    { "parent", S.nullable(S.principal()) },
    { "depth", S.integer({ min = 0 }) },
    { "module_hash", S.nullable(S.string()) },
    { "checks", S.optional(S.array(S.object({ { "method", NONEMPTY }, { "args", S.string() },
      { "expect_hex", S.string({ what = "hex digits", valid = function(v) return v:match("^%x*$") ~= nil end }) },
    }))) },
  }), { min = 1 }) },
  { "operations", S.array(S.object({
    { "id", NONEMPTY },
    { "kind", S.string({ one_of = M.KINDS }) },
    -- Every kind but the barrier has one (check_graph).
    { "canister", S.optional(S.principal()) },
    { "after", S.array(NONEMPTY) },
  }), { min = 1 }) },
})

-- What the runner takes for granted beyond types: operations found by id
-- (`<kind>-<canister>` for the lifecycle and download kinds, `barrier-<name>`
-- on no canister for a barrier), dependencies
-- that exist and end, every target stopped, snapshotted and downloaded.
-- Returns nil, or the field path and what is wrong.
local function check_graph(doc)
  local targets = {}
  for i, t in ipairs(doc.targets) do
    if targets[t.canister_id] then
      return string.format("targets[%d].canister_id", i), "duplicate " .. t.canister_id
    end
    targets[t.canister_id] = {}
  end
  local by_id = {}
  for i, op in ipairs(doc.operations) do
    local f = string.format("operations[%d]", i)
    if by_id[op.id] then return f .. ".id", "duplicate " .. op.id end
    by_id[op.id] = op
    if op.kind == "barrier" then
      if op.canister ~= nil then return f .. ".canister", "a barrier is on no canister" end
      if not op.id:match("^barrier%-[%w_%-]+$") then
        return f .. ".id", string.format("expected \"barrier-<name>\", got %q", op.id)
      end
    elseif op.canister == nil then
      return f .. ".canister", "missing (a " .. op.kind .. " is on a canister)"
    elseif not targets[op.canister] then
      return f .. ".canister", op.canister .. " is not a target"
    elseif op.kind ~= "call" then
      if op.id ~= op.kind .. "-" .. op.canister then
        return f .. ".id", string.format("expected %q, got %q", op.kind .. "-" .. op.canister, op.id)
      end
      targets[op.canister][op.kind] = true
    end
  end
  for i, op in ipairs(doc.operations) do
    for k, a in ipairs(op.after) do
      if not by_id[a] then return string.format("operations[%d].after[%d]", i, k), "unknown operation " .. a end
    end
  end
  -- Kahn's order: an operation on a dependency cycle would never run.
  local waiting, dependents, ready = {}, {}, {}
  for _, op in ipairs(doc.operations) do
    waiting[op.id] = #op.after
    for _, a in ipairs(op.after) do
      dependents[a] = dependents[a] or {}
      table.insert(dependents[a], op.id)
    end
    if #op.after == 0 then ready[#ready + 1] = op.id end
  end
  local done = 0
  while #ready > 0 do
    local id = table.remove(ready)
    done = done + 1
    for _, d in ipairs(dependents[id] or {}) do
      waiting[d] = waiting[d] - 1
      if waiting[d] == 0 then ready[#ready + 1] = d end
    end
  end
  if done < #doc.operations then
    for i, op in ipairs(doc.operations) do
      if waiting[op.id] > 0 then
        return string.format("operations[%d].after", i), "a dependency cycle (or an operation waiting on one)"
      end
    end
  end
  for i, t in ipairs(doc.targets) do
    for _, k in ipairs({ "stop", "snapshot", "download" }) do
      if not targets[t.canister_id][k] then
        return string.format("targets[%d]", i), "no " .. k .. " operation for " .. t.canister_id
      end
    end
  end
  return nil
end

--- Reads and validates the plan of a backup directory. Returns the plan
-- document, or nil, message, code: "ENOENT" (no plan), "ECORRUPT" (not
-- JSON, or a field missing or of the wrong type or value, an operation
-- graph the runner cannot execute: the message names the file and
-- field), or the registry code of another read failure.
function M.read(dir)
  local path = dir .. "/" .. M.FILE
  local text, err, code = fs.read(path, 64 << 20)
  if not text then
    if code == "ENOENT" then return nil, "backup " .. dir .. ": " .. err, "ENOENT" end
    return nil, "backup " .. dir .. ": " .. err, schema.read_code(code)
  end
  local doc, jerr = json.decode(text, { name = path })
  if doc == nil then return nil, jerr, "ECORRUPT" end
  local ok, verr, vcode = schema.check(doc, SCHEMA, path)
  if not ok then return nil, verr, vcode end
  for i, op in ipairs(doc.operations) do
    if op.kind == "call" then
      ok, verr, vcode = schema.check(op, CALL, path, string.format("operations[%d]", i))
      if not ok then return nil, verr, vcode end
    end
  end
  local field, why = check_graph(doc)
  if field then return schema.fail(path, field, why) end
  return doc
end

return M
