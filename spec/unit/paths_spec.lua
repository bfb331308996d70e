-- Artifact paths a document names, resolved beneath the backup: the text
-- must be a safe relative path, and no component on the way may be a
-- symlink (the engine's tree walk only refuses one at the artifact itself).
local paths = require "fleetsnap.paths"
local helpers = require "helpers"

local function sh(cmd) return helpers.sh(cmd) end

describe("paths.components", function()
  it("splits a safe relative path", function()
    assert.same({ "a" }, paths.components("a"))
    assert.same({ "a", "b.tmp", "c" }, paths.components("a/b.tmp/c"))
  end)

  local bad = {
    { "an empty path", "", "empty" },
    { "an absolute path", "/etc", "absolute" },
    { "a parent component", "a/../b", "component %.%." },
    { "a leading ./", "./a", "component %." },
    { "an empty component", "a//b", "empty component" },
    { "a trailing slash", "a/", "empty component" },
    { "a NUL byte", "a\0b", "NUL" },
    { "something that is not a string", 5, "not a string" },
  }
  for _, c in ipairs(bad) do
    it("refuses " .. c[1], function()
      local parts, why = paths.components(c[2])
      assert.is_nil(parts)
      assert.matches(c[3], why)
    end)
  end
end)

describe("paths.check_beneath", function()
  local base
  before_each(function()
    base = helpers.tmpdir()
    sh(string.format("mkdir -p %s/b/art %s/elsewhere/art && echo x > %s/b/art/f && echo y > %s/elsewhere/art/f",
      base, base, base, base))
  end)
  after_each(function() helpers.cleanup() end)

  it("returns the joined path of a normal artifact", function()
    assert.equal(base .. "/b/art", paths.check_beneath(base, "b/art"))
    assert.equal(base .. "/b", paths.check_beneath(base, "b"))
  end)

  it("refuses a symlinked last component, naming it", function()
    sh(string.format("ln -s %s/elsewhere/art %s/b/link", base, base))
    local path, msg, code = paths.check_beneath(base, "b/link")
    assert.is_nil(path)
    assert.equal("ECORRUPT", code)
    assert.matches(base .. "/b/link is a symlink", msg, 1, true)
  end)

  it("refuses a symlinked intermediate directory, naming that component", function()
    sh(string.format("ln -s %s/elsewhere %s/via", base, base))
    local path, msg, code = paths.check_beneath(base, "via/art")
    assert.is_nil(path)
    assert.equal("ECORRUPT", code)
    assert.equal(base .. "/via/art: " .. base .. "/via is a symlink (an artifact path may not pass through one)",
      msg)
  end)

  it("refuses a relative symlink that stays inside the base too", function()
    sh(string.format("ln -s b %s/alias", base))
    local path, _, code = paths.check_beneath(base, "alias/art")
    assert.is_nil(path)
    assert.equal("ECORRUPT", code)
  end)

  it("lets the base itself be a symlink (the operator's reference)", function()
    sh(string.format("ln -s %s/b %s/latest", base, base))
    assert.equal(base .. "/latest/art", paths.check_beneath(base .. "/latest", "art"))
  end)

  it("refuses a file where a directory belongs on the way", function()
    local path, msg, code = paths.check_beneath(base, "b/art/f/g")
    assert.is_nil(path)
    assert.equal("ECORRUPT", code)
    assert.matches(base .. "/b/art/f is a file, not a directory", msg, 1, true)
  end)

  it("reports a missing artifact as not found, naming the missing component", function()
    local path, msg, code = paths.check_beneath(base, "b/gone/x")
    assert.is_nil(path)
    assert.equal("ENOTFOUND", code)
    assert.equal(base .. "/b/gone/x: " .. base .. "/b/gone does not exist", msg)
    path, msg = paths.check_beneath(base, "b/gone")
    assert.is_nil(path)
    assert.equal(base .. "/b/gone: does not exist", msg)
  end)

  it("refuses unsafe text before touching the file system", function()
    local path, msg, code = paths.check_beneath(base, "b/../elsewhere/art")
    assert.is_nil(path)
    assert.equal("ECORRUPT", code)
    assert.matches("not a safe relative path (component ..)", msg, 1, true)
  end)
end)
