--- The `fleetsnap` command line. Global options come before the command:
--   fleetsnap [--icp PATH | --sim HOME] [-e ENV | -n NETWORK [-k KEY]]
--             [--identity NAME] [--json] <command> ...
-- Exit codes: 0 ok, 1 an icp command failed, 2 usage, 3 not found,
-- 4 locked or a command still in flight, 5 precondition refused,
-- 6 verification failed, 7 corrupt or invalid document, 130 interrupted.
local argparse = require "argparse"
local engine = require "fleetsnap.engine"
local driver_mod = require "fleetsnap.drivers.icp"
local errors = require "fleetsnap.errors"

local json, fs = engine.json, engine.fs

local M = {}

M.EXIT = {
  EICP = 1, ICP_FAILED = 1, NETWORK = 1, TIMEOUT = 1, EFAILED = 1, EFLEET = 1, EREGISTRY = 1,
  EUSAGE = 2, EPRINCIPAL = 2,
  ENOTFOUND = 3, ENOENT = 3, ESELECT = 3,
  ELOCKED = 4, EINFLIGHT = 4,
  EPRECONDITION = 5, EEXISTS = 5, LIMIT = 5, ENOSPC = 5, ECONFLICT = 5,
  EVERIFY = 6,
  ECORRUPT = 7, EJSON = 7, EDOC = 7, EMANIFEST = 7, EPOLICY = 7, EUNSAFE = 7, EMAPPING = 7,
  EINTERRUPTED = 130,
}

