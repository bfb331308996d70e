--- Which snapshots are ours. A snapshot is replaced, loaded or deleted
-- only when evidence proves fleetsnap created it:
--   * a run's own: it is in the canister's inventory now and was not in
--     the baseline inventory its claim recorded before the effect (an id
--     icp printed that is not new there is a failure, never trusted);
--   * a finished backup's: its manifest, under the same backups
--     directory, records it for that canister, and its plan says it was
--     taken on the same network as this run (read from the backup's
--     snapshot index while both documents are the bytes it was made from).
-- Anything else on a canister is foreign and never touched.
local backup_plan = require "fleetsnap.backup.plan"
local engine = require "fleetsnap.engine"
local manifest = require "fleetsnap.manifest"
local schema = require "fleetsnap.schema"
local snapshot_index = require "fleetsnap.snapshot_index"

local fs, json = engine.fs, engine.json

local M = {}

--- The ids of a snapshot inventory (a claim's baseline).
function M.ids(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = s.snapshot_id end
  return out
end

local function set(ids)
  local s = {}
  for _, id in ipairs(ids or {}) do s[id] = true end
  return s
end

--- Snapshots in `list` (an inventory) that are not in `baseline` (ids).
function M.new_snapshots(baseline, list)
  local before = set(baseline)
  local new = {}
  for _, s in ipairs(list) do
    if not before[s.snapshot_id] then new[#new + 1] = s end
  end
  return new
end

--- Whether `id` (printed by icp) is proven ours by the inventory: present
-- in `list` and absent from `baseline`. Returns the inventory entry, or
-- nil and why not.
function M.prove(id, baseline, list)
  if set(baseline)[id] then
    return nil, "it was already there before this run's command (not created by it)"
  end
  for _, s in ipairs(list) do
    if s.snapshot_id == id then return s end
  end
  return nil, "the canister does not have it"
end

--- The snapshot a claimed create or upload left, by inventory: the new
-- ones since the claim's baseline, plus the one the claim replaced if it
-- is still there (a replace that did not happen). Returns the list.
function M.left_by(claim, list)
  local out = M.new_snapshots(claim.baseline or {}, list)
  if claim.replace then
    for _, s in ipairs(list) do
      if s.snapshot_id == claim.replace then out[#out + 1] = s end
    end
  end
  return out
end

-- What names a network in a recorded connection. The identity and the
-- icp binary do not: a snapshot belongs to its canister, whoever asks.
local NETWORK_KEYS = { "sim", "network", "root_key", "environment", "project_root_override" }

--- Whether two recorded connections (plans' `connection`) name the same
-- network. Canister ids and snapshot ids repeat across networks (every
-- fresh local replica counts from the same ids), so a snapshot id recorded
-- on one network proves nothing about a snapshot of that id on another;
-- an unknown connection (nil) matches none.
function M.same_network(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for _, k in ipairs(NETWORK_KEYS) do
    if a[k] ~= b[k] then return false end
  end
  return true
end

local CONNECTION = schema.connection()

-- The connection a backup directory's plan recorded, or nil. Only that
-- field is read and checked: the manifest is what the rest relies on.
local function recorded_connection(dir)
  local text = fs.read(dir .. "/" .. backup_plan.FILE, 64 << 20)
  local doc = text and json.decode(text)
  if type(doc) ~= "table" or doc.connection == nil then return nil end
  if not schema.check(doc.connection, CONNECTION, dir) then return nil end
  return doc.connection
end

--- Snapshot ids recorded by the complete backups under `parent` (the
-- backups directory) that were taken on the network `connection` names:
-- id -> {backup, canister}. A backup whose manifest cannot be read records
-- nothing (it is listed as corrupt elsewhere); nor does one from another
-- network, or one whose plan does not say (a backup another tool made).
--
-- A backup's snapshot index (snapshot_index.lua) is what this tool derived
-- from its manifest and plan; it stands for them while both are the bytes
-- it names, which costs a hash of each instead of decoding and checking
-- both documents.
function M.known(parent, connection)
  local known = {}
  for _, name in ipairs(fs.list(parent) or {}) do
    local dir = parent .. "/" .. name
    local index = snapshot_index.read(dir)
    if index then
      if M.same_network(index.connection, connection) then
        for _, s in ipairs(index.snapshots) do
          known[s.snapshot_id] = { backup = dir, canister = s.canister_id }
        end
      end
    elseif M.same_network(recorded_connection(dir), connection) then
      local ok, m = pcall(manifest.read, dir)
      if ok and m then
        for _, member in ipairs(m.members) do
          known[member.source_snapshot.snapshot_id] = { backup = dir, canister = member.canister_id }
        end
      end
    end
  end
  return known
end

return M
