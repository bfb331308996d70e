--- The restic driver: the only module that runs restic. A repository
-- object renders restic's command lines, runs them through engine.proc
-- (no shell; the environment is given explicitly), parses restic's JSON
-- and tells restic's failures apart by its stderr: restic 0.14 exits only
-- 0 (ok), 1 (any error) or 3 (some source files could not be read, a
-- snapshot was still written), so a missing repository, a wrong password,
-- a locked repository and a network failure are all exit 1.
--
-- Methods return their value, or nil and an error table {code, message,
-- stderr_tail} whose code is a registry code (errors.from_driver takes it
-- as it is). Credentials are never printed: the repository goes to restic
-- through RESTIC_REPOSITORY (not argv, which `ps` shows), and every text
-- this module returns passes `redact`.
--
-- Every command runs with --no-cache: restic's cache lives in the user's
-- home (~/.cache/restic), and fleetsnap writes nothing outside its backup
-- and state directories. The cache would mostly save re-reading the
-- parent snapshot's trees, and a push has no parent: every backup
-- directory is a path of its own. The price, re-reading the index for each
-- command, is paid once per push or list.
local engine = require "fleetsnap.engine"

local json = engine.json

local M = {}

local Repo = {}
Repo.__index = Repo

local MiB = 1024 * 1024

-- restic's own variables that would contradict what the repository
-- object passes (a second repository or password source).
local CLEARED = { "RESTIC_REPOSITORY_FILE" }
local PASSWORD_SOURCES = { "RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_PASSWORD_FILE" }

--- `text` with the password of every `scheme://user:password@` (and the
-- given secrets, plain) replaced by ***.
function M.redact(text, secrets)
  text = tostring(text or "")
  text = text:gsub("([%a][%w+.-]*://)([^/@%s:]*):([^@%s/]*)@", "%1%2:***@")
  for _, s in ipairs(secrets or {}) do
    if #s >= 3 then
      local at = 1
      while true do
        local i, j = text:find(s, at, true)
        if not i then break end
        text = text:sub(1, i - 1) .. "***" .. text:sub(j + 1)
        at = i + 3
      end
    end
  end
  return text
end

