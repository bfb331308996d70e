--- What the pull, restore plan and prune specs (spec/store/) share: a tiny backed-up fleet, restic
-- repositories (local, and REST through `rclone serve restic` on loopback,
-- started and stopped by the spec), pushes, and the repository's snapshots.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local M = {}

-- restic's own password variable: what an operator sets.
M.PASSWORD = "fleetsnap-spec-password"

--- The environment of a fleetsnap or restic run against `repo`, plus
-- `extra`.
function M.env(repo, extra)
  local e = { RESTIC_PASSWORD = M.PASSWORD, RESTIC_REPOSITORY = repo, RCLONE_CONFIG = "/nonexistent/rclone.conf" }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

--- Runs restic with argv against `repo` (cwd optional); the result.
function M.restic(repo, argv, cwd)
  local full = { "restic", "--no-cache" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return engine.proc.run({ argv = full, env = M.env(repo), cwd = cwd, unset_env = { "LD_PRELOAD" },
    timeout_ms = 120000, capture_limit = 8 << 20 })
end

--- A new repository at `repo` (a path or rest: URL).
function M.init(repo)
  local r = M.restic(repo, { "init" })
  assert(r.status == 0, r.stderr)
  return repo
end

--- A fleet of two members backed up as `names` (default b1, b2) under
-- `<dir>/backups`: {home, dir (the backups directory), root}.
function M.fleet(names)
  local home = helpers.sim_home({ members = 2, depth = 1 })
  local dir = helpers.tmpdir() .. "/backups"
  for _, name in ipairs(names or { "b1", "b2" }) do
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", dir .. "/" .. name, "-q" })
    assert(r.status == 0, r.stderr)
  end
  return { home = home, dir = dir, root = helpers.fleet(home).root }
end

--- Pushes the backup in `path` into `repo` with `fleetsnap backup push`;
-- returns the snapshot id.
function M.push_backup(repo, path)
  local r = helpers.fleetsnap(nil, { "--json", "backup", "push", path, "--repo", repo }, M.env(repo))
  assert(r.status == 0, r.stderr)
  return json.decode(r.stdout).snapshot_id
end

--- Pushes the backup directory `path` into `repo` with restic itself, the
-- way `backup push` does (issue 14's tags, host = root, time = capture time, the backup
-- directory as `.`, the journal lock left out), as backup `id` at `time`
-- ("YYYY-MM-DD HH:MM:SS", UTC): what a spec needs of backups taken at
-- chosen times, or of a backup pushed under another id. Returns the
-- snapshot id.
-- `absolute`: back up the directory by its absolute path instead (restic
-- then restores it under that path beneath the target).
function M.push(repo, path, id, root, time, absolute)
  local r = M.restic(repo, { "backup", "--json", "-q", "--tag", "fleetsnap", "--tag", "backup_id=" .. id,
    "--tag", "root=" .. root, "--tag", "policy=consistent", "--host", root, "--time", time,
    "--exclude", "fleetsnap-journal.wal.lock", absolute and path or "." }, path)
  assert(r.status == 0, r.stderr)
  for line in r.stdout:gmatch("[^\n]+") do
    local doc = json.decode(line)
    if doc and doc.message_type == "summary" then return doc.snapshot_id end
  end
  error("no snapshot id: " .. r.stdout)
end

--- The repository's snapshots (restic's documents).
function M.snapshots(repo)
  local r = M.restic(repo, { "snapshots", "--json" })
  assert(r.status == 0, r.stderr)
  return json.decode(r.stdout)
end

--- The backup ids of the repository's snapshots, sorted.
function M.backup_ids(repo)
  local out = {}
  for _, s in ipairs(M.snapshots(repo)) do
    for _, t in ipairs(s.tags or {}) do
      local id = t:match("^backup_id=(.*)$")
      if id then out[#out + 1] = id end
    end
  end
  table.sort(out)
  return out
end

--- A REST repository server on loopback: `rclone serve restic` on a free
-- port (rclone picks it: port 0) over the directory `data`, in a process
-- group of its own. Returns {url (rest:http://127.0.0.1:PORT/), stop()}.
function M.rest_server(data)
  local log = data .. ".log"
  fs.mkdir_private(data)
  local h = assert(engine.proc.spawn({ argv = { "sh", "-c", 'exec rclone serve restic --addr 127.0.0.1:0 "$1" 2>"$2"',
    "sh", data, log }, env = { RCLONE_CONFIG = "/nonexistent/rclone.conf" }, unset_env = { "LD_PRELOAD" } }))
  local port
  for _ = 1, 200 do
    port = (helpers.read(log) or ""):match("Serving restic REST API on http://127%.0%.0%.1:(%d+)/")
    if port or h:done() then break end
    engine.sleep_ms(50)
  end
  if not port then
    h:close()
    error("rclone serve restic did not start: " .. tostring(helpers.read(log)))
  end
  return { url = "rest:http://127.0.0.1:" .. port .. "/", handle = h, stop = function()
    -- The whole process group, then reaped.
    h:kill(9)
    h:close()
  end }
end

--- Flips bytes in the middle of the largest pack file of the local
-- repository `repo`; returns its path after checking its bytes changed.
function M.damage_pack(repo)
  local best, size
  for _, sub in ipairs(fs.list(repo .. "/data") or {}) do
    for _, name in ipairs(fs.list(repo .. "/data/" .. sub) or {}) do
      local p = repo .. "/data/" .. sub .. "/" .. name
      local st = fs.lstat(p)
      if st.type == "file" and (not size or st.size > size) then best, size = p, st.size end
    end
  end
  assert(best, "no pack file under " .. repo .. "/data")
  local before = helpers.read(best)
  local at = #before // 2
  local flipped = {}
  for i = at, at + 63 do flipped[#flipped + 1] = string.char(before:byte(i) ~ 0xff) end
  os.execute("chmod u+w '" .. best .. "'")
  helpers.write(best, before:sub(1, at - 1) .. table.concat(flipped) .. before:sub(at + 64))
  local after = helpers.read(best)
  assert(#after == #before and after ~= before, "the pack's bytes did not change")
  return best
end

--- The names under `dir` (hidden ones included), sorted.
function M.names(dir)
  return fs.list(dir) or {}
end

return M
