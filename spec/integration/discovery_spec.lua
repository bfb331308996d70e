-- Discovery that asks the fleet, against icp-sim: a directory-style fleet
-- (Canic 0.100+'s canic_root_component_directory_page, served a few
-- entries a page) walked by the bundled `directory` policy; the drift
-- check asking the pages again; rejects and refusals; --dry-run.
local engine = require "fleetsnap.engine"
local candid = require "fleetsnap.candid"
local canic = require "fleetsnap.canic"
local directory = require "fleetsnap.directory"
local helpers = require "helpers"
local hex = require "fleetsnap.hex"

local json, fs = engine.json, engine.fs

local PAGE = 2
local MEMBERS = 7

local home, fleet, out, operator

-- The icp-sim log: one decoded line per invocation.
local function log()
  local lines = {}
  for line in fs.read(home .. "/log.jsonl"):gmatch("[^\n]+") do lines[#lines + 1] = json.decode(line) end
  return lines
end

-- The directory queries in the log, and every invocation that is not a
-- query (update calls and management calls: anything with an effect).
local function classify(lines)
  local pages, updates = 0, {}
  for _, e in ipairs(lines) do
    local a = e.argv
    local query = false
    for _, x in ipairs(a) do query = query or x == "--query" end
    if a[1] == "canister" and a[2] == "call" and a[4] == canic.DIRECTORY_METHOD and query then pages = pages + 1 end
    local read = a[1] == "identity" or a[1] == "sim" or (a[1] == "canister" and (a[2] == "status"
      or (a[2] == "snapshot" and a[3] == "list") or (a[2] == "call" and query)))
    if not read then updates[#updates + 1] = table.concat(a, " ") end
  end
  return pages, updates
end

-- One page of the directory as the operator's icp sees it: the reply hex
-- and its decoded value.
local function first_page()
  local r = helpers.icp(home, { "canister", "call", fleet.root, canic.DIRECTORY_METHOD,
    directory.request(nil, nil, 100), "--query", "--json", "-e", "local" })
  assert.equal(0, r.status, r.stderr)
  local h = json.decode(r.stdout).response_bytes
  return h, assert(candid.decode(hex.decode(h), canic.DIRECTORY_NAMES))[1]
end

local function backup(argv, env)
  local full = { "backup", "create", "--policy", "directory", "--out", out }
  for _, a in ipairs(argv or {}) do full[#full + 1] = a end
  return helpers.fleetsnap(home, full, env)
end

describe("discovery from a component directory (icp-sim)", function()
  before_each(function()
    home = helpers.tmpdir() .. "/home"
    local r = helpers.icp(home, { "sim", "init", "--members", tostring(MEMBERS), "--depth", "3", "--heap", "8192",
      "--stable", "4096", "--directory-page", tostring(PAGE) })
    assert.equal(0, r.status, r.stderr)
    fleet = helpers.fleet(home)
    out = helpers.tmpdir() .. "/backups/b1"
    operator = helpers.icp(home, { "identity", "principal" }).stdout:match("%S+")
  end)
  after_each(function() helpers.cleanup() end)

  local function allow_operator()
    local r = helpers.icp(home, { "sim", "directory", "--allow", operator })
    assert.equal(0, r.status, r.stderr)
  end

  it("refuses the operator's identity as Canic does: not a registered member of the Component", function()
    local _, page = first_page()
    assert.equal("Forbidden", next(page.Err.code))
    assert.matches("COMPONENT_DIRECTORY_MEMBER_REQUIRED: caller " .. operator, page.Err.message, 1, true)
    local r = backup()
    assert.equal(1, r.status)
    assert.matches("directory of " .. fleet.root .. " (" .. canic.DIRECTORY_METHOD .. "): the root refused: "
      .. "Forbidden: COMPONENT_DIRECTORY_MEMBER_REQUIRED", r.stderr, 1, true)
    local _, updates = classify(log())
    assert.same({}, updates)
  end)

  it("backs up every member, walking the directory page by page", function()
    allow_operator()
    local r = backup()
    assert.equal(0, r.status, r.stderr)
    local m = json.decode(fs.read(out .. "/fleet-backup-manifest.json"))
    local got, want = {}, {}
    for _, x in ipairs(m.fleet.members) do got[#got + 1] = x.canister_id end
    for _, x in ipairs(fleet.members) do
      if x.canister_id ~= fleet.root then want[#want + 1] = x.canister_id end
    end
    table.sort(got)
    table.sort(want)
    assert.equal(MEMBERS, #want)
    assert.same(want, got)
    -- ceil(7 / 2) pages at planning, the same again before the first stop.
    local plan = json.decode(fs.read(out .. "/fleetsnap-plan.json"))
    local pages = (MEMBERS + PAGE - 1) // PAGE
    assert.equal(pages, #plan.discovery.queries)
    assert.equal(2 * pages, (classify(log())))
    for _, q in ipairs(plan.discovery.queries) do
      assert.equal(fleet.root, q.canister)
      assert.equal(canic.DIRECTORY_METHOD, q.method)
      assert.matches("^%x+$", q.reply_sha256)
    end
  end)

  it("refuses (exit 5) when the directory changed between the plan and the first stop", function()
    allow_operator()
    -- The first attempt fails in preflight, before any stop; the plan stays.
    local r = backup({}, { ICP_SIM_FAIL = "snapshot.list" })
    assert.equal(1, r.status)
    assert.truthy(fs.lstat(out .. "/fleetsnap-plan.json"))
    local before_hex, before = first_page()
    local member = before.Ok.entries[1].binding.canister_id
    assert.equal("Active", next(before.Ok.entries[1].status))
    r = helpers.icp(home, { "sim", "directory", "--status", member, "Draining" })
    assert.equal(0, r.status, r.stderr)
    -- The change is real: the same query now replies otherwise.
    local after_hex, after = first_page()
    assert.are_not.equal(before_hex, after_hex)
    assert.equal("Draining", next(after.Ok.entries[1].status))
    assert.equal(before.Ok.directory.revision + 1, after.Ok.directory.revision)
    r = helpers.fleetsnap(home, { "backup", "resume", out })
    assert.equal(5, r.status)
    assert.matches("topology drift since the plan was made; nothing was stopped: discovery query "
      .. canic.DIRECTORY_METHOD .. " on " .. fleet.root, r.stderr, 1, true)
    for cid, e in pairs(helpers.effects(home)) do assert.equal(0, e.stop, cid .. " was stopped") end
  end)

  it("reports a rejected query clearly, naming the canister and the method", function()
    allow_operator()
    local r = backup({}, { ICP_SIM_FAIL = "call@" .. fleet.root .. "=reject:IC0503" })
    assert.equal(1, r.status)
    assert.matches("discovery query " .. canic.DIRECTORY_METHOD .. " on " .. fleet.root .. ": ", r.stderr, 1, true)
    assert.matches("IC0503", r.stderr, 1, true)
    assert.is_nil(fs.lstat(out .. "/fleetsnap-plan.json"))
  end)

  it("makes no update call with --dry-run, only the directory's queries", function()
    allow_operator()
    local r = backup({ "--dry-run" })
    assert.equal(0, r.status, r.stderr)
    local pages, updates = classify(log())
    assert.equal((MEMBERS + PAGE - 1) // PAGE, pages)
    assert.same({}, updates)
    for cid, e in pairs(helpers.effects(home)) do
      for k, n in pairs(e) do assert.equal(0, n, cid .. " " .. k) end
    end
  end)
end)
