--- The restore plan: which backup members go into which target canisters,
-- in parent-before-child order, with what each is verified against. Built
-- from a verified backup (fleetsnap's own or upstream's 0.36 / 0.108
-- layouts) and an optional mapping file; persisted as
-- fleetsnap-restore-plan.json in the restore state directory.
local engine = require "fleetsnap.engine"
local principal = require "fleetsnap.principal"
local policy_mod = require "fleetsnap.policy"

local json, fs = engine.json, engine.fs

local M = {}

M.FILE = "fleetsnap-restore-plan.json"
M.VERSION = 1

local function raise(code, message, extra)
  local e = { fleetsnap = true, code = code, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  error(e, 0)
end

local function null_to_nil(v)
  if v == json.null then return nil end
  return v
end

--- Reads and validates a mapping file: {"members": [{"source_canister",
-- "target_canister"}]}, strict. Returns source -> target.
function M.read_mapping(path)
  local text, err = fs.read(path, 16 << 20)
  if not text then raise("ENOTFOUND", "mapping " .. path .. ": " .. err) end
  local doc, jerr = json.decode(text, { name = path })
  if not doc then raise("EJSON", jerr) end
  local function bad(field, why) raise("EMAPPING", string.format("%s: %s: %s", path, field, why)) end
  if type(doc) ~= "table" or json.kind(doc) ~= "object" then bad("(document)", "not an object") end
  for k in pairs(doc) do
    if k ~= "members" then bad(k, "unknown field") end
  end
  if type(doc.members) ~= "table" or json.kind(doc.members) ~= "array" then
    bad("members", "missing or not an array")
  end
  local map, targets = {}, {}
  for i, e in ipairs(doc.members) do
    local f = string.format("members[%d]", i)
    if type(e) ~= "table" or json.kind(e) ~= "object" then bad(f, "not an object") end
    for k in pairs(e) do
      if k ~= "source_canister" and k ~= "target_canister" then bad(f .. "." .. k, "unknown field") end
    end
    local src, serr = principal.parse(e.source_canister, f .. ".source_canister")
    if not src then raise("EMAPPING", path .. ": " .. serr) end
    local dst, derr = principal.parse(e.target_canister, f .. ".target_canister")
    if not dst then raise("EMAPPING", path .. ": " .. derr) end
    if map[src] then bad(f .. ".source_canister", "duplicate source " .. src) end
    if targets[dst] then bad(f .. ".target_canister", "duplicate target " .. dst) end
    map[src], targets[dst] = dst, true
  end
  return map
end

-- Depth of each manifest member below the shallowest members of the backup.
local function depths(members)
  local by = {}
  for _, m in ipairs(members) do by[m.canister_id] = m end
  local out = {}
  local function depth(m, guard)
    if out[m.canister_id] then return out[m.canister_id] end
    local p = null_to_nil(m.parent_canister_id)
    local d = 1
    if p and by[p] and guard < #members then d = depth(by[p], guard + 1) + 1 end
    out[m.canister_id] = d
    return d
  end
  for _, m in ipairs(members) do depth(m, 0) end
  return out
end

--- The members chosen by --members (principals or roles) or --subtree (a
-- principal or role and everything below it), in manifest order.
function M.choose(members, opts)
  if not opts.members and not opts.subtree then return members end
  local by_id, by_role = {}, {}
  for _, m in ipairs(members) do
    by_id[m.canister_id] = m
    by_role[m.role] = by_role[m.role] or m
  end
  local chosen = {}
  if opts.members then
    for item in tostring(opts.members):gmatch("[^,%s]+") do
      local m = by_id[item] or by_role[item]
      if not m then raise("ESELECT", "members: " .. item .. " is not a member of the backup") end
      chosen[m.canister_id] = true
    end
  end
  if opts.subtree then
    local top = by_id[opts.subtree] or by_role[opts.subtree]
    if not top then raise("ESELECT", "subtree: " .. opts.subtree .. " is not a member of the backup") end
    local changed = true
    chosen[top.canister_id] = true
    while changed do
      changed = false
      for _, m in ipairs(members) do
        local p = null_to_nil(m.parent_canister_id)
        if p and chosen[p] and not chosen[m.canister_id] then
          chosen[m.canister_id] = true
          changed = true
        end
      end
    end
  end
  local out = {}
  for _, m in ipairs(members) do
    if chosen[m.canister_id] then out[#out + 1] = m end
  end
  return out
end

--- Parent-before-child order (upstream's rule): repeatedly emit the first
-- remaining member whose parent is not a plan member or already emitted.
function M.order(members)
  local in_plan, emitted, out = {}, {}, {}
  for _, m in ipairs(members) do in_plan[m.source_canister] = true end
  local remaining = {}
  for i, m in ipairs(members) do remaining[i] = m end
  while #remaining > 0 do
    local picked
    for i, m in ipairs(remaining) do
      local p = m.parent_source_canister
      if p == json.null or not in_plan[p] or emitted[p] then
        picked = i
        break
      end
    end
    if not picked then raise("EMANIFEST", "the backup's members form a parent cycle") end
    local m = table.remove(remaining, picked)
    emitted[m.source_canister] = true
    m.member_order = #out
    out[#out + 1] = m
  end
  return out
end

local MEMBER_KEYS = { "member_order", "source_canister", "target_canister", "role", "parent_source_canister",
  "parent_target_canister", "identity_mode", "depth", "snapshot_id", "module_hash", "artifact_path", "checksum",
  "bytes", "checks" }

--- Restore shape a policy asks for: {serial, concurrency, uploads}.
function M.shape(policy)
  local r = type(policy.restore) == "table" and policy.restore or {}
  return {
    serial = r.serial == true,
    concurrency = math.tointeger(r.concurrency) or math.tointeger(policy.concurrency) or 16,
    uploads = math.tointeger(r.uploads) or math.tointeger(policy.downloads) or 4,
  }
end

--- Builds the plan document. b: {dir (absolute), manifest (manifest.read),
-- report (backup.verify)}; opts: mapping (file), members, subtree, policy,
-- concurrency, uploads, snapshot_limit, environment, network.
function M.build(b, opts)
  local man = b.manifest
  local chosen = M.choose(man.members, opts)
  local mapping = opts.mapping and M.read_mapping(opts.mapping)
  local in_backup = {}
  for _, m in ipairs(man.members) do in_backup[m.canister_id] = m end
  if mapping then
    for src in pairs(mapping) do
      if not in_backup[src] then
        raise("EMAPPING", opts.mapping .. ": source_canister " .. src .. " is not a member of the backup")
      end
    end
  end
  local bytes = {}
  for _, e in ipairs(b.report.members) do bytes[e.canister_id] = e.bytes end
  local depth = depths(man.members)
  local members, targets = {}, {}
  local in_plan = {}
  for _, m in ipairs(chosen) do in_plan[m.canister_id] = true end
  for _, m in ipairs(chosen) do
    local target = m.canister_id
    if mapping then
      target = mapping[m.canister_id]
      if not target then
        raise("EMAPPING", opts.mapping .. ": no target for member " .. m.canister_id .. " (" .. m.role
          .. "); a mapping must name every member restored")
      end
    end
    local mode = m.identity_mode or "relocatable"
    if mode == "fixed" and target ~= m.canister_id then
      raise("EMAPPING", string.format("%s: member %s (%s) has a fixed identity and cannot be restored into %s",
        opts.mapping, m.canister_id, m.role, target))
    end
    if targets[target] then raise("EMAPPING", "two members would be restored into " .. target) end
    targets[target] = true
    local s = m.source_snapshot
    local parent = null_to_nil(m.parent_canister_id)
    members[#members + 1] = {
      source_canister = m.canister_id,
      target_canister = target,
      role = m.role,
      parent_source_canister = parent or json.null,
      parent_target_canister = json.null,
      identity_mode = mode,
      depth = depth[m.canister_id],
      snapshot_id = s.snapshot_id,
      module_hash = null_to_nil(s.module_hash) and s.module_hash:gsub("^0x", ""):lower() or json.null,
      artifact_path = s.artifact_path,
      checksum = null_to_nil(s.checksum) and s.checksum:lower() or json.null,
      bytes = bytes[m.canister_id] or 0,
    }
  end
  if #members == 0 then raise("ESELECT", "no members chosen") end
  for _, m in ipairs(members) do
    local p = m.parent_source_canister
    if p ~= json.null and in_plan[p] then
      m.parent_target_canister = mapping and mapping[p] or p
    end
    if m.checksum == json.null then
      raise("EMANIFEST", "member " .. m.source_canister .. " has no artifact checksum: its bytes cannot be checked "
        .. "before the upload")
    end
  end
  members = M.order(members)
  local policy, perr = policy_mod.load(opts.policy or "consistent")
  if not policy then raise("EPOLICY", perr) end
  local view = {}
  for i, m in ipairs(members) do
    view[i] = { canister_id = m.source_canister, role = m.role, depth = m.depth,
      parent = m.parent_source_canister ~= json.null and m.parent_source_canister or nil }
  end
  local checks, cerr = policy_mod.checks(policy, view)
  if not checks then raise("EPOLICY", cerr) end
  for i, m in ipairs(members) do
    m.checks = json.array(checks[m.source_canister] or {})
    members[i] = json.ordered(m, MEMBER_KEYS)
  end
  local shape = M.shape(policy)
  local now = engine.realtime_ns()
  local doc = {
    format = "fleetsnap-restore-plan",
    plan_version = M.VERSION,
    -- Unique even for two restores planned in one second (a finished
    -- restore is kept beside the next one under its id).
    restore_id = string.format("restore-%s-%s", os.date("!%Y%m%d-%H%M%S", now // 1000000000),
      engine.hash.sha256(tostring(now) .. tostring({})):sub(1, 4)),
    created_ns = now,
    backup = { dir = b.dir, backup_id = man.doc.backup_id, manifest_file = man.file:match("[^/]+$"),
      manifest_line = man.line, manifest_sha256 = b.manifest_sha256 },
    source = { environment = man.doc.source.environment, root_canister = man.doc.source.root_canister },
    target = { environment = opts.environment or json.null, network = opts.network or json.null },
    mapping_supplied = mapping ~= nil,
    policy = { name = policy.name, sha256 = policy.sha256, serial = shape.serial },
    options = {
      concurrency = opts.concurrency or shape.concurrency,
      uploads = opts.uploads or shape.uploads,
      snapshot_limit = opts.snapshot_limit or 10,
    },
    members = json.array(members),
  }
  return doc
end

--- What makes two plans the same restore (everything but the id and time).
function M.fingerprint(doc)
  local copy = {}
  for k, v in pairs(doc) do
    if k ~= "restore_id" and k ~= "created_ns" then copy[k] = v end
  end
  return engine.hash.sha256(json.encode(copy))
end

--- Reads and validates the plan in a restore state directory.
function M.read(state)
  local path = state .. "/" .. M.FILE
  local text, err, code = fs.read(path, 64 << 20)
  if not text then
    if code == "ENOENT" then
      return nil, "no restore plan in " .. state .. " (run `fleetsnap restore plan <backup>` first)", "ENOTFOUND"
    end
    return nil, path .. ": " .. err, code
  end
  local doc, jerr = json.decode(text, { name = path })
  if not doc then return nil, jerr, "EJSON" end
  local function bad(field, why) return nil, string.format("%s: %s: %s", path, field, why), "EDOC" end
  if doc.format ~= "fleetsnap-restore-plan" then return bad("format", "not a fleetsnap restore plan") end
  if doc.plan_version ~= M.VERSION then
    return bad("plan_version", "unsupported version " .. tostring(doc.plan_version))
  end
  for _, k in ipairs({ "restore_id", "backup", "members", "options", "policy", "source" }) do
    if doc[k] == nil then return bad(k, "missing") end
  end
  if type(doc.members) ~= "table" or #doc.members == 0 then return bad("members", "empty") end
  local seen = {}
  for i, m in ipairs(doc.members) do
    local f = string.format("members[%d]", i)
    for _, k in ipairs({ "source_canister", "target_canister" }) do
      if not principal.is_valid(m[k]) then return bad(f .. "." .. k, "not a valid principal: " .. tostring(m[k])) end
    end
    if seen[m.target_canister] then return bad(f .. ".target_canister", "duplicate " .. m.target_canister) end
    seen[m.target_canister] = true
    if type(m.artifact_path) ~= "string" or not fs.safe_relative(m.artifact_path) then
      return bad(f .. ".artifact_path", "not a safe relative path: " .. tostring(m.artifact_path))
    end
    if type(m.checksum) ~= "string" or not m.checksum:match("^" .. ("%x"):rep(64) .. "$") then
      return bad(f .. ".checksum", "not a SHA-256 hex digest")
    end
    if m.member_order ~= i - 1 then return bad(f .. ".member_order", "out of order") end
  end
  return doc
end

return M
