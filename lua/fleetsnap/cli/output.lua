--- What the CLI prints: a command's document (JSON with --json, text
-- otherwise), NDJSON events or the progress line while a run goes on, and
-- failures. Every failure is an error object of fleetsnap.errors by the
-- time it is printed here, and this is the one place that turns its next
-- steps (data: a command, a backup, options) into command lines, flags
-- included.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local driver_mod = require "fleetsnap.drivers.icp"
local redact = require("fleetsnap.store.restic").redact
local progress = require "fleetsnap.cli.progress"
local units = require "fleetsnap.units"

local json = engine.json

local M = {}
M.__index = M

-- Looked up at each write (not captured at load) so that an in-process
-- caller, a spec, can redirect io.stdout and io.stderr.
local function stdout(s)
  io.stdout:write(s)
end

local function stderr(s)
  io.stderr:write(s)
end

--- A printer for one run. opts: json, debug (print tracebacks), flags (the
-- connection flags of the run, for next steps), argv (the command line as
-- given, without the program name: a failure that the same command may
-- get past names it again), command (its command words, {"backup",
-- "create"}: whose --help a usage error points to), tty (progress line; by
-- default when stderr is a terminal and not --json or quiet), quiet (-q:
-- failures only), verbose (-v: each icp command as it starts).
function M.new(opts)
  local self = setmetatable({ json = opts.json or false, debug = opts.debug or false, flags = opts.flags or {},
    argv = opts.argv, command = opts.command or {}, progress_shown = false, quiet = opts.quiet or false,
    verbose = opts.verbose or false }, M)
  if opts.tty == nil then
    self.tty = not self.json and not self.quiet and engine.isatty(2)
  else
    self.tty = opts.tty
  end
  return self
end

--- One document: JSON on one line with --json, `text` otherwise (nothing
-- under -q: errors only).
function M:doc(doc, text)
  self:clear_progress()
  if self.json then
    stdout(json.encode(doc) .. "\n")
  elseif not self.quiet then
    stdout(text)
  end
end

-- Erases the progress line, so that what follows (a summary, an error)
-- does not start in the middle of it.
function M:clear_progress()
  if self.progress_shown then
    stderr("\r\27[K")
    self.progress_shown = false
  end
end

