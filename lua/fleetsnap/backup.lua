--- Backups: create (discover, select, plan, persist), run (preflight,
-- drift check, the runner, containment, finalize) and verify.
local engine = require "fleetsnap.engine"
local fleet_mod = require "fleetsnap.fleet"
local policy_mod = require "fleetsnap.policy"
local runner_mod = require "fleetsnap.runner"
local manifest = require "fleetsnap.manifest"
local hex = require "fleetsnap.hex"

local json, fs = engine.json, engine.fs

local M = {}

M.PLAN = "fleetsnap-plan.json"
M.JOURNAL = "fleetsnap-journal.wal"
M.PLAN_VERSION = 1

-- Errors carry a stable code that the CLI maps to an exit code.
local function failure(code, message, extra)
  local e = { fleetsnap = true, code = code, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end
M.failure = failure

local function raise(code, message, extra)
  error(failure(code, message, extra), 0)
end

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local b = f:read(n)
  f:close()
  return hex.encode(b)
end

--- Discovery as configured: an inventory file, or the root's registry.
function M.discover(driver, opts)
  if opts.inventory then
    return fleet_mod.from_inventory(opts.inventory)
  end
  if not opts.root then
    return nil, "no root: give --root <principal> (or --inventory FILE)", "EUSAGE"
  end
  return fleet_mod.from_registry(driver, opts.root)
end

local function target_doc(m)
  return json.ordered({ canister_id = m.canister_id, role = m.role, parent = m.parent or json.null, depth = m.depth,
    module_hash = m.module_hash or json.null }, { "canister_id", "role", "parent", "depth", "module_hash" })
end

--- Builds the plan document (not yet written).
function M.plan(driver, opts)
  local policy, perr = policy_mod.load(opts.policy or "consistent")
  if not policy then raise("EPOLICY", perr) end
  local fleet, ferr, fcode
  if type(policy.discover) == "function" then
    -- The policy's own discovery, given what the registry says (if anything).
    local registry = (opts.root or opts.inventory) and M.discover(driver, opts) or nil
    local raw = nil
    if registry then
      raw = {}
      for i, m in ipairs(registry.members) do
        raw[i] = { canister_id = m.canister_id, role = m.role, parent = m.parent, module_hash = m.module_hash }
      end
    end
    local res, derr, dcode = policy_mod.discover(policy, { root = opts.root, registry = raw })
    if not res then raise(dcode or "EPOLICY", derr) end
    fleet, ferr, fcode = fleet_mod.build(res.root, res.members, "policy " .. policy.name .. " discovery")
  else
    fleet, ferr, fcode = M.discover(driver, opts)
  end
  if not fleet then raise(fcode or "EFLEET", ferr) end
  local selection, serr, scode = fleet_mod.select(fleet, opts)
  if not selection then raise(scode, serr) end
  local checks, cerr = policy_mod.checks(policy, selection)
  if not checks then raise("EPOLICY", cerr) end
  local ops, oerr = policy_mod.build(policy, selection)
  if not ops then raise("EPOLICY", oerr) end
  local hash, rows = fleet_mod.scope_hash(fleet, selection)
  local now = engine.realtime_ns()
  local stamp = os.date("!%Y%m%d-%H%M%S", now // 1000000000)
  local id = opts.backup_id or string.format("%s-%s-%s", fleet.root:sub(1, 5), stamp, random_hex(2))
  local targets, operations = {}, {}
  for i, m in ipairs(selection) do
    targets[i] = target_doc(m)
    if checks[m.canister_id] then targets[i].checks = json.array(checks[m.canister_id]) end
  end
  for i, op in ipairs(ops) do
    local o = { id = op.id, kind = op.kind, canister = op.canister, after = json.array(op.after) }
    if op.kind == "call" then
      o.method, o.args, o.query, o.idempotent = op.method, op.args, op.query, op.idempotent
    end
    operations[i] = o
  end
  return {
    format = "fleetsnap-plan",
    plan_version = M.PLAN_VERSION,
    backup_id = id,
    created_ns = now,
    root = fleet.root,
    discovery = type(policy.discover) == "function" and { policy = policy.name, root = opts.root,
      inventory = opts.inventory } or opts.inventory and { inventory = opts.inventory } or { registry = fleet.root },
    target = { environment = driver.environment, network = driver.network },
    scope = {
      kind = opts.subtree and "subtree" or opts.member and "member" or "fleet",
      selector = opts.subtree or opts.member,
      include_root = opts.include_root or false,
      topology_hash = hash,
      topology_hash_input = "fleetsnap-scope:sorted(pid,parent_pid,role,module_hash) of the selection and its "
        .. "ancestors",
      rows = json.array(rows),
    },
    policy = { name = policy.name, summary = policy.summary, sha256 = policy.sha256,
      leaves_stopped = policy.leaves_stopped or false },
    options = {
      concurrency = opts.concurrency or policy.concurrency or 16,
      downloads = opts.downloads or policy.downloads or 4,
      keep_on_canister = opts.keep_on_canister or 2,
      snapshot_limit = opts.snapshot_limit or 10,
    },
    targets = json.array(targets),
    operations = json.array(operations),
  }
end

--- Validates a plan document read from disk.
function M.read_plan(dir)
  local path = dir .. "/" .. M.PLAN
  local text, err, code = fs.read(path)
  if not text then return nil, "backup " .. dir .. ": " .. err, code == "ENOENT" and "ENOENT" or code end
  local doc, jerr = json.decode(text, { name = path })
  if not doc then return nil, jerr, "EJSON" end
  if doc.format ~= "fleetsnap-plan" then return nil, path .. ": format: not a fleetsnap plan", "EDOC" end
  if doc.plan_version ~= M.PLAN_VERSION then
    return nil, path .. ": plan_version: unsupported version " .. tostring(doc.plan_version), "EDOC"
  end
  for _, k in ipairs({ "backup_id", "root", "targets", "operations", "options", "scope", "policy" }) do
    if doc[k] == nil then return nil, path .. ": " .. k .. ": missing", "EDOC" end
  end
  return doc
end

-- {=== preflight ===}

--- Read-only rounds (preflight, checks, retention listing) change nothing,
-- so they are not held to the lifecycle bound (rolling's 4 would make 64
-- members' preflight 32 rounds long).
function M.read_bound(plan)
  return math.max(plan.options.concurrency, 32)
end

--- Snapshot ids fleetsnap made: recorded in manifests or plans of backups
-- under `parent` (the backups directory).
function M.known_snapshots(parent)
  local known = {}
  for _, name in ipairs(fs.list(parent) or {}) do
    local dir = parent .. "/" .. name
    local m = manifest.read(dir)
    if m then
      for _, member in ipairs(m.members) do
        known[member.source_snapshot.snapshot_id] = { backup = dir, canister = member.canister_id }
      end
    end
  end
  return known
end

--- What preflight asks of every target, many at a time: the operator's
-- principal, then each canister's status and snapshot inventory. Returns
-- me, rows ({canister, status, list}; nil where icp could not tell),
-- refusals (text per target), and the code a refusal raises:
-- EPRECONDITION for the fleet's answers (missing canister, not a
-- controller), EICP when icp could not ask (network, timeout).
function M.survey(driver, canisters, bound, what)
  local me, ierr = driver:run("identity")
  if not me then raise("EICP", what .. ": " .. ierr.message) end
  local jobs = {}
  for _, cid in ipairs(canisters) do
    jobs[#jobs + 1] = { "status", { canister = cid } }
    jobs[#jobs + 1] = { "snapshot_list", { canister = cid } }
  end
  local answers = driver:run_many(jobs, bound)
  local rows, refusals, code = {}, {}, "EPRECONDITION"
  local function refuse(cid, err)
    if err.code ~= "CANISTER_GONE" and err.code ~= "NOT_CONTROLLER" then code = "EICP" end
    refusals[#refusals + 1] = cid .. ": " .. (err.code == "CANISTER_GONE" and "does not exist" or err.message)
  end
  for i, cid in ipairs(canisters) do
    local st, serr = answers[2 * i - 1][1], answers[2 * i - 1][2]
    local list, lerr = answers[2 * i][1], answers[2 * i][2]
    rows[i] = { canister = cid, status = st, list = st and list or nil }
    if not st then
      refuse(cid, serr)
    else
      local controls = false
      for _, c in ipairs(st.controllers or {}) do if c == me then controls = true end end
      if st.public_only or not controls then
        refusals[#refusals + 1] = string.format("%s: the operator %s is not a controller", cid, me)
      end
      if not list then refuse(cid, lerr) end
    end
  end
  return me, rows, refusals, code
end

function M.preflight(r, plan)
  local canisters = {}
  for i, t in ipairs(plan.targets) do canisters[i] = t.canister_id end
  local me, rows, refusals, code = M.survey(r.driver, canisters, M.read_bound(plan), "preflight")
  local memory = 0
  local known = M.known_snapshots(r.dir:match("^(.*)/[^/]+$") or ".")
  r.replace_preflight = {}
  r.baselines, r.module_hashes = {}, {}
  for _, row in ipairs(rows) do
    local cid, st, list = row.canister, row.status, row.list
    if st then
      memory = memory + (st.memory_size or 0)
      r.module_hashes[cid] = st.module_hash
    end
    if list then
      r.baselines[cid] = runner_mod.ids(list)
      if #list >= plan.options.snapshot_limit then
        -- A full canister needs an old snapshot of ours, durable in a
        -- verified backup, to replace.
        local oldest
        for _, s in ipairs(list) do
          if known[s.snapshot_id] and not oldest then oldest = s.snapshot_id end
        end
        if oldest then
          r.replace_preflight[cid] = oldest
        else
          refusals[#refusals + 1] = string.format("%s: all %d snapshot slots are taken and none is a fleetsnap "
            .. "snapshot of a durable backup (delete one, or raise --snapshot-limit if the network allows more)",
            cid, #list)
        end
      end
    end
  end
  local avail = fs.free_space(r.dir)
  local need = math.floor(memory * 1.1) + (16 << 20)
  if avail and avail < need then
    refusals[#refusals + 1] = string.format("%s: %d MiB free, about %d MiB needed for the selection", r.dir,
      avail >> 20, need >> 20)
  end
  if #refusals > 0 then
    raise(code, "preflight " .. (code == "EICP" and "failed" or "refused") .. ", nothing was stopped:\n  "
      .. table.concat(refusals, "\n  "), { refusals = refusals })
  end
  return me
end

function M.check_drift(r, plan)
  if plan.discovery.policy then
    -- A policy's discovery was taken once, at planning; the policy is not
    -- run again, so only members still answering count (preflight).
    return
  end
  local f, err, code = M.discover(r.driver, { inventory = plan.discovery.inventory, root = plan.root })
  if not f then raise(code or "EFLEET", "topology re-read before the first stop: " .. err) end
  local sel = {}
  for _, t in ipairs(plan.targets) do
    local m = f.by_id[t.canister_id]
    if not m then raise("EPRECONDITION", "topology drift: " .. t.canister_id .. " left the fleet") end
    sel[#sel + 1] = m
  end
  local hash, rows = fleet_mod.scope_hash(f, sel)
  if hash ~= plan.scope.topology_hash then
    raise("EPRECONDITION", "topology drift since the plan was made; nothing was stopped. Changed rows:\n  "
      .. table.concat(fleet_mod.drift(plan.scope.rows, rows), "\n  "))
  end
end

-- {=== post-start checks ===}

--- Runs the policy's checks (queries whose replies must match) once every
-- member is running again. Returns nil or the first failure.
function M.run_checks(r, plan)
  local jobs, what = {}, {}
  for _, t in ipairs(plan.targets) do
    for _, c in ipairs(t.checks or {}) do
      jobs[#jobs + 1] = { "call", { canister = t.canister_id, method = c.method, args = c.args, query = true } }
      what[#what + 1] = { canister = t.canister_id, check = c }
    end
  end
  for i, res in ipairs(r.driver:run_many(jobs, M.read_bound(plan))) do
    local w = what[i]
    if not res[1] then
      return { code = "EVERIFY", message = string.format("check %s of %s after the restart: %s", w.check.method,
        w.canister, res[2].message) }
    end
    local reply = hex.encode(res[1])
    if reply ~= w.check.expect_hex then
      return { code = "EVERIFY", message = string.format("check %s of %s after the restart: reply %s, expected %s",
        w.check.method, w.canister, reply, w.check.expect_hex) }
    end
    r:emit("check-passed", { canister = w.canister, method = w.check.method })
  end
end

-- {=== containment ===}

--- Restarts every target this attempt stopped and did not start again.
function M.contain(r, plan, reason)
  local targets, started, failed = {}, {}, {}
  for _, t in ipairs(plan.targets) do
    local stop = r.state.ops["stop-" .. t.canister_id]
    local start = r.state.ops["start-" .. t.canister_id]
    if stop and stop.state == "failed" then
      -- A stop that reported failure may still have stopped the canister
      -- (CT-01): the canister's status decides.
      local st = r.driver:run("status", { canister = t.canister_id })
      if st and st.status ~= "running" then stop = { state = "completed" } end
    end
    local stopped = stop and (stop.state == "completed" or stop.state == "pending")
    local unstarted = r.unstarted and r.unstarted[t.canister_id]
    if stopped and (unstarted or not (start and start.state == "completed")) then
      targets[#targets + 1] = t.canister_id
    end
  end
  -- Only a failure while members were stopped breaks the consistency
  -- window: then the next run takes a new attempt. A failure after every
  -- start (a download, say) is simply retried.
  if #targets == 0 then return started, failed end
  -- Claimed before the starts: a crash among them still leaves the attempt
  -- contained, so the next run re-quiesces and restarts everything.
  r:record({ t = "contained", attempt = r.state.attempt, reason = reason, targets = json.array(targets) }, "contain")
  for _, cid in ipairs(targets) do
    local ok, err = r.driver:run("start", { canister = cid })
    if ok then
      started[#started + 1] = cid
    else
      failed[#failed + 1] = cid .. ": " .. err.message
    end
  end
  r:record({ t = "containment", attempt = r.state.attempt, started = json.array(started),
    failed = json.array(failed) }, "contain")
  r:emit("contained", { attempt = r.state.attempt, started = started, failed = failed })
  return started, failed
end

-- {=== finalize ===}

function M.finalize(r, plan)
  -- Every published artifact is re-hashed against its receipt before the
  -- manifest vouches for it (a directory removed or changed since is a
  -- typed failure, never a manifest).
  for _, t in ipairs(plan.targets) do
    local rec = r.state.ops["download-" .. t.canister_id].receipt
    local tree, terr = engine.hash.tree(r.dir .. "/" .. rec.artifact_path)
    if not tree then
      raise("EVERIFY", "artifact of " .. t.canister_id .. " before the manifest: " .. terr)
    elseif tree.digest ~= rec.digest then
      raise("EVERIFY", string.format("artifact of %s changed after it was published: digest %s, recorded %s",
        t.canister_id, tree.digest, rec.digest))
    end
  end
  local artifacts, members = {}, {}
  local first_stop, last_start
  for _, t in ipairs(plan.targets) do
    local d = r.state.ops["download-" .. t.canister_id]
    local rec = d.receipt
    local stop = r.state.ops["stop-" .. t.canister_id]
    local start = r.state.ops["start-" .. t.canister_id]
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
      digest = rec.digest, bytes = rec.bytes, files = json.array(rec.files) },
      { "canister_id", "snapshot_id", "stopped_at", "started_at", "downtime_ns", "digest", "bytes", "files" })
  end
  if not r.state.created_at then
    -- Derived once and journaled, so a retried finalize writes the same bytes.
    r.state.created_at = "unix:" .. (engine.realtime_ns() // 1000000000)
    r:record({ t = "created_at", value = r.state.created_at })
  end
  local b = {
    backup_id = plan.backup_id, created_at = r.state.created_at, tool_version = engine.version,
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
    attempt = r.state.attempt,
    consistency_window = json.ordered({ first_stop_at = first_stop or json.null,
      last_start_at = last_start or json.null,
      window_ns = (first_stop and last_start) and (last_start - first_stop) or json.null },
      { "first_stop_at", "last_start_at", "window_ns" }),
    members = json.array(members),
  }, { "format_version", "policy", "policy_sha256", "scope", "attempt", "consistency_window", "members" })
  local man = manifest.build(b)
  local dj = manifest.download_journal(b)
  local ok, err, code = fs.write_replace(r.dir .. "/" .. manifest.DOWNLOAD_JOURNAL, json.encode(dj, { pretty = true }))
  if not ok then raise(code, err) end
  local text = json.encode(man, { pretty = true })
  -- Never publish a manifest our own reader would refuse.
  local valid, verr = manifest.validate(json.decode(text), manifest.FILE_036, "0.36")
  if not valid then raise("ECORRUPT", "the manifest built for " .. plan.backup_id .. " is invalid: " .. verr) end
  local res
  res, err, code = fs.write_create(r.dir .. "/" .. manifest.FILE_036, text)
  if not res then
    raise(code == "ECONFLICT" and "ECORRUPT" or code, "manifest: " .. err)
  end
  r:record({ t = "finalized", manifest_sha256 = engine.hash.sha256(text) })
  assert(fs.remove_tree(r.dir .. "/.fleetsnap-commands"))
  return man
end

-- {=== on-canister retention ===}

--- Keeps at most `keep` fleetsnap-made snapshots per target (the newest,
-- by the IC's per-canister counter), deleting older ones only now that this
-- backup's artifacts are durable. Snapshots nobody recorded are never
-- touched. Idempotent: a resumed finalized backup runs it again.
function M.retain(r, plan)
  local keep = plan.options.keep_on_canister
  if not keep or keep < 1 then return {} end
  local known = M.known_snapshots(r.dir:match("^(.*)/[^/]+$") or ".")
  local jobs = {}
  for _, t in ipairs(plan.targets) do jobs[#jobs + 1] = { "snapshot_list", { canister = t.canister_id } } end
  local deletes = {}
  for i, res in ipairs(r.driver:run_many(jobs, M.read_bound(plan))) do
    local cid = plan.targets[i].canister_id
    local ours = {}
    for _, s in ipairs(res[1] or {}) do
      if known[s.snapshot_id] and known[s.snapshot_id].canister == cid then ours[#ours + 1] = s.snapshot_id end
    end
    -- The first 8 bytes of an id are the canister's snapshot counter.
    table.sort(ours, function(a, b) return a > b end)
    for k = keep + 1, #ours do
      deletes[#deletes + 1] = { "snapshot_delete", { canister = cid, snapshot_id = ours[k] } }
    end
  end
  local deleted, failed = {}, {}
  for i, res in ipairs(r.driver:run_many(deletes, plan.options.concurrency)) do
    local p = deletes[i][2]
    if res[2] and res[2].code ~= "SNAPSHOT_GONE" then
      failed[#failed + 1] = res[2].message
    else
      deleted[#deleted + 1] = p.canister .. "/" .. p.snapshot_id
    end
  end
  r:record({ t = "retention", keep = keep, deleted = json.array(deleted), failed = json.array(failed) })
  if #deletes > 0 then r:emit("retention", { deleted = deleted, failed = failed }) end
  return deleted, failed
end

-- {=== run ===}

--- Removes temp files of durable writes that a dead writer left behind.
function M.clean_temp(dir)
  for _, name in ipairs(fs.list(dir) or {}) do
    if name:match("^%..+%.fsn%-tmp%-%d+%-%x+$") then os.remove(dir .. "/" .. name) end
  end
end

--- Runs (or resumes) the backup in dir to completion. opts: driver, events,
-- dry_run. Returns the summary, or raises a failure.
function M.run(dir, opts)
  local plan, perr, pcode = M.read_plan(dir)
  if not plan then raise(pcode == "ENOENT" and "ENOTFOUND" or "ECORRUPT", perr) end
  local lock, lerr, lcode = engine.lock.acquire(dir .. "/" .. M.JOURNAL .. ".lock")
  if not lock then raise(lcode == "ELOCKED" and "ELOCKED" or lcode, "backup " .. dir .. ": " .. lerr) end
  -- Under the lock no other writer is alive here: leftovers are stale.
  M.clean_temp(dir)
  local j, jerr, jcode = engine.journal.open(dir .. "/" .. M.JOURNAL)
  if not j then
    lock:close()
    raise(jcode == "ECORRUPT" and "ECORRUPT" or jcode, jerr)
  end
  local r = runner_mod.new({ dir = dir, plan = plan, driver = opts.driver, events = opts.events,
    concurrency = plan.options.concurrency, downloads = plan.options.downloads })
  r.j = j
  r.failures = {}
  local ok, result = pcall(function()
    r.state = runner_mod.replay(j)
    if r.state.finalized then
      -- A crash after the final record may have left the command locks and
      -- an unfinished retention.
      assert(fs.remove_tree(dir .. "/.fleetsnap-commands"))
      if not r.state.retained then M.retain(r, plan) end
      return { already = true }
    end
    local fresh = r.state.attempt == 0
    if fresh or r.state.contained[r.state.attempt] then
      r.state.attempt = r.state.attempt + 1
      -- The abandoned attempt's snapshots are replaced, so every artifact
      -- comes from one consistency window.
      r.replace = {}
      local orphans = {}
      for _, t in ipairs(plan.targets) do
        local o = r.state.ops["snapshot-" .. t.canister_id]
        local done = o and (o.state == "completed" and o or o.previous)
        if done and done.state == "completed" and done.receipt then
          r.replace[t.canister_id] = done.receipt.snapshot_id
        elseif o and o.state == "failed" and o.claim and o.claim.baseline then
          -- A create that reported failure may have committed (CT-02): one
          -- snapshot beyond the claim's baseline is ours to replace.
          orphans[#orphans + 1] = { t.canister_id, o.claim.baseline }
        end
      end
      for _, x in ipairs(orphans) do
        local list = r.driver:run("snapshot_list", { canister = x[1] })
        local new = list and runner_mod.new_snapshots(x[2], list) or {}
        if #new == 1 then r.replace[x[1]] = new[1].snapshot_id end
      end
      M.preflight(r, plan)
      for cid, id in pairs(r.replace_preflight or {}) do r.replace[cid] = r.replace[cid] or id end
      M.check_drift(r, plan)
      r:record({ t = "attempt", n = r.state.attempt })
      r.state = runner_mod.replay(j)
      r:emit("attempt", { n = r.state.attempt })
    else
      local err = r:reconcile()
      if err then raise(err.code == "IN_FLIGHT" and "EINFLIGHT" or err.code, err.message) end
      r.replace = {}
      for _, t in ipairs(plan.targets) do
        local o = r.state.ops["snapshot-" .. t.canister_id]
        if o and o.claim and o.claim.replace then r.replace[t.canister_id] = o.claim.replace end
      end
    end
    local failed_before = {}
    for _, op in ipairs(plan.operations) do
      local o = r.state.ops[op.id]
      if o and o.state == "failed" then
        if opts.retry_failed or op.kind == "download" then
          -- A download only reads: it is always safe to try again.
          -- The operator has looked: the operation may run again.
          r:record({ t = "rearm", op = op.id, attempt = r.state.attempt }, op.id)
          r.state.ops[op.id] = { kind = op.kind }
        else
          failed_before[#failed_before + 1] = op.id .. ": " .. tostring(o.error and o.error.message)
        end
      end
    end
    if #failed_before > 0 then
      raise("EFAILED", "backup " .. dir .. ": operations failed (check, then `backup resume --retry-failed`):\n  "
        .. table.concat(failed_before, "\n  "))
    end
    local success = r:schedule()
    if success then
      local bad = r:check_started() or M.run_checks(r, plan)
      if bad then
        r.failures[#r.failures + 1] = { op = "check-started", error = bad }
        success = false
      end
    end
    if not success then
      local f = r.failures[1]
      local message = f.error.message
      if f.error.code ~= "IN_FLIGHT" then
        local _, cfailed = M.contain(r, plan, f.op .. ": " .. f.error.message)
        if #cfailed > 0 then
          -- Both causes: the operator must know some canisters stay stopped (CT-03).
          message = message .. "\nand starting stopped canisters again failed:\n  " .. table.concat(cfailed, "\n  ")
        end
      end
      local code = ({ IN_FLIGHT = "EINFLIGHT", EVERIFY = "EVERIFY", LIMIT = "EPRECONDITION",
        NOT_CONTROLLER = "EPRECONDITION", NOT_STOPPED = "EPRECONDITION" })[f.error.code] or "EICP"
      raise(code, message,
        { failures = r.failures, op = f.op, icp_code = f.error.code })
    end
    local man = M.finalize(r, plan)
    M.retain(r, plan)
    return { manifest = man }
  end)
  if not ok and (type(result) == "string" and result:find("interrupted!", 1, true)
      or type(result) == "table" and result.code == "EINTERRUPTED") then
    -- Interrupted: nothing may stay stopped because the operator pressed
    -- Ctrl-C. A claim left pending is reconciled by the next resume.
    local cok, cerr = pcall(M.contain, r, plan, "interrupted by the operator")
    result = failure("EINTERRUPTED", "interrupted; stopped canisters were started again" ..
      (cok and "" or (" (containment failed: " .. tostring(cerr) .. ")")) .. "; resume with `backup resume`")
  end
  j:close()
  lock:close()
  if not ok then error(result, 0) end
  return result, r
end

--- Creates a backup: plan, persist, run. opts: driver, out, root, inventory,
-- subtree, member, include_root, policy, concurrency, downloads,
-- keep_on_canister, dry_run, events.
function M.create(opts)
  local plan = M.plan(opts.driver, opts)
  local dir = opts.out or ("backups/" .. plan.backup_id)
  if opts.out then
    plan.backup_id = dir:match("([^/]+)/*$")
  end
  if opts.dry_run then
    return { dry_run = true, plan = plan, dir = dir }
  end
  local parent = dir:match("^(.*)/[^/]+$")
  if parent then engine.proc.run({ argv = { "mkdir", "-p", parent } }) end
  if fs.lstat(dir .. "/" .. M.PLAN) then
    raise("EEXISTS", "backup directory " .. dir .. " already holds a backup (resume it)")
  end
  for _, name in ipairs(fs.list(dir) or {}) do
    -- Only what an interrupted create leaves may be there already.
    if not (name:find("%.fsn%-tmp%-") or name == M.JOURNAL .. ".lock") then
      raise("EEXISTS", "backup directory " .. dir .. " already exists and is not empty")
    end
  end
  M.clean_temp(dir)
  local ok, err, code = fs.mkdir_private(dir)
  if not ok then raise(code, err) end
  local res
  res, err, code = fs.write_create(dir .. "/" .. M.PLAN, json.encode(plan, { pretty = true }))
  if not res then raise(code, err) end
  if opts.events then
    opts.events({ type = "created", backup_id = plan.backup_id, dir = dir, operations = #plan.operations })
  end
  local result = M.run(dir, opts)
  result.dir = dir
  result.plan = plan
  return result
end

-- {=== prune ===}

--- The backups under dir, newest first: {name, dir, complete, locked,
-- created_ns}.
function M.inventory(dir)
  local out = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    local path = dir .. "/" .. name
    local plan = M.read_plan(path)
    local man = manifest.read(path)
    if plan or man then
      local created = plan and plan.created_ns
      if not created and man then
        local secs = tostring(man.doc.created_at):match("^unix:(%d+)$")
        created = secs and tonumber(secs) * 1000000000 or 0
      end
      -- Required here, not at the top: restore requires this module.
      local locked = not engine.lock.probe(path .. "/" .. M.JOURNAL .. ".lock")
        or require("fleetsnap.restore").in_use(path)
      out[#out + 1] = { name = name, dir = path, complete = man ~= nil, locked = locked, created_ns = created or 0 }
    end
  end
  table.sort(out, function(a, b)
    if a.created_ns ~= b.created_ns then return a.created_ns > b.created_ns end
    return a.name > b.name
  end)
  return out
end

--- Chooses what to delete: complete, unlocked backups kept by none of the
-- rules (the newest `last`; the newest of each of the `daily` most recent
-- days and `weekly` most recent weeks). Incomplete or locked backups are
-- never candidates.
function M.prune_plan(backups, rules)
  local keep, days, weeks = {}, {}, {}
  local complete = {}
  for _, b in ipairs(backups) do
    if b.complete and not b.locked then complete[#complete + 1] = b end
  end
  for i, b in ipairs(complete) do
    if i <= (rules.last or 0) then keep[b.dir] = "last" end
    local secs = b.created_ns // 1000000000
    local day, week = os.date("!%Y-%m-%d", secs), os.date("!%G-W%V", secs)
    if not days[day] and #(days.list or {}) < (rules.daily or 0) then
      days[day] = true
      days.list = days.list or {}
      days.list[#days.list + 1] = day
      keep[b.dir] = keep[b.dir] or "daily"
    end
    if not weeks[week] and #(weeks.list or {}) < (rules.weekly or 0) then
      weeks[week] = true
      weeks.list = weeks.list or {}
      weeks.list[#weeks.list + 1] = week
      keep[b.dir] = keep[b.dir] or "weekly"
    end
  end
  local delete = {}
  for _, b in ipairs(complete) do
    if not keep[b.dir] then delete[#delete + 1] = b end
  end
  return delete, keep
end

--- Deletes a backup directory, under its lock so that no runner is using it.
function M.remove(b)
  local lock, err, code = engine.lock.acquire(b.dir .. "/" .. M.JOURNAL .. ".lock")
  if not lock then return nil, err, code end
  local ok, rerr, rcode = fs.remove_tree(b.dir)
  lock:close()
  return ok, rerr, rcode
end

-- {=== verify ===}

--- Verifies a backup offline: every artifact re-hashed against its
-- checksum (and, for fleetsnap backups, each file against its digest).
-- Returns a report {ok, backup_id, members = {{canister_id, ok, problems}}}.
-- `m`: the manifest, if the caller has read it already.
function M.verify(dir, m)
  local err, code
  if not m then m, err, code = manifest.read(dir) end
  if not m then raise(code == "ENOENT" and "ENOTFOUND" or "ECORRUPT", err) end
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
