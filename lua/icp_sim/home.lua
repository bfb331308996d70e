--- The simulator's state directory ($ICP_SIM_HOME): the fleet's canisters,
-- their live memory and snapshots, counters, the clock and the invocation
-- log. Every read-modify-write of state happens under the home's lock, and
-- only there: sleeping for latency or bandwidth never holds it.
local engine = require "fleetsnap.engine"
local hex = require "fleetsnap.hex"
local principal = require "fleetsnap.principal"

local json, fs = engine.json, engine.fs

local M = {}
M.__index = M

local CLOCK_STEP_NS = 1000000000

--- Opens the home named by $ICP_SIM_HOME (or `dir`).
function M.open(dir)
  dir = dir or os.getenv("ICP_SIM_HOME")
  if not dir or dir == "" then
    return nil, "ICP_SIM_HOME is not set: point it at a directory made by `icp-sim sim init`"
  end
  local st = fs.lstat(dir)
  if not st or st.type ~= "directory" then
    return nil, "ICP_SIM_HOME '" .. dir .. "' is not a directory"
  end
  return setmetatable({ dir = dir }, M)
end

--- v, or raises "<what>: <err>" (main ends it as icp's "Error:", exit 1)
-- when an engine call failed: `v, err` are its results, passed last so
-- that the call expands into them.
function M.must(what, v, err)
  if v == nil or v == false then error(what .. ": " .. tostring(err), 0) end
  return v
end

--- Writes `data` into the file at `path`: "wb" (create or truncate), or
-- over the bytes at `offset` of an existing file. Every step is checked,
-- the close too (a buffered write meets a full disk there): a write that
-- failed silently would leave a short file behind a reported success.
-- Returns true, or nil, message, errno.
function M.write_file(path, data, offset)
  local f, msg, errno = io.open(path, offset and "r+b" or "wb")
  if not f then return nil, msg, errno end
  local ok = true
  if offset then ok, msg, errno = f:seek("set", offset) end
  if ok then ok, msg, errno = f:write(data) end
  local closed, cmsg, cerrno = f:close()
  if not ok then return nil, msg, errno end
  if not closed then return nil, cmsg, cerrno end
  return true
end

--- M.write_file into a directory of the operator's that icp writes (a
-- download, an upload's progress file): a failure raises {icp_error =
-- text}, which main prints as icp prints an I/O error, "Failed to write to
-- file <path>" caused by the OS's "<strerror> (os error N)", exit 1.
function M.write_local(path, data, offset)
  local ok, msg, errno = M.write_file(path, data, offset)
  if ok then return end
  msg = tostring(msg):gsub("^" .. path:gsub("%p", "%%%0") .. ": ", "")
  error({ icp_error = "Error: Failed to write to file " .. path .. "\n\nCaused by:\n    " .. msg
    .. " (os error " .. tostring(errno or 5) .. ")\n" }, 0)
end

--- M.write_file into the simulated network's own state (the home): a
-- failure is the simulator's, "Error: icp-sim: write <path>: ...".
function M.write_sim(path, data, offset)
  M.must("write " .. path, M.write_file(path, data, offset))
end

function M:path(...)
  return table.concat({ self.dir, ... }, "/")
end

function M:read_json(path)
  local text, err = fs.read(path)
  if not text then return nil, err end
  return json.decode(text, { name = path })
end

function M:write_json(path, value, pretty)
  -- Atomic, not durable: a killed icp must never leave half a state file,
  -- but the simulated network need not survive a power cut.
  local tmp = path .. ".tmp" .. engine.monotonic_ns()
  M.write_sim(tmp, json.encode(value, { pretty = pretty }))
  M.must("rename " .. tmp, os.rename(tmp, path))
end

--- Runs fn(state) under the home lock; state.sim is sim.json, written back
-- afterwards. Returns what fn returns.
function M:transact(fn)
  local _lock <close> = assert(engine.lock.acquire(self:path(".sim.lock"), { wait_ms = 600000, owner = "icp-sim\n" }))
  local sim = assert(self:read_json(self:path("sim.json")))
  local results = table.pack(fn(sim))
  self:write_json(self:path("sim.json"), sim, true)
  return table.unpack(results, 1, results.n)
end

--- The simulated time for one management call (under the lock).
function M.tick(sim)
  local start = os.getenv("ICP_SIM_CLOCK_NS")
  if start and start ~= "" then
    start = math.tointeger(tonumber(start))
    if sim.clock_start ~= start or not sim.clock_ns then
      sim.clock_start, sim.clock_ns = start, start
    end
    local now = sim.clock_ns
    sim.clock_ns = now + CLOCK_STEP_NS
    return now
  end
  return engine.realtime_ns()
end

-- {=== canisters ===}

function M:canister_dir(cid)
  return self:path("canisters", cid)
end

function M:canister(cid)
  local c = self:read_json(self:path("canisters", cid, "canister.json"))
  return c
end

function M:save_canister(c)
  self:write_json(self:path("canisters", c.id, "canister.json"), c, true)
end

