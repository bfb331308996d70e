local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local hash = engine.hash

local EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

describe("engine.hash (libcrypto)", function()
  -- In a fresh process: whether libcrypto is mapped before and after the
  -- first hash.
  local function maps_after(code)
    local r = engine.proc.run({ argv = { "lua5.4", "-e", [[
      local engine = require "fleetsnap.engine"
      local function mapped()
        for line in io.lines("/proc/self/maps") do
          if line:find("libcrypto", 1, true) then return "yes" end
        end
        return "no"
      end
      io.write(mapped())
      ]] .. code .. [[
      io.write(" ", mapped())
    ]] } })
    assert.equal(0, r.status, r.stderr)
    return r.stdout
  end

  it("is not loaded by loading the engine, only by the first hash", function()
    assert.equal("no yes", maps_after("assert(engine.hash.sha256('x'))"))
  end)

  it("stays unloaded in a process that only reads, writes and spawns", function()
    assert.equal("no no", maps_after("assert(engine.json.decode('[1]')); assert(engine.proc.run({argv = {'true'}}))"))
  end)
end)

describe("engine.hash.sha256", function()
  it("gives lowercase hex digests", function()
    assert.equal(EMPTY, hash.sha256(""))
    assert.equal("e2cac2614be96c3c77c67a808947928422533f173d2806ef749c42265c8ca08a", hash.sha256("app snapshot"))
  end)

  it("raises on a non-string", function()
    assert.has_error(function() hash.sha256({}) end)
  end)
end)

describe("engine.hash.file", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() collectgarbage("collect") end)

  it("returns hex and size", function()
    helpers.write(dir .. "/f", "app snapshot")
    local hex, size = hash.file(dir .. "/f")
    assert.equal("e2cac2614be96c3c77c67a808947928422533f173d2806ef749c42265c8ca08a", hex)
    assert.equal(12, size)
  end)

  it("agrees with openssl on a multi-chunk file", function()
    helpers.sh("head -c 3000000 /dev/urandom > " .. dir .. "/big")
    local want = helpers.sh("openssl dgst -sha256 -r " .. dir .. "/big"):match("^(%x+)")
    local hex, size = hash.file(dir .. "/big")
    assert.equal(want, hex)
    assert.equal(3000000, size)
  end)

  it("fails with ENOENT for a missing file", function()
    local hex, msg, code = hash.file(dir .. "/nope")
    assert.is_nil(hex)
    assert.equal("ENOENT", code)
    assert.matches("nope", msg)
  end)

  it("refuses a symlink with EUNSAFE", function()
    helpers.write(dir .. "/f", "x")
    helpers.sh("ln -s f " .. dir .. "/l")
    local _, msg, code = hash.file(dir .. "/l")
    assert.equal("EUNSAFE", code)
    assert.matches("symbolic link", msg)
  end)

  it("refuses a FIFO with EUNSAFE without blocking", function()
    helpers.sh("mkfifo " .. dir .. "/p")
    local _, _, code = hash.file(dir .. "/p")
    assert.equal("EUNSAFE", code)
  end)

  it("fails with EISDIR for a directory", function()
    local _, _, code = hash.file(dir)
    assert.equal("EISDIR", code)
  end)
end)

