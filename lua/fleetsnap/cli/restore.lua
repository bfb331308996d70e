--- `fleetsnap restore ...`: plan, run (dry run, execute, abort), status,
-- undo. Parses and renders; the restore domain decides.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local connection = require "fleetsnap.cli.connection"
local output = require "fleetsnap.cli.output"
local settings = require "fleetsnap.cli.settings"
local summary = require "fleetsnap.cli.summary"
local backup_cli = require "fleetsnap.cli.backup"
local store_cli = require "fleetsnap.cli.store"
local units = require "fleetsnap.units"

local json = engine.json

local M = {}

--- Adds `restore` and its subcommands to parser `p`.
function M.add(p, cli)
  local int = cli.integer_option
  local restore = cli.group_command(p, "restore", "Plan, run, check and undo restores of a backup.")
  local rplan = cli.command(restore, "plan",
    "Plan a restore of a verified backup (writes fleetsnap-restore-plan.json).")
  rplan:argument("ref", backup_cli.REF_HELP .. " Or restic:<backup id|latest>: a backup of the restic repository "
    .. "(--repo, else RESTIC_REPOSITORY), pulled into the cache (or reused there) first.")
  rplan:option("--repo", "restic repository of a restic: reference (default RESTIC_REPOSITORY, else the config's "
    .. "repository).")
    :argname("R")
  backup_cli.password_file_option(rplan)
  rplan:option("--mapping", "Mapping file {\"members\": [{\"source_canister\", \"target_canister\"}]}.")
  rplan:mutex(rplan:option("--members", "Members to restore (principals or roles, comma-separated)."),
    rplan:option("--subtree", "Restore this member (principal or role) and everything below it."))
  rplan:option("--policy", "Bundled policy name or policy file (default: the backup's).")
  int(rplan, "--concurrency", "Lifecycle operations at once.", 1)
  int(rplan, "--uploads", "Uploads at once (also bounded by free space for staging).", 1)
  int(rplan, "--snapshot-limit", "Snapshots the network allows per canister.", 1, "10")
  local rrun = cli.command(restore, "run", "Run (or preview) the planned restore; resumes where it stopped.")
  rrun:argument("ref", backup_cli.REF_HELP)
  rrun:mutex(rrun:flag("--dry-run", "Print the icp command lines still to run (the default)."),
    rrun:flag("--execute", "Execute."),
    rrun:flag("--abort", "Before the first load only: restart stopped targets, delete the snapshots this "
      .. "restore made, give up."))
  int(rrun, "--max-steps", "Run at most this many operations, then stop.", 1)
  rrun:flag("--retry-failed", "Re-arm failed operations, then execute.")
  rrun:flag("--safety-snapshot", "Snapshot each target after stopping it, before loading (for `restore undo`).")
  rrun:flag("--verify-data", "After each load, snapshot, download and compare the data with the backup.")
  rrun:flag("--keep-uploaded", "Keep the uploaded snapshots after a verified restore.")
  rrun:option("--settings", "Canister settings: check (warn about differences from the backup, before the first "
    .. "stop; the default), apply (set them after the load, before the start) or ignore.")
    :choices({ "check", "apply", "ignore" })
  rrun:flag("--settings-controllers", "With --settings apply: apply the backup's controllers too (never removing "
    .. "the operator's own principal).")
  local rstatus = cli.command(restore, "status", "Progress, next operations and failures of a restore.")
  rstatus:argument("ref", backup_cli.REF_HELP)
  local rundo = cli.command(restore, "undo", "Load the safety snapshots back (parents stopped first, children started "
    .. "first).")
  rundo:argument("ref", backup_cli.REF_HELP)
  rundo:mutex(rundo:flag("--dry-run", "Print the operations the undo would run (the default)."),
    rundo:flag("--execute", "Execute."))
  rundo:flag("--retry-failed", "Re-arm failed operations of the undo, then execute.")
  local rdrill = cli.command(restore, "drill", "Restore into scratch canisters (created, never started, deleted "
    .. "afterwards), compare the data with the backup, report per member.")
  rdrill:argument("ref", backup_cli.REF_HELP)
  rdrill:option("--members", "Members to drill (principals or roles, comma-separated; default: all).")
  rdrill:option("--cycles", "Cycles each scratch canister is created with (icp's default: 2T, from the caller's "
    .. "cycles ledger).")
  rdrill:flag("--cleanup", "Only delete the scratch canisters of an earlier drill that did not finish.")
  rdrill:option("--state", "Drill state directory (default <backup>/drill; for read-only backups).")
  rdrill:option("--dir", "Backups directory for ids and latest (default FLEETSNAP_DIR, the config's dir, else "
    .. "./backups).")
  rdrill:option("--root", backup_cli.ROOT_HELP)
  for _, c in ipairs({ rplan, rrun, rstatus, rundo }) do
    c:option("--state", "Restore state directory (default <backup>/restore; for read-only backups).")
    c:option("--dir", "Backups directory for ids and latest (default FLEETSNAP_DIR, the config's dir, else "
      .. "./backups).")
    c:option("--root", backup_cli.ROOT_HELP)
  end
