--- The CLI's side of a restic repository as the store for pulls: the
-- cache of pulled backups (its place and size limit), the `restic:<ref>`
-- references of the restore commands, and the pull and repository prune
-- commands. Parses and renders; store/pull.lua, store/cache.lua and
-- store/prune.lua decide.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local settings = require "fleetsnap.cli.settings"
local units = require "fleetsnap.units"

local json = engine.json

local M = {}

-- A reference to a backup of the repository: `restic:<backup id>` or
-- `restic:latest`.
M.PREFIX = "restic:"

--- The backup reference of `ref` when it names one of the repository's
-- (`restic:<id|latest>`), else nil. An empty one is a usage error.
function M.restic_ref(ref)
  if type(ref) ~= "string" or ref:sub(1, #M.PREFIX) ~= M.PREFIX then return nil end
  local rest = ref:sub(#M.PREFIX + 1)
  if rest == "" then errors.raise("EUSAGE", "restic: needs a backup id or latest (restic:<id|latest>)") end
  return rest
end

--- A function that opens the repository once, on first use, with
-- `open(args)` (cli/backup.lua's `repository`: --repo, else
-- RESTIC_REPOSITORY, else the config's repository; restic's own password
-- variables are read by restic, and nothing here prints them).
function M.opener(args, open)
  local repo
  return function()
    repo = repo or open(args)
    return repo
  end
end

--- The cache of pulled backups: FLEETSNAP_CACHE_DIR (or the config's
-- cache_dir), else $XDG_CACHE_HOME/fleetsnap/pulled, else
-- ~/.cache/fleetsnap/pulled.
function M.cache_dir(args, getenv)
  getenv = getenv or os.getenv
  if args.cache_dir then return args.cache_dir end
  local base = getenv("XDG_CACHE_HOME")
  if not base or base == "" then
    local home = getenv("HOME")
    if not home or home == "" then
      errors.raise("EUSAGE", "no cache directory: set FLEETSNAP_CACHE_DIR, XDG_CACHE_HOME or HOME")
    end
    base = home .. "/.cache"
  end
  return base .. "/fleetsnap/pulled"
end

local SCALE = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3, t = 1024 ^ 4 }

--- Bytes of a size: an integer with an optional binary unit (`512M`,
-- `20G`, `20GiB`, `1.5T`), or nil.
function M.parse_size(text)
  local n, unit = tostring(text):lower():match("^%s*(%d+%.?%d*)%s*([kmgt]?)i?b?%s*$")
  if not n then return nil end
  return math.tointeger(math.floor(tonumber(n) * SCALE[unit]))
end

--- The cache's size limit in bytes: FLEETSNAP_CACHE_LIMIT (or the
-- config's cache_limit), else the default.
function M.cache_limit(args)
  if not args.cache_limit then return require("fleetsnap.store.cache").DEFAULT_LIMIT end
  local n = M.parse_size(args.cache_limit)
  if not n then
    errors.raise("EUSAGE", "cache limit (FLEETSNAP_CACHE_LIMIT or the config's cache_limit) must be a size such as "
      .. "20G or 512MiB, got '" .. tostring(args.cache_limit) .. "'")
  end
  return n
end

--- The directory of a `restic:<id>` reference for commands that use a
-- planned restore (run, status, undo, verify...): the cached copy, never
-- pulled here. `latest` is refused: it may name another backup by now.
function M.cached(args, id)
  if id == "latest" then
    errors.raise("EUSAGE", "restic:latest names a backup for restore plan only (it may be another one by now); "
      .. "name the backup the plan printed: restic:<backup id>")
  end
  return require("fleetsnap.store.cache").find(M.cache_dir(args), id)
end

-- Runs fn(); an ambiguous `latest` (the domain says "name one") is told
-- how to name one here: --root.
local function naming_root(fn)
  local ok, res, a, b = pcall(fn)
  if ok then return res, a, b end
  if errors.is(res) and res.code == "EUSAGE" and res.message:find("name one$") then
    res.message = res.message .. " with --root"
  end
  error(res, 0)
end

-- {=== restore plan restic:<ref> ===}

--- `restore plan` of a repository's backup: pulls it into the cache (or
-- reuses it there; the repository opened by `open(args)` only when
-- needed) and runs `plan(dir)` under the cache lock. Returns plan's
-- result, the cache's document and its text.
function M.plan(args, ref, plan, open)
  if args.state then
    -- The cache sees a restore only in its default state directory: one
    -- elsewhere could be evicted from under it.
    errors.raise("EUSAGE", "--state cannot be combined with a restic: reference (the restore state stays in the "
      .. "cached backup, so the cache knows it is in use)")
  end
  local cache_dir, limit = M.cache_dir(args), M.cache_limit(args)
  local res = naming_root(function()
    return require("fleetsnap.store.cache").with(cache_dir, ref, { repo = M.opener(args, open),
      root = settings.flag(args, "root"), limit = limit }, plan)
  end)
  local doc = { dir = res.dir, backup_id = res.backup_id, reused = res.reused,
    snapshot_id = res.snapshot_id or json.null, evicted = json.array(res.evicted), bytes = res.bytes, limit = limit,
    over_limit = res.over_limit }
  local text = (res.reused and ("reused the cached copy of backup " .. res.backup_id .. " (intact)")
    or ("pulled backup " .. res.backup_id .. " (restic snapshot " .. res.snapshot_id:sub(1, 8) .. ") and verified it"))
    .. " in " .. res.dir .. "\n"
  if #res.evicted > 0 then text = text .. "  evicted from the cache: " .. table.concat(res.evicted, ", ") .. "\n" end
  if res.over_limit then
    text = text .. string.format("  the cache holds %s, over its limit of %s (what is left is in use)\n",
      units.bytes(res.bytes), units.bytes(limit))
  end
  return res.result, doc, text
