--- What a policy's discover(ctx) may ask of the fleet: ctx.query runs a
-- Candid query through the driver (the operator's identity and network,
-- never an update call: discovery runs while planning and under --dry-run)
-- and records it, so that the drift check can ask again right before the
-- first stop and refuse when a reply changed.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local candid = require "fleetsnap.candid"
local directory = require "fleetsnap.directory"
local principal = require "fleetsnap.principal"
local sandbox = require "fleetsnap.sandbox"

local M = {}

M.MAX_QUERIES = 10000 -- per discovery: a script that pages for ever ends

-- The name a query goes by in messages.
local function label(q)
  return string.format("discovery query %s on %s", q.method, q.canister)
end

--- Runs one recorded-style query {canister, method, args}: the reply bytes,
-- or nil and an error object (the driver's code mapped through the
-- registry, the message naming the canister and method).
function M.ask(driver, q)
  local bytes, err = driver:run("call", { canister = q.canister, method = q.method, args = q.args, query = true })
  if not bytes then return nil, errors.from_driver({ code = err.code, ic = err.ic,
    message = label(q) .. ": " .. tostring(err.message) }) end
  return bytes
end

-- Checks and normalises ctx.query's arguments; nil and why when bad.
local function request(canister, method, args, names)
  local cid = type(canister) == "string" and principal.parse(canister, "canister")
  if not cid then return nil, "ctx.query: the canister must be a principal's text" end
  if type(method) ~= "string" or not method:match("^[%w_]+$") then
    return nil, "ctx.query: the method must be a name of letters, digits and _"
  end
  if args ~= nil and type(args) ~= "string" then
    return nil, "ctx.query: args must be Candid text, e.g. \"(record { limit = 100 : nat16 })\""
  end
  if names ~= nil and type(names) ~= "table" then return nil, "ctx.query: names must be an array of field names" end
  for i, n in ipairs(names or {}) do
    if type(n) ~= "string" then return nil, "ctx.query: names[" .. i .. "] is not a string" end
  end
  return { canister = cid, method = method, args = args or "()" }
end

--- The ctx handed to discover: root (the command line's), registry (raw
-- members or nil), query(canister, method, args, names), idl_hash(name)
-- and directory(opts) (fleetsnap.directory's walk over this ctx).
-- Returns ctx and its state: state.queries (what was asked, with the
-- reply's SHA-256, in order) and state.failure (the error object of a
-- query that failed, if one did).
function M.context(driver, root, registry)
  local state = { queries = {}, failure = nil }
  local function query(canister, method, args, names)
    local q, why = request(canister, method, args, names)
    if not q then error(why, 0) end
    if #state.queries >= M.MAX_QUERIES then
      error("ctx.query: more than " .. M.MAX_QUERIES .. " queries in one discovery", 0)
    end
    local bytes, err = M.ask(driver, q)
    if bytes then
      local values, derr = candid.decode(bytes, names)
      if values then
        q.reply_sha256 = engine.hash.sha256(bytes)
        state.queries[#state.queries + 1] = q
        return table.unpack(values, 1, values.n)
      end
      err = errors.new("EREGISTRY", label(q) .. ": the reply is not Candid: " .. derr)
    end
    state.failure = err
    error(err.message, 0)
  end
  -- The query runs outside the instruction budget (its wait and the
  -- decoding are fleetsnap's work); each call is charged one unit per
  -- name, so a loop of queries still ends.
  local ctx = {
    root = root,
    registry = registry,
    query = sandbox.metered(query, function(_, _, _, names) return type(names) == "table" and #names or 0 end),
    idl_hash = candid.hash,
  }
  -- The walk is fleetsnap's code: its errors are the fleet's (registry
  -- error objects), kept in state like a query's, not the policy's.
  ctx.directory = sandbox.metered(function(opts)
    if opts ~= nil and type(opts) ~= "table" then error("ctx.directory: opts must be a table", 0) end
    local ok, res = pcall(directory.walk, ctx, opts)
    if ok then return res end
    if errors.is(res) then
      state.failure = res
      error(res.message, 0)
    end
    error(res, 0)
  end)
  return ctx, state
end

--- Asks each recorded query again; returns nil when every reply's digest
-- is the one recorded, else the description of what changed. Raises the
-- query's error when one cannot be asked.
function M.recheck(driver, queries)
  for _, q in ipairs(queries) do
    local bytes, err = M.ask(driver, q)
    if not bytes then errors.raise(err.code, "discovery re-read before the first stop: " .. err.message, err) end
    local now = engine.hash.sha256(bytes)
    if now ~= q.reply_sha256 then
      return string.format("%s %s replied %s at planning, %s now", label(q), q.args, q.reply_sha256, now)
    end
  end
  return nil
end

return M
