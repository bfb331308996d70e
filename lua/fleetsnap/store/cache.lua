--- The cache of pulled backups that `restore plan restic:<ref>` plans
-- from: a backups directory of its own (`<cache>/<backup id>/`, each a
-- backup `store/pull.lua` published after verifying it), a stamp per
-- backup (`<cache>/.<backup id>.pulled`: when it was pulled and last used,
-- the manifest's SHA-256 and each artifact's stat fingerprint), and one
-- lock (`<cache>/.lock`) held while a backup is pulled or reused and
-- planned, while the cache is trimmed, and while a repository prune
-- decides what is in use.
--
-- A cached backup is reused when it is intact by a cheap check that reads
-- no artifact byte: its stamp is there, its manifest hashes to the
-- recorded SHA-256, and every artifact's stat fingerprint (files, sizes,
-- inodes, mtimes, ctimes) is the one taken right after the pull verified
-- it; any write since moves it. The restore plan then verifies the backup
-- in full, as for any backup.
--
-- Over the size limit the least recently used backups are evicted, never
-- one a restore is using (a restore planned, running or unfinished in its
-- default state directory, a drill of it, or its backup runner alive) and
-- never the one just used; one that alone is over the limit stays (said
-- so).
local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local dirs = require "fleetsnap.dirs"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local paths = require "fleetsnap.paths"
local pull = require "fleetsnap.store.pull"
local restore_state = require "fleetsnap.restore.state"
local snapshots = require "fleetsnap.store.snapshots"

local json, fs = engine.json, engine.fs

local M = {}

-- 20 GiB unless told otherwise (the CLI: FLEETSNAP_CACHE_LIMIT).
M.DEFAULT_LIMIT = 20 * 1024 * 1024 * 1024

local function stamp_path(cache, id)
  return cache .. "/." .. id .. ".pulled"
end

local function lock(cache)
  dirs.make_parents(cache)
  local ok, err, code = fs.mkdir_private(cache)
  if not ok then errors.raise(errors.engine_code(code), "cache " .. cache .. ": " .. tostring(err)) end
  local l, lerr, lcode = engine.lock.acquire(cache .. "/.lock", { wait_ms = 600000 })
  if not l then errors.raise(errors.engine_code(lcode), "cache " .. cache .. ": " .. tostring(lerr)) end
  return l
end

--- Whether the cached backup in `dir` is in use: its backup runner holds
-- its lock, or a restore from it (default state directory) is planned and
-- not finished, running, or a drill of it is (restore/state.lua). A state
-- that cannot be read counts as in use.
function M.in_use(dir)
  if catalog.running(dir) then return true end
  local ok, used = pcall(restore_state.in_use, dir)
  if not ok or used then return true end
  -- A planned restore that has not run yet counts too (restore/state.lua
  -- says "none" for it, and for one aborted before it began).
  local state = restore_state.dir(dir)
  if not fs.lstat(state .. "/" .. restore_state.PLAN) then return false end
  local pok, st = pcall(restore_state.peek, state .. "/" .. restore_state.JOURNAL)
  if not pok then return true end
  if st.finalized or st.aborted then return false end
  local uok, undo = pcall(restore_state.peek, state .. "/" .. restore_state.UNDO_JOURNAL)
  return not (uok and undo.finalized)
end

-- The stamp of `id`, or nil.
local function read_stamp(cache, id)
  local text = fs.read(stamp_path(cache, id))
  local doc = text and json.decode(text)
  if type(doc) ~= "table" or doc.backup_id ~= id then return nil end
  return doc
end

local function write_stamp(cache, doc)
  local ok, err, code = fs.write_replace(stamp_path(cache, doc.backup_id), json.encode(doc))
  if not ok then errors.raise(errors.engine_code(code), stamp_path(cache, doc.backup_id) .. ": " .. tostring(err)) end
end

-- Each artifact's stat fingerprint and the manifest's SHA-256 of the
-- backup in `dir`, or nil and why not.
local function evidence(dir)
  local man, err = manifest.read(dir)
  if not man then return nil, err end
  local out = { manifest_sha256 = man.sha256, artifacts = {} }
  for _, m in ipairs(man.members) do
    local rel = m.source_snapshot.artifact_path
    local path, perr = paths.check_beneath(dir, rel)
    if not path then return nil, perr end
    local fp, ferr = engine.hash.fingerprint(path)
    if not fp then return nil, path .. ": " .. tostring(ferr) end
    out.artifacts[rel] = fp.fingerprint
  end
  return out
end