end

M.handlers = {}

local seconds = units.duration

local function restore_mod()
  return require "fleetsnap.restore"
end

function M.handlers.plan(args, ui)
  local driver = connection.driver(args)
  local function plan(dir)
    return restore_mod().plan(dir, { state = args.state, mapping = args.mapping,
      members = args.members, subtree = args.subtree, policy = args.policy, concurrency = args.concurrency,
      uploads = args.uploads, snapshot_limit = args.snapshot_limit, environment = driver.environment,
      network = driver.network, connection = settings.connection(args) })
  end
  local res, cache, cache_text
  local ref = store_cli.restic_ref(args.ref)
  if ref then
    res, cache, cache_text = store_cli.plan(args, ref, plan, backup_cli.repository)
  else
    if args.repo then errors.raise("EUSAGE", "--repo goes with a restic:<id|latest> reference") end
    res = plan(backup_cli.find(args))
  end
  local doc = res.plan
  local lines = { string.format("restore %s of backup %s (%s): %d member(s), policy %s%s", doc.restore_id,
    doc.backup.backup_id, res.status, #doc.members, doc.policy.name, res.archived and (", previous restore kept in "
      .. res.archived) or "") }
  for _, m in ipairs(doc.members) do
    lines[#lines + 1] = string.format("  %2d  %-12s %s%s", m.member_order, m.role, m.source_canister,
      m.target_canister ~= m.source_canister and (" -> " .. m.target_canister) or "")
  end
  lines[#lines + 1] = "  plan: " .. res.state .. "/" .. require("fleetsnap.restore.state").PLAN
  ui:doc({ type = "restore-plan", status = res.status, state = res.state, archived = res.archived, plan = doc,
    cache = cache }, (cache_text or "") .. table.concat(lines, "\n") .. "\n")
end

-- The settings check's warnings (and its note for a backup without
-- settings), one line each.
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

local function dry_run_text(res)
  local lines = { string.format("restore %s of backup %s: %s, %d of %d operations still to run (dry run; "
    .. "--execute to run them)", res.plan.restore_id, res.plan.backup.backup_id,
    res.aborted and "aborted" or res.complete and "complete" or "not complete", #res.remaining, res.operations) }
  for _, r in ipairs(res.remaining) do
    for i, c in ipairs(r.commands) do
      lines[#lines + 1] = string.format("  %-44s %s", i == 1 and (r.op .. (r.state ~= "waiting" and (" [" .. r.state
        .. "]") or "")) or "", c)
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

