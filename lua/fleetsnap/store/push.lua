--- Pushing a complete backup to a restic repository: one restic snapshot
-- of the backup directory, tagged so that it can be found again
-- (`fleetsnap`, `backup_id=<id>`, `root=<root>`, `policy=<name>`), with the
-- fleet's root as host and the capture time as time.
--
-- Claim before effect: the push record (fleetsnap-push.json in the backup
-- directory, written durably) says "pushing" before restic runs, then
-- "pushed" with the snapshot id, or "failed" with the error. Idempotent
-- and resumable: before running `restic backup`, the snapshots tagged with
-- the backup's id are looked up, and one that holds every file of the
-- backup with its size (restic ls) is adopted instead of adding another.
-- A snapshot restic wrote while it could not read some files (exit 3) is
-- never adopted: its id is recorded as rejected before it is forgotten, so
-- that even a crash between the two never lets a retry adopt it.
--
-- The artifacts are not re-hashed: the backup was verified when it was
-- published, and restic reads every byte anyway.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local catalog = require "fleetsnap.catalog"
local dirs = require "fleetsnap.dirs"
local backup_status = require "fleetsnap.backup.status"
local restore_state = require "fleetsnap.restore.state"
local executor = require "fleetsnap.exec.executor"

local json, fs = engine.json, engine.fs

local M = {}

M.RECORD = "fleetsnap-push.json"
M.FORMAT = 1

-- What of a backup directory is not the backup: its locks, the command
-- locks of a run, a restore's state, durable writes' temp files and the
-- push record itself (it changes after the snapshot is taken).
-- A restore's state directory is the backup's `restore/` unless the
-- restore named another place (then it is not inside).
local function excluded_names()
  local restore = restore_state.dir(""):match("^/(.+)$")
  return { backup_status.JOURNAL .. ".lock", ".fleetsnap-commands", M.RECORD, restore }
end
local TEMP_PATTERN = ".*.fsn-tmp-*"

