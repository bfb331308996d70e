--- `fleetsnap backup ...`: create, resume, status, verify, list, inspect,
-- prune, forget. Parses and renders; the backup domain, the catalogue,
-- cleanup.lua and the status reader decide.
local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local errors = require "fleetsnap.errors"
local connection = require "fleetsnap.cli.connection"
local settings = require "fleetsnap.cli.settings"
local summary = require "fleetsnap.cli.summary"

local json = engine.json

local M = {}

--- Adds `backup` and its subcommands to parser `p`; `cli` is the CLI
-- module (its option helpers).
function M.add(p, cli)
  local int = cli.integer_option
  local backup = cli.group_command(p, "backup", "Create, resume, inspect and verify backups.")
  local create = cli.command(backup, "create", "Back up a fleet (or part of it).")
  create:option("--root", "Principal of the Canic root.")
  create:mutex(create:option("--subtree", "Role or principal whose subtree to back up."),
    create:option("--member", "One member to back up."))
  create:flag("--include-root", "Capture the root too (maintenance).")
  create:option("--inventory", "Static inventory file instead of the root's registry.")
  create:option("--policy", "Bundled policy name or policy file.", "consistent")
  create:option("--out", "Backup directory (default <backups directory>/<root>-<UTC time>-<hex>; the backups "
    .. "directory is FLEETSNAP_DIR, the config's dir, else ./backups).")
  int(create, "--concurrency", "Lifecycle operations at once.", 1)
  int(create, "--downloads", "Downloads at once.", 1)
  int(create, "--keep-on-canister", "fleetsnap snapshots kept per canister.", 0, "2")
  int(create, "--snapshot-limit", "Snapshots the network allows per canister (icp cannot tell).", 1, "10")
  create:flag("--dry-run", "Print the plan and the icp command lines; change nothing.")
  local resume = cli.command(backup, "resume", "Resume an interrupted backup.")
  resume:argument("ref", "Backup directory, id or list number.")
  resume:flag("--retry-failed", "Run failed operations again (after checking what they did).")
  local status = cli.command(backup, "status", "Progress of a backup.")
  status:argument("ref", "Backup directory, id or list number.")
  local verify = cli.command(backup, "verify", "Re-hash every artifact against the manifest (offline).")
  verify:argument("ref", "Backup directory, id or list number.")
  local list = cli.command(backup, "list", "Backups in a directory.")
  list:option("--dir", "Backups directory (default FLEETSNAP_DIR, the config's dir, else ./backups).")
  local inspect = cli.command(backup, "inspect", "Plan, members and artifacts of a backup.")
  inspect:argument("ref", "Backup directory, id or list number.")
  local prune = cli.command(backup, "prune", "Delete old complete backups (never incomplete, corrupt, locked or in-use "
    .. "ones).")
  prune:option("--dir", "Backups directory (default FLEETSNAP_DIR, the config's dir, else ./backups).")
  int(prune, "--keep-last", "Newest backups to keep.", 0)
  int(prune, "--keep-daily", "Days for which to keep the newest backup.", 0)
  int(prune, "--keep-weekly", "Weeks for which to keep the newest backup.", 0)
  prune:mutex(prune:flag("--dry-run", "Say what would be deleted (the default)."),
    prune:flag("--execute", "Delete the backups and their snapshots on the canisters."))
  local forget = cli.command(backup, "forget", "Forget an incomplete backup: delete the snapshots it made (that no "
    .. "complete backup records), then its directory.")
  forget:argument("ref", "Backup directory, id or list number.")
  forget:mutex(forget:flag("--dry-run", "Say what would be deleted (the default)."),
    forget:flag("--execute", "Delete."))
  for _, c in ipairs({ resume, status, verify, inspect, forget }) do
    c:option("--dir", "Backups directory for ids and numbers (default as for list).")
  end
end

M.handlers = {}

