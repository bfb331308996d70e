local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local journal = engine.journal

local function all(j)
  local out = {}
  for r in j:records() do out[#out + 1] = r end
  return out
end

describe("engine.journal.open", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() collectgarbage("collect") end)

  it("creates a new journal", function()
    local j, info = journal.open(dir .. "/j.wal")
    assert.equal(0, info.records)
    assert.is_true(info.created)
    assert.equal(384, engine.fs.lstat(dir .. "/j.wal").mode)
    j:close()
  end)

  it("replays records in order, keeping integers exact", function()
    local j = journal.open(dir .. "/j.wal")
    j:append({ op = "claim", at = 1700000000123456789 })
    j:append({ op = "done", receipt = { snapshot = "0000000000000001" } })
    j:close()
    local j2, info = journal.open(dir .. "/j.wal")
    assert.equal(2, info.records)
    assert.same({
      { op = "claim", at = 1700000000123456789 },
      { op = "done", receipt = { snapshot = "0000000000000001" } },
    }, all(j2))
    j2:close()
  end)

  it("cuts a torn tail and reports its size", function()
    local j = journal.open(dir .. "/j.wal")
    j:append({ n = 1 })
    j:close()
    local size = engine.fs.lstat(dir .. "/j.wal").size
    local f = io.open(dir .. "/j.wal", "ab")
    f:write("\161\245\50\0\0\0garbage")
    f:close()
    local j2, info = journal.open(dir .. "/j.wal")
    assert.equal(1, info.records)
    assert.equal(13, info.torn_bytes)
    assert.equal(size, engine.fs.lstat(dir .. "/j.wal").size)
    j2:append({ n = 2 })
    assert.same({ { n = 1 }, { n = 2 } }, all(j2))
    j2:close()
  end)

  it("refuses corruption before the tail with ECORRUPT and its offset", function()
    local j = journal.open(dir .. "/j.wal")
    j:append({ n = 1 })
    j:append({ n = 2 })
    j:close()
    local f = io.open(dir .. "/j.wal", "r+b")
    f:seek("set", 16 + 10 + 1)
    f:write("X")
    f:close()
    local j2, msg, code = journal.open(dir .. "/j.wal")
    assert.is_nil(j2)
    assert.equal("ECORRUPT", code)
    assert.matches("corrupt record at offset 16", msg)
  end)

  it("refuses a file that is not a journal", function()
    helpers.write(dir .. "/j.wal", '{"not": "a journal"}')
    local j, msg, code = journal.open(dir .. "/j.wal")
    assert.is_nil(j)
    assert.equal("ECORRUPT", code)
    assert.matches("not a fleetsnap journal", msg)
  end)

  it("refuses a symlink", function()
    helpers.sh("ln -s elsewhere " .. dir .. "/j.wal")
    assert.equal("EUNSAFE", select(3, journal.open(dir .. "/j.wal")))
  end)

  it("fails with ENOENT when the directory is missing", function()
    assert.equal("ENOENT", select(3, journal.open(dir .. "/no/j.wal")))
  end)
end)

describe("journal:write and journal:sync", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("makes a batch durable with one sync", function()
    local j = journal.open(dir .. "/j.wal")
    j:write({ n = 1 })
    j:write({ n = 2 })
    assert.equal(2, j:info().pending)
    assert.same({}, all(j))
    assert.is_true(j:sync())
    assert.equal(0, j:info().pending)
    assert.equal(2, j:info().records)
    assert.same({ { n = 1 }, { n = 2 } }, all(j))
    j:close()
  end)

  it("syncs pending records on close", function()
    local j = journal.open(dir .. "/j.wal")
    j:write({ n = 1 })
    j:close()
    local j2, info = journal.open(dir .. "/j.wal")
    assert.equal(1, info.records)
    j2:close()
  end)

  it("raises on a record that is not JSON", function()
    local j = journal.open(dir .. "/j.wal")
    assert.has_error(function() j:append({ f = print }) end)
    assert.has_error(function() j:append("text") end)
    j:close()
  end)

  it("raises after close", function()
    local j = journal.open(dir .. "/j.wal")
    j:close()
    assert.is_true(j:close())
    assert.has_error(function() j:append({ n = 1 }) end, "journal is closed")
  end)

  it("closes with <close>", function()
    do
      local j <close> = journal.open(dir .. "/j.wal")
      j:write({ n = 1 })
    end
    local j, info = journal.open(dir .. "/j.wal")
    assert.equal(1, info.records)
    j:close()
  end)
end)

describe("journal:compact", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("replaces the log with one checkpoint record", function()
    local j = journal.open(dir .. "/j.wal")
    for i = 1, 100 do j:write({ n = i }) end
    j:sync()
    assert.is_true(j:compact({ checkpoint = 100 }))
    j:append({ n = 101 })
    j:close()
    local j2, info = journal.open(dir .. "/j.wal")
    assert.equal(2, info.records)
    assert.same({ { checkpoint = 100 }, { n = 101 } }, all(j2))
    assert.equal("", helpers.sh("ls -A " .. dir .. " | grep fsn-tmp || true"))
    j2:close()
  end)
end)

describe("engine.journal.open readonly", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("reads records without cutting a tail another writer is appending", function()
    local j = journal.open(dir .. "/j.wal")
    j:append({ n = 1 })
    j:close()
    local f = io.open(dir .. "/j.wal", "ab")
    f:write("\161\245\50\0\0\0half")
    f:close()
    local size = engine.fs.lstat(dir .. "/j.wal").size
    local r, info = journal.open(dir .. "/j.wal", { readonly = true })
    assert.equal(1, info.records)
    assert.equal(10, info.torn_bytes)
    assert.same({ { n = 1 } }, all(r))
    r:close()
    assert.equal(size, engine.fs.lstat(dir .. "/j.wal").size)
  end)

  it("refuses writes and does not create a missing journal", function()
    assert.equal("ENOENT", select(3, journal.open(dir .. "/none.wal", { readonly = true })))
    assert.is_nil(engine.fs.lstat(dir .. "/none.wal"))
    local j = journal.open(dir .. "/j.wal")
    j:close()
    local r = journal.open(dir .. "/j.wal", { readonly = true })
    assert.equal("EINVAL", select(3, r:append({ n = 1 })))
    r:close()
  end)
end)
