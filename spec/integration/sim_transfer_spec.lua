-- icp-sim's snapshot download and upload: the real layout and algorithm,
-- interruption and --resume.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local HEAP = 5000000 -- three 2,000,000-byte slices

local function setup()
  local home = helpers.sim_home({ heap = HEAP, stable = 70000 })
  local fleet = helpers.fleet(home)
  -- The root (first in order) keeps two Wasm chunks.
  local c = fleet.members[1].canister_id
  assert(helpers.icp(home, { "canister", "stop", c, "-e", "local" }).status == 0)
  local id = helpers.icp(home, { "canister", "snapshot", "create", c, "-e", "local", "-q" }).stdout:sub(1, -2)
  return home, c, id
end

local function snapshot_data(home, c, id)
  return home .. "/canisters/" .. c .. "/snapshots/" .. id .. "/data"
end

local function same_blobs(a, b)
  for _, name in ipairs({ "wasm_module.bin", "wasm_memory.bin", "stable_memory.bin" }) do
    local x, y = fs.read(a .. "/" .. name), fs.read(b .. "/" .. name)
    if x ~= y then return false, name end
  end
  return true
end

describe("icp-sim canister snapshot download", function()
  local home, c, id, out
  before_each(function()
    home, c, id = setup()
    out = helpers.tmpdir() .. "/dl"
  end)
  after_each(function() helpers.cleanup() end)

  it("writes icp's layout and prints its lines", function()
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "--output", out, "-e", "local" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("", r.stdout)
    assert.matches("^Downloading snapshot " .. id .. " from canister " .. c:gsub("%-", "%%-") .. " %("
      .. c:gsub("%-", "%%-") .. "%)\n  Timestamp: [%d%- :]+ UTC\n  Total size: [%d%.]+ MiB\nDownloading 2 WASM chunks%.%.%.\n"
      .. "WASM chunks: done\nSnapshot downloaded to " .. out:gsub("%-", "%%-") .. "\n$", r.stderr)
    assert.same({ ".lock", "metadata.json", "stable_memory.bin", "wasm_chunk_store", "wasm_memory.bin",
      "wasm_module.bin" }, fs.list(out))
    assert.is_true(same_blobs(out, snapshot_data(home, c, id)))
    for _, name in ipairs(fs.list(out .. "/wasm_chunk_store")) do
      local hex = name:match("^(%x+)%.bin$")
      assert.equal(hex, engine.hash.file(out .. "/wasm_chunk_store/" .. name))
    end
    local meta_text = fs.read(out .. "/metadata.json")
    assert.are_not.equal("\n", meta_text:sub(-1))
    local meta = json.decode(meta_text)
    assert.equal(HEAP, meta.wasm_memory_size)
    assert.equal(2, #meta.wasm_chunk_store)
    assert.equal(32, #meta.wasm_chunk_store[1].hash)
    assert.matches('^{\n  "source": {\n    "taken_from_canister": null\n  },\n  "taken_at_timestamp": %d+,\n'
      .. '  "wasm_module_size": %d+,\n  "globals": %[', meta_text)
  end)

  it("creates its files and directories with icp's modes, the .lock included (0644/0755 under umask 022)", function()
    -- icp leaves DIR/.lock behind as an ordinary 0644 file (observed,
    -- spec/e2e/fidelity_spec.lua); a 0600 lock was icp-sim's own.
    local r = engine.proc.run({ argv = { "sh", "-c", 'umask 022 && exec "$0" "$@"', helpers.root .. "/scripts/icp-sim",
      "canister", "snapshot", "download", c, id, "--output", out, "-e", "local" },
      env = { ICP_SIM_HOME = home }, unset_env = { "LD_PRELOAD" }, timeout_ms = 120000 })
    assert.equal(0, r.status, r.stderr)
    local modes = {}
    for _, name in ipairs(fs.list(out)) do modes[name] = string.format("%o", fs.lstat(out .. "/" .. name).mode & 4095) end
    modes.dir = string.format("%o", fs.lstat(out).mode & 4095)
    assert.same({ dir = "755", [".lock"] = "644", ["metadata.json"] = "644", ["stable_memory.bin"] = "644",
      wasm_chunk_store = "755", ["wasm_memory.bin"] = "644", ["wasm_module.bin"] = "644" }, modes)
  end)

  it("fails as icp fails on a full disk, naming the file and the OS error (exit 1, not a silent short file)", function()
    local mnt = helpers.tmpdir() .. "/small"
    helpers.sh("mkdir -p " .. mnt .. " && mount -t tmpfs -o size=2m tmpfs " .. mnt)
    finally(function() engine.proc.run({ argv = { "umount", "-l", mnt } }) end)
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", mnt .. "/dl", "-e", "local" })
    assert.equal(1, r.status, r.stderr)
    assert.matches("Error: Failed to write to file " .. (mnt .. "/dl/"):gsub("%p", "%%%0") .. "[%w_%.]+\n\n"
      .. "Caused by:\n    No space left on device %(os error 28%)\n$", r.stderr)
    assert.is_nil(r.stderr:find("icp-sim", 1, true), r.stderr)
  end)

  it("refuses a directory holding a previous download", function()
    helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "-e", "local" })
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "-e", "local" })
    assert.equal(1, r.status)
    assert.equal("Error: Directory " .. out .. " is not empty. Use --resume to continue a previous download or "
      .. "choose an empty directory.\n", r.stderr)
  end)

  it("refuses --resume with nothing to resume", function()
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "--resume", "-e", "local" })
    assert.equal(1, r.status)
    assert.equal("Error: Cannot resume: no existing download found in " .. out .. "\n", r.stderr)
    assert.same({ ".lock", "wasm_chunk_store" }, fs.list(out))
  end)

  it("fails on a snapshot that does not exist (IC0305), naming the metadata step", function()
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, "00" .. id:sub(3, -3) .. "ff", "-o", out,
      "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("Error: Failed to read snapshot metadata for canister " .. c:gsub("%-", "%%-") .. "\n\nCaused by:\n"
      .. "    0: direct update call failed: The replica returned a rejection error", r.stderr)
  end)

  it("leaves a progress file when killed midway, and --resume completes the same bytes", function()
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "-e", "local" },
      { ICP_SIM_CRASH = "snapshot.download:2000000" })
    assert.equal(9, r.signal)
    local progress = json.decode(fs.read(out .. "/.download_progress.json"))
    assert.equal(2000000, progress.wasm_memory.frontier)
    assert.equal(HEAP, fs.lstat(out .. "/wasm_memory.bin").size) -- preallocated
    r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "--resume", "-e", "local" })
    assert.equal(0, r.status, r.stderr)
    assert.matches("^Resuming previous download%.%.%.\nWASM module: already complete\n", r.stderr)
    assert.is_nil(fs.lstat(out .. "/.download_progress.json"))
    assert.is_true(same_blobs(out, snapshot_data(home, c, id)))
  end)

  it("records slices ahead of the frontier when completion order varies", function()
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "-e", "local" },
      { ICP_SIM_CRASH = "snapshot.download:2000000", ICP_SIM_SHUFFLE_SEED = "3" })
    assert.equal(9, r.signal)
    local text = fs.read(out .. "/.download_progress.json")
    local p = json.decode(text)
    assert.equal(1, #p.wasm_memory.ahead + (p.wasm_memory.frontier > 0 and 1 or 0))
    assert.are_not.equal("\n", text:sub(-1))
    r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "--resume", "-e", "local" })
    assert.equal(0, r.status)
    assert.is_true(same_blobs(out, snapshot_data(home, c, id)))
  end)

  it("can leave a full-size zero-filled blob and no progress file (abort-early)", function()
    local r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "-e", "local" },
      { ICP_SIM_CRASH = "snapshot.download:0:abort-early" })
    assert.equal(1, r.status)
    assert.matches("Error: Failed to read snapshot data chunk at offset 0", r.stderr)
    assert.is_nil(fs.lstat(out .. "/.download_progress.json"))
    local module = fs.read(out .. "/wasm_module.bin")
    assert.equal(module:len(), select(2, module:gsub("%z", "")))
    r = helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", out, "--resume", "-e", "local" })
    assert.equal(0, r.status)
    assert.is_true(same_blobs(out, snapshot_data(home, c, id)))
  end)