function M:canister_ids()
  local ids = fs.list(self:path("canisters")) or {}
  local out = {}
  for _, id in ipairs(ids) do
    if principal.is_valid(id) then out[#out + 1] = id end
  end
  return out
end

function M.count_effect(c, what)
  c.effects = c.effects or json.object({})
  c.effects[what] = (c.effects[what] or 0) + 1
end

-- {=== snapshots ===}

--- Snapshot id as the IC forms it: 8-byte big-endian counter ‖ canister bytes.
function M.snapshot_id(cid, counter)
  local bytes = assert(principal.from_text(cid))
  return hex.encode(string.pack(">I8", counter) .. bytes)
end

function M:snapshot_dir(cid, id)
  return self:path("canisters", cid, "snapshots", id)
end

function M:snapshot(cid, id)
  if not id:match("^%x*$") then return nil end
  return (self:read_json(self:snapshot_dir(cid, id) .. "/snapshot.json"))
end

function M:save_snapshot(cid, snap)
  self:write_json(self:snapshot_dir(cid, snap.id) .. "/snapshot.json", snap, true)
end

--- Snapshots of a canister in ascending counter order.
function M:snapshots(cid)
  local out = {}
  for _, id in ipairs(fs.list(self:path("canisters", cid, "snapshots")) or {}) do
    if not id:find("%.") then
      local s = self:snapshot(cid, id)
      if s then out[#out + 1] = s end
    end
  end
  table.sort(out, function(a, b) return a.counter < b.counter end)
  return out
end

-- {=== live memory ===}

M.BLOBS = { "wasm_module", "wasm_memory", "stable_memory" }

local function file_size(path)
  local st = fs.lstat(path)
  return st and st.size or 0
end

--- Sizes and chunk hashes of a directory in icp's download layout.
function M.layout(dir)
  local l = { chunks = {} }
  for _, b in ipairs(M.BLOBS) do
    l[b] = file_size(dir .. "/" .. b .. ".bin")
  end
  for _, name in ipairs(fs.list(dir .. "/wasm_chunk_store") or {}) do
    local digest = name:match("^(%x+)%.bin$")
    if digest then l.chunks[#l.chunks + 1] = digest end
  end
  return l
end

function M.total_size(l)
  local t = l.wasm_module + l.wasm_memory + l.stable_memory
  for _ = 1, #l.chunks do
    t = t + 1024
  end
  return t
end

--- A copy of a memory tree that shares the files' bytes: hard links, which
-- is what a snapshot costs on a real replica (no host I/O), so that the
-- benchmarks measure fleetsnap and not the simulator copying memories.
-- Safe because nothing writes into a linked file: live memory is changed
-- only by `sim mutate`, which breaks the link first (M.unshare), and by a
-- load, which replaces the whole live directory.
function M.link_tree(src, dst)
  local r = engine.proc.run({ argv = { "cp", "-al", "--", src, dst } })
  assert(r.status == 0, "cp -al: " .. r.stderr)
end

--- Gives `path` its own copy of its bytes before it is written in place.
function M.unshare(path)
  local tmp = path .. ".unshare"
  local r = engine.proc.run({ argv = { "cp", "--", path, tmp } })
  assert(r.status == 0, "cp: " .. r.stderr)
  assert(os.rename(tmp, path))
end

--- SHA-256 of the live module as it is on disk, nil when there is none.
function M:live_module_hash(cid)
  local path = self:canister_dir(cid) .. "/live/wasm_module.bin"
  local st = fs.lstat(path)
  if not st or st.size == 0 then return nil end
  return (assert(engine.hash.file(path)))
end

--- The live module's SHA-256, nil when there is none. Kept in the
-- canister's record by init and by every load (the only writers of the
-- live module), so that a status does not hash: a process that hashes
-- nothing never loads libcrypto.
function M:module_hash(c)
  if c.module_hash ~= nil then return c.module_hash end
  return self:live_module_hash(c.id)
end

--- Digest of exactly the live module, heap, stable memory and chunk store.
function M:state_sha256(cid)
  local t = assert(engine.hash.tree(self:path("canisters", cid, "live")))
  return t.digest
end

--- The metadata.json document of a snapshot (icp's field order).
function M.metadata(c, l, taken_at, source)
  local chunks = {}
  for i, digest in ipairs(l.chunks) do
    chunks[i] = json.ordered({ hash = json.array({ hex.decode(digest):byte(1, -1) }) }, { "hash" })
  end
  local certified = {}
  for j = 1, #(c.certified_data_hex or ""), 2 do
    certified[#certified + 1] = tonumber(c.certified_data_hex:sub(j, j + 1), 16)
  end
  local globals = {}
  for i, g in ipairs(c.globals or {}) do
    globals[i] = g
  end
  return json.ordered({
    source = source and json.object({ [source] = json.null }) or json.null,
    taken_at_timestamp = taken_at,
    wasm_module_size = l.wasm_module,
    globals = json.array(globals),
    wasm_memory_size = l.wasm_memory,
    stable_memory_size = l.stable_memory,
    wasm_chunk_store = json.array(chunks),
    canister_version = c.version,
    certified_data = json.array(certified),
    global_timer = c.global_timer or json.null,
    on_low_wasm_memory_hook_status = c.hook or json.null,
  }, { "source", "taken_at_timestamp", "wasm_module_size", "globals", "wasm_memory_size", "stable_memory_size",
    "wasm_chunk_store", "canister_version", "certified_data", "global_timer", "on_low_wasm_memory_hook_status" })
end

-- {=== log ===}

function M:log(entry)
  local f = io.open(self:path("log.jsonl"), "ab")
  if f then
    -- One write of one line: appends from parallel invocations never interleave.
    f:setvbuf("full", 1 << 20)
    f:write(json.encode(entry) .. "\n")
    f:close()
  end
end

return M