describe("engine.hash.tree", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() collectgarbage("collect") end)

  it("matches the manifest contract's examples", function()
    helpers.sh("mkdir -p " .. dir .. "/one " .. dir .. "/two/nested")
    helpers.write(dir .. "/one/snapshot.bin", "app snapshot")
    helpers.write(dir .. "/two/nested/b.txt", "b")
    helpers.write(dir .. "/two/a.txt", "a")
    assert.equal("e25f06e07b6815cc3e23d409f84b71affebc05dbfb5f81f55634c6bea5976c87", hash.tree(dir .. "/one").digest)
    local t = hash.tree(dir .. "/two")
    assert.equal("e4d330f138b8f1b3044e84b5dcbe4fd1cb7e043d0c20810c083d791b6de01266", t.digest)
    assert.equal(2, t.bytes)
    assert.same({
      { path = "a.txt", size = 1, sha256 = hash.sha256("a") },
      { path = "nested/b.txt", size = 1, sha256 = hash.sha256("b") },
    }, t.files)
  end)

  it("orders paths component-wise, not bytewise", function()
    helpers.sh("mkdir -p " .. dir .. "/t/a " .. dir .. "/t/a-b")
    helpers.write(dir .. "/t/a/b", "1")
    helpers.write(dir .. "/t/a-b/x", "2")
    local t = hash.tree(dir .. "/t")
    assert.equal("a/b", t.files[1].path)
    assert.equal("a-b/x", t.files[2].path)
    local input = "a/b\0" .. hash.sha256("1") .. "\na-b/x\0" .. hash.sha256("2") .. "\n"
    assert.equal(hash.sha256(input), t.digest)
  end)

  it("gives the same digest with any number of threads", function()
    helpers.sh("mkdir -p " .. dir .. "/t/d; for i in $(seq 1 40); do head -c $((i * 1000)) /dev/urandom > "
      .. dir .. "/t/d/f$i; done")
    local one = hash.tree(dir .. "/t", { threads = 1 })
    for _, n in ipairs({ 2, 3, 8 }) do
      assert.equal(one.digest, hash.tree(dir .. "/t", { threads = n }).digest)
    end
  end)

  it("hashes an empty tree to the digest of nothing", function()
    assert.equal(EMPTY, hash.tree(dir).digest)
  end)

  it("refuses a symlink inside the tree, naming it", function()
    helpers.sh("mkdir -p " .. dir .. "/t/sub && ln -s /etc/passwd " .. dir .. "/t/sub/evil")
    local t, msg, code = hash.tree(dir .. "/t")
    assert.is_nil(t)
    assert.equal("EUNSAFE", code)
    assert.matches("sub/evil", msg)
  end)

  it("refuses a FIFO inside the tree", function()
    helpers.sh("mkdir -p " .. dir .. "/t && mkfifo " .. dir .. "/t/p")
    local _, msg, code = hash.tree(dir .. "/t")
    assert.equal("EUNSAFE", code)
    assert.matches("FIFO", msg)
  end)

  it("refuses a symlinked root", function()
    helpers.sh("mkdir " .. dir .. "/real && ln -s real " .. dir .. "/alias")
    local _, _, code = hash.tree(dir .. "/alias")
    assert.equal("EUNSAFE", code)
  end)

  it("fails with ENOENT and ENOTDIR", function()
    assert.equal("ENOENT", select(3, hash.tree(dir .. "/none")))
    helpers.write(dir .. "/file", "x")
    assert.equal("ENOTDIR", select(3, hash.tree(dir .. "/file")))
  end)

  it("raises on a bad thread count", function()
    assert.has_error(function() hash.tree(dir, { threads = -1 }) end)
    assert.has_error(function() hash.tree(dir, { thread = 1 }) end, "unknown option 'thread'")
  end)
end)

describe("engine.hash.copy_tree", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.cleanup() collectgarbage("collect") end)

  it("copies into a new private dir and describes the copied bytes", function()
    helpers.sh("mkdir -p " .. dir .. "/src/wasm_chunk_store")
    helpers.write(dir .. "/src/metadata.json", "{}")
    helpers.write(dir .. "/src/wasm_chunk_store/c.bin", "chunk")
    local want = hash.tree(dir .. "/src")
    local got = hash.copy_tree(dir .. "/src", dir .. "/dst", { sync = true })
    -- A fingerprint names inodes: the copy's are new, so it has none.
    assert.is_nil(got.fingerprint)
    want.fingerprint = nil
    assert.same(want, got)
    local copied = hash.tree(dir .. "/dst")
    assert.not_equal(hash.tree(dir .. "/src").fingerprint, copied.fingerprint)
    copied.fingerprint = nil
    assert.same(want, copied)
    assert.equal(448, engine.fs.lstat(dir .. "/dst").mode) -- 0700
    assert.equal(448, engine.fs.lstat(dir .. "/dst/wasm_chunk_store").mode)
    assert.equal(384, engine.fs.lstat(dir .. "/dst/metadata.json").mode) -- 0600
  end)

  it("refuses an existing destination with EEXIST", function()
    helpers.sh("mkdir -p " .. dir .. "/src " .. dir .. "/dst")
    local t, _, code = hash.copy_tree(dir .. "/src", dir .. "/dst")
    assert.is_nil(t)
    assert.equal("EEXIST", code)
  end)

  it("refuses a source with a symlink", function()
    helpers.sh("mkdir -p " .. dir .. "/src && ln -s /etc " .. dir .. "/src/x")
    local _, _, code = hash.copy_tree(dir .. "/src", dir .. "/dst")
    assert.equal("EUNSAFE", code)
  end)
end)