function M.handlers.run(args, ui)
  -- Combinations argparse's mutex cannot express.
  if args.dry_run and args.retry_failed then
    errors.raise("EUSAGE", "--retry-failed executes; it cannot be combined with --dry-run")
  end
  if args.settings_controllers and args.settings ~= "apply" and not args.abort then
    errors.raise("EUSAGE", "--settings-controllers needs --settings apply")
  end
  if args.abort and (args.retry_failed or args.max_steps or args.safety_snapshot or args.verify_data) then
    errors.raise("EUSAGE", "--abort takes no other option")
  end
  local dir = backup_cli.find(args)
  settings.continuing(args, restore_mod().recorded_connection(dir, args.state), "the restore of " .. dir)
  local res = restore_mod().run(dir, { driver = connection.driver(args), events = ui:events(), state = args.state,
    max_steps = args.max_steps, retry_failed = args.retry_failed, abort = args.abort,
    safety_snapshot = args.safety_snapshot, verify_data = args.verify_data, keep_uploaded = args.keep_uploaded,
    settings = args.settings, settings_controllers = args.settings_controllers,
    dry_run = not (args.execute or args.retry_failed or args.abort), verbose = args.verbose })
  if res.dry_run then
    local rows = {}
    for i, r in ipairs(res.remaining) do
      rows[i] = { op = r.op, kind = r.kind, canister_id = r.canister, after = r.after, state = r.state,
        commands = r.commands }
    end
    ui:doc({ type = "restore-dry-run", restore_id = res.plan.restore_id, options = res.options,
      operations = res.operations, remaining = json.array(rows) }, dry_run_text(res))
    return
  end
  local sum = summary.restore(res.plan, res, ui.tracker)
  local complete = not (res.aborted or res.paused)
  ui:doc({ type = "result", status = res.aborted and "aborted" or res.paused and "paused" or "complete",
    restore_id = res.plan.restore_id, window_ns = res.window_ns, completed = res.completed,
    operations = res.operations, started = res.started, deleted = res.deleted, summary = sum,
    settings = res.settings },
    output.settings_text(res.settings) .. run_text(res)
      .. (complete and not res.already and summary.text(sum, "stopped window") or ""))
end

function M.handlers.status(args, ui)
  local s = restore_mod().status(backup_cli.find(args), { state = args.state })
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
  ui:doc(s, text)
end