-- The password of a `scheme://user:password@host` repository, if any
-- (also looked for, plain, in restic's messages).
local function url_password(repository)
  local p = repository:match("[%a][%w+.-]*://[^/@%s:]*:([^@%s/]*)@")
  if p and p ~= "" and p ~= "***" then return p end
end

-- An absolute form of a relative local path (restic backup runs in the
-- backup directory, where a relative path would name something else).
local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local r = engine.proc.run({ argv = { "realpath", "-m", "--", path } })
  if r.status ~= 0 then return path end
  return (r.stdout:gsub("\n$", ""))
end

--- A repository object. opts: repository (else RESTIC_REPOSITORY; nil
-- and no variable raises through `missing`), password_file (else restic
-- reads RESTIC_PASSWORD, RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND
-- from the inherited environment), restic (the program, default "restic"
-- on PATH), env (extra environment for restic), missing (a function
-- called with no argument when no repository is known; it raises the
-- caller's error, which can name the caller's way to give one).
--
-- Returns the object, or nil and an error table when no repository is
-- known and no `missing` was given.
function M.open(opts)
  opts = opts or {}
  local repository = opts.repository
  if repository == nil or repository == "" then repository = os.getenv("RESTIC_REPOSITORY") end
  if repository == nil or repository == "" then
    if opts.missing then opts.missing() end
    return nil, { code = "EUSAGE", message = "no restic repository given (RESTIC_REPOSITORY is not set)" }
  end
  -- A backend is `name:...` (rest:, sftp:, s3:, local:...); anything else
  -- is a local directory.
  if not repository:match("^%a[%w+.-]*:") then repository = absolute(repository) end
  local password_file = opts.password_file
  if not password_file and (os.getenv("RESTIC_PASSWORD_FILE") or "") ~= "" then
    password_file = os.getenv("RESTIC_PASSWORD_FILE")
  end
  password_file = password_file and absolute(password_file)
  local env = {}
  for k, v in pairs(opts.env or {}) do env[k] = v end
  env.RESTIC_REPOSITORY = repository
  -- restic reads --time in the local zone: fleetsnap gives UTC.
  env.TZ = "UTC"
  local unset = {}
  for _, k in ipairs(CLEARED) do unset[#unset + 1] = k end
  if password_file then
    -- One password source: restic refuses a file and a command together.
    for _, k in ipairs(PASSWORD_SOURCES) do unset[#unset + 1] = k end
    env.RESTIC_PASSWORD_FILE = password_file
  end
  return setmetatable({
    repository = repository,
    display = M.redact(repository),
    password_file = password_file,
    restic = opts.restic or "restic",
    env = env,
    unset_env = unset,
    secrets = { url_password(repository) },
  }, Repo)
end

--- The repository's location as messages print it (credentials redacted).
function Repo:name()
  return self.display
end

-- {=== classification ===}

-- stderr texts restic 0.14 prints, in the order they are tried: a closed
-- port also prints "Is there a repository at the following location?"
-- (restic could not read the config file), so the network comes first.
-- The texts were observed with restic 0.14.0 (spec/unit/restic_errors_spec.lua
-- keeps them).
M.PATTERNS = {
  { code = "EREPOKEY", what = "wrong password or no key found", texts = { "wrong password or no key found" } },
  { code = "EREPOKEY", what = "no usable repository password (none given, or its file cannot be read)",
    texts = { "an empty password is not a password", "Resolving password failed",
      "reading repository password from stdin" } },
  { code = "EREPOLOCKED", what = "the repository is locked by another restic",
    texts = { "repository is already locked" } },
  { code = "EREPONET", what = "the repository cannot be reached",
    texts = { "connection refused", "dial tcp", "no such host", "i/o timeout", "network is unreachable",
      "connection reset by peer", "TLS handshake timeout", "Client.Timeout exceeded", "no route to host" } },
  { code = "ENOREPO", what = "no restic repository at this location",
    texts = { "Is there a repository at the following location?", "unable to open config file" } },
}

-- The line of stderr that says what failed: restic's "Fatal: ..." line,
-- else the first non-empty line.
local function fatal_line(stderr)
  local line = stderr:match("Fatal: ([^\n]*)") or stderr:match("unable to create lock in backend: ([^\n]*)")
  if line then return line end
  for l in stderr:gmatch("[^\n]+") do
    if l:match("%S") then return l end
  end
  return ""
end

--- The error table of a restic command that exited neither 0 nor 3 (or
-- was killed). `what`: the command ("backup", "snapshots", ...). Pure:
-- the unit spec feeds it restic's observed stderr.
function M.classify(what, r, display, secrets)
  local stderr = r.stderr or ""
  local where = "restic " .. what .. " in " .. tostring(display)
  local err = { status = r.status, signal = r.signal, stderr_tail = M.redact(stderr:sub(-2000), secrets) }
  if r.timed_out then
    err.code, err.message = "EREPONET", where .. ": restic did not finish in time and was killed"
    return err
  end
  if r.signal then
    err.code, err.message = "EREPO", string.format("%s: restic was killed by signal %s", where, tostring(r.signal))
    return err
  end
  local detail = M.redact(fatal_line(stderr), secrets)
  for _, p in ipairs(M.PATTERNS) do
    for _, t in ipairs(p.texts) do
      if stderr:find(t, 1, true) then
        err.code = p.code
        err.message = string.format("%s: %s (restic: %s)", where, p.what, detail)
        if p.code == "EREPOLOCKED" then
          err.message = err.message .. "; if its holder is dead, `restic unlock` removes the stale lock"
        end
        return err
      end
    end
  end
  err.code = "EREPO"
  err.message = string.format("%s failed (exit %s): %s", where, tostring(r.status), detail)
  return err
end

-- {=== running ===}

--- The argv of one restic command (program first).
function Repo:argv(args)
  local argv = { self.restic, "--no-cache" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

--- Runs restic with `args`; returns the result table, or nil and an error
-- table (restic could not be started, or a signal interrupted the wait:
-- restic is then stopped with SIGTERM, which lets it remove its lock).
-- opts: cwd, timeout_ms, capture_limit, inherit (locks restic's process
-- holds until it exits, even if fleetsnap dies first).
function Repo:run(what, args, opts)
  opts = opts or {}
  local h, msg = engine.proc.spawn({
    argv = self:argv(args), env = self.env, unset_env = self.unset_env, cwd = opts.cwd, inherit = opts.inherit,
    timeout_ms = opts.timeout_ms, kill_grace_ms = 10000, capture_limit = opts.capture_limit or 4 * MiB,
  })
  if not h then
    return nil, { code = "EREPO", message = string.format("cannot run restic (%s): %s", self.restic,
      M.redact(msg, self.secrets)) }
  end
  while true do
    local done, wmsg, wcode = engine.proc.wait_any({ h })
    if done then break end
    if wcode == "EINTR" or wmsg then
      h:kill()
      h:result()
      h:close()
      return nil, { code = "EINTERRUPTED", message = "restic " .. what .. " in " .. self.display
        .. ": " .. tostring(wmsg or "interrupted") }
    end
  end
  local r = h:result()
  h:close()
  return r
end

-- Runs and requires exit 0.
function Repo:run_ok(what, args, opts)
  local r, err = self:run(what, args, opts)
  if not r then return nil, err end
  if r.status ~= 0 then return nil, M.classify(what, r, self.display, self.secrets) end
  return r
end

local function bad_output(self, what, why, text)
  return { code = "EREPO", message = string.format("restic %s in %s: unexpected output (%s): %s", what,
    self.display, why, M.redact((text or ""):sub(1, 200), self.secrets)) }
end

-- {=== commands ===}

--- Creates the repository (tests and benchmarks; fleetsnap never inits
-- a user's repository on its own).
function Repo:init()
  local r, err = self:run_ok("init", { "init" })
  if not r then return nil, err end
  return true
end

--- Backs up the directory `dir` (absolute, symlink-free) as ".": the
-- snapshot's files are then named from the directory's root ("/a/b").
-- o: tags (array), host, time ("YYYY-MM-DD HH:MM:SS", UTC), excludes
-- (restic patterns: absolute paths, or names matched anywhere), inherit
-- (locks restic holds for its whole life: see `run`). Returns
-- {snapshot_id (as restic's summary prints it: 0.14's short id), files, bytes, partial}: partial = restic exited
-- 3, some files could not be read, the snapshot exists but is incomplete.
function Repo:backup(dir, o)
  o = o or {}
  local args = { "backup", "--json", "-q" }
  for _, t in ipairs(o.tags or {}) do args[#args + 1] = "--tag"; args[#args + 1] = t end
  if o.host then args[#args + 1] = "--host"; args[#args + 1] = o.host end
  if o.time then args[#args + 1] = "--time"; args[#args + 1] = o.time end
  for _, e in ipairs(o.excludes or {}) do args[#args + 1] = "--exclude"; args[#args + 1] = e end
  args[#args + 1] = "."
  local r, err = self:run("backup", args, { cwd = dir, inherit = o.inherit })
  if not r then return nil, err end
  if r.status ~= 0 and r.status ~= 3 then return nil, M.classify("backup", r, self.display, self.secrets) end
  local summary
  for line in r.stdout:gmatch("[^\n]+") do
    local doc = json.decode(line)
    if type(doc) == "table" and doc.message_type == "summary" then summary = doc end
  end
  if not summary or type(summary.snapshot_id) ~= "string" then
    if r.status == 3 then
      -- Partial, and no snapshot id to name: still a failure to report.
      return { partial = true, stderr_tail = M.redact(r.stderr:sub(-2000), self.secrets) }
    end
    return nil, bad_output(self, "backup", "no summary with a snapshot_id", r.stdout)
  end
  return { snapshot_id = summary.snapshot_id, files = summary.total_files_processed,
    bytes = summary.total_bytes_processed, partial = r.status == 3,
    stderr_tail = r.status == 3 and M.redact(r.stderr:sub(-2000), self.secrets) or nil }
end

--- The snapshots that carry every tag of o.tags (all, without tags):
-- restic's documents {id, short_id, time, hostname, paths, tags, ...}.
function Repo:snapshots(o)
  o = o or {}
  local args = { "snapshots", "--json" }
  if o.tags and #o.tags > 0 then
    -- One --tag with commas: a snapshot must carry all of them.
    args[#args + 1] = "--tag"
    args[#args + 1] = table.concat(o.tags, ",")
  end
  local r, err = self:run_ok("snapshots", args)
  if not r then return nil, err end
  local doc, why = json.decode((r.stdout:gsub("%s+$", "")))
  if doc == json.null then return {} end
  if type(doc) ~= "table" then return nil, bad_output(self, "snapshots", why or "not an array", r.stdout) end
  for _, s in ipairs(doc) do
    if type(s) ~= "table" or type(s.id) ~= "string" then
      return nil, bad_output(self, "snapshots", "a snapshot without id", r.stdout)
    end
    if type(s.tags) ~= "table" then s.tags = {} end
  end
  return doc
end

--- The nodes of snapshot `id` (a short id too), from one `restic ls
-- --json`: {path ("/a/b"), type ("file", "dir", "symlink", ...), size
-- (files)}. Its first line, the snapshot itself, must be there: output
-- without it is not restic's.
function Repo:ls(id)
  local r, err = self:run_ok("ls", { "ls", "--json", id })
  if not r then return nil, err end
  local nodes, seen = {}, false
  for line in r.stdout:gmatch("[^\n]+") do
    local doc, why = json.decode(line)
    if type(doc) ~= "table" then return nil, bad_output(self, "ls", why or "not an object", line) end
    if doc.struct_type == "node" then
      nodes[#nodes + 1] = { path = doc.path, type = doc.type, size = doc.size }
    elseif doc.struct_type == "snapshot" and type(doc.id) == "string" then
      seen = true
    end
  end
  if not seen then return nil, bad_output(self, "ls", "no snapshot line", r.stdout) end
  return nodes
end

--- Restores snapshot `id` into `target`. o.include: restic patterns
-- (only what matches).
function Repo:restore(id, target, o)
  o = o or {}
  local args = { "restore", id, "--target", target }
  for _, p in ipairs(o.include or {}) do args[#args + 1] = "--include"; args[#args + 1] = p end
  -- For `latest`: the newest snapshot carrying every one of these tags.
  if o.tags then args[#args + 1] = "--tag"; args[#args + 1] = table.concat(o.tags, ",") end
  local r, err = self:run_ok("restore", args)
  if not r then return nil, err end
  -- restic 0.14 has no JSON for restore; its first line names the
  -- snapshot: "restoring <Snapshot 6a81d18b of [...] at ... by ...> to T".
  return { snapshot_id = r.stdout:match("restoring <Snapshot (%x+) ") }
end


--- Forgets the snapshots `ids`; o.prune also removes their data.
function Repo:forget(ids, o)
  o = o or {}
  if #ids == 0 then return true end
  local args = { "forget" }
  if o.prune then args[#args + 1] = "--prune" end
  for _, id in ipairs(ids) do args[#args + 1] = id end
  local r, err = self:run_ok("forget", args)
  if not r then return nil, err end
  return true
end

--- Checks the repository's structure; o.read_data also reads every pack.
function Repo:check(o)
  o = o or {}
  local args = { "check" }
  if o.read_data then args[#args + 1] = "--read-data" end
  local r, err = self:run_ok("check", args)
  if not r then return nil, err end
  return true
end

return M
