--- The restore's own operation kinds: upload (from a private staged copy
-- whose digest must equal the manifest's; the id icp printed must be new in
-- the inventory), load (only after a fresh proof that the target is
-- stopped), verify, verify_data and delete (of the uploaded snapshot). Stop,
-- start and the safety snapshot are the executor's lifecycle kinds.
--
-- x.context: members (target -> plan member), backup_dir, restore_state
-- (an undo reads the restore's uploads from it), source_of (an undo's
-- load source), skip_module_hash, skip_checks.
local engine = require "fleetsnap.engine"
local checks = require "fleetsnap.checks"
local driver_mod = require "fleetsnap.drivers.icp"
local lifecycle = require "fleetsnap.exec.lifecycle"
local ownership = require "fleetsnap.exec.ownership"
local paths = require "fleetsnap.paths"
local operations = require "fleetsnap.restore.operations"
local rsettings = require "fleetsnap.restore.settings"

local json, fs = engine.json, engine.fs

local M = {}

local ICP_FILES = driver_mod.ICP_FILES

-- Upload attempts per operation: a transfer that fails part-way is resumed.
M.UPLOAD_TRIES = 3

local TRANSIENT = { NETWORK = true, TIMEOUT = true, ICP_CRASHED = true, ICP_FAILED = true }