--- Whether the cached backup `id` is intact (the module's cheap check).
-- Returns true, or false and why not.
function M.intact(cache, id)
  local stamp = read_stamp(cache, id)
  if not stamp then return false, "no stamp (the pull did not finish)" end
  local now, why = evidence(cache .. "/" .. id)
  if not now then return false, why end
  if now.manifest_sha256 ~= stamp.manifest_sha256 then return false, "its manifest changed" end
  for rel, fp in pairs(stamp.artifacts or {}) do
    if now.artifacts[rel] ~= fp then return false, "artifact " .. rel .. " changed since the pull" end
  end
  for rel in pairs(now.artifacts) do
    if not (stamp.artifacts or {})[rel] then return false, "artifact " .. rel .. " was not pulled" end
  end
  return true
end

-- The size of a cached backup (stat alone), 0 when it cannot be walked.
local function size_of(dir)
  local fp = engine.hash.fingerprint(dir)
  return fp and fp.bytes or 0
end

--- The backups in the cache: [{backup_id, dir, used_ns, bytes, in_use}],
-- least recently used first.
function M.entries(cache)
  local out = {}
  for _, name in ipairs(fs.list(cache) or {}) do
    local dir = cache .. "/" .. name
    if name:sub(1, 1) ~= "." and catalog.is_backup(dir) then
      local stamp = read_stamp(cache, name)
      out[#out + 1] = { backup_id = name, dir = dir, used_ns = stamp and stamp.used_ns or 0, bytes = size_of(dir),
        in_use = M.in_use(dir) }
    end
  end
  table.sort(out, function(a, b)
    if a.used_ns ~= b.used_ns then return a.used_ns < b.used_ns end
    return a.backup_id < b.backup_id
  end)
  return out
end

-- Evicts least recently used backups (not in use, not `keep`) until the
-- cache is within `limit`; removes the stamps of backups that are gone
-- and what dead pulls staged. Returns {evicted = [ids], bytes, over}.
local function trim(cache, limit, keep)
  for _, name in ipairs(fs.list(cache) or {}) do
    local id = name:match("^%.(.+)%.pulled$")
    if id and not fs.lstat(cache .. "/" .. id) then os.remove(cache .. "/" .. name) end
    -- A pull stages under the cache lock, which this run holds.
    if name:match("^%..+%.fleetsnap%-pull$") then fs.remove_tree(cache .. "/" .. name) end
  end
  local entries = M.entries(cache)
  local total = 0
  for _, e in ipairs(entries) do total = total + e.bytes end
  local evicted = {}
  for _, e in ipairs(entries) do
    if total <= limit then break end
    if e.backup_id ~= keep and not e.in_use then
      local ok, err, code = fs.remove_tree(e.dir)
      if not ok then errors.raise(errors.engine_code(code), "evicting " .. e.dir .. ": " .. tostring(err)) end
      os.remove(stamp_path(cache, e.backup_id))
      total = total - e.bytes
      evicted[#evicted + 1] = e.backup_id
    end
  end
  return { evicted = evicted, bytes = total, over = total > limit }
end

--- Runs `use(dir)` on the backup `ref` (`latest` or a backup id) of the
-- repository, from the cache: reused when cached and intact (an explicit
-- id does not even ask the repository), pulled otherwise (a damaged copy
-- not in use is removed first; one in use is refused, EVERIFY). Holds the
-- cache lock throughout, so nothing evicts the backup while `use` plans a
-- restore from it; trims the cache afterwards. opts: repo (a function
-- returning the store driver's repository, opened only when needed),
-- root (for `latest`), limit (bytes; DEFAULT_LIMIT). Returns {dir,
-- backup_id, reused, snapshot_id (pulled only), evicted, bytes (the
-- cache's), over_limit, result (use's)}.
function M.with(cache, ref, opts, use)
  if ref ~= snapshots.LATEST then
    local parts = paths.components(ref)
    if not parts or #parts ~= 1 then errors.raise("EUSAGE", "restic:" .. ref .. ": not a backup id nor latest") end
  end
  local _lock <close> = lock(cache)
  local id, found
  if ref ~= snapshots.LATEST and catalog.is_backup(cache .. "/" .. ref) and M.intact(cache, ref) then
    id = ref
  else
    found = pull.find(opts.repo(), ref, { root = opts.root })
    id = found.backup_id
  end
  local dir = cache .. "/" .. id
  local parts = paths.components(id)
  if not parts or #parts ~= 1 then errors.raise("ECORRUPT", "backup id " .. id .. " is not a directory name") end
  local res = { dir = dir, backup_id = id, reused = false }
  local stamp
  if fs.lstat(dir) then
    local ok, why = M.intact(cache, id)
    if ok then
      res.reused = true
      stamp = read_stamp(cache, id)
    elseif M.in_use(dir) then
      errors.raise("EVERIFY", "the cached copy " .. dir .. " is damaged (" .. why .. ") and a restore is using it")
    else
      local rok, rerr, rcode = fs.remove_tree(dir)
      if not rok then errors.raise(errors.engine_code(rcode), dir .. ": " .. tostring(rerr)) end
    end
  end
  if not res.reused then
    found = found or pull.find(opts.repo(), ref, { root = opts.root })
    local pulled = pull.pull(opts.repo(), found, dir)
    local ev, why = evidence(dir)
    if not ev then errors.raise("ECORRUPT", why) end
    res.snapshot_id = pulled.snapshot_id
    stamp = { backup_id = id, snapshot_id = pulled.snapshot_id, pulled_ns = engine.realtime_ns(),
      manifest_sha256 = ev.manifest_sha256, artifacts = ev.artifacts }
  end
  stamp.used_ns = engine.realtime_ns()
  write_stamp(cache, stamp)
  res.result = use(dir)
  local t = trim(cache, opts.limit or M.DEFAULT_LIMIT, id)
  res.evicted, res.bytes, res.over_limit = t.evicted, t.bytes, t.over
  return res
end

--- The backup ids of the cache that a restore is using (M.in_use), under
-- the cache lock, which `hold(ids)` runs within (a repository prune
-- forgets while no restore can begin from the cache).
function M.holding_in_use(cache, hold)
  -- No cache yet: nothing in it is in use (and a dry run makes none).
  if not fs.lstat(cache) then return hold({}) end
  local _lock <close> = lock(cache)
  local ids = {}
  for _, e in ipairs(M.entries(cache)) do
    if e.in_use then ids[e.backup_id] = e.dir end
  end
  return hold(ids)
end

--- The cached backup `id` (restore run, status, undo of a plan made from
-- the cache): its directory, or raises ENOTFOUND.
function M.find(cache, id)
  local dir = cache .. "/" .. id
  local parts = paths.components(id)
  if not parts or #parts ~= 1 or not catalog.is_backup(dir) then
    errors.raise("ENOTFOUND", "backup " .. id .. " is not in the cache " .. cache .. " (restore plan pulls it)")
  end
  return dir
end

return M
