--- One operation per fleet at a time, whatever the directory: a lock per
-- fleet, keyed by the network and the fleet's root principal, held by
-- every run that changes the fleet (backup, restore, abort, undo, and the
-- snapshot deletions of retention). It is a lock of this host: a flock on
-- one file per fleet (never one per canister), in
--   $FLEETSNAP_LOCK_DIR, else $XDG_RUNTIME_DIR/fleetsnap/locks,
--   else /tmp/fleetsnap-<uid>/locks
-- (a private 0700 directory; a symlink or another owner's directory is
-- refused). The kernel lock is the only authority: a killed holder never
-- blocks anybody. The file holds the holder's pid, host, start time and
-- command line (engine.lock's owner text), which the refusal names.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"

local fs = engine.fs

local M = {}

local function uid()
  local r = engine.proc.run({ argv = { "id", "-u" } })
  return r.status == 0 and r.stdout:match("%d+") or "0"
end

--- The directory of this host's fleet locks.
function M.dir()
  local dir = os.getenv("FLEETSNAP_LOCK_DIR")
  if dir and dir ~= "" then return dir end
  local runtime = os.getenv("XDG_RUNTIME_DIR")
  if runtime and runtime ~= "" then return runtime .. "/fleetsnap/locks" end
  return "/tmp/fleetsnap-" .. uid() .. "/locks"
end

local function make_dirs(dir)
  local parent = dir:match("^(.*)/[^/]+$")
  if parent and parent ~= "" and not fs.lstat(parent) then
    local ok, err, code = make_dirs(parent)
    if not ok then return nil, err, code end
  end
  return fs.mkdir_private(dir)
end

--- The key of a fleet: its network (as the driver names it) and root.
function M.key(network, root)
  return engine.hash.sha256(tostring(network) .. "\0" .. tostring(root)):sub(1, 32)
end

--- Takes the locks of the fleets {network, root} (one or more: a restore
-- into mapped targets locks the targets' fleet too), without waiting.
-- what: the operation, for the holder's description. Returns a handle
-- whose close releases them all (idempotent, also through <close>).
-- Raises ELOCKED naming the holder when any is taken.
function M.acquire(fleets, what)
  local dir = M.dir()
  local ok, err, code = make_dirs(dir)
  if not ok then errors.raise(errors.engine_code(code), "fleet lock directory " .. dir .. ": " .. tostring(err)) end
  local keys, seen = {}, {}
  for _, f in ipairs(fleets) do
    local k = M.key(f.network, f.root)
    if not seen[k] then
      seen[k] = true
      keys[#keys + 1] = { key = k, fleet = f }
    end
  end
  -- A stable order, so that two runs never hold one lock each of a pair.
  table.sort(keys, function(a, b) return a.key < b.key end)
  local held = {}
  local function release()
    for i = #held, 1, -1 do
      held[i]:close()
      held[i] = nil
    end
  end
  for _, k in ipairs(keys) do
    local path = dir .. "/" .. k.key .. ".lock"
    local lock, lerr, lcode = engine.lock.acquire(path)
    if not lock then
      release()
      if lcode == "ELOCKED" then
        errors.raise("ELOCKED", string.format("fleet %s on %s is busy (%s): %s; nothing was done", k.fleet.root,
          k.fleet.network, tostring(what), lerr), { holder = M.holder(path) })
      end
      errors.raise(errors.engine_code(lcode), "fleet lock " .. path .. ": " .. tostring(lerr))
    end
    held[#held + 1] = lock
  end
  return setmetatable({ locks = held }, {
    __index = { close = release },
    __close = release,
    __gc = release,
  })
end

--- The holder of a taken lock: {pid, host, started, argv}, or nil.
function M.holder(path)
  local h = engine.lock.owner(path)
  return type(h) == "table" and h or nil
end

return M
