--- `fleetsnap backup ...`: create, resume, status, verify, list, inspect,
-- diff, prune, forget. Parses and renders; the backup domain, the
-- catalogue, cleanup.lua and the status reader decide.
local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local errors = require "fleetsnap.errors"
local connection = require "fleetsnap.cli.connection"
local settings = require "fleetsnap.cli.settings"
local store_cli = require "fleetsnap.cli.store"
local subset = require "fleetsnap.subset"
local summary = require "fleetsnap.cli.summary"
local units = require "fleetsnap.units"

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
  create:option("--push", "Push the complete backup to this restic repository as the last step (no value: the "
    .. "default repository: RESTIC_REPOSITORY, else the config's repository).")
    :argname("R"):args("?")
  local push = cli.command(backup, "push", "Push a complete backup to a restic repository (idempotent: an earlier "
    .. "push's snapshot is adopted).")
  push:argument("ref", M.REF_HELP)
  local resume = cli.command(backup, "resume", "Resume an interrupted backup.")
  resume:argument("ref", M.REF_HELP)
  resume:flag("--retry-failed", "Run failed operations again (after checking what they did).")
  local status = cli.command(backup, "status", "Progress of a backup.")
  status:argument("ref", M.REF_HELP)
  local verify = cli.command(backup, "verify", "Re-hash every artifact against the manifest (offline); with "
    .. "--read-data-subset or --member, the structural checks of every member and the re-hash of some.")
  verify:argument("ref", M.REF_HELP):args("?")
  verify:flag("--all", "Verify every backup under --dir (no <ref>): one line each; exit 0 only when none failed.")
  verify:option("--read-data-subset", "Re-hash only N/T (the N-th of T slices by canister id, 1-based) or P% "
    .. "(a random P% of the members, at least one when P > 0).")
    :argname("N/T|P%"):convert(function(text)
      local value, why = subset.parse(text)
      if not value then return nil, "--read-data-subset " .. why end
      return value
    end)
  verify:option("--seed", "Seed of --read-data-subset P% (printed when not given), to choose the same members "
    .. "again.")
    :argname("S")
  verify:option("--member", "Re-hash only this member (repeatable).")
    :argname("P"):count("*")
  local list = cli.command(backup, "list", "Backups in a directory, newest first.")
  list:option("--dir", "Backups directory (default FLEETSNAP_DIR, the config's dir, else ./backups).")
  list:option("--root", "Only the backups of this root (the flag only: FLEETSNAP_ROOT does not filter).")
  list:option("--repo", "List the backups in this restic repository instead of a directory.")
    :argname("R")
  for _, c in ipairs({ create, push, list }) do M.password_file_option(c) end
  push:option("--repo", "The restic repository (default RESTIC_REPOSITORY, else the config's repository).")
    :argname("R")
  local inspect = cli.command(backup, "inspect", "Plan, members and artifacts of a backup.")
  inspect:argument("ref", M.REF_HELP)
  local diff = cli.command(backup, "diff", "What changed between two backups: members added and removed, module "
    .. "hashes, sizes, files.")
  diff:argument("a", M.REF_HELP)
  diff:argument("b", M.REF_HELP)
  local prune = cli.command(backup, "prune", "Delete old complete backups (never incomplete, corrupt, locked or in-use "
    .. "ones).")
  prune:option("--dir", "Backups directory (default FLEETSNAP_DIR, the config's dir, else ./backups).")
  int(prune, "--keep-last", "Newest backups to keep.", 0)
  int(prune, "--keep-daily", "Days for which to keep the newest backup.", 0)
  int(prune, "--keep-weekly", "Weeks for which to keep the newest backup.", 0)
  prune:mutex(prune:flag("--dry-run", "Say what would be deleted (the default)."),
    prune:flag("--execute", "Delete the backups and their snapshots on the canisters (with --repo: forget the "
      .. "backups' restic snapshots and prune their data)."))
  prune:option("--repo", "Prune the fleetsnap backups of this restic repository instead of the backups directory "
    .. "(the same keep rules, per root; never one a restore is using).")
    :argname("R")
  local pull = cli.command(backup, "pull", "Restore a backup from a restic repository into a local directory, "
    .. "verify every artifact against its manifest, and publish it (never over an existing directory).")
  pull:argument("ref", "Backup id in the repository, or latest (the newest capture time).")
  pull:option("--repo", "The restic repository (default RESTIC_REPOSITORY, else the config's repository).")
    :argname("R")
  pull:option("--out", "Destination directory, which must not exist (default <backups directory>/<backup id>).")
  pull:option("--dir", "Backups directory of the default destination (default FLEETSNAP_DIR, the config's dir, "
    .. "else ./backups).")
  pull:option("--root", "With latest: the root whose newest backup to take (needed when the repository holds "
    .. "backups of several roots).")
  for _, c in ipairs({ prune, pull }) do M.password_file_option(c) end
  local forget = cli.command(backup, "forget", "Forget an incomplete backup: delete the snapshots it made (that no "
    .. "complete backup records), then its directory.")
  forget:argument("ref", M.REF_HELP)
  forget:mutex(forget:flag("--dry-run", "Say what would be deleted (the default)."),
    forget:flag("--execute", "Delete."))
  for _, c in ipairs({ resume, status, verify, inspect, diff, forget, push }) do
    c:option("--dir", "Backups directory for ids and latest (default as for list).")
    c:option("--root", M.ROOT_HELP)
  end
