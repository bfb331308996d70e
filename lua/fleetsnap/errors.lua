--- The one error model of the domain: every failure fleetsnap reports is an
-- error object made here, with a code from the registry below. The registry
-- is data: each code's exit status and what it means, so that the CLI, the
-- README's exit table (checked by a spec) and `--json` agree. An error may
-- carry `next`, the step that continues, as data ({command = {"restore",
-- "run"}, ref = dir, options = {retry_failed = true}}); the CLI renders it
-- as a command line with the connection flags of the run.
--
-- The engine and the icp driver have codes of their own (ENOENT, ELOCKED,
-- NETWORK, NOT_CONTROLLER, ...); `from_engine` and `from_driver` map them
-- here, in one place. Anything that is not an error object (a Lua error, a
-- string) is an internal error: exit 70.
local M = {}

--- code -> {exit, meaning, again}. One row per code; the exit table is
-- built from these rows. `again`: when the error names no step of its own,
-- the way on is the same command once the cause is gone (the holder ended,
-- the network or the disk is back); otherwise it is the command's help.
M.REGISTRY = {
  EICP = { exit = 1, again = true, meaning = "an icp command failed or could not reach the network" },
  EUSAGE = { exit = 2, meaning = "usage: an unknown command or option, or a bad option value" },
  ENOTFOUND = { exit = 3, meaning = "not found: backup, member, subtree, policy, file" },
  ELOCKED = { exit = 4, again = true,
    meaning = "locked: another run holds the fleet or the directory (the holder is named)" },
  EINFLIGHT = { exit = 4, again = true, meaning = "a command of a dead run is still running" },
  EPRECONDITION = { exit = 5, meaning = "precondition refused: preflight, topology drift, snapshot limit, a "
    .. "load into a running canister, an abort after the first load, an unfinished restore" },
  ECONFLICT = { exit = 5, meaning = "the directory holds something else (another backup, another restore)" },
  EFAILED = { exit = 5, meaning = "operations failed earlier; the operator must look, then retry" },
  EVERIFY = { exit = 6, meaning = "verification failed: an artifact or download does not match, a reported "
    .. "success had no effect, a restored member differs" },
  ECORRUPT = { exit = 7, meaning = "corrupt or invalid document (plan, journal, manifest, mapping, policy) or "
    .. "unsafe path (a symlink where a file or directory of ours belongs)" },
  EIO = { exit = 8, again = true,
    meaning = "the local file system failed: disk full (under fleetsnap or under icp's download), permission, "
      .. "not a directory, I/O" },
  ENOREPO = { exit = 3, meaning = "not found: no restic repository at the location given (restic: \"Is there a "
    .. "repository at the following location?\")" },
  EREPOLOCKED = { exit = 4, again = true, meaning = "locked: the restic repository is locked by another restic (a "
    .. "dead holder's lock stays until `restic unlock`)" },
  EREPO = { exit = 9, meaning = "a restic command failed otherwise (restic missing, an error restic names; its "
    .. "message is quoted with credentials redacted)" },
  EREPOKEY = { exit = 10, meaning = "the restic repository refused the password (wrong password or no key found), "
    .. "or no password was given" },
  EREPONET = { exit = 11, again = true, meaning = "the restic repository could not be reached (connection refused, "
    .. "unknown host, timeout)" },
  EPUSH = { exit = 12, again = true, meaning = "the backup is complete here but its push to the restic repository "
    .. "failed (`backup push` pushes it again)" },
  EINTERNAL = { exit = 70, meaning = "internal error (a bug; the debug option prints its traceback)" },
  EINTERRUPTED = { exit = 130, again = true, meaning = "interrupted (SIGINT, SIGTERM, SIGHUP): running commands "
    .. "are killed, canisters this run stopped are started again" },
}