local function summary_text(dir, result, sum)
  local man = result.manifest
  if not man then return "backup " .. dir .. ": already complete\n" end
  local fsn = man.fleetsnap
  local w = fsn.consistency_window.window_ns
  local bytes = 0
  for _, m in ipairs(fsn.members) do bytes = bytes + m.bytes end
  return string.format("backup %s complete: %d members, %d bytes, policy %s, consistency window %s\n  %s\n",
    man.backup_id, #fsn.members, bytes, fsn.policy, w ~= json.null and string.format("%.3f s", w / 1e9) or "n/a", dir)
    .. (sum and summary.text(sum, "consistency window") or "")
end

-- The result document of a finished backup, with its summary.
local function result(ui, dir, res, backup_id)
  local sum = res.manifest and summary.backup(res.manifest.fleetsnap, ui.tracker) or nil
  ui:doc({ type = "result", status = "complete", dir = dir,
    backup_id = backup_id or (res.manifest and res.manifest.backup_id), summary = sum or json.null },
    summary_text(dir, res, sum))
end

-- The plan and the icp command lines it will run (the domain renders
-- them through the driver).
local function dry_run(ui, res)
  local lines = { string.format("plan %s (policy %s, %d targets, %d operations) into %s", res.plan.backup_id,
    res.plan.policy.name, #res.plan.targets, #res.plan.operations, res.dir) }
  for _, c in ipairs(res.commands) do
    lines[#lines + 1] = string.format("  %-40s %s", c.op, c.command or "(phase barrier: no command)")
  end
  ui:doc({ type = "plan", plan = res.plan, commands = res.commands }, table.concat(lines, "\n") .. "\n")
end

function M.handlers.create(args, ui)
  local res = require("fleetsnap.backup").create({ driver = connection.driver(args), root = connection.root(args),
    connection = connection.recorded(args), backups = args.dir,
    inventory = args.inventory, subtree = args.subtree, member = args.member, include_root = args.include_root,
    policy = args.policy, out = args.out, concurrency = args.concurrency, downloads = args.downloads,
    keep_on_canister = args.keep_on_canister, snapshot_limit = args.snapshot_limit, dry_run = args.dry_run,
    events = ui:events(), verbose = args.verbose })
  if res.dry_run then return dry_run(ui, res) end
  result(ui, res.dir, res, res.plan.backup_id)
end

function M.handlers.resume(args, ui)
  local dir = catalog.find(args.ref, args.dir)
  local backup = require "fleetsnap.backup"
  -- The connection the backup was created with, unless a flag says
  -- otherwise (never another network).
  settings.continuing(args, backup.recorded_connection(dir), "backup " .. dir)
  local res = backup.run(dir, { driver = connection.driver(args), events = ui:events(), verbose = args.verbose,
    retry_failed = args.retry_failed })
  result(ui, dir, res, nil)
end

function M.handlers.status(args, ui)
  local s = require("fleetsnap.backup.status").read(catalog.find(args.ref, args.dir))
  local text = string.format("backup %s: %s, attempt %d, %d/%d operations completed, %d failed, %d pending\n",
    s.backup_id, s.complete and "complete" or "incomplete", s.attempt, s.counts.completed, s.operations,
    s.counts.failed, s.counts.pending)
  for _, f in ipairs(s.failed) do
    text = text .. "  failed " .. f.op .. ": " .. tostring(f.error ~= json.null and f.error.message or "?") .. "\n"
  end
  s.type = "status"
  ui:doc(s, text)
end

function M.handlers.verify(args, ui)
  local dir = catalog.find(args.ref, args.dir)
  local report = require("fleetsnap.verify").backup(dir)
  local lines = {}
  for _, m in ipairs(report.members) do
    for _, p in ipairs(m.problems) do lines[#lines + 1] = "  " .. m.canister_id .. ": " .. p end
  end
  local text = string.format("backup %s: %s (%d members)\n%s", report.backup_id, report.ok and "verified" or
    "VERIFICATION FAILED", #report.members, #lines > 0 and (table.concat(lines, "\n") .. "\n") or "")
  report.type = "verify"
  ui:doc(report, text)
  -- The report is the output; the status still says it failed.
  if not report.ok then return "EVERIFY" end
end

function M.handlers.list(args, ui)
  local rows = catalog.list(args.dir)
  local lines = {}
  for _, r in ipairs(rows) do
    if r.state == "corrupt" then
      lines[#lines + 1] = string.format("%3d  %-40s %-10s %s", r.n, r.id, r.state, r.reason)
    else
      lines[#lines + 1] = string.format("%3d  %-40s %-10s %d members", r.n, r.id, r.state, r.members)
    end
  end
  ui:doc({ type = "list", backups = json.array(rows) },
    #lines > 0 and (table.concat(lines, "\n") .. "\n") or "no backups\n")
end

function M.handlers.inspect(args, ui)
  local e = catalog.open(catalog.find(args.ref, args.dir))
  local plan, man = e.plan, e.manifest
  local doc = { type = "inspect", dir = e.dir, backup_id = e.backup_id, complete = e.complete,
    manifest_line = man and man.line or json.null, members = json.array({}) }
  local lines = { string.format("backup %s (%s)", doc.backup_id, e.state) }
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
      doc.members[#doc.members + 1] = { canister_id = m.canister_id, role = m.role,
        snapshot_id = m.source_snapshot.snapshot_id, checksum = m.source_snapshot.checksum, bytes = x.bytes,
        downtime_ns = x.downtime_ns }
      lines[#lines + 1] = string.format("  %-27s %-12s %s %s", m.canister_id, m.role, m.source_snapshot.snapshot_id,
        tostring(m.source_snapshot.checksum):sub(1, 16))
    end
  end
  ui:doc(doc, table.concat(lines, "\n") .. "\n")
end

-- The driver for a backup's recorded connection (flag > recorded >
-- variable > file), or nil and why not; fatal when the flags name another
-- network (the backup is then kept, as its snapshots could not be).
local function connect(args)
  return function(b)
    local recorded = b.plan and b.plan.connection
    if not recorded then return nil, "the backup recorded no connection (imported)" end
    local a = {}
    for k, v in pairs(args) do a[k] = v end
    local ok, err = pcall(settings.continuing, a, recorded, "backup " .. b.dir)
    if not ok then return nil, errors.wrap(err).message, true end
    return connection.driver(a)
  end
end

local function snapshot_line(r)
  return string.format("    %-27s %s  %s%s%s", r.canister, r.snapshot_id, r.action, r.reason and (": " .. r.reason)
    or "", r.message and (": " .. r.message) or "")
end

function M.handlers.prune(args, ui)
  if not (args.keep_last or args.keep_daily or args.keep_weekly) then
    errors.raise("EUSAGE", "prune needs --keep-last, --keep-daily or --keep-weekly")
  end
  local execute = args.execute or false
  local res = require("fleetsnap.cleanup").prune(args.dir, { last = args.keep_last, daily = args.keep_daily,
    weekly = args.keep_weekly }, { execute = execute, connect = connect(args) })
  local by_backup = {}
  for _, r in ipairs(res.snapshots) do
    by_backup[r.backup] = by_backup[r.backup] or {}
    table.insert(by_backup[r.backup], r)
  end
  local rows, lines = {}, {}
  for i, b in ipairs(res.backups) do
    rows[i] = { backup = b.backup, action = b.action, reason = b.reason }
    lines[#lines + 1] = string.format("  %-40s %s%s", b.backup, b.action, b.reason and (": " .. b.reason) or "")
    for _, r in ipairs(by_backup[b.backup] or {}) do lines[#lines + 1] = snapshot_line(r) end
  end
  for _, f in ipairs(res.failed) do lines[#lines + 1] = "  could not delete " .. f.backup .. ": " .. f.message end
  local n = execute and #res.deleted or #res.delete
  local snaps = {}
  for i, r in ipairs(res.snapshots) do
    snaps[i] = { backup = r.backup, canister = r.canister, snapshot_id = r.snapshot_id, action = r.action,
      reason = r.reason, message = r.message }
  end
  ui:doc({ type = "prune", dry_run = not execute, backups = json.array(rows), snapshots = json.array(snaps),
    deleted = json.array(res.deleted), failed = json.array(res.failed) },
    (execute and "deleted " or "would delete ") .. n .. " backup(s)" .. (execute and "" or
      " (dry run; --execute to delete them and their snapshots)") .. "\n" .. table.concat(lines, "\n") .. "\n")
  if #res.failed > 0 then return "EICP" end
end

function M.handlers.forget(args, ui)
  local dir = catalog.find(args.ref, args.dir)
  settings.continuing(args, require("fleetsnap.backup").recorded_connection(dir), "backup " .. dir)
  local execute = args.execute or false
  local res = require("fleetsnap.cleanup").forget(dir, connection.driver(args), { execute = execute })
  local ndelete = 0
  local lines, snaps = {}, {}
  for i, r in ipairs(res.snapshots) do
    if r.action == "delete" or r.action == "deleted" then ndelete = ndelete + 1 end
    snaps[i] = { canister = r.canister, snapshot_id = r.snapshot_id, action = r.action, reason = r.reason,
      message = r.message }
    lines[#lines + 1] = snapshot_line(r)
  end
  local head
  if not execute then
    head = string.format("would forget backup %s: delete %d snapshot(s), then its directory (dry run; --execute "
      .. "to delete)", res.backup, ndelete)
  elseif res.removed then
    head = string.format("forgot backup %s: deleted %d snapshot(s) and its directory", res.backup, ndelete)
  else
    head = string.format("backup %s kept: %d snapshot(s) could not be deleted (forget it again)", res.backup,
      res.nfailed)
  end
  ui:doc({ type = "forget", dry_run = not execute, dir = dir, backup = res.backup, removed = res.removed,
    snapshots = json.array(snaps) }, head .. "\n" .. (#lines > 0 and (table.concat(lines, "\n") .. "\n") or ""))
  if res.nfailed > 0 then return "EICP" end
end

return M
