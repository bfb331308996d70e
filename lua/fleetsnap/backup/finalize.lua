--- The end of a backup: the manifest and download-journal.json written
-- once every artifact is durable (each checked against its receipt first),
-- and on-canister retention afterwards.
local engine = require "fleetsnap.engine"
local backup_plan = require "fleetsnap.backup.plan"
local canister_settings = require "fleetsnap.canister_settings"
local download = require "fleetsnap.backup.download"
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local ownership = require "fleetsnap.exec.ownership"
local snapshot_index = require "fleetsnap.snapshot_index"
local survey = require "fleetsnap.survey"

local json, fs = engine.json, engine.fs

local M = {}

local raise = errors.raise

-- {=== finalize ===}

--- The settings an attempt record holds, by canister id, each in its
-- canonical shape: a resumed run reads the record back from the journal
-- (a decoded object has lost its key order and prints its keys sorted)
-- and must print the bytes the first run may already have linked. A record that does not parse is
-- a corrupt journal.
function M.recorded_settings(attempt_record)
  local recorded = {}
  for _, e in ipairs(attempt_record and attempt_record.settings or {}) do
    if e.settings ~= json.null then
      local rec, bad = canister_settings.canonical(e.settings)
      if not rec then
        raise("ECORRUPT", string.format("the journal's settings of %s do not parse (%s)", tostring(e.canister_id), bad))
      end
      recorded[e.canister_id] = rec
    end
  end
  return recorded
end