--- restic exclude patterns for the backup directory `dir` (absolute).
function M.excludes(dir)
  local out = {}
  for _, name in ipairs(excluded_names()) do out[#out + 1] = dir .. "/" .. name end
  out[#out + 1] = TEMP_PATTERN
  return out
end

local function is_temp(name)
  return name:match("^%..+%.fsn%-tmp%-") ~= nil
end

--- The files of the backup as a push holds them: relative path ("/a/b",
-- as restic ls names them) -> size, without what `excludes` leaves out.
-- Directories and symlinks are not counted (a backup has only files and
-- directories; restic keeps both).
function M.files(dir)
  local out, n = {}, 0
  local skip = {}
  for _, name in ipairs(excluded_names()) do skip["/" .. name] = true end
  local function walk(abs, rel)
    for _, name in ipairs(fs.list(abs) or {}) do
      local r = rel .. "/" .. name
      if not skip[r] and not is_temp(name) then
        local st = fs.lstat(abs .. "/" .. name)
        if st and st.type == "directory" then
          walk(abs .. "/" .. name, r)
        elseif st then
          out[r] = { type = st.type, size = st.size }
          n = n + 1
        end
      end
    end
  end
  walk(dir, "")
  return out, n
end

--- Whether the nodes of a snapshot (restic ls) hold exactly `files`: the
-- same paths, each a file of the same size. Returns true, or false and the
-- first difference.
function M.holds(nodes, files)
  local seen, n = {}, 0
  for _, node in ipairs(nodes) do
    if node.type ~= "dir" then
      local want = files[node.path]
      if not want then return false, node.path .. " is not in the backup" end
      if want.type == "file" and (node.type ~= "file" or node.size ~= want.size) then
        return false, string.format("%s: %s bytes in the snapshot, %d here", node.path, tostring(node.size),
          want.size)
      end
      seen[node.path] = true
      n = n + 1
    end
  end
  for path in pairs(files) do
    if not seen[path] then return false, path .. " is missing from the snapshot" end
  end
  return true, n
end

--- The tags of a backup's snapshot (catalog entry `e`).
function M.tags(e)
  return { "fleetsnap", "backup_id=" .. e.backup_id, "root=" .. tostring(e.root), "policy=" .. tostring(e.policy) }
end

--- The capture time of the backup (catalog entry `e`) in whole seconds,
-- as nanoseconds: when the first member stopped (the consistency window's
-- start), else when the manifest was made. The time a push gives its
-- snapshot, and so what a pull reports.
function M.capture_ns(e)
  local fsn = e.manifest and e.manifest.doc.fleetsnap
  local first = fsn and fsn.consistency_window and fsn.consistency_window.first_stop_at
  local ns = math.type(first) == "integer" and first or (e.created_ns or 0)
  return ns // 1000000000 * 1000000000
end

-- restic reads "YYYY-MM-DD HH:MM:SS" in TZ, which the driver sets to UTC.
local function capture_time(e)
  return os.date("!%Y-%m-%d %H:%M:%S", M.capture_ns(e) // 1000000000)
end

--- The push record of the backup in dir: the document, or nil (none), or
-- raises ECORRUPT naming the file.
function M.read_record(dir)
  local path = dir .. "/" .. M.RECORD
  local text, err, code = fs.read(path)
  if not text then
    if code == "ENOENT" then return nil end
    error(errors.from_engine(path, err, code), 0)
  end
  local doc, why = json.decode(text)
  if type(doc) ~= "table" or type(doc.state) ~= "string" then
    errors.raise("ECORRUPT", path .. ": not a push record (" .. tostring(why or "no state") .. ")")
  end
  return doc
end

local FIELDS = { "format", "backup_id", "state", "repository", "started_at", "finished_at", "snapshot_id",
  "adopted", "files", "bytes", "rejected", "error" }

local function write_record(dir, rec)
  local text = json.encode(json.ordered(rec, FIELDS), { pretty = true })
  local ok, err, code = fs.write_replace(dir .. "/" .. M.RECORD, text)
  if not ok then error(errors.from_engine(dir .. "/" .. M.RECORD, err, code), 0) end
end

local function now()
  return os.date("!%Y-%m-%dT%H:%M:%SZ", engine.realtime_ns() // 1000000000)
end

-- The error object of a driver error table.
local function store_error(err)
  return errors.from_driver(err)
end

-- Whether snapshot `id` (a full id) is among `rejected`, which holds
-- the ids as restic's summary printed them (restic 0.14: the short id).
local function is_rejected(rejected, id)
  for r in pairs(rejected) do
    if id:sub(1, #r) == r then return true end
  end
  return false
end

-- The snapshot among `snaps` (newest first) that holds the backup, or nil.
local function complete_snapshot(repo, snaps, files, rejected)
  table.sort(snaps, function(a, b) return tostring(a.time) > tostring(b.time) end)
  for _, s in ipairs(snaps) do
    if not is_rejected(rejected, s.id) then
      local nodes, err = repo:ls(s.id)
      if not nodes then error(store_error(err), 0) end
      if M.holds(nodes, files) then return s end
    end
  end
end

-- The push itself (M.push, under the signal handlers).
local function push(dir, repo)
  dir = dirs.realpath(dir)
  local e = catalog.open(dir)
  if not e.complete then
    errors.raise("EPRECONDITION", "backup " .. dir .. " is not complete: only a complete backup is pushed")
  end
  if not e.backup_id or e.backup_id:find("[,%s]") then
    errors.raise("EPRECONDITION", "backup " .. dir .. ": its id " .. tostring(e.backup_id) .. " cannot be a restic tag")
  end
  local lock, lerr, lcode = engine.lock.acquire(dir .. "/" .. backup_status.JOURNAL .. ".lock")
  if not lock then errors.raise(errors.engine_code(lcode), "backup " .. dir .. ": " .. tostring(lerr)) end
  local _lock <close> = lock
  dirs.clean_temp(dir)
  local old = M.read_record(dir)
  local rejected, rejected_list = {}, {}
  if old and old.repository == repo:name() and type(old.rejected) == "table" then
    for _, id in ipairs(old.rejected) do
      if type(id) == "string" then
        rejected[id] = true
        rejected_list[#rejected_list + 1] = id
      end
    end
  end
  local rec = { format = M.FORMAT, backup_id = e.backup_id, state = "pushing", repository = repo:name(),
    started_at = now(), rejected = json.array(rejected_list) }
  write_record(dir, rec)
  local files, nfiles = M.files(dir)
  local tags = M.tags(e)

  local function finish_failed(err)
    rec.state, rec.finished_at, rec.error = "failed", now(), { code = err.code, message = err.message }
    write_record(dir, rec)
    error(err, 0)
  end

  -- No record, or one that says `requested` for this repository (written
  -- by `backup create --push` before the backup began): no push of this
  -- directory has run restic yet, since "pushing" is written before restic
  -- ever runs, so there is no earlier snapshot to look for and the push is
  -- one `restic backup`. A record of any other state (a second push, one
  -- after a crash, one to another repository) looks first. A copy of a
  -- backup directory (a pull, rsync) has no record: pushed into the
  -- repository it came from, it adds a second snapshot of the same backup,
  -- of the same data (restic stores it once).
  local first = not old or (old.state == "requested" and old.repository == repo:name())
  local bytes = 0
  for _, f in pairs(files) do bytes = bytes + (f.size or 0) end
  local ok, res = pcall(function()
    local err
    if not first then
      local snaps
      snaps, err = repo:snapshots({ tags = { "fleetsnap", "backup_id=" .. e.backup_id } })
      if not snaps then error(store_error(err), 0) end
      -- A rejected snapshot whose forget did not happen (a crash, a lock):
      -- forget it now; it is never adopted either way.
      local stale = {}
      for _, s in ipairs(snaps) do
        if is_rejected(rejected, s.id) then stale[#stale + 1] = s.id end
      end
      -- Best effort: a failed forget leaves it rejected in the record.
      if #stale > 0 then repo:forget(stale) end
      local found = complete_snapshot(repo, snaps, files, rejected)
      -- The short id, as restic's summary names a new snapshot.
      if found then return { snapshot_id = found.id:sub(1, 8), adopted = true } end
    end

    engine.failpoint("before-effect", "restic-backup-" .. e.backup_id)
    local b
    -- restic inherits the directory's lock: if fleetsnap dies while restic
    -- runs, no second push starts before restic has ended (and its
    -- snapshot, complete, is then adopted).
    b, err = repo:backup(dir, { tags = tags, host = e.root, time = capture_time(e), excludes = M.excludes(dir),
      inherit = { lock } })
    engine.failpoint("after-effect", "restic-backup-" .. e.backup_id)
    if not b then error(store_error(err), 0) end
    if b.partial then
      rejected[b.snapshot_id] = true
      rec.rejected[#rec.rejected + 1] = b.snapshot_id
      write_record(dir, rec)
      -- Best effort, as above: the record already rejects it.
      repo:forget({ b.snapshot_id })
      error(errors.new("EREPO", string.format("restic could not read some files of backup %s (exit 3): its "
        .. "snapshot %s is not adopted and was forgotten%s", dir, tostring(b.snapshot_id),
        b.stderr_tail and b.stderr_tail ~= "" and ("\n" .. b.stderr_tail:gsub("%s+$", "")) or "")), 0)
    end
    -- Success means the effect happened: restic exited 0 (its snapshot is
    -- saved only after every pack and index it needs) having read exactly
    -- the backup's files and bytes (its summary). A listing would prove
    -- the same at the price of another repository open, a tenth of a
    -- push's time; adoption, which trusts no summary, lists.
    if b.files ~= nfiles or b.bytes ~= bytes then
      error(errors.new("EREPO", string.format("restic backup of %s read %s files and %s bytes, the backup has %d "
        .. "and %d: snapshot %s is not taken as its push", dir, tostring(b.files), tostring(b.bytes), nfiles, bytes,
        tostring(b.snapshot_id))), 0)
    end
    return { snapshot_id = b.snapshot_id, adopted = false }
  end)
  if not ok then finish_failed(errors.wrap(res)) end
  rec.state, rec.finished_at, rec.snapshot_id, rec.adopted = "pushed", now(), res.snapshot_id, res.adopted
  rec.files, rec.bytes = nfiles, bytes
  write_record(dir, rec)
  return { backup_id = e.backup_id, dir = dir, snapshot_id = res.snapshot_id, adopted = res.adopted,
    files = nfiles, bytes = bytes, repository = repo:name() }
end

--- Pushes the complete backup in `dir` to `repo` (a store.restic
-- repository object). Returns {backup_id, snapshot_id, adopted (an
-- existing snapshot was taken as this push's), files, bytes, repository}
-- or raises a registry error.
function M.push(dir, repo)
  -- SIGINT, SIGTERM and SIGHUP end the wait for restic, which is then
  -- stopped (it removes its own lock), and the record says failed.
  return executor.with_signals(function() return push(dir, repo) end)
end


--- Records, before a `backup create --push` runs, that the backup in
-- `dir` is to be pushed to `repo` once complete: the push record in state
-- "requested". A run that resumes the backup after a crash (M.pending)
-- then pushes it too, so the push is the backup's last step whichever
-- run completes it.
function M.request(dir, backup_id, repo)
  write_record(dir, { format = M.FORMAT, backup_id = backup_id, state = "requested", repository = repo:name(),
    started_at = now(), rejected = json.array({}) })
end

--- The push record of the backup in `dir` when a push that `backup create`
-- asked for has not ended (requested, or pushing when a crash cut it
-- short), else nil. A failed push is not pending: `backup push` retries
-- it when the operator says so.
function M.pending(dir)
  local rec = M.read_record(dir)
  if rec and (rec.state == "requested" or rec.state == "pushing") then return rec end
end

--- The push that ends `backup create` with a repository: the backup is
-- complete and its locks are released. Returns the push's result, or nil
-- and an EPUSH error object (the backup stays complete; its cause is the
-- push's own error code, its next step `backup push`).
function M.after_backup(dir, repo)
  local ok, res = pcall(M.push, dir, repo)
  if ok then return res end
  local e = errors.wrap(res)
  local options = {}
  -- The next step names the repository only when its name hides nothing.
  if repo:name() == repo.repository then options.repo = repo:name() end
  return nil, errors.new("EPUSH", string.format("backup %s is complete; its push to %s failed: %s", dir,
    repo:name(), e.message), { cause = e.code, push_error = e,
    next = { command = { "backup", "push" }, ref = dir, options = options } })
end

return M

