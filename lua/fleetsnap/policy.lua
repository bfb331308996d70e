--- Policies: Lua files that turn a selection into a plan of operations.
-- A policy runs in a sandbox (allow-listed globals, text chunks only, an
-- instruction budget) and never reaches icp: custom steps are `call`
-- operations the runner executes.
local sandbox = require "fleetsnap.sandbox"

local M = {}

M.BUDGET = 100000000 -- instructions per policy function call

-- Runs f under the instruction budget (which fleetsnap.sandbox makes
-- unescapable): true and f's results, or false, the error and, when the
-- budget ran out, "EBUDGET".
local function budgeted(f, ...)
  return sandbox.call(M.BUDGET, f, ...)
end

-- Bundled policies are modules of the package (installed with it), found on
-- the Lua module path but read as text and run in the sandbox, never
-- `require`d: their source and digest are what a plan records.
local BUNDLED = "fleetsnap.policies."

--- Names of the bundled policies: the files beside the default policy, in
-- the directory the module path finds it in (empty if it is not installed).
function M.bundled()
  local anchor = package.searchpath(BUNDLED .. "consistent", package.path)
  local out = {}
  if not anchor then return out end
  local dir = anchor:match("^(.*)/[^/]*$") or "."
  for _, f in ipairs(require("fleetsnap.engine").fs.list(dir) or {}) do
    local name = f:match("^([%w_%-]+)%.lua$")
    if name then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

