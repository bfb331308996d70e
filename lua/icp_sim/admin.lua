--- `icp-sim sim ...`: the simulator's own administration, which the real
-- icp does not have: build a fleet, show it, change live memory, count the
-- committed effects.
local argparse = require "argparse"
local engine = require "fleetsnap.engine"
local hex = require "fleetsnap.hex"
local principal = require "fleetsnap.principal"
local Home = require "icp_sim.home"

local json, fs = engine.json, engine.fs

local M = {}

local KINDS = { "hub", "shard", "store", "index", "worker", "ledger", "router", "vault" }
local OPERATOR = "operator"

local function parser()
  local p = argparse("icp-sim sim", "Administer the icp simulator's fleet ($ICP_SIM_HOME).")
  p:command_target("command")
  local init = p:command("init", "Create a fleet: a Canic root plus members in a balanced tree.")
  init:option("--members", "Members below the root.", "6"):convert(math.tointeger)
  init:option("--depth", "Levels below the root.", "2"):convert(math.tointeger)
  init:option("--heap", "Heap bytes per canister.", "65536"):convert(math.tointeger)
  init:option("--stable", "Stable memory bytes per canister.", "65536"):convert(math.tointeger)
  init:option("--seed", "Seed for ids, roles and memory contents.", "1"):convert(math.tointeger)
  init:option("--snapshot-limit", "Snapshots allowed per canister.", "10"):convert(math.tointeger)
  init:flag("--random-memory", "Fill heap and stable memory with incompressible pseudo-random bytes (from the "
    .. "seed) instead of a repeated, stamped 64 KiB block.")
  init:option("--directory-page", "Make the fleet directory-style (Canic 0.100+): the root serves "
    .. "canic_root_component_directory_page, at most this many entries a page, and no canic_subnet_registry.")
    :convert(math.tointeger)
  local directory = p:command("directory", "Change a directory-style fleet's directory (each change is a new "
    .. "revision).")
  directory:option("--allow", "Let this principal read the directory, standing in for a registered member.")
  directory:option("--status", "Set a member's lifecycle status in the directory.", nil, nil, 2)
    :argname({ "<canister>", "<status>" })
  local show = p:command("show", "Show the fleet and each canister's state digest.")
  show:flag("--json", "Print JSON.")
  local mutate = p:command("mutate", "Change live memory of a canister, or of all.")
  mutate:argument("canister", "Canister id."):args("?")
  mutate:flag("--all", "Every canister.")
  mutate:option("--region", "Rewrite one contiguous region of this many bytes, or P% of the canister's memory "
    .. "(heap then stable memory), at a random offset, with fresh pseudo-random bytes.")
  local effects = p:command("effects", "Committed effects per canister.")
  effects:flag("--json", "Print JSON.")
  return p
end

-- {=== fleet construction ===}

local function rng(seed)
  local state = seed * 6364136223846793005 + 1442695040888963407
  return function()
    state = state * 6364136223846793005 + 1442695040888963407
    return (state >> 11) & 0x1FFFFFFFFFFFFF
  end
end

--- A generator of incompressible bytes (splitmix64) keyed by a text:
-- gen(n) returns the next n bytes (n a multiple of 64).
local function random_stream(key)
  local state = string.unpack("<i8", hex.decode(engine.hash.sha256(key):sub(1, 16)))
  local function word()
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * -4658895280553007687
    z = (z ~ (z >> 27)) * -7723592293110705685
    return z ~ (z >> 31)
  end
  local pack, fmt = string.pack, "<i8i8i8i8i8i8i8i8"
  return function(n)
    local parts = {}
    for i = 1, n // 64 do
      parts[i] = pack(fmt, word(), word(), word(), word(), word(), word(), word(), word())
    end
    return table.concat(parts)
  end
end

local RANDOM_PIECE = 1 << 20

--- Writes size bytes of gen (a random_stream) to the open file f at its
-- current position, a MiB at a time.
local function write_random(f, size, gen)
  local left = size
  while left > 0 do
    local n = math.min(left, RANDOM_PIECE)
    f:write(gen(n + 63 - (n + 63) % 64):sub(1, n))
    left = left - n
  end
