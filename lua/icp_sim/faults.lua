--- Fault injection (reference §9.4). A selector names a command path and
-- optional filters: `<path>[@<canister>][#<n>|#<n>+]`, several separated
-- by commas; path is stop, start, status, call, snapshot.create, ...,
-- or `*`. `#n` counts the invocations that match the selector, in sim.json,
-- so "the 2nd download of X" is reproducible under concurrency.
local engine = require "fleetsnap.engine"

local M = {}

local function parse_selector(text)
  local path, rest = text:match("^([%w%.%*_-]+)(.*)$")
  if not path then return nil end
  local sel = { text = text, path = path }
  local canister = rest:match("^@([%w%-]+)")
  if canister then
    sel.canister = canister
    rest = rest:sub(#canister + 2)
  end
  local n, plus = rest:match("^#(%d+)(%+?)$")
  if n then
    sel.nth, sel.and_later = tonumber(n), plus == "+"
  elseif rest ~= "" then
    return nil
  end
  return sel
end

local function matches(sel, path, canister)
  if sel.path ~= "*" and sel.path ~= path then return false end
  if sel.canister and sel.canister ~= canister then return false end
  return true
end

-- Counts the hit and says whether this invocation is selected.
local function selected(sel, path, canister, sim)
  if not matches(sel, path, canister) then return false end
  if not sel.nth then return true end
  sim.fault_counters = sim.fault_counters or engine.json.object({})
  local n = (sim.fault_counters[sel.text] or 0) + 1
  sim.fault_counters[sel.text] = n
  return n == sel.nth or (sel.and_later and n > sel.nth)
end

-- Splits "sel[,sel...]" where each item may carry a suffix after `sep`.
local function items(value, sep)
  local out = {}
  for item in (value or ""):gmatch("[^,]+") do
    local sel_text, arg = item, nil
    if sep then
      local i = item:find(sep, 1, true)
      if i then sel_text, arg = item:sub(1, i - 1), item:sub(i + 1) end
    end
    local sel = parse_selector(sel_text)
    if not sel then
      error({ sim_usage = "bad fault selector '" .. item .. "'" }, 0)
    end
    out[#out + 1] = { sel = sel, arg = arg }
  end
  return out
end

--- An environment variable, nil when unset or empty.
function M.env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end
local env = M.env

--- Evaluates every fault variable for one invocation of `path` on
-- `canister` (under the home lock: counters live in `sim`). Returns the
-- faults that apply, as a table, and a list of their names for the log.
function M.evaluate(path, canister, sim)
  local f, applied = {}, {}
  local function note(name, detail)
    applied[#applied + 1] = detail and (name .. ":" .. detail) or name
  end
  for _, it in ipairs(items(env("ICP_SIM_FAIL"), "=")) do
    if selected(it.sel, path, canister, sim) then
      f.fail = it.arg or "transport"
      note("fail", f.fail)
    end
  end
  -- The effect happens, then the command fails (a lost response).
  for _, it in ipairs(items(env("ICP_SIM_FAIL_AFTER"), "=")) do
    if selected(it.sel, path, canister, sim) then
      f.fail_after = it.arg or "transport"
      note("fail-after", f.fail_after)
    end
  end
  if env("ICP_SIM_UNREACHABLE") == "1" then
    f.fail = "transport"
    f.unreachable = true
    note("unreachable")
  end
  for _, it in ipairs(items(env("ICP_SIM_HANG"))) do
    if selected(it.sel, path, canister, sim) then
      f.hang = true
      note("hang")
    end
  end
  for _, it in ipairs(items(env("ICP_SIM_CRASH"), ":")) do
    if selected(it.sel, path, canister, sim) then
      local bytes, mode = (it.arg or "0"):match("^(%d+):?(.*)$")
      if not bytes then error({ sim_usage = "bad ICP_SIM_CRASH value" }, 0) end
      f.crash = { bytes = tonumber(bytes), mode = mode ~= "" and mode or "kill" }
      note("crash", bytes .. ":" .. f.crash.mode)
    end
  end
  for _, it in ipairs(items(env("ICP_SIM_CORRUPT"), ":")) do
    if selected(it.sel, path, canister, sim) then
      local file, offset = (it.arg or ""):match("^([^:]*):?(%d*)$")
      f.corrupt = { file = file ~= "" and file or nil, offset = tonumber(offset) }
      note("corrupt", it.arg)
    end
  end
  for _, it in ipairs(items(env("ICP_SIM_SILENT_SUCCESS"))) do
    if selected(it.sel, path, canister, sim) then
      f.silent = true
      note("silent-success")
    end
  end
  for _, it in ipairs(items(env("ICP_SIM_STOP_NOOP"))) do
    if selected(it.sel, path, canister, sim) then
      f.stop_noop = true
      note("stop-noop")
    end
  end
  for _, it in ipairs(items(env("ICP_SIM_NOT_CONTROLLER"))) do
    if selected(it.sel, path, canister, sim) then
      f.not_controller = true
      note("not-controller")
    end
  end
  for _, it in ipairs(items(env("ICP_SIM_DROP"), ":")) do
    if selected(it.sel, path, canister, sim) then
      f.drops = tonumber(it.arg or "1") or 1
      note("drop", tostring(f.drops))
    end
  end
  local forced = env("ICP_SIM_FORCE_STATUS")
  if forced then
    local state, who = forced:match("^(%a+)@?(.*)$")
    if who == "" or who == canister then
      f.force_status = state
      note("force-status", state)
    end
  end
  local missing = env("ICP_SIM_MISSING_CANISTER")
  if missing then
    for cid in missing:gmatch("[^,]+") do
      if cid == canister then
        f.missing_canister = true
        note("missing-canister")
      end
    end
  end
  f.snapshot_gone = {}
  for id in (env("ICP_SIM_SNAPSHOT_GONE") or ""):gmatch("[^,]+") do
    f.snapshot_gone[id:lower()] = true
  end
  f.limit = tonumber(env("ICP_SIM_SNAPSHOT_LIMIT") or "") or sim.snapshot_limit or 10
  f.latency_ms = tonumber(env("ICP_SIM_LATENCY_MS") or "") or 0
  f.bps = tonumber(env("ICP_SIM_BPS") or "")
  f.shared_bps = tonumber(env("ICP_SIM_SHARED_BPS") or "")
  f.noise = env("ICP_SIM_STDERR_NOISE") == "1"
  f.backtrace = env("ICP_SIM_BACKTRACE") == "1" or env("RUST_BACKTRACE") == "1"

  -- A fault plan: entries consumed in order, each by the first invocation
  -- that matches it.
  local plan_file = env("ICP_SIM_FAULT_PLAN")
  if plan_file then
    local text, rerr = engine.fs.read(plan_file)
    if not text then error({ sim_usage = "ICP_SIM_FAULT_PLAN: " .. tostring(rerr) }, 0) end
    local plan, jerr = engine.json.decode(text, { name = plan_file })
    if not plan then error({ sim_usage = "ICP_SIM_FAULT_PLAN: " .. tostring(jerr) }, 0) end
    sim.plan_pos = sim.plan_pos or 0
    local entry = plan[sim.plan_pos + 1]
    if entry then
      local m = entry.match or {}
      local sel = { path = m.path or "*", canister = m.canister, nth = m.nth, text = "plan#" .. (sim.plan_pos + 1) }
      if selected(sel, path, canister, sim) then
        sim.plan_pos = sim.plan_pos + 1
        for k, v in pairs(entry.fault or {}) do
          f[k] = v
        end
        note("plan", tostring(sim.plan_pos))
      end
    end
  end
  return f, applied
end

return M
