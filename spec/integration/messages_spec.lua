-- What a failure tells the operator (issue 11, item 7), against icp-sim:
-- every failure ends with one line `next: <command>` that, run as it
-- stands, continues the work; the help of a command shows the global
-- options; a missing policy is "not found" (exit 3).
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

-- The last line of a text.
local function last_line(text)
  return text:match("([^\n]*)\n$")
end

-- The argv of a `next:` line (the paths of these specs need no quoting),
-- without the leading "fleetsnap".
local function next_argv(line)
  local words = {}
  for w in line:gmatch("%S+") do words[#words + 1] = w end
  assert.equal("next:", table.remove(words, 1))
  assert.equal("fleetsnap", table.remove(words, 1))
  return words
end

describe("fleetsnap help", function()
  it("puts each of -e, -n and -k on one line of the top help, with its description", function()
    local r = helpers.fleetsnap(nil, { "--help" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("\n   %-e, %-%-environment ENV icp environment%.\n", r.stdout)
    assert.matches("\n   %-n, %-%-network NET +icp network %(name or URL%)%.\n", r.stdout)
    assert.matches("\n   %-k, %-%-root%-key KEY +Root key when %-%-network is a URL%.\n", r.stdout)
  end)

  it("shows the global options in a subcommand's help", function()
    local r = helpers.fleetsnap(nil, { "backup", "create", "--help" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("\nGlobal options", r.stdout)
    assert.matches("\n   %-%-sim HOME +Drive icp%-sim %(the bundled simulator%) with this fleet home, not icp%.\n",
      r.stdout)
    assert.matches("\n   %-%-json ", r.stdout)
  end)

  it("shows the global options in a command group's help", function()
    local r = helpers.fleetsnap(nil, { "restore", "--help" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("\n   %-%-timeout S ", r.stdout)
  end)
end)

describe("fleetsnap next steps", function()
  local home, out
  before_each(function()
    home = helpers.sim_home({ members = 2, depth = 1 })
    out = helpers.tmpdir() .. "/b1"
  end)
  after_each(function() helpers.cleanup() end)

  it("ends a failed backup create with the resume command, the connection and the backup filled in", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    assert.equal("next: fleetsnap --sim " .. home .. " backup resume " .. out, last_line(r.stderr))
  end)

  it("continues a failed backup create by running its next line as it stands", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out }, { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    r = helpers.fleetsnap(nil, next_argv(last_line(r.stderr)))
    assert.equal(0, r.status, r.stderr)
    assert.equal(0, helpers.fleetsnap(nil, { "backup", "verify", out }).status)
  end)

  it("gives the same step as the string field next of the --json error document", function()
    local r = helpers.fleetsnap(home, { "--json", "backup", "create", "--out", out },
      { ICP_SIM_FAIL = "snapshot.create" })
    assert.equal(1, r.status)
    local doc = json.decode(last_line(r.stdout))
    assert.equal("error", doc.type)
    assert.equal("fleetsnap --sim " .. home .. " backup resume " .. out, doc.next)
  end)

  it("ends a failed restore with its retry, the abort as the alternative, and the retry completes it", function()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", out }).status)
    assert.equal(0, helpers.fleetsnap(home, { "restore", "plan", out }).status)
    local r = helpers.fleetsnap(home, { "restore", "run", out, "--execute" }, { ICP_SIM_FAIL = "snapshot.upload" })
    assert.equal(1, r.status)
    local prefix = "fleetsnap --sim " .. home .. " restore run " .. out
    assert.matches("\nalternative: " .. prefix .. " --abort\n", r.stderr, 1, true)
    assert.equal("next: " .. prefix .. " --retry-failed", last_line(r.stderr))
    r = helpers.fleetsnap(nil, next_argv(last_line(r.stderr)))
    assert.equal(0, r.status, r.stderr)
  end)

  it("refuses a missing bundled policy with exit 3, before anything is written, pointing to `policy list`",
    function()
      local r = helpers.fleetsnap(home, { "backup", "create", "--policy", "nosuch", "--out", out })
      assert.equal(3, r.status)
      assert.matches("policy nosuch: no bundled policy of that name", r.stderr, 1, true)
      assert.equal("next: fleetsnap --sim " .. home .. " policy list", last_line(r.stderr))
      assert.is_nil(fs.lstat(out))
    end)

  it("refuses a missing policy file with exit 3", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--policy", "./missing.lua", "--out", out })
    assert.equal(3, r.status)
    assert.matches("missing%.lua", r.stderr)
  end)
end)