local function fail(code, message, extra)
  local e = { code = code, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return nil, e
end

local function seg(canister)
  return (canister:gsub("[^%w%-_]", "_"))
end

function M.stage_path(x, op)
  return x.dir .. "/staging/" .. seg(op.canister)
end

--- Where a --verify-data check snapshot is downloaded.
function M.check_path(x, op)
  return x.dir .. "/verify-data/" .. seg(op.canister)
end

local function ambiguous(what, op, n)
  return fail("AMBIGUOUS", string.format("%s %s: %d snapshots appeared since the claim; cannot tell which is this "
    .. "restore's (the operator must decide)", what, op.canister, n))
end

-- An upload found complete by evidence: one new snapshot, and icp's
-- progress file gone (icp removes it only once every byte is in).
local function adopted(snapshot)
  return { uploaded_snapshot_id = snapshot.snapshot_id, uploaded_at = engine.realtime_ns(), reconciled = true }
end

--- The artifact's path in the backup, refused (nil, err) when a symlink
-- sits anywhere on the way or the relative path is unsafe.
function M.artifact_path(x, member)
  local path, err, code = paths.check_beneath(x.context.backup_dir, member.artifact_path)
  if not path then return fail(code, "artifact of " .. member.source_canister .. ": " .. err) end
  return path
end

-- {=== upload ===}

--- Copies the artifact into a fresh private stage, hashing what it copies;
-- the copy must be the bytes the manifest vouches for.
function M.stage(x, op)
  local m = x.context.members[op.canister]
  local stage = M.stage_path(x, op)
  local made, merr, mcode = fs.mkdir_private(x.dir .. "/staging")
  if not made then return fail(mcode, "staging root of " .. op.canister .. ": " .. merr) end
  local ok, err, code = fs.remove_tree(stage)
  if not ok then return fail(code, "staging of " .. op.canister .. ": " .. err) end
  engine.failpoint("before-stage", op.canister)
  local src, perr = M.artifact_path(x, m)
  if not src then return nil, perr end
  local tree, terr, tcode = engine.hash.copy_tree(src, stage, { sync = false })
  if not tree then
    fs.remove_tree(stage)
    return fail(tcode == "EUNSAFE" and "EUNSAFE" or "EVERIFY", string.format("artifact %s of %s: %s",
      m.artifact_path, m.source_canister, terr))
  end
  if tree.digest ~= m.checksum then
    fs.remove_tree(stage)
    return fail("EVERIFY", string.format("artifact %s of %s: the copy staged for upload hashes to %s, the manifest "
      .. "says %s; nothing was uploaded", m.artifact_path, m.source_canister, tree.digest, m.checksum))
  end
  engine.failpoint("after-stage", op.canister)
  return tree
end

--- Whether a stage kept from an interrupted upload still holds exactly the
-- claimed bytes (icp's own lock and progress files aside).
function M.stage_intact(x, op, files)
  local tree = fs.lstat(M.stage_path(x, op)) and engine.hash.tree(M.stage_path(x, op))
  if not tree then return false end
  local want = {}
  for _, f in ipairs(files or {}) do want[f.path] = f.sha256 end
  local n = 0
  for _, f in ipairs(tree.files) do
    if not ICP_FILES[f.path] then
      if want[f.path] ~= f.sha256 then return false end
      n = n + 1
    end
  end
  return n == #(files or {})
end

local function file_digests(files)
  local out = {}
  for i, f in ipairs(files) do out[i] = { path = f.path, sha256 = f.sha256, size = f.size } end
  return json.array(out)
end

-- An upload's receipt names the staged bytes it sent.
local function with_stage(tree, receipt, err)
  if not receipt then return nil, err end
  receipt.digest, receipt.bytes = tree.digest, tree.bytes
  receipt.files = file_digests(tree.files)
  return receipt
end

--- Uploads from the stage until the snapshot is complete: a failed
-- transfer is judged by the target's inventory against the claim's
-- baseline (no new snapshot: upload again; one: resume it while icp's
-- progress file says it is incomplete, else it is complete).
function M.upload_from(x, op, baseline, resume)
  local stage = M.stage_path(x, op)
  local last
  for _ = 1, M.UPLOAD_TRIES do
    local v, err = x:command(op, "snapshot_upload", { canister = op.canister, dir = stage, resume = resume,
      size_bytes = x.context.members[op.canister].bytes })
    if v then
      -- The id icp printed is used (loaded, later deleted) only once the
      -- inventory proves it is this upload's.
      local entry, perr = lifecycle.prove_snapshot(x, op, v.snapshot_id, baseline, "upload")
      if not entry then return nil, perr end
      return { uploaded_snapshot_id = v.snapshot_id, uploaded_at = x:now() }
    end
    if err.code == "IN_FLIGHT" then return nil, err end
    last = err
    local list, lerr = x:command(op, "snapshot_list", { canister = op.canister })
    if not list then return nil, lerr end
    local new = ownership.new_snapshots(baseline, list)
    if #new > 1 then
      return ambiguous("upload to", op, #new)
    elseif #new == 1 then
      -- Complete with its answer lost, or to be resumed.
      if not driver_mod.upload_in_progress(stage) then return adopted(new[1]) end
      resume = true
    elseif not TRANSIENT[err.code] then
      return nil, err
    else
      resume = false
    end
  end
  -- Out of attempts: an incomplete orphan would only hold a slot.
  local list, lerr = x:command(op, "snapshot_list", { canister = op.canister })
  local new = list and ownership.new_snapshots(baseline, list) or {}
  local derr = lerr
  if #new == 1 then
    derr = select(2, x:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = new[1].snapshot_id }))
  end
  if derr then
    last.message = last.message .. "; the incomplete upload could not be cleaned up (" .. derr.message .. ")"
  end
  return nil, last
end

function M.op_upload(x, op)
  local list, lerr = x:command(op, "snapshot_list", { canister = op.canister })
  if not list then return nil, lerr end
  local baseline = ownership.ids(list)
  local tree, serr = M.stage(x, op)
  if not tree then return nil, serr end
  x:claim(op, { baseline = json.array(baseline), digest = tree.digest, files = file_digests(tree.files) })
  return with_stage(tree, M.upload_from(x, op, baseline, false))
end

--- A claimed upload found on restart (or re-armed after it was found to
-- need doing again): settled by the inventory delta against its baseline.
function M.redo_upload(x, op, o)
  local baseline = o.claim.baseline or {}
  local list, lerr = x:command(op, "snapshot_list", { canister = op.canister })
  if not list then return nil, lerr end
  local new = ownership.new_snapshots(baseline, list)
  local tree = { digest = o.claim.digest, bytes = x.context.members[op.canister].bytes, files = o.claim.files or {} }
  if #new > 1 then return ambiguous("upload to", op, #new) end
  local intact = M.stage_intact(x, op, o.claim.files)
  if #new == 1 then
    local stage = M.stage_path(x, op)
    if intact and driver_mod.upload_in_progress(stage) then
      x:emit("reconcile", { op = op.id, action = "resume-upload", snapshot_id = new[1].snapshot_id })
      return with_stage(tree, M.upload_from(x, op, baseline, true))
    elseif intact then
      return with_stage(tree, adopted(new[1]))
    end
    -- The stage is gone or changed: the orphan cannot be resumed.
    x:emit("reconcile", { op = op.id, action = "delete-orphan", snapshot_id = new[1].snapshot_id })
    local _, derr = x:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = new[1].snapshot_id })
    if derr and derr.code ~= "SNAPSHOT_GONE" then return nil, derr end
  end
  local staged, serr = M.stage(x, op)
  if not staged then return nil, serr end
  return with_stage(staged, M.upload_from(x, op, baseline, false))
end

-- {=== load ===}

function M.uploaded_id(x, target)
  local up = (x.context.restore_state or x.state).ops[operations.id("upload", target)]
  return up and up.state == "completed" and up.receipt and up.receipt.uploaded_snapshot_id or nil
end

