--- The fleetsnap backups in a restic repository, from the tags their
-- pushes gave the snapshots (`fleetsnap`, `backup_id=`, `root=`,
-- `policy=`). A snapshot tagged `fleetsnap` without a `backup_id` tag is
-- not one of ours to describe, and is left out.
local errors = require "fleetsnap.errors"

local M = {}

-- The value of tag `key=` among tags, or nil.
local function tag(tags, key)
  for _, t in ipairs(tags or {}) do
    local k, v = tostring(t):match("^([^=]+)=(.*)$")
    if k == key then return v end
  end
end

--- The backups in `repo` (a store.restic repository object), newest
-- first: {backup_id, root, policy, time (restic's, UTC), snapshot_id,
-- short_id, host, paths}. o.backup_id / o.root: only those. Raises the
-- repository's error.
function M.list(repo, o)
  o = o or {}
  local tags = { "fleetsnap" }
  if o.backup_id then tags[#tags + 1] = "backup_id=" .. o.backup_id end
  if o.root then tags[#tags + 1] = "root=" .. o.root end
  local snaps, err = repo:snapshots({ tags = tags })
  if not snaps then error(errors.from_driver(err), 0) end
  local out = {}
  for _, s in ipairs(snaps) do
    local id = tag(s.tags, "backup_id")
    if id then
      out[#out + 1] = { backup_id = id, root = tag(s.tags, "root"), policy = tag(s.tags, "policy"),
        time = s.time, snapshot_id = s.id, short_id = s.short_id or s.id:sub(1, 8), host = s.hostname,
        paths = s.paths }
    end
  end
  table.sort(out, function(a, b)
    if a.time ~= b.time then return tostring(a.time) > tostring(b.time) end
    return a.backup_id > b.backup_id
  end)
  return out
end

return M