-- A reference is a file when it names one (a `/` or a `.lua` suffix);
-- anything else is the name of a bundled policy.
local function resolve(ref)
  if ref:find("/", 1, true) or ref:find("%.lua$") then return ref end
  local path = ref:match("^[%w_%-]+$") and package.searchpath(BUNDLED .. ref, package.path)
  if path then return path end
  local names = M.bundled()
  return nil, string.format("policy %s: no bundled policy of that name (bundled: %s; a policy file needs a path "
    .. "with a / or a .lua suffix)", ref, #names > 0 and table.concat(names, ", ") or "none installed"), "ENOTFOUND"
end

--- Loads a policy by bundled name or file path. Returns the policy table
-- (with .source, .sha256, .path) or nil, message, code: "ENOTFOUND" when
-- there is no such policy (no bundled one of that name, no such file: the
-- operator misspelt it), "EPOLICY" when there is one and it is bad.
function M.load(ref)
  if type(ref) ~= "string" or ref == "" then return nil, "policy: a name or a file is needed", "EPOLICY" end
  local engine = require "fleetsnap.engine"
  local path, rerr, rcode = resolve(ref)
  if not path then return nil, rerr, rcode end
  local text, err, code = engine.fs.read(path, 1 << 20)
  if not text then
    return nil, "policy " .. ref .. ": " .. err, (code == "ENOENT" or code == "ENOTDIR") and "ENOTFOUND" or "EPOLICY"
  end
  local chunk, lerr = sandbox.load(text, path)
  if not chunk then return nil, "policy " .. lerr, "EPOLICY" end
  local ok, p, why = budgeted(chunk)
  if not ok then
    -- the chunk's own errors name the file and line already; the budget's does not
    return nil, "policy " .. (why == "EBUDGET" and path .. ": " or "") .. tostring(p), "EPOLICY"
  end
  if type(p) ~= "table" or type(p.name) ~= "string" or type(p.plan) ~= "function" then
    return nil, "policy " .. path .. ": must return a table with name and plan(selection, plan)", "EPOLICY"
  end
  p.path, p.source, p.sha256 = path, text, engine.hash.sha256(text)
  return p
end

--- The error fields for load's failure `code`: a policy that is not there
-- is continued by listing the ones that are.
function M.missing_step(code)
  if code == "ENOTFOUND" then return { next = { command = "policy list" } } end
  return nil
end

-- {=== the plan builder handed to policy.plan ===}

local Builder = {}
Builder.__index = Builder

local function member_id(m)
  return type(m) == "table" and m.canister_id or m
end

-- Copies opts.after, refusing an id that is not (yet) an operation.
local function deps(self, id, opts)
  local after = {}
  for i, a in ipairs(opts.after or {}) do
    assert(self.by_id[a], "plan: " .. id .. " depends on unknown operation " .. tostring(a))
    after[i] = a
  end
  return after
end

function Builder:add(kind, m, opts, extra)
  opts = opts or {}
  local cid = member_id(m)
  assert(self.members[cid], "plan: " .. tostring(cid) .. " is not in the selection")
  local id = extra and extra.id or (kind .. "-" .. cid)
  assert(not self.by_id[id], "plan: operation " .. id .. " added twice")
  local op = { id = id, kind = kind, canister = cid, after = deps(self, id, opts) }
  for k, v in pairs(extra or {}) do if k ~= "id" then op[k] = v end end
  self.ops[#self.ops + 1] = op
  self.by_id[id] = op
  return id
end

function Builder:stop(m, opts) return self:add("stop", m, opts) end
function Builder:snapshot(m, opts) return self:add("snapshot", m, opts) end
function Builder:start(m, opts) return self:add("start", m, opts) end
function Builder:download(m, opts) return self:add("download", m, opts) end

--- A phase barrier: one operation, on no canister and with no effect,
-- that completes once everything in opts.after has. N operations that
-- wait on one barrier, instead of on each of N others, keep the plan
-- linear in the fleet. Returns its id, `barrier-<name>`.
function Builder:barrier(name, opts)
  assert(type(name) == "string" and name:match("^[%w_%-]+$"), "plan: a barrier needs a name of letters, digits, - or _")
  local id = "barrier-" .. name
  assert(not self.by_id[id], "plan: operation " .. id .. " added twice")
  local op = { id = id, kind = "barrier", after = deps(self, id, opts or {}) }
  self.ops[#self.ops + 1] = op
  self.by_id[id] = op
  return id
end

--- A custom canister call; `idempotent` must be declared.
function Builder:call(m, method, args, opts)
  opts = opts or {}
  assert(type(method) == "string" and method ~= "", "plan: call needs a method")
  assert(opts.idempotent == true or opts.idempotent == false, "plan: call " .. method .. " must declare idempotent")
  self.calls = self.calls + 1
  return self:add("call", m, opts, { id = string.format("call-%s-%s-%d", method, member_id(m), self.calls),
    method = method, args = args or "()", query = opts.query or false, idempotent = opts.idempotent })
end

--- Stops the selection parents first, level by level, each level in
-- parallel after the one above it (opts.after: what the first level waits
-- for). A level waits on one barrier after the level above, when that
-- has several stops (`barrier-stopped-depth-<d>`), not on each of them. Returns every
-- stop's id, for what must follow all of them.
function Builder:stop_by_level(opts)
  local previous, stops = (opts or {}).after or {}, {}
  local levels = self:levels()
  for i, level in ipairs(levels) do
    local this = {}
    for _, m in ipairs(level) do
      local id = self:stop(m, { after = previous })
      this[#this + 1] = id
      stops[#stops + 1] = id
    end
    -- No barrier after the last level: what follows waits on the stops
    -- it is given.
    previous = (#this > 1 and i < #levels) and { self:barrier("stopped-depth-" .. level[1].depth, { after = this }) }
      or this
  end
  return stops
end

--- The bundled `consistent` policy's whole plan, for a policy that
-- changes only how the fleet is found: one consistency point for the
-- selection. Stops parents first level by level; every snapshot waits on
-- one "all stopped" barrier; starts go children first, each level after
-- one barrier closing the level below; each download follows its own
-- snapshot (downloads never hold a canister stopped). Phase barriers
-- instead of N x N edges keep the plan linear in the fleet.
function Builder:consistent()
  local levels = self:levels()
  local stopped = self:barrier("stopped", { after = self:stop_by_level() })
  local snapshots = {}
  for i, m in ipairs(self.selection) do
    snapshots[i] = self:snapshot(m, { after = { stopped } })
  end
  local previous = { self:barrier("snapshotted", { after = snapshots }) }
  for i = #levels, 1, -1 do
    local this = {}
    for _, m in ipairs(levels[i]) do
      this[#this + 1] = self:start(m, { after = previous })
    end
    previous = (i > 1 and #this > 1) and { self:barrier("started-depth-" .. levels[i][1].depth, { after = this }) }
      or this
  end
  for i, m in ipairs(self.selection) do
    self:download(m, { after = { snapshots[i] } })
  end
end

--- The selection grouped by depth, shallowest first.
function Builder:levels()
  local by, depths = {}, {}
  for _, m in ipairs(self.selection) do
    if not by[m.depth] then
      by[m.depth] = {}
      depths[#depths + 1] = m.depth
    end
    table.insert(by[m.depth], m)
  end
  table.sort(depths)
  local out = {}
  for i, d in ipairs(depths) do out[i] = by[d] end
  return out
end

-- The builder's methods run outside the policy's instruction budget: the
-- budget bounds the policy's own work, and copying a long `after` list or
-- grouping a large selection is fleetsnap's. Each call is still charged
-- the size of what it copies, so a loop of calls ends.
do
  local function after_size(_, _, opts)
    return type(opts) == "table" and type(opts.after) == "table" and #opts.after or 0
  end
  local function selection_size(self)
    return type(self) == "table" and type(self.selection) == "table" and #self.selection or 0
  end
  local COST = {
    add = function(_, _, _, opts) return after_size(nil, nil, opts) end,
    stop = after_size, snapshot = after_size, start = after_size, download = after_size,
    barrier = after_size,
    call = function(_, _, _, _, opts) return after_size(nil, nil, opts) end,
    stop_by_level = selection_size, levels = selection_size, consistent = selection_size,
  }
  for name, cost in pairs(COST) do Builder[name] = sandbox.metered(Builder[name], cost) end
end

-- A set of members as bits: word index -> 64 bits (only the words with a
-- bit set).
local function has(set, bit) return set[bit // 64 + 1] ~= nil and set[bit // 64 + 1] & (1 << (bit % 64)) ~= 0 end

local function add_bit(set, bit)
  set[bit // 64 + 1] = (set[bit // 64 + 1] or 0) | (1 << (bit % 64))
end

local EMPTY = {}

-- Checks that the plan is one the runner can execute safely: every member
-- stopped, snapshotted (after its stop) and downloaded (after its
-- snapshot), and started after its snapshot unless the policy leaves the
-- selection stopped; no dependency on an unknown operation, no cycle.
--
-- One pass in Kahn's order carries, for each operation, the members whose
-- stop and whose snapshot it transitively waits on, and checks each
-- operation against them when it is reached. The sets are shared where an
-- operation adds nothing (the sets behind a barrier are built once, not
-- once per operation after it), and handed on to be changed in place
-- where the one operation before is waited on by nothing else (a chain
-- grows one set instead of copying it at every step).
local function check_plan(b, policy)
  local per, bit = {}, {}
  for i, m in ipairs(b.selection) do bit[m.canister_id] = i - 1 end
  local by_id, waiting, dependents, ready = {}, {}, {}, {}
  for _, op in ipairs(b.ops) do
    if by_id[op.id] then return "operation " .. tostring(op.id) .. " added twice" end
    by_id[op.id] = op
  end
  for _, op in ipairs(b.ops) do
    if op.kind == "barrier" then
      if op.canister ~= nil then return "barrier " .. op.id .. " names a canister" end
    else
      if bit[op.canister] == nil then
        return "operation " .. tostring(op.id) .. " is not on a member of the selection"
      end
      per[op.canister] = per[op.canister] or {}
      if op.kind ~= "call" then
        if per[op.canister][op.kind] then return "two " .. op.kind .. " operations for " .. op.canister end
        per[op.canister][op.kind] = op
      end
    end
    waiting[op.id] = #op.after
    for _, a in ipairs(op.after) do
      if not by_id[a] then return op.id .. " depends on unknown operation " .. tostring(a) end
      dependents[a] = dependents[a] or {}
      table.insert(dependents[a], op)
    end
    if #op.after == 0 then ready[#ready + 1] = op end
  end
  local stops, snaps, owner, ok, done = {}, {}, {}, {}, 0
  -- op's set, from its dependencies' sets (`of`) and its own bit (or nil).
  local function gather(op, of, own)
    local sets, seen, from = {}, {}, nil
    for _, a in ipairs(op.after) do
      local s = of[a]
      if not seen[s] then
        seen[s] = true
        sets[#sets + 1] = s
        from = a
      end
    end
    if #sets == 0 then sets[1] = EMPTY end
    if #sets == 1 then
      local s = sets[1]
      -- Only the one operation before may hand its set on to be changed.
      local mine = from ~= nil and owner[s] == from and #dependents[from] == 1
      if own == nil or has(s, own) then
        if mine then owner[s] = op.id end
        return s
      end
      if mine then
        owner[s] = op.id
        add_bit(s, own)
        return s
      end
    end
    local out = {}
    for _, s in ipairs(sets) do
      for w, bits in pairs(s) do out[w] = (out[w] or 0) | bits end
    end
    if own then add_bit(out, own) end
    owner[out] = op.id
    return out
  end
  while #ready > 0 do
    local op = table.remove(ready)
    done = done + 1
    local n = op.canister ~= nil and bit[op.canister] or nil
    stops[op.id] = gather(op, stops, op.kind == "stop" and n or nil)
    snaps[op.id] = gather(op, snaps, op.kind == "snapshot" and n or nil)
    -- Checked now: a set handed on may later hold more.
    if op.kind == "snapshot" then ok[op.id] = has(stops[op.id], n)
    elseif op.kind == "download" or op.kind == "start" then ok[op.id] = has(snaps[op.id], n) end
    for _, a in ipairs(op.after) do
      -- A set nobody else will read is dropped as soon as it is handed on.
      if #dependents[a] == 1 then stops[a], snaps[a] = nil, nil end
    end
    for _, d in ipairs(dependents[op.id] or {}) do
      waiting[d.id] = waiting[d.id] - 1
      if waiting[d.id] == 0 then ready[#ready + 1] = d end
    end
  end
  if done < #b.ops then
    for _, op in ipairs(b.ops) do
      if waiting[op.id] > 0 then return "operation " .. op.id .. " is on a dependency cycle (or waits on one)" end
    end
  end
  for _, m in ipairs(b.selection) do
    local cid = m.canister_id
    local ops = per[cid] or {}
    for _, k in ipairs({ "stop", "snapshot", "download" }) do
      if not ops[k] then return "no " .. k .. " operation for " .. cid end
    end
    if not ok[ops.snapshot.id] then
      return "snapshot of " .. cid .. " must come after its stop (icp refuses a running canister)"
    end
    if not ok[ops.download.id] then
      return "download of " .. cid .. " must come after its snapshot"
    end
    if ops.start then
      if not ok[ops.start.id] then
        return "start of " .. cid .. " must come after its snapshot"
      end
    elseif not policy.leaves_stopped then
      return "no start operation for " .. cid .. " (set leaves_stopped = true to keep canisters stopped)"
    end
  end
  return nil
end

--- The post-start checks the policy asks for, per member: an array of
-- {method, args, expect_hex} (a query whose reply must equal expect_hex).
-- Returns a table canister -> checks, or nil, message, "EPOLICY".
function M.checks(policy, selection)
  if type(policy.checks) ~= "function" then return {} end
  local out = {}
  for _, m in ipairs(selection) do
    local view = { canister_id = m.canister_id, role = m.role, parent = m.parent, depth = m.depth }
    local ok, list = budgeted(policy.checks, view)
    if not ok then return nil, "policy " .. policy.name .. ": checks: " .. tostring(list), "EPOLICY" end
    if list ~= nil then
      if type(list) ~= "table" then
        return nil, "policy " .. policy.name .. ": checks must return an array of checks", "EPOLICY"
      end
      for i, c in ipairs(list) do
        if type(c) ~= "table" or type(c.method) ~= "string" or type(c.expect_hex) ~= "string"
          or not c.expect_hex:match("^%x*$") then
          return nil, string.format("policy %s: check %d of %s needs method and expect_hex", policy.name, i,
            m.canister_id), "EPOLICY"
        end
        list[i] = { method = c.method, args = c.args or "()", expect_hex = c.expect_hex:lower() }
      end
      out[m.canister_id] = list
    end
  end
  return out
end

--- Members from the policy's discover(ctx), if it has one: ctx.root is the
-- root given on the command line, ctx.registry the members the registry
-- listed (or nil). Returns raw members or nil (no hook), or nil, msg, code.
function M.discover(policy, ctx)
  if type(policy.discover) ~= "function" then return nil end
  local ok, res = budgeted(policy.discover, ctx)
  if not ok then return nil, "policy " .. policy.name .. ": discover: " .. tostring(res), "EPOLICY" end
  if type(res) ~= "table" or type(res.root) ~= "string" or type(res.members) ~= "table" then
    return nil, "policy " .. policy.name .. ": discover must return {root = principal, members = {...}}", "EPOLICY"
  end
  return res
end

--- Runs policy.plan over the selection; returns the operations (array) or
-- nil, message, "EPOLICY".
function M.build(policy, selection)
  local members = {}
  local view = {}
  for i, m in ipairs(selection) do
    members[m.canister_id] = true
    view[i] = { canister_id = m.canister_id, role = m.role, parent = m.parent, depth = m.depth }
  end
  local b = setmetatable({ ops = {}, by_id = {}, members = members, selection = view, calls = 0 }, Builder)
  local ok, err = budgeted(policy.plan, view, b)
  if not ok then return nil, "policy " .. policy.name .. ": " .. tostring(err), "EPOLICY" end
  local bad = check_plan(b, policy)
  if bad then return nil, "policy " .. policy.name .. ": " .. bad, "EPOLICY" end
  return b.ops
end

return M
