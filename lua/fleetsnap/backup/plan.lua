--- A backup's plan: discovery (the root's registry, an inventory file, or
-- the policy's own), selection, the policy's operations, persisted as
-- fleetsnap-plan.json before any effect; and reading it back.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local fleet_mod = require "fleetsnap.fleet"
local hex = require "fleetsnap.hex"
local policy_mod = require "fleetsnap.policy"

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
  local policy, perr = policy_mod.load(opts.policy or "consistent")
  if not policy then raise("EPOLICY", perr) end
  local fleet, ferr, fcode
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
    local res, derr, dcode = policy_mod.discover(policy, { root = opts.root, registry = raw })
    if not res then raise(dcode or "EPOLICY", derr) end
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
      inventory = opts.inventory } or opts.inventory and { inventory = opts.inventory } or { registry = fleet.root },
    target = { environment = driver.environment, network = driver.network },
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

--- Validates a plan document read from disk.
function M.read(dir)
  local path = dir .. "/" .. M.FILE
  local text, err, code = fs.read(path)
  if not text then return nil, "backup " .. dir .. ": " .. err, code == "ENOENT" and "ENOENT" or code end
  local doc, jerr = json.decode(text, { name = path })
  if not doc then return nil, jerr, "EJSON" end
  if doc.format ~= "fleetsnap-plan" then return nil, path .. ": format: not a fleetsnap plan", "EDOC" end
  if doc.plan_version ~= M.VERSION then
    return nil, path .. ": plan_version: unsupported version " .. tostring(doc.plan_version), "EDOC"
  end
  for _, k in ipairs({ "backup_id", "root", "targets", "operations", "options", "scope", "policy" }) do
    if doc[k] == nil then return nil, path .. ": " .. k .. ": missing", "EDOC" end
  end
  return doc
end


return M
