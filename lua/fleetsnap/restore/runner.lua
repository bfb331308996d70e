--- The restore runner: the backup runner's scheduler, journal discipline
-- and command locks (fleetsnap.runner), with the restore's own operations:
-- upload (from a private staged copy whose digest must equal the
-- manifest's), load (only after a fresh proof that the target is stopped),
-- verify, verify_data and delete-uploaded. Stop, start and the safety
-- snapshot are the backup runner's own.
local engine = require "fleetsnap.engine"
local hex = require "fleetsnap.hex"
local base = require "fleetsnap.runner"
local operations = require "fleetsnap.restore.operations"

local json, fs = engine.json, engine.fs

local M = setmetatable({}, { __index = base })
M.__index = M

-- Files icp writes into an upload's input directory.
local ICP_FILES = { [".lock"] = true, [".upload_progress.json"] = true, [".download_progress.json"] = true }

-- Upload attempts per operation: a transfer that fails part-way is resumed.
M.UPLOAD_TRIES = 3

local TRANSIENT = { NETWORK = true, TIMEOUT = true, ICP_CRASHED = true, ICP_FAILED = true }

--- ctx: the backup runner's (dir = the restore state directory, plan =
-- {operations}, driver, events, concurrency, downloads = uploads) plus
-- members (target -> plan member), backup_dir, load_source (function(self,
-- op) -> snapshot id or nil, error).
function M.new(ctx)
  local self = base.new(ctx)
  -- Restore receipts keep the tail of each operation's last command.
  self.outputs = {}
  return setmetatable(self, M)
end

-- Transfers (uploads, the data check's download) share the bound that
-- preflight fitted to the free space; the rest are lifecycle calls.
function M:bucket(op)
  return (op.kind == "upload" or op.kind == "verify_data") and "download" or "lifecycle"
end

local function fail(code, message, extra)
  local e = { code = code, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return nil, e
end

local function seg(canister)
  return (canister:gsub("[^%w%-_]", "_"))
end

function M:stage_path(op)
  return self.dir .. "/staging/" .. seg(op.canister)
end

--- Where a --verify-data check snapshot is downloaded.
function M:check_path(op)
  return self.dir .. "/verify-data/" .. seg(op.canister)
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

function M:artifact_path(member)
  return self.backup_dir .. "/" .. member.artifact_path
end

-- {=== upload ===}

--- Copies the artifact into a fresh private stage, hashing what it copies;
-- the copy must be the bytes the manifest vouches for.
function M:stage(op)
  local m = self.members[op.canister]
  local stage = self:stage_path(op)
  local made, merr, mcode = fs.mkdir_private(self.dir .. "/staging")
  if not made then return fail(mcode, "staging root of " .. op.canister .. ": " .. merr) end
  local ok, err, code = fs.remove_tree(stage)
  if not ok then return fail(code, "staging of " .. op.canister .. ": " .. err) end
  engine.failpoint("before-stage", op.canister)
  local tree, terr, tcode = engine.hash.copy_tree(self:artifact_path(m), stage, { sync = false })
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
function M:stage_intact(op, files)
  local tree = fs.lstat(self:stage_path(op)) and engine.hash.tree(self:stage_path(op))
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
function M:upload_from(op, baseline, resume)
  local stage = self:stage_path(op)
  local last
  for _ = 1, M.UPLOAD_TRIES do
    local v, err = self:command(op, "snapshot_upload", { canister = op.canister, dir = stage, resume = resume,
      size_bytes = self.members[op.canister].bytes })
    if v then
      return { uploaded_snapshot_id = v.snapshot_id, uploaded_at = self:now() }
    end
    if err.code == "IN_FLIGHT" then return nil, err end
    last = err
    local list, lerr = self:command(op, "snapshot_list", { canister = op.canister })
    if not list then return nil, lerr end
    local new = base.new_snapshots(baseline, list)
    if #new > 1 then
      return ambiguous("upload to", op, #new)
    elseif #new == 1 then
      -- Complete with its answer lost, or to be resumed.
      if not fs.lstat(stage .. "/.upload_progress.json") then return adopted(new[1]) end
      resume = true
    elseif not TRANSIENT[err.code] then
      return nil, err
    else
      resume = false
    end
  end
  -- Out of attempts: an incomplete orphan would only hold a slot.
  local list, lerr = self:command(op, "snapshot_list", { canister = op.canister })
  local new = list and base.new_snapshots(baseline, list) or {}
  local derr = lerr
  if #new == 1 then
    derr = select(2, self:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = new[1].snapshot_id }))
  end
  if derr then
    last.message = last.message .. "; the incomplete upload could not be cleaned up (" .. derr.message .. ")"
  end
  return nil, last
end

function M:op_upload(op)
  local list, lerr = self:command(op, "snapshot_list", { canister = op.canister })
  if not list then return nil, lerr end
  local baseline = base.ids(list)
  local tree, serr = self:stage(op)
  if not tree then return nil, serr end
  self:claim(op, { baseline = json.array(baseline), digest = tree.digest, files = file_digests(tree.files) })
  return with_stage(tree, self:upload_from(op, baseline, false))
end

--- A claimed upload found on restart (or re-armed after it was found to
-- need doing again): settled by the inventory delta against its baseline.
function M:redo_upload(op, o)
  local baseline = o.claim.baseline or {}
  local list, lerr = self:command(op, "snapshot_list", { canister = op.canister })
  if not list then return nil, lerr end
  local new = base.new_snapshots(baseline, list)
  local tree = { digest = o.claim.digest, bytes = self.members[op.canister].bytes, files = o.claim.files or {} }
  if #new > 1 then return ambiguous("upload to", op, #new) end
  local intact = self:stage_intact(op, o.claim.files)
  if #new == 1 then
    local stage = self:stage_path(op)
    if intact and fs.lstat(stage .. "/.upload_progress.json") then
      self:emit("reconcile", { op = op.id, action = "resume-upload", snapshot_id = new[1].snapshot_id })
      return with_stage(tree, self:upload_from(op, baseline, true))
    elseif intact then
      return with_stage(tree, adopted(new[1]))
    end
    -- The stage is gone or changed: the orphan cannot be resumed.
    self:emit("reconcile", { op = op.id, action = "delete-orphan", snapshot_id = new[1].snapshot_id })
    local _, derr = self:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = new[1].snapshot_id })
    if derr and derr.code ~= "SNAPSHOT_GONE" then return nil, derr end
  end
  local staged, serr = self:stage(op)
  if not staged then return nil, serr end
  return with_stage(staged, self:upload_from(op, baseline, false))
