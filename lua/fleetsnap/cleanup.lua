--- What fleetsnap left on the canisters, and deleting it: the snapshots
-- of the fleets a backups directory knows, each classed as
--   owned    recorded by a complete backup's manifest (only `backup prune`
--            deletes it, with that backup);
--   orphan   made by one of our backups, its receipt in that backup's
--            journal, yet recorded by no complete backup (an incomplete or
--            failed backup's, or an earlier attempt's);
--   foreign  everything else: never deleted by any command.
-- Evidence is a completed snapshot operation's receipt (a claim the
-- executor settled from the inventory is one too); a claim nobody settled
-- proves nothing (`backup resume` settles it), so what it may have made
-- stays foreign. Every deletion lists the canister first: an id is deleted
-- only while the canister has it.
--
-- Restore journals are not read: a restore's uploads and safety snapshots
-- are its own (`restore run --abort`, `restore undo`), listed as foreign.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local catalog = require "fleetsnap.catalog"
local backup_status = require "fleetsnap.backup.status"
local exec_state = require "fleetsnap.exec.state"
local fleet_lock = require "fleetsnap.exec.fleet_lock"
local manifest = require "fleetsnap.manifest"
local survey = require "fleetsnap.survey"

local fs = engine.fs

local M = {}

-- Deletions at once: effects, yet independent canisters' and cheap.
local DELETE_BOUND = 4

local function parent_of(dir)
  return dir:match("^(.*)/[^/]+$") or "."
end

local function lock_path(dir)
  return dir .. "/" .. backup_status.JOURNAL .. ".lock"
end

-- "pid 123 on host h" for a lock's holder, or what the engine said.
local function holder_text(path, fallback)
  local h = fleet_lock.holder(path)
  if h and h.pid then return string.format("pid %s on %s", tostring(h.pid), tostring(h.host or "this host")) end
  return tostring(fallback or "another process")
end

