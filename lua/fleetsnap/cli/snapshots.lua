--- `fleetsnap snapshots [list]` and `fleetsnap snapshots clean`: every
-- snapshot of the canisters the directory's backups name, classed owned,
-- orphan or foreign, and deleting the orphans. Parses and renders;
-- cleanup.lua decides.
local engine = require "fleetsnap.engine"
local catalog = require "fleetsnap.catalog"
local units = require "fleetsnap.units"
local connection = require "fleetsnap.cli.connection"
local settings = require "fleetsnap.cli.settings"

local json = engine.json

local M = {}

-- The command a bare `fleetsnap snapshots` runs.
M.DEFAULT = "list"

local DIR_HELP = "Backups directory (default FLEETSNAP_DIR, the config's dir, else ./backups)."

function M.add(p, cli)
  local g = cli.group_command(p, "snapshots", "Snapshots on the canisters of the directory's fleets: owned, orphan, "
    .. "foreign.")
  g:usage("Usage: fleetsnap snapshots [-h] [--dir DIR] [<command>] ...")
  g:option("--dir", DIR_HELP)
  local list = cli.command(g, "list", "List every snapshot, marking the backup that owns it (the default).")
  list:option("--dir", DIR_HELP)
  local clean = cli.command(g, "clean", "Delete the orphans (made by our backups, recorded by no complete backup).")
  clean:option("--dir", DIR_HELP)
  clean:mutex(clean:flag("--dry-run", "Say what would be deleted (the default)."), clean:flag("--execute", "Delete."))
end

M.handlers = {}

-- The connection: flags, else the newest plan's recorded one; the
-- canisters of backups made on another network are left out.
local function connect(args)
  local recorded
  for _, e in ipairs(catalog.inventory(args.dir)) do
    recorded = recorded or (e.plan and e.plan.connection)
  end
  settings.continuing(args, recorded, "the backups in " .. args.dir)
  return connection.driver(args), function(e) return settings.same_network(args, e.plan and e.plan.connection) end
end

local function rows_json(res)
  local out = {}
  for i, c in ipairs(res.canisters) do
    local snaps = {}
    for k, s in ipairs(c.snapshots) do
      -- One naming scheme across commands: ids are <thing>_id, a time is
      -- <name>_ns with its RFC 3339 text beside it.
      snaps[k] = { snapshot_id = s.snapshot_id, class = s.class, backup = s.backup, in_use = s.in_use,
        taken_at_ns = s.taken_at, taken_at = units.rfc3339(s.taken_at), total_size = s.total_size }
    end
    out[i] = { canister_id = c.canister, root = c.root, error = c.error, snapshots = json.array(snaps) }
  end
  return json.array(out)
end

local function listing(res)
  local lines = {}
  for _, c in ipairs(res.canisters) do
    lines[#lines + 1] = c.canister .. (c.error and ("  could not list: " .. c.error) or "")
    for _, s in ipairs(c.snapshots) do
      local line = string.format("  %s  %-7s %s", s.snapshot_id, s.class,
        (s.backup or "") .. (s.in_use and " (in use)" or ""))
      lines[#lines + 1] = (line:gsub("%s+$", ""))
    end
  end
  for _, p in ipairs(res.problems) do lines[#lines + 1] = "journal unreadable: " .. p end
  lines[#lines + 1] = string.format("%d owned, %d orphan, %d foreign snapshot(s) on %d canister(s)", res.counts.owned,
    res.counts.orphan, res.counts.foreign, #res.canisters)
  return lines
end

function M.handlers.list(args, ui)
  local driver, include = connect(args)
  local res = require("fleetsnap.cleanup").snapshots(args.dir, driver, { include = include })
  ui:doc({ type = "snapshots", dir = args.dir, counts = res.counts, canisters = rows_json(res) },
    table.concat(listing(res), "\n") .. "\n")
  if res.failed > 0 then return "EICP" end
end

function M.handlers.clean(args, ui)
  local driver, include = connect(args)
  local execute = args.execute or false
  local res = require("fleetsnap.cleanup").clean(args.dir, driver, { include = include, execute = execute })
  local lines, orphans, n = {}, {}, 0
  for i, o in ipairs(res.orphans) do
    if o.action ~= "keep" then n = n + 1 end
    orphans[i] = { canister_id = o.canister, snapshot_id = o.snapshot_id, backup = o.backup, action = o.action,
      reason = o.reason, message = o.message }
    lines[#lines + 1] = string.format("  %-27s %s  %s (%s)%s%s", o.canister, o.snapshot_id, o.action, o.backup,
      o.reason and (": " .. o.reason) or "", o.message and (": " .. o.message) or "")
  end
  local head = execute and string.format("deleted %d orphan snapshot(s)", n - res.nfailed)
    or string.format("would delete %d orphan snapshot(s) (dry run; --execute to delete them)", n)
  ui:doc({ type = "snapshots-clean", dry_run = not execute, dir = args.dir, orphans = json.array(orphans) },
    head .. "\n" .. (#lines > 0 and (table.concat(lines, "\n") .. "\n") or ""))
  if res.nfailed > 0 or res.failed > 0 then return "EICP" end
end

return M