end

-- {=== load ===}

--- Command locks of an undo live apart from the restore's own.
function M:command_lock_path(op)
  return self.dir .. "/.fleetsnap-commands/" .. (self.lock_prefix or "") .. op.id .. ".lock"
end

function M:uploaded_id(target)
  local up = (self.restore_state or self.state).ops[operations.id("upload", target)]
  return up and up.state == "completed" and up.receipt and up.receipt.uploaded_snapshot_id or nil
end

--- The snapshot a load puts back: this restore's upload (an undo names
-- its own source).
function M:load_source(op)
  if self.source_of then return self.source_of(self, op) end
  local id = self:uploaded_id(op.canister)
  if not id then return fail("EPLAN", "load into " .. op.canister .. ": its upload is not complete") end
  return id
end

function M:op_load(op)
  local id, ierr = self:load_source(op)
  if not id then return nil, ierr end
  -- A fresh proof, every time: a load repeated after a crash runs only
  -- while the target is still stopped.
  local st, serr = self:status(op)
  if not st then return nil, serr end
  if st.status ~= "stopped" then
    return fail("NOT_STOPPED", string.format("load into %s: the target is %s, not stopped; nothing was loaded "
      .. "(stopped-precondition-failed)", op.canister, tostring(st.status)))
  end
  local _, lerr = self:command(op, "snapshot_restore", { canister = op.canister, snapshot_id = id })
  if lerr then return nil, lerr end
  return { snapshot_id = id, loaded_at = self:now() }
end

-- {=== verification ===}

