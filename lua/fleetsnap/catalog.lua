--- The backups of a directory as a catalogue: listing, resolving a
-- reference (directory, id or list row), and pruning by keep rules. A
-- backup whose documents cannot be read is listed as corrupt, never
-- allowed to break the listing of the others.
local engine = require "fleetsnap.engine"
local backup_plan = require "fleetsnap.backup.plan"
local manifest = require "fleetsnap.manifest"
local restore_state = require "fleetsnap.restore.state"

local fs = engine.fs

local M = {}


--- The backups under dir, newest first: {name, dir, complete, locked,
-- created_ns}.
function M.inventory(dir)
  local out = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    local path = dir .. "/" .. name
    local plan = backup_plan.read(path)
    local man = manifest.read(path)
    if plan or man then
      local created = plan and plan.created_ns
      if not created and man then
        local secs = tostring(man.doc.created_at):match("^unix:(%d+)$")
        created = secs and tonumber(secs) * 1000000000 or 0
      end
      local locked = not engine.lock.probe(path .. "/" .. "fleetsnap-journal.wal.lock")
        or restore_state.in_use(path)
      out[#out + 1] = { name = name, dir = path, complete = man ~= nil, locked = locked, created_ns = created or 0 }
    end
  end
  table.sort(out, function(a, b)
    if a.created_ns ~= b.created_ns then return a.created_ns > b.created_ns end
    return a.name > b.name
  end)
  return out
end

--- Chooses what to delete: complete, unlocked backups kept by none of the
-- rules (the newest `last`; the newest of each of the `daily` most recent
-- days and `weekly` most recent weeks). Incomplete or locked backups are
-- never candidates.
function M.prune_plan(backups, rules)
  local keep, days, weeks = {}, {}, {}
  local complete = {}
  for _, b in ipairs(backups) do
    if b.complete and not b.locked then complete[#complete + 1] = b end
  end
  for i, b in ipairs(complete) do
    if i <= (rules.last or 0) then keep[b.dir] = "last" end
    local secs = b.created_ns // 1000000000
    local day, week = os.date("!%Y-%m-%d", secs), os.date("!%G-W%V", secs)
    if not days[day] and #(days.list or {}) < (rules.daily or 0) then
      days[day] = true
      days.list = days.list or {}
      days.list[#days.list + 1] = day
      keep[b.dir] = keep[b.dir] or "daily"
    end
    if not weeks[week] and #(weeks.list or {}) < (rules.weekly or 0) then
      weeks[week] = true
      weeks.list = weeks.list or {}
      weeks.list[#weeks.list + 1] = week
      keep[b.dir] = keep[b.dir] or "weekly"
    end
  end
  local delete = {}
  for _, b in ipairs(complete) do
    if not keep[b.dir] then delete[#delete + 1] = b end
  end
  return delete, keep
end

--- Deletes a backup directory, under its lock so that no runner is using it.
function M.remove(b)
  local lock, err, code = engine.lock.acquire(b.dir .. "/" .. "fleetsnap-journal.wal.lock")
  if not lock then return nil, err, code end
  local ok, rerr, rcode = fs.remove_tree(b.dir)
  lock:close()
  return ok, rerr, rcode
end


return M
