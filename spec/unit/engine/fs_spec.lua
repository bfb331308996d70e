local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local fs = engine.fs

local function leftovers(dir)
  return helpers.sh("ls -A " .. dir .. " | grep fsn-tmp || true")
end

describe("engine.fs.write_replace", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("writes and replaces a file, 0600 by default", function()
    assert.is_true(fs.write_replace(dir .. "/doc", "one"))
    assert.is_true(fs.write_replace(dir .. "/doc", "two"))
    assert.equal("two", helpers.read(dir .. "/doc"))
    assert.equal(384, fs.lstat(dir .. "/doc").mode)
    assert.equal("", leftovers(dir))
  end)

  it("honours a mode", function()
    fs.write_replace(dir .. "/doc", "x", { mode = 420 })
    assert.equal(420, fs.lstat(dir .. "/doc").mode)
  end)

  it("fails without leaving a temp file when the target is a directory", function()
    helpers.sh("mkdir " .. dir .. "/d")
    local ok, msg, code = fs.write_replace(dir .. "/d", "x")
    assert.is_nil(ok)
    assert.equal("EISDIR", code)
    assert.matches(dir .. "/d", msg, 1, true)
    assert.equal("", leftovers(dir))
  end)

  it("fails with ENOENT when the parent is missing", function()
    assert.equal("ENOENT", select(3, fs.write_replace(dir .. "/no/doc", "x")))
  end)

  it("raises on an unknown option", function()
    assert.has_error(function() fs.write_replace(dir .. "/doc", "x", { sync = false }) end)
  end)
end)

describe("engine.fs.write_create", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("creates, then adopts an identical file", function()
    assert.equal("created", fs.write_create(dir .. "/m.json", "{}"))
    assert.equal("adopted", fs.write_create(dir .. "/m.json", "{}"))
    assert.equal("", leftovers(dir))
  end)

  it("never replaces a different file", function()
    fs.write_create(dir .. "/m.json", "{}")
    local ok, msg, code = fs.write_create(dir .. "/m.json", "[]")
    assert.is_nil(ok)
    assert.equal("ECONFLICT", code)
    assert.matches("different file already exists", msg)
    assert.equal("{}", helpers.read(dir .. "/m.json"))
    assert.equal("", leftovers(dir))
  end)

  it("refuses an existing symlink at the target", function()
    helpers.write(dir .. "/real", "{}")
    helpers.sh("ln -s real " .. dir .. "/m.json")
    assert.equal("EUNSAFE", select(3, fs.write_create(dir .. "/m.json", "{}")))
  end)
end)

describe("engine.fs.publish_dir", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("moves a staged tree to its final name", function()
    helpers.sh("mkdir -p " .. dir .. "/a.tmp/sub && echo x > " .. dir .. "/a.tmp/sub/f")
    assert.is_true(fs.publish_dir(dir .. "/a.tmp", dir .. "/a"))
    assert.equal("x\n", helpers.read(dir .. "/a/sub/f"))
    assert.is_nil(fs.lstat(dir .. "/a.tmp"))
  end)

  it("makes the published tree private when asked (dirs 0700, files 0600)", function()
    helpers.sh("mkdir -p -m 755 " .. dir .. "/a.tmp/sub && echo x > " .. dir .. "/a.tmp/sub/f && chmod 644 " .. dir
      .. "/a.tmp/sub/f")
    assert.is_true(fs.publish_dir(dir .. "/a.tmp", dir .. "/a", { private = true }))
    assert.equal(448, fs.lstat(dir .. "/a").mode)
    assert.equal(448, fs.lstat(dir .. "/a/sub").mode)
    assert.equal(384, fs.lstat(dir .. "/a/sub/f").mode)
  end)

  it("refuses an existing empty target with EEXIST and keeps the staging dir", function()
    helpers.sh("mkdir -p " .. dir .. "/a.tmp " .. dir .. "/a")
    local ok, msg, code = fs.publish_dir(dir .. "/a.tmp", dir .. "/a")
    assert.is_nil(ok)
    assert.equal("EEXIST", code)
    assert.matches("already exists", msg)
    assert.equal("directory", fs.lstat(dir .. "/a.tmp").type)
  end)

  it("refuses a staged tree holding a symlink", function()
    helpers.sh("mkdir -p " .. dir .. "/a.tmp && ln -s /etc " .. dir .. "/a.tmp/l")
    assert.equal("EUNSAFE", select(3, fs.publish_dir(dir .. "/a.tmp", dir .. "/a")))
  end)

  it("fails with ENOENT for a missing staging dir", function()
    assert.equal("ENOENT", select(3, fs.publish_dir(dir .. "/none", dir .. "/a")))
  end)
end)

