--- The interchange documents of a backup directory, in the shape of
-- upstream canic-backup's 0.35/0.36 release line (canic-backup-model.md
-- §3, §6, §16): fleet-backup-manifest.json and download-journal.json.
-- fleetsnap's additions live under the manifest's "fleetsnap" key, which
-- 0.36 readers ignore. Readers also accept the current line's (0.108)
-- deployment-backup-manifest.json, strictly.
local engine = require "fleetsnap.engine"
local principal = require "fleetsnap.principal"

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

local function is_hex64(s)
  return type(s) == "string" and #s == 64 and s:match("^%x+$") ~= nil
end

local function check(cond, file, field, why)
  if not cond then
    error({ manifest = true, message = string.format("%s: %s: %s", file, field, why) }, 0)
  end
end

local function principal_field(v, file, field, nullable)
  if nullable and (v == nil or v == json.null) then return end
  check(type(v) == "string" and principal.is_valid(v), file, field, "not a valid principal: " .. tostring(v))
end

--- Reads and validates the manifest of a backup directory (0.36 lenient or
-- 0.108 strict). Returns {doc, file, line ("0.36"|"0.108"), members,
-- sha256 (of the bytes read)} or
-- nil, message, code ("ENOENT", "EJSON", "EMANIFEST").
function M.read(dir)
  local file, line = dir .. "/" .. M.FILE_036, "0.36"
  local text = engine.fs.read(file, 256 << 20)
  if not text then
    file, line = dir .. "/" .. M.FILE_108, "0.108"
    text = engine.fs.read(file, 256 << 20)
  end
  if not text then
    return nil, dir .. ": no " .. M.FILE_036 .. " or " .. M.FILE_108, "ENOENT"
  end
  local doc, jerr = json.decode(text, { name = file })
  if not doc then return nil, jerr, "EJSON" end
  local ok, err, code = M.validate(doc, file, line)
  if not ok then return nil, err, code end
  local section = line == "0.36" and doc.fleet or doc.deployment
  return { doc = doc, file = file, line = line, members = section.members, section = section,
    sha256 = engine.hash.sha256(text) }
end

--- Validates a decoded manifest of the given line ("0.36" lenient, "0.108"
-- strict); `file` names it in messages. true, or nil, message, "EMANIFEST".
function M.validate(doc, file, line)
  local ok, err = pcall(function()
    check(type(doc) == "table", file, "(document)", "not an object")
    check(doc.manifest_version == 1, file, "manifest_version", "unsupported version " .. tostring(doc.manifest_version))
    check(type(doc.backup_id) == "string" and doc.backup_id ~= "", file, "backup_id", "empty")
    local section = line == "0.36" and doc.fleet or doc.deployment
    local sname = line == "0.36" and "fleet" or "deployment"
    if line == "0.108" then
      local allowed = { manifest_version = 1, backup_id = 1, created_at = 1, tool = 1, source = 1, consistency = 1,
        deployment = 1, verification = 1 }
      for k in pairs(doc) do check(allowed[k], file, k, "unknown field") end
    end
    check(type(section) == "table", file, sname, "missing")
    check(type(doc.source) == "table", file, "source", "missing")
    principal_field(doc.source.root_canister, file, "source.root_canister")
    check(section.topology_hash_algorithm == "sha256", file, sname .. ".topology_hash_algorithm", "must be sha256")
    for _, h in ipairs({ "discovery_topology_hash", "pre_snapshot_topology_hash", "topology_hash" }) do
      if line == "0.108" or section[h] ~= nil then
        check(is_hex64(section[h]), file, sname .. "." .. h, "not a SHA-256 hex digest")
      end
    end
    check(type(section.members) == "table" and #section.members > 0, file, sname .. ".members", "empty")
    local seen = {}
    for i, m in ipairs(section.members) do
      local f = string.format("%s.members[%d]", sname, i)
      check(type(m.role) == "string" and m.role ~= "", file, f .. ".role", "empty")
      principal_field(m.canister_id, file, f .. ".canister_id")
      principal_field(m.parent_canister_id, file, f .. ".parent_canister_id", true)
      check(not seen[m.canister_id], file, f .. ".canister_id", "duplicate " .. tostring(m.canister_id))
      seen[m.canister_id] = true
      local s = m.source_snapshot
      check(type(s) == "table", file, f .. ".source_snapshot", "missing")
      check(type(s.snapshot_id) == "string" and s.snapshot_id ~= "", file, f .. ".source_snapshot.snapshot_id", "empty")
      check(type(s.artifact_path) == "string" and engine.fs.safe_relative(s.artifact_path), file,
        f .. ".source_snapshot.artifact_path", "not a safe relative path: " .. tostring(s.artifact_path))
      check(s.checksum_algorithm == "sha256", file, f .. ".source_snapshot.checksum_algorithm", "must be sha256")
      if s.checksum ~= nil and s.checksum ~= json.null then
        check(is_hex64(s.checksum), file, f .. ".source_snapshot.checksum", "not a SHA-256 hex digest")
      end
    end
  end)
  if not ok then
    if type(err) == "table" and err.manifest then return nil, err.message, "EMANIFEST" end
    error(err, 0)
  end
  return true
end

--- Reads the download journal, if any: entries by canister.
function M.read_download_journal(dir)
  local file = dir .. "/" .. M.DOWNLOAD_JOURNAL
  local text = engine.fs.read(file, 256 << 20)
  if not text then return nil end
  local doc, err = json.decode(text, { name = file })
  if not doc then return nil, err, "EJSON" end
  if doc.journal_version ~= 1 or type(doc.artifacts) ~= "table" then
    return nil, file .. ": journal_version or artifacts invalid", "EMANIFEST"
  end
  local by = {}
  for _, a in ipairs(doc.artifacts) do by[a.canister_id] = a end
  return { doc = doc, by_canister = by, file = file }
end

return M