describe("engine.hash.fingerprint", function()
  local dir
  before_each(function()
    dir = helpers.tmpdir()
    helpers.sh("mkdir -p " .. dir .. "/t/sub")
    helpers.write(dir .. "/t/a", "alpha")
    helpers.write(dir .. "/t/sub/b", "beta")
  end)
  after_each(function() helpers.cleanup() collectgarbage("collect") end)

  it("equals the fingerprint hash.tree records, without reading a byte", function()
    local before = hash.stats()
    local fp = hash.fingerprint(dir .. "/t")
    assert.same(before, hash.stats())
    assert.equal(hash.tree(dir .. "/t").fingerprint, fp.fingerprint)
    assert.equal(9, fp.bytes)
    assert.is_nil(fp.digest)
    assert.same({ { path = "a", size = 5 }, { path = "sub/b", size = 4 } }, fp.files)
  end)

  it("moves when a file is rewritten with the same size and content", function()
    local fp = hash.fingerprint(dir .. "/t").fingerprint
    -- Same bytes, new inode: a replaced file is not the file that was read.
    helpers.sh("cp " .. dir .. "/t/a " .. dir .. "/a2 && mv " .. dir .. "/a2 " .. dir .. "/t/a")
    assert.equal(hash.tree(dir .. "/t").digest, hash.tree(dir .. "/t").digest)
    assert.not_equal(fp, hash.fingerprint(dir .. "/t").fingerprint)
  end)

  it("moves when a file is written in place", function()
    local fp = hash.fingerprint(dir .. "/t").fingerprint
    local f = assert(io.open(dir .. "/t/sub/b", "r+b"))
    f:write("B")
    f:close()
    assert.not_equal(fp, hash.fingerprint(dir .. "/t").fingerprint)
  end)

  it("stays put when the tree is renamed or read", function()
    local fp = hash.fingerprint(dir .. "/t").fingerprint
    hash.tree(dir .. "/t")
    assert(os.rename(dir .. "/t", dir .. "/u"))
    assert.equal(fp, hash.fingerprint(dir .. "/u").fingerprint)
  end)

  it("refuses a symlink inside, and fails with ENOENT for a missing tree", function()
    helpers.sh("ln -s /etc " .. dir .. "/t/x")
    assert.equal("EUNSAFE", select(3, hash.fingerprint(dir .. "/t")))
    assert.equal("ENOENT", select(3, hash.fingerprint(dir .. "/none")))
  end)
end)

describe("engine.hash.start_tree", function()
  local dir
  before_each(function()
    dir = helpers.tmpdir()
    helpers.sh("mkdir -p " .. dir .. "/t && head -c 3000000 /dev/urandom > " .. dir .. "/t/big")
    helpers.write(dir .. "/t/small", "s")
  end)
  after_each(function() helpers.cleanup() collectgarbage("collect") end)

  it("gives the tree hash.tree gives, once", function()
    local task = assert(hash.start_tree(dir .. "/t", { threads = 1 }))
    local got = task:result()
    assert.same(hash.tree(dir .. "/t"), got)
    assert.is_true(task:done())
    local again, msg, code = task:result()
    assert.is_nil(again)
    assert.equal("EINVAL", code, msg)
  end)

  it("is waited for by proc.wait_any, alongside processes", function()
    local task = assert(hash.start_tree(dir .. "/t"))
    local p = assert(engine.proc.spawn({ argv = { "sleep", "30" } }))
    assert.equal(task, engine.proc.wait_any({ p, task }))
    assert.equal(task, engine.proc.wait_any({ task }, 0))
    p:close()
    assert.equal(hash.tree(dir .. "/t").digest, task:result().digest)
    task:close()
  end)

  it("reports a failure through result", function()
    local task = assert(hash.start_tree(dir .. "/none"))
    local tree, _, code = task:result()
    assert.is_nil(tree)
    assert.equal("ENOENT", code)
  end)

  it("closes idempotently, cancelling a running task", function()
    local task = assert(hash.start_tree(dir .. "/t"))
    task:close()
    task:close()
    assert.matches("closed", tostring(task))
    assert.has_error(function() task:result() end)
    assert.has_error(function() engine.proc.wait_any({ task }) end, "hash task is closed")
  end)

  it("counts every byte it reads in hash.stats", function()
    local before = hash.stats()
    assert(hash.start_tree(dir .. "/t")):result()
    local after = hash.stats()
    assert.equal(3000001, after.bytes - before.bytes)
    assert.equal(2, after.files - before.files)
  end)
end)