describe("engine.fs.sync_tree", function()
  local dir
  before_each(function()
    dir = helpers.tmpdir()
    helpers.sh("mkdir -p " .. dir .. "/s/d && chmod 755 " .. dir .. "/s " .. dir .. "/s/d")
    helpers.write(dir .. "/s/d/f", "x")
    helpers.sh("chmod 644 " .. dir .. "/s/d/f")
  end)
  after_each(function() helpers.cleanup() end)

  it("makes a tree private in place when asked (dirs 0700, files 0600)", function()
    assert.is_true(fs.sync_tree(dir .. "/s", { private = true }))
    assert.equal(448, fs.lstat(dir .. "/s").mode)
    assert.equal(448, fs.lstat(dir .. "/s/d").mode)
    assert.equal(384, fs.lstat(dir .. "/s/d/f").mode)
  end)

  it("leaves modes alone without private, and a private tree's fingerprint alone", function()
    assert.is_true(fs.sync_tree(dir .. "/s"))
    assert.equal(420, fs.lstat(dir .. "/s/d/f").mode) -- 0644
    assert.is_true(fs.sync_tree(dir .. "/s", { private = true }))
    local fp = engine.hash.fingerprint(dir .. "/s").fingerprint
    -- Nothing left to chmod: ctime does not move, so neither does the
    -- fingerprint (what a download's publication relies on).
    assert.is_true(fs.sync_tree(dir .. "/s", { private = true }))
    assert.is_true(fs.publish_dir(dir .. "/s", dir .. "/p", { private = true }))
    assert.equal(fp, engine.hash.fingerprint(dir .. "/p").fingerprint)
  end)

  it("with start, queues the files' writeback and changes nothing (modes, fingerprint)", function()
    local fp = engine.hash.fingerprint(dir .. "/s").fingerprint
    assert.is_true(fs.sync_tree(dir .. "/s", { start = true }))
    assert.equal(420, fs.lstat(dir .. "/s/d/f").mode) -- 0644
    assert.equal(fp, engine.hash.fingerprint(dir .. "/s").fingerprint)
  end)

  it("with start, refuses what sync_tree refuses: a symlink root, a special file", function()
    helpers.sh("ln -s " .. dir .. "/s " .. dir .. "/l && mkfifo " .. dir .. "/s/d/fifo")
    assert.equal("EUNSAFE", select(3, fs.sync_tree(dir .. "/l", { start = true })))
    assert.equal("EUNSAFE", select(3, fs.sync_tree(dir .. "/s", { start = true })))
    assert.has_error(function() fs.sync_tree(dir .. "/s", { start = true, private = true }) end)
  end)

  it("lets publish_dir skip its own fsyncs (synced), still refusing a symlink root", function()
    assert.is_true(fs.sync_tree(dir .. "/s", { private = true }))
    helpers.sh("ln -s " .. dir .. "/s " .. dir .. "/l")
    assert.equal("EUNSAFE", select(3, fs.publish_dir(dir .. "/l", dir .. "/p", { synced = true })))
    assert.is_true(fs.publish_dir(dir .. "/s", dir .. "/p", { synced = true }))
    assert.equal("x", fs.read(dir .. "/p/d/f"))
    assert.is_nil(fs.lstat(dir .. "/s"))
    assert.equal("ENOENT", select(3, fs.publish_dir(dir .. "/s", dir .. "/q", { synced = true })))
  end)

  it("refuses a symlink as the root, and a symlink inside", function()
    helpers.sh("ln -s " .. dir .. "/s " .. dir .. "/l")
    assert.equal("EUNSAFE", select(3, fs.sync_tree(dir .. "/l")))
    helpers.sh("ln -s /etc " .. dir .. "/s/x")
    assert.equal("EUNSAFE", select(3, fs.sync_tree(dir .. "/s")))
  end)
end)

describe("engine.fs.mkdir_private", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("creates a 0700 dir and says so", function()
    local ok, created = fs.mkdir_private(dir .. "/s")
    assert.is_true(ok)
    assert.is_true(created)
    assert.equal(448, fs.lstat(dir .. "/s").mode)
  end)

  it("accepts an existing dir and tightens its mode", function()
    helpers.sh("mkdir -m 755 " .. dir .. "/s")
    local ok, created = fs.mkdir_private(dir .. "/s")
    assert.is_true(ok)
    assert.is_false(created)
    assert.equal(448, fs.lstat(dir .. "/s").mode)
  end)

  it("refuses a symlink and a file", function()
    helpers.sh("ln -s /tmp " .. dir .. "/l && touch " .. dir .. "/f")
    assert.equal("EUNSAFE", select(3, fs.mkdir_private(dir .. "/l")))
    assert.equal("ENOTDIR", select(3, fs.mkdir_private(dir .. "/f")))
  end)
end)

describe("engine.fs.remove_tree", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("removes a tree without following symlinks in it", function()
    helpers.sh("mkdir -p " .. dir .. "/keep " .. dir .. "/s/sub && touch " .. dir .. "/keep/f && ln -s "
      .. dir .. "/keep " .. dir .. "/s/sub/l")
    local ok, removed = fs.remove_tree(dir .. "/s")
    assert.is_true(ok)
    assert.is_true(removed)
    assert.is_nil(fs.lstat(dir .. "/s"))
    assert.equal("file", fs.lstat(dir .. "/keep/f").type)
  end)

  it("treats a missing path as already removed", function()
    local ok, removed = fs.remove_tree(dir .. "/none")
    assert.is_true(ok)
    assert.is_false(removed)
  end)

  it("refuses a symlink as the root", function()
    helpers.sh("mkdir " .. dir .. "/real && ln -s real " .. dir .. "/l")
    assert.equal("EUNSAFE", select(3, fs.remove_tree(dir .. "/l")))
    assert.equal("directory", fs.lstat(dir .. "/real").type)
  end)
end)

describe("engine.fs.safe_relative", function()
  it("accepts plain relative paths", function()
    assert.is_true(fs.safe_relative("artifacts/aaaaa-aa/wasm_memory.bin"))
  end)

  for _, bad in ipairs({ "", "/etc/passwd", "a/../b", "..", "./a", "a//b", "a/", "a\0b" }) do
    it("refuses " .. string.format("%q", bad), function()
      local ok, _, code = fs.safe_relative(bad)
      assert.is_nil(ok)
      assert.equal("EUNSAFE", code)
    end)
  end
end)

describe("engine.fs.free_space", function()
  it("returns available and total bytes", function()
    local avail, total = fs.free_space("/tmp")
    assert.is_true(avail > 0 and avail <= total)
  end)

  it("fails with ENOENT for a missing path", function()
    assert.equal("ENOENT", select(3, fs.free_space("/no/such/dir")))
  end)
end)

describe("engine.fs.read", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("reads a whole file", function()
    helpers.write(dir .. "/f", "abc\0def")
    assert.equal("abc\0def", fs.read(dir .. "/f"))
  end)

  it("fails with ETOOBIG past the limit", function()
    helpers.write(dir .. "/f", "abcdef")
    assert.equal("ETOOBIG", select(3, fs.read(dir .. "/f", 3)))
  end)

  it("refuses a symlink", function()
    helpers.write(dir .. "/f", "x")
    helpers.sh("ln -s f " .. dir .. "/l")
    assert.equal("EUNSAFE", select(3, fs.read(dir .. "/l")))
  end)
end)

describe("engine.fs.lstat and list", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() end)

  it("describe entries without following symlinks", function()
    helpers.sh("touch " .. dir .. "/b && mkdir " .. dir .. "/a && ln -s b " .. dir .. "/c")
    assert.same({ "a", "b", "c" }, fs.list(dir))
    assert.equal("symlink", fs.lstat(dir .. "/c").type)
    assert.equal("directory", fs.lstat(dir .. "/a").type)
  end)

  it("fail with ENOENT", function()
    assert.equal("ENOENT", select(3, fs.lstat(dir .. "/none")))
    assert.equal("ENOENT", select(3, fs.list(dir .. "/none")))
  end)
end)

describe("engine.fs.fsync_dir", function()
  it("syncs a directory", function()
    assert.is_true(fs.fsync_dir("/tmp"))
  end)

  it("fails with ENOENT for a missing directory", function()
    assert.equal("ENOENT", select(3, fs.fsync_dir("/no/such/dir")))
  end)
end)