--- The snapshot a load puts back: this restore's upload (an undo names
-- its own source).
function M.load_source(x, op)
  if x.context.source_of then return x.context.source_of(x, op) end
  local id = M.uploaded_id(x, op.canister)
  if not id then return fail("EPLAN", "load into " .. op.canister .. ": its upload is not complete") end
  return id
end

function M.op_load(x, op)
  local id, ierr = M.load_source(x, op)
  if not id then return nil, ierr end
  -- A fresh proof, every time: a load repeated after a crash runs only
  -- while the target is still stopped.
  local st, serr = x:status(op)
  if not st then return nil, serr end
  if st.status ~= "stopped" then
    return fail("NOT_STOPPED", string.format("load into %s: the target is %s, not stopped; nothing was loaded "
      .. "(stopped-precondition-failed)", op.canister, tostring(st.status)))
  end
  local _, lerr = x:command(op, "snapshot_restore", { canister = op.canister, snapshot_id = id })
  if lerr then return nil, lerr end
  return { snapshot_id = id, loaded_at = x:now() }
end

-- {=== verification ===}

function M.op_verify(x, op)
  local m = x.context.members[op.canister]
  local st, err = x:status(op)
  if not st then return nil, err end
  if st.status ~= "running" then
    return fail("EVERIFY", string.format("verification of %s: status %s, expected running", op.canister,
      tostring(st.status)))
  end
  local want = not x.context.skip_module_hash and m.module_hash ~= json.null and m.module_hash or nil
  if want and st.module_hash ~= want then
    return fail("EVERIFY", string.format("verification of %s: module hash %s, the backup's is %s", op.canister,
      tostring(st.module_hash), want))
  end
  local list = x.context.skip_checks and {} or (m.checks or {})
  for _, c in ipairs(list) do
    local reply, cerr = x:command(op, "call", checks.params(op.canister, c))
    if not reply then return nil, cerr end
    local bad = checks.compare(op.canister, c, reply, "after the restore")
    if bad then return nil, bad end
  end
  return { verified_at = x:now(), module_hash = st.module_hash or json.null, checks = #list }
end

--- Compares a downloaded snapshot's files with the backup's, by digest;
-- metadata.json is left out (its timestamp is the new snapshot's).
function M.compare_files(dir, want_files, target)
  local tree, terr = engine.hash.tree(dir)
  if not tree then return { code = "EVERIFY", message = "data check of " .. target .. ": " .. terr } end
  local have, want = {}, {}
  for _, f in ipairs(tree.files) do
    if f.path ~= "metadata.json" and not ICP_FILES[f.path] then have[f.path] = f.sha256 end
  end
  for _, f in ipairs(want_files) do
    if f.path ~= "metadata.json" and not ICP_FILES[f.path] then want[f.path] = f.sha256 end
  end
  local diffs = {}
  for p, h in pairs(want) do
    if have[p] ~= h then diffs[#diffs + 1] = p .. (have[p] and " differs" or " is missing") end
  end
  for p in pairs(have) do
    if not want[p] then diffs[#diffs + 1] = p .. " is not in the backup" end
  end
  table.sort(diffs)
  if #diffs > 0 then
    return { code = "EVERIFY", message = string.format("data check of %s: the loaded state differs from the backup "
      .. "(%s); the member is left stopped", target, table.concat(diffs, ", ")) }
  end
end

--- After the load and before the start (nothing has run yet): snapshot
-- the target, download that snapshot, compare it with the backup file by
-- file, delete the check snapshot.
function M.op_verify_data(x, op, baseline)
  local list, lerr = x:command(op, "snapshot_list", { canister = op.canister })
  if not list then return nil, lerr end
  local new = ownership.new_snapshots(baseline, list)
  if #new > 1 then return ambiguous("data check of", op, #new) end
  local sid = new[1] and new[1].snapshot_id
  if not sid then
    local v, cerr = x:command(op, "snapshot_create", { canister = op.canister })
    if not v then return nil, cerr end
    -- Deleted below: only once the inventory proves it is this check's.
    local entry, perr = lifecycle.prove_snapshot(x, op, v.snapshot_id, baseline, "data check snapshot")
    if not entry then return nil, perr end
    sid = v.snapshot_id
  end
  local dir = M.check_path(x, op)
  local made, merr, mcode = fs.mkdir_private(x.dir .. "/verify-data")
  if made then made, merr, mcode = fs.remove_tree(dir) end
  if made == nil then return fail(mcode, "data check of " .. op.canister .. ": " .. merr) end
  local _, derr = x:command(op, "snapshot_download", { canister = op.canister, snapshot_id = sid, dir = dir,
    size_bytes = x.context.members[op.canister].bytes })
  local bad
  if derr then
    bad = derr
  else
    local up = (x.context.restore_state or x.state).ops[operations.id("upload", op.canister)]
    bad = M.compare_files(dir, up and up.receipt and up.receipt.files or {}, op.canister)
  end
  fs.remove_tree(dir)
  local _, xerr = x:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = sid })
  if xerr and xerr.code == "SNAPSHOT_GONE" then xerr = nil end
  if bad and xerr then
    bad.message = string.format("%s; the check snapshot %s could not be deleted (%s)", bad.message, sid, xerr.message)
  end
  if bad or xerr then return nil, bad or xerr end
  return { checked_snapshot_id = sid, checked_at = x:now() }
end

-- {=== cleanup ===}

function M.op_delete(x, op)
  local id = M.uploaded_id(x, op.canister)
  if not id then return { deleted = json.null } end
  local _, err = x:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = id })
  if err and err.code ~= "SNAPSHOT_GONE" then return nil, err end
  return { deleted = id }