local function parser()
  local p = argparse("fleetsnap", "Back up and restore fleets of Internet Computer canisters.")
  p:help_max_width(100)
  p:mutex(p:option("--icp", "Path of the icp binary."), p:option("--sim", "Use scripts/icp-sim with this home."))
  p:mutex(p:option("-e --environment", "icp environment."), p:option("-n --network", "icp network (name or URL)."))
  p:option("-k --root-key", "Root key when --network is a URL.")
  p:option("--identity", "icp identity.")
  p:option("--identity-password-file", "Password file of the identity.")
  p:option("--project-root-override", "icp project root.")
  p:option("--timeout", "Seconds each icp command may take (default per kind: 300, stop 600, transfers 120 "
    .. "+ 1/MiB)."):convert(math.tointeger)
  p:flag("--json", "Print JSON (events as NDJSON while a long command runs).")
  p:command_target("command")

  local backup = p:command("backup", "Create, resume, inspect and verify backups.")
  backup:command_target("backup_command")
  local create = backup:command("create", "Back up a fleet (or part of it).")
  create:option("--root", "Principal of the Canic root.")
  create:mutex(create:option("--subtree", "Role or principal whose subtree to back up."),
    create:option("--member", "One member to back up."))
  create:flag("--include-root", "Capture the root too (maintenance).")
  create:option("--inventory", "Static inventory file instead of the root's registry.")
  create:option("--policy", "Bundled policy name or policy file.", "consistent")
  create:option("--out", "Backup directory (default ./backups/<root>-<UTC time>-<hex>).")
  create:option("--concurrency", "Lifecycle operations at once."):convert(math.tointeger)
  create:option("--downloads", "Downloads at once."):convert(math.tointeger)
  create:option("--keep-on-canister", "fleetsnap snapshots kept per canister.", "2"):convert(math.tointeger)
  create:option("--snapshot-limit", "Snapshots the network allows per canister (icp cannot tell).", "10")
    :convert(math.tointeger)
  create:flag("--dry-run", "Print the plan and the icp command lines; change nothing.")
  local resume = backup:command("resume", "Resume an interrupted backup.")
  resume:argument("ref", "Backup directory, id or list number.")
  resume:flag("--retry-failed", "Run failed operations again (after checking what they did).")
  local status = backup:command("status", "Progress of a backup.")
  status:argument("ref", "Backup directory, id or list number.")
  local verify = backup:command("verify", "Re-hash every artifact against the manifest (offline).")
  verify:argument("ref", "Backup directory, id or list number.")
  local list = backup:command("list", "Backups in a directory.")
  list:option("--dir", "Backups directory.", "backups")
  local inspect = backup:command("inspect", "Plan, members and artifacts of a backup.")
  inspect:argument("ref", "Backup directory, id or list number.")
  inspect:option("--dir", "Backups directory for ids and numbers.", "backups")
  local prune = backup:command("prune", "Delete old complete backups (never incomplete, locked or in-use ones).")
  prune:option("--dir", "Backups directory.", "backups")
  prune:option("--keep-last", "Newest backups to keep."):convert(math.tointeger)
  prune:option("--keep-daily", "Days for which to keep the newest backup."):convert(math.tointeger)
  prune:option("--keep-weekly", "Weeks for which to keep the newest backup."):convert(math.tointeger)
  prune:flag("--dry-run", "Say what would be deleted.")
  for _, c in ipairs({ resume, status, verify }) do
    c:option("--dir", "Backups directory for ids and numbers.", "backups")
  end

  local restore = p:command("restore", "Plan, run, check and undo restores of a backup.")
  restore:command_target("restore_command")
  local rplan = restore:command("plan", "Plan a restore of a verified backup (writes fleetsnap-restore-plan.json).")
  rplan:argument("ref", "Backup directory, id or list number.")
  rplan:option("--mapping", "Mapping file {\"members\": [{\"source_canister\", \"target_canister\"}]}.")
  rplan:mutex(rplan:option("--members", "Members to restore (principals or roles, comma-separated)."),
    rplan:option("--subtree", "Restore this member (principal or role) and everything below it."))
  rplan:option("--policy", "Bundled policy name or policy file (default: the backup's).")
  rplan:option("--concurrency", "Lifecycle operations at once."):convert(math.tointeger)
  rplan:option("--uploads", "Uploads at once (also bounded by free space for staging)."):convert(math.tointeger)
  rplan:option("--snapshot-limit", "Snapshots the network allows per canister.", "10"):convert(math.tointeger)
  local rrun = restore:command("run", "Run (or preview) the planned restore; resumes where it stopped.")
  rrun:argument("ref", "Backup directory, id or list number.")
  rrun:mutex(rrun:flag("--dry-run", "Print the icp command lines still to run (the default)."),
    rrun:flag("--execute", "Execute."),
    rrun:flag("--abort", "Before the first load only: restart stopped targets, delete the snapshots this "
      .. "restore made, give up."))
  rrun:option("--max-steps", "Run at most this many operations, then stop."):convert(math.tointeger)
  rrun:flag("--retry-failed", "Re-arm failed operations, then execute.")
  rrun:flag("--safety-snapshot", "Snapshot each target after stopping it, before loading (for `restore undo`).")
  rrun:flag("--verify-data", "After each load, snapshot, download and compare the data with the backup.")
  rrun:flag("--keep-uploaded", "Keep the uploaded snapshots after a verified restore.")
  local rstatus = restore:command("status", "Progress, next operations and failures of a restore.")
  rstatus:argument("ref", "Backup directory, id or list number.")
  local rundo = restore:command("undo", "Load the safety snapshots back (parents stopped first, children started "
    .. "first).")
  rundo:argument("ref", "Backup directory, id or list number.")
  rundo:flag("--retry-failed", "Re-arm failed operations of the undo, then execute.")
  for _, c in ipairs({ rplan, rrun, rstatus, rundo }) do
    c:option("--state", "Restore state directory (default <backup>/restore; for read-only backups).")
    c:option("--dir", "Backups directory for ids and numbers.", "backups")
  end

  local pol = p:command("policy", "Bundled and custom policies.")
  pol:command_target("policy_command")
  pol:command("list", "Bundled policies.")
  pol:command("show", "A policy's source."):argument("name", "Name or file.")
  pol:command("check", "Load a policy and plan a sample fleet with it."):argument("name", "Name or file.")
  return p
end

-- {=== output ===}

local function out(args, doc, text)
  if args.json then
    io.stdout:write(json.encode(doc) .. "\n")
  else
    io.stdout:write(text)
  end
end