end

-- The 64 KiB pseudo-random block of one rng seed. Every canister of a
-- fleet uses one of a handful of seeds (seed + length of its label), so
-- the block is generated once per seed, not once per blob.
local blocks = {}
local function random_block(block_seed)
  local block = blocks[block_seed]
  if not block then
    local next_ = rng(block_seed)
    local words = {}
    for i = 1, 8192 do words[i] = string.pack("<I8", next_()) end
    block = table.concat(words)
    blocks[block_seed] = block
  end
  return block
end

--- Deterministic bytes: a 64 KiB pseudo-random block, each copy of it
-- stamped with a digest of (label, offset) so no two regions are equal.
local function write_blob(path, size, label, seed, random)
  local f = assert(io.open(path, "wb"))
  if random then
    -- Incompressible: what a heap of encrypted or compressed data looks
    -- like to a store that compresses (restic).
    write_random(f, size, random_stream(string.format("icp-sim memory %d %s", seed, label)))
  elseif size > 0 then
    local block = random_block(seed + #label)
    local off = 0
    while off < size do
      local stamp = engine.hash.sha256(label .. ":" .. off)
      -- This copy's bytes: the stamp, then the block after the stamp's length.
      local n = math.min(#block, size - off)
      if n <= #stamp then
        f:write(stamp:sub(1, n))
      else
        f:write(stamp, block:sub(#stamp + 1, n))
      end
      off = off + #block
    end
  end
  f:close()
end

local function module_bytes(role, seed)
  -- A minimal Wasm header and a custom section naming the role: every role
  -- has its own module hash.
  local name = "fleetsnap-sim"
  local payload = string.char(#name) .. name .. role .. ":" .. seed
  return "\0asm\1\0\0\0" .. "\0" .. string.char(#payload) .. payload
end

-- Level sizes for `members` spread over `depth` levels under the root, the
-- smallest branching factor that fits, every level used.
local function level_sizes(members, depth)
  depth = math.max(1, math.min(depth, members))
  local b = 1
  while true do
    local total, width = 0, 1
    for _ = 1, depth do
      width = width * b
      total = total + width
    end
    if total >= members then break end
    b = b + 1
  end
  local sizes, left, width = {}, members - depth, 1
  for k = 1, depth do
    width = width * b
    local extra = math.min(left, math.max(0, math.min(width, (sizes[k - 1] or 1) * b) - 1))
    sizes[k] = 1 + extra
    left = left - extra
  end
  return sizes
end

-- Creates every canister's directories (private, as mkdir_private makes
-- them) with one mkdir per batch of canisters: mkdir_private fsyncs each
-- parent, and a fresh fleet need not be durable, only complete.
local MKDIR_BATCH = 500
local function make_dirs(home, nodes)
  local argv = {}
  local function flush()
    if #argv > 0 then
      local r = engine.proc.run({ argv = table.move(argv, 1, #argv, 4, { "mkdir", "-m", "700" }) })
      if r.status ~= 0 then
        -- Left over from an interrupted init: -p accepts what exists (and
        -- costs a walk of every path, so only when needed).
        r = engine.proc.run({ argv = table.move(argv, 1, #argv, 5, { "mkdir", "-p", "-m", "700" }) })
      end
      assert(r.status == 0, r.stderr)
      argv = {}
    end
  end
  for i, node in ipairs(nodes) do
    local dir = home:canister_dir(node.id)
    -- Parents before children: -m applies to each directory named.
    for _, d in ipairs({ dir, dir .. "/live", dir .. "/live/wasm_chunk_store", dir .. "/snapshots" }) do
      argv[#argv + 1] = d
    end
    if i % MKDIR_BATCH == 0 then flush() end
  end
  flush()
end

local function init(home_dir, a)
  if (a.members or -1) < 0 or (a.depth or 0) < 1 or (a.heap or -1) < 0 or (a.stable or -1) < 0 then
    io.stderr:write("icp-sim sim init: --members >= 0, --depth >= 1, --heap and --stable >= 0\n")
    return 2
  end
  if fs.lstat(home_dir .. "/sim.json") then
    io.stderr:write("icp-sim sim init: " .. home_dir .. " already holds a fleet\n")
    return 1
  end
  local mk = engine.proc.run({ argv = { "mkdir", "-p", home_dir .. "/canisters" } })
  if mk.status ~= 0 then error("cannot create " .. home_dir .. "/canisters: " .. (mk.stderr or ""), 0) end
  local home = assert(Home.open(home_dir))
  local seed = a.seed
  local operator = principal.to_text(hex.decode(engine.hash.sha256("icp-sim operator " .. seed):sub(1, 56)) .. "\2")
  home:write_json(home:path("identities.json"), {
    default = OPERATOR,
    identities = { [OPERATOR] = operator, anonymous = principal.ANONYMOUS },
  }, true)
  local base = 0x100 + (seed % 4096) * 1000
  local now = engine.realtime_ns()
  local root = principal.canister_id(base)
  local nodes = { { id = root, role = "root", parent = nil, depth = 0 } }
  local sizes = level_sizes(a.members, a.depth)
  local prev = { nodes[1] }
  local n = 0
  local kinds = {}
  local shuffle = rng(seed)
  for i, k in ipairs(KINDS) do kinds[i] = k end
  for i = #kinds, 2, -1 do
    local j = shuffle() % i + 1
    kinds[i], kinds[j] = kinds[j], kinds[i]
  end
  for level = 1, a.members > 0 and #sizes or 0 do
    local cur = {}
    for i = 1, sizes[level] do
      n = n + 1
      local parent = prev[(i - 1) % #prev + 1]
      local role = string.format("%s-%d", kinds[(n - 1) % #kinds + 1], n)
      local node = { id = principal.canister_id(base + n), role = role, parent = parent.id, depth = level }
      nodes[#nodes + 1] = node
      cur[#cur + 1] = node
    end
    prev = cur
  end
  make_dirs(home, nodes)
  for order, node in ipairs(nodes) do
    local dir = home:canister_dir(node.id)
    local module = module_bytes(node.role, seed)
    local f = assert(io.open(dir .. "/live/wasm_module.bin", "wb"))
    f:write(module)
    f:close()
    write_blob(dir .. "/live/wasm_memory.bin", a.heap, node.id .. "/heap", seed, a.random_memory)
    write_blob(dir .. "/live/stable_memory.bin", a.stable, node.id .. "/stable", seed, a.random_memory)
    if order % 3 == 1 then
      -- Some canisters keep Wasm chunks (large modules installed in pieces).
      for c = 1, 2 do
        local chunk = ("chunk " .. node.id .. " " .. c .. " "):rep(40):sub(1, 1024)
        local h = engine.hash.sha256(chunk)
        local cf = assert(io.open(dir .. "/live/wasm_chunk_store/" .. h .. ".bin", "wb"))
        cf:write(chunk)
        cf:close()
      end
    end
    local controllers = { operator }
    if node.parent then controllers[#controllers + 1] = root end
    home:save_canister({
      id = node.id, role = node.role, parent = node.parent or json.null, order = order, depth = node.depth,
      status = "running", controllers = json.array(controllers), created_at = now, version = 1,
      next_snapshot_counter = 0, cycles = 3000000000000,
      globals = json.array({ json.object({ i32 = 42 }), json.object({ i64 = order }) }),
      certified_data_hex = engine.hash.sha256(node.id):sub(1, 64), global_timer = "inactive",
      hook = "condition_not_satisfied", effects = json.object({}),
      module_hash = engine.hash.sha256(module),
    })
  end
  if a.directory_page and a.directory_page < 1 then
    io.stderr:write("icp-sim sim init: --directory-page >= 1\n")
    return 2
  end
  home:write_json(home:path("sim.json"), { root = root, seed = seed, snapshot_limit = a.snapshot_limit,
    invocation_counter = 0, fault_counters = json.object({}),
    directory = a.directory_page and { page = a.directory_page, revision = 1, readers = json.array({}) } or nil },
    true)
  io.stdout:write(string.format("icp-sim: fleet of %d members under root %s (depth %d) in %s\n", a.members, root,
    #sizes, home_dir))
  return 0
end

local function members(home)
  local list = {}
  for _, cid in ipairs(home:canister_ids()) do
    local c = home:canister(cid)
    -- Scratch canisters (`canister create --detached`) are no members.
    if not c.detached then list[#list + 1] = c end
  end
  table.sort(list, function(x, y) return x.order < y.order end)
  return list
end

local function show(home, a)
  local sim = assert(home:read_json(home:path("sim.json")))
  local out = {}
  for _, c in ipairs(members(home)) do
    out[#out + 1] = json.ordered({ canister_id = c.id, role = c.role, parent = c.parent, status = c.status,
      state_sha256 = home:state_sha256(c.id) }, { "canister_id", "role", "parent", "status", "state_sha256" })
  end
  if a.json then
    io.stdout:write(json.encode(json.ordered({ root = sim.root, members = json.array(out) }, { "root", "members" }))
      .. "\n")
  else
    io.stdout:write(string.format("root %s\n", sim.root))
    for _, m in ipairs(out) do
      io.stdout:write(string.format("%-27s  %-12s  %-8s  %s  parent %s\n", m.canister_id, m.role, m.status,
        m.state_sha256:sub(1, 16), m.parent == json.null and "-" or m.parent))
    end
  end
  return 0
end

-- A stamp of 32 bytes at an offset that moves with each mutation.
local function stamp_memory(live, cid, mutations)
  for _, blob in ipairs({ "wasm_memory.bin", "stable_memory.bin" }) do
    local st = fs.lstat(live .. blob)
    if st and st.size > 0 then
      Home.unshare(live .. blob)
      local f = assert(io.open(live .. blob, "r+b"))
      local stamp = engine.hash.sha256("mutation " .. mutations .. " " .. cid)
      f:seek("set", (mutations * 4099) % st.size)
      f:write(stamp:sub(1, math.min(#stamp, st.size - (mutations * 4099) % st.size)))
      f:close()
    end
  end
end

--- Rewrites one contiguous region of `spec` bytes (or percent) of the
-- canister's memory, heap then stable memory as one address space, at an
-- offset drawn from (seed, mutation count, canister): how a heap or a
-- stable-memory log changes between two backups. Returns offset, length
-- and the memory's size.
local function rewrite_region(live, cid, spec, seed, mutations)
  local blobs, total = {}, 0
  for _, blob in ipairs({ "wasm_memory.bin", "stable_memory.bin" }) do
    local st = fs.lstat(live .. blob)
    local size = st and st.size or 0
    blobs[#blobs + 1] = { path = live .. blob, start = total, size = size }
    total = total + size
  end
  local length = spec.bytes or math.floor(total * spec.percent / 100)
  length = math.min(length, total)
  if length == 0 then return 0, 0, total end
  local key = string.format("icp-sim region %d %d %s", seed, mutations, cid)
  local draw = string.unpack("<I8", random_stream(key .. " offset")(64))
  local offset = (draw >> 1) % (total - length + 1)
  local gen = random_stream(key)
  for _, b in ipairs(blobs) do
    local from, to = math.max(offset, b.start), math.min(offset + length, b.start + b.size)
    if from < to then
      Home.unshare(b.path)
      local f = assert(io.open(b.path, "r+b"))
      f:seek("set", from - b.start)
      write_random(f, to - from, gen)
      f:close()
    end
  end
  return offset, length, total
end

-- --region's value: {bytes = n} or {percent = p}, nil when malformed.
local function parse_region(text)
  if text:match("^%d+$") then return { bytes = math.tointeger(tonumber(text)) } end
  local p = tonumber(text:match("^(%d+%.?%d*)%%$"))
  if p and p <= 100 then return { percent = p } end
  return nil
end

local function mutate(home, a)
  local targets
  if a.all then
    targets = home:canister_ids()
  elseif a.canister and home:canister(a.canister) then
    targets = { a.canister }
  else
    io.stderr:write("icp-sim sim mutate: name a canister of the fleet, or --all\n")
    return 2
  end
  local region
  if a.region then
    region = parse_region(a.region)
    if not region then
      io.stderr:write("icp-sim sim mutate: --region takes a byte count or a percentage from 0% to 100%, got '"
        .. a.region .. "'\n")
      return 2
    end
  end
  local lines = {}
  home:transact(function(sim)
    sim.mutations = (sim.mutations or 0) + 1
    for _, cid in ipairs(targets) do
      local live = home:canister_dir(cid) .. "/live/"
      if region then
        local offset, length, total = rewrite_region(live, cid, region, sim.seed or 1, sim.mutations)
        lines[#lines + 1] = string.format("%s: rewrote %d bytes at offset %d of %d\n", cid, length, offset, total)
      else
        stamp_memory(live, cid, sim.mutations)
      end
    end
  end)
  io.stdout:write(table.concat(lines))
  io.stdout:write(string.format("icp-sim: mutated %d canister(s)\n", #targets))
  return 0
end

local function change_directory(home, a)
  local status = a.status
  if status then
    local known = false
    for _, s in ipairs(require("fleetsnap.canic").DIRECTORY_STATUSES) do known = known or s == status[2] end
    local c = home:canister(status[1])
    if not known or not c or c.parent == json.null then
      io.stderr:write("icp-sim sim directory: --status needs a member below the root and one of Prepared, Active, "
        .. "Draining, Removed\n")
      return 2
    end
  end
  if not a.allow and not status then
    io.stderr:write("icp-sim sim directory: give --allow or --status\n")
    return 2
  end
  local revision = home:transact(function(sim)
    if not sim.directory then return nil end
    if a.allow then
      local readers = sim.directory.readers or {}
      readers[#readers + 1] = a.allow
      sim.directory.readers = json.array(readers)
    end
    if status then
      local c = home:canister(status[1])
      c.directory_status = status[2]
      home:save_canister(c)
      sim.directory.revision = sim.directory.revision + 1
    end
    return sim.directory.revision
  end)
  if not revision then
    io.stderr:write("icp-sim sim directory: the fleet is registry-style (sim init --directory-page makes a "
      .. "directory-style one)\n")
    return 1
  end
  io.stdout:write(string.format("icp-sim: directory at revision %d\n", revision))
  return 0
end

local EFFECTS = { "stop", "start", "snapshot_create", "snapshot_load", "snapshot_upload", "snapshot_delete" }

local function effects(home, a)
  local doc = {}
  for _, c in ipairs(members(home)) do
    local e = {}
    for _, k in ipairs(EFFECTS) do e[k] = (c.effects or {})[k] or 0 end
    -- Settings updates are listed only once one happened: the fixed
    -- counts above are what every lifecycle spec compares whole.
    local keys = EFFECTS
    if c.effects and c.effects.settings_update then
      e.settings_update = c.effects.settings_update
      keys = { table.unpack(EFFECTS) }
      keys[#keys + 1] = "settings_update"
    end
    doc[c.id] = json.ordered(e, keys)
  end
  if a.json then
    io.stdout:write(json.encode(json.object(doc)) .. "\n")
  else
    for _, c in ipairs(members(home)) do
      local e = doc[c.id]
      io.stdout:write(string.format("%-27s stop %d start %d create %d load %d upload %d delete %d\n", c.id, e.stop,
        e.start, e.snapshot_create, e.snapshot_load, e.snapshot_upload, e.snapshot_delete))
    end
  end
  return 0
end

function M.run(argv)
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  local ok, a = parser():pparse(rest)
  if not ok then
    io.stderr:write("icp-sim sim: " .. a .. "\n")
    return 2
  end
  local dir = os.getenv("ICP_SIM_HOME")
  if not dir or dir == "" then
    io.stderr:write("icp-sim sim: set ICP_SIM_HOME to the simulator's state directory\n")
    return 2
  end
  if a.command == "init" then
    return init(dir, a)
  end
  local home, err = Home.open(dir)
  if not home or not fs.lstat(dir .. "/sim.json") then
    io.stderr:write("icp-sim sim: " .. (err or (dir .. " holds no fleet: run `icp-sim sim init` first")) .. "\n")
    return 1
  end
  if a.command == "show" then return show(home, a) end
  if a.command == "mutate" then return mutate(home, a) end
  if a.command == "directory" then return change_directory(home, a) end
  return effects(home, a)
end

return M