end

-- {=== backup pull ===}

function M.pull(args, ui, open_repo)
  local open = M.opener(args, open_repo)
  local pull = require "fleetsnap.store.pull"
  local b = naming_root(function() return pull.find(open(), args.ref, { root = settings.flag(args, "root") }) end)
  local dest = args.out
  if not dest then
    local parts = require("fleetsnap.paths").components(b.backup_id)
    if not parts or #parts ~= 1 then
      errors.raise("ECORRUPT", "backup id " .. b.backup_id .. " of the repository is not a directory name; give --out")
    end
    dest = args.dir .. "/" .. b.backup_id
  end
  local res = pull.pull(open(), b, dest)
  local c = res.report.checked
  ui:doc({ type = "pull", repository = open():name(), backup_id = res.backup_id, snapshot_id = res.snapshot_id,
    root = res.root or json.null, created_ns = res.time_ns, created = units.utc(res.time_ns), dir = res.dir,
    members = c.members_total, bytes = c.bytes_total },
    string.format("pulled backup %s from %s (restic snapshot %s): %d members, %s, every artifact verified\n  %s\n",
      res.backup_id, open():name(), res.snapshot_id:sub(1, 8), c.members_total, units.bytes(c.bytes_total), res.dir))
end

-- {=== backup prune --repo ===}

function M.prune(args, ui, rules, open_repo)
  local open = M.opener(args, open_repo)
  local execute = args.execute or false
  local cache_mod = require "fleetsnap.store.cache"
  local res = cache_mod.holding_in_use(M.cache_dir(args), function(ids)
    local in_use = {}
    for id, dir in pairs(ids) do in_use[id] = "a restore is using its cached copy " .. dir end
    return require("fleetsnap.store.prune").run(open(), rules, { dry_run = not execute, backups_dir = args.dir,
      in_use = in_use })
  end)
  local rows, lines = {}, {}
  for i, b in ipairs(res.backups) do
    rows[i] = { backup_id = b.backup_id, root = b.root or json.null, created_ns = b.time_ns,
      created = units.utc(b.time_ns), snapshots = json.array(b.snapshots), action = b.action,
      reason = b.reason or json.null }
    local short = {}
    for k, id in ipairs(b.snapshots) do short[k] = id:sub(1, 8) end
    lines[#lines + 1] = string.format("  %-44s %s  %s%s", b.backup_id, table.concat(short, ","), b.action,
      b.reason and (": " .. b.reason) or "")
  end
  local n = 0
  for _, b in ipairs(res.backups) do if b.action == "forget" then n = n + 1 end end
  ui:doc({ type = "prune-repo", repository = open():name(), dry_run = not execute, backups = json.array(rows),
    forget = json.array(res.forget), forgotten = json.array(res.forgotten) },
    string.format("%s %d backup(s) (%d restic snapshot(s)) in %s%s\n", execute and "forgot" or "would forget", n,
      #res.forget, open():name(), execute and " and pruned their data" or
      " (dry run; --execute to forget them and prune their data)") .. table.concat(lines, "\n")
      .. (#lines > 0 and "\n" or ""))
end

return M
