--- `canister snapshot download` and `upload`, with icp 1.5.0's real
-- algorithm and on-disk traces (reference §3.5, §3.6): a .lock in the
-- directory, 2,000,000-byte slices, preallocated zero-filled blobs, a
-- progress file rewritten atomically after each slice, --resume.
local engine = require "fleetsnap.engine"
local hex = require "fleetsnap.hex"
local text = require "icp_sim.text"
local Home = require "icp_sim.home"
local commands = require "icp_sim.commands"

local json, fs = engine.json, engine.fs

local M = {}

local SLICE = 2000000
local LABEL = { wasm_module = "WASM module", wasm_memory = "WASM memory", stable_memory = "Stable memory" }
local FOREVER_MS = 7 * 24 * 3600 * 1000

local function exists(path)
  return fs.lstat(path) ~= nil
end

local function mkdir_p(path)
  local r = engine.proc.run({ argv = { "mkdir", "-p", path } })
  return r.status == 0, r.stderr
end

local function write_pretty(path, value)
  local tmp = path .. ".tmp"
  Home.write_local(tmp, json.encode(value, { pretty = true }))
  Home.must("rename " .. tmp, os.rename(tmp, path))
end

local function read_at(path, offset, len)
  local f = Home.must("read " .. path, io.open(path, "rb"))
  f:seek("set", offset)
  local data = f:read(len) or ""
  f:close()
  return data
end