end

-- {=== the kinds ===}

local function stage_done(x, op, err)
  if err and err.code == "IN_FLIGHT" then return end
  -- The stage lives until the upload's terminal record is durable: a
  -- crash before it finds the stage, and with it the upload's progress.
  x:flush()
  fs.remove_tree(M.stage_path(x, op))
end

-- Transfers (uploads, the data check's download) share the bound that
-- preflight fitted to the free space; the rest are lifecycle calls. A
-- restore's own kinds run again from their claim after a crash (upload
-- by inventory delta, load after a fresh stopped proof, checks and
-- deletes simply again): no `reconcile`.
M.upload = {
  bucket = "transfer",
  run = function(x, op, pending)
    if pending then return M.redo_upload(x, op, pending) end
    return M.op_upload(x, op)
  end,
  recorded = stage_done,
}

M.load = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    if not pending then x:claim(op) end
    return M.op_load(x, op)
  end,
}

M.verify = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    if not pending then x:claim(op) end
    return M.op_verify(x, op)
  end,
}

M.verify_data = {
  bucket = "transfer",
  run = function(x, op, pending)
    local baseline
    if pending then
      baseline = pending.claim.baseline
    else
      local list, lerr = x:command(op, "snapshot_list", { canister = op.canister })
      if not list then return nil, lerr end
      baseline = ownership.ids(list)
      x:claim(op, { baseline = json.array(baseline) })
    end
    return M.op_verify_data(x, op, baseline)
  end,
}

M.delete = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    if not pending then x:claim(op) end
    return M.op_delete(x, op)
  end,
}

-- {=== settings ===}

-- What the apply of op's target needs: the recorded settings (nil when
-- the backup has none for its source) and the rule for controllers.
local function settings_goal(x, op)
  local ctx = x.context.settings or { want = {}, controllers = {} }
  local begin = x.state.begin or {}
  return ctx.want[op.canister], { controllers = ctx.controllers[op.canister], operator = begin.operator }
end

--- --settings apply: after the load, before the start, the target's
-- settings are set to the backup's with one `canister settings update`
-- of the fields that differ (read from a status first). A claim found
-- without its record is settled by reading the status back: already as
-- recorded -> completed without a second update; else the update runs
-- again (it sets values, so running it twice is harmless).
M.settings = {
  bucket = "lifecycle",
  run = function(x, op, pending)
    if not pending then x:claim(op) end
    local want, opts = settings_goal(x, op)
    if not want then
      return { applied = json.array({}), not_applied = json.array({}), note = "no recorded settings" }
    end
    local st, err = x:status(op)
    if not st then return nil, err end
    if not st.settings then
      return fail("ICP_OUTPUT", "settings of " .. op.canister .. ": its status shows no settings")
    end
    local ch, not_applied = rsettings.change(want, st.settings, opts)
    if ch then
      local _, uerr = x:command(op, "settings_update", { canister = op.canister, change = ch })
      if uerr then return nil, uerr end
    end
    return { applied = json.array(rsettings.fields(ch)), not_applied = json.array(not_applied),
      applied_at = x:now() }
  end,
  reconcile = function(x, op)
    local want, opts = settings_goal(x, op)
    if not want then return end
    local st, err = x:status(op)
    if not st then return x:complete(op, nil, err) end
    if st.settings and rsettings.applied(want, st.settings, opts) then
      return x:complete(op, { applied = json.array({}), not_applied = json.array({}), reconciled = true })
    end
    -- Not in effect: the claim stands and the update runs again.
  end,
}

--- Every kind a restore (or its undo) runs.
M.KINDS = { stop = lifecycle.stop, start = lifecycle.start, snapshot = lifecycle.snapshot, upload = M.upload,
  load = M.load, verify = M.verify, verify_data = M.verify_data, delete = M.delete, barrier = lifecycle.barrier,
  settings = M.settings }

return M
