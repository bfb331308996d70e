--- The backup's own operation kind: download. It proves the snapshot is
-- ours and present (the id icp printed must be new in the inventory since
-- the snapshot's claim), downloads it into a private staging directory,
-- checks it (sizes, chunk digests, module hash), and publishes it without
-- replacing anything. The artifact state machine: Downloaded (bytes in
-- staging, checked) -> ChecksumVerified (tree digest recorded) -> Durable
-- (published; the operation's done record). Each state is a journal
-- record, so a resumed run continues from the last one.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local driver_mod = require "fleetsnap.drivers.icp"
local lifecycle = require "fleetsnap.exec.lifecycle"

local fs = engine.fs

local M = {}

local function fail(code, message)
  return nil, { code = code, message = message }
end

--- Staging, published path, and the path relative to the backup.
function M.paths(dir, canister)
  local seg = canister:gsub("[^%w%-_]", "_")
  return dir .. "/" .. seg .. ".tmp", dir .. "/" .. seg, seg
end

local function snapshot_of(x, canister)
  local o = x:completed("snapshot-" .. canister)
  return o and o.receipt or nil, o
end

local function expected_module_hash(x, op)
  local stopped = x:completed("stop-" .. op.canister)
  local expected = stopped and stopped.receipt and stopped.receipt.module_hash
  if not expected then
    -- Resumed without preflight: ask the canister (outside any window).
    local st = x:status(op)
    expected = st and st.module_hash
  end
  return expected
end

--- Checks the staged bytes (sizes, chunk digests, module hash) and
-- records Downloaded. Returns nil or an error.
local function check_staged(x, op, staging)
  local bad, meta = driver_mod.check_download(staging, op.canister)
  if bad then return bad end
  local expected = expected_module_hash(x, op)
  if expected and meta.wasm_module_size > 0 then
    local mh = engine.hash.file(staging .. "/wasm_module.bin")
    if mh ~= expected then
      return { code = "EVERIFY", message = string.format("download of %s: wasm_module.bin hashes to %s, the "
        .. "canister's module hash is %s", op.canister, tostring(mh), expected) }
    end
  end
  x:record({ t = "artifact", op = op.id, attempt = x.state.attempt, state = "Downloaded" }, op.id)
end

--- From Downloaded on: digest, record ChecksumVerified (unless recorded),
-- re-verify right before publication, publish without replacing.
local function publish_staged(x, op, snap, recorded)
  local staging, final, seg = M.paths(x.dir, op.canister)
  errors.check("staging of " .. op.canister, fs.mkdir_private(staging))
  local tree, terr, tcode = engine.hash.tree(staging)
  if not tree then return fail(tcode, terr) end
  if recorded then
    if tree.digest ~= recorded.digest then
      return fail("EVERIFY", string.format("artifact of %s: the staged bytes changed after verification (digest %s, "
        .. "recorded %s); nothing was published", op.canister, tree.digest, recorded.digest))
    end
  else
    x:record({ t = "artifact", op = op.id, attempt = x.state.attempt, state = "ChecksumVerified",
      digest = tree.digest, bytes = tree.bytes, files = tree.files }, op.id)
    local again = engine.hash.tree(staging)
    if not again or again.digest ~= tree.digest then
      return fail("EVERIFY", "artifact of " .. op.canister .. ": the staged bytes changed before publication")
    end
  end
  local pok, perr, pcode = fs.publish_dir(staging, final, { key = "artifact-" .. op.canister, private = true })
  if not pok then return fail(pcode, perr) end
  return { snapshot_id = snap.snapshot_id, artifact_path = seg, digest = tree.digest, bytes = tree.bytes,
    files = tree.files, taken_at = snap.taken_at, total_size = snap.total_size }
end

M.kind = {
  bucket = "transfer",
  -- A download only reads: it is always safe to try again.
  always_retry = true,
  run = function(x, op, pending)
    if not pending then x:claim(op) end
    local snap, so = snapshot_of(x, op.canister)
    if not snap then return fail("EPLAN", "download of " .. op.canister .. ": no completed snapshot") end
    -- The id icp printed is used only once the inventory proves it ours.
    local entry, perr = lifecycle.prove_snapshot(x, op, snap.snapshot_id, so.claim and so.claim.baseline or {},
      "snapshot")
    if not entry then
      if perr.phantom then
        -- The snapshot never existed: this window has no snapshot of the
        -- member, so the next run takes a new one (a new attempt).
        x:record({ t = "done", op = "snapshot-" .. op.canister, kind = "snapshot", attempt = x.state.attempt,
          state = "failed", error = { code = "EVERIFY", message = perr.message, phantom = perr.phantom } },
          "snapshot-" .. op.canister)
      end
      return nil, perr
    end
    local staging, final = M.paths(x.dir, op.canister)
    local ok, rerr, rcode = fs.remove_tree(staging)
    if not ok then return fail(rcode, rerr) end
    -- An artifact already published here belongs to an abandoned attempt
    -- (this attempt's own is settled by reconciliation): another
    -- consistency window, never to be mixed into this backup.
    ok, rerr, rcode = fs.remove_tree(final)
    if not ok then return fail(rcode, rerr) end
    local _, derr = x:command(op, "snapshot_download", { canister = op.canister, snapshot_id = snap.snapshot_id,
      dir = staging, size_bytes = snap.total_size })
    if derr and derr.code == "SNAPSHOT_GONE" then
      derr.code = "EVERIFY"
      derr.message = string.format("snapshot %s of %s: icp reported it created, but the canister does not have it "
        .. "(%s)", snap.snapshot_id, op.canister, derr.message)
    end
    if derr then return nil, derr end
    driver_mod.clean_download(staging)
    local bad = check_staged(x, op, staging)
    if bad then return nil, bad end
    return publish_staged(x, op, snap)
  end,
  reconcile = function(x, op, o)
    local staging, final, seg = M.paths(x.dir, op.canister)
    local art = o.artifact
    local snap = snapshot_of(x, op.canister)
    if snap and art and not fs.lstat(final) and fs.lstat(staging) then
      -- Downloaded or ChecksumVerified, not yet published: continue from
      -- the recorded state, with no second download.
      local recorded = art.state == "ChecksumVerified" and art or nil
      if not recorded then
        local bad = check_staged(x, op, staging)
        if bad then return x:complete(op, nil, bad) end
      end
      local receipt, err = publish_staged(x, op, snap, recorded)
      return x:complete(op, receipt, err)
    end
    if snap and fs.lstat(final) and art and art.state == "ChecksumVerified" then
      local tree = engine.hash.tree(final)
      if tree and tree.digest == art.digest then
        return x:complete(op, { snapshot_id = snap.snapshot_id, artifact_path = seg, digest = tree.digest,
          bytes = tree.bytes, files = tree.files, taken_at = snap.taken_at, total_size = snap.total_size,
          reconciled = true })
      end
    end
    if fs.lstat(final) then
      -- Published bytes we cannot vouch for: move them out of the way.
      errors.check("artifact of " .. op.canister, fs.remove_tree(final))
    end
    -- Download again (read-only on the network).
  end,
}

return M