-- A zero-filled file of `size` bytes, written by put (Home.write_local in
-- the operator's directory, Home.write_sim in the simulated network).
local function preallocate(path, size, put)
  put(path, "")
  if size > 0 then put(path, "\0", size - 1) end
end

local function chunk_hexes(meta)
  local out = {}
  for i, c in ipairs(meta.wasm_chunk_store or {}) do
    out[i] = hex.encode_list(c.hash)
  end
  return out
end

-- Sleeps for the payload's share of the per-transfer and the home-wide
-- bandwidth (a virtual-time queue shared by every concurrent transfer).
local function throttle(ctx, bytes)
  local f = ctx.faults
  local wait_s = 0
  if f.bps and f.bps > 0 then
    wait_s = bytes / f.bps
  end
  if f.shared_bps and f.shared_bps > 0 then
    local home = ctx.home
    local _lock <close> = Home.must("bandwidth lock",
      engine.lock.acquire(home:path(".bandwidth.lock"), { wait_ms = 600000, owner = "" }))
    local state = home:read_json(home:path("bandwidth.json")) or { next_free_ns = 0 }
    local now = engine.realtime_ns()
    local start = math.max(now, state.next_free_ns)
    local finish = start + math.floor(bytes * 1e9 / f.shared_bps)
    state.next_free_ns = finish
    home:write_json(home:path("bandwidth.json"), state)
    wait_s = math.max(wait_s, (finish - now) / 1e9)
  end
  if f.drops and f.drops > 0 then
    -- A dropped connection, retried by icp's backoff and absorbed.
    f.drops = f.drops - 1
    wait_s = wait_s + 0.05
  end
  ctx.sleep_ms(wait_s * 1000)
end

-- A crash fault reached: the process dies, errors, or stalls as asked.
local function crash(ctx, offset, what)
  local mode = ctx.faults.crash.mode
  if mode == "kill" then
    return ctx.die()
  elseif mode == "stall" then
    return ctx.hang()
  end
  local _, inner = text.http(503)
  return ctx.fail(text.chain(string.format("Failed to %s chunk at offset %d", what, offset),
    { "direct update call failed: " .. inner, inner }))
end

local function management_error(ctx, top, code, params)
  params.canister = ctx.canister
  local inner = text.reject(code, params):match("Caused by:\n    (.*)\n$"):gsub("\n    ", "\n")
  return ctx.fail(text.chain(top, { "direct update call failed: " .. inner, inner }))
end

local function lock_dir(ctx, dir)
  -- icp creates its .lock as an ordinary file (0666 less the umask: 0644
  -- under the usual 022, observed); the engine's lock would create it 0600,
  -- so the file is made first and the lock then only opens it.
  if not engine.fs.lstat(dir .. "/.lock") then
    local f = io.open(dir .. "/.lock", "ab")
    if f then f:close() end
  end
  local lock, err = engine.lock.acquire(dir .. "/.lock", { wait_ms = FOREVER_MS, owner = "" })
  if not lock then
    return nil, ctx.fail("Error: failed to lock " .. dir .. "/.lock\n\nCaused by:\n    " .. err .. "\n")
  end
  return lock
end

-- {=== download ===}

local function download_blobs(ctx, dir, meta, snapdir, progress, sent)
  local order = { "wasm_module", "wasm_memory", "stable_memory" }
  local seed = tonumber(os.getenv("ICP_SIM_SHUFFLE_SEED") or "")
  for _, blob in ipairs(order) do
    local size = meta[blob .. "_size"]
    local path = dir .. "/" .. blob .. ".bin"
    local p = progress[blob]
    if size == 0 then
      if blob == "stable_memory" then preallocate(path, 0, Home.write_local) end
    elseif p.frontier >= size then
      ctx.stderr(LABEL[blob] .. ": already complete\n")
    else
      if not exists(path) then preallocate(path, size, Home.write_local) end
      local done = {}
      for _, off in ipairs(p.ahead) do done[off] = true end
      local todo = {}
      for off = 0, size - 1, SLICE do
        if off >= p.frontier and not done[off] then todo[#todo + 1] = off end
      end
      if seed then
        -- icp requests all slices at once; completion order varies.
        local state = seed
        for i = #todo, 2, -1 do
          state = (state * 1103515245 + 12345) % 2147483648
          local j = state % i + 1
          todo[i], todo[j] = todo[j], todo[i]
        end
      end
      for _, off in ipairs(todo) do
        local len = math.min(SLICE, size - off)
        if ctx.faults.crash and sent.bytes >= ctx.faults.crash.bytes then
          return crash(ctx, off, "read snapshot data")
        end
        if not exists(snapdir) then
          return management_error(ctx, string.format("Failed to read snapshot data chunk at offset %d", off),
            "IC0305", { snapshot = ctx.canister .. "-0" })
        end
        throttle(ctx, len)
        Home.write_local(path, read_at(snapdir .. "/data/" .. blob .. ".bin", off, len), off)
        sent.bytes = sent.bytes + len
        if off == p.frontier then
          p.frontier = off + len
          local moved = true
          while moved do
            moved = false
            for i, a in ipairs(p.ahead) do
              if a == p.frontier then
                p.frontier = math.min(a + SLICE, size)
                table.remove(p.ahead, i)
                moved = true
                break
              end
            end
          end
        else
          p.ahead[#p.ahead + 1] = off
        end
        write_pretty(dir .. "/.download_progress.json", progress)
      end
    end
  end
end

local function corrupt(ctx, dir, meta)
  local spec = ctx.faults.corrupt
  local seed = tonumber(os.getenv("ICP_SIM_SEED") or "") or 1
  local file = spec.file
  if not file then
    local candidates = {}
    for _, b in ipairs({ "wasm_module", "wasm_memory", "stable_memory" }) do
      if meta[b .. "_size"] > 0 then candidates[#candidates + 1] = b .. ".bin" end
    end
    file = candidates[seed % #candidates + 1]
  end
  local path = dir .. "/" .. file
  local size = fs.lstat(path).size
  local off = spec.offset or ((seed * 2654435761) % size)
  local b = read_at(path, off, 1):byte()
  Home.write_local(path, string.char(b ~ 0xFF), off)
end

local function progress_doc()
  local function blob()
    return json.ordered({ frontier = 0, ahead = json.array({}) }, { "frontier", "ahead" })
  end
  return json.ordered({ wasm_module = blob(), wasm_memory = blob(), stable_memory = blob() },
    { "wasm_module", "wasm_memory", "stable_memory" })
end

local function load_progress(path)
  local text_ = fs.read(path)
  local doc = progress_doc()
  local saved = text_ and json.decode(text_)
  if saved then
    for _, b in ipairs({ "wasm_module", "wasm_memory", "stable_memory" }) do
      if saved[b] then
        doc[b].frontier = saved[b].frontier
        for _, a in ipairs(saved[b].ahead) do doc[b].ahead[#doc[b].ahead + 1] = a end
      end
    end
  end
  return doc
end

function M.download(ctx)
  local o, home = ctx.cmd.options, ctx.home
  local dir = o.output:gsub("(.)/+$", "%1")
  local id = ctx.cmd.args.snapshot_id:lower()
  local ok, err = mkdir_p(dir)
  if not ok then
    return ctx.fail("Error: failed to create directory " .. dir .. "\n\nCaused by:\n    " .. err)
  end
  local lock, rc = lock_dir(ctx, dir)
  if not lock then return rc end
  mkdir_p(dir .. "/wasm_chunk_store")
  if ctx.faults.hang then return ctx.hang() end
  local meta_top = "Failed to read snapshot metadata for canister " .. ctx.canister
  if ctx.faults.unreachable then
    ctx.sleep_ms((tonumber(os.getenv("ICP_SIM_RETRY_SECS") or "0") or 0) * 1000)
  end
  if ctx.faults.fail then
    local f = ctx.faults.fail
    local _, inner
    if f == "transport" then
      _, inner = text.transport(ctx.url, ctx.canister)
    elseif f == "http503" or f == "http429" then
      _, inner = text.http(f == "http503" and 503 or 429)
    end
    if inner then
      return ctx.fail(text.chain(meta_top, { "direct update call failed: " .. inner, inner }))
    end
    return commands.injected_failure(ctx)
  end

  local meta
  local files = { "metadata.json", "wasm_module.bin", "wasm_memory.bin", "stable_memory.bin" }
  if not o.resume then
    for _, name in ipairs(files) do
      if exists(dir .. "/" .. name) then
        return ctx.fail("Error: Directory " .. dir .. " is not empty. Use --resume to continue a previous download "
          .. "or choose an empty directory.\n")
      end
    end
    ctx.stderr(string.format("Downloading snapshot %s from canister %s (%s)\n", id, ctx.canister_label, ctx.canister))
    local c = home:canister(ctx.canister)
    if not c or ctx.faults.missing_canister then
      return management_error(ctx, meta_top, "IC0301", {})
    end
    local allowed = not ctx.faults.not_controller
    if allowed then
      allowed = false
      for _, p in ipairs(c.controllers) do
        if p == ctx.caller then allowed = true end
      end
    end
    if not allowed then
      return management_error(ctx, meta_top, "IC0512", { controllers = c.controllers, sender = ctx.caller })
    end
    local snap = not ctx.faults.snapshot_gone[id] and home:snapshot(ctx.canister, id)
    if not snap then
      local counter = #id == 36 and tonumber(id:sub(1, 16), 16) or 0
      return management_error(ctx, meta_top, "IC0305", { snapshot = ctx.canister .. "-" .. counter })
    end
    local meta_path = home:snapshot_dir(ctx.canister, id) .. "/metadata.json"
    local meta_text = Home.must("read " .. meta_path, fs.read(meta_path))
    meta = json.decode(meta_text)
    ctx.stderr(string.format("  Timestamp: %s\n  Total size: %s\n", text.timestamp(meta.taken_at_timestamp),
      text.size(meta.wasm_module_size + meta.wasm_memory_size + meta.stable_memory_size)))
    if ctx.faults.silent then
      ctx.stderr("Snapshot downloaded to " .. dir .. "\n")
      return 0
    end
    Home.write_local(dir .. "/metadata.json", meta_text)
  else
    local meta_text = fs.read(dir .. "/metadata.json")
    if not meta_text then
      return ctx.fail("Error: Cannot resume: no existing download found in " .. dir .. "\n")
    end
    ctx.stderr("Resuming previous download...\n")
    meta = json.decode(meta_text)
  end

  local snapdir = home:snapshot_dir(ctx.canister, id)
  local progress = load_progress(dir .. "/.download_progress.json")
  local sent = { bytes = 0 }
  local failed = download_blobs(ctx, dir, meta, snapdir, progress, sent)
  if failed then return failed end

  local chunks = chunk_hexes(meta)
  if #chunks > 0 then
    ctx.stderr(string.format("Downloading %d WASM chunks...\n", #chunks))
    for _, h in ipairs(chunks) do
      local path = dir .. "/wasm_chunk_store/" .. h .. ".bin"
      if not exists(path) then
        if ctx.faults.crash and sent.bytes >= ctx.faults.crash.bytes then
          return crash(ctx, 0, "read snapshot data")
        end
        local data = fs.read(snapdir .. "/data/wasm_chunk_store/" .. h .. ".bin")
        if not data then
          return management_error(ctx, "Failed to read WASM chunk with hash " .. h, "IC0305",
            { snapshot = ctx.canister .. "-0" })
        end
        throttle(ctx, #data)
        Home.write_local(path, data)
        sent.bytes = sent.bytes + #data
      end
    end
    ctx.stderr("WASM chunks: done\n")
  end
  os.remove(dir .. "/.download_progress.json")
  if ctx.faults.corrupt then corrupt(ctx, dir, meta) end
  ctx.stderr("Snapshot downloaded to " .. dir .. "\n")
  lock:close()
  return 0
end

-- {=== upload ===}

local REQUIRED = { "taken_at_timestamp", "wasm_module_size", "globals", "wasm_memory_size", "stable_memory_size",
  "wasm_chunk_store", "canister_version", "certified_data" }

local function upload_progress_doc(id)
  return json.ordered({ snapshot_id = id, metadata_uploaded = true, wasm_module_offset = 0, wasm_memory_offset = 0,
    stable_memory_offset = 0, wasm_chunks_uploaded = json.array({}) },
    { "snapshot_id", "metadata_uploaded", "wasm_module_offset", "wasm_memory_offset", "stable_memory_offset",
      "wasm_chunks_uploaded" })
end

-- Creates the (empty) snapshot the upload fills: the replica's
-- upload_canister_snapshot_metadata. Returns the snapshot id or nil, rc.
local function create_upload_snapshot(ctx, meta)
  local home, o = ctx.home, ctx.cmd.options
  return home:transact(function(sim)
    local c, rc = commands.controlled(ctx, home:canister(ctx.canister))
    if not c then return nil, rc end
    local replace = o.replace and o.replace:lower()
    if replace and not home:snapshot(ctx.canister, replace) then
      return nil, ctx.fail(text.reject("IC0305", { canister = ctx.canister, snapshot = ctx.canister .. "-0" }))
    end
    if not replace and #home:snapshots(ctx.canister) >= ctx.faults.limit then
      return nil, ctx.fail(text.reject("IC0406", { canister = ctx.canister, reason = "limit",
        limit = ctx.faults.limit }))
    end
    local now = Home.tick(sim)
    local id = Home.snapshot_id(ctx.canister, c.next_snapshot_counter)
    local dir = home:snapshot_dir(ctx.canister, id)
    local tmp = dir .. ".tmp"
    fs.remove_tree(tmp)
    for _, d in ipairs({ tmp, tmp .. "/data", tmp .. "/data/wasm_chunk_store" }) do
      Home.must("mkdir " .. d, fs.mkdir_private(d))
    end
    for _, b in ipairs(Home.BLOBS) do
      if meta[b .. "_size"] > 0 or b == "stable_memory" then
        preallocate(tmp .. "/data/" .. b .. ".bin", meta[b .. "_size"], Home.write_sim)
      end
    end
    local stored = {}
    for k, v in pairs(meta) do stored[k] = v end
    stored.source = json.object({ metadata_upload = json.null })
    stored.taken_at_timestamp = now
    home:write_json(tmp .. "/metadata.json", json.ordered(stored, { "source", "taken_at_timestamp",
      "wasm_module_size", "globals", "wasm_memory_size", "stable_memory_size", "wasm_chunk_store", "canister_version",
      "certified_data", "global_timer", "on_low_wasm_memory_hook_status" }), true)
    local total = meta.wasm_module_size + meta.wasm_memory_size + meta.stable_memory_size
    home:write_json(tmp .. "/snapshot.json", { id = id, counter = c.next_snapshot_counter, taken_at_timestamp = now,
      total_size = total, source = "metadata_upload", upload_complete = false,
      received = { wasm_module = 0, wasm_memory = 0, stable_memory = 0, chunks = json.array({}) } }, true)
    Home.must("rename " .. tmp, os.rename(tmp, dir))
    if replace then
      local old = home:snapshot_dir(ctx.canister, replace)
      Home.must("remove " .. old, fs.remove_tree(old))
    end
    c.next_snapshot_counter = c.next_snapshot_counter + 1
    home:save_canister(c)
    return id
  end)
end

-- Records received bytes; marks the upload complete when everything is in.
local function record(ctx, id, meta, fn)
  local home = ctx.home
  return home:transact(function()
    local snap = home:snapshot(ctx.canister, id)
    if not snap then return false end
    fn(snap.received)
    local complete = true
    for _, b in ipairs(Home.BLOBS) do
      if snap.received[b] ~= meta[b .. "_size"] then complete = false end
    end
    local have = {}
    for _, h in ipairs(snap.received.chunks) do have[h] = true end
    for _, h in ipairs(chunk_hexes(meta)) do
      if not have[h] then complete = false end
    end
    if complete and not snap.upload_complete then
      snap.upload_complete = true
      local c = home:canister(ctx.canister)
      Home.count_effect(c, "snapshot_upload")
      home:save_canister(c)
    end
    home:save_snapshot(ctx.canister, snap)
    return true
  end)
end

function M.upload(ctx)
  local o, home = ctx.cmd.options, ctx.home
  local dir = o.input:gsub("(.)/+$", "%1")
  local lock, rc = lock_dir(ctx, dir)
  if not lock then return rc end
  local meta_path = dir .. "/metadata.json"
  local meta_text = fs.read(meta_path)
  if not meta_text then
    return ctx.fail("Error: Missing required file: " .. meta_path .. "\n")
  end
  local meta, jerr = json.decode(meta_text)
  if meta and type(meta) ~= "table" then
    meta, jerr = nil, "invalid type: expected struct ReadCanisterSnapshotMetadataResult"
  end
  if meta then
    for _, k in ipairs(REQUIRED) do
      if meta[k] == nil then
        meta, jerr = nil, "missing field `" .. k .. "`"
        break
      end
    end
  end
  if not meta then
    return ctx.fail("Error: failed to parse json file at " .. meta_path .. "\n\nCaused by:\n    " .. jerr .. "\n")
  end
  ctx.stderr(string.format("Uploading snapshot to canister %s (%s)\n  Original timestamp: %s\n  Total size: %s\n",
    ctx.canister_label, ctx.canister, text.timestamp(meta.taken_at_timestamp),
    text.size(meta.wasm_module_size + meta.wasm_memory_size + meta.stable_memory_size)))
  if ctx.faults.hang then return ctx.hang() end
  local failed = commands.injected_failure(ctx)
  if failed then return failed end

  local progress_path = dir .. "/.upload_progress.json"
  local progress, id
  if not o.resume then
    for _, g in ipairs(meta.globals) do
      if g == json.null then
        return ctx.fail("Error: Invalid snapshot metadata: snapshot metadata contains unparseable globals\n")
      end
    end
    if ctx.faults.silent then
      id = Home.snapshot_id(ctx.canister, 0)
    else
      local err_rc
      id, err_rc = create_upload_snapshot(ctx, meta)
      if not id then return err_rc end
    end
    ctx.stderr("Created snapshot " .. id .. " for upload\n")
    progress = upload_progress_doc(id)
    if not ctx.faults.silent then write_pretty(progress_path, progress) end
  else
    local ptext = fs.read(progress_path)
    if not ptext then
      return ctx.fail("Error: Cannot resume: no upload progress file found in " .. dir .. "\n")
    end
    local saved = json.decode(ptext)
    id = saved.snapshot_id
    progress = upload_progress_doc(id)
    for k, v in pairs(saved) do progress[k] = v end
    ctx.stderr("Resuming upload to snapshot " .. id .. "\n")
  end

  if not ctx.faults.silent then
    local snapdir = home:snapshot_dir(ctx.canister, id)
    local sent = 0
    for _, blob in ipairs(Home.BLOBS) do
      local path = dir .. "/" .. blob .. ".bin"
      local st = fs.lstat(path)
      if not st then
        if meta[blob .. "_size"] > 0 then
          return ctx.fail("Error: Failed to get file size at " .. path .. "\n\nCaused by:\n    No such file or "
            .. "directory (os error 2)\n")
        end
      else
        local size = st.size
        for off = progress[blob .. "_offset"], size - 1, SLICE do
          local len = math.min(SLICE, size - off)
          if ctx.faults.crash and sent >= ctx.faults.crash.bytes then
            return crash(ctx, off, "upload snapshot data")
          end
          if off + len > meta[blob .. "_size"] or not exists(snapdir) then
            local _, inner = text.http(503)
            inner = exists(snapdir) and ("The replica returned a rejection error: reject code CanisterReject, reject "
              .. "message Invalid slice: offset " .. off .. " + size " .. len .. " is out of range. Use the snapshot "
              .. "metadata API to learn the size of the snapshot, error code Some(\"IC0408\")") or inner
            return ctx.fail(text.chain(string.format("Failed to upload snapshot data chunk at offset %d", off),
              { "direct update call failed: " .. inner, inner }))
          end
          throttle(ctx, len)
          Home.write_sim(snapdir .. "/data/" .. blob .. ".bin", read_at(path, off, len), off)
          sent = sent + len
          record(ctx, id, meta, function(r) r[blob] = math.max(r[blob], off + len) end)
          progress[blob .. "_offset"] = off + len
          write_pretty(progress_path, progress)
        end
      end
    end
    local chunks = chunk_hexes(meta)
    if #chunks > 0 then
      ctx.stderr(string.format("Uploading %d WASM chunks...\n", #chunks))
      local done = {}
      for _, h in ipairs(progress.wasm_chunks_uploaded) do done[h] = true end
      for _, h in ipairs(chunks) do
        if not done[h] then
          if ctx.faults.crash and sent >= ctx.faults.crash.bytes then
            return crash(ctx, 0, "upload snapshot data")
          end
          local data = fs.read(dir .. "/wasm_chunk_store/" .. h .. ".bin")
          if not data then
            return ctx.fail("Error: Failed to upload WASM chunk with hash " .. h .. "\n\nCaused by:\n    No such "
              .. "file or directory (os error 2)\n")
          end
          throttle(ctx, #data)
          Home.write_sim(snapdir .. "/data/wasm_chunk_store/" .. h .. ".bin", data)
          sent = sent + #data
          record(ctx, id, meta, function(r) r.chunks[#r.chunks + 1] = h end)
          progress.wasm_chunks_uploaded[#progress.wasm_chunks_uploaded + 1] = h
          write_pretty(progress_path, progress)
        end
      end
      ctx.stderr("WASM chunks: done\n")
    end
    if not record(ctx, id, meta, function() end) then
      return ctx.fail(text.reject("IC0305", { canister = ctx.canister, snapshot = ctx.canister .. "-0" }))
    end
    os.remove(progress_path)
  end
  if o.json then
    ctx.stdout(json.encode(json.ordered({ snapshot_id = id }, { "snapshot_id" })))
  elseif o.quiet then
    ctx.stdout(id .. "\n")
  else
    ctx.stdout("Snapshot " .. id .. " uploaded successfully\n")
  end
  ctx.stderr(string.format("Use `icp canister snapshot restore %s %s` to restore from this snapshot\n",
    ctx.canister_label, id))
  lock:close()
  return 0
end

return M
