--- The backups of a directory as a catalogue: reading one backup's
-- documents into an entry, listing (newest first), resolving a reference
-- (directory, id, unique id prefix or `latest`), comparing two backups,
-- and pruning by keep rules.
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

-- A number of the documents, nil when absent or JSON null.
local function number(v)
  return math.type(v) == "integer" and v or nil
end

-- What a listing shows beside the state: the root, the policy, the bytes
-- and the consistency window. The bytes and the window are fleetsnap's
-- own additions to the manifest: an upstream backup has neither (nil).
local function describe(entry, plan, man)
  local fsn = man and man.line == "0.36" and man.doc.fleetsnap or nil
  entry.root = plan and plan.root or (man and man.doc.source.root_canister)
  entry.policy = plan and plan.policy.name or (fsn and fsn.policy)
  if fsn then
    local bytes = 0
    for _, m in ipairs(fsn.members) do bytes = bytes + m.bytes end
    entry.bytes = bytes
    entry.window_ns = number(fsn.consistency_window.window_ns)
  end
end

--- One backup directory as an entry: {name, dir, state ("complete",
-- "incomplete" or "corrupt"), complete, reason (corrupt only), backup_id,
-- members (count), created_ns, root, policy, bytes and window_ns (complete
-- fleetsnap backups only), plan, manifest}. Never raises for what the
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
  describe(entry, plan, man)
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

-- Newest first; a corrupt entry (no time) last. The name breaks ties, so
-- that the order never depends on the file system's.
local function newer(a, b)
  if a.created_ns ~= b.created_ns then return a.created_ns > b.created_ns end
  return a.name > b.name
end

