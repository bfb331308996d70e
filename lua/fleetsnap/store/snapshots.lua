--- The fleetsnap backups of a restic repository, read from its snapshot
-- list (`restic snapshots --json`, through the store driver): each
-- snapshot a push made carries the tags `fleetsnap`, `backup_id=<id>`,
-- `root=<root>` and `policy=<name>`, its host is the fleet's root and its
-- time the backup's capture time. Pure functions over that list: which
-- snapshots are fleetsnap's, grouped by backup, and which one a reference
-- (`<backup id>` or `latest`) names.
local M = {}

M.TAG = "fleetsnap"
M.LATEST = "latest"

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
-- days_from_civil): the time zone of this host must not enter the sum.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Nanoseconds since the epoch of restic's RFC 3339 time
-- (`2026-11-30T17:13:46.123456789+01:00`, `...Z`), or nil when it is not
-- one.
function M.time_ns(text)
  if type(text) ~= "string" then return nil end
  local y, mo, d, h, mi, s, frac, zone = text:match(
    "^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  local offset = 0
  if zone ~= "Z" then
    local sign, zh, zm = zone:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(zh) * 3600 + tonumber(zm) * 60) * (sign == "-" and -1 or 1)
  end
  local digits = frac:sub(2)
  if frac ~= "" and digits == "" then return nil end
  local ns = math.tointeger(tonumber(((digits .. "000000000"):sub(1, 9)))) or 0
  local secs = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600
    + tonumber(mi) * 60 + tonumber(s) - offset
  return math.tointeger(secs) * 1000000000 + ns
end

--- The `key=value` tags of a snapshot as a table (and `fleetsnap = true`
-- when the bare tag is there).
function M.tags(snapshot)
  local out = {}
  for _, t in ipairs(type(snapshot.tags) == "table" and snapshot.tags or {}) do
    if type(t) == "string" then
      local k, v = t:match("^([^=]+)=(.*)$")
      if k then
        out[k] = out[k] or v
      else
        out[t] = true
      end
    end
  end
  return out
end

--- The snapshot as a backup row, or nil when it is not fleetsnap's (no
-- `fleetsnap` tag, no `backup_id=`, no path or no readable time): {id,
-- backup_id, root, policy, host, time, time_ns, path}.
function M.row(snapshot)
  if type(snapshot) ~= "table" then return nil end
  local tags = M.tags(snapshot)
  if tags[M.TAG] ~= true or type(tags.backup_id) ~= "string" or tags.backup_id == "" then return nil end
  local t = M.time_ns(snapshot.time)
  local path = type(snapshot.paths) == "table" and snapshot.paths[1]
  if not t or type(path) ~= "string" or type(snapshot.id) ~= "string" then return nil end
  return { id = snapshot.id, backup_id = tags.backup_id, root = tags.root or snapshot.hostname, policy = tags.policy,
    host = snapshot.hostname, time = snapshot.time, time_ns = t, path = path }
end

-- Newest first: capture time, then the backup id (as the local catalogue
-- breaks ties by name), then the snapshot id, so that the order never
-- depends on restic's.
local function newer(a, b)
  if a.time_ns ~= b.time_ns then return a.time_ns > b.time_ns end
  if a.backup_id ~= b.backup_id then return a.backup_id > b.backup_id end
  return a.id > b.id
end

--- The fleetsnap backups among `list` (the repository's snapshots),
-- newest first: [{backup_id, root, policy, time_ns, time, snapshots =
-- [row, newest first]}]. A backup pushed twice (a push restic failed to
-- finish leaves a snapshot that push never adopts) has several snapshots.
function M.backups(list)
  local by_id, out = {}, {}
  for _, s in ipairs(list or {}) do
    local r = M.row(s)
    if r then
      local b = by_id[r.backup_id]
      if not b then
        b = { backup_id = r.backup_id, root = r.root, policy = r.policy, time_ns = r.time_ns, time = r.time,
          snapshots = {} }
        by_id[r.backup_id] = b
        out[#out + 1] = b
      end
      b.snapshots[#b.snapshots + 1] = r
      if r.time_ns > b.time_ns then b.time_ns, b.time = r.time_ns, r.time end
    end
  end
  for _, b in ipairs(out) do table.sort(b.snapshots, newer) end
  table.sort(out, function(a, b)
    if a.time_ns ~= b.time_ns then return a.time_ns > b.time_ns end
    return a.backup_id > b.backup_id
  end)
  return out
end

--- The backup `ref` names among `backups` (M.backups): `latest` is the
-- newest capture time (ties: the greater backup id) of `root`, which is
-- needed when the repository holds backups of several roots; anything
-- else is a backup id, exactly. Returns the backup, or nil, why not and
-- the registry code (ENOTFOUND, or EUSAGE for `latest` among several
-- roots without one).
function M.find(backups, ref, root)
  if ref == M.LATEST then
    if not root then
      local roots, seen = {}, {}
      for _, b in ipairs(backups) do
        if b.root and not seen[b.root] then
          seen[b.root] = true
          roots[#roots + 1] = b.root
        end
      end
      if #roots > 1 then
        table.sort(roots)
        return nil, "latest is ambiguous: the repository holds backups of several roots (" .. table.concat(roots, ", ")
          .. "); name one", "EUSAGE"
      end
    end
    for _, b in ipairs(backups) do
      if not root or b.root == root then return b end
    end
    return nil, "no fleetsnap backup in the repository" .. (root and (" of root " .. root) or ""), "ENOTFOUND"
  end
  for _, b in ipairs(backups) do
    if b.backup_id == ref then return b end
  end
  return nil, "no fleetsnap backup " .. tostring(ref) .. " in the repository", "ENOTFOUND"
end

return M