--- The progress line of tracker t at now_ns.
function M.progress_line(t, now_ns)
  local f = t:fields(now_ns)
  local parts = { "[" .. units.clock(f.elapsed_ns) .. "]",
    string.format("%d%s ops", f.done, f.total > 0 and ("/" .. f.total) or "") }
  if f.bytes_total > 0 or f.bytes_done > 0 then
    parts[#parts + 1] = units.bytes(f.bytes_done) .. (f.bytes_total > 0 and (" / " .. units.bytes(f.bytes_total)) or "")
  end
  if f.rate_bps > 0 then parts[#parts + 1] = units.rate(f.rate_bps) end
  if f.eta_ns then parts[#parts + 1] = "ETA " .. units.clock(f.eta_ns) end
  parts[#parts + 1] = f.stopped .. " stopped"
  return table.concat(parts, "  ")
end

--- The text of a restore's settings check ({note?, differences}): a note,
-- then one warning line per difference; "" when there is neither.
function M.settings_text(check)
  if not check then return "" end
  local lines = {}
  if check.note then lines[#lines + 1] = "note: " .. check.note end
  for _, d in ipairs(check.differences or {}) do
    lines[#lines + 1] = string.format("warning: %s: setting %s differs from the backup (backup %s, target %s)",
      d.target_canister, d.field, d.backup, d.target)
  end
  return #lines > 0 and (table.concat(lines, "\n") .. "\n") or ""
end

--- The event sink of a long run: NDJSON with --json (with `progress`
-- events at most 10 a second); on a terminal one progress line rewritten
-- in place at most 10 times a second; otherwise nothing until the
-- summary. -v prints each icp command as it starts; -q nothing but
-- failures. The run's tracker is kept (self.tracker) for the summary.
function M:events()
  local t = progress.new(engine.monotonic_ns())
  self.tracker = t
  return function(e)
    e.at = e.at or engine.realtime_ns()
    -- The tracker measures on the monotonic clock: a wall-clock step must
    -- not make a rate or an ETA.
    local now = engine.monotonic_ns()
    local moved = t:take({ type = e.type, at = now, operations = e.operations, barriers = e.barriers,
      bytes = e.bytes, kind = e.kind, canister = e.canister, snapshot_bytes = e.snapshot_bytes,
      deleted = e.deleted, started = e.started })
    if self.json then
      -- Only the stream carries the text time: formatting it for every
      -- event of a run that prints none would be work on the hot path.
      e.time = units.rfc3339(e.at)
      -- One naming scheme across documents: a canister is canister_id.
      if e.canister ~= nil then e.canister_id, e.canister = e.canister, nil end
      stdout(json.encode(e) .. "\n")
      if moved and t:due(now) then
        local f = t:fields(now)
        if f.eta_ns == nil then f.eta_ns = json.null end
        stdout(json.encode(f) .. "\n")
      end
      io.stdout:flush()
      return
    end
    if self.quiet then return end
    if e.type == "command" and self.verbose then
      self:clear_progress()
      stderr("$ " .. e.command .. "\n")
    elseif e.type == "operation-failed" then
      self:clear_progress()
      stderr(string.format("%s failed: %s\n", e.op, e.message or e.code))
    elseif e.type == "contained" then
      self:clear_progress()
      stderr(string.format("started %d stopped canister(s) again\n", #e.started))
    elseif e.type == "settings-check" then
      self:clear_progress()
      stderr(M.settings_text(e))
    end
    if self.tty and moved and t:due(now) then
      stderr("\r\27[K" .. M.progress_line(t, now))
      self.progress_shown = true
    end
  end
end

-- {=== next steps ===}

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

--- A next step as a full command line: `fleetsnap <flags> <command>
-- <ref> <options>`. step: {command = "restore run" (or {"restore",
-- "run"}), ref = backup directory, options = {retry_failed = true, state =
-- DIR, ...}}; option keys become flags (underscores to dashes), true a
-- bare flag, false or null nothing, a list comma-separated values.
function M.command_line(step, flags)
  local argv = { "fleetsnap" }
  local function add(v) argv[#argv + 1] = tostring(v) end
  for _, f in ipairs(flags or {}) do add(f) end
  if type(step.command) == "table" then
    for _, w in ipairs(step.command) do add(w) end
  else
    for w in tostring(step.command):gmatch("%S+") do add(w) end
  end
  if step.ref ~= nil then add(step.ref) end
  local options = type(step.options) == "table" and step.options or {}
  for _, k in ipairs(sorted_keys(options)) do
    local v = options[k]
    local flag = "--" .. tostring(k):gsub("_", "-")
    if v == true then
      add(flag)
    elseif v ~= false and v ~= nil and v ~= json.null then
      add(flag)
      if type(v) == "table" then
        local parts = {}
        for i, x in ipairs(v) do parts[i] = tostring(x) end
        add(table.concat(parts, ","))
      else
        add(v)
      end
    end
  end
  return driver_mod.shell_line(argv)
end

--- The next steps of an error object, rendered: e.next first, then
-- e.next_steps.
function M.next_lines(e, flags)
  local steps = {}
  if type(e.next) == "table" then steps[#steps + 1] = e.next end
  if type(e.next_steps) == "table" then
    for _, s in ipairs(e.next_steps) do steps[#steps + 1] = s end
  end
  local lines = {}
  for i, s in ipairs(steps) do lines[i] = M.command_line(s, flags) end
  return lines
end

-- {=== failures ===}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

--- Any caught value as an error object, by errors.wrap (an unmapped
-- value is EINTERNAL, exit 70; Lua's own interrupt is EINTERRUPTED). A
-- domain table not made by errors.new whose code is the engine's or the
-- driver's is mapped by the registry's tables first: it is a known
-- failure, not a bug.
function M.to_error(v, traceback)
  if type(v) == "table" and v.fleetsnap and not errors.is(v) and type(v.code) == "string"
    and not (errors.REGISTRY[v.code] or errors.ALIASES[v.code]) then
    return errors.from_driver(v, copy(v))
  end
  return errors.wrap(v, traceback)
end

local function unredacted_next_step(self, e)
  local lines = M.next_lines(e, self.flags)
  if #lines > 0 then return lines[1], table.move(lines, 2, #lines, 1, {}) end
  local row = errors.REGISTRY[e.code] or {}
  local argv = self.argv
  if argv and e.code == "EINTERNAL" and not self.debug then
    return driver_mod.shell_line({ "fleetsnap", "--debug", table.unpack(argv) }), {}
  end
  if argv and row.again then
    return driver_mod.shell_line({ "fleetsnap", table.unpack(argv) }), {}
  end
  local help = { "fleetsnap" }
  for _, w in ipairs(self.command) do help[#help + 1] = w end
  help[#help + 1] = "--help"
  return driver_mod.shell_line(help), {}
end

--- The one way on from a failure, as a command line, and the other
-- possible steps (alternatives the error names beside its first). The rule,
-- in this order: the error's own step (e.next, then e.next_steps), with the
-- connection flags of the run; an internal error: the same command with
-- --debug (what a bug report needs); a code the registry marks `again` (a
-- lock, the network, the disk, an interrupt): the same command; anything
-- else, usage errors first of all: the help of the command given.
function M:next_step(e)
  -- A repository URL's password on the command line is never printed.
  local line, others = unredacted_next_step(self, e)
  for i, o in ipairs(others) do others[i] = redact(o) end
  return redact(line), others
end

--- Prints error object `e` (stderr; with --json also one error document on
-- stdout) and returns its exit status. `traceback` is printed with --debug.
-- The text always ends with one line `next: <command>` (M:next_step).
function M:fail(e, traceback)
  self:clear_progress()
  local rc = errors.exit_code(e)
  local next_line, others = self:next_step(e)
  if self.json then
    local doc = { type = "error", code = e.code, message = tostring(e.message), exit = rc, next = next_line,
      alternatives = #others > 0 and json.array(others) or nil, cause = e.cause, failures = e.failures }
    -- The error path must not fail in turn: a failure list that cannot be
    -- encoded is left out rather than lose the error document.
    local ok, text = pcall(json.encode, doc)
    if not ok then
      doc.failures = nil
      text = json.encode(doc)
    end
    stdout(text .. "\n")
  end
  local text = { "fleetsnap: " .. tostring(e.message) }
  local tb = e.traceback or traceback
  if self.debug and tb then
    text[#text + 1] = tb
  elseif e.code == "EINTERNAL" then
    text[#text + 1] = "fleetsnap: this is a bug; run it again with --debug to see where"
  end
  for _, l in ipairs(others) do text[#text + 1] = "alternative: " .. l end
  text[#text + 1] = "next: " .. next_line
  stderr(table.concat(text, "\n") .. "\n")
  return rc
end

return M