-- Engine codes (fleetsnap.engine's third return value).
M.ENGINE = {
  ENOENT = "ENOTFOUND", ELOCKED = "ELOCKED", EUNSAFE = "ECORRUPT", EJSON = "ECORRUPT", ECORRUPT = "ECORRUPT",
  EHASH = "EVERIFY", ECONFLICT = "ECONFLICT", EEXIST = "ECONFLICT", EINTR = "EINTERRUPTED", ETIMEDOUT = "EICP",
  ENOSPC = "EIO", EDQUOT = "EIO", EACCES = "EIO", EPERM = "EIO", EROFS = "EIO", ENOTDIR = "EIO", EISDIR = "EIO",
  EIO = "EIO", ENAMETOOLONG = "EIO", EMFILE = "EIO", ENFILE = "EIO", ENOTEMPTY = "EIO", EXDEV = "EIO",
  EBADF = "EIO", ELOOP = "ECORRUPT", EINVAL = "EIO",
}

-- Driver codes (fleetsnap.drivers.icp's error tables) and the executor's
-- own operation codes.
M.DRIVER = {
  ICP_MISSING = "EICP", ICP_USAGE = "EICP", ICP_FAILED = "EICP", ICP_CRASHED = "EICP", ICP_OUTPUT = "EICP",
  NETWORK = "EICP", TIMEOUT = "EICP", REJECTED = "EICP", CANISTER_GONE = "EPRECONDITION",
  NOT_CONTROLLER = "EPRECONDITION", NOT_STOPPED = "EPRECONDITION", NOT_LOADABLE = "EPRECONDITION",
  LIMIT = "EPRECONDITION", LOCAL_IO = "EIO", SNAPSHOT_GONE = "EVERIFY", IN_FLIGHT = "EINFLIGHT",
  AMBIGUOUS = "EFAILED", OPERATOR = "EFAILED", EPLAN = "EINTERNAL",
}

-- Older names of domain modules (fleet, policy, manifest, mapping) for the
-- registry's codes: the cause stays in the error, the code is the row.
M.ALIASES = {
  EPOLICY = "ECORRUPT", EMANIFEST = "ECORRUPT", EMAPPING = "ECORRUPT", EDOC = "ECORRUPT", EJSON = "ECORRUPT",
  EUNSAFE = "ECORRUPT", EFLEET = "EICP", EREGISTRY = "EICP", ESELECT = "ENOTFOUND", ENOENT = "ENOTFOUND",
  EPRINCIPAL = "EUSAGE", EEXISTS = "ECONFLICT", EPLAN = "EINTERNAL",
}

local Error = {}
Error.__index = Error
Error.__tostring = function(e) return e.code .. ": " .. e.message end

--- A new error object. fields: next (the continuing step), failures,
-- cause (the driver's or engine's code), anything else worth rendering.
function M.new(code, message, fields)
  local cause
  if M.ALIASES[code] then
    cause, code = code, M.ALIASES[code]
  end
  if not M.REGISTRY[code] then
    -- A code nobody registered is itself a bug.
    message = string.format("unregistered error code %s: %s", tostring(code), tostring(message))
    code = "EINTERNAL"
  end
  local e = setmetatable({ fleetsnap = true, code = code, message = message, cause = cause }, Error)
  for k, v in pairs(fields or {}) do
    if k ~= "code" and k ~= "message" then e[k] = v end
  end
  return e
end

--- Raises a new error object (never returns).
function M.raise(code, message, fields)
  error(M.new(code, message, fields), 0)
end

--- Whether v is an error object of this registry.
function M.is(v)
  return getmetatable(v) == Error
end

--- The registry code of an engine failure: `nil, message, code`.
function M.engine_code(code)
  return M.ENGINE[code] or "EIO"
end

--- An error object for an engine failure, with what failed named first.
function M.from_engine(what, message, code, fields)
  local f = fields or {}
  f.cause = code
  return M.new(M.engine_code(code), (what and (what .. ": ") or "") .. tostring(message), f)
end

--- Raises the engine failure unless `ok`; returns ok otherwise. Used where
-- an `assert` would have turned a full disk into a traceback.
function M.check(what, ok, message, code)
  if ok == nil or ok == false then error(M.from_engine(what, message, code), 0) end
  return ok
end

--- The registry code of a driver (or operation) error table's code.
function M.driver_code(code)
  if M.REGISTRY[code] then return code end
  if M.ALIASES[code] then return M.ALIASES[code] end
  return M.DRIVER[code] or (M.ENGINE[code] and M.engine_code(code)) or "EICP"
end

--- An error object for a driver/operation error table {code, message, ...}.
function M.from_driver(err, fields)
  local f = fields or {}
  f.cause = err.code
  f.ic = err.ic
  return M.new(M.driver_code(err.code), err.message or tostring(err.code), f)
end

--- Any caught value as an error object: error objects stay, anything else
-- (a Lua error, a string) becomes EINTERNAL with its traceback kept for
-- --debug.
function M.wrap(v, traceback)
  if M.is(v) then return v end
  if type(v) == "table" and v.fleetsnap and (M.REGISTRY[v.code] or M.ALIASES[v.code]) then
    return M.new(v.code, v.message, v)
  end
  if type(v) == "string" and v:find("interrupted!", 1, true) then
    -- lua5.4's own SIGINT handler, where the engine's is not installed.
    return M.new("EINTERRUPTED", "interrupted by SIGINT", { signal = "SIGINT" })
  end
  local text = type(v) == "table" and type(v.message) == "string" and v.message or tostring(v)
  return M.new("EINTERNAL", "internal error: " .. text, { traceback = traceback })
end

--- The exit status of an error object (70 for anything else).
function M.exit_code(e)
  local row = M.is(e) and M.REGISTRY[e.code]
  return row and row.exit or M.REGISTRY.EINTERNAL.exit
end

--- The exit table: {exit, codes = {...}, meanings = {...}} ordered by exit.
function M.exit_table()
  local by_exit = {}
  for code, row in pairs(M.REGISTRY) do
    local t = by_exit[row.exit]
    if not t then
      t = { exit = row.exit, codes = {}, meanings = {} }
      by_exit[row.exit] = t
    end
    t.codes[#t.codes + 1] = code
  end
  local out = {}
  for _, t in pairs(by_exit) do
    table.sort(t.codes)
    for i, c in ipairs(t.codes) do t.meanings[i] = M.REGISTRY[c].meaning end
    out[#out + 1] = t
  end
  table.sort(out, function(a, b) return a.exit < b.exit end)
  return out
end

return M
