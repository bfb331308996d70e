--- The icp 1.5.0 driver: renders every icp command line fleetsnap runs,
-- runs it through engine.proc with a timeout per kind, parses the JSON
-- that icp prints on stdout, and classifies failures by exit code and the
-- replica's IC0xxx code (never by parsing prose for success).
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local principal = require "fleetsnap.principal"
local canister_settings = require "fleetsnap.canister_settings"
local hex_codec = require "fleetsnap.hex"

local json = engine.json

local M = {}
M.__index = M

local MiB = 1024 * 1024

-- Seconds; transfers get 120 s plus 1 s per MiB of the snapshot.
M.DEFAULT_TIMEOUTS = {
  status = 300, stop = 600, start = 300, snapshot_create = 300, snapshot_list = 300, snapshot_delete = 300,
  snapshot_restore = 300, call = 300, identity = 300, canister_create = 300, canister_delete = 600,
  settings_update = 300, transfer_base = 120, transfer_per_mib = 1,
}

-- Kinds that change the network: a failpoint pair surrounds each.
local EFFECTS = {
  stop = true, start = true, snapshot_create = true, snapshot_delete = true, snapshot_restore = true,
  snapshot_upload = true, call = true, canister_create = true, canister_delete = true, settings_update = true,
}

-- icp 1.5.0's flag of each nat setting (`canister settings update`).
local NAT_FLAGS = {
  { "compute_allocation", "--compute-allocation" }, { "memory_allocation", "--memory-allocation" },
  { "freezing_threshold", "--freezing-threshold" }, { "reserved_cycles_limit", "--reserved-cycles-limit" },
  { "wasm_memory_limit", "--wasm-memory-limit" }, { "wasm_memory_threshold", "--wasm-memory-threshold" },
  { "log_memory_limit", "--log-memory-limit" },
}

