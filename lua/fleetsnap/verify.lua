--- Offline verification of a backup directory: every artifact re-hashed
-- against its manifest checksum (and, for fleetsnap backups, each file
-- against its recorded digest). Used by `backup verify` and by restore
-- planning, which refuses a backup that does not verify.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"

local json = engine.json

local M = {}


--- Verifies a backup offline: every artifact re-hashed against its
-- checksum (and, for fleetsnap backups, each file against its digest).
-- Returns a report {ok, backup_id, members = {{canister_id, ok, problems}}}.
-- `m`: the manifest, if the caller has read it already.
function M.backup(dir, m)
  local err, code
  if not m then m, err, code = manifest.read(dir) end
  if not m then errors.raise(code == "ENOENT" and "ENOTFOUND" or "ECORRUPT", err) end
  local dj = manifest.read_download_journal(dir)
  local extra = {}
  if m.doc.fleetsnap and type(m.doc.fleetsnap.members) == "table" then
    for _, x in ipairs(m.doc.fleetsnap.members) do extra[x.canister_id] = x end
  end
  local report = { ok = true, backup_id = m.doc.backup_id, line = m.line, members = {} }
  for _, member in ipairs(m.members) do
    local s = member.source_snapshot
    local entry = { canister_id = member.canister_id, snapshot_id = s.snapshot_id, problems = {} }
    local function problem(p)
      entry.problems[#entry.problems + 1] = p
    end
    if dj then
      local a = dj.by_canister[member.canister_id]
      if not a then problem("no entry in download-journal.json")
      elseif a.state ~= "Durable" then problem("download-journal.json says " .. tostring(a.state))
      elseif a.checksum ~= s.checksum and s.checksum ~= json.null then
        problem("checksum differs between manifest and download-journal.json")
      end
    end
    local path = dir .. "/" .. s.artifact_path
    local tree, terr = engine.hash.tree(path)
    if not tree then
      problem(terr)
    else
      if s.checksum ~= json.null and tree.digest ~= s.checksum:lower() then
        problem(string.format("artifact digest %s, manifest says %s", tree.digest, s.checksum))
      end
      local x = extra[member.canister_id]
      if x then
        local have = {}
        for _, f in ipairs(tree.files) do have[f.path] = f end
        for _, f in ipairs(x.files or {}) do
          local h = have[f.path]
          if not h then problem(s.artifact_path .. "/" .. f.path .. ": missing")
          elseif h.sha256 ~= f.sha256 then problem(s.artifact_path .. "/" .. f.path .. ": content differs") end
          have[f.path] = nil
        end
        for p in pairs(have) do problem(s.artifact_path .. "/" .. p .. ": not part of the backup") end
      end
      entry.bytes = tree.bytes
    end
    entry.ok = #entry.problems == 0
    if not entry.ok then report.ok = false end
    report.members[#report.members + 1] = entry
  end
  return report
end

return M
