-- Promise: bad input gets a clear error, never a traceback: the file,
-- field, option or path named, the exit status from the one registry, and
-- nothing written outside the backup or state directory. (Documents are
-- covered field by field in spec/unit/bad_input_spec.lua; options in the
-- CLI's specs.)
local helpers = require "helpers"

describe("bad input gets a clear error", function()
  local home
  before_each(function() home = helpers.sim_home({ members = 2, depth = 1 }) end)
  after_each(function() helpers.cleanup() end)

  it("names an --out whose parent is not a directory (exit 8), before anything is stopped", function()
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", "/dev/null/b" })
    assert.equal(8, r.status, r.stderr)
    assert.matches("/dev/null/b", r.stderr, 1, true)
    assert.matches("not a directory", r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true))
    for _, e in pairs(helpers.effects(home)) do assert.equal(0, e.stop) end
  end)

  it("refuses a backup directory that is a symlink to elsewhere's plan (exit 7)", function()
    local work = helpers.tmpdir()
    assert.equal(0, helpers.fleetsnap(home, { "backup", "create", "--out", work .. "/b" }).status)
    helpers.sh("mkdir " .. work .. "/c && ln -s " .. work .. "/b/fleetsnap-plan.json " .. work .. "/c/fleetsnap-plan.json")
    local r = helpers.fleetsnap(home, { "backup", "resume", work .. "/c" })
    assert.equal(7, r.status, r.stderr)
    assert.matches("fleetsnap%-plan%.json", r.stderr)
  end)
end)