--- A driver. opts: `icp` (program path, default "icp") or `command` (an
-- argv prefix, e.g. {"scripts/icp-sim"}), `environment` or `network` +
-- `root_key`, `identity`, `identity_password_file`, `project_root`, `env`
-- (extra environment for icp), `timeouts` (overrides, seconds),
-- `network_scope` (what else tells this network apart from another of the
-- same name: a simulator's home).
function M.new(opts)
  opts = opts or {}
  assert(not (opts.environment and opts.network), "driver: environment and network are exclusive")
  local self = setmetatable({
    command = opts.command or { opts.icp or "icp" },
    display = opts.display,
    environment = opts.environment,
    network = opts.network,
    root_key = opts.root_key,
    identity = opts.identity,
    password_file = opts.identity_password_file,
    project_root = opts.project_root,
    env = { DO_NOT_TRACK = "1" },
    timeouts = {},
    network_scope = opts.network_scope,
  }, M)
  for k, v in pairs(M.DEFAULT_TIMEOUTS) do self.timeouts[k] = v end
  for k, v in pairs(opts.timeouts or {}) do self.timeouts[k] = v end
  for k, v in pairs(opts.env or {}) do self.env[k] = v end
  if not self.environment and not self.network then
    self.environment = "local"
  end
  return self
end

--- The network this driver talks to, as one string (the fleet lock's key
-- and the name in messages).
function M:network_key()
  local base = self.network and ("network " .. self.network) or ("environment " .. tostring(self.environment))
  if self.network_scope then base = base .. " (" .. self.network_scope .. ")" end
  return base
end

local function push(t, ...)
  for _, v in ipairs({ ... }) do t[#t + 1] = v end
  return t
end

-- The selection flags every canister command carries.
function M:target_flags(out)
  if self.network then
    push(out, "-n", self.network)
    if self.root_key then push(out, "-k", self.root_key) end
  else
    push(out, "-e", self.environment)
  end
  return self:identity_flags(out)
end

function M:identity_flags(out)
  if self.identity then push(out, "--identity", self.identity) end
  if self.password_file then push(out, "--identity-password-file", self.password_file) end
  if self.project_root then push(out, "--project-root-override", self.project_root) end
  return out
end

--- The icp arguments (without the program) of one command. p: canister,
-- snapshot_id, dir, replace, resume, method, args, query.
function M:args(kind, p)
  p = p or {}
  local c = p.canister
  local a
  if kind == "status" then
    a = { "canister", "status", c, "--json" }
  elseif kind == "stop" or kind == "start" then
    a = { "canister", kind, c }
  elseif kind == "snapshot_create" then
    a = { "canister", "snapshot", "create", c, "--json" }
    if p.replace then push(a, "--replace", p.replace) end
  elseif kind == "snapshot_list" then
    a = { "canister", "snapshot", "list", c, "--json" }
  elseif kind == "snapshot_delete" or kind == "snapshot_restore" then
    a = { "canister", "snapshot", kind == "snapshot_delete" and "delete" or "restore", c, p.snapshot_id }
  elseif kind == "snapshot_download" then
    a = { "canister", "snapshot", "download", c, p.snapshot_id, "--output", p.dir }
    if p.resume then push(a, "--resume") end
  elseif kind == "snapshot_upload" then
    a = { "canister", "snapshot", "upload", c, "--input", p.dir, "--json" }
    if p.replace then push(a, "--replace", p.replace) end
    if p.resume then push(a, "--resume") end
  elseif kind == "call" then
    a = { "canister", "call", c, p.method, p.args or "()", "--json" }
    if p.query then push(a, "--query") end
  elseif kind == "canister_create" then
    -- A detached canister (outside any project), its id alone on stdout.
    -- p.cycles: the funding, icp's default (2T) when absent.
    a = { "canister", "create", "--detached", "-q" }
    if p.cycles then push(a, "--cycles", tostring(math.tointeger(p.cycles))) end
  elseif kind == "canister_delete" then
    a = { "canister", "delete", c }
    if p.burn_cycles then push(a, "--no-recover-cycles") end
  elseif kind == "settings_update" then
    -- p.change: {nats = {field = decimal}, visibility = {log|snapshot|status
    -- = {type, viewers}}, add_controllers, remove_controllers, add_env =
    -- {"K=V"}, remove_env = {K}}. Bare numbers are bytes, seconds and
    -- cycles to icp. --force: icp would otherwise prompt, and there is no
    -- terminal.
    local ch = p.change or {}
    a = { "canister", "settings", "update", c, "--force" }
    for _, f in ipairs(NAT_FLAGS) do
      if ch.nats and ch.nats[f[1]] then push(a, f[2], ch.nats[f[1]]) end
    end
    for _, name in ipairs({ "log", "snapshot", "status" }) do
      local vis = ch.visibility and ch.visibility[name]
      if vis and vis.type == "allowed_viewers" then
        for _, viewer in ipairs(vis.viewers or {}) do push(a, "--set-" .. name .. "-viewer", viewer) end
      elseif vis then
        push(a, "--" .. name .. "-visibility", vis.type)
      end
    end
    for _, x in ipairs(ch.remove_controllers or {}) do push(a, "--remove-controller", x) end
    for _, x in ipairs(ch.add_controllers or {}) do push(a, "--add-controller", x) end
    for _, x in ipairs(ch.remove_env or {}) do push(a, "--remove-environment-variable", x) end
    for _, x in ipairs(ch.add_env or {}) do push(a, "--add-environment-variable", x) end
  elseif kind == "identity" then
    return self:identity_flags({ "identity", "principal" })
  else
    error("driver: unknown command kind '" .. tostring(kind) .. "'")
  end
  return self:target_flags(a)
end

--- The full argv (program included).
function M:argv(kind, p)
  local argv = {}
  for _, x in ipairs(self.command) do argv[#argv + 1] = x end
  for _, x in ipairs(self:args(kind, p)) do argv[#argv + 1] = x end
  return argv
end

--- An argv as a shell would take it: words quoted only when they need it.
function M.shell_line(argv)
  local parts = {}
  for i, a in ipairs(argv) do
    parts[i] = a:match("^[%w%-%._/:=@]+$") and a or ("'" .. a:gsub("'", "'\\''") .. "'")
  end
  return table.concat(parts, " ")
end

--- The command line as a shell would take it (for --dry-run and messages).
function M:render(kind, p)
  local argv = {}
  for _, x in ipairs(self.display or self.command) do argv[#argv + 1] = x end
  for _, x in ipairs(self:args(kind, p)) do argv[#argv + 1] = x end
  return M.shell_line(argv)
end

function M:timeout_ms(kind, p)
  if kind == "snapshot_download" or kind == "snapshot_upload" then
    local mib = math.ceil(((p and p.size_bytes) or 0) / MiB)
    return (self.timeouts.transfer_base + self.timeouts.transfer_per_mib * mib) * 1000
  end
  return (self.timeouts[kind] or 300) * 1000
end

--- A failpoint around an effect: the engine's (SIGKILL at the n-th hit,
-- for crash tests) and, in failpoint builds, FLEETSNAP_FAULT_RAISE=<point>@<key>,
-- which raises a plain Lua error there: how the specs prove that an
-- internal error (a bug) still leaves the fleet as found.
local function failpoint(point, key)
  engine.failpoint(point, key)
  if engine.failpoints_enabled and os.getenv("FLEETSNAP_FAULT_RAISE") == point .. "@" .. key then
    error("injected internal error at " .. point .. "@" .. key)
  end
end

--- Starts a command; returns a handle for engine.proc.wait_any, or nil and
-- an error. opts.inherit: locks the command's process tree holds.
function M:spawn(kind, p, opts)
  opts = opts or {}
  if EFFECTS[kind] then
    failpoint("before-effect", kind .. "-" .. tostring(p and p.canister))
  end
  local h, msg, code = engine.proc.spawn({
    argv = self:argv(kind, p),
    env = self.env,
    unset_env = { "RUST_BACKTRACE" },
    inherit = opts.inherit,
    timeout_ms = opts.timeout_ms or self:timeout_ms(kind, p),
    kill_grace_ms = 5000,
    capture_limit = 4 * MiB,
  })
  if not h then
    return nil, { code = "ICP_MISSING", message = string.format("cannot run icp (%s): %s", self.command[1], msg),
      errno = code }
  end
  return h
end

-- {=== classification ===}

local function first_line(s)
  return (s or ""):match("^%s*([^\n]*)") or ""
end

-- The OS errors (icp prints Rust's "<strerror> (os error N)") that mean
-- the local file system failed under icp, not the canister or the network:
-- EIO, ENOSPC, EROFS, EDQUOT. A download into a full disk is the disk's
-- failure (exit 8, the same command again once there is room).
local LOCAL_IO_ERRNO = { [5] = true, [28] = true, [30] = true, [122] = true }

--- Error of a finished command that did not succeed.
function M.classify(kind, p, r)
  local what = string.format("%s of %s", kind:gsub("_", " "), tostring(p and p.canister))
  local stderr = r.stderr or ""
  local err = { kind = kind, canister = p and p.canister, status = r.status, signal = r.signal,
    stderr_tail = stderr:sub(-2000) }
  if r.timed_out then
    err.code, err.message = "TIMEOUT", string.format("%s: icp did not finish within %d s and was killed", what,
      r.timeout_s or 0)
    return err
  end
  if r.signal then
    err.code, err.message = "ICP_CRASHED", string.format("%s: icp was killed by signal %d", what, r.signal)
    return err
  end
  local ic = stderr:match('error code Some%("(IC%d%d%d%d)"%)')
  err.ic = ic
  if r.status == 2 then
    err.code = "ICP_USAGE"
  elseif ic == "IC0406" and stderr:find("maximum number of snapshots", 1, true) then
    err.code = "LIMIT"
  elseif ic == "IC0406" and stderr:find("not currently loadable", 1, true) then
    err.code = "NOT_LOADABLE"
  elseif ic == "IC0305" then
    err.code = "SNAPSHOT_GONE"
  elseif ic == "IC0301" or stderr:find("^Error: Canister %S+ was not found%.") then
    err.code = "CANISTER_GONE"
  elseif ic == "IC0512" then
    err.code = "NOT_CONTROLLER"
  elseif stderr:find("is currently running. Please stop", 1, true) or stderr:find("is still stopping", 1, true) then
    err.code = "NOT_STOPPED"
  elseif stderr:find("error sending request", 1, true) or stderr:find("HTTP Error", 1, true) then
    err.code = "NETWORK"
  elseif LOCAL_IO_ERRNO[tonumber(stderr:match("%(os error (%d+)%)") or "")] then
    err.code = "LOCAL_IO"
  elseif ic then
    err.code = "REJECTED"
  else
    err.code = "ICP_FAILED"
  end
  local line = first_line(stderr:match("Error: [^\n]*") or stderr)
  local causes = M.causes(stderr)
  if #causes > 0 then line = line .. " (caused by: " .. table.concat(causes, "; ") .. ")" end
  err.message = string.format("%s: icp exited %d: %s", what, r.status or -1, line)
  err.causes = causes
  return err
end

--- The causes icp prints after its top message, without the numbering: the
-- top line alone often hides the reason ("Failed to upload snapshot
-- metadata" over "has reached the maximum number of snapshots allowed").
-- icp (anyhow) prints one cause unnumbered, several as `0: ...`, `1: ...`;
-- a cause of several lines continues on more deeply indented lines (the
-- replica's reject texts: IC0512's controllers and sender, IC0305's advice),
-- which are joined into that cause with spaces. A cause that only repeats
-- the end of the one before it (icp prints the agent's error and then its
-- source, "direct update call failed: X" then "X") is dropped.
function M.causes(stderr)
  local out = {}
  local block = (stderr or ""):match("\nCaused by:\n(.*)$")
  if not block then return out end
  local numbered = block:match("^%s+%d+:") ~= nil
  for line in block:gmatch("[^\n]+") do
    local head = line:match("^%s+%d+:%s*(.-)%s*$")
    local text = line:match("^%s+(.-)%s*$")
    if not text or text == "" then break end
    if numbered and head then
      out[#out + 1] = head
    elseif #out > 0 then
      out[#out] = out[#out] .. " " .. text
    else
      out[1] = text
    end
  end
  local kept = {}
  for _, c in ipairs(out) do
    local prev = kept[#kept]
    if not (prev and #c < #prev and prev:sub(-#c) == c) then kept[#kept + 1] = c end
  end
  return kept
end

-- {=== icp's download layout ===}

--- Files icp itself writes into a download or upload directory: its lock
-- and its progress files. They are not part of a snapshot's bytes.
M.ICP_FILES = { [".lock"] = true, [".upload_progress.json"] = true, [".download_progress.json"] = true }

--- The blobs of a downloaded snapshot directory besides the chunk store.
M.BLOBS = { "wasm_module", "wasm_memory", "stable_memory" }

--- Whether icp's progress file says an upload from `dir` is incomplete
-- (icp removes it only once every byte is in).
function M.upload_in_progress(dir)
  return engine.fs.lstat(dir .. "/.upload_progress.json") ~= nil
end

--- Removes icp's own files from a finished download directory.
function M.clean_download(dir)
  for f in pairs(M.ICP_FILES) do os.remove(dir .. "/" .. f) end
end

--- Checks a downloaded directory's shape against its metadata.json, from
-- stat alone: blob sizes, and a chunk file for each chunk listed. Returns
-- nil, metadata, chunk names; or an error. The bytes are judged by
-- check_digests, from the one hash pass over the tree.
function M.check_download(dir, canister)
  local fs = engine.fs
  local text = fs.read(dir .. "/metadata.json")
  if not text then return { code = "EVERIFY", message = "download of " .. canister .. ": no metadata.json" } end
  local meta = json.decode(text)
  if type(meta) ~= "table" then
    return { code = "EVERIFY", message = "download of " .. canister .. ": metadata.json is not JSON" }
  end
  for _, b in ipairs(M.BLOBS) do
    local want = meta[b .. "_size"] or 0
    local st = fs.lstat(dir .. "/" .. b .. ".bin")
    local have = st and st.size or 0
    if math.type(want) ~= "integer" or have ~= want then
      return { code = "EVERIFY", message = string.format("download of %s: %s.bin has %d bytes, metadata says %s",
        canister, b, have, tostring(want)) }
    end
  end
  local chunks = meta.wasm_chunk_store or {}
  if type(chunks) ~= "table" then
    return { code = "EVERIFY", message = "download of " .. canister
      .. ": metadata.json: wasm_chunk_store is not a list" }
  end
  local names = {}
  for _, c in ipairs(chunks) do
    local ok, name = pcall(hex_codec.encode_list, type(c) == "table" and c.hash or nil)
    local st = ok and fs.lstat(dir .. "/wasm_chunk_store/" .. name .. ".bin")
    if not (st and st.type == "file") then
      return { code = "EVERIFY", message = string.format("download of %s: chunk %s is missing or corrupt", canister,
        ok and name or "?") }
    end
    names[#names + 1] = name
  end
  return nil, meta, names
end

--- Checks the digests of a downloaded tree (engine.hash.tree's result):
-- every chunk file hashes to its name, and wasm_module.bin to the
-- canister's module hash when one is known. Returns nil or an error.
function M.check_digests(tree, meta, chunk_names, canister, module_hash)
  local by = {}
  for _, f in ipairs(tree.files) do by[f.path] = f.sha256 end
  for _, name in ipairs(chunk_names) do
    if by["wasm_chunk_store/" .. name .. ".bin"] ~= name then
      return { code = "EVERIFY", message = string.format("download of %s: chunk %s is missing or corrupt", canister,
        name) }
    end
  end
  if module_hash and (meta.wasm_module_size or 0) > 0 and by["wasm_module.bin"] ~= module_hash then
    return { code = "EVERIFY", message = string.format("download of %s: wasm_module.bin hashes to %s, the "
      .. "canister's module hash is %s", canister, tostring(by["wasm_module.bin"]), module_hash) }
  end
end

local function bad_output(kind, p, why, stdout)
  return { code = "ICP_OUTPUT", kind = kind, canister = p and p.canister,
    message = string.format("%s of %s: unexpected icp output (%s): %s", kind:gsub("_", " "), tostring(p and p.canister),
      why, (stdout or ""):sub(1, 200)) }
end

local STATUS = { Running = "running", Stopped = "stopped", Stopping = "stopping" }

local function nat(s)
  if type(s) == "number" then return math.tointeger(s) end
  if type(s) ~= "string" then return nil end
  return math.tointeger(tonumber((s:gsub("_", ""))))
end

--- Parses the stdout of a successful command into its value.
function M.parse(kind, p, stdout)
  if kind == "status" then
    local doc, err = json.decode((stdout:gsub("\n$", "")))
    if type(doc) ~= "table" then return nil, bad_output(kind, p, err or "not an object", stdout) end
    if doc.id ~= p.canister then return nil, bad_output(kind, p, "id " .. tostring(doc.id), stdout) end
    local status = STATUS[doc.status]
    local controllers = (doc.settings and doc.settings.controllers) or doc.controllers
    if not status and doc.status ~= nil then
      return nil, bad_output(kind, p, "status " .. tostring(doc.status), stdout)
    end
    local mh = doc.module_hash
    -- The public view has no settings; a full one must parse.
    local settings, bad
    if doc.settings ~= nil then
      settings, bad = canister_settings.from_status(doc.settings, doc.cycles)
      if not settings then return nil, bad_output(kind, p, "settings." .. bad, stdout) end
    end
    return { status = status, public_only = doc.status == nil,
      module_hash = type(mh) == "string" and mh:gsub("^0x", ""):lower() or nil,
      memory_size = nat(doc.memory_size), controllers = controllers or {}, settings = settings }
  elseif kind == "snapshot_create" or kind == "snapshot_upload" then
    local doc, err = json.decode(stdout)
    if type(doc) ~= "table" or type(doc.snapshot_id) ~= "string" or not doc.snapshot_id:match("^%x+$") then
      return nil, bad_output(kind, p, err or "no snapshot_id", stdout)
    end
    return { snapshot_id = doc.snapshot_id:lower(), taken_at = doc.taken_at_timestamp,
      total_size = doc.total_size_bytes }
  elseif kind == "snapshot_list" then
    local doc, err = json.decode(stdout)
    if type(doc) ~= "table" or type(doc.snapshots) ~= "table" then
      return nil, bad_output(kind, p, err or "no snapshots", stdout)
    end
    local list = {}
    for i, s in ipairs(doc.snapshots) do
      if type(s.snapshot_id) ~= "string" then return nil, bad_output(kind, p, "snapshot without id", stdout) end
      list[i] = { snapshot_id = s.snapshot_id:lower(), taken_at = s.taken_at_timestamp,
        total_size = s.total_size_bytes }
    end
    return list
  elseif kind == "call" then
    local doc, err = json.decode(stdout)
    local hex = type(doc) == "table" and doc.response_bytes
    if type(hex) ~= "string" or #hex % 2 == 1 or not hex:match("^%x*$") then
      return nil, bad_output(kind, p, err or "no response_bytes", stdout)
    end
    return hex_codec.decode(hex)
  elseif kind == "canister_create" then
    local text = stdout:match("^%s*(%S+)%s*$")
    if not text or not principal.is_valid(text) then
      return nil, bad_output(kind, p, "not a canister id", stdout)
    end
    return text
  elseif kind == "identity" then
    local text = stdout:match("^%s*(%S+)%s*$")
    if not text or not principal.is_valid(text) then return nil, bad_output(kind, p, "not a principal", stdout) end
    return principal.parse(text)
  end
  return true
end

--- Turns a finished handle's result into value, or nil and an error.
function M:finish(kind, p, r)
  if EFFECTS[kind] then
    failpoint("after-effect", kind .. "-" .. tostring(p and p.canister))
  end
  if r.timed_out or r.signal or r.status ~= 0 then
    r.timeout_s = self:timeout_ms(kind, p) // 1000
    return nil, M.classify(kind, p, r)
  end
  return M.parse(kind, p, r.stdout)
end

--- Runs many read-only commands at once (at most `limit` in flight).
-- jobs: array of {kind, params}; returns an array of {value, err}.
function M:run_many(jobs, limit)
  limit = limit or 16
  local results, running, next_job = {}, {}, 1
  local function start()
    while next_job <= #jobs and #running < limit do
      local job = jobs[next_job]
      local h, err = self:spawn(job[1], job[2])
      if h then
        running[#running + 1] = { h = h, i = next_job }
      else
        results[next_job] = { nil, err }
      end
      next_job = next_job + 1
    end
  end
  start()
  while #running > 0 do
    local handles = {}
    for i, r in ipairs(running) do handles[i] = r.h end
    local done = engine.proc.wait_any(handles)
    if not done then
      -- A signal the engine caught (SIGINT, SIGTERM, SIGHUP): read-only
      -- rounds stop at once, their commands killed.
      for _, r in ipairs(running) do r.h:close() end
      local sig = engine.signals and engine.signals.pending() or "a signal"
      error(errors.new("EINTERRUPTED", "interrupted by " .. sig, { signal = sig }), 0)
    end
    for i, r in ipairs(running) do
      if r.h == done then
        table.remove(running, i)
        local res = done:result()
        done:close()
        local job = jobs[r.i]
        local value, err = self:finish(job[1], job[2], res)
        results[r.i] = { value, err }
        break
      end
    end
    start()
  end
  return results
end

--- Runs one command to completion: value, or nil and an error table
-- ({code, message, ic, stderr_tail, ...}), plus the raw result.
function M:run(kind, p, opts)
  local h, err = self:spawn(kind, p, opts)
  if not h then return nil, err end
  local r = h:result()
  h:close()
  local value, ferr = self:finish(kind, p, r)
  return value, ferr, r
end

return M