local function fail(args, code, message, extra)
  local rc = errors.exit_code(errors.new(code, message))
  if args and args.json then
    local doc = { type = "error", code = code, message = message, exit = rc }
    for k, v in pairs(extra or {}) do doc[k] = v end
    io.stdout:write(json.encode(doc) .. "\n")
  end
  io.stderr:write("fleetsnap: " .. message .. "\n")
  local steps = extra and (extra.next_steps or (extra.next and { extra.next })) or {}
  for _, st in ipairs(steps) do
    local line = { "fleetsnap" }
    for _, f in ipairs({ { "sim", "--sim" }, { "icp", "--icp" }, { "environment", "-e" }, { "network", "-n" },
      { "root_key", "-k" }, { "identity", "--identity" }, { "identity_password_file", "--identity-password-file" } }) do
      if args and args[f[1]] then
        line[#line + 1] = f[2]
        line[#line + 1] = args[f[1]]
      end
    end
    line[#line + 1] = st.command
    line[#line + 1] = st.ref
    local keys = {}
    for k in pairs(st.options or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      line[#line + 1] = "--" .. k:gsub("_", "-")
      if st.options[k] ~= true then line[#line + 1] = tostring(st.options[k]) end
    end
    io.stderr:write("next: " .. table.concat(line, " ") .. "\n")
  end
  return rc
end

local function make_driver(args)
  local opts = { environment = args.environment, network = args.network, root_key = args.root_key,
    identity = args.identity, identity_password_file = args.identity_password_file,
    project_root = args.project_root_override }
  if args.timeout then
    opts.timeouts = {}
    for k in pairs(driver_mod.DEFAULT_TIMEOUTS) do opts.timeouts[k] = args.timeout end
    opts.timeouts.transfer_per_mib = 0
  end
  if args.sim then
    -- The simulator's Lua entry directly (the module paths are inherited):
    -- a shell wrapper per call would double the cost of every icp call.
    local root = os.getenv("FLEETSNAP_ROOT") or "."
    opts.command = { "lua5.4", root .. "/scripts/lib/icp-sim.lua" }
    opts.display = { root .. "/scripts/icp-sim" }
    opts.env = { ICP_SIM_HOME = args.sim }
    -- Each simulated fleet is a network of its own (the fleet lock's key).
    local rp = engine.proc.run({ argv = { "realpath", "-m", "--", args.sim } })
    opts.network_scope = "icp-sim " .. (rp.status == 0 and rp.stdout:gsub("\n$", "") or args.sim)
    opts.environment = opts.environment or (not opts.network and "local" or nil)
  else
    opts.icp = args.icp or "icp"
  end
  return driver_mod.new(opts)
end

local function sim_root(home)
  local text = fs.read(home .. "/sim.json")
  local doc = text and json.decode(text)
  return doc and doc.root
end

-- A backup reference: a directory, or an id or list number under --dir.
local function resolve(ref, dir)
  if fs.lstat(ref) and fs.lstat(ref).type == "directory" then return ref end
  local n = math.tointeger(tonumber(ref))
  local names = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    if fs.lstat(dir .. "/" .. name .. "/fleetsnap-plan.json") or fs.lstat(dir .. "/" .. name .. "/"
      .. "fleet-backup-manifest.json") or fs.lstat(dir .. "/" .. name .. "/deployment-backup-manifest.json") then
      names[#names + 1] = name
    end
  end
  if n and names[n] then return dir .. "/" .. names[n] end
  for _, name in ipairs(names) do
    if name == ref then return dir .. "/" .. name end
  end
  return nil
end

-- NDJSON events with --json; on a terminal, one progress line rewritten in
-- place; otherwise nothing until the summary.
local function events(args)
  local tty = not args.json and engine.isatty(2)
  local done, total = 0, 0
  return function(e)
    e.at = e.at or engine.realtime_ns()
    if args.json then
      io.stdout:write(json.encode(e) .. "\n")
      io.stdout:flush()
      return
    end
    if not tty then return end
    if e.type == "plan" or e.type == "created" or e.type == "restore" then
      total = e.operations or total
    elseif e.type == "operation-completed" then
      done = done + 1
      io.stderr:write(string.format("\r\27[K[%d%s] %s", done, total > 0 and ("/" .. total) or "", e.op))
    elseif e.type == "operation-failed" then
      io.stderr:write(string.format("\r\27[K%s failed: %s\n", e.op, e.message or e.code))
    elseif e.type == "contained" then
      io.stderr:write(string.format("\r\27[Kstarted %d stopped canister(s) again\n", #e.started))
    end
  end
end

-- {=== commands ===}

local backup = require "fleetsnap.backup"
local backup_plan = require "fleetsnap.backup.plan"
local catalog = require "fleetsnap.catalog"
local verify = require "fleetsnap.verify"

local function summary_text(dir, result)
  local man = result.manifest
  if not man then return "backup " .. dir .. ": already complete\n" end
  local fsn = man.fleetsnap
  local w = fsn.consistency_window.window_ns
  local bytes = 0
  for _, m in ipairs(fsn.members) do bytes = bytes + m.bytes end
  return string.format("backup %s complete: %d members, %d bytes, policy %s, consistency window %s\n  %s\n",
    man.backup_id, #fsn.members, bytes, fsn.policy, w ~= json.null and string.format("%.3f s", w / 1e9) or "n/a", dir)
end

function M.backup_create(args)
  local driver = make_driver(args)
  local root = args.root
  if args.sim and not root and not args.inventory then root = sim_root(args.sim) end
  local res = backup.create({ driver = driver, root = root, inventory = args.inventory, subtree = args.subtree,
    member = args.member, include_root = args.include_root, policy = args.policy, out = args.out,
    concurrency = args.concurrency, downloads = args.downloads, keep_on_canister = args.keep_on_canister,
    snapshot_limit = args.snapshot_limit,
    dry_run = args.dry_run, events = events(args) })
  if res.dry_run then
    local lines = { string.format("plan %s (policy %s, %d targets, %d operations) into %s", res.plan.backup_id,
      res.plan.policy.name, #res.plan.targets, #res.plan.operations, res.dir) }
    local cmds = res.commands
    for _, c in ipairs(cmds) do
      lines[#lines + 1] = string.format("  %-40s %s", c.op, c.command)
    end
    out(args, { type = "plan", plan = res.plan, commands = cmds }, table.concat(lines, "\n") .. "\n")
    return 0
  end
  out(args, { type = "result", status = "complete", dir = res.dir, backup_id = res.plan.backup_id },
    summary_text(res.dir, res))
  return 0
end

function M.backup_resume(args)
  local dir = resolve(args.ref, args.dir)
  if not dir then return fail(args, "ENOTFOUND", "no backup " .. args.ref .. " (nor under " .. args.dir .. ")") end
  local res = backup.run(dir, { driver = make_driver(args), events = events(args), retry_failed = args.retry_failed })
  out(args, { type = "result", status = "complete", dir = dir }, summary_text(dir, res))
  return 0
end

function M.backup_status(args)
  local dir = resolve(args.ref, args.dir)
  if not dir then return fail(args, "ENOTFOUND", "no backup " .. args.ref) end
  local plan, err, code = backup_plan.read(dir)
  if not plan then return fail(args, code == "ENOENT" and "ENOTFOUND" or "ECORRUPT", err) end
  local counts = { completed = 0, failed = 0, pending = 0, waiting = 0 }
  local failed, pending = json.array({}), json.array({})
  local state = { attempt = 0, ops = {} }
  -- Read-only: a runner may be appending right now; never repair its tail.
  local j = engine.journal.open(dir .. "/" .. backup.JOURNAL, { readonly = true })
  if j then
    state = require("fleetsnap.exec.state").replay(j)
    j:close()
  end
  for _, op in ipairs(plan.operations) do
    local o = state.ops[op.id]
    local s = o and o.state or "waiting"
    counts[s] = counts[s] + 1
    if s == "failed" then failed[#failed + 1] = { op = op.id, error = o.error } end
    if s == "pending" then pending[#pending + 1] = op.id end
  end
  local complete = state.finalized ~= nil
  local doc = { type = "status", backup_id = plan.backup_id, dir = dir, complete = complete, attempt = state.attempt,
    operations = #plan.operations, counts = counts, failed = failed, pending = pending }
  local text = string.format("backup %s: %s, attempt %d, %d/%d operations completed, %d failed, %d pending\n",
    plan.backup_id, complete and "complete" or "incomplete", state.attempt, counts.completed, #plan.operations,
    counts.failed, counts.pending)
  for _, f in ipairs(failed) do text = text .. "  failed " .. f.op .. ": " .. tostring(f.error.message) .. "\n" end
  out(args, doc, text)
  return 0
end

function M.backup_verify(args)
  local dir = resolve(args.ref, args.dir)
  if not dir then return fail(args, "ENOTFOUND", "no backup " .. args.ref) end
  local report = verify.backup(dir)
  local lines = {}
  for _, m in ipairs(report.members) do
    for _, p in ipairs(m.problems) do lines[#lines + 1] = "  " .. m.canister_id .. ": " .. p end
  end
  local text = string.format("backup %s: %s (%d members)\n%s", report.backup_id, report.ok and "verified" or
    "VERIFICATION FAILED", #report.members, #lines > 0 and (table.concat(lines, "\n") .. "\n") or "")
  report.type = "verify"
  out(args, report, text)
  return report.ok and 0 or M.EXIT.EVERIFY
end

function M.backup_list(args)
  local rows = {}
  for i, name in ipairs(fs.list(args.dir) or {}) do
    local dir = args.dir .. "/" .. name
    local plan = backup_plan.read(dir)
    local man = require("fleetsnap.manifest").read(dir)
    if plan or man then
      rows[#rows + 1] = { n = #rows + 1, id = name, dir = dir, complete = man ~= nil,
        members = man and #man.members or (plan and #plan.targets) }
    end
    local _ = i
  end
  local lines = {}
  for _, r in ipairs(rows) do
    lines[#lines + 1] = string.format("%3d  %-40s %-10s %d members", r.n, r.id, r.complete and "complete" or
      "incomplete", r.members or 0)
  end
  out(args, { type = "list", backups = rows }, #lines > 0 and (table.concat(lines, "\n") .. "\n") or "no backups\n")
  return 0
end

function M.backup_inspect(args)
  local dir = resolve(args.ref, args.dir)
  if not dir then return fail(args, "ENOTFOUND", "no backup " .. args.ref) end
  local plan = backup_plan.read(dir)
  local man, merr, mcode = require("fleetsnap.manifest").read(dir)
  if not plan and not man then return fail(args, mcode == "ENOENT" and "ENOTFOUND" or "ECORRUPT", merr) end
  local doc = { type = "inspect", dir = dir, backup_id = (plan or man.doc).backup_id,
    complete = man ~= nil, manifest_line = man and man.line or json.null, members = json.array({}) }
  local lines = { string.format("backup %s (%s)", doc.backup_id, man and "complete" or "incomplete") }
  if plan then
    doc.policy, doc.root, doc.scope = plan.policy.name, plan.root, plan.scope.kind
    lines[#lines + 1] = string.format("  root %s, policy %s, scope %s, %d targets, %d operations", plan.root,
      plan.policy.name, plan.scope.kind, #plan.targets, #plan.operations)
  end
  if man then
    local extra = {}
    for _, x in ipairs((man.doc.fleetsnap or {}).members or {}) do extra[x.canister_id] = x end
    for _, m in ipairs(man.members) do
      local x = extra[m.canister_id] or {}
      local row = { canister_id = m.canister_id, role = m.role, snapshot_id = m.source_snapshot.snapshot_id,
        checksum = m.source_snapshot.checksum, bytes = x.bytes, downtime_ns = x.downtime_ns }
      doc.members[#doc.members + 1] = row
      lines[#lines + 1] = string.format("  %-27s %-12s %s %s", m.canister_id, m.role, m.source_snapshot.snapshot_id,
        tostring(m.source_snapshot.checksum):sub(1, 16))
    end
  end
  out(args, doc, table.concat(lines, "\n") .. "\n")
  return 0
end

function M.backup_prune(args)
  if not (args.keep_last or args.keep_daily or args.keep_weekly) then
    return fail(args, "EUSAGE", "prune needs --keep-last, --keep-daily or --keep-weekly")
  end
  local all = catalog.inventory(args.dir)
  local delete, keep = catalog.prune_plan(all, { last = args.keep_last, daily = args.keep_daily,
    weekly = args.keep_weekly })
  local rows, lines = {}, {}
  for _, b in ipairs(all) do
    local action = keep[b.dir] and ("keep (" .. keep[b.dir] .. ")") or (not b.complete and "keep (incomplete)")
      or (b.locked and "keep (in use)") or "delete"
    rows[#rows + 1] = { backup = b.name, action = action }
    lines[#lines + 1] = string.format("  %-40s %s", b.name, action)
  end
  local deleted = {}
  if not args.dry_run then
    for _, b in ipairs(delete) do
      local ok, err = catalog.remove(b)
      if ok then deleted[#deleted + 1] = b.name
      else lines[#lines + 1] = "  could not delete " .. b.name .. ": " .. err end
    end
  end
  out(args, { type = "prune", dry_run = args.dry_run or false, backups = rows, deleted = json.array(deleted) },
    (args.dry_run and "would delete " or "deleted ") .. (args.dry_run and #delete or #deleted) .. " backup(s)\n"
      .. table.concat(lines, "\n") .. "\n")
  return 0
end

-- {=== restore ===}

local restore = require "fleetsnap.restore"

local function seconds(ns)
  return (ns and ns ~= json.null) and string.format("%.3f s", ns / 1e9) or "n/a"
end

local function backup_dir(args)
  local dir = resolve(args.ref, args.dir)
  if not dir then
    error({ fleetsnap = true, code = "ENOTFOUND", message = "no backup " .. args.ref .. " (nor under " .. args.dir
      .. ")" }, 0)
  end
  return dir
end

function M.restore_plan(args)
  local driver = make_driver(args)
  local res = restore.plan(backup_dir(args), { state = args.state, mapping = args.mapping, members = args.members,
    subtree = args.subtree, policy = args.policy, concurrency = args.concurrency, uploads = args.uploads,
    snapshot_limit = args.snapshot_limit, environment = driver.environment, network = driver.network })
  local doc = res.plan
  local lines = { string.format("restore %s of backup %s (%s): %d member(s), policy %s%s", doc.restore_id,
    doc.backup.backup_id, res.status, #doc.members, doc.policy.name, res.archived and (", previous restore kept in "
      .. res.archived) or "") }
  for _, m in ipairs(doc.members) do
    lines[#lines + 1] = string.format("  %2d  %-12s %s%s", m.member_order, m.role, m.source_canister,
      m.target_canister ~= m.source_canister and (" -> " .. m.target_canister) or "")
  end
  lines[#lines + 1] = "  plan: " .. res.state .. "/" .. restore.plan_doc.FILE
  out(args, { type = "restore-plan", status = res.status, state = res.state, archived = res.archived, plan = doc },
    table.concat(lines, "\n") .. "\n")
  return 0
end

local function run_text(res)
  if res.aborted then
    return string.format("restore %s aborted: started %d target(s) again, deleted %d uploaded snapshot(s)\n",
      res.plan.restore_id, #res.started, #res.deleted)
  end
  if res.paused then
    return string.format("restore %s paused after --max-steps: %d/%d operations completed; run again to continue\n",
      res.plan.restore_id, res.completed, res.operations)
  end
  return string.format("restore %s %s: %d member(s), stopped window %s\n", res.plan.restore_id,
    res.already and "was already complete" or "complete", #res.plan.members, seconds(res.window_ns))
end

function M.restore_run(args)
  local dir = backup_dir(args)
  local opts = { driver = make_driver(args), events = events(args), state = args.state, max_steps = args.max_steps,
    retry_failed = args.retry_failed, abort = args.abort, safety_snapshot = args.safety_snapshot,
    verify_data = args.verify_data, keep_uploaded = args.keep_uploaded }
  opts.dry_run = not (args.execute or args.retry_failed or args.abort)
  if args.max_steps and args.max_steps < 1 then
    return fail(args, "EUSAGE", "--max-steps must be at least 1")
  end
  if args.dry_run and args.retry_failed then
    return fail(args, "EUSAGE", "--retry-failed executes; it cannot be combined with --dry-run")
  end
  if args.abort and (args.retry_failed or args.max_steps or args.safety_snapshot or args.verify_data) then
    return fail(args, "EUSAGE", "--abort takes no other option")
  end
  local res = restore.run(dir, opts)
  if res.dry_run then
    local lines = { string.format("restore %s of backup %s: %s, %d of %d operations still to run (dry run; "
      .. "--execute to run them)", res.plan.restore_id, res.plan.backup.backup_id,
      res.aborted and "aborted" or res.complete and "complete" or "not complete", #res.remaining, res.operations) }
    for _, r in ipairs(res.remaining) do
      for i, c in ipairs(r.commands) do
        lines[#lines + 1] = string.format("  %-44s %s", i == 1 and (r.op .. (r.state ~= "waiting" and (" [" .. r.state
          .. "]") or "")) or "", c)
      end
    end
    out(args, { type = "restore-dry-run", restore_id = res.plan.restore_id, options = res.options,
      operations = res.operations, remaining = json.array(res.remaining) }, table.concat(lines, "\n") .. "\n")
    return 0
  end
  out(args, { type = "result", status = res.aborted and "aborted" or res.paused and "paused" or "complete",
    restore_id = res.plan.restore_id, window_ns = res.window_ns, completed = res.completed,
    operations = res.operations, started = res.started, deleted = res.deleted }, run_text(res))
  return 0
end

function M.restore_status(args)
  local s = restore.status(backup_dir(args), { state = args.state })
  local text = string.format("restore %s of backup %s: %s, %d/%d operations completed, %d failed, %d pending\n",
    s.restore_id, s.backup_id, s.phase, s.counts.completed, s.operations, s.counts.failed, s.counts.pending)
  if #s.next > 0 and s.phase ~= "aborted" then
    text = text .. "  next: " .. table.concat(s.next, ", ", 1, math.min(#s.next, 8))
      .. (#s.next > 8 and (" and " .. (#s.next - 8) .. " more") or "") .. "\n"
  end
  for _, f in ipairs(s.failed) do text = text .. "  failed " .. f.op .. ": " .. tostring(f.error.message) .. "\n" end
  if #s.stopped > 0 and s.phase ~= "aborted" then
    text = text .. "  stopped: " .. table.concat(s.stopped, ", ") .. "\n"
  end
  if s.window_ns ~= json.null then text = text .. "  stopped window " .. seconds(s.window_ns) .. "\n" end
  s.type = "restore-status"
  out(args, s, text)
  return 0
end

function M.restore_undo(args)
  local res = restore.undo(backup_dir(args), { driver = make_driver(args), events = events(args), state = args.state,
    retry_failed = args.retry_failed })
  out(args, { type = "result", status = "undone", restore_id = res.plan.restore_id },
    string.format("restore %s undone: the safety snapshots are loaded back%s\n", res.plan.restore_id,
      res.already and " (already)" or ""))
  return 0
end

function M.policy_list(args)
  local policy = require "fleetsnap.policy"
  local rows, lines = {}, {}
  for _, name in ipairs(policy.bundled()) do
    local p = policy.load(name)
    rows[#rows + 1] = { name = name, summary = p and p.summary }
    lines[#lines + 1] = string.format("%-12s %s", name, p and p.summary or "(does not load)")
  end
  out(args, { type = "policies", policies = rows }, table.concat(lines, "\n") .. "\n")
  return 0
end

function M.policy_show(args)
  local p, err = require("fleetsnap.policy").load(args.name)
  if not p then return fail(args, "EPOLICY", err) end
  out(args, { type = "policy", name = p.name, path = p.path, source = p.source }, p.source)
  return 0
end

function M.policy_check(args)
  local policy = require "fleetsnap.policy"
  local p, err = policy.load(args.name)
  if not p then return fail(args, "EPOLICY", err) end
  local sample = {}
  for i = 1, 7 do
    sample[i] = { canister_id = require("fleetsnap.principal").canister_id(100 + i), role = "r" .. i,
      parent = i > 1 and require("fleetsnap.principal").canister_id(100 + (i - 1) // 2 + 1) or nil,
      depth = i == 1 and 1 or (i <= 3 and 2 or 3) }
  end
  local ops, berr = policy.build(p, sample)
  if not ops then return fail(args, "EPOLICY", berr) end
  out(args, { type = "policy-check", name = p.name, ok = true, operations = #ops },
    string.format("policy %s: ok (%d operations for a 7-member sample)\n", p.name, #ops))
  return 0
end

local HANDLERS = {
  backup = { create = M.backup_create, resume = M.backup_resume, status = M.backup_status, verify = M.backup_verify,
    list = M.backup_list, inspect = M.backup_inspect, prune = M.backup_prune },
  restore = { plan = M.restore_plan, run = M.restore_run, status = M.restore_status, undo = M.restore_undo },
  policy = { list = M.policy_list, show = M.policy_show, check = M.policy_check },
}

function M.main(argv)
  local ok, args = parser():pparse(argv)
  if not ok then
    io.stderr:write("fleetsnap: " .. args .. "\nTry 'fleetsnap --help'.\n")
    return 2
  end
  if args.sim and not fs.lstat(args.sim .. "/sim.json") then
    return fail(args, "ENOTFOUND", "--sim " .. args.sim .. ": no simulated fleet there (icp-sim sim init)")
  end
  local sub = args.backup_command or args.policy_command or args.restore_command
  local handler = HANDLERS[args.command][sub]
  local rok, rc = pcall(handler, args)
  if not rok then
    if type(rc) == "string" and rc:find("interrupted!", 1, true) then
      return fail(args, "EINTERRUPTED", "interrupted")
    end
    local e = errors.wrap(rc)
    return fail(args, e.code, e.message, { failures = e.failures, next = e.next, next_steps = e.next_steps })
  end
  return rc
end

return M
