--- Offline verification of a backup directory: every artifact re-hashed
-- against its manifest checksum (and, for fleetsnap backups, each file
-- against its recorded digest). Used by `backup verify` and by restore
-- planning, which refuses a backup that does not verify.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local paths = require "fleetsnap.paths"

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

--- Verifies a backup offline: every artifact re-hashed against its
-- checksum (and, for fleetsnap backups, each file against its digest).
-- `m`: the manifest (manifest.read), if the caller has read it already.
-- Returns a report {ok, backup_id, line, members = {{canister_id,
-- snapshot_id, ok, bytes, problems}}}. A member fails when it has no
-- checksum (its bytes cannot be checked against anything), when its
-- artifact is absent (the path named), when the download journal
-- disagrees, or when a byte differs.
--
-- Raises (an error object): ENOTFOUND without a manifest; ECORRUPT for a
-- manifest or download journal that is not valid, and for an artifact
-- path through a symlink or with a symlink, device or FIFO inside it;
-- the latter after every member was looked at, naming each such path,
-- with the report attached as `report`.
function M.backup(dir, m)
  local err, code
  if not m then m, err, code = manifest.read(dir) end
  if not m then errors.raise(code == "ENOENT" and "ENOTFOUND" or code, err) end
  local dj, djerr, djcode = manifest.read_download_journal(dir)
  if not dj and djerr then errors.raise(djcode, djerr) end
  local extra = {}
  if type(m.doc.fleetsnap) == "table" then
    for _, x in ipairs(m.doc.fleetsnap.members) do extra[x.canister_id] = x end
  end
  local report = { ok = true, backup_id = m.doc.backup_id, manifest_line = m.line, members = json.array({}) }
  local unsafe = {}
  for _, member in ipairs(m.members) do
    local s = member.source_snapshot
    local checksum = s.checksum ~= json.null and s.checksum or nil
    local entry = { canister_id = member.canister_id, snapshot_id = s.snapshot_id, problems = json.array({}) }
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
    if path then
      tree, terr, tcode = engine.hash.tree(path)
    else
      terr, tcode = perr, pcode
    end
    if not tree then
      problem(terr)
      if tcode == "ECORRUPT" or tcode == "EUNSAFE" then unsafe[#unsafe + 1] = member.canister_id .. ": " .. terr end
    else
      if checksum and tree.digest ~= checksum:lower() then
        problem(string.format("artifact digest %s, manifest says %s", tree.digest, checksum))
      end
      local x = extra[member.canister_id]
      if x then
        local have = {}
        for _, f in ipairs(tree.files) do have[f.path] = f end
        for _, f in ipairs(x.files) do
          local h = have[f.path]
          if not h then problem(s.artifact_path .. "/" .. f.path .. ": missing")
          elseif h.sha256 ~= f.sha256:lower() then problem(s.artifact_path .. "/" .. f.path .. ": content differs") end
          have[f.path] = nil
        end
        local added = {}
        for p in pairs(have) do added[#added + 1] = p end
        table.sort(added)
        for _, p in ipairs(added) do problem(s.artifact_path .. "/" .. p .. ": not part of the backup") end
      end
      entry.bytes = tree.bytes
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

return M
