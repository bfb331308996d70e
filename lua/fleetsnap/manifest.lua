--- The interchange documents of a backup directory, in the shape of
-- upstream canic-backup's 0.35/0.36 release line (canic-backup-model.md
-- §3, §6, §16): fleet-backup-manifest.json and download-journal.json.
-- fleetsnap's additions live under the manifest's "fleetsnap" key, which
-- 0.36 readers ignore. Readers also accept the current line's (0.108)
-- deployment-backup-manifest.json, strictly.
local engine = require "fleetsnap.engine"
local paths = require "fleetsnap.paths"
local schema = require "fleetsnap.schema"
local canister_settings = require "fleetsnap.canister_settings"

local json = engine.json

local M = {}

M.FILE_036 = "fleet-backup-manifest.json"
M.FILE_108 = "deployment-backup-manifest.json"
M.DOWNLOAD_JOURNAL = "download-journal.json"

local O = json.ordered
local A = json.array

--- Backup units: connected components of the selection forest (§3.3).
function M.backup_units(targets)
  local in_sel, children = {}, {}
  for _, t in ipairs(targets) do in_sel[t.canister_id] = t end
  for _, t in ipairs(targets) do
    if t.parent and in_sel[t.parent] then
      children[t.parent] = children[t.parent] or {}
      table.insert(children[t.parent], t)
    end
  end
  local seen, comps = {}, {}
  local function bfs(start)
    local comp, queue, head = {}, { start }, 1
    seen[start.canister_id] = true
    while queue[head] do
      local t = queue[head]
      head = head + 1
      comp[#comp + 1] = t.role
      for _, c in ipairs(children[t.canister_id] or {}) do
        if not seen[c.canister_id] then
          seen[c.canister_id] = true
          queue[#queue + 1] = c
        end
      end
    end
    return comp
  end
  for _, t in ipairs(targets) do
    if not (t.parent and in_sel[t.parent]) and not seen[t.canister_id] then comps[#comps + 1] = bfs(t) end
  end
  for _, t in ipairs(targets) do
    if not seen[t.canister_id] then comps[#comps + 1] = bfs(t) end
  end
  local units = {}
  for i, roles in ipairs(comps) do
    units[i] = O({ unit_id = #comps == 1 and "backup-selection" or ("backup-selection-" .. i),
      kind = #roles == 1 and "single" or "subtree", roles = A(roles) }, { "unit_id", "kind", "roles" })
  end
  return A(units)
end

--- The manifest document. b: backup_id, created_at, tool_version,
-- environment, root, topology {hash, input}, targets (selection order),
-- artifacts (canister -> {snapshot_id, artifact_path, digest, files, ...}),
-- fleetsnap (the additions).
function M.build(b)
  local members = {}
  for i, t in ipairs(b.targets) do
    local a = b.artifacts[t.canister_id]
    members[i] = O({
      role = t.role,
      canister_id = t.canister_id,
      parent_canister_id = t.parent or json.null,
      subnet_canister_id = json.null,
      controller_hint = t.canister_id ~= b.root and b.root or json.null,
      identity_mode = t.canister_id == b.root and "fixed" or "relocatable",
      verification_checks = A({ O({ kind = "status", roles = A({ t.role }) }, { "kind", "roles" }) }),
      source_snapshot = O({
        snapshot_id = a.snapshot_id,
        module_hash = a.module_hash or json.null,
        code_version = json.null,
        artifact_path = a.artifact_path,
        checksum_algorithm = "sha256",
        checksum = a.digest,
      }, { "snapshot_id", "module_hash", "code_version", "artifact_path", "checksum_algorithm", "checksum" }),
    }, { "role", "canister_id", "parent_canister_id", "subnet_canister_id", "controller_hint", "identity_mode",
      "verification_checks", "source_snapshot" })
  end
  return O({
    manifest_version = 1,
    backup_id = b.backup_id,
    created_at = b.created_at,
    tool = O({ name = "fleetsnap", version = b.tool_version }, { "name", "version" }),
    source = O({ environment = b.environment, root_canister = b.root }, { "environment", "root_canister" }),
    consistency = O({ backup_units = M.backup_units(b.targets) }, { "backup_units" }),
    fleet = O({
      topology_hash_algorithm = "sha256",
      topology_hash_input = b.topology.input,
      discovery_topology_hash = b.topology.hash,
      pre_snapshot_topology_hash = b.topology.pre_snapshot or b.topology.hash,
      topology_hash = b.topology.hash,
      members = A(members),
    }, { "topology_hash_algorithm", "topology_hash_input", "discovery_topology_hash", "pre_snapshot_topology_hash",
      "topology_hash", "members" }),
    verification = O({ fleet_checks = A({}), member_checks = A({}) }, { "fleet_checks", "member_checks" }),
    fleetsnap = b.fleetsnap,
  }, { "manifest_version", "backup_id", "created_at", "tool", "source", "consistency", "fleet", "verification",
    "fleetsnap" })
end

--- The download journal (0.36 shape, every artifact Durable).
function M.download_journal(b)
  local entries = {}
  for i, t in ipairs(b.targets) do
    local a = b.artifacts[t.canister_id]
    entries[i] = O({
      canister_id = t.canister_id,
      snapshot_id = a.snapshot_id,
      snapshot_taken_at_timestamp = a.taken_at or json.null,
      snapshot_total_size_bytes = a.total_size or json.null,
      state = "Durable",
      temp_path = json.null,
      artifact_path = a.artifact_path,
      checksum_algorithm = "sha256",
      checksum = a.digest,
      updated_at = b.created_at,
    }, { "canister_id", "snapshot_id", "snapshot_taken_at_timestamp", "snapshot_total_size_bytes", "state",
      "temp_path", "artifact_path", "checksum_algorithm", "checksum", "updated_at" })
  end
  local n = #b.targets
  return O({
    journal_version = 1,
    backup_id = b.backup_id,
    discovery_topology_hash = b.topology.hash,
    pre_snapshot_topology_hash = b.topology.pre_snapshot or b.topology.hash,
    operation_metrics = O({ target_count = n, snapshot_create_started = n, snapshot_create_completed = n,
      snapshot_download_started = n, snapshot_download_completed = n, checksum_verify_started = n,
      checksum_verify_completed = n, artifact_finalize_started = n, artifact_finalize_completed = n },
      { "target_count", "snapshot_create_started", "snapshot_create_completed", "snapshot_download_started",
        "snapshot_download_completed", "checksum_verify_started", "checksum_verify_completed",
        "artifact_finalize_started", "artifact_finalize_completed" }),
    artifacts = A(entries),
  }, { "journal_version", "backup_id", "discovery_topology_hash", "pre_snapshot_topology_hash", "operation_metrics",
    "artifacts" })
end

-- {=== reading and validating ===}

local S = schema
local NONEMPTY = S.string({ nonempty = true })
local VERSION_1 = S.integer({ one_of = { 1 }, what = "version 1" })

-- Upstream's required-nullable fields: 0.108 requires the key (null
-- allowed); 0.36 also accepted the key omitted, read as null (§3).
local function req_null(spec, strict)
  spec = S.nullable(spec)
  if not strict then spec = S.optional(spec) end
  return spec
end

-- Artifact paths are joined to the backup directory: one safe relative
-- path (paths.check_beneath refuses symlinks on the way when it is used).
local function safe_path(v)
  local ok, why = paths.components(v)
  if not ok then return "not a safe relative path (" .. why .. ")" end
end

-- fleetsnap's additions (0.36 line only; 0.36 readers ignore the key).
-- Our own section: every field as finalize writes it.
local NULLABLE_NS = S.nullable(S.integer())
local FLEETSNAP = S.object({
  { "format_version", VERSION_1 },
  { "policy", NONEMPTY },
  { "policy_sha256", S.hex64() },
  { "scope", S.string({ one_of = { "fleet", "subtree", "member" } }) },
  { "attempt", S.integer({ min = 1 }) },
  { "consistency_window", S.object({ { "first_stop_at", NULLABLE_NS }, { "last_start_at", NULLABLE_NS },
    { "window_ns", NULLABLE_NS } }) },
  { "members", S.array(S.object({
    { "canister_id", S.principal() },
    { "snapshot_id", NONEMPTY },
    { "stopped_at", NULLABLE_NS },
    { "started_at", NULLABLE_NS },
    { "downtime_ns", NULLABLE_NS },
    { "digest", S.hex64() },
    { "bytes", S.integer({ min = 0 }) },
    { "files", S.array(S.object({ { "path", NONEMPTY }, { "size", S.integer({ min = 0 }) },
      { "sha256", S.hex64() } })) },
    -- Absent in backups made before settings were recorded.
    { "settings", S.optional(canister_settings.SCHEMA) },
  })) },
})

-- The manifest of a line: "0.108" strict (every object denies unknown
-- keys, req-null keys present), "0.36" lenient as 0.36 itself was (unknown
-- keys ignored, req-null keys omissible). Either way every field the code
-- uses has the type it is used as.
local function manifest_schema(line)
  local strict = line == "0.108"
  local function object(fields) return S.object(fields, { strict = strict }) end
  local check = object({ { "kind", NONEMPTY }, { "roles", S.array(NONEMPTY) } })
  local snapshot = object({
    { "snapshot_id", NONEMPTY },
    { "module_hash", req_null(NONEMPTY, strict) },
    { "code_version", req_null(NONEMPTY, strict) },
    { "artifact_path", S.string({ nonempty = true, check = safe_path }) },
    { "checksum_algorithm", S.string({ one_of = { "sha256" } }) },
    { "checksum", req_null(S.hex64(), strict) },
  })
  local member = object({
    { "role", NONEMPTY },
    { "canister_id", S.principal() },
    { "parent_canister_id", req_null(S.principal(), strict) },
    { "subnet_canister_id", req_null(S.principal(), strict) },
    { "controller_hint", req_null(S.principal(), strict) },
    { "identity_mode", S.string({ one_of = { "fixed", "relocatable" } }) },
    { "verification_checks", S.array(check) },
    { "source_snapshot", snapshot },
  })
  -- fleetsnap has always read 0.36 topology hashes as optional (0.36's
  -- download journal had them optional too); present, they are digests.
  local hash = strict and S.hex64() or S.optional(S.hex64())
  local section = object({
    { "topology_hash_algorithm", S.string({ one_of = { "sha256" } }) },
    { "topology_hash_input", NONEMPTY },
    { "discovery_topology_hash", hash },
    { "pre_snapshot_topology_hash", hash },
    { "topology_hash", hash },
    { "members", S.array(member, { min = 1 }) },
  })
  -- The verification plan has a default (both lists empty) in 0.36.
  local verification = object({
    { strict and "deployment_checks" or "fleet_checks", S.array(check) },
    { "member_checks", S.array(object({ { "role", NONEMPTY }, { "checks", S.array(check) } })) },
  })
  if not strict then verification = S.optional(verification) end
  local fields = {
    { "manifest_version", VERSION_1 },
    { "backup_id", NONEMPTY },
    { "created_at", NONEMPTY },
    { "tool", object({ { "name", NONEMPTY }, { "version", NONEMPTY } }) },
    { "source", object({ { "environment", NONEMPTY }, { "root_canister", S.principal() } }) },
    { "consistency", object({ { "backup_units", S.array(object({ { "unit_id", NONEMPTY },
      { "kind", S.string({ one_of = { "single", "subtree" } }) }, { "roles", S.array(NONEMPTY) } }),
      { min = 1 }) } }) },
    { strict and "deployment" or "fleet", section },
    { "verification", verification },
  }
  if not strict then fields[#fields + 1] = { "fleetsnap", S.optional(FLEETSNAP) } end
  return S.object(fields, { strict = strict })
end

local SCHEMA = { ["0.36"] = manifest_schema("0.36"), ["0.108"] = manifest_schema("0.108") }

-- download-journal.json, read as leniently as 0.36 wrote it (topology
-- hashes and snapshot metadata optional, unknown keys ignored): verify only
-- compares its entries with the manifest.
local NULLABLE_HEX = S.optional(S.nullable(S.hex64()))
local COUNT = S.optional(S.integer({ min = 0 }))
local DOWNLOAD_JOURNAL = S.object({
  { "journal_version", VERSION_1 },
  { "backup_id", NONEMPTY },
  { "discovery_topology_hash", NULLABLE_HEX },
  { "pre_snapshot_topology_hash", NULLABLE_HEX },
  { "operation_metrics", S.optional(S.object({ { "target_count", COUNT },
    { "snapshot_create_started", COUNT }, { "snapshot_create_completed", COUNT },
    { "snapshot_download_started", COUNT }, { "snapshot_download_completed", COUNT },
    { "checksum_verify_started", COUNT }, { "checksum_verify_completed", COUNT },
    { "artifact_finalize_started", COUNT }, { "artifact_finalize_completed", COUNT } })) },
  { "artifacts", S.array(S.object({
    { "canister_id", S.principal() },
    { "snapshot_id", NONEMPTY },
    { "snapshot_taken_at_timestamp", S.optional(S.nullable(S.integer({ min = 0 }))) },
    { "snapshot_total_size_bytes", S.optional(S.nullable(S.integer({ min = 0 }))) },
    { "state", S.string({ one_of = { "Created", "Downloaded", "ChecksumVerified", "Durable" } }) },
    { "temp_path", S.optional(S.nullable(S.string())) },
    { "artifact_path", NONEMPTY },
    { "checksum_algorithm", S.string({ one_of = { "sha256" } }) },
    { "checksum", NULLABLE_HEX },
    { "updated_at", NONEMPTY },
  })) },
})

--- Reads and validates the manifest of a backup directory (0.36 lenient or
-- 0.108 strict). Returns {doc, file, line ("0.36"|"0.108"), members,
-- section, sha256 (of the bytes read)}, or nil, message, code: "ENOENT"
-- (neither file exists), "ECORRUPT" (not JSON, or a field that is missing
-- or of the wrong type or value: the message names the file and field),
-- or the registry code of another read failure.
function M.read(dir)
  local file, line = dir .. "/" .. M.FILE_036, "0.36"
  local text, err, code = engine.fs.read(file, 256 << 20)
  if not text and code == "ENOENT" then
    file, line = dir .. "/" .. M.FILE_108, "0.108"
    text, err, code = engine.fs.read(file, 256 << 20)
    if not text and code == "ENOENT" then
      return nil, dir .. ": no " .. M.FILE_036 .. " or " .. M.FILE_108, "ENOENT"
    end
  end
  if not text then return nil, file .. ": " .. tostring(err), schema.read_code(code) end
  local doc, jerr = json.decode(text, { name = file })
  if doc == nil then return nil, jerr, "ECORRUPT" end
  local ok, verr, vcode = M.validate(doc, file, line)
  if not ok then return nil, verr, vcode end
  local section = line == "0.36" and doc.fleet or doc.deployment
  return { doc = doc, file = file, line = line, members = section.members, section = section,
    sha256 = engine.hash.sha256(text) }
end

--- Validates a decoded manifest of the given line ("0.36" lenient, "0.108"
-- strict); `file` names it in messages. true, or nil, message naming the
-- file and field, "ECORRUPT". Never raises on a decoded document (a line
-- other than these two is a caller's bug, and raises).
function M.validate(doc, file, line)
  local spec = SCHEMA[line]
  if not spec then error("manifest.validate: unknown manifest line " .. tostring(line), 2) end
  local ok, err, code = schema.check(doc, spec, file)
  if not ok then return nil, err, code end
  local sname = line == "0.36" and "fleet" or "deployment"
  local seen = {}
  for i, m in ipairs(doc[sname].members) do
    if seen[m.canister_id] then
      return schema.fail(file, string.format("%s.members[%d].canister_id", sname, i), "duplicate " .. m.canister_id)
    end
    seen[m.canister_id] = true
  end
  -- verify keys the per-file digests by canister: one entry each.
  local extra = doc.fleetsnap
  if line == "0.36" and extra ~= nil then
    seen = {}
    for i, x in ipairs(extra.members) do
      if seen[x.canister_id] then
        return schema.fail(file, string.format("fleetsnap.members[%d].canister_id", i), "duplicate " .. x.canister_id)
      end
      seen[x.canister_id] = true
    end
  end
  return true
end

--- Reads the download journal of a backup directory. Returns {doc,
-- by_canister (entry by canister id), file}; nil alone when there is
-- none (it is optional: a 0.108 layout or a hand-made backup may lack
-- it); or nil, message, code ("ECORRUPT" for a journal that is not valid,
-- naming the file and field).
function M.read_download_journal(dir)
  local file = dir .. "/" .. M.DOWNLOAD_JOURNAL
  local text, err, code = engine.fs.read(file, 256 << 20)
  if not text then
    if code == "ENOENT" then return nil end
    return nil, file .. ": " .. tostring(err), schema.read_code(code)
  end
  local doc, jerr = json.decode(text, { name = file })
  if doc == nil then return nil, jerr, "ECORRUPT" end
  local ok, verr, vcode = schema.check(doc, DOWNLOAD_JOURNAL, file)
  if not ok then return nil, verr, vcode end
  local by = {}
  for _, a in ipairs(doc.artifacts) do
    -- The first entry of a canister (a journal may hold more than one
    -- snapshot of it; verify looks for the manifest's own in `doc`).
    if not by[a.canister_id] then by[a.canister_id] = a end
  end
  return { doc = doc, by_canister = by, file = file }
end

return M
