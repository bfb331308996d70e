--- The restore plan: which backup members go into which target canisters,
-- in parent-before-child order, with what each is verified against. Built
-- from a verified backup (fleetsnap's own or upstream's 0.36 / 0.108
-- layouts) and an optional mapping file; persisted as
-- fleetsnap-restore-plan.json in the restore state directory.
local engine = require "fleetsnap.engine"
local manifest = require "fleetsnap.manifest"
local paths = require "fleetsnap.paths"
local principal = require "fleetsnap.principal"
local policy_mod = require "fleetsnap.policy"
local schema = require "fleetsnap.schema"

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

local S = schema

-- Upstream's RestoreMapping: strict (an unknown key is refused).
local MAPPING = S.object({
  { "members", S.array(S.object({ { "source_canister", S.principal() }, { "target_canister", S.principal() } },
    { strict = true })) },
}, { strict = true })

--- Reads and validates a mapping file: {"members": [{"source_canister",
-- "target_canister"}]}, strict. Returns source -> target (canonical
-- principal texts), or nil, message, code: "ENOTFOUND" (no such file),
-- "ECORRUPT" (not JSON, a field missing or of the wrong type, an unknown
-- field, a duplicate source or target: the message names the file and
-- field), or the registry code of another read failure.
function M.read_mapping(path)
  local text, err, code = fs.read(path, 16 << 20)
  if not text then
    return nil, "mapping " .. path .. ": " .. tostring(err), code == "ENOENT" and "ENOTFOUND" or schema.read_code(code)
  end
  local doc, jerr = json.decode(text, { name = path })
  if doc == nil then return nil, jerr, "ECORRUPT" end
  local ok, verr, vcode = schema.check(doc, MAPPING, path)
  if not ok then return nil, verr, vcode end
  local map, targets = {}, {}
  for i, e in ipairs(doc.members) do
    local f = string.format("members[%d]", i)
    -- Canonical texts: a principal written in upper case is the same one.
    local src, dst = principal.parse(e.source_canister), principal.parse(e.target_canister)
    if map[src] then return schema.fail(path, f .. ".source_canister", "duplicate source " .. src) end
    if targets[dst] then return schema.fail(path, f .. ".target_canister", "duplicate target " .. dst) end
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
-- concurrency, uploads, snapshot_limit, environment, network, scratch
-- (a drill's: the targets are scratch copies, fixed identities too).
function M.build(b, opts)
  local man = b.manifest
  local chosen = M.choose(man.members, opts)
  local mapping
  if opts.mapping then
    local merr, mcode
    mapping, merr, mcode = M.read_mapping(opts.mapping)
    if not mapping then raise(mcode, merr) end
  end
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
    -- A drill's scratch copy is never started: who it is does not matter.
    if mode == "fixed" and target ~= m.canister_id and not opts.scratch then
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
  local policy, perr, pcode = policy_mod.load(opts.policy or "consistent")
  if not policy then raise(pcode or "EPOLICY", perr, policy_mod.missing_step(pcode)) end
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
    -- How this restore reached the network, for run and undo (see the
    -- backup plan's).
    connection = opts.connection,
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
    -- How it reaches the network is not what it does: a plan made again
    -- with other connection flags is the same restore.
    if k ~= "restore_id" and k ~= "created_ns" and k ~= "connection" then copy[k] = v end
  end
  return engine.hash.sha256(json.encode(copy))
end

local NONEMPTY = S.string({ nonempty = true })

-- An artifact path is joined to the backup directory when staging.
local function safe_path(v)
  local ok, why = paths.components(v)
  if not ok then return "not a safe relative path (" .. why .. ")" end
end

-- Every field restore planning, the runner, status and undo use, with the
-- type they use it as. Unknown keys are ignored (the plan is read by the
-- version that wrote it; plan_version marks what is not compatible).
local PLAN = S.object({
  { "format", S.string({ one_of = { "fleetsnap-restore-plan" } }) },
  { "plan_version", S.integer({ one_of = { M.VERSION }, what = "version " .. M.VERSION }) },
  { "restore_id", NONEMPTY },
  { "created_ns", S.integer({ min = 0 }) },
  { "fingerprint", S.hex64() },
  { "backup", S.object({
    { "dir", NONEMPTY },
    { "backup_id", NONEMPTY },
    -- Joined to the backup directory: one of the two names, nothing else.
    { "manifest_file", S.string({ one_of = { manifest.FILE_036, manifest.FILE_108 } }) },
    { "manifest_line", S.string({ one_of = { "0.36", "0.108" } }) },
    { "manifest_sha256", S.hex64() },
  }) },
  { "source", S.object({ { "environment", NONEMPTY }, { "root_canister", S.principal() } }) },
  { "target", S.object({ { "environment", S.nullable(S.string()) }, { "network", S.nullable(S.string()) } }) },
  { "connection", S.optional(S.connection()) },
  { "mapping_supplied", S.boolean() },
  { "policy", S.object({ { "name", NONEMPTY }, { "sha256", S.hex64() }, { "serial", S.boolean() } }) },
  { "options", S.object({
    { "concurrency", S.integer({ min = 1 }) },
    { "uploads", S.integer({ min = 1 }) },
    { "snapshot_limit", S.integer({ min = 1 }) },
  }) },
  { "members", S.array(S.object({
    { "member_order", S.integer({ min = 0 }) },
    { "source_canister", S.principal() },
    { "target_canister", S.principal() },
    { "role", NONEMPTY },
    { "parent_source_canister", S.nullable(S.principal()) },
    { "parent_target_canister", S.nullable(S.principal()) },
    { "identity_mode", S.string({ one_of = { "fixed", "relocatable" } }) },
    { "depth", S.integer({ min = 0 }) },
    { "snapshot_id", NONEMPTY },
    { "module_hash", S.nullable(S.string()) },
    { "artifact_path", S.string({ check = safe_path }) },
    -- A plan is only made for members whose bytes can be checked.
    { "checksum", S.hex64() },
    { "bytes", S.integer({ min = 0 }) },
    { "checks", S.array(S.object({ { "method", NONEMPTY }, { "args", S.string() },
      { "expect_hex", S.string({ what = "hex digits", valid = function(v) return v:match("^%x*$") ~= nil end }) },
    })) },
  }), { min = 1 }) },
})

--- Reads and validates the plan in a restore state directory. Returns the
-- plan document, or nil, message, code: "ENOTFOUND" (no plan),
-- "ECORRUPT" (not JSON, a field missing or of the wrong type or value,
-- members out of order, a duplicate target, a parent that is not restored
-- before its child: the message names the file and field), or the
-- registry code of another read failure.
function M.read(state)
  local path = state .. "/" .. M.FILE
  local text, err, code = fs.read(path, 64 << 20)
  if not text then
    if code == "ENOENT" then
      return nil, "no restore plan in " .. state .. " (run `fleetsnap restore plan <backup>` first)", "ENOTFOUND"
    end
    return nil, path .. ": " .. tostring(err), schema.read_code(code)
  end
  local doc, jerr = json.decode(text, { name = path })
  if doc == nil then return nil, jerr, "ECORRUPT" end
  local ok, verr, vcode = schema.check(doc, PLAN, path)
  if not ok then return nil, verr, vcode end
  local sources, targets = {}, {}
  for i, m in ipairs(doc.members) do
    local f = string.format("members[%d]", i)
    if m.member_order ~= i - 1 then
      return schema.fail(path, f .. ".member_order", string.format("expected %d, got %d (out of order)", i - 1,
        m.member_order))
    end
    if sources[m.source_canister] then
      return schema.fail(path, f .. ".source_canister", "duplicate " .. m.source_canister)
    end
    if targets[m.target_canister] then
      return schema.fail(path, f .. ".target_canister", "duplicate " .. m.target_canister)
    end
    -- Parents first: the operations order stops and starts by it.
    local parent = m.parent_target_canister
    if parent ~= json.null and not targets[parent] then
      return schema.fail(path, f .. ".parent_target_canister", parent .. " is not the target of an earlier member")
    end
    sources[m.source_canister], targets[m.target_canister] = true, true
  end
  return doc
end

return M
