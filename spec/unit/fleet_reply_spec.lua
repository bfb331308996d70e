-- Discovery never raises on what a root or an inventory sends: a registry
-- reply of another shape than Canic's, or an inventory field of the wrong
-- type, is refused with a code of the registry. Found by the readers fuzz
-- target (fuzz/readers.lua; reproducers in fuzz/corpus/readers/).
local candid = require "fleetsnap.candid"
local canic = require "fleetsnap.canic"
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local fleet = require "fleetsnap.fleet"
local principal = require "fleetsnap.principal"
local helpers = require "helpers"

local json = engine.json
local ROOT, A = principal.canister_id(1), principal.canister_id(2)

local function driver(bytes)
  return { run = function() return bytes end }
end

-- from_registry over a reply; must return, never raise.
local function discover(bytes)
  local ok, f, msg, code = pcall(fleet.from_registry, driver(bytes), ROOT)
  assert(ok, "from_registry raised: " .. tostring(errors.is(f) and f.message or f))
  return f, msg, code
end

describe("fleet.from_registry", function()
  it("reads Canic's reply", function()
    local f = assert(discover(canic.encode_registry({ { canister_id = ROOT, role = "root" },
      { canister_id = A, role = "app", parent = ROOT, module_hash = "\1\2" } })))
    assert.equal(2, #f.members)
    assert.equal("0102", f.by_id[A].module_hash)
  end)

  local shapes = {
    { "an Ok that is not a vector", candid.variant({ { "Ok", candid.nat64 } }), { Ok = 5 } },
    { "an Ok of null", candid.variant({ { "Ok", candid.null } }), { Ok = true } },
    { "entries that are not records", candid.variant({ { "Ok", candid.vec(candid.nat64) } }), { Ok = { 1 } } },
    { "entries whose record is text", candid.variant({ { "Ok", candid.vec(candid.record({ { "pid", candid.principal },
      { "role", candid.text }, { "record", candid.text } })) } }), { Ok = { { pid = ROOT, role = "r", record = "x" } } } },
    { "a module hash that is a number", candid.variant({ { "Ok", candid.vec(candid.record({
      { "pid", candid.principal }, { "role", candid.text }, { "record", candid.record({ { "pid", candid.principal },
        { "role", candid.text }, { "module_hash", candid.nat64 } }) } })) } }),
      { Ok = { { pid = ROOT, role = "r", record = { pid = ROOT, role = "r", module_hash = 7 } } } } },
    { "an Err that is not a record", candid.variant({ { "Err", candid.nat64 } }), { Err = 3 } },
    { "an Err code that is text", candid.variant({ { "Err", candid.record({ { "code", candid.text },
      { "message", candid.text } }) } }), { Err = { code = "NotFound", message = "m" } } },
  }
  for _, s in ipairs(shapes) do
    it("refuses a reply with " .. s[1] .. " as EREGISTRY", function()
      local f, msg, code = discover(candid.encode({ s[2] }, { s[3] }))
      assert.is_nil(f)
      assert.equal("EREGISTRY", code)
      assert.matches("registry of " .. ROOT, msg, 1, true)
    end)
  end
end)

describe("fleet.from_inventory", function()
  after_each(function() helpers.cleanup() end)

  local function inventory(module_hash)
    local path = helpers.tmpdir() .. "/inventory.json"
    helpers.write(path, json.encode({ root = ROOT, members = { { canister_id = ROOT, role = "root" },
      { canister_id = A, role = "app", parent = ROOT, module_hash = module_hash } } }))
    return path
  end

  it("refuses a module hash that is neither a string nor null", function()
    for _, v in ipairs({ json.object({ a = 1 }), json.array({}), 5, true }) do
      local f, msg, code = fleet.from_inventory(inventory(v))
      assert.is_nil(f)
      assert.equal("EDOC", code)
      assert.matches("members[2].module_hash", msg, 1, true)
    end
  end)

  it("refuses a document that is a JSON scalar, naming the file", function()
    for _, text in ipairs({ "false", "true", "null", "5" }) do
      local path = helpers.tmpdir() .. "/inventory.json"
      helpers.write(path, text)
      local f, msg, code = fleet.from_inventory(path)
      assert.is_nil(f)
      assert.equal("EDOC", code)
      assert.matches(path .. ": expected", msg, 1, true)
    end
  end)

  it("hashes a null module hash as none, the same in every process", function()
    local f = assert(fleet.from_inventory(inventory(json.null)))
    local _, rows = fleet.scope_hash(f, assert(fleet.select(f, { include_root = true })))
    -- Rows are sorted: the root's ("rrkah-...") comes before A's ("ryjl3-...").
    assert.same({ "pid=" .. ROOT .. "|parent_pid=null|role=root|module_hash=null",
      "pid=" .. A .. "|parent_pid=" .. ROOT .. "|role=app|module_hash=null" }, rows)
  end)
end)