end

--- Adds --repo-password-file to command `c` (every command that opens a
-- restic repository).
function M.password_file_option(c)
  c:option("--repo-password-file", "File holding the restic repository's password (default: restic's own "
    .. "RESTIC_PASSWORD_FILE, RESTIC_PASSWORD, RESTIC_PASSWORD_COMMAND, else the config's "
    .. "repository_password_file).")
    :argname("F")
end

--- Help of a backup reference argument, and of the option that
-- disambiguates `latest` (restore's commands take the same).
M.REF_HELP = "Backup directory, id, unique id prefix, or latest (the newest complete backup)."
M.ROOT_HELP = "With latest: the root whose newest complete backup to take (needed when the directory holds "
  .. "backups of several roots)."

--- The backup directory args.ref names (catalog.find, with --root as
-- given on the command line for `latest`).
function M.find(args, ref)
  ref = ref or args.ref
  -- A backup of a restic repository that `restore plan` pulled.
  local cached = store_cli.restic_ref(ref)
  if cached then return store_cli.cached(args, cached) end
  local dir, err, code = catalog.resolve(ref, args.dir, { root = settings.flag(args, "root") })
  if dir then return dir end
  -- The domain names no flag; the way to name the root here is --root.
  if code == "EUSAGE" and ref == catalog.LATEST then err = err .. " with --root" end
  errors.raise(code, err)
end

M.handlers = {}

local function summary_text(dir, result, sum)
  local man = result.manifest
  if not man then return "backup " .. dir .. ": already complete\n" end
  local fsn = man.fleetsnap
  local bytes = 0
  for _, m in ipairs(fsn.members) do bytes = bytes + m.bytes end
  return string.format("backup %s complete: %d members, %s, policy %s, consistency window %s\n  %s\n",
    man.backup_id, #fsn.members, units.bytes(bytes), fsn.policy, units.duration(fsn.consistency_window.window_ns), dir)
    .. (sum and summary.text(sum, "consistency window") or "")
end

-- The text and document of a push's result.
local function push_doc(res)
  return { state = "pushed", repository = res.repository, snapshot_id = res.snapshot_id, adopted = res.adopted,
    files = res.files, bytes = res.bytes }
end

local function push_text(res)
  return string.format("pushed backup %s to %s: restic snapshot %s (%s; %d files, %s)\n", res.backup_id,
    res.repository, res.snapshot_id:sub(1, 8), res.adopted and "adopted an earlier push's snapshot" or "new",
    res.files, units.bytes(res.bytes))
end

-- The result document of a finished backup, with its summary (and the
-- push's outcome, when the backup ended with one).
local function result(ui, dir, res, backup_id)
  local sum = res.manifest and summary.backup(res.manifest.fleetsnap, ui.tracker) or nil
  local doc = { type = "result", status = "complete", dir = dir,
    backup_id = backup_id or (res.manifest and res.manifest.backup_id), summary = sum or json.null }
  local text = summary_text(dir, res, sum)
  if res.push then
    doc.push = push_doc(res.push)
    text = text .. push_text(res.push)
  elseif res.push_error then
    local e = res.push_error
    doc.push = { state = "failed", code = e.cause, message = e.message }
  end
  ui:doc(doc, text)
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

--- The restic repository the command names: --repo (or create's --push
-- R), else RESTIC_REPOSITORY, else the config file's repository (settings
-- layered them into args.repository); its password file likewise, unless
-- restic's own password variables are set and no flag named a file.
function M.repository(args, given)
  local flags = args.sources and args.sources.flags or {}
  local password_file = args.repository_password_file
  local env_password = os.getenv("RESTIC_PASSWORD") or os.getenv("RESTIC_PASSWORD_COMMAND")
  if not flags.repository_password_file and not os.getenv("RESTIC_PASSWORD_FILE") and env_password then
    password_file = nil
  end
  local restic = require "fleetsnap.store.restic"
  local named = given or flags.repository
  if named and restic.redact(named) ~= named then
    -- The command line is in `ps` and in every lock's owner text.
    errors.raise("EUSAGE", string.format("%s: a repository URL with a password does not go on the command line "
      .. "(ps and lock owner texts show it): set RESTIC_REPOSITORY or the config file's repository",
      given and "--push" or "--repo"))
  end
  return restic.open({ repository = given or args.repository,
    password_file = password_file,
    missing = function()
      errors.raise("EUSAGE", "no restic repository: give --repo R, set RESTIC_REPOSITORY or the config file's "
        .. "repository")
    end })
end

function M.handlers.push(args, ui)
  local dir = M.find(args)
  local repo = M.repository(args)
  local res = require("fleetsnap.store.push").push(dir, repo)
  local doc = push_doc(res)
  doc.type, doc.dir, doc.backup_id = "push", res.dir, res.backup_id
  ui:doc(doc, push_text(res))
end

function M.handlers.create(args, ui)
  -- The repository is named before the backup starts: a usage error then
  -- costs no stop.
  local repo = args.push and M.repository(args, args.push[1]) or nil
  local res = require("fleetsnap.backup").create({ driver = connection.driver(args), root = connection.root(args),
    connection = settings.connection(args), backups = args.dir, push = repo,
    inventory = args.inventory, subtree = args.subtree, member = args.member, include_root = args.include_root,
    policy = args.policy, out = args.out, concurrency = args.concurrency, downloads = args.downloads,
    keep_on_canister = args.keep_on_canister, snapshot_limit = args.snapshot_limit, dry_run = args.dry_run,
    events = ui:events(), verbose = args.verbose })
  if res.dry_run then return dry_run(ui, res) end
  result(ui, res.dir, res, res.plan.backup_id)
  -- The backup stands; the run still fails (EPUSH, next: backup push).
  if res.push_error then error(res.push_error, 0) end
end

function M.handlers.resume(args, ui)
  local dir = M.find(args)
  local backup = require "fleetsnap.backup"
  -- The connection the backup was created with, unless a flag says
  -- otherwise (never another network).
  settings.continuing(args, backup.recorded_connection(dir), "backup " .. dir)
  local res = backup.run(dir, { driver = connection.driver(args), events = ui:events(), verbose = args.verbose,
    retry_failed = args.retry_failed })
  result(ui, dir, res, nil)
end

function M.handlers.status(args, ui)
  local s = require("fleetsnap.backup.status").read(M.find(args))
  local text = string.format("backup %s: %s, attempt %d, %d/%d operations completed, %d failed, %d pending\n",
    s.backup_id, s.complete and "complete" or "incomplete", s.attempt, s.counts.completed, s.operations,
    s.counts.failed, s.counts.pending)
  for _, f in ipairs(s.failed) do
    text = text .. "  failed " .. f.op .. ": " .. tostring(f.error ~= json.null and f.error.message or "?") .. "\n"
  end
  s.type = "status"
  ui:doc(s, text)
end

-- The verify options that make sense together, or a usage error naming
-- the option.
local function verify_options(args)
  local members = args.member or {}
  if args.all and args.ref then
    errors.raise("EUSAGE", "--all verifies every backup under --dir: give no <ref> (" .. args.ref .. ")")
  end
  if not args.all and not args.ref then errors.raise("EUSAGE", "backup verify needs a <ref> or --all") end
  if #members > 0 and args.all then errors.raise("EUSAGE", "--member cannot be combined with --all") end
  if #members > 0 and args.read_data_subset then
    errors.raise("EUSAGE", "--member cannot be combined with --read-data-subset")
  end
  if args.seed and not (args.read_data_subset and args.read_data_subset.kind == "percent") then
    errors.raise("EUSAGE", "--seed goes only with --read-data-subset P%")
  end
  if args.seed == "" then errors.raise("EUSAGE", "--seed must not be empty") end
  return { subset = args.read_data_subset, seed = args.seed, members = members }
end

-- "re-hashed 2 of 6 members, 1.2 MiB of 3.4 MiB"
local function checked_text(c)
  return string.format("re-hashed %d of %d members, %s of %s", c.members, c.members_total, units.bytes(c.bytes),
    units.bytes(c.bytes_total))
end

-- What a sampled verify says beside the count: the subset, the seed to
-- choose the same members again, and the members it re-hashed.
local function choice_text(report, opts)
  local c = report.checked
  if c.subset == json.null and #opts.members == 0 then return "" end
  local chosen = {}
  for _, m in ipairs(report.members) do
    if m.rehashed then chosen[#chosen + 1] = m.canister_id end
  end
  local how = c.subset ~= json.null and ("subset " .. c.subset) or "--member"
  if c.seed ~= json.null then how = how .. ", seed " .. c.seed .. " (--seed " .. c.seed .. " chooses them again)" end
  return string.format("  %s; the structural checks covered all %d\n  re-hashed: %s\n", how, c.members_total,
    #chosen > 0 and table.concat(chosen, ", ") or "(none)")
end

-- Every backup under --dir: one line each, then the counts.
local function verify_all(args, ui, opts)
  local res = require("fleetsnap.verify").directory(args.dir, opts)
  local rows, counts = {}, { verified = 0, failed = 0, corrupt = 0, incomplete = 0, running = 0 }
  for i, b in ipairs(res.backups) do
    counts[b.state] = counts[b.state] + 1
    local what
    if b.state == "incomplete" or b.state == "running" then
      what = "not verified (" .. b.state .. ")"
    elseif b.report ~= json.null and b.message == json.null then
      what = checked_text(b.report.checked)
      local nbad, first = 0, nil
      for _, m in ipairs(b.report.members) do
        if not m.ok then
          nbad = nbad + 1
          first = first or (m.canister_id .. ": " .. m.problems[1])
        end
      end
      if nbad > 0 then
        what = string.format("%d of %d members failed (%s%s); %s", nbad, #b.report.members, first,
          nbad > 1 and ", ..." or "", what)
      end
    else
      what = tostring(b.message):gsub("\n%s*", "; ")
    end
    rows[i] = { b.name, b.ok == false and b.state:upper() or b.state, what }
  end
  local head = string.format("%d backup(s) under %s%s%s: %d verified, %d failed, %d corrupt, %d incomplete, "
    .. "%d running\n", #res.backups, res.dir, res.subset ~= json.null and (", subset " .. res.subset) or "",
    res.seed ~= json.null and (", seed " .. res.seed) or "", counts.verified, counts.failed, counts.corrupt,
    counts.incomplete, counts.running)
  res.type = "verify-all"
  res.counts = counts
  ui:doc(res, head .. (#rows > 0 and units.table(rows, "  ") or ""))
  -- A failed backup before a corrupt one: its bytes are known to be wrong.
  if counts.failed > 0 then return "EVERIFY" end
  if counts.corrupt > 0 then return "ECORRUPT" end
end

function M.handlers.verify(args, ui)
  local opts = verify_options(args)
  if args.all then return verify_all(args, ui, opts) end
  local dir = M.find(args)
  local ok, report = pcall(require("fleetsnap.verify").backup, dir, nil, opts)
  if not ok then
    -- The domain names the canister; the way to name it here is --member.
    if errors.is(report) and report.code == "EUSAGE" and report.member then
      errors.raise("EUSAGE", "--member " .. report.message)
    end
    error(report, 0)
  end
  local lines = {}
  for _, m in ipairs(report.members) do
    for _, p in ipairs(m.problems) do lines[#lines + 1] = "  " .. m.canister_id .. ": " .. p end
  end
  local text = string.format("backup %s: %s (%d members; %s)\n%s%s", report.backup_id, report.ok and "verified" or
    "VERIFICATION FAILED", #report.members, checked_text(report.checked), choice_text(report, opts),
    #lines > 0 and (table.concat(lines, "\n") .. "\n") or "")
  report.type = "verify"
  ui:doc(report, text)
  -- The report is the output; the status still says it failed.
  if not report.ok then return "EVERIFY" end
end

-- A value for JSON: nil (unknown) as null, so that every row has the key.
local function value(v)
  if v == nil then return json.null end
  return v
end

-- The catalogue's creation time, nil when it is unknown (0: a manifest
-- time fleetsnap cannot read), rather than print 1970.
local function known_time(ns)
  if ns and ns ~= 0 then return ns end
end

-- `backup list --repo R`: the fleetsnap backups in a restic repository.
local function list_repository(args, ui, root)
  local repo = M.repository(args)
  local rows = require("fleetsnap.store.listing").list(repo, { root = root })
  local docs = {}
  local text = { { "id", "time", "root", "policy", "snapshot" } }
  for i, r in ipairs(rows) do
    docs[i] = { backup_id = r.backup_id, root = value(r.root), policy = value(r.policy), time = value(r.time),
      snapshot_id = r.snapshot_id, short_id = value(r.short_id) }
    text[#text + 1] = { r.backup_id, tostring(r.time or "-"), r.root or "-", r.policy or "-", r.short_id or "-" }
  end
  local where = repo:name() .. (root and (", root " .. root) or "")
  ui:doc({ type = "repository-list", repository = repo:name(), root = root, backups = json.array(docs) },
    #rows == 0 and ("no fleetsnap backups in " .. where .. "\n")
    or (string.format("%d backup(s) in %s, newest first\n", #rows, where) .. units.table(text)))
end

function M.handlers.list(args, ui)
  local root = settings.flag(args, "root")
  if args.repo then return list_repository(args, ui, root) end
  local rows = catalog.list(args.dir, { root = root })
  local docs = {}
  local text = { { "id", "created", "status", "members", "size", "root", "policy", "window" } }
  for i, r in ipairs(rows) do
    -- `name`: the directory's name, what a ref resolves (backup_id is the
    -- plan's or manifest's, which an imported backup may spell otherwise).
    docs[i] = { name = r.id, dir = r.dir, state = r.state, complete = r.complete, backup_id = value(r.backup_id),
      members = value(r.members), created_ns = value(r.created_ns), created = value(units.utc(r.created_ns)),
      bytes = value(r.bytes), root = value(r.root), policy = value(r.policy), window_ns = value(r.window_ns),
      reason = r.reason }
    if r.state == "corrupt" then
      text[#text + 1] = { r.id, "-", r.state, "-", "-", "-", "-", "-", r.reason }
    else
      text[#text + 1] = { r.id, units.utc(r.created_ns) or "-", r.state, tostring(r.members), units.bytes(r.bytes),
        r.root or "-", r.policy or "-", r.window_ns and units.duration(r.window_ns) or "-" }
    end
  end
  local where = args.dir .. (root and (", root " .. root) or "")
  ui:doc({ type = "list", dir = args.dir, root = root, backups = json.array(docs) },
    #rows == 0 and ("no backups in " .. where .. "\n")
    or (string.format("%d backup(s) in %s, newest first\n", #rows, where) .. units.table(text)))
end

function M.handlers.inspect(args, ui)
  local e = catalog.open(M.find(args))
  local plan, man = e.plan, e.manifest
  local doc = { type = "inspect", dir = e.dir, backup_id = e.backup_id, complete = e.complete, state = e.state,
    manifest_line = man and man.line or json.null, created_ns = value(known_time(e.created_ns)),
    created = value(units.utc(known_time(e.created_ns))),
    bytes = value(e.bytes), window_ns = value(e.window_ns), members = json.array({}) }
  local head = { { "backup", tostring(e.backup_id) }, { "dir", e.dir }, { "status", e.state },
    { "root", e.root or "-" }, { "policy", e.policy or "-" } }
  if plan then
    doc.policy, doc.root, doc.scope = plan.policy.name, plan.root, plan.scope.kind
    head[#head + 1] = { "scope", string.format("%s (%d targets, %d operations)", plan.scope.kind, #plan.targets,
      #plan.operations) }
  end
  head[#head + 1] = { "created", units.utc(known_time(e.created_ns)) or "-" }
  head[#head + 1] = { "window", e.window_ns and units.duration(e.window_ns) or "-" }
  head[#head + 1] = { "members", tostring(e.members) .. (man and "" or " planned (no manifest yet)") }
  head[#head + 1] = { "size", units.bytes(e.bytes) }
  local text = units.table(head)
  if man then
    local extra = {}
    for _, x in ipairs((man.doc.fleetsnap or {}).members or {}) do extra[x.canister_id] = x end
    local rows = { { "canister", "role", "snapshot id", "size", "downtime", "checksum" } }
    for _, m in ipairs(man.members) do
      local x = extra[m.canister_id] or {}
      local s = m.source_snapshot
      doc.members[#doc.members + 1] = { canister_id = m.canister_id, role = m.role, snapshot_id = s.snapshot_id,
        checksum = s.checksum, module_hash = s.module_hash, bytes = x.bytes, downtime_ns = x.downtime_ns }
      rows[#rows + 1] = { m.canister_id, m.role, s.snapshot_id, units.bytes(x.bytes),
        x.downtime_ns ~= nil and units.duration(x.downtime_ns) or "-",
        type(s.checksum) == "string" and s.checksum:sub(1, 16) or "-" }
    end
    text = text .. "\n" .. units.table(rows)
  end
  ui:doc(doc, text)
end

-- One side of a diff, as JSON names it.
local function side(e)
  return { name = e.name, dir = e.dir, backup_id = e.backup_id, created_ns = value(known_time(e.created_ns)),
    created = value(units.utc(known_time(e.created_ns))) }
end

local function member_doc(m)
  return { canister_id = m.canister_id, role = m.role, bytes = value(m.bytes) }
end

function M.handlers.diff(args, ui)
  local res = catalog.diff(M.find(args, args.a), M.find(args, args.b))
  local doc = { type = "diff", a = side(res.a), b = side(res.b), added = json.array({}), removed = json.array({}),
    changed = json.array({}), same = json.array({}) }
  local rows = { { "change", "canister", "role", "module hash", "size a", "size b", "size change", "files changed" } }
  for _, m in ipairs(res.removed) do
    doc.removed[#doc.removed + 1] = member_doc(m)
    rows[#rows + 1] = { "removed", m.canister_id, m.role, "-", units.bytes(m.bytes), "-", "-", "-" }
  end
  for _, m in ipairs(res.added) do
    doc.added[#doc.added + 1] = member_doc(m)
    rows[#rows + 1] = { "added", m.canister_id, m.role, "-", "-", units.bytes(m.bytes), "-", "-" }
  end
  local metadata_only = 0
  for _, c in ipairs(res.changed) do
    doc.changed[#doc.changed + 1] = { canister_id = c.canister_id, role = c.role,
      module_hash_changed = c.module_hash_changed, checksum_changed = c.checksum_changed,
      data_changed = c.data_changed, bytes_a = value(c.bytes_a),
      bytes_b = value(c.bytes_b), files_changed = c.files_changed and json.array(c.files_changed) or json.null }
    local files = c.files_changed and (#c.files_changed > 0 and table.concat(c.files_changed, ", ") or "(none)")
      or (c.checksum_changed and "(checksum differs; no per-file digests)" or "-")
    if not c.data_changed then metadata_only = metadata_only + 1 end
    rows[#rows + 1] = { c.data_changed and "changed" or "metadata", c.canister_id, c.role,
      c.module_hash_changed and "changed" or "same",
      units.bytes(c.bytes_a), units.bytes(c.bytes_b), units.bytes_change(c.bytes_a, c.bytes_b), files }
  end
  for _, m in ipairs(res.same) do
    doc.same[#doc.same + 1] = member_doc(m)
    rows[#rows + 1] = { "same", m.canister_id, m.role, "same", units.bytes(m.bytes), units.bytes(m.bytes), "0 B", "-" }
  end
  local text = string.format("backup diff %s -> %s: %d added, %d removed, %d changed (%d in metadata.json only), "
    .. "%d same\n", res.a.name, res.b.name, #res.added, #res.removed, #res.changed, metadata_only, #res.same)
    .. units.table(rows)
  ui:doc(doc, text)
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
  if args.repo then
    return store_cli.prune(args, ui, { last = args.keep_last, daily = args.keep_daily, weekly = args.keep_weekly },
      M.repository)
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
    snaps[i] = { backup = r.backup, canister_id = r.canister, snapshot_id = r.snapshot_id, action = r.action,
      reason = r.reason, message = r.message }
  end
  ui:doc({ type = "prune", dry_run = not execute, backups = json.array(rows), snapshots = json.array(snaps),
    deleted = json.array(res.deleted), failed = json.array(res.failed) },
    (execute and "deleted " or "would delete ") .. n .. " backup(s)" .. (execute and "" or
      " (dry run; --execute to delete them and their snapshots)") .. "\n" .. table.concat(lines, "\n") .. "\n")
  if #res.failed > 0 then return "EICP" end
end

function M.handlers.pull(args, ui)
  return store_cli.pull(args, ui, M.repository)
end

function M.handlers.forget(args, ui)
  local dir = M.find(args)
  settings.continuing(args, require("fleetsnap.backup").recorded_connection(dir), "backup " .. dir)
  local execute = args.execute or false
  local res = require("fleetsnap.cleanup").forget(dir, connection.driver(args), { execute = execute })
  local ndelete = 0
  local lines, snaps = {}, {}
  for i, r in ipairs(res.snapshots) do
    if r.action == "delete" or r.action == "deleted" then ndelete = ndelete + 1 end
    snaps[i] = { canister_id = r.canister, snapshot_id = r.snapshot_id, action = r.action, reason = r.reason,
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
