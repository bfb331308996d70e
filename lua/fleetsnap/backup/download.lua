--- The backup's own operation kind: download. It proves the snapshot is
-- ours and present (the id icp printed must be new in the inventory since
-- the snapshot's claim), downloads it into a private staging directory,
-- checks it, and publishes it without replacing anything. The artifact
-- state machine, each state a journal record so that a resumed run
-- continues from the last one:
--   Downloaded        the bytes are in staging, their shape matches
--                     metadata.json, and they are on disk (fsynced, private)
--   ChecksumVerified  one hash pass (on a background thread, while other
--                     transfers go on) gave the tree digest, the chunk
--                     digests and the module hash; recorded with the tree's
--                     stat fingerprint
--   Durable           published (the operation's done record)
-- Every byte is read once. Later checks (before publication, finalize)
-- compare the stat fingerprint, and re-read the bytes only when it moved.
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

--- Whether the tree at dir still holds the bytes `rec` (a digest and, from
-- this version on, a fingerprint) describes: an equal stat fingerprint
-- proves it without reading; otherwise the bytes are hashed again. Returns
-- true, or nil and why.
function M.same_bytes(dir, rec)
  local fp = engine.hash.fingerprint(dir)
  if fp and rec.fingerprint and fp.fingerprint == rec.fingerprint then return true end
  local tree, terr = engine.hash.tree(dir)
  if not tree then return nil, terr end
  if tree.digest ~= rec.digest then
    return nil, string.format("digest %s, recorded %s", tree.digest, tostring(rec.digest))
  end
  return true
end

--- Shape checks, then the bytes made durable and private in staging, then
-- Downloaded. Returns nil, metadata, chunk names; or an error.
local function settle_staged(x, op, staging)
  local bad, meta, chunks = driver_mod.check_download(staging, op.canister)
  if bad then return bad end
  local ok, err, code = fs.sync_tree(staging, { private = true })
  if not ok then return { code = code, message = "staging of " .. op.canister .. ": " .. err } end
  x:record_lazy({ t = "artifact", op = op.id, attempt = x.state.attempt, state = "Downloaded" }, op.id)
  return nil, meta, chunks
end

--- The one hash pass: tree digest, chunk digests, module hash; then
-- ChecksumVerified. meta and chunks come from settle_staged in the same
-- run; a run resumed from Downloaded reads them again. Returns the record,
-- or nil and an error.
local function verify_staged(x, op, staging, meta, chunks)
  local tree, terr, tcode = x:hash_tree(staging)
  if not tree then return fail(tcode, "artifact of " .. op.canister .. ": " .. terr) end
  local bad
  if not meta then bad, meta, chunks = driver_mod.check_download(staging, op.canister) end
  if not bad then
    bad = driver_mod.check_digests(tree, meta, chunks, op.canister, expected_module_hash(x, op))
  end
  if bad then return nil, bad end
  local rec = { t = "artifact", op = op.id, attempt = x.state.attempt, state = "ChecksumVerified",
    digest = tree.digest, bytes = tree.bytes, files = tree.files, fingerprint = tree.fingerprint }
  x:record_lazy(rec, op.id)
  return rec
end

--- From ChecksumVerified: publish without replacing, once the staged tree
-- is proved unchanged since its hash. just_hashed: the record comes from
-- a hash this run finished moments ago, of a staging directory made
-- private (0700) before it; the check is for a record an earlier run
-- left, whose tree has had all the time since to change. Skipping it
-- saves a walk of the tree per member.
local function publish_staged(x, op, snap, recorded, just_hashed)
  local staging, final, seg = M.paths(x.dir, op.canister)
  local same, why = true, nil
  if not just_hashed then same, why = M.same_bytes(staging, recorded) end
  if not same then
    return fail("EVERIFY", string.format("artifact of %s: the staged bytes changed after verification (%s); "
      .. "nothing was published", op.canister, why))
  end
  -- Made durable and private when Downloaded, and proved unchanged just
  -- now: only the rename and its directories' fsyncs remain.
  local pok, perr, pcode = fs.publish_dir(staging, final, { key = "artifact-" .. op.canister, private = true,
    synced = true })
  if not pok then return fail(pcode, perr) end
  return { snapshot_id = snap.snapshot_id, artifact_path = seg, digest = recorded.digest, bytes = recorded.bytes,
    files = recorded.files, fingerprint = recorded.fingerprint, taken_at = snap.taken_at,
    total_size = snap.total_size }
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
    local bad, meta, chunks = settle_staged(x, op, staging)
    if bad then return nil, bad end
    local rec, verr = verify_staged(x, op, staging, meta, chunks)
    if not rec then return nil, verr end
    return publish_staged(x, op, snap, rec, true)
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
        -- Downloaded: the staged bytes are on disk already.
        local verr
        recorded, verr = verify_staged(x, op, staging)
        if not recorded then return x:complete(op, nil, verr) end
      end
      local receipt, err = publish_staged(x, op, snap, recorded)
      return x:complete(op, receipt, err)
    end
    if snap and fs.lstat(final) and art and art.state == "ChecksumVerified" and M.same_bytes(final, art) then
      return x:complete(op, { snapshot_id = snap.snapshot_id, artifact_path = seg, digest = art.digest,
        bytes = art.bytes, files = art.files, fingerprint = art.fingerprint, taken_at = snap.taken_at,
        total_size = snap.total_size, reconciled = true })
    end
    if fs.lstat(final) then
      -- Published bytes we cannot vouch for: move them out of the way.
      errors.check("artifact of " .. op.canister, fs.remove_tree(final))
    end
    -- Download again (read-only on the network).
  end,
}

return M
