local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local function run_with(failpoint, code)
  return helpers.lua(code, { FLEETSNAP_FAILPOINT = failpoint })
end

describe("engine.failpoint", function()
  if not engine.failpoints_enabled then
    pending("failpoints are compiled out of this build")
    return
  end

  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("kills the process at the n-th hit of point and key", function()
    local r = run_with("before-effect@stop-aaaaa-aa:2", [[
      local e = require "fleetsnap.engine"
      e.failpoint("before-effect", "stop-bbbbb-bb")
      e.failpoint("before-effect", "stop-aaaaa-aa")
      io.stdout:write("one ") io.stdout:flush()
      e.failpoint("before-effect", "stop-aaaaa-aa")
      io.stdout:write("two")
    ]])
    assert.equal(9, r.signal)
    assert.equal("one ", r.stdout)
    assert.matches("failpoint before%-effect@stop%-aaaaa%-aa", r.stderr)
  end)

  it("matches any key when none is given", function()
    local r = run_with("p:1", [[require("fleetsnap.engine").failpoint("p", "whatever")]])
    assert.equal(9, r.signal)
  end)

  it("is a no-op without the variable", function()
    assert.equal(0, engine.failpoint("before-effect", "x"))
  end)

  it("raises at load time on a malformed spec", function()
    local r = run_with("nonsense", [[require "fleetsnap.engine"]])
    assert.equal(1, r.status)
    assert.matches("bad FLEETSNAP_FAILPOINT", r.stderr)
  end)

  it("fires after a journal append is durable", function()
    local path = dir .. "/j.wal"
    local r = run_with("after-append@rec-2:1", string.format([[
      local j = require("fleetsnap.engine").journal.open(%q)
      j:append({ n = 1 }, "rec-1")
      j:append({ n = 2 }, "rec-2")
      j:append({ n = 3 }, "rec-3")
    ]], path))
    assert.equal(9, r.signal)
    local j, info = engine.journal.open(path)
    assert.equal(2, info.records)
    j:close()
  end)

  it("fires before a journal append reaches the file", function()
    local path = dir .. "/j.wal"
    local r = run_with("before-append@rec-2:1", string.format([[
      local j = require("fleetsnap.engine").journal.open(%q)
      j:append({ n = 1 }, "rec-1")
      j:append({ n = 2 }, "rec-2")
    ]], path))
    assert.equal(9, r.signal)
    local j, info = engine.journal.open(path)
    assert.equal(1, info.records)
    j:close()
  end)

  it("fires around the rename of a durable replace, keyed by file name", function()
    local path = dir .. "/doc.json"
    helpers.write(path, "old")
    local r = run_with("before-rename@doc.json:1", string.format([[
      require("fleetsnap.engine").fs.write_replace(%q, "new")
    ]], path))
    assert.equal(9, r.signal)
    assert.equal("old", helpers.read(path))
    r = run_with("after-rename@doc.json:1", string.format([[
      require("fleetsnap.engine").fs.write_replace(%q, "new")
    ]], path))
    assert.equal(9, r.signal)
    assert.equal("new", helpers.read(path))
  end)

  it("fires around a directory publication with a caller's key", function()
    helpers.sh("mkdir -p " .. dir .. "/a.tmp && echo x > " .. dir .. "/a.tmp/f")
    local r = run_with("before-publish@artifact-a:1", string.format([[
      require("fleetsnap.engine").fs.publish_dir(%q, %q, { key = "artifact-a" })
    ]], dir .. "/a.tmp", dir .. "/a"))
    assert.equal(9, r.signal)
    assert.equal("directory", engine.fs.lstat(dir .. "/a.tmp").type)
    assert.is_nil(engine.fs.lstat(dir .. "/a"))
  end)
end)

describe("FLEETSNAP_FAILPOINT_TRACE", function()
  if not engine.failpoints_enabled then return end

  it("records every failpoint a process reaches, in order", function()
    local dir = helpers.tmpdir()
    local r = helpers.lua(string.format([[
      local e = require "fleetsnap.engine"
      e.failpoint("before-effect", "stop-a")
      e.fs.write_replace(%q, "x")
    ]], dir .. "/doc.json"), { FLEETSNAP_FAILPOINT_TRACE = dir .. "/trace" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("before-effect@stop-a\nbefore-write@doc.json\nbefore-rename@doc.json\nafter-rename@doc.json\n",
      helpers.read(dir .. "/trace"))
    helpers.cleanup()
  end)
end)
