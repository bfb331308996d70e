--- The backups of a directory as a catalogue: reading one backup's
-- documents into an entry, listing, resolving a reference (directory, id
-- or list row), and pruning by keep rules.
--
-- A backup whose plan or manifest cannot be read, or is not of the shape
-- the rest of fleetsnap relies on, is an entry in state "corrupt" with the
-- reason: it is listed, never deleted, never counted by the keep rules,
-- and never stops the listing or pruning of the others. Its readers may
-- return nil, message, code or raise on a mistyped field; both are caught
-- here.
--
-- Requires only the documents' readers and the restore state: backup and
-- restore both use the catalogue, so it must require neither.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local backup_plan = require "fleetsnap.backup.plan"
local backup_status = require "fleetsnap.backup.status"
local manifest = require "fleetsnap.manifest"
local restore_state = require "fleetsnap.restore.state"

local fs = engine.fs

local M = {}

local MANIFESTS = { manifest.FILE_036, manifest.FILE_108 }

local function present(dir, name)
  return fs.lstat(dir .. "/" .. name) ~= nil
end

--- Whether `dir` holds a backup's documents (read or not): its plan or
-- either manifest.
function M.is_backup(dir)
  if present(dir, backup_plan.FILE) then return true end
  for _, name in ipairs(MANIFESTS) do
    if present(dir, name) then return true end
  end
  return false
end

-- The text of a caught error, without the reader's file:line: the reason
-- is for the operator, who cannot act on where in Lua it was found.
local function reason_of(v)
  if type(v) == "table" and v.message then return tostring(v.message) end
  return (tostring(v):gsub("^[^\n:]*%.lua:%d+: ", ""))
end

-- A member without a checksum: the reader accepts it (0.36 was lenient),
-- but nothing can prove its bytes, so it never counts as a complete backup
-- a keep rule could stand on. A checksum of null is upstream's own shape
-- and stays readable.
local function manifest_problem(man)
  local sname = man.line == "0.36" and "fleet" or "deployment"
  for i, m in ipairs(man.members) do
    if m.source_snapshot.checksum == nil then
      return string.format("%s: %s.members[%d].source_snapshot.checksum: missing (the member cannot be verified)",
        man.file, sname, i)
    end
  end
  return nil
end

--- The plan of the backup in `dir`: the document, or nil and why not
-- (nil, nil when there is none).
function M.read_plan(dir)
  if not present(dir, backup_plan.FILE) then return nil end
  local ok, plan, err = pcall(backup_plan.read, dir)
  if not ok then
    return nil, dir .. "/" .. backup_plan.FILE .. ": not of the expected shape (" .. reason_of(plan) .. ")"
  end
  if not plan then return nil, err end
  return plan
end

--- The manifest of the backup in `dir`, as manifest.read gives it: the
-- manifest, or nil and why not (nil, nil when there is none).
function M.read_manifest(dir)
  local any = false
  for _, name in ipairs(MANIFESTS) do any = any or present(dir, name) end
  if not any then return nil end
  local ok, man, err = pcall(manifest.read, dir)
  if not ok then return nil, dir .. ": manifest not of the expected shape (" .. reason_of(man) .. ")" end
  if not man then return nil, err end
  local problem = manifest_problem(man)
  if problem then return nil, problem end
  return man
end

local function created_ns(plan, man)
  if plan and plan.created_ns then return plan.created_ns end
  local secs = man and tostring(man.doc.created_at):match("^unix:(%d+)$")
  local n = secs and math.tointeger(tonumber(secs))
  return n and n * 1000000000 or 0
end

--- One backup directory as an entry: {name, dir, state ("complete",
-- "incomplete" or "corrupt"), complete, reason (corrupt only), backup_id,
-- members (count), created_ns, plan, manifest}. Never raises for what the
-- documents hold.
function M.read(dir, name)
  local entry = { name = name or dir:match("([^/]+)/*$") or dir, dir = dir }
  local plan, perr = M.read_plan(dir)
  local man, merr = M.read_manifest(dir)
  local reason = perr or merr
  if reason then
    entry.state, entry.complete, entry.reason, entry.created_ns = "corrupt", false, reason, 0
    return entry
  end
  entry.plan, entry.manifest = plan, man
  entry.complete = man ~= nil
  entry.state = man and "complete" or "incomplete"
  entry.backup_id = plan and plan.backup_id or (man and man.doc.backup_id)
  entry.members = man and #man.members or (plan and #plan.targets) or 0
  entry.created_ns = created_ns(plan, man)
  return entry
end

--- An entry that can be used: the entry of `dir`, or raises ENOTFOUND (no
-- backup there) or ECORRUPT (with the reason).
function M.open(dir)
  if not M.is_backup(dir) then
    errors.raise("ENOTFOUND", "no backup in " .. dir .. " (no " .. backup_plan.FILE .. " nor manifest)")
  end
  local entry = M.read(dir)
  if entry.state == "corrupt" then errors.raise("ECORRUPT", entry.reason) end
  return entry
end