-- Every backup under `dir` as an entry (M.read), newest first.
local function entries(dir)
  local out = {}
  for _, name in ipairs(names(dir)) do out[#out + 1] = M.read(dir .. "/" .. name, name) end
  table.sort(out, newer)
  return out
end

--- The backups under `dir`, newest first, as list rows: {id (the directory
-- name), dir, state, complete, reason (corrupt only), backup_id, members,
-- created_ns (nil when corrupt), root, policy, bytes, window_ns}. opts.root:
-- only the backups of that root (corrupt ones, whose root nobody can
-- tell, are left out too). There are no row numbers: a number that means
-- another backup once one is added or pruned is no reference.
function M.list(dir, opts)
  opts = opts or {}
  local rows = {}
  for _, e in ipairs(entries(dir)) do
    if not opts.root or e.root == opts.root then
      rows[#rows + 1] = { id = e.name, dir = e.dir, state = e.state, complete = e.complete, reason = e.reason,
        backup_id = e.backup_id, members = e.members, created_ns = e.created_ns ~= 0 and e.created_ns or nil,
        root = e.root, policy = e.policy, bytes = e.bytes, window_ns = e.window_ns }
    end
  end
  return rows
end

M.LATEST = "latest"

-- The newest complete backup among `all` (newest first) of `root`, or of
-- the one root they hold. Several roots without `root` is a usage error:
-- "latest" would be a guess between fleets.
local function latest(all, dir, root)
  local roots, seen, pick = {}, {}, nil
  for _, e in ipairs(all) do
    if e.state == "complete" and (not root or e.root == root) then
      pick = pick or e
      if not seen[e.root] then
        seen[e.root] = true
        roots[#roots + 1] = tostring(e.root)
      end
    end
  end
  if not pick then
    return nil, "no complete backup" .. (root and (" of root " .. root) or "") .. " under " .. dir, "ENOTFOUND"
  end
  if #roots > 1 then
    table.sort(roots)
    return nil, "latest is ambiguous: " .. dir .. " holds complete backups of " .. #roots .. " roots ("
      .. table.concat(roots, ", ") .. "): name the root whose latest to take", "EUSAGE"
  end
  return pick.dir
end

--- A backup reference: a directory; `latest` (the newest complete backup
-- under `dir`; opts.root names the fleet when `dir` holds several); or a
-- backup's id (its directory name, or the manifest's backup_id where that
-- differs) under `dir`, exact or a unique prefix. Returns the directory,
-- or nil, message, code: "ENOTFOUND" (nothing matches), "EUSAGE" (an
-- ambiguous prefix, naming the candidates, or an ambiguous `latest`).
function M.resolve(ref, dir, opts)
  opts = opts or {}
  local st = fs.lstat(ref)
  if st and st.type == "directory" then return ref end
  local all = entries(dir)
  if ref == M.LATEST then return latest(all, dir, opts.root) end
  if ref ~= "" then
    local prefixed = {}
    for _, e in ipairs(all) do
      if e.name == ref or e.backup_id == ref then return e.dir end
      if e.name:sub(1, #ref) == ref or (type(e.backup_id) == "string" and e.backup_id:sub(1, #ref) == ref) then
        prefixed[#prefixed + 1] = e
      end
    end
    if #prefixed == 1 then return prefixed[1].dir end
    if #prefixed > 1 then
      local candidates = {}
      for i, e in ipairs(prefixed) do candidates[i] = e.name end
      table.sort(candidates)
      return nil, "backup " .. ref .. " is ambiguous under " .. dir .. ": it begins " .. #prefixed .. " ids ("
        .. table.concat(candidates, ", ") .. "); give more of the id", "EUSAGE"
    end
  end
  return nil, "no backup " .. ref .. " (nor under " .. dir .. ")", "ENOTFOUND"
end

--- `resolve`, raising its error.
function M.find(ref, dir, opts)
  local path, err, code = M.resolve(ref, dir, opts)
  if not path then errors.raise(code, err) end
  return path
end

-- {=== comparing two backups ===}

-- The members of a complete entry by canister: {canister_id, role,
-- module_hash, checksum, bytes, files (path -> sha256)}, and their order.
-- bytes and files come from fleetsnap's section (nil in an upstream
-- backup, which records only each member's tree checksum).
local function members_of(e)
  local extra = {}
  local fsn = e.manifest.line == "0.36" and e.manifest.doc.fleetsnap or nil
  for _, x in ipairs(fsn and fsn.members or {}) do extra[x.canister_id] = x end
  local by, order = {}, {}
  for _, m in ipairs(e.manifest.members) do
    local x, files = extra[m.canister_id], nil
    if x then
      files = {}
      for _, f in ipairs(x.files) do files[f.path] = f.sha256 end
    end
    local s = m.source_snapshot
    by[m.canister_id] = { canister_id = m.canister_id, role = m.role,
      module_hash = type(s.module_hash) == "string" and s.module_hash or nil,
      checksum = type(s.checksum) == "string" and s.checksum or nil, bytes = x and x.bytes, files = files }
    order[#order + 1] = m.canister_id
  end
  return by, order
end

local METADATA = "metadata.json"

-- The paths whose digest differs between two file maps, or that only one
-- has, sorted.
local function files_changed(fa, fb)
  local out = {}
  for path, sha in pairs(fa) do
    if fb[path] ~= sha then out[#out + 1] = path end
  end
  for path in pairs(fb) do
    if fa[path] == nil then out[#out + 1] = path end
  end
  table.sort(out)
  return out
end

-- An entry that can be compared: complete, so that it has a manifest.
local function comparable(dir)
  local e = M.open(dir)
  if not e.complete then
    errors.raise("EPRECONDITION", "backup " .. e.name .. " is incomplete: only complete backups can be compared",
      { next = { command = { "backup", "resume" }, ref = e.dir } })
  end
  return e
end

--- What changed from the backup in `a_dir` to the one in `b_dir` (both
-- complete). Returns {a, b (entries), added, removed (member records of
-- the one side), changed = [{canister_id, role, module_hash_changed,
-- checksum_changed, data_changed (anything but metadata.json), bytes_a,
-- bytes_b, files_changed (paths; nil when either side has no per-file
-- digests)}], same = [records]}, each in
-- manifest order (b's for added and changed, a's for removed). A member
-- is changed when its checksum (the digest of its whole artifact tree) or
-- its module hash differs.
function M.diff(a_dir, b_dir)
  local a, b = comparable(a_dir), comparable(b_dir)
  local ma, order_a = members_of(a)
  local mb, order_b = members_of(b)
  local res = { a = a, b = b, added = {}, removed = {}, changed = {}, same = {} }
  for _, cid in ipairs(order_a) do
    if not mb[cid] then res.removed[#res.removed + 1] = ma[cid] end
  end
  for _, cid in ipairs(order_b) do
    local x, y = ma[cid], mb[cid]
    if not x then
      res.added[#res.added + 1] = y
    else
      local module_changed = x.module_hash ~= y.module_hash
      -- A null checksum (upstream allows one) proves nothing: changed.
      local checksum_changed = x.checksum ~= y.checksum or x.checksum == nil
      if module_changed or checksum_changed then
        local files = x.files and y.files and files_changed(x.files, y.files) or nil
        -- Every snapshot's metadata.json records when it was taken: two
        -- backups of an unchanged canister differ there and nowhere else.
        local data_changed = module_changed or files == nil
        for _, path in ipairs(files or {}) do data_changed = data_changed or path ~= METADATA end
        res.changed[#res.changed + 1] = { canister_id = cid, role = y.role, module_hash_changed = module_changed,
          checksum_changed = checksum_changed, data_changed = data_changed, bytes_a = x.bytes, bytes_b = y.bytes,
          files_changed = files }
      else
        res.same[#res.same + 1] = y
      end
    end
  end
  return res
end

--- Whether the backup in `dir` has a live runner: its journal lock is
-- held (or cannot even be probed, which a caller must treat the same).
-- Without a lock file no runner ever took it; probing would create one,
-- and a reader (verify) writes nothing.
function M.running(dir)
  local lock = dir .. "/" .. backup_status.JOURNAL .. ".lock"
  if not fs.lstat(lock) then return false end
  return not engine.lock.probe(lock)
end

-- A backup is in use while its runner holds the journal lock, or while a
-- restore from it is unfinished (X-08). A lock that cannot even be probed
-- counts as in use: pruning must err on keeping.
local function in_use(path)
  if M.running(path) then return true end
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