function M.manifest(x, plan)
  -- Every published artifact is checked against its receipt before the
  -- manifest vouches for it (a directory removed or changed since is a
  -- typed failure, never a manifest). The bytes were hashed once, when
  -- downloaded; here an equal stat fingerprint (same files, inodes, sizes,
  -- mtimes and ctimes) proves them unchanged without reading them again,
  -- and only a moved fingerprint costs a second read.
  for _, t in ipairs(plan.targets) do
    local rec = x.state.ops["download-" .. t.canister_id].receipt
    local same, why = download.same_bytes(x.dir .. "/" .. rec.artifact_path, rec)
    if not same then
      raise("EVERIFY", string.format("artifact of %s changed after it was published: %s", t.canister_id, why))
    end
  end
  local artifacts, members = {}, {}
  local recorded = M.recorded_settings(x.state.attempt_record)
  local first_stop, last_start
  for _, t in ipairs(plan.targets) do
    local d = x.state.ops["download-" .. t.canister_id]
    local rec = d.receipt
    local stop = x.state.ops["stop-" .. t.canister_id]
    local start = x.state.ops["start-" .. t.canister_id]
    local stopped_at = stop and stop.receipt and stop.receipt.stopped_at
    local started_at = start and start.receipt and start.receipt.started_at
    if stopped_at and (not first_stop or stopped_at < first_stop) then first_stop = stopped_at end
    if started_at and (not last_start or started_at > last_start) then last_start = started_at end
    artifacts[t.canister_id] = { snapshot_id = rec.snapshot_id, artifact_path = rec.artifact_path, digest = rec.digest,
      taken_at = rec.taken_at, total_size = rec.total_size,
      module_hash = stop and stop.receipt and stop.receipt.module_hash }
    members[#members + 1] = json.ordered({ canister_id = t.canister_id, snapshot_id = rec.snapshot_id,
      stopped_at = stopped_at or json.null, started_at = started_at or json.null,
      downtime_ns = (stopped_at and started_at) and (started_at - stopped_at) or json.null,
      digest = rec.digest, bytes = rec.bytes, files = json.array(rec.files),
      settings = recorded[t.canister_id] },
      { "canister_id", "snapshot_id", "stopped_at", "started_at", "downtime_ns", "digest", "bytes", "files",
        "settings" })
  end
  if not x.state.created_at then
    -- Derived once and journaled, so a retried finalize writes the same bytes.
    x.state.created_at = "unix:" .. (engine.realtime_ns() // 1000000000)
    x:record({ t = "created_at", value = x.state.created_at })
  end
  local b = {
    backup_id = plan.backup_id, created_at = x.state.created_at, tool_version = engine.version,
    environment = plan.target.environment or plan.target.network or "local", root = plan.root,
    topology = { hash = plan.scope.topology_hash, input = plan.scope.topology_hash_input },
    targets = {}, artifacts = artifacts,
  }
  for i, t in ipairs(plan.targets) do
    b.targets[i] = { canister_id = t.canister_id, role = t.role, parent = t.parent ~= json.null and t.parent or nil }
  end
  b.fleetsnap = json.ordered({
    format_version = 1,
    policy = plan.policy.name,
    policy_sha256 = plan.policy.sha256,
    scope = plan.scope.kind,
    attempt = x.state.attempt,
    consistency_window = json.ordered({ first_stop_at = first_stop or json.null,
      last_start_at = last_start or json.null,
      window_ns = (first_stop and last_start) and (last_start - first_stop) or json.null },
      { "first_stop_at", "last_start_at", "window_ns" }),
    members = json.array(members),
  }, { "format_version", "policy", "policy_sha256", "scope", "attempt", "consistency_window", "members" })
  local man = manifest.build(b)
  local dj = manifest.download_journal(b)
  local ok, err, code = fs.write_replace(x.dir .. "/" .. manifest.DOWNLOAD_JOURNAL, json.encode(dj, { pretty = true }))
  if not ok then raise(errors.engine_code(code), manifest.DOWNLOAD_JOURNAL .. ": " .. err) end
  local text = json.encode(man, { pretty = true })
  -- Never publish a manifest our own reader would refuse.
  local decoded = json.decode(text)
  local valid, verr = manifest.validate(decoded, manifest.FILE_036, "0.36")
  if not valid then raise("ECORRUPT", "the manifest built for " .. plan.backup_id .. " is invalid: " .. verr) end
  local res
  res, err, code = fs.write_create(x.dir .. "/" .. manifest.FILE_036, text)
  if not res then
    raise(code == "ECONFLICT" and "ECORRUPT" or errors.engine_code(code), "manifest: " .. err)
  end
  -- The index of the manifest now published (and adopted, on a retry),
  -- before the record that ends finalize: a crash in between writes it
  -- again. It is ignored unless both documents are the bytes it names.
  local plan_sum, perr, pcode = engine.hash.file(x.dir .. "/" .. backup_plan.FILE)
  if not plan_sum then raise(errors.engine_code(pcode), backup_plan.FILE .. ": " .. tostring(perr)) end
  -- One digest of the manifest's bytes, for the index and the record.
  local manifest_sum = engine.hash.sha256(text)
  ok, err, code = snapshot_index.write(x.dir, snapshot_index.build(decoded, manifest_sum, plan_sum, plan.connection))
  if not ok then raise(errors.engine_code(code), snapshot_index.FILE .. ": " .. err) end
  x:record({ t = "finalized", manifest_sha256 = manifest_sum })
  errors.check("command locks", fs.remove_tree(x.dir .. "/.fleetsnap-commands"))
  return man
end

-- {=== on-canister retention ===}

--- Keeps at most `keep` fleetsnap-made snapshots per target (the newest,
-- by the IC's per-canister counter), deleting older ones only now that this
-- backup's artifacts are durable. Snapshots nobody recorded are never
-- touched. Idempotent: a resumed finalized backup runs it again.
function M.retain(x, plan, parent)
  local keep = plan.options.keep_on_canister
  if not keep or keep < 1 then return {} end
  local known = ownership.known(parent, plan.connection)
  -- The inventory each download's proof listed in this run serves here:
  -- under the fleet lock no other run of ours makes a snapshot since, and
  -- one of ours deleted since is gone already (SNAPSHOT_GONE counts as
  -- deleted). A member without one (its download settled by an earlier
  -- run) is listed now.
  local seen = x.context.inventories or {}
  local jobs, listed = {}, {}
  for _, t in ipairs(plan.targets) do
    if not seen[t.canister_id] then
      jobs[#jobs + 1] = { "snapshot_list", { canister = t.canister_id } }
      listed[#listed + 1] = t.canister_id
    end
  end
  local lists = {}
  for i, res in ipairs(x.driver:run_many(jobs, survey.read_bound(plan.options.concurrency))) do
    lists[listed[i]] = res[1] or {}
  end
  local deletes = {}
  for _, t in ipairs(plan.targets) do
    local cid = t.canister_id
    local ours = {}
    for _, s in ipairs(seen[cid] or lists[cid]) do
      if known[s.snapshot_id] and known[s.snapshot_id].canister == cid then ours[#ours + 1] = s.snapshot_id end
    end
    -- The first 8 bytes of an id are the canister's snapshot counter.
    table.sort(ours, function(a, b) return a > b end)
    for k = keep + 1, #ours do
      deletes[#deletes + 1] = { "snapshot_delete", { canister = cid, snapshot_id = ours[k] } }
    end
  end
  local deleted, failed = {}, {}
  for i, res in ipairs(x.driver:run_many(deletes, plan.options.concurrency)) do
    local p = deletes[i][2]
    if res[2] and res[2].code ~= "SNAPSHOT_GONE" then
      failed[#failed + 1] = res[2].message
    else
      deleted[#deleted + 1] = p.canister .. "/" .. p.snapshot_id
    end
  end
  x:record({ t = "retention", keep = keep, deleted = json.array(deleted), failed = json.array(failed) })
  if #deletes > 0 then x:emit("retention", { deleted = deleted, failed = failed }) end
  return deleted, failed
end

return M
