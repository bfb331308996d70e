--- `backup prune` of a restic repository: the local prune's keep rules
-- (catalog.prune_plan: the newest `last`, the newest of each of the
-- `daily` most recent days and `weekly` most recent weeks) applied to the
-- fleetsnap backups of the repository, per fleet root, and the snapshots
-- of the backups they do not keep forgotten with `restic forget --prune
-- <ids...>`.
--
-- Not `restic forget --tag fleetsnap --group-by host,tags --keep-...`:
-- every snapshot carries its own `backup_id=` tag, so grouping by tags
-- would make each backup a group of one and keep them all. fleetsnap
-- decides the set itself and names the snapshots.
--
-- A backup a restore is using is never forgotten, and does not count
-- towards a rule (as locally): a pulled copy in the cache that a restore
-- is using (store/cache.lua), or a local backup of the same id that is in
-- use (catalog.inventory's `locked`: its runner alive, a restore or drill
-- from it unfinished).
local catalog = require "fleetsnap.catalog"
local errors = require "fleetsnap.errors"
local pull = require "fleetsnap.store.pull"

local M = {}

-- The ids of the local backups under `dir` that are in use: id -> why.
local function local_in_use(dir)
  local out = {}
  if not dir then return out end
  for _, e in ipairs(catalog.inventory(dir)) do
    if e.locked and e.backup_id then out[e.backup_id] = "in use locally (" .. e.dir .. ")" end
  end
  return out
end

--- What the keep `rules` ({last, daily, weekly}, at least one) make of the
-- repository's fleetsnap backups, forgetting unless opts.dry_run. opts:
-- backups_dir (the local backups directory, for what is in use there),
-- in_use (backup id -> why, e.g. the cache's), dry_run. Returns {backups
-- = [{backup_id, root, time_ns, snapshots = [ids], action ("forget",
-- "keep (last)", "keep (daily)", "keep (weekly)", "keep (in use)"),
-- reason}] newest first, forget = [snapshot ids], forgotten = [snapshot
-- ids]}. Raises the driver's failure of the listing or of the forget.
function M.run(repo, rules, opts)
  opts = opts or {}
  if not (rules.last or rules.daily or rules.weekly) then
    errors.raise("EUSAGE", "prune needs at least one keep rule (last, daily or weekly)")
  end
  local used = local_in_use(opts.backups_dir)
  for id, why in pairs(opts.in_use or {}) do used[id] = used[id] or why end
  local backups = pull.backups(repo)
  -- One keep-rule selection per root: a fleet's backups never make
  -- another fleet's go.
  local by_root, roots = {}, {}
  for _, b in ipairs(backups) do
    local root = b.root or ""
    if not by_root[root] then
      by_root[root] = {}
      roots[#roots + 1] = root
    end
    -- catalog.prune_plan's entry shape: keyed by `dir`, newest first.
    table.insert(by_root[root], { dir = b.backup_id, name = b.backup_id, complete = true, state = "complete",
      created_ns = b.time_ns, locked = used[b.backup_id] ~= nil, backup = b })
  end
  local res = { backups = {}, forget = {}, forgotten = {} }
  local action = {}
  for _, root in ipairs(roots) do
    local delete, keep = catalog.prune_plan(by_root[root], rules)
    for _, e in ipairs(delete) do action[e.dir] = "forget" end
    for dir, rule in pairs(keep) do action[dir] = "keep (" .. rule .. ")" end
  end
  for _, b in ipairs(backups) do
    local ids = {}
    for i, s in ipairs(b.snapshots) do ids[i] = s.id end
    local row = { backup_id = b.backup_id, root = b.root, time_ns = b.time_ns, snapshots = ids,
      action = action[b.backup_id] or "keep (in use)", reason = used[b.backup_id] }
    if row.action == "forget" then
      for _, id in ipairs(ids) do res.forget[#res.forget + 1] = id end
    end
    res.backups[#res.backups + 1] = row
  end
  if not opts.dry_run and #res.forget > 0 then
    local ok, err = repo:forget(res.forget, { prune = true })
    if not ok then error(errors.from_driver(err), 0) end
    res.forgotten = res.forget
  end
  return res
end

return M