function M:op_verify(op)
  local m = self.members[op.canister]
  local st, err = self:status(op)
  if not st then return nil, err end
  if st.status ~= "running" then
    return fail("EVERIFY", string.format("verification of %s: status %s, expected running", op.canister,
      tostring(st.status)))
  end
  local want = not self.skip_module_hash and m.module_hash ~= json.null and m.module_hash or nil
  if want and st.module_hash ~= want then
    return fail("EVERIFY", string.format("verification of %s: module hash %s, the backup's is %s", op.canister,
      tostring(st.module_hash), want))
  end
  local checks = self.skip_checks and {} or (m.checks or {})
  for _, c in ipairs(checks) do
    local reply, cerr = self:command(op, "call", { canister = op.canister, method = c.method, args = c.args,
      query = true })
    if not reply then return nil, cerr end
    if hex.encode(reply) ~= c.expect_hex then
      return fail("EVERIFY", string.format("verification of %s: check %s replied %s, expected %s", op.canister,
        c.method, hex.encode(reply), c.expect_hex))
    end
  end
  return { verified_at = self:now(), module_hash = st.module_hash or json.null, checks = #checks }
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
function M:op_verify_data(op, baseline)
  local list, lerr = self:command(op, "snapshot_list", { canister = op.canister })
  if not list then return nil, lerr end
  local new = base.new_snapshots(baseline, list)
  if #new > 1 then return ambiguous("data check of", op, #new) end
  local sid = new[1] and new[1].snapshot_id
  if not sid then
    local v, cerr = self:command(op, "snapshot_create", { canister = op.canister })
    if not v then return nil, cerr end
    sid = v.snapshot_id
  end
  local dir = self:check_path(op)
  local made, merr, mcode = fs.mkdir_private(self.dir .. "/verify-data")
  if made then made, merr, mcode = fs.remove_tree(dir) end
  if made == nil then return fail(mcode, "data check of " .. op.canister .. ": " .. merr) end
  local _, derr = self:command(op, "snapshot_download", { canister = op.canister, snapshot_id = sid, dir = dir,
    size_bytes = self.members[op.canister].bytes })
  local bad
  if derr then
    bad = derr
  else
    local up = (self.restore_state or self.state).ops[operations.id("upload", op.canister)]
    bad = M.compare_files(dir, up and up.receipt and up.receipt.files or {}, op.canister)
  end
  fs.remove_tree(dir)
  local _, xerr = self:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = sid })
  if xerr and xerr.code == "SNAPSHOT_GONE" then xerr = nil end
  if bad and xerr then
    bad.message = string.format("%s; the check snapshot %s could not be deleted (%s)", bad.message, sid, xerr.message)
  end
  if bad or xerr then return nil, bad or xerr end
  return { checked_snapshot_id = sid, checked_at = self:now() }
end

-- {=== cleanup ===}

function M:op_delete(op)
  local id = self:uploaded_id(op.canister)
  if not id then return { deleted = json.null } end
  local _, err = self:command(op, "snapshot_delete", { canister = op.canister, snapshot_id = id })
  if err and err.code ~= "SNAPSHOT_GONE" then return nil, err end
  return { deleted = id }
end

-- {=== dispatch ===}

local OWN = { upload = true, load = true, verify = true, verify_data = true, delete = true }

function M:execute(op)
  if not OWN[op.kind] then return base.execute(self, op) end
  local o = self.state.ops[op.id]
  local claimed = o and o.state == "pending"
  local receipt, err
  if op.kind == "upload" then
    if claimed then receipt, err = self:redo_upload(op, o) else receipt, err = self:op_upload(op) end
  elseif op.kind == "verify_data" then
    local baseline
    if claimed then
      baseline = o.claim.baseline
    else
      local list, lerr = self:command(op, "snapshot_list", { canister = op.canister })
      if not list then return self:complete(op, nil, lerr) end
      baseline = base.ids(list)
      self:claim(op, { baseline = json.array(baseline) })
    end
    receipt, err = self:op_verify_data(op, baseline)
  else
    if not claimed then self:claim(op) end
    if op.kind == "load" then receipt, err = self:op_load(op)
    elseif op.kind == "verify" then receipt, err = self:op_verify(op)
    else receipt, err = self:op_delete(op) end
  end
  return self:complete(op, receipt, err)
end

function M:complete(op, receipt, err)
  if receipt and self.outputs and self.outputs[op.id] then receipt.output = self.outputs[op.id] end
  base.complete(self, op, receipt, err)
  if op.kind == "upload" and not (err and err.code == "IN_FLIGHT") then
    -- The stage lives until the upload's terminal record is durable: a
    -- crash before it finds the stage, and with it the upload's progress.
    self:flush()
    fs.remove_tree(self:stage_path(op))
  end
end

--- A claim found without its record: stop/start and the safety snapshot
-- settle by evidence (base runner); the restore's own operations run
-- again from their claim (upload by inventory delta, load after a fresh
-- stopped proof, checks and deletes simply again).
function M:reconcile_one(op, o)
  if OWN[op.kind] then return end
  return base.reconcile_one(self, op, o)
end

return M