-- The names of the backups under `dir`, in list order (fs.list sorts).
local function names(dir)
  local out = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    if M.is_backup(dir .. "/" .. name) then out[#out + 1] = name end
  end
  return out
end

--- The backups under `dir` as list rows, numbered as `resolve` numbers
-- them: {n, id, dir, state, complete, members, backup_id, reason}.
function M.list(dir)
  local rows = {}
  for i, name in ipairs(names(dir)) do
    local e = M.read(dir .. "/" .. name, name)
    rows[i] = { n = i, id = name, dir = e.dir, state = e.state, complete = e.complete, members = e.members,
      backup_id = e.backup_id, reason = e.reason }
  end
  return rows
end

--- A backup reference: a directory, or an id or list number under `dir`.
-- Returns the directory, or nil, message, "ENOTFOUND".
function M.resolve(ref, dir)
  local st = fs.lstat(ref)
  if st and st.type == "directory" then return ref end
  local list = names(dir)
  local n = math.tointeger(tonumber(ref))
  if n and list[n] then return dir .. "/" .. list[n] end
  for _, name in ipairs(list) do
    if name == ref then return dir .. "/" .. name end
  end
  return nil, "no backup " .. ref .. " (nor under " .. dir .. ")", "ENOTFOUND"
end

--- `resolve`, raising ENOTFOUND.
function M.find(ref, dir)
  local path, err, code = M.resolve(ref, dir)
  if not path then errors.raise(code, err) end
  return path
end

-- A backup is in use while its runner holds the journal lock, or while a
-- restore from it is unfinished (X-08). A lock that cannot even be probed
-- counts as in use: pruning must err on keeping.
local function in_use(path)
  if not engine.lock.probe(path .. "/" .. backup_status.JOURNAL .. ".lock") then return true end
  local ok, used = pcall(restore_state.in_use, path)
  return not ok or used
end

--- The backups under dir, newest first: the entries of `read` plus
-- `locked`.
function M.inventory(dir)
  local out = {}
  for _, name in ipairs(names(dir)) do
    local e = M.read(dir .. "/" .. name, name)
    e.locked = e.state ~= "corrupt" and in_use(e.dir)
    out[#out + 1] = e
  end
  table.sort(out, function(a, b)
    if a.created_ns ~= b.created_ns then return a.created_ns > b.created_ns end
    return a.name > b.name
  end)
  return out
end

--- Chooses what to delete: complete, unlocked backups kept by none of the
-- rules (the newest `last`; the newest of each of the `daily` most recent
-- days and `weekly` most recent weeks). Incomplete, corrupt or locked
-- backups are never candidates, and never count towards a rule.
function M.prune_plan(backups, rules)
  local keep, days, weeks = {}, {}, {}
  local ndays, nweeks = 0, 0
  local complete = {}
  for _, b in ipairs(backups) do
    if b.complete and b.state ~= "corrupt" and not b.locked then complete[#complete + 1] = b end
  end
  for i, b in ipairs(complete) do
    if i <= (rules.last or 0) then keep[b.dir] = "last" end
    local secs = b.created_ns // 1000000000
    local day, week = os.date("!%Y-%m-%d", secs), os.date("!%G-W%V", secs)
    if not days[day] and ndays < (rules.daily or 0) then
      days[day], ndays = true, ndays + 1
      keep[b.dir] = keep[b.dir] or "daily"
    end
    if not weeks[week] and nweeks < (rules.weekly or 0) then
      weeks[week], nweeks = true, nweeks + 1
      keep[b.dir] = keep[b.dir] or "weekly"
    end
  end
  local delete = {}
  for _, b in ipairs(complete) do
    if not keep[b.dir] then delete[#delete + 1] = b end
  end
  return delete, keep
end

--- Deletes a backup directory, under its lock so that no runner is using
-- it. A corrupt entry is refused: nobody can tell what it still holds.
function M.remove(b)
  if b.state == "corrupt" then return nil, b.dir .. ": corrupt backups are never deleted", "ECORRUPT" end
  local lock, err, code = engine.lock.acquire(b.dir .. "/" .. backup_status.JOURNAL .. ".lock")
  if not lock then return nil, err, code end
  local ok, rerr, rcode = fs.remove_tree(b.dir)
  lock:close()
  return ok, rerr, rcode
end

--- What each backup under `dir` becomes under the keep `rules` ({last,
-- daily, weekly}, at least one), deleting unless opts.dry_run.
-- opts.before_remove(backup, all, delete), if given, is called for each
-- chosen backup (in a dry run too) and may refuse: nil, why. Returns
-- {backups = [{backup, dir, action, reason}] newest first, delete = [names]
-- (chosen), deleted = [names], failed = [{backup, message}]}.
function M.prune(dir, rules, opts)
  opts = opts or {}
  if not (rules.last or rules.daily or rules.weekly) then
    -- Without a rule every complete backup would go.
    errors.raise("EUSAGE", "prune needs at least one keep rule (last, daily or weekly)")
  end
  local all = M.inventory(dir)
  local delete, keep = M.prune_plan(all, rules)
  local res = { backups = {}, delete = {}, deleted = {}, failed = {} }
  for _, b in ipairs(all) do
    local action = b.state == "corrupt" and "keep (corrupt)" or keep[b.dir] and ("keep (" .. keep[b.dir] .. ")")
      or (not b.complete and "keep (incomplete)") or (b.locked and "keep (in use)") or "delete"
    res.backups[#res.backups + 1] = { backup = b.name, dir = b.dir, action = action, reason = b.reason }
  end
  for _, b in ipairs(delete) do
    res.delete[#res.delete + 1] = b.name
    -- What must go before the directory (its snapshots on the canisters:
    -- cleanup.lua); a refusal keeps the backup, whose manifest is the
    -- proof of what it owns.
    local ready, why = true, nil
    if opts.before_remove then ready, why = opts.before_remove(b, all, delete) end
    if not ready then
      res.failed[#res.failed + 1] = { backup = b.name, message = tostring(why) }
    elseif not opts.dry_run then
      local ok, err = M.remove(b)
      if ok then
        res.deleted[#res.deleted + 1] = b.name
      else
        res.failed[#res.failed + 1] = { backup = b.name, message = tostring(err) }
      end
    end
  end
  return res
end

return M
