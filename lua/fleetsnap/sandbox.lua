--- The sandbox policies run in: allow-listed globals, text chunks only, and
-- an instruction budget that the code inside cannot escape.
--
-- Each call runs on a coroutine of its own carrying a count hook. Hooks
-- belong to one coroutine, so the hook never fires in fleetsnap's code
-- around the call and a hook the caller set (a coverage tool's) is left
-- alone; the sandbox has no coroutine library, so the code inside cannot
-- start a thread the hook does not watch. Once the budget is spent the call
-- is over for good:
-- - the hook re-arms itself to fire at every instruction, so whatever code
--   of the call runs next (after a pcall that caught the error, say) raises
--   the budget error again at once;
-- - the sandbox's pcall and xpcall raise it again instead of returning it;
-- - xpcall's message handler is not called for it: Lua runs the handler of
--   an error raised by a hook with hooks off, where a loop would never end;
-- - the call is reported as over the budget even when it returned
--   normally: a C function that caught the error and returned straight to
--   the coroutine's base ran no instruction the hook could stop.
local M = {}

-- The budget error: a unique object, so no error of the code inside passes
-- for it.
local SPENT = setmetatable({}, { __tostring = function() return "instruction budget exceeded" end })

-- Coroutines whose budget is spent (weak: a finished call leaves nothing).
local spent = setmetatable({}, { __mode = "k" })

local function over()
  return spent[coroutine.running()] == true
end

local function reraise(ok, ...)
  if not ok and over() then error(SPENT, 0) end
  return ok, ...
end

local function sandbox_pcall(f, ...)
  return reraise(pcall(f, ...))
end

local function sandbox_xpcall(f, handler, ...)
  if type(handler) ~= "function" then error("bad argument #2 to 'xpcall' (function expected)", 2) end
  return reraise(xpcall(f, function(e)
    if over() then return e end
    return handler(e)
  end, ...))
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

--- A fresh global table for sandboxed code.
function M.env()
  return {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = sandbox_pcall,
    xpcall = sandbox_xpcall, select = select, tonumber = tonumber, tostring = tostring, type = type,
    string = copy(string), table = copy(table), math = copy(math), utf8 = copy(utf8),
  }
end

--- Compiles `text` (a text chunk; a binary one is refused) named `name`
-- over a fresh sandbox environment, plus `globals` (name -> value) when
-- given. Returns the chunk or nil, message.
function M.load(text, name, globals)
  if text:sub(1, 1) == "\27" then return nil, name .. ": binary chunks are refused" end
  local env = M.env()
  for k, v in pairs(globals or {}) do env[k] = v end
  return load(text, "=" .. name, "t", env)
end

-- The hook counts the budget in ticks of this many instructions: a hook
-- that fired once at the end could not be paused and resumed (setting a
-- hook restarts its count), and metered() must pause it.
local TICK = 256

-- The budget state of each call's coroutine: {used, budget, hook, depth}.
local meters = setmetatable({}, { __mode = "k" })

-- Marks co's budget spent and arms the hook to fire at every instruction.
local function exhaust(co, m)
  spent[co] = true
  debug.sethook(co, m.hook, "", 1)
  error(SPENT, 0)
end

--- Calls f(...) under an instruction budget. Returns true and f's results,
-- or false and the error; when the budget ran out, whatever the code inside
-- did about it, false, "instruction budget of N exceeded", "EBUDGET".
function M.call(budget, f, ...)
  local co = coroutine.create(f)
  local m = { used = 0, budget = budget, depth = 0 }
  function m.hook()
    if spent[co] then error(SPENT, 0) end
    m.used = m.used + TICK
    if m.used > budget then exhaust(co, m) end
  end
  meters[co] = m
  debug.sethook(co, m.hook, "", TICK)
  local res = table.pack(coroutine.resume(co, ...))
  if spent[co] then return false, "instruction budget of " .. budget .. " exceeded", "EBUDGET" end
  return table.unpack(res, 1, res.n)
end

--- Wraps f (fleetsnap's own code handed to sandboxed code, such as the
-- plan builder's methods) so that it runs outside the instruction budget:
-- what the code inside pays for is its own work, not how fleetsnap's
-- interpreter spends it. Each outermost call is still charged, so a loop
-- of calls cannot run for ever: one tick (what resuming the hook forgets
-- of its count) plus cost(...) units, the size of the work f is about to
-- do (one per element it copies). f must not call back into sandboxed
-- code. Outside a budgeted call the wrapper just calls f.
function M.metered(f, cost)
  return function(...)
    local co = coroutine.running()
    local m = meters[co]
    if not m or m.depth > 0 then return f(...) end
    if spent[co] then error(SPENT, 0) end
    m.used = m.used + TICK + (cost and cost(...) or 0)
    if m.used > m.budget then exhaust(co, m) end
    m.depth = 1
    debug.sethook(co)
    local res = table.pack(pcall(f, ...))
    m.depth = 0
    debug.sethook(co, m.hook, "", TICK)
    if not res[1] then error(res[2], 0) end
    return table.unpack(res, 2, res.n)
  end
end

return M
