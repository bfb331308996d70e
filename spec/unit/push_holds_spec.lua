-- What makes a restic snapshot the push of a backup: exactly the backup's
-- files (the excluded ones left out), each of its size.
local helpers = require "helpers"
local push = require "fleetsnap.store.push"

local function backup_dir()
  local dir = helpers.tmpdir()
  helpers.sh("mkdir -p '" .. dir .. "/m1/wasm_chunk_store' '" .. dir .. "/.fleetsnap-commands' '" .. dir
    .. "/restore'")
  helpers.write(dir .. "/fleet-backup-manifest.json", "{}")
  helpers.write(dir .. "/m1/stable_memory.bin", "12345")
  helpers.write(dir .. "/fleetsnap-journal.wal.lock", "pid=1")
  helpers.write(dir .. "/fleetsnap-push.json", "{}")
  helpers.write(dir .. "/.fleetsnap-commands/op", "")
  helpers.write(dir .. "/restore/fleetsnap-restore.wal", "")
  helpers.write(dir .. "/.fleetsnap-plan.json.fsn-tmp-9-ab", "")
  return dir
end

local function nodes()
  return { { path = "/fleet-backup-manifest.json", type = "file", size = 2 }, { path = "/m1", type = "dir" },
    { path = "/m1/stable_memory.bin", type = "file", size = 5 }, { path = "/m1/wasm_chunk_store", type = "dir" } }
end

describe("push.files", function()
  after_each(function() helpers.cleanup() end)

  it("lists the backup's files with their sizes, without locks, record, restore state and temp files", function()
    local files, n = push.files(backup_dir())
    assert.equal(2, n)
    assert.same({ type = "file", size = 2 }, files["/fleet-backup-manifest.json"])
    assert.same({ type = "file", size = 5 }, files["/m1/stable_memory.bin"])
  end)
end)

describe("push.holds", function()
  after_each(function() helpers.cleanup() end)

  it("accepts a snapshot with exactly the backup's files and sizes", function()
    local ok, n = push.holds(nodes(), (push.files(backup_dir())))
    assert.is_true(ok)
    assert.equal(2, n)
  end)

  it("refuses a snapshot that lacks a file", function()
    local ns = nodes()
    table.remove(ns, 3)
    local ok, why = push.holds(ns, (push.files(backup_dir())))
    assert.is_false(ok)
    assert.matches("/m1/stable_memory.bin is missing", why, 1, true)
  end)

  it("refuses a snapshot whose file has another size", function()
    local ns = nodes()
    ns[3].size = 4
    local ok, why = push.holds(ns, (push.files(backup_dir())))
    assert.is_false(ok)
    assert.matches("4 bytes in the snapshot, 5 here", why, 1, true)
  end)

  it("refuses a snapshot with a file the backup does not have", function()
    local ns = nodes()
    ns[#ns + 1] = { path = "/fleetsnap-push.json", type = "file", size = 2 }
    local ok, why = push.holds(ns, (push.files(backup_dir())))
    assert.is_false(ok)
    assert.matches("/fleetsnap-push.json is not in the backup", why, 1, true)
  end)
end)

describe("push.excludes", function()
  it("names the locks, the command locks, the record and the restore state by absolute path", function()
    local ex = push.excludes("/srv/b/x")
    local set = {}
    for _, e in ipairs(ex) do set[e] = true end
    for _, name in ipairs({ "fleetsnap-journal.wal.lock", ".fleetsnap-commands", "fleetsnap-push.json", "restore" }) do
      assert.is_true(set["/srv/b/x/" .. name], name)
    end
    assert.is_true(set[".*.fsn-tmp-*"])
  end)
end)
