--- Offline verification of a backup directory: every artifact re-hashed
-- against its manifest checksum (and, for fleetsnap backups, each file
-- against its recorded digest). Used by `backup verify` and by restore
-- planning, which refuses a backup that does not verify.
--
-- A verify may re-hash a subset of the members only (subset.lua): the
-- structural checks (manifest, download journal, checksum present,
-- artifact present and safe, file names and sizes) still cover every
-- member, as they read no byte of content; only the re-hash is sampled.
local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local paths = require "fleetsnap.paths"
local subset = require "fleetsnap.subset"

local json = engine.json

local M = {}

-- The download journal's entry for the manifest's snapshot of a member
-- (upstream binds them by the pair: a journal may list a canister twice).
local function journal_entry(dj, canister_id, snapshot_id)
  for _, a in ipairs(dj.doc.artifacts) do
    if a.canister_id == canister_id and a.snapshot_id == snapshot_id then return a end
  end
  return nil
end

-- The structural checks of a fleetsnap member's files, from the walk's
-- stat alone (hash.fingerprint): every recorded file present with its
-- recorded size, and nothing else.
local function check_sizes(artifact_path, x, fp, problem)
  local have = {}
  for _, f in ipairs(fp.files) do have[f.path] = f end
  for _, f in ipairs(x.files) do
    local h = have[f.path]
    if not h then problem(artifact_path .. "/" .. f.path .. ": missing")
    elseif h.size ~= f.size then
      problem(string.format("%s/%s: %d bytes, the manifest says %d", artifact_path, f.path, h.size, f.size))
    end
    have[f.path] = nil
  end
  local added = {}
  for p in pairs(have) do added[#added + 1] = p end
  table.sort(added)
  for _, p in ipairs(added) do problem(artifact_path .. "/" .. p .. ": not part of the backup") end
end

-- The content checks of a re-hashed member: the tree digest against the
-- checksum, and each file against its recorded digest.
local function check_digests(artifact_path, checksum, x, tree, problem)
  if checksum and tree.digest ~= checksum:lower() then
    problem(string.format("artifact digest %s, manifest says %s", tree.digest, checksum))
  end
  if not x then return end
  local have = {}
  for _, f in ipairs(tree.files) do have[f.path] = f end
  for _, f in ipairs(x.files) do
    local h = have[f.path]
    if not h then problem(artifact_path .. "/" .. f.path .. ": missing")
    elseif h.sha256 ~= f.sha256:lower() then problem(artifact_path .. "/" .. f.path .. ": content differs") end
    have[f.path] = nil
  end
  local added = {}
  for p in pairs(have) do added[#added + 1] = p end
  table.sort(added)
  for _, p in ipairs(added) do problem(artifact_path .. "/" .. p .. ": not part of the backup") end
end

-- The set (cid -> true) of members to re-hash, and what the report says of
-- the choice: {subset, seed}. opts.members: canister ids (each must be a
-- member: EUSAGE naming the first that is not, with `member` set);
-- opts.subset: subset.parse's; opts.seed for a percentage (a new one
-- otherwise). Neither: every member.
local function choose(m, opts)
  local ids, known = {}, {}
  for i, member in ipairs(m.members) do
    ids[i] = member.canister_id
    known[member.canister_id] = true
  end
  if opts.members and #opts.members > 0 then
    local chosen = {}
    for _, cid in ipairs(opts.members) do
      if not known[cid] then
        errors.raise("EUSAGE", cid .. " is not a member of backup " .. tostring(m.doc.backup_id), { member = cid })
      end
      chosen[cid] = true
    end
    return chosen, { subset = json.null, seed = json.null }
  end
  if opts.subset then
    local seed = opts.subset.kind == "percent" and (opts.seed or subset.new_seed()) or nil
    return subset.choose(ids, opts.subset, seed), { subset = opts.subset.text, seed = seed or json.null }
  end
  return known, { subset = json.null, seed = json.null }
end

--- Verifies a backup offline: every artifact re-hashed against its
-- checksum (and, for fleetsnap backups, each file against its digest).
-- `m`: the manifest (manifest.read), if the caller has read it already.
-- opts (optional): {subset (subset.parse's), seed, members (canister
-- ids)}: re-hash only the members these choose; the others get the
-- structural checks alone (file names and sizes, from stat).
-- Returns a report {ok, backup_id, line, checked = {subset, seed,
-- members, members_total, bytes, bytes_total}, members = {{canister_id,
-- snapshot_id, ok, rehashed, bytes, problems}}}. A member fails when it
-- has no checksum (its bytes cannot be checked against anything), when
-- its artifact is absent (the path named), when the download journal
-- disagrees, when a file is missing, added or of another size, or (when
-- re-hashed) when a byte differs.
--
-- Raises (an error object): ENOTFOUND without a manifest; ECORRUPT for a
-- manifest or download journal that is not valid, and for an artifact
-- path through a symlink or with a symlink, device or FIFO inside it;
-- the latter after every member was looked at, naming each such path,
-- with the report attached as `report`; EUSAGE for opts.members naming a
-- canister that is not a member.
function M.backup(dir, m, opts)
  opts = opts or {}
  local err, code
  if not m then m, err, code = manifest.read(dir) end
  if not m then errors.raise(code == "ENOENT" and "ENOTFOUND" or code, err) end
  local dj, djerr, djcode = manifest.read_download_journal(dir)
  if not dj and djerr then errors.raise(djcode, djerr) end
  local rehash, choice = choose(m, opts)
  local extra = {}
  if type(m.doc.fleetsnap) == "table" then
    for _, x in ipairs(m.doc.fleetsnap.members) do extra[x.canister_id] = x end
  end
  local checked = { subset = choice.subset, seed = choice.seed, members = 0, members_total = #m.members, bytes = 0,
    bytes_total = 0 }
  local report = { ok = true, backup_id = m.doc.backup_id, manifest_line = m.line, checked = checked,
    members = json.array({}) }
  local unsafe = {}
  for _, member in ipairs(m.members) do
    local s = member.source_snapshot
    local checksum = s.checksum ~= json.null and s.checksum or nil
    local entry = { canister_id = member.canister_id, snapshot_id = s.snapshot_id,
      rehashed = rehash[member.canister_id] == true, problems = json.array({}) }
    local function problem(p)
      entry.problems[#entry.problems + 1] = p
    end
    if not checksum then
      -- Re-hashing proves nothing without a digest to compare with.
      problem("no checksum: cannot be verified")
    end
    if dj then
      local a = journal_entry(dj, member.canister_id, s.snapshot_id)
      if not a then problem("no entry for snapshot " .. s.snapshot_id .. " in download-journal.json")
      elseif a.state ~= "Durable" then problem("download-journal.json says " .. a.state)
      elseif checksum and a.checksum ~= checksum then
        problem("checksum differs between manifest and download-journal.json")
      end
    end
    local path, perr, pcode = paths.check_beneath(dir, s.artifact_path)
    local tree, terr, tcode
    if not path then
      terr, tcode = perr, pcode
    elseif entry.rehashed then
      tree, terr, tcode = engine.hash.tree(path)
    else
      tree, terr, tcode = engine.hash.fingerprint(path)
    end
    if not tree then
      problem(terr)
      if tcode == "ECORRUPT" or tcode == "EUNSAFE" then unsafe[#unsafe + 1] = member.canister_id .. ": " .. terr end
    else
      local x = extra[member.canister_id]
      if entry.rehashed then
        check_digests(s.artifact_path, checksum, x, tree, problem)
        checked.members, checked.bytes = checked.members + 1, checked.bytes + tree.bytes
      elseif x then
        check_sizes(s.artifact_path, x, tree, problem)
      end
      entry.bytes = tree.bytes
      checked.bytes_total = checked.bytes_total + tree.bytes
    end
    entry.ok = #entry.problems == 0
    if not entry.ok then report.ok = false end
    report.members[#report.members + 1] = entry
  end
  if #unsafe > 0 then
    errors.raise("ECORRUPT", "backup " .. dir .. ": unsafe artifact paths, refused:\n  "
      .. table.concat(unsafe, "\n  "), { report = report })
  end
  return report
end

-- The state of a backup a directory verify passes over: "running" while
-- its runner holds the journal lock, else "incomplete".
local function unfinished_state(e)
  return catalog.running(e.dir) and "running" or "incomplete"
end

--- Verifies every backup under `dir` (catalog's, newest first); opts as
-- for M.backup, without members (a canister is rarely in every backup).
-- A percentage without a seed gets one, the same for every backup.
-- Returns {ok, dir, subset, seed, backups = {{name, dir, backup_id, state,
-- ok, message, report}}}: state "verified", "failed" (a member failed, or
-- the verify raised: message), "corrupt" (documents unreadable or an
-- unsafe path: message), "incomplete" or "running" (neither verified nor
-- failed: ok is null). ok: no backup failed nor is corrupt. Raises
-- ENOTFOUND when `dir` is not a directory; EINTERRUPTED and internal
-- errors are never swallowed.
function M.directory(dir, opts)
  opts = opts or {}
  local st = engine.fs.lstat(dir)
  if not st or st.type ~= "directory" then errors.raise("ENOTFOUND", "no backups directory " .. dir) end
  local sub = { subset = opts.subset }
  if opts.subset and opts.subset.kind == "percent" then sub.seed = opts.seed or subset.new_seed() end
  local res = { ok = true, dir = dir, subset = opts.subset and opts.subset.text or json.null,
    seed = sub.seed or json.null, backups = json.array({}) }
  for _, row in ipairs(catalog.list(dir)) do
    local b = { name = row.id, dir = row.dir, backup_id = row.backup_id or json.null, ok = json.null,
      message = json.null, report = json.null }
    if row.state == "corrupt" then
      b.state, b.ok, b.message = "corrupt", false, row.reason
    elseif row.state == "incomplete" then
      b.state = unfinished_state(row)
    else
      local ok, v = pcall(M.backup, row.dir, nil, sub)
      if ok then
        b.report, b.ok, b.state = v, v.ok, v.ok and "verified" or "failed"
      else
        local e = errors.wrap(v)
        if e.code == "EINTERRUPTED" or e.code == "EINTERNAL" then error(v, 0) end
        b.ok, b.message = false, e.message
        b.state = e.code == "ECORRUPT" and "corrupt" or "failed"
        if e.report then b.report = e.report end
      end
    end
    if b.ok == false then res.ok = false end
    res.backups[#res.backups + 1] = b
  end
  return res
end

return M
