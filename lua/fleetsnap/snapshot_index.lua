--- A complete backup's snapshot index (`fleetsnap-snapshots.json`): the
-- snapshot ids its manifest records, per canister, and the connection its
-- plan recorded, bound to the manifest by the manifest's SHA-256.
--
-- Why it exists: proving a snapshot ours (exec/ownership.lua) reads every
-- sibling backup of a backups directory twice a run. From the manifest and
-- the plan that is a decode of both and a schema check of every member:
-- about 0.7 s of CPU per 10,000-member backup. The index is a small
-- document of the two fields that proof uses; the manifest is only hashed.
--
-- It is derived data, never the only evidence: it counts only while the
-- manifest beside it has the digest it names. An index that is missing,
-- unreadable or stale (the manifest changed since) is ignored, and the
-- backup is read from its manifest and plan as before. It is written
-- (atomically, durably) just before the manifest is published, from the
-- manifest's own bytes, so a published manifest of this version has one.
local engine = require "fleetsnap.engine"
local manifest = require "fleetsnap.manifest"
local schema = require "fleetsnap.schema"

local fs, json = engine.fs, engine.json

local M = {}

M.FILE = "fleetsnap-snapshots.json"
M.FORMAT = "fleetsnap-snapshot-index"

local S = schema
local NONEMPTY = S.string({ nonempty = true })
local SCHEMA = S.object({
  { "format", S.string({ one_of = { M.FORMAT } }) },
  { "format_version", S.integer({ one_of = { 1 }, what = "version 1" }) },
  { "backup_id", NONEMPTY },
  -- The manifest beside it, by the one name this version publishes: never
  -- a path that could bind the index to another directory's file.
  { "manifest_file", S.string({ one_of = { manifest.FILE_036 } }) },
  { "manifest_sha256", S.hex64() },
  { "connection", S.nullable(S.connection()) },
  { "snapshots", S.array(S.object({ { "canister_id", NONEMPTY }, { "snapshot_id", NONEMPTY } })) },
})

--- The index of a 0.36 manifest: `man` its decoded document, `text` its
-- exact bytes, `connection` the plan's (or nil).
function M.build(man, text, connection)
  local snapshots = {}
  for i, m in ipairs(man.fleet.members) do
    snapshots[i] = json.ordered({ canister_id = m.canister_id, snapshot_id = m.source_snapshot.snapshot_id },
      { "canister_id", "snapshot_id" })
  end
  return json.ordered({ format = M.FORMAT, format_version = 1, backup_id = man.backup_id,
    manifest_file = manifest.FILE_036, manifest_sha256 = engine.hash.sha256(text), connection = connection or json.null,
    snapshots = json.array(snapshots) },
    { "format", "format_version", "backup_id", "manifest_file", "manifest_sha256", "connection", "snapshots" })
end

--- Writes the index into `dir`, replacing an earlier one atomically (a
-- retried finalize writes the same bytes). true, or nil, message, code.
function M.write(dir, index)
  return fs.write_replace(dir .. "/" .. M.FILE, json.encode(index, { pretty = true }))
end

--- The index of `dir` when it is there, well-formed and names the
-- manifest beside it as it is now (by digest): the decoded index.
-- Otherwise nil, why and a registry code (the caller reads the manifest
-- instead; the reason is for a debug message).
function M.read(dir)
  local path = dir .. "/" .. M.FILE
  local text, err, code = fs.read(path, 64 << 20)
  if not text then return nil, path .. ": " .. tostring(err), schema.read_code(code) end
  local doc, jerr = json.decode(text, { name = path })
  if doc == nil then return nil, jerr, "ECORRUPT" end
  local ok, why, wcode = schema.check(doc, SCHEMA, path)
  if not ok then return nil, why, wcode end
  local sum, herr, hcode = engine.hash.file(dir .. "/" .. doc.manifest_file)
  if not sum then return nil, path .. ": " .. tostring(herr), schema.read_code(hcode) end
  if sum ~= doc.manifest_sha256 then
    return nil, path .. ": stale (the manifest changed since it was written)", "ECORRUPT"
  end
  return doc
end

return M
