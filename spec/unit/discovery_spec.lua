-- Discovery that asks the fleet: ctx.query (Candid decoding with names,
-- recording, errors, the instruction budget), idl_hash, and the directory
-- walk over a fake ctx serving real Candid pages.
local engine = require "fleetsnap.engine"
local candid = require "fleetsnap.candid"
local canic = require "fleetsnap.canic"
local discovery = require "fleetsnap.discovery"
local directory = require "fleetsnap.directory"
local errors = require "fleetsnap.errors"
local policy = require "fleetsnap.policy"
local principal = require "fleetsnap.principal"
local sandbox = require "fleetsnap.sandbox"

local ROOT = principal.canister_id(1000)

-- A driver whose `call` answers from `reply(p)`: bytes, or nil and a
-- driver error table. Every call's parameters are kept in .calls.
local function fake_driver(reply)
  local d = { calls = {} }
  function d:run(kind, p)
    assert(kind == "call", "only queries are expected, got " .. kind)
    self.calls[#self.calls + 1] = p
    return reply(p)
  end
  return d
end

describe("ctx.idl_hash", function()
  it("is the Candid field id of a name (the spec's examples)", function()
    local ctx = discovery.context(fake_driver(function() end), ROOT)
    assert.equal(23515, ctx.idl_hash("id"))
    assert.equal(1224700491, ctx.idl_hash("name"))
    assert.equal(17724, ctx.idl_hash("Ok"))
    assert.equal(3456837, ctx.idl_hash("Err"))
    assert.equal(97, ctx.idl_hash("a"))
    assert.equal(0, ctx.idl_hash(""))
  end)
end)

describe("ctx.query", function()
  local T = candid.record({ { "id", candid.nat64 }, { "name", candid.text }, { "secret", candid.opt(candid.blob) } })
  local BYTES = candid.encode({ T }, { { id = 7, name = "seven", secret = "\1\2" } })

  it("runs a query, decodes the reply with the names given and keeps the others by hash", function()
    local d = fake_driver(function() return BYTES end)
    local ctx, state = discovery.context(d, ROOT)
    local v = ctx.query(ROOT, "get", "(record { limit = 1 : nat16 })", { "id", "name" })
    assert.same({ id = 7, name = "seven", [candid.hash("secret")] = "\1\2" }, v)
    assert.same({ canister = ROOT, method = "get", args = "(record { limit = 1 : nat16 })", query = true },
      d.calls[1])
    assert.same({ { canister = ROOT, method = "get", args = "(record { limit = 1 : nat16 })",
      reply_sha256 = engine.hash.sha256(BYTES) } }, state.queries)
    assert.is_nil(state.failure)
  end)

  it("passes () when no args are given", function()
    local d = fake_driver(function() return BYTES end)
    local ctx = discovery.context(d, ROOT)
    ctx.query(ROOT, "get")
    assert.equal("()", d.calls[1].args)
  end)

  it("makes a reject an error naming the canister and the method, through the registry", function()
    local ctx, state = discovery.context(fake_driver(function()
      return nil, { code = "REJECTED", message = "reject code 3, IC0536: no method" }
    end), ROOT)
    local ok, err = pcall(ctx.query, ROOT, "get", "()")
    assert.is_false(ok)
    assert.matches("discovery query get on " .. ROOT .. ": reject code 3", err, 1, true)
    assert.is_true(errors.is(state.failure))
    assert.equal("EICP", state.failure.code)
    assert.equal("REJECTED", state.failure.cause)
    assert.same({}, state.queries)
  end)

  it("makes a reply that is not Candid a registry error naming the canister and the method", function()
    local ctx, state = discovery.context(fake_driver(function() return "not candid" end), ROOT)
    assert.is_false(pcall(ctx.query, ROOT, "get", "()"))
    assert.equal("EICP", state.failure.code)
    assert.equal("EREGISTRY", state.failure.cause)
    assert.matches("discovery query get on " .. ROOT .. ": the reply is not Candid", state.failure.message, 1, true)
  end)

  it("refuses a bad canister, method, args or names before asking", function()
    local d = fake_driver(function() return BYTES end)
    local ctx = discovery.context(d, ROOT)
    assert.error_matches(function() ctx.query("nope", "get") end, "must be a principal")
    assert.error_matches(function() ctx.query(ROOT, "get x") end, "method must be a name")
    assert.error_matches(function() ctx.query(ROOT, "get", { limit = 1 }) end, "args must be Candid text")
    assert.error_matches(function() ctx.query(ROOT, "get", "()", { 1 }) end, "names%[1%] is not a string")
    assert.same({}, d.calls)
  end)

  it("charges the policy for its own work, not for the query's", function()
    -- The driver's work (standing in for the wait and the decoding) is far
    -- over the budget; the script's is far under it.
    local d = fake_driver(function()
      local x = 0
      for i = 1, 200000 do x = x + i end
      assert(x > 0)
      return BYTES
    end)
    local ctx = discovery.context(d, ROOT)
    local ok, res = sandbox.call(50000, function()
      local seen = {}
      for i = 1, 5 do seen[i] = ctx.query(ROOT, "get", "()", { "id" }).id end
      return seen
    end)
    assert.is_true(ok, tostring(res))
    assert.same({ 7, 7, 7, 7, 7 }, res)
    -- The same work done by the script itself is over that budget.
    local over, why, code = sandbox.call(50000, function()
      local x = 0
      for i = 1, 200000 do x = x + i end
      return x
    end)
    assert.is_false(over)
    assert.equal("EBUDGET", code, tostring(why))
  end)

  it("is what policy.discover hands a sandboxed policy", function()
    local d = fake_driver(function() return BYTES end)
    local ctx = discovery.context(d, ROOT)
    local chunk = assert(sandbox.load(string.format([[return { name = "q", plan = function() end,
      discover = function(ctx)
        local r = ctx.query(ctx.root, "get", "()", { "id", "name" })
        return { root = ctx.root, members = { { canister_id = ctx.root, role = r.name } } }
      end }]]), "q"))
    local p = chunk()
    local res = assert(policy.discover(p, ctx))
    assert.equal("seven", res.members[1].role)
  end)
end)

-- {=== the directory walk ===}

-- A root serving `members` (array of {canister_id, role, parent, status})
-- `page` at a time, as icp-sim does, through a fake ctx whose query
-- returns the decoded Candid reply. `changes` may alter the directory
-- before the n-th query.
local function served(members, page, opts)
  opts = opts or {}
  local ctx = { root = ROOT, asked = {} }
  function ctx.query(canister, method, args, names)
    ctx.asked[#ctx.asked + 1] = args
    assert.equal(ROOT, canister)
    assert.equal(canic.DIRECTORY_METHOD, method)
    if opts.refuse then
      return candid.decode(canic.encode_directory_error("Forbidden", opts.refuse), names)[1]
    end
    local revision = (opts.revision_at or {})[#ctx.asked] or 1
    local after = 0
    local blob = args:match('cursor = opt blob "([^"]*)"')
    if blob then
      after = string.unpack(">I8", (blob:gsub("\\(%x%x)", function(h) return string.char(tonumber(h, 16)) end)))
    end
    local limit = math.min(page, math.tointeger(args:match("limit = (%d+)")))
    local entries = {}
    for i = after + 1, math.min(#members, after + limit) do entries[#entries + 1] = members[i] end
    local last = after + #entries
    local cursor = last < #members and string.pack(">I8", opts.stuck and limit or last) or nil
    local bytes = canic.encode_directory_page({ revision = revision, descendant_count = opts.count or #members },
      entries, cursor)
    return candid.decode(bytes, names)[1]
  end
  return ctx
end

local function fleet_of(n)
  local out = {}
  for i = 1, n do
    out[i] = { canister_id = principal.canister_id(1000 + i), role = "r" .. i,
      parent = i <= 2 and ROOT or principal.canister_id(1000 + i // 2), status = "Active" }
  end
  return out
end

describe("directory.walk", function()
  it("follows the cursor over every page and finds every member, the root first", function()
    local members = fleet_of(7)
    local ctx = served(members, 3)
    local res = directory.walk(ctx)
    assert.equal(ROOT, res.root)
    assert.equal(8, #res.members)
    assert.same({ canister_id = ROOT, role = "root" }, res.members[1])
    for i, m in ipairs(members) do
      assert.same({ canister_id = m.canister_id, role = m.role, parent = m.parent }, res.members[i + 1])
    end
    assert.equal(3, #ctx.asked)
    -- The first page binds the walk to the head's revision; the next ones
    -- carry it with the cursor.
    assert.matches("directory = null;", ctx.asked[1], 1, true)
    assert.matches("cursor = null;", ctx.asked[1], 1, true)
    assert.matches("directory = opt (1 : nat64);", ctx.asked[2], 1, true)
    assert.matches('cursor = opt blob "\\00\\00\\00\\00\\00\\00\\00\\03";', ctx.asked[2], 1, true)
    assert.matches('cursor = opt blob "\\00\\00\\00\\00\\00\\00\\00\\06";', ctx.asked[3], 1, true)
  end)

  it("asks one page when the directory fits, and skips Removed members", function()
    local members = fleet_of(3)
    members[2].status = "Removed"
    local ctx = served(members, 100)
    local res = directory.walk(ctx, { limit = 50 })
    assert.equal(1, #ctx.asked)
    assert.matches("limit = 50 : nat16", ctx.asked[1], 1, true)
    assert.equal(3, #res.members)
    assert.equal(members[3].canister_id, res.members[3].canister_id)
  end)

  it("renders the filters into the request", function()
    local p = principal.canister_id(1001)
    local text = directory.request(nil, "\0\255", 10, { role = 'sh"ard', parent = p })
    assert.equal('(record { directory = null; parent_canister_id = opt principal "' .. p .. '"; '
      .. 'role = opt "sh\\"ard"; cursor = opt blob "\\00\\ff"; limit = 10 : nat16 })', text)
  end)

  it("refuses a limit outside 1..100", function()
    local ctx = served(fleet_of(2), 2)
    for _, limit in ipairs({ 0, 101, 1.5 }) do
      local ok, err = pcall(directory.walk, ctx, { limit = limit })
      assert.is_false(ok)
      assert.equal("EUSAGE", err.code)
    end
  end)

  it("reports the root's refusal as a registry error naming the root and the method", function()
    local ctx = served(fleet_of(2), 2, { refuse = "COMPONENT_DIRECTORY_MEMBER_REQUIRED: caller x" })
    local ok, err = pcall(directory.walk, ctx)
    assert.is_false(ok)
    assert.equal("EICP", err.code)
    assert.equal("EREGISTRY", err.cause)
    assert.matches("directory of " .. ROOT .. " (" .. canic.DIRECTORY_METHOD .. "): the root refused: Forbidden: "
      .. "COMPONENT_DIRECTORY_MEMBER_REQUIRED", err.message, 1, true)
  end)

  it("refuses a directory whose revision changes during the walk", function()
    local ctx = served(fleet_of(5), 2, { revision_at = { [2] = 2 } })
    local ok, err = pcall(directory.walk, ctx)
    assert.is_false(ok)
    assert.matches("the directory changed during the walk (revision 1, then 2)", err.message, 1, true)
  end)

  it("ends a walk whose root hands back a cursor it returned before", function()
    local ctx = served(fleet_of(5), 2, { stuck = true })
    local ok, err = pcall(directory.walk, ctx)
    assert.is_false(ok)
    assert.matches("a cursor it had returned before", err.message, 1, true)
    assert.equal(2, #ctx.asked)
  end)

  it("refuses pages that list fewer members than the head counts", function()
    local ctx = served(fleet_of(4), 2, { count = 5 })
    local ok, err = pcall(directory.walk, ctx)
    assert.is_false(ok)
    assert.matches("the head counts 5 descendants, the pages listed 4", err.message, 1, true)
  end)

  it("refuses a reply that is not a page", function()
    local ctx = { root = ROOT, query = function() return { Ok = { entries = {} } } end }
    local ok, err = pcall(directory.walk, ctx)
    assert.is_false(ok)
    assert.matches("a page without directory.revision or entries", err.message, 1, true)
  end)
end)

describe("ctx.directory", function()
  it("keeps the walk's error as the discovery's failure (not the policy's)", function()
    local ctx, state = discovery.context(fake_driver(function()
      return canic.encode_directory_error("Forbidden", "COMPONENT_DIRECTORY_MEMBER_REQUIRED")
    end), ROOT)
    assert.is_false(pcall(ctx.directory))
    assert.equal("EICP", state.failure.code)
    assert.matches("the root refused: Forbidden", state.failure.message, 1, true)
    -- The refusal was a reply: it is recorded like any other.
    assert.equal(1, #state.queries)
  end)
end)

describe("docs/policies.md's worked custom discovery", function()
  it("walks every page of a directory through ctx.query", function()
    local helpers = require "helpers"
    local doc = helpers.read(helpers.root .. "/docs/policies.md")
    local source = assert(doc:match("```lua\n(%-%- shards%-from%-directory%.lua\n.-)```"))
    local p = assert(sandbox.load(source, "shards-from-directory.lua"))()
    local members = fleet_of(5)
    local ctx = served(members, 2)
    local res = assert(policy.discover(p, ctx))
    assert.equal(3, #ctx.asked)
    assert.matches('role = opt "shard"', ctx.asked[1], 1, true)
    assert.equal(6, #res.members)
    assert.equal(members[5].canister_id, res.members[6].canister_id)
  end)
end)
