--- The fleetsnap backups in a restic repository as `backup list --repo`
-- shows them: one row per snapshot a push made, read through
-- store/snapshots.lua (the tags `fleetsnap`, `backup_id=`, `root=`,
-- `policy=`). A snapshot that is not one of ours is left out.
local errors = require "fleetsnap.errors"
local snapshots = require "fleetsnap.store.snapshots"

local M = {}

--- The backups in `repo` (a store.restic repository object), newest
-- first: {backup_id, root, policy, time (restic's, UTC), snapshot_id,
-- short_id, host, paths}. o.backup_id / o.root: only those. Raises the
-- repository's error.
function M.list(repo, o)
  o = o or {}
  local tags = { snapshots.TAG }
  if o.backup_id then tags[#tags + 1] = "backup_id=" .. o.backup_id end
  if o.root then tags[#tags + 1] = "root=" .. o.root end
  local snaps, err = repo:snapshots({ tags = tags })
  if not snaps then error(errors.from_driver(err), 0) end
  local out = {}
  for _, s in ipairs(snaps) do
    local r = snapshots.row(s)
    if r then
      out[#out + 1] = { backup_id = r.backup_id, root = r.root, policy = r.policy, time = r.time,
        time_ns = r.time_ns, snapshot_id = r.id, short_id = s.short_id or r.id:sub(1, 8), host = r.host,
        paths = s.paths }
    end
  end
  table.sort(out, function(a, b)
    if a.time_ns ~= b.time_ns then return a.time_ns > b.time_ns end
    if a.backup_id ~= b.backup_id then return a.backup_id > b.backup_id end
    return a.snapshot_id > b.snapshot_id
  end)
  for _, r in ipairs(out) do r.time_ns = nil end
  return out
end

return M