function M.handlers.undo(args, ui)
  local dir = backup_cli.find(args)
  settings.continuing(args, restore_mod().recorded_connection(dir, args.state), "the restore of " .. dir)
  if args.dry_run and args.retry_failed then
    errors.raise("EUSAGE", "--retry-failed executes; it cannot be combined with --dry-run")
  end
  local res = restore_mod().undo(dir, { driver = connection.driver(args),
    events = ui:events(), state = args.state, retry_failed = args.retry_failed,
    dry_run = not (args.execute or args.retry_failed) })
  if res.dry_run then
    local lines = { string.format("undo of restore %s: %s%d operation(s) (dry run; --execute to run them)",
      res.plan.restore_id, res.already and "already undone; " or "", #res.operations) }
    local ids = {}
    for i, op in ipairs(res.operations) do
      ids[i] = op.id
      lines[#lines + 1] = "  " .. op.id
    end
    ui:doc({ type = "undo-dry-run", restore_id = res.plan.restore_id, already = res.already,
      operations = json.array(ids) }, table.concat(lines, "\n") .. "\n")
    return
  end
  local sum = summary.undo(res.plan, ui.tracker)
  ui:doc({ type = "result", status = "undone", restore_id = res.plan.restore_id, summary = sum },
    string.format("restore %s undone: the safety snapshots are loaded back%s\n", res.plan.restore_id,
      res.already and " (already)" or "") .. (res.already and "" or summary.text(sum, "stopped window")))
end

-- {=== drill ===}

local function yes(b) return b and "yes" or "no" end

local function drill_rows_text(res)
  local rows = { { "member", "role", "scratch canister", "restored", "data equal", "time", "deleted" } }
  local problems = {}
  for _, r in ipairs(res.members) do
    rows[#rows + 1] = { r.canister_id, r.role ~= json.null and r.role or "-",
      r.scratch_canister ~= json.null and r.scratch_canister or (r.unidentified and "UNIDENTIFIED" or "-"),
      yes(r.restored), yes(r.data_equal), r.time_ms ~= json.null and string.format("%.1fs", r.time_ms / 1000) or "-",
      r.scratch_canister ~= json.null and yes(r.deleted) or "-" }
    for _, p in ipairs(r.problems) do problems[#problems + 1] = "  " .. r.canister_id .. ": " .. p end
  end
  return units.table(rows, "  ") .. (#problems > 0 and (table.concat(problems, "\n") .. "\n") or "")
end

local OUTCOME_TEXT = { passed = "PASSED: every member restored and its data equals the backup",
  corrupt = "FAILED: data differs from what the backup recorded", failed = "FAILED",
  interrupted = "interrupted" }

local function drill_text(res, what)
  local head = string.format("%s %s of backup %s: %s (%d member(s))\n", what, res.drill_id, tostring(res.backup_id),
    OUTCOME_TEXT[res.outcome] or res.outcome, #res.members)
  local tail = ""
  if res.error then tail = tail .. "  restore: " .. res.error.message .. "\n" end
  if #res.unidentified > 0 then
    tail = tail .. string.format("  %d scratch canister create(s) without a recorded id: a canister may exist that "
      .. "fleetsnap cannot find (see the problems above)\n", #res.unidentified)
  end
  return head .. drill_rows_text(res) .. tail
end

local function drill_doc(res)
  return { drill_id = res.drill_id, backup_id = res.backup_id, state = res.state, outcome = res.outcome,
    members = res.members, unidentified = res.unidentified, error = res.error }
end

function M.handlers.drill(args, ui)
  local cycles
  if args.cycles then
    -- icp's own spelling: a count with an optional k, m, b or t.
    local n, suffix = tostring(args.cycles):lower():match("^(%d+)([kmbt]?)$")
    local scale = ({ [""] = 1, k = 10 ^ 3, m = 10 ^ 6, b = 10 ^ 9, t = 10 ^ 12 })[suffix or ""]
    cycles = n and #n <= 15 and math.tointeger(tonumber(n) * math.tointeger(scale)) or nil
    if not cycles or cycles <= 0 then
      errors.raise("EUSAGE", "--cycles wants a positive count of cycles (a number, optionally with k, m, b or t)")
    end
  end
  local dir = backup_cli.find(args)
  local res = require("fleetsnap.restore.drill").run(dir, { driver = connection.driver(args), events = ui:events(),
    state = args.state, members = args.members, cycles = cycles, cleanup = args.cleanup,
    connection = settings.connection(args), verbose = args.verbose })
  local earlier = res.earlier and drill_text(res.earlier, "earlier drill") or ""
  if res.cleanup then
    ui:doc({ type = "restore-drill", cleanup = true, earlier = res.earlier and drill_doc(res.earlier) or json.null },
      earlier ~= "" and earlier or ("no unfinished drill in " .. res.state .. "\n"))
    return (res.earlier and #res.earlier.unidentified > 0) and "EFAILED" or nil
  end
  local doc = drill_doc(res)
  doc.type = "restore-drill"
  doc.cleanup = false
  doc.earlier = res.earlier and drill_doc(res.earlier) or json.null
  ui:doc(doc, earlier .. drill_text(res, "drill"))
  if res.outcome == "corrupt" then return "EVERIFY" end
  if res.outcome ~= "passed" then return "EFAILED" end
  -- An earlier drill's create without an id may have left a canister:
  -- the status says so once, when the report names it.
  if res.earlier and #res.earlier.unidentified > 0 then return "EFAILED" end
end

return M