--- The snapshots the journal of the backup in `dir` proves it made:
-- [{canister, snapshot_id}], every attempt's (a new attempt forgets the
-- old receipts in the replayed state, so every record is read).
function M.journal_snapshots(dir)
  local out, seen = {}, {}
  local ok, err = pcall(exec_state.peek, dir .. "/" .. backup_status.JOURNAL, function(_, r)
    if r.t == "done" and r.kind == "snapshot" and r.state == "completed" and type(r.receipt) == "table"
        and type(r.receipt.snapshot_id) == "string" then
      local cid = tostring(r.op):match("^snapshot%-(.+)$")
      if cid and not seen[cid .. "/" .. r.receipt.snapshot_id] then
        seen[cid .. "/" .. r.receipt.snapshot_id] = true
        out[#out + 1] = { canister = cid, snapshot_id = r.receipt.snapshot_id }
      end
    end
  end)
  if not ok then return nil, errors.wrap(err).message end
  return out
end

-- Snapshot ids a manifest records: "canister/id" -> true.
local function recorded_by(dir)
  local ok, m = pcall(manifest.read, dir)
  local out = {}
  if ok and m then
    for _, member in ipairs(m.members) do
      out[member.canister_id .. "/" .. member.source_snapshot.snapshot_id] = true
    end
  end
  return out
end

-- The distinct canisters of rows ({canister, ...}), in first-seen order.
local function canisters_of(rows)
  local out, seen = {}, {}
  for _, r in ipairs(rows) do
    if not seen[r.canister] then
      seen[r.canister] = true
      out[#out + 1] = r.canister
    end
  end
  return out
end

-- Whether the inventories (M.inventories) show r.snapshot_id on r.canister.
local function listed(lists, r)
  for _, x in ipairs(lists[r.canister] or {}) do
    if x.snapshot_id == r.snapshot_id then return true end
  end
  return false
end

--- Lists the snapshots of `canisters` (ids) many at a time. Returns
-- cid -> list, and cid -> error for those icp could not list (a canister
-- that is gone has no snapshots: an empty list).
function M.inventories(driver, canisters)
  local jobs = {}
  for i, cid in ipairs(canisters) do jobs[i] = { "snapshot_list", { canister = cid } } end
  local lists, failed = {}, {}
  for i, res in ipairs(driver:run_many(jobs, survey.read_bound(1))) do
    local cid = canisters[i]
    if res[1] then
      lists[cid] = res[1]
    elseif res[2] and res[2].code == "CANISTER_GONE" then
      lists[cid] = {}
    else
      failed[cid] = res[2] and res[2].message or "could not list"
    end
  end
  return lists, failed
end

--- Deletes `rows` ({canister, snapshot_id, ...}) in place: each row's
-- action becomes "deleted" (gone already counts) or "failed" with
-- `message`. Returns the number that failed.
function M.delete(driver, rows)
  local jobs = {}
  for i, r in ipairs(rows) do
    jobs[i] = { "snapshot_delete", { canister = r.canister, snapshot_id = r.snapshot_id } }
  end
  local nfailed = 0
  for i, res in ipairs(driver:run_many(jobs, DELETE_BOUND)) do
    if res[2] and res[2].code ~= "SNAPSHOT_GONE" then
      rows[i].action, rows[i].message = "failed", tostring(res[2].message)
      nfailed = nfailed + 1
    else
      rows[i].action = "deleted"
    end
  end
  return nfailed
end

-- {=== the directory's fleets and snapshots ===}

--- The backups under `parent` and what they say: {entries (catalog.read,
-- newest first, `locked` as catalog.inventory), canisters (ids, in first
-- seen order), fleet_of (cid -> root), known (cid/id -> backup name, from
-- complete backups), claimed (cid/id -> {backup, locked}, from every
-- backup's journal)}. `include(entry)` filters the backups whose canisters
-- are listed (another network's are left out).
function M.directory(parent, include)
  local d = { entries = {}, canisters = {}, fleet_of = {}, known = {}, claimed = {}, problems = {} }
  for _, e in ipairs(catalog.inventory(parent)) do
    d.entries[#d.entries + 1] = e
    for key in pairs(recorded_by(e.dir)) do d.known[key] = d.known[key] or e.name end
    local mine, jerr = M.journal_snapshots(e.dir)
    if not mine then d.problems[#d.problems + 1] = e.name .. ": " .. jerr end
    for _, s in ipairs(mine or {}) do
      local key = s.canister .. "/" .. s.snapshot_id
      d.claimed[key] = d.claimed[key] or { backup = e.name, locked = e.locked }
    end
    if e.state ~= "corrupt" and (not include or include(e)) then
      local root = e.plan and e.plan.root
      local targets = e.plan and e.plan.targets or {}
      if not e.plan and e.manifest then
        targets = {}
        for i, m in ipairs(e.manifest.members) do targets[i] = { canister_id = m.canister_id } end
      end
      for _, t in ipairs(targets) do
        if not d.fleet_of[t.canister_id] then
          d.canisters[#d.canisters + 1] = t.canister_id
          d.fleet_of[t.canister_id] = root or false
        end
      end
    end
  end
  return d
end

local function classify(d, cid, s)
  local key = cid .. "/" .. s.snapshot_id
  local row = { canister = cid, snapshot_id = s.snapshot_id, taken_at = s.taken_at, total_size = s.total_size }
  if d.known[key] then
    row.class, row.backup = "owned", d.known[key]
  elseif d.claimed[key] then
    row.class, row.backup = "orphan", d.claimed[key].backup
    -- A running backup's snapshot is not in a manifest yet (a backup a
    -- restore uses is kept as it is, too).
    row.in_use = d.claimed[key].locked or nil
  else
    row.class = "foreign"
  end
  return row
end

--- Every snapshot of the directory's canisters, classed. Returns
-- {dir, canisters = [{canister, root, snapshots = [row], error}], counts =
-- {owned, orphan, foreign}, problems}; row: {canister, snapshot_id,
-- taken_at, total_size, class, backup, in_use}.
function M.snapshots(parent, driver, opts)
  opts = opts or {}
  local d = opts.directory or M.directory(parent, opts.include)
  local lists, failed = M.inventories(driver, d.canisters)
  local res = { dir = parent, canisters = {}, counts = { owned = 0, orphan = 0, foreign = 0 }, problems = d.problems,
    failed = 0 }
  for _, cid in ipairs(d.canisters) do
    local c = { canister = cid, root = d.fleet_of[cid] or nil, snapshots = {}, error = failed[cid] }
    if c.error then res.failed = res.failed + 1 end
    for _, s in ipairs(lists[cid] or {}) do
      local row = classify(d, cid, s)
      c.snapshots[#c.snapshots + 1] = row
      res.counts[row.class] = res.counts[row.class] + 1
    end
    res.canisters[#res.canisters + 1] = c
  end
  return res
end

-- The fleets of the directory's canisters, for the fleet lock.
local function fleets(d, network)
  local out, seen = {}, {}
  for _, cid in ipairs(d.canisters) do
    local root = d.fleet_of[cid]
    if root and not seen[root] then
      seen[root] = true
      out[#out + 1] = { network = network, root = root }
    end
  end
  return out
end

--- `snapshots clean`: the orphans of the directory's canisters, deleted
-- when opts.execute (under the fleets' locks, listed under them). An
-- orphan of a backup whose runner is alive is kept. Returns the listing
-- of M.snapshots plus `orphans` (rows with action "delete" in a dry run,
-- "deleted", "failed" or "keep" with a reason) and `nfailed`.
function M.clean(parent, driver, opts)
  opts = opts or {}
  local d = M.directory(parent, opts.include)
  -- Taken before the listing: what is listed stays true until deleted.
  local _lock <close> = opts.execute and fleet_lock.acquire(fleets(d, driver:network_key()),
    "snapshots clean of " .. parent) or nil
  local res = M.snapshots(parent, driver, { directory = d })
  res.orphans, res.nfailed = {}, 0
  local doomed = {}
  for _, c in ipairs(res.canisters) do
    for _, row in ipairs(c.snapshots) do
      if row.class == "orphan" then
        local o = { canister = row.canister, snapshot_id = row.snapshot_id, backup = row.backup }
        if row.in_use then
          o.action, o.reason = "keep", "its backup is in use (its runner, or a restore from it)"
        else
          o.action = "delete"
          doomed[#doomed + 1] = o
        end
        res.orphans[#res.orphans + 1] = o
      end
    end
  end
  if opts.execute and #doomed > 0 then res.nfailed = M.delete(driver, doomed) end
  return res
end

-- {=== forget ===}

--- `backup forget`: an incomplete backup's snapshots (its journal's
-- receipts that the canister still has and no complete backup records)
-- and then its directory, when opts.execute. Refused for a complete
-- backup (prune's) and while its runner holds the journal lock. Returns
-- {dir, backup, snapshots = [{canister, snapshot_id, action, reason,
-- message}], removed, nfailed, list_failed}.
function M.forget(dir, driver, opts)
  opts = opts or {}
  local entry = catalog.open(dir)
  if entry.complete then
    errors.raise("EPRECONDITION", "backup " .. entry.name .. " is complete: `backup prune` deletes complete backups "
      .. "(with their snapshots); forget is for incomplete ones", { next = { command = "backup prune",
      options = { help = true } } })
  end
  local path = lock_path(dir)
  local lock
  if opts.execute then
    local lerr, lcode
    lock, lerr, lcode = engine.lock.acquire(path)
    if not lock then
      if lcode == "ELOCKED" then
        errors.raise("ELOCKED", "backup " .. entry.name .. " is running (" .. holder_text(path, lerr)
          .. "); nothing was done", { holder = fleet_lock.holder(path) })
      end
      errors.raise(errors.engine_code(lcode), path .. ": " .. tostring(lerr))
    end
  elseif not engine.lock.probe(path) then
    errors.raise("ELOCKED", "backup " .. entry.name .. " is running (" .. holder_text(path) .. "); nothing was done",
      { holder = fleet_lock.holder(path) })
  end
  local res = { dir = dir, backup = entry.name, backup_id = entry.backup_id, snapshots = {}, removed = false,
    nfailed = 0, list_failed = {} }
  local ok, err = pcall(function()
    local mine, jerr = M.journal_snapshots(dir)
    if not mine then errors.raise("ECORRUPT", jerr) end
    local known = {}
    local parent = parent_of(dir)
    for _, name in ipairs(fs.list(parent) or {}) do
      for key in pairs(recorded_by(parent .. "/" .. name)) do known[key] = name end
    end
    local _fleet <close> = opts.execute and #mine > 0 and entry.plan
      and fleet_lock.acquire({ { network = driver:network_key(), root = entry.plan.root } },
        "backup forget " .. entry.name) or nil
    local lists, failed = M.inventories(driver, canisters_of(mine))
    local doomed = {}
    for _, s in ipairs(mine) do
      local row = { canister = s.canister, snapshot_id = s.snapshot_id }
      local key = s.canister .. "/" .. s.snapshot_id
      local present = listed(lists, s)
      if known[key] then
        row.action, row.reason = "keep", "recorded by complete backup " .. known[key]
      elseif failed[s.canister] then
        row.action, row.message = "failed", "could not list the canister: " .. failed[s.canister]
        res.nfailed = res.nfailed + 1
      elseif not present then
        row.action, row.reason = "gone", "no longer on the canister"
      else
        row.action = "delete"
        doomed[#doomed + 1] = row
      end
      res.snapshots[#res.snapshots + 1] = row
    end
    if opts.execute then
      res.nfailed = res.nfailed + M.delete(driver, doomed)
      -- A snapshot that could not be deleted keeps the journal that proves
      -- it ours: the directory stays for the next forget.
      if res.nfailed == 0 then
        local rok, rerr, rcode = fs.remove_tree(dir)
        if not rok then errors.raise(errors.engine_code(rcode), dir .. ": " .. tostring(rerr)) end
        res.removed = true
      end
    end
  end)
  if lock then lock:close() end
  if not ok then error(err, 0) end
  return res
end

-- {=== prune ===}

--- `backup prune` with the on-canister part: catalog.prune's choice, and
-- for each backup it deletes (opts.execute), first the snapshots its
-- manifest records that the canister still has and no kept backup
-- records, under the fleet's lock. opts.connect(entry) gives the driver
-- for a backup's recorded connection, or nil and why not (then its
-- snapshots are kept, said so, and the directory is deleted only when
-- nothing recorded the connection: an imported backup). Returns
-- catalog.prune's result plus `snapshots` = [{backup, canister,
-- snapshot_id, action, reason, message}].
function M.prune(parent, rules, opts)
  opts = opts or {}
  local snapshots = {}
  local kept_ids
  -- The ids every backup that stays records (whatever its state: a
  -- corrupt one's readable manifest counts, erring on keeping).
  local function kept(all, delete)
    if kept_ids then return kept_ids end
    local going = {}
    for _, b in ipairs(delete) do going[b.dir] = true end
    kept_ids = {}
    for _, b in ipairs(all) do
      if not going[b.dir] then
        for key in pairs(recorded_by(b.dir)) do kept_ids[key] = b.name end
      end
    end
    return kept_ids
  end
  local function rows_of(b, keep)
    local out = {}
    for key in pairs(recorded_by(b.dir)) do
      local cid, id = key:match("^(.*)/(%x+)$")
      local row = { backup = b.name, canister = cid, snapshot_id = id, action = "delete" }
      if keep[key] then row.action, row.reason = "keep", "also recorded by kept backup " .. keep[key] end
      out[#out + 1] = row
    end
    table.sort(out, function(x, y) return x.canister < y.canister end)
    return out
  end
  local function before_remove(b, all, delete)
    local rows = rows_of(b, kept(all, delete))
    for _, r in ipairs(rows) do snapshots[#snapshots + 1] = r end
    if not opts.execute then return true end
    local driver, why, fatal = nil, "no connection", false
    if opts.connect then driver, why, fatal = opts.connect(b) end
    if not driver then
      for _, r in ipairs(rows) do
        if r.action == "delete" then r.action, r.reason = "keep", why end
      end
      if fatal then return nil, why end
      return true
    end
    local doomed = {}
    for _, r in ipairs(rows) do if r.action == "delete" then doomed[#doomed + 1] = r end end
    if #doomed == 0 then return true end
    local root = b.plan and b.plan.root
    local _lock <close> = root and fleet_lock.acquire({ { network = driver:network_key(), root = root } },
      "backup prune of " .. b.name) or nil
    local lists, failed = M.inventories(driver, canisters_of(doomed))
    local present, nfailed = {}, 0
    for _, r in ipairs(doomed) do
      local has = listed(lists, r)
      if failed[r.canister] then
        r.action, r.message = "failed", "could not list the canister: " .. failed[r.canister]
        nfailed = nfailed + 1
      elseif has then
        present[#present + 1] = r
      else
        r.action, r.reason = "gone", "no longer on the canister"
      end
    end
    nfailed = nfailed + M.delete(driver, present)
    -- The manifest is the proof: kept while one of its snapshots stays.
    if nfailed > 0 then return nil, nfailed .. " snapshot(s) could not be deleted; the backup is kept" end
    return true
  end
  local res = catalog.prune(parent, rules, { dry_run = not opts.execute, before_remove = before_remove })
  res.snapshots = snapshots
  return res
end

return M
