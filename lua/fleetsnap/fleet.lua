--- The fleet: a Canic root and the members of its registry (or of a static
-- inventory file), the selection a backup covers, and its topology hash.
local engine = require "fleetsnap.engine"
local principal = require "fleetsnap.principal"
local candid = require "fleetsnap.candid"
local canic = require "fleetsnap.canic"
local hex = require "fleetsnap.hex"

local json = engine.json

local M = {}

local function fail(msg, code)
  return nil, msg, code or "EFLEET"
end

--- Builds the fleet model from raw members ({canister_id, role, parent,
-- module_hash}); checks principals, uniqueness, one root, parents present,
-- no cycles. `what` names the source in messages.
function M.build(root, raw, what)
  local root_id, err = principal.parse(root, what .. ": root")
  if not root_id then return fail(err, "EPRINCIPAL") end
  local fleet = { root = root_id, members = {}, by_id = {} }
  for i, m in ipairs(raw) do
    local field = string.format("%s: members[%d]", what, i)
    local id, perr = principal.parse(m.canister_id, field .. ".canister_id")
    if not id then return fail(perr, "EPRINCIPAL") end
    if fleet.by_id[id] then return fail(field .. ": canister " .. id .. " is listed twice") end
    if type(m.role) ~= "string" or m.role == "" then return fail(field .. ".role: empty role") end
    local parent
    if m.parent ~= nil and m.parent ~= json.null then
      parent, perr = principal.parse(m.parent, field .. ".parent")
      if not parent then return fail(perr, "EPRINCIPAL") end
    end
    local mh = m.module_hash ~= json.null and m.module_hash or nil
    local member = { canister_id = id, role = m.role, parent = parent, module_hash = mh, index = i,
      children = {} }
    fleet.members[#fleet.members + 1] = member
    fleet.by_id[id] = member
  end
  local root_member = fleet.by_id[root_id]
  if not root_member then return fail(what .. ": the root " .. root_id .. " is not among the members") end
  if root_member.parent then return fail(what .. ": the root " .. root_id .. " has a parent") end
  for _, m in ipairs(fleet.members) do
    if m.canister_id ~= root_id then
      if not m.parent then return fail(what .. ": member " .. m.canister_id .. " has no parent") end
      local p = fleet.by_id[m.parent]
      if not p then return fail(what .. ": parent " .. m.parent .. " of " .. m.canister_id .. " is not a member") end
      p.children[#p.children + 1] = m
    end
  end
  -- Depths from the root; anything not reached hangs in a cycle.
  root_member.depth = 0
  local queue, head = { root_member }, 1
  while queue[head] do
    local m = queue[head]
    head = head + 1
    for _, c in ipairs(m.children) do
      c.depth = m.depth + 1
      queue[#queue + 1] = c
    end
  end
  for _, m in ipairs(fleet.members) do
    if not m.depth then return fail(what .. ": member " .. m.canister_id .. " is in a parent cycle") end
  end
  return fleet
end

-- What is wrong with a decoded registry reply, or nil. Candid decodes
-- whatever types the reply declares, so a root (or anything answering
-- for it) can send any shape: only canic.RESULT's is read further.
local function reply_problem(reply)
  if type(reply) ~= "table" or (reply.Ok == nil and reply.Err == nil) then
    return "not a Result<registry, Error> reply"
  end
  if reply.Err ~= nil then
    local e = reply.Err
    if type(e) ~= "table" or type(e.code) ~= "table" or type(e.message) ~= "string" then
      return "an Err that is not a {code: variant, message: text} record"
    end
    return nil
  end
  if type(reply.Ok) ~= "table" then return "an Ok that is not a vector of entries" end
  for i, e in ipairs(reply.Ok) do
    local r = type(e) == "table" and e.record
    if type(r) ~= "table" or type(r.pid) ~= "string" or type(r.role) ~= "string"
      or (r.parent_pid ~= nil and type(r.parent_pid) ~= "string")
      or (r.module_hash ~= nil and type(r.module_hash) ~= "string") then
      return string.format("entry %d is not a {pid, role, record: CanisterInfo} record", i)
    end
  end
  return nil
end

--- Discovery through the Canic root's registry (a public query).
function M.from_registry(driver, root)
  local root_id, err = principal.parse(root, "the root")
  if not root_id then return fail(err, "EPRINCIPAL") end
  local bytes, cerr = driver:run("call", { canister = root_id, method = canic.METHOD, args = "()", query = true })
  if not bytes then return nil, "registry of " .. root_id .. ": " .. cerr.message, cerr.code end
  local values, derr = candid.decode(bytes, canic.NAMES)
  if not values then return fail("registry of " .. root_id .. ": " .. derr, "EREGISTRY") end
  local reply = values[1]
  local problem = reply_problem(reply)
  if problem then return fail("registry of " .. root_id .. ": " .. problem, "EREGISTRY") end
  if reply.Err then
    local code = next(reply.Err.code) or "?"
    return fail(string.format("registry of %s: the root refused: %s: %s", root_id, tostring(code),
      tostring(reply.Err.message)), "EREGISTRY")
  end
  local raw = {}
  for i, e in ipairs(reply.Ok) do
    local r = e.record
    if e.pid ~= r.pid or e.role ~= r.role then
      return fail(string.format("registry of %s: entry %d: outer pid/role differ from its record", root_id, i),
        "EREGISTRY")
    end
    raw[i] = { canister_id = r.pid, role = r.role, parent = r.parent_pid,
      module_hash = r.module_hash and hex.encode(r.module_hash) or nil }
  end
  return M.build(root_id, raw, "registry of " .. root_id)
end

--- Discovery from a static inventory file:
-- {"root": "<principal>", "members": [{"canister_id", "role", "parent"}]}.
function M.from_inventory(path)
  local text, err, code = engine.fs.read(path, 64 << 20)
  if not text then return nil, "inventory " .. path .. ": " .. err, code end
  local doc, jerr = json.decode(text, { name = path })
  if doc == nil then return nil, jerr, "EJSON" end
  if type(doc) ~= "table" or type(doc.root) ~= "string" or type(doc.members) ~= "table" then
    return fail(path .. ": expected {\"root\": principal, \"members\": [...]}", "EDOC")
  end
  for i, m in ipairs(doc.members) do
    if type(m) ~= "table" then return fail(string.format("%s: members[%d] is not an object", path, i), "EDOC") end
    -- The topology hash writes module_hash as it is: a table (or null) would
    -- hash as its address, different in every process, so every check
    -- against the plan's hash would report drift.
    local mh = m.module_hash
    if mh ~= nil and mh ~= json.null and type(mh) ~= "string" then
      return fail(string.format("%s: members[%d].module_hash is not a string or null", path, i), "EDOC")
    end
  end
  return M.build(doc.root, doc.members, path)
end

-- {=== selection ===}

local function descendants(m, out)
  out[#out + 1] = m
  for _, c in ipairs(m.children) do descendants(c, out) end
  return out
end

--- The members a backup covers. opts: subtree (role or principal), member
-- (principal), include_root. Returns the selection, parents first (depth,
-- then registry order), or nil and why.
function M.select(fleet, opts)
  opts = opts or {}
  local chosen = {}
  if opts.subtree then
    local matches = {}
    for _, m in ipairs(fleet.members) do
      if m.canister_id == opts.subtree or m.role == opts.subtree then matches[#matches + 1] = m end
    end
    if #matches ~= 1 then
      return fail(string.format("the subtree selector %s matches %d members (a role or principal of exactly one "
        .. "is needed)",
        opts.subtree, #matches), "ESELECT")
    end
    chosen = descendants(matches[1], {})
  elseif opts.member then
    local id, err = principal.parse(opts.member, "the member")
    if not id then return fail(err, "EPRINCIPAL") end
    if not fleet.by_id[id] then return fail("member " .. id .. " is not a member of the fleet", "ESELECT") end
    chosen = { fleet.by_id[id] }
  else
    for _, m in ipairs(fleet.members) do
      if m.canister_id ~= fleet.root then chosen[#chosen + 1] = m end
    end
  end
  local seen, out = {}, {}
  for _, m in ipairs(chosen) do
    if m.canister_id ~= fleet.root or opts.include_root then
      seen[m.canister_id] = true
      out[#out + 1] = m
    end
  end
  if opts.include_root and not seen[fleet.root] then
    out[#out + 1] = fleet.by_id[fleet.root]
  end
  if #out == 0 then return fail("the selection is empty", "ESELECT") end
  table.sort(out, function(a, b)
    if a.depth ~= b.depth then return a.depth < b.depth end
    return a.index < b.index
  end)
  return out
end

-- {=== topology hash ===}

--- Rows of upstream's topology hash (canic-backup-model.md §4.3).
function M.rows(records)
  local rows = {}
  for i, r in ipairs(records) do
    rows[i] = string.format("pid=%s|parent_pid=%s|role=%s|module_hash=%s", r.canister_id, r.parent or "null",
      r.role or "", r.module_hash or "null")
  end
  table.sort(rows)
  return rows
end

function M.hash_records(records)
  return engine.hash.sha256(table.concat(M.rows(records), "\n"))
end

--- The records a selection's hash covers: the selection and its ancestors
-- (an unrelated spawn or upgrade elsewhere in the fleet does not break a
-- capture). Returns the hash, the rows and a scope description.
function M.scope_hash(fleet, selection)
  local ids, records = {}, {}
  local function add(m)
    if ids[m.canister_id] then return end
    ids[m.canister_id] = true
    records[#records + 1] = m
  end
  for _, m in ipairs(selection) do
    add(m)
    local p = m.parent and fleet.by_id[m.parent]
    while p do
      add(p)
      p = p.parent and fleet.by_id[p.parent]
    end
  end
  return M.hash_records(records), M.rows(records)
end

--- Rows that differ between two row lists ("- row" removed, "+ row" added).
function M.drift(before, after)
  local a, b, out = {}, {}, {}
  for _, r in ipairs(before) do a[r] = true end
  for _, r in ipairs(after) do b[r] = true end
  for _, r in ipairs(before) do if not b[r] then out[#out + 1] = "- " .. r end end
  for _, r in ipairs(after) do if not a[r] then out[#out + 1] = "+ " .. r end end
  return out
end

return M