end)

describe("icp-sim canister snapshot upload", function()
  local home, c, id, dir
  before_each(function()
    home, c, id = setup()
    dir = helpers.tmpdir() .. "/dl"
    assert.equal(0, helpers.icp(home, { "canister", "snapshot", "download", c, id, "-o", dir, "-e", "local" }).status)
  end)
  after_each(function() helpers.cleanup() end)

  it("creates a new, complete snapshot that restores", function()
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "--input", dir, "-e", "local", "--json" })
    assert.equal(0, r.status, r.stderr)
    local new = json.decode(r.stdout).snapshot_id
    assert.matches('^{"snapshot_id":"%x+"}$', r.stdout)
    assert.matches("Created snapshot " .. new .. " for upload\nUploading 2 WASM chunks%.%.%.\nWASM chunks: done\n"
      .. "Use `icp canister snapshot restore " .. c:gsub("%-", "%%-") .. " " .. new .. "` to restore from this snapshot\n$",
      r.stderr)
    assert.is_nil(fs.lstat(dir .. "/.upload_progress.json"))
    assert.equal(1, helpers.effects(home)[c].snapshot_upload)
    assert.is_true(same_blobs(snapshot_data(home, c, new), snapshot_data(home, c, id)))
    r = helpers.icp(home, { "canister", "snapshot", "restore", c, new, "-e", "local" })
    assert.equal(0, r.status, r.stderr)
  end)

  it("leaves an incomplete orphan when killed; --resume completes that same snapshot", function()
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "-e", "local", "-q" },
      { ICP_SIM_CRASH = "snapshot.upload:2000000" })
    assert.equal(9, r.signal)
    local progress = json.decode(fs.read(dir .. "/.upload_progress.json"))
    local orphan = progress.snapshot_id
    assert.is_true(progress.metadata_uploaded)
    r = helpers.icp(home, { "canister", "snapshot", "restore", c, orphan, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("is not currently loadable", r.stderr)
    assert.equal(0, helpers.effects(home)[c].snapshot_upload)
    r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "--resume", "-e", "local", "-q" })
    assert.equal(0, r.status, r.stderr)
    assert.equal(orphan .. "\n", r.stdout)
    assert.matches("Resuming upload to snapshot " .. orphan, r.stderr)
    assert.equal(1, helpers.effects(home)[c].snapshot_upload)
    assert.equal(0, helpers.icp(home, { "canister", "snapshot", "restore", c, orphan, "-e", "local" }).status)
  end)

  it("creates a second snapshot when re-run without --resume, leaving the orphan", function()
    helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "-e", "local" },
      { ICP_SIM_CRASH = "snapshot.upload:0:error" })
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "-e", "local" })
    assert.equal(0, r.status)
    local doc = json.decode(helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "--json" }).stdout)
    assert.equal(3, #doc.snapshots)
  end)

  it("refuses --resume without a progress file", function()
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "--resume", "-e", "local" })
    assert.equal(1, r.status)
    assert.equal("Error: Cannot resume: no upload progress file found in " .. dir .. "\n",
      r.stderr:match("Error: .*$"))
  end)

  it("refuses a directory without metadata.json", function()
    local empty = helpers.tmpdir()
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", empty, "-e", "local" })
    assert.equal("Error: Missing required file: " .. empty .. "/metadata.json\n", r.stderr)
  end)

  it("refuses malformed metadata, naming the file and the field", function()
    local meta = json.decode(fs.read(dir .. "/metadata.json"))
    meta.taken_at_timestamp = nil
    helpers.write(dir .. "/metadata.json", json.encode(meta))
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "-e", "local" })
    assert.equal(1, r.status)
    assert.equal("Error: failed to parse json file at " .. dir .. "/metadata.json\n\nCaused by:\n    missing field "
      .. "`taken_at_timestamp`\n", r.stderr)
  end)

  it("refuses null globals before creating anything", function()
    local meta = json.decode(fs.read(dir .. "/metadata.json"))
    meta.globals[1] = json.null
    helpers.write(dir .. "/metadata.json", json.encode(meta))
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "-e", "local" })
    assert.matches("Error: Invalid snapshot metadata: snapshot metadata contains unparseable globals\n$", r.stderr)
    local doc = json.decode(helpers.icp(home, { "canister", "snapshot", "list", c, "-e", "local", "--json" }).stdout)
    assert.equal(1, #doc.snapshots)
  end)

  it("fails on a missing blob file after creating the snapshot", function()
    os.remove(dir .. "/wasm_memory.bin")
    local r = helpers.icp(home, { "canister", "snapshot", "upload", c, "-i", dir, "-e", "local" })
    assert.equal(1, r.status)
    assert.matches("Error: Failed to get file size at " .. dir:gsub("%-", "%%-") .. "/wasm_memory%.bin\n\nCaused by:\n"
      .. "    No such file or directory %(os error 2%)\n$", r.stderr)
  end)
end)
