--- `backup pull`: a backup of a restic repository made a local backup
-- directory again. restic restores the snapshot into a private staging
-- directory next to the destination (a snapshot `backup push` made holds
-- the backup directory as `.`, its files at the top; one of an absolute
-- path has them under that path, found from the snapshot's `paths`); every artifact is verified against the manifest
-- (verify.lua: the manifest valid, every file's size and SHA-256); only
-- then is the backup published with a no-replace rename and the parent
-- directory fsynced. A destination that exists is refused, never
-- overwritten; a failed pull publishes nothing and leaves no staging.
--
-- The repository is the store driver's object (store/restic.lua): its
-- methods return a value, or nil and an error table {code, message}.
local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local dirs = require "fleetsnap.dirs"
local errors = require "fleetsnap.errors"
local paths = require "fleetsnap.paths"
local push = require "fleetsnap.store.push"
local snapshots = require "fleetsnap.store.snapshots"
local verify = require "fleetsnap.verify"

local fs = engine.fs

local M = {}

--- The fleetsnap backups of the repository (snapshots.backups), or
-- raises the driver's failure through the registry.
function M.backups(repo)
  local list, err = repo:snapshots({ tags = { snapshots.TAG } })
  if not list then error(errors.from_driver(err), 0) end
  return snapshots.backups(list)
end

--- The backup `ref` (`latest` or a backup id) of the repository, or
-- raises ENOTFOUND (EUSAGE for an ambiguous `latest`). opts.root: the
-- root whose latest backup to take.
function M.find(repo, ref, opts)
  -- A backup id is pulled by its tag without listing the repository first
  -- (one restic command fewer: a repository open costs a second); M.pull
  -- lists only when that finds nothing usable.
  if ref ~= snapshots.LATEST and not (opts and opts.listed) then return { backup_id = ref, lazy = true } end
  local b, why, code = snapshots.find(M.backups(repo), ref, opts and opts.root)
  if not b then errors.raise(code, why) end
  return b
end

local function split(path)
  local parent, name = path:match("^(.*)/([^/]+)/*$")
  if not parent then return ".", path end
  return parent == "" and "/" or parent, name
end

-- Removes the staging directory, raising what the engine says.
local function remove(staging)
  local ok, err, code = fs.remove_tree(staging)
  if not ok then errors.raise(errors.engine_code(code), "pull staging " .. staging .. ": " .. tostring(err)) end
end

-- What restic 0.14 prints when a blob it reads does not match its
-- hash or MAC: the repository's bytes are damaged.
local DAMAGED = { "ciphertext verification failed", "hash mismatch", "Data has been tampered", "invalid data returned",
  "wrong length" }

-- Failures to reach or open the repository, as opposed to a snapshot
-- that is missing or does not do: the same for every restic command.
local REACH = { ENOREPO = true, EREPOKEY = true, EREPONET = true, EREPOLOCKED = true }

-- A verify report's problems, one line each.
local function problems(report)
  local lines = {}
  for _, m in ipairs(report.members) do
    for _, p in ipairs(m.problems) do lines[#lines + 1] = m.canister_id .. ": " .. p end
  end
  return lines
end

-- Restores snapshot `s` of backup `b` into `staging` and checks it: the
-- staged backup directory, or nil, why, and the registry code.
local function stage(repo, b, s, staging)
  local ok, rerr = repo:restore(s.id, staging, { tags = s.tags })
  if ok and s.tags then
    -- `latest` of the backup's tag: the snapshot restic chose.
    if not ok.snapshot_id then return nil, "restic restore named no snapshot", "EREPO" end
    s.id = ok.snapshot_id
  end
  if not ok then
    local e = errors.from_driver(rerr)
    -- An interrupt ends the pull (the staging is removed on the way out).
    if e.code == "EINTERRUPTED" then error(e, 0) end
    -- restic checks every blob it reads: a damaged pack is a failed
    -- verification, not a failure to run (its lines name the files).
    local tail = tostring(rerr.stderr_tail or "")
    for _, text in ipairs(DAMAGED) do
      if tail:find(text, 1, true) then
        local lines = {}
        for line in tail:gmatch("[^\n]+") do
          if line:find(text, 1, true) then lines[#lines + 1] = line end
        end
        return nil, string.format("snapshot %s: the repository's data does not verify (restic: %s)", s.id,
          table.concat(lines, "; ")), "EVERIFY"
      end
    end
    return nil, "restic restore of snapshot " .. s.id .. ": " .. e.message, e.code
  end
  -- `backup push` backs the directory up as `.`, so its files are at the
  -- target's top; a snapshot of the absolute path (`restic backup
  -- /srv/b/x`) has them under that path beneath the target: no `..`, no
  -- symlink on the way (a repository is input, like a manifest).
  local staged = staging
  -- A snapshot found by its tag alone is taken only as `backup push`
  -- makes them, the backup at the top; anything else goes by the listing.
  if s.tags and not catalog.is_backup(staging) then
    return nil, "snapshot " .. s.id .. " does not hold the backup at its top", "ENOTFOUND"
  end
  if not catalog.is_backup(staging) then
    local perr, pcode
    staged, perr, pcode = paths.check_beneath(staging, (s.path:gsub("^/+", "")))
    if not staged then return nil, "snapshot " .. s.id .. ": " .. perr, pcode end
  end
  local st = fs.lstat(staged)
  if not st or st.type ~= "directory" then
    return nil, "snapshot " .. s.id .. ": " .. s.path .. " is not a directory", "ECORRUPT"
  end
  local entry = catalog.read(staged, b.backup_id)
  if entry.state == "corrupt" then return nil, "snapshot " .. s.id .. ": " .. entry.reason, "ECORRUPT" end
  if not entry.complete then
    return nil, "snapshot " .. s.id .. " holds no manifest: not a complete backup", "EVERIFY"
  end
  if entry.backup_id ~= b.backup_id then
    return nil, string.format("snapshot %s is tagged backup_id=%s, its manifest says %s", s.id, b.backup_id,
      tostring(entry.backup_id)), "EVERIFY"
  end
  -- The tree is fsynced before its publication; its writeback starts now,
  -- to run while the verification reads it.
  local wok, werr, wcode = fs.sync_tree(staged, { start = true })
  if not wok then return nil, "snapshot " .. s.id .. ": " .. tostring(werr), errors.engine_code(wcode) end
  local vok, report = pcall(verify.backup, staged)
  if not vok then
    local e = errors.wrap(report)
    if e.code == "EINTERRUPTED" or e.code == "EINTERNAL" then error(report, 0) end
    return nil, "snapshot " .. s.id .. ": " .. e.message, e.code
  end
  if not report.ok then
    return nil, "snapshot " .. s.id .. " does not verify:\n  " .. table.concat(problems(report), "\n  "), "EVERIFY"
  end
  s.entry = entry
  return staged, report
end

--- Pulls backup `b` (M.find's) of `repo` into `dest`, which must not
-- exist. Tries the backup's snapshots newest first and publishes the first
-- that verifies. Returns {dir, backup_id, snapshot_id, root, time_ns,
-- report (verify.backup's)}. Raises ECONFLICT when `dest` exists (before
-- and after the restore: it is never replaced), EVERIFY when no snapshot
-- verifies (or a restic code when restic failed for each), EIO for the
-- file system.
function M.pull(repo, b, dest)
  dest = dest:gsub("/+$", "")
  if fs.lstat(dest) then
    errors.raise("ECONFLICT", dest .. " exists: a pull never replaces anything (choose another destination)")
  end
  local parent, name = split(dest)
  dirs.make_parents(dest)
  -- One pull per destination: under this lock a staging directory found
  -- is a dead pull's, and is removed.
  local lock, lerr, lcode = engine.lock.acquire(parent .. "/." .. name .. ".fleetsnap-pull.lock")
  if not lock then errors.raise(errors.engine_code(lcode), "pull into " .. dest .. ": " .. tostring(lerr)) end
  local _lock <close> = lock
  if fs.lstat(dest) then
    errors.raise("ECONFLICT", dest .. " exists: a pull never replaces anything (choose another destination)")
  end
  local staging = parent .. "/." .. name .. ".fleetsnap-pull"
  remove(staging)
  local failures, code = {}, nil
  local ok, res = pcall(function()
    local candidates = b.snapshots
    if b.lazy then
      -- The newest snapshot with the backup's tag, restored without a
      -- listing; when there is none, or it does not do, the listing
      -- decides (not found, or each snapshot of the backup in turn).
      candidates = { { id = "latest", tags = { snapshots.TAG, "backup_id=" .. b.backup_id } } }
    end
    local i = 0
    while i < #candidates do
      i = i + 1
      local s = candidates[i]
      local made, merr, mcode = fs.mkdir_private(staging)
      if not made then errors.raise(errors.engine_code(mcode), "pull staging " .. staging .. ": " .. tostring(merr)) end
      local staged, report, why = stage(repo, b, s, staging)
      if staged and b.lazy then
        -- What the listing would have said, from the backup itself.
        b = { backup_id = b.backup_id, root = s.entry.root, time_ns = push.capture_ns(s.entry) }
      end
      if staged then
        local synced, serr, scode = fs.sync_tree(staged)
        if not synced then errors.raise(errors.engine_code(scode), staged .. ": " .. tostring(serr)) end
        local published, perr, pcode = fs.publish_dir(staged, dest, { synced = true, key = name })
        if not published then
          if pcode == "EEXIST" then
            errors.raise("ECONFLICT", dest .. " exists: a pull never replaces anything (choose another destination)")
          end
          errors.raise(errors.engine_code(pcode), "publishing " .. dest .. ": " .. tostring(perr))
        end
        -- The short id, as push records it and restore names it.
        return { dir = dest, backup_id = b.backup_id, snapshot_id = s.id:sub(1, 8), root = b.root,
          time_ns = b.time_ns, report = report }
      end
      remove(staging)
      if b.lazy and REACH[why] then
        -- The repository could not be read at all (no repository, a
        -- wrong password, the network, a lock): a listing would fail the
        -- same way, one more repository open later.
        errors.raise(why, report)
      elseif b.lazy then
        b = M.find(repo, b.backup_id, { listed = true })
        candidates, i = b.snapshots, 0
      else
        failures[#failures + 1] = report
        -- A verification failure outranks restic's: the bytes are known bad.
        if code ~= "EVERIFY" then code = why end
      end
    end
    return nil
  end)
  -- Nothing of a failed pull stays; a published one leaves only the
  -- empty directories of the source path.
  local rok, rerr, rcode = fs.remove_tree(staging)
  if not ok then error(res, 0) end
  if not rok then errors.raise(errors.engine_code(rcode), "pull staging " .. staging .. ": " .. tostring(rerr)) end
  if not res then
    errors.raise(code or "EVERIFY", "backup " .. b.backup_id .. " was not pulled; nothing was published:\n  "
      .. table.concat(failures, "\n  "))
  end
  return res
end

return M
