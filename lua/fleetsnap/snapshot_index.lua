--- A complete backup's snapshot index (`fleetsnap-snapshots.json`): the
-- snapshot ids its manifest records, per canister, and the connection its
-- plan recorded, bound by SHA-256 to the manifest and the plan it was
-- derived from.
--
-- Why it exists: proving a snapshot ours (exec/ownership.lua) reads every
-- sibling backup of a backups directory twice a run. From the manifest and
-- the plan that is a decode of both and a schema check of every member:
-- about 0.7 s of CPU per 10,000-member backup. The index holds the two
-- things that proof uses; the manifest and the plan are only hashed.
--
-- It says nothing the two documents do not: this tool writes it from their
-- bytes, and it counts only while both are byte for byte the ones it names.
-- An index that is missing, unreadable or stale (either document changed
-- since) is ignored, and the backup is read from its manifest and plan as
-- before. It is written (atomically, durably) right after the manifest is
-- published, before the backup is recorded finalized: a crash in between
-- is resumed through finalize, which writes it then.
local engine = require "fleetsnap.engine"
local backup_plan = require "fleetsnap.backup.plan"
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
  { "plan_sha256", S.hex64() },
  { "connection", S.nullable(S.connection()) },
  { "snapshots", S.array(S.object({ { "canister_id", NONEMPTY }, { "snapshot_id", NONEMPTY } })) },
})

--- The index of a 0.36 manifest: `man` its decoded document,
-- `manifest_sha256` the digest of its exact bytes, `plan_sha256` the
-- digest of the plan file beside it and `connection` that plan's (or nil).
function M.build(man, manifest_sha256, plan_sha256, connection)
  local snapshots = {}
  for i, m in ipairs(man.fleet.members) do
    snapshots[i] = json.ordered({ canister_id = m.canister_id, snapshot_id = m.source_snapshot.snapshot_id },
      { "canister_id", "snapshot_id" })
  end
  return json.ordered({ format = M.FORMAT, format_version = 1, backup_id = man.backup_id,
    manifest_file = manifest.FILE_036, manifest_sha256 = manifest_sha256, plan_sha256 = plan_sha256,
    connection = connection or json.null, snapshots = json.array(snapshots) },
    { "format", "format_version", "backup_id", "manifest_file", "manifest_sha256", "plan_sha256", "connection",
      "snapshots" })
end

--- Writes the index into `dir`, replacing an earlier one atomically (a
-- retried finalize writes the same bytes). true, or nil, message, code.
function M.write(dir, index)
  return fs.write_replace(dir .. "/" .. M.FILE, json.encode(index, { pretty = true }))
end

-- Whether dir/name has the digest `want`: true, or nil, why, code.
local function same_bytes(path, name, dir, want)
  local sum, err, code = engine.hash.file(dir .. "/" .. name)
  if not sum then return nil, path .. ": " .. tostring(err), schema.read_code(code) end
  if sum ~= want then return nil, path .. ": stale (" .. name .. " changed since it was written)", "ECORRUPT" end
  return true
end

--- The index of `dir` when it is there, well-formed, and the manifest and
-- plan beside it are the ones it names (by digest): the decoded index.
-- Otherwise nil, why and a registry code (the caller reads the manifest
-- and plan instead; the reason is for a debug message).
function M.read(dir)
  local path = dir .. "/" .. M.FILE
  local text, err, code = fs.read(path, 64 << 20)
  if not text then return nil, path .. ": " .. tostring(err), schema.read_code(code) end
  local doc, jerr = json.decode(text, { name = path })
  if doc == nil then return nil, jerr, "ECORRUPT" end
  local ok, why, wcode = schema.check(doc, SCHEMA, path)
  if not ok then return nil, why, wcode end
  ok, why, wcode = same_bytes(path, doc.manifest_file, dir, doc.manifest_sha256)
  if not ok then return nil, why, wcode end
  ok, why, wcode = same_bytes(path, backup_plan.FILE, dir, doc.plan_sha256)
  if not ok then return nil, why, wcode end
  return doc
end

return M
