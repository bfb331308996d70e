--- The icp commands icp-sim serves, over the home's state. Each handler
-- writes what icp would print into ctx and returns the exit code.
local engine = require "fleetsnap.engine"
local hex = require "fleetsnap.hex"
local canic = require "fleetsnap.canic"
local text = require "icp_sim.text"
local Home = require "icp_sim.home"
local principal = require "fleetsnap.principal"

local json = engine.json

local M = {}

--- The failure a fault asks for, before any side effect; nil if none.
function M.injected_failure(ctx)
  local f = ctx.faults
  if f.fail then
    if f.fail == "transport" then
      return ctx.fail((text.transport(ctx.url, ctx.canister)))
    elseif f.fail == "http503" or f.fail == "http429" then
      return ctx.fail((text.http(f.fail == "http503" and 503 or 429)))
    elseif f.fail == "local" then
      return ctx.fail("Error: simulated local failure (icp-sim fault 'local')\n")
    end
    local code = f.fail:match("^reject:(IC%d%d%d%d)$")
    if code then
      return ctx.fail(text.reject(code, { canister = ctx.canister, reason = code == "IC0406" and "limit" or nil,
        limit = f.limit, controllers = {}, sender = ctx.caller }))
    end
    return ctx.fail("Error: icp-sim: unknown failure kind '" .. f.fail .. "'\n")
  end
end

-- The management call's common checks: the canister exists and the caller
-- controls it. Returns the canister, or nil and the exit code.
function M.controlled(ctx, c, opts)
  opts = opts or {}
  if not c or ctx.faults.missing_canister then
    return nil, ctx.fail(text.reject("IC0301", { canister = ctx.canister, query = opts.query }))
  end
  local controls = false
  for _, p in ipairs(c.controllers) do
    if p == ctx.caller then controls = true end
  end
  if ctx.faults.not_controller or not controls then
    return nil, ctx.fail(text.reject("IC0512", { canister = ctx.canister, controllers = c.controllers,
      sender = ctx.caller }))
  end
  return c
end

-- The shape every mutating management call shares: a hang or injected
-- failure first, then one transaction in which the canister must exist and
-- be controlled by the caller; fn(sim, canister) returns the exit code.
local function mutation(ctx, fn)
  if ctx.faults.hang then return ctx.hang() end
  local failed = M.injected_failure(ctx)
  if failed then return failed end
  local rc = ctx.home:transact(function(sim)
    local c, crc = M.controlled(ctx, ctx.home:canister(ctx.canister))
    if not c then return crc end
    return fn(sim, c)
  end)
  if rc == 0 and ctx.faults.fail_after then
    -- Committed, but the caller never hears so.
    ctx.out, ctx.err = {}, {}
    ctx.faults.fail = ctx.faults.fail_after
    return M.injected_failure(ctx)
  end
  return rc
end

local function effective_status(ctx, c)
  return ctx.faults.force_status or c.status
end

local function label(ctx)
  return string.format("%s (%s)", ctx.canister_label, ctx.canister)
end

-- The stopped-check icp makes before create and restore.
local function require_stopped(ctx, c)
  local s = effective_status(ctx, c)
  if s == "running" then
    return ctx.fail(string.format("Error: Canister %s is currently running. Please stop the canister first with "
      .. "`icp canister stop`.\n", label(ctx)))
  elseif s == "stopping" then
    return ctx.fail(string.format("Error: Canister %s is still stopping. Please wait for it to fully stop.\n",
      label(ctx)))
  end
end

-- {=== lifecycle ===}

local function lifecycle(ctx, to_status, effect)
  if effect == "stop" and ctx.faults.force_status == "stopping" and not ctx.faults.fail then
    -- A stop that never completes: icp keeps polling until killed.
    return ctx.hang()
  end
  local home = ctx.home
  return mutation(ctx, function(sim, c)
    Home.tick(sim)
    if ctx.faults.silent or (effect == "stop" and ctx.faults.stop_noop) then
      return 0
    end
    c.status = to_status
    Home.count_effect(c, effect)
    home:save_canister(c)
    return 0
  end)
end

function M.stop(ctx) return lifecycle(ctx, "stopped", "stop") end
function M.start(ctx) return lifecycle(ctx, "running", "start") end

-- {=== status ===}

local STATUS_NAME = { running = "Running", stopping = "Stopping", stopped = "Stopped" }

-- A canister's environment variables as icp prints them: `canister.json`
-- may list `environment_variables` ({name, value}, in order); none by default.
local function environment_variables(c)
  local out = {}
  for i, v in ipairs(c.environment_variables or {}) do
    out[i] = json.ordered({ name = v.name, value = v.value }, { "name", "value" })
  end
  return json.array(out)
end

-- A canister's settings: the defaults of a fresh canister, overridden by
-- what `canister settings update` stored in `canister.json` (`settings`:
-- nats as integers, visibilities as "controllers"|"public"|{viewers}).
M.DEFAULT_SETTINGS = { compute_allocation = 0, memory_allocation = 0, freezing_threshold = 2592000,
  reserved_cycles_limit = 5000000000000, wasm_memory_limit = 3221225472, wasm_memory_threshold = 0,
  log_memory_limit = 4096, log_visibility = "controllers", snapshot_visibility = "controllers",
  status_visibility = "controllers" }

function M.setting(c, k)
  local s = c.settings or {}
  if s[k] ~= nil then return s[k] end
  return M.DEFAULT_SETTINGS[k]
end

local function visibility_doc(v)
  if type(v) == "table" then
    local viewers = {}
    for i, p in ipairs(v) do viewers[i] = p end
    return json.ordered({ type = "AllowedViewers", value = json.array(viewers) }, { "type", "value" })
  end
  return json.ordered({ type = v == "public" and "Public" or "Controllers" }, { "type" })
end

local function visibility_text(v)
  if type(v) == "table" then return "Allowed viewers: " .. table.concat(v, ", ") end
  return v == "public" and "Public" or "Controllers"
end

local function status_doc(ctx, c, module_hash, memory_size)
  local controllers = {}
  for i, p in ipairs(c.controllers) do controllers[i] = p end
  local g = text.grouped
  local function nat(k) return g(M.setting(c, k)) end
  return json.ordered({
    id = ctx.canister,
    name = ctx.canister_label ~= ctx.canister and ctx.canister_label or nil,
    status = STATUS_NAME[effective_status(ctx, c)],
    settings = json.ordered({
      controllers = json.array(controllers),
      compute_allocation = nat("compute_allocation"),
      memory_allocation = nat("memory_allocation"),
      freezing_threshold = nat("freezing_threshold"),
      reserved_cycles_limit = nat("reserved_cycles_limit"),
      wasm_memory_limit = nat("wasm_memory_limit"),
      wasm_memory_threshold = nat("wasm_memory_threshold"),
      log_memory_limit = nat("log_memory_limit"),
      log_visibility = visibility_doc(M.setting(c, "log_visibility")),
      snapshot_visibility = visibility_doc(M.setting(c, "snapshot_visibility")),
      status_visibility = visibility_doc(M.setting(c, "status_visibility")),
      -- icp prints the Candid vec as an array, `[]` when empty (observed
      -- through the test replica), never null.
      environment_variables = environment_variables(c),
    }, { "controllers", "compute_allocation", "memory_allocation", "freezing_threshold", "reserved_cycles_limit",
      "wasm_memory_limit", "wasm_memory_threshold", "log_memory_limit", "log_visibility", "snapshot_visibility",
      "status_visibility", "environment_variables" }),
    module_hash = module_hash and ("0x" .. module_hash) or json.null,
    memory_size = g(memory_size),
    cycles = g(c.cycles or 3000000000000),
    reserved_cycles = "0",
    idle_cycles_burned_per_day = g(12345678),
    query_stats = json.ordered({
      num_calls_total = "0", num_instructions_total = "0", request_payload_bytes_total = "0",
      response_payload_bytes_total = "0",
    }, { "num_calls_total", "num_instructions_total", "request_payload_bytes_total", "response_payload_bytes_total" }),
  }, { "id", "name", "status", "settings", "module_hash", "memory_size", "cycles", "reserved_cycles",
    "idle_cycles_burned_per_day", "query_stats" })
end

local function status_text(doc)
  local s = doc.settings
  local lines = { "Canister Id: " .. doc.id }
  if doc.name then lines[#lines + 1] = "Canister Name: " .. doc.name end
  lines[#lines + 1] = "Canister Status Report:"
  lines[#lines + 1] = "  Status: " .. doc.status
  lines[#lines + 1] = "  Controllers:"
  for _, p in ipairs(s.controllers) do lines[#lines + 1] = "    controller: " .. p end
  local rows = {
    { "Compute allocation", s.compute_allocation }, { "Memory allocation", s.memory_allocation },
    { "Freezing threshold", s.freezing_threshold }, { "Reserved cycles limit", s.reserved_cycles_limit },
    { "Wasm memory limit", s.wasm_memory_limit }, { "Wasm memory threshold", s.wasm_memory_threshold },
    { "Log memory limit", s.log_memory_limit }, { "Log visibility", visibility_text(doc.vis.log_visibility) },
    { "Snapshot visibility", visibility_text(doc.vis.snapshot_visibility) },
    { "Status visibility", visibility_text(doc.vis.status_visibility) },
    { "Environment Variables", #s.environment_variables == 0 and "N/A" or nil },
    { "Module hash", doc.module_hash == json.null and "<none>" or doc.module_hash },
    { "Memory size", doc.memory_size }, { "Cycles", doc.cycles }, { "Reserved cycles", doc.reserved_cycles },
    { "Idle cycles burned per day", doc.idle_cycles_burned_per_day },
  }
  for _, r in ipairs(rows) do
    if r[2] then
      lines[#lines + 1] = "  " .. r[1] .. ": " .. r[2]
    else
      -- icp's layout of a non-empty list (observed): a header, then one
      -- `Name: <k>, Value: <v>` line per variable.
      lines[#lines + 1] = "  " .. r[1] .. ":"
      for _, v in ipairs(s.environment_variables) do
        lines[#lines + 1] = "    Name: " .. v.name .. ", Value: " .. v.value
      end
    end
  end
  lines[#lines + 1] = "  Query stats:"
  lines[#lines + 1] = "    Calls: 0"
  lines[#lines + 1] = "    Instructions: 0"
  lines[#lines + 1] = "    Req payload bytes: 0"
  lines[#lines + 1] = "    Res payload bytes: 0"
  return table.concat(lines, "\n") .. "\n"
end

function M.status(ctx)
  local o = ctx.cmd.options
  if not ctx.cmd.args.canister then
    return ctx.fail("Error: not supported by the icp simulator: status of every canister (name one)\n")
  end
  if o["id-only"] then
    ctx.stdout(ctx.canister .. "\n")
    return 0
  end
  if ctx.faults.hang then return ctx.hang() end
  local failed = M.injected_failure(ctx)
  if failed then return failed end
  local home = ctx.home
  local c = home:canister(ctx.canister)
  if not c or ctx.faults.missing_canister then
    return ctx.fail("Error: Canister " .. ctx.canister .. " was not found.\n")
  end
  local l = Home.layout(home:canister_dir(ctx.canister) .. "/live")
  local module_hash = l.wasm_module > 0 and home:module_hash(c)
  local doc = status_doc(ctx, c, module_hash, Home.total_size(l))
  local controls = false
  for _, p in ipairs(c.controllers) do
    if p == ctx.caller then controls = true end
  end
  if o.public or ctx.faults.not_controller or not controls then
    -- The public state-tree view: what anybody may read.
    if o.json then
      ctx.stdout(json.encode(json.ordered({ id = doc.id, name = doc.name, controllers = doc.settings.controllers,
        module_hash = doc.module_hash }, { "id", "name", "controllers", "module_hash" })) .. "\n")
    else
      local lines = { "Canister Id: " .. doc.id, "Canister Status Report:", "  Controllers:" }
      for _, p in ipairs(doc.settings.controllers) do lines[#lines + 1] = "    controller: " .. p end
      lines[#lines + 1] = "  Module hash: " .. (doc.module_hash == json.null and "<none>" or doc.module_hash)
      ctx.stdout(table.concat(lines, "\n") .. "\n")
    end
    return 0
  end
  if o.json then
    ctx.stdout(json.encode(doc) .. "\n")
  else
    doc.vis = { log_visibility = M.setting(c, "log_visibility"), snapshot_visibility = M.setting(c,
      "snapshot_visibility"), status_visibility = M.setting(c, "status_visibility") }
    ctx.stdout(status_text(doc))
  end
  return 0
end

-- {=== snapshots ===}

local function snapshot_entry(s)
  return json.ordered({ snapshot_id = s.id, taken_at_timestamp = s.taken_at_timestamp,
    total_size_bytes = s.total_size }, { "snapshot_id", "taken_at_timestamp", "total_size_bytes" })
end

local function find_snapshot(ctx, id)
  if ctx.faults.snapshot_gone[id:lower()] then return nil end
  return ctx.home:snapshot(ctx.canister, id:lower())
end

local function not_found(ctx, id)
  local counter = #id == 36 and tonumber(id:sub(1, 16), 16) or 0
  return ctx.fail(text.reject("IC0305", { canister = ctx.canister, snapshot = ctx.canister .. "-" .. counter }))
end

function M.create(ctx)
  local home, o = ctx.home, ctx.cmd.options
  return mutation(ctx, function(sim, c)
    local stopped = require_stopped(ctx, c)
    if stopped then return stopped end
    local replace = o.replace and o.replace:lower()
    if replace and not find_snapshot(ctx, replace) then
      return not_found(ctx, replace)
    end
    local existing = home:snapshots(ctx.canister)
    if not replace and #existing >= ctx.faults.limit then
      return ctx.fail(text.reject("IC0406", { canister = ctx.canister, reason = "limit", limit = ctx.faults.limit }))
    end
    local now = Home.tick(sim)
    local id = Home.snapshot_id(ctx.canister, c.next_snapshot_counter)
    local live = home:canister_dir(ctx.canister) .. "/live"
    local l = Home.layout(live)
    local snap = { id = id, counter = c.next_snapshot_counter, taken_at_timestamp = now,
      total_size = Home.total_size(l), source = "taken_from_canister", upload_complete = true }
    if not ctx.faults.silent then
      local dir = home:snapshot_dir(ctx.canister, id)
      local tmp = dir .. ".tmp"
      engine.fs.remove_tree(tmp)
      Home.must("snapshot of " .. ctx.canister, engine.fs.mkdir_private(tmp))
      Home.link_tree(live, tmp .. "/data")
      home:write_json(tmp .. "/metadata.json", Home.metadata(c, l, now, "taken_from_canister"), true)
      home:write_json(tmp .. "/snapshot.json", snap, true)
      assert(os.rename(tmp, dir))
      if replace then
        local old = home:snapshot_dir(ctx.canister, replace)
        Home.must("replaced snapshot of " .. ctx.canister, engine.fs.remove_tree(old))
      end
      c.next_snapshot_counter = c.next_snapshot_counter + 1
      Home.count_effect(c, "snapshot_create")
      home:save_canister(c)
    end
    if o.json then
      ctx.stdout(json.encode(snapshot_entry(snap)))
    elseif o.quiet then
      ctx.stdout(id .. "\n")
    else
      ctx.stdout(string.format("Created snapshot %s for canister %s\n  Timestamp: %s\n  Size: %s\n", id, label(ctx),
        text.timestamp(now), text.size(snap.total_size)))
    end
    return 0
  end)
end

function M.list(ctx)
  if ctx.faults.hang then return ctx.hang() end
  local failed = M.injected_failure(ctx)
  if failed then return failed end
  local home, o = ctx.home, ctx.cmd.options
  local c, rc = M.controlled(ctx, home:canister(ctx.canister))
  if not c then return rc end
  local snaps = {}
  for _, s in ipairs(home:snapshots(ctx.canister)) do
    if not ctx.faults.snapshot_gone[s.id] then snaps[#snaps + 1] = s end
  end
  local human
  if #snaps == 0 then
    human = string.format("No snapshots found for canister %s\n", label(ctx))
  else
    local lines = { string.format("Snapshots for canister %s:", label(ctx)) }
    for _, s in ipairs(snaps) do
      lines[#lines + 1] = string.format("  %s: %s, taken at %s", s.id, text.size(s.total_size),
        text.timestamp(s.taken_at_timestamp):gsub(" UTC$", " UTC"))
    end
    human = table.concat(lines, "\n") .. "\n"
  end
  if o.json then
    local list = {}
    for i, s in ipairs(snaps) do list[i] = snapshot_entry(s) end
    ctx.stdout(json.encode(json.ordered({ snapshots = json.array(list) }, { "snapshots" })))
  elseif o.quiet then
    -- icp 1.5.0 prints the ids and then the human listing as well.
    local ids = {}
    for i, s in ipairs(snaps) do ids[i] = s.id end
    ctx.stdout(table.concat(ids, "\n") .. "\n" .. human)
  else
    ctx.stdout(human)
  end
  return 0
end

function M.delete(ctx)
  local home = ctx.home
  local id = ctx.cmd.args.snapshot_id:lower()
  return mutation(ctx, function(sim, c)
    if not find_snapshot(ctx, id) then return not_found(ctx, id) end
    Home.tick(sim)
    if not ctx.faults.silent then
      Home.must("snapshot delete of " .. ctx.canister, engine.fs.remove_tree(home:snapshot_dir(ctx.canister, id)))
      Home.count_effect(c, "snapshot_delete")
      home:save_canister(c)
    end
    ctx.stderr(string.format("Deleted snapshot %s from canister %s\n", id, label(ctx)))
    return 0
  end)
end

function M.restore(ctx)
  local home = ctx.home
  local id = ctx.cmd.args.snapshot_id:lower()
  return mutation(ctx, function(sim, c)
    local stopped = require_stopped(ctx, c)
    if stopped then return stopped end
    local snap = find_snapshot(ctx, id)
    if not snap then return not_found(ctx, id) end
    if not snap.upload_complete then
      return ctx.fail(text.reject("IC0406", { canister = ctx.canister, reason = "not-loadable",
        snapshot = ctx.canister .. "-" .. snap.counter }))
    end
    Home.tick(sim)
    if not ctx.faults.silent then
      local dir = home:canister_dir(ctx.canister)
      local snapdir = home:snapshot_dir(ctx.canister, id)
      engine.fs.remove_tree(dir .. "/live.new")
      engine.fs.remove_tree(dir .. "/live.old")
      if snap.source == "taken_from_canister" then
        Home.link_tree(snapdir .. "/data", dir .. "/live.new")
      else
        assert(engine.hash.copy_tree(snapdir .. "/data", dir .. "/live.new"))
      end
      assert(os.rename(dir .. "/live", dir .. "/live.old"))
      assert(os.rename(dir .. "/live.new", dir .. "/live"))
      engine.fs.remove_tree(dir .. "/live.old")
      local meta = home:read_json(snapdir .. "/metadata.json")
      if meta then
        c.globals = meta.globals
        c.certified_data_hex = hex.encode_list(meta.certified_data or {})
        c.global_timer = meta.global_timer ~= json.null and meta.global_timer or nil
        c.hook = meta.on_low_wasm_memory_hook_status ~= json.null and meta.on_low_wasm_memory_hook_status or nil
      end
      c.module_hash = home:live_module_hash(ctx.canister)
      c.version = c.version + 1
      Home.count_effect(c, "snapshot_load")
      home:save_canister(c)
    end
    ctx.stderr(string.format("Restored canister %s from snapshot %s\n", label(ctx), id))
    return 0
  end)
end

-- {=== canister create / delete ===}

-- Detached canisters get ids far above any fleet's (init numbers a fleet
-- from 0x100 + seed * 1000), so a scratch id never names a member.
local DETACHED_BASE = 0x10000000
local DEFAULT_CYCLES = 2000000000000
local CYCLE_SUFFIX = { k = 1e3, m = 1e6, b = 1e9, t = 1e12 }

-- icp's cycle amounts: a number with an optional k/m/b/t suffix.
local function cycles_amount(v)
  local num, suffix = v:lower():match("^([%d%.]+)([kmbt]?)$")
  local n = num and tonumber(num)
  if not n then return nil end
  return math.tointeger(math.floor(n * (CYCLE_SUFFIX[suffix] or 1)))
end

--- `icp canister create --detached`: a new, empty, running canister owned
-- by the given controllers (the caller when none are given), funded with
-- --cycles (2T by default). Only --detached is served: icp-sim has no
-- project whose canisters could be created by name.
function M.create_canister(ctx)
  local o = ctx.cmd.options
  if not o.detached then
    return ctx.fail("Error: not supported by the icp simulator: icp canister create of a project canister\n")
  end
  if o.json then
    -- icp 1.5.0's JSON shape for create is not recorded in the reference.
    return ctx.fail("Error: not supported by the icp simulator: icp canister create --json\n")
  end
  local cycles = DEFAULT_CYCLES
  if o.cycles then
    cycles = cycles_amount(o.cycles)
    if not cycles then return ctx.fail("Error: invalid cycles amount '" .. o.cycles .. "'\n") end
  end
  if ctx.faults.hang then return ctx.hang() end
  local failed = M.injected_failure(ctx)
  if failed then return failed end
  local home = ctx.home
  local cid = home:transact(function(sim)
    local now = Home.tick(sim)
    local n = (sim.detached_counter or 0) + 1
    sim.detached_counter = n
    local id = principal.canister_id(DETACHED_BASE + n)
    local dir = home:canister_dir(id)
    for _, d in ipairs({ dir, dir .. "/live", dir .. "/live/wasm_chunk_store", dir .. "/snapshots" }) do
      Home.must("canister create", engine.fs.mkdir_private(d))
    end
    -- An empty canister: no module, empty memories.
    for _, f in ipairs({ "wasm_memory.bin", "stable_memory.bin" }) do
      local h = assert(io.open(dir .. "/live/" .. f, "wb"))
      h:close()
    end
    home:save_canister({
      id = id, role = json.null, parent = json.null, order = DETACHED_BASE + n, depth = 0, detached = true,
      status = "running", controllers = json.array(o.controller or { ctx.caller }), created_at = now,
      version = 0, next_snapshot_counter = 0, cycles = cycles, globals = json.array({}),
      certified_data_hex = "", global_timer = "inactive", hook = "condition_not_satisfied",
      effects = json.object({ create = 1 }),
    })
    return id
  end)
  if ctx.faults.fail_after then
    -- Created, but the caller never hears the id.
    ctx.faults.fail = ctx.faults.fail_after
    return M.injected_failure(ctx)
  end
  if o.quiet then
    ctx.stdout(cid .. "\n")
  else
    ctx.stdout("Created canister with ID " .. cid .. "\n")
  end
  return 0
end

--- `icp canister delete`: the canister must be stopped; its cycles go back
-- to the caller (icp does this through a temporary shim canister) unless
-- --no-recover-cycles burns them. The canister and its snapshots are gone.
function M.delete_canister(ctx)
  local home = ctx.home
  return mutation(ctx, function(sim, c)
    local stopped = require_stopped(ctx, c)
    if stopped then return stopped end
    Home.tick(sim)
    if ctx.faults.silent then return 0 end
    if not ctx.cmd.options["no-recover-cycles"] then
      ctx.stderr(string.format("Recovered %d cycles from canister %s to %s\n", math.tointeger(c.cycles or 0),
        ctx.canister, ctx.caller))
    end
    sim.deleted = sim.deleted or json.array({})
    sim.deleted[#sim.deleted + 1] = ctx.canister
    Home.must("canister delete of " .. ctx.canister, engine.fs.remove_tree(home:canister_dir(ctx.canister)))
    return 0
  end)
end

-- {=== call ===}

local function registry_reply(home)
  local members = {}
  local ids = home:canister_ids()
  for _, cid in ipairs(ids) do
    local c = home:canister(cid)
    -- A detached (scratch) canister never registered with the root.
    if not c.detached then
      local mh = home:module_hash(c)
      members[#members + 1] = { canister_id = cid, role = c.role, parent = c.parent ~= json.null and c.parent or nil,
        module_hash = mh and hex.decode(mh) or nil,
        created_at = c.created_at or 0, order = c.order or 0 }
    end
  end
  table.sort(members, function(a, b) return a.order < b.order end)
  return canic.encode_registry(members)
end

-- The request fields the directory reads, taken from the Candid text of
-- the call's argument (the simulator has no Candid text parser; the
-- patterns match what fleetsnap's directory walk and the docs' example
-- send). Returns {limit, cursor, revision, role, parent} or nil, why.
local function directory_request(args)
  local limit = args:match("limit%s*=%s*(%d+)")
  if not limit then return nil, "no limit" end
  local req = { limit = math.tointeger(limit), revision = args:match("directory%s*=%s*opt%s*%(?%s*(%d+)"),
    role = args:match("role%s*=%s*opt%s*\"([^\"]*)\""),
    parent = args:match("parent_canister_id%s*=%s*opt%s*principal%s*\"([^\"]*)\"") }
  local blob = args:match("cursor%s*=%s*opt%s*blob%s*\"([^\"]*)\"")
  if blob then req.cursor = blob:gsub("\\(%x%x)", function(h) return string.char(tonumber(h, 16)) end) end
  req.revision = req.revision and math.tointeger(req.revision)
  return req
end

-- The directory page a directory-style root serves (Canic 0.100+'s
-- canic_root_component_directory_page, as modelled in fleetsnap.canic):
-- the members below the root in fleet order, `limit` at a time after the
-- cursor (the last index served and the revision it was served at, as
-- Canic's cursor is bound to the directory's revision). The caller must be
-- a registered member of the Component, as Canic's directory_page
-- requires; the operator's identity is not one unless `sim directory
-- --allow` stands it in for a member that reads on its behalf.
local function directory_reply(home, caller)
  local sim = assert(home:read_json(home:path("sim.json")))
  local dir = sim.directory
  local ids = home:canister_ids()
  local members = {}
  local registered = false
  for _, cid in ipairs(ids) do
    local c = home:canister(cid)
    if cid == caller then registered = true end
    if c.parent ~= json.null and c.parent ~= nil and not c.detached then members[#members + 1] = c end
  end
  for _, p in ipairs(dir.readers or {}) do if p == caller then registered = true end end
  if not registered then
    return nil, string.format("COMPONENT_DIRECTORY_MEMBER_REQUIRED: caller %s is not a registered member of "
      .. "Component %s", caller, sim.root)
  end
  table.sort(members, function(x, y) return x.order < y.order end)
  return members, dir
end

local function directory_page(home, caller, args)
  local members, dir = directory_reply(home, caller)
  if not members then return canic.encode_directory_error("Forbidden", dir) end
  local req = directory_request(args)
  if not req or req.limit < 1 or req.limit > canic.DIRECTORY_MAX_LIMIT then
    return canic.encode_directory_error("InvalidInput", "limit must be 1 to " .. canic.DIRECTORY_MAX_LIMIT)
  end
  if req.revision and req.revision ~= dir.revision then
    return canic.encode_directory_error("Conflict", "the directory head is not the current one")
  end
  local after = 0
  if req.cursor then
    if #req.cursor ~= 16 then return canic.encode_directory_error("InvalidInput", "malformed cursor") end
    local rev
    after, rev = string.unpack(">I8I8", req.cursor)
    if rev ~= dir.revision then
      return canic.encode_directory_error("Conflict", "the cursor belongs to another directory revision")
    end
  end
  local matching = {}
  for _, c in ipairs(members) do
    if (not req.role or c.role == req.role) and (not req.parent or c.parent == req.parent) then
      matching[#matching + 1] = c
    end
  end
  -- The simulated root serves at most its page size, whatever the limit
  -- asked for, so that a walk pages even over a small fleet.
  local limit = math.min(req.limit, dir.page or canic.DIRECTORY_MAX_LIMIT)
  local entries = {}
  for i = after + 1, math.min(#matching, after + limit) do
    local c = matching[i]
    entries[#entries + 1] = { canister_id = c.id, role = c.role, parent = c.parent,
      status = c.directory_status or "Active" }
  end
  local last = after + #entries
  local next_cursor = last < #matching and string.pack(">I8I8", last, dir.revision) or nil
  return canic.encode_directory_page({ revision = dir.revision, descendant_count = #members }, entries, next_cursor)
end

function M.call(ctx)
  local a, o = ctx.cmd.args, ctx.cmd.options
  if not a.method or not a.args then
    return ctx.fail("Error: not supported by the icp simulator: interactive canister call (give METHOD and ARGS)\n")
  end
  if o["sign-only"] then
    return ctx.fail("Error: not supported by the icp simulator: --sign-only\n")
  end
  if ctx.faults.hang then return ctx.hang() end
  local failed = M.injected_failure(ctx)
  if failed then return failed end
  local home = ctx.home
  local c = home:canister(ctx.canister)
  if not c or ctx.faults.missing_canister then
    return ctx.fail(text.reject("IC0301", { canister = ctx.canister, query = o.query }))
  end
  local reply
  -- A directory-style fleet (`sim init --directory-page`) has the
  -- directory and no canic_subnet_registry, as Canic 0.100+.
  local directory = c.role == "root" and (home:read_json(home:path("sim.json")) or {}).directory
  if a.method == canic.DIRECTORY_METHOD and directory then
    reply = directory_page(home, ctx.caller, a.args)
  elseif a.method == canic.METHOD and c.role == "root" and not directory then
    reply = registry_reply(home)
  else
    local canned = home:read_json(home:canister_dir(ctx.canister) .. "/calls/" .. a.method .. ".json")
    if canned then
      reply = hex.decode(canned.reply_hex)
    else
      return ctx.fail(text.reject("IC0536", { canister = ctx.canister, method = a.method, query = o.query }))
    end
  end
  if not o.candid then
    ctx.stderr("WARN no Candid interface is available, serializing arguments with inferred types.\n")
  end
  local output = o.output or "auto"
  if o.json then
    ctx.stdout(json.encode(json.ordered({ response_bytes = hex.encode(reply), response_text = json.null,
      response_candid = json.null }, { "response_bytes", "response_text", "response_candid" })))
  elseif output == "hex" then
    ctx.stdout(hex.encode(reply) .. "\n")
  elseif output == "text" then
    return ctx.fail("Error: response is not valid UTF-8\n\nCaused by:\n    0: response (hex): " .. hex.encode(reply)
      .. "\n    1: invalid utf-8 sequence\n")
  else
    -- The simulator does not render Candid text; a blob stub stands in.
    ctx.stdout("(blob \"" .. hex.encode(reply):gsub("..", "\\%0") .. "\")\n")
  end
  return 0
end

-- {=== settings update ===}

local SIZE = { [""] = 1, kb = 1000, kib = 1024, mb = 1000 ^ 2, mib = 1024 ^ 2, gb = 1000 ^ 3, gib = 1024 ^ 3 }
local DURATION = { [""] = 1, s = 1, m = 60, h = 3600, d = 86400, w = 604800 }
local CYCLES = { [""] = 1, k = 1e3, m = 1e6, b = 1e9, t = 1e12 }

-- A number with icp's suffixes (sizes, durations, cycle counts).
local function amount(v, units)
  local num, unit = v:lower():match("^([%d%.]+)(%a*)$")
  local mult = num and units[unit]
  local n = mult and tonumber(num)
  if not n then return nil end
  return math.tointeger(math.floor(n * mult + 0.5))
end

local NAT_OPTIONS = {
  { "compute-allocation", "compute_allocation", { [""] = 1 } },
  { "memory-allocation", "memory_allocation", SIZE },
  { "freezing-threshold", "freezing_threshold", DURATION },
  { "reserved-cycles-limit", "reserved_cycles_limit", CYCLES },
  { "wasm-memory-limit", "wasm_memory_limit", SIZE },
  { "wasm-memory-threshold", "wasm_memory_threshold", SIZE },
  { "log-memory-limit", "log_memory_limit", SIZE },
}

local function remove(list, x)
  for i = #list, 1, -1 do if list[i] == x then table.remove(list, i) end end
end

local function add(list, x)
  for _, y in ipairs(list) do if y == x then return end end
  list[#list + 1] = x
end

-- A visibility's new value from --X-visibility / --set-X-viewer /
-- --add-X-viewer / --remove-X-viewer; nil and an error when refused.
local function new_visibility(ctx, o, name, current)
  if o[name .. "-visibility"] then return o[name .. "-visibility"] end
  if o["set-" .. name .. "-viewer"] then return json.array(o["set-" .. name .. "-viewer"]) end
  local adds, removes = o["add-" .. name .. "-viewer"], o["remove-" .. name .. "-viewer"]
  if not (adds or removes) then return current end
  if current == "public" then
    return nil, ctx.fail("Error: " .. name .. " visibility is public, which has no viewers list\n")
  end
  local list = {}
  if type(current) == "table" then for i, p in ipairs(current) do list[i] = p end end
  for _, p in ipairs(adds or {}) do add(list, p) end
  for _, p in ipairs(removes or {}) do remove(list, p) end
  return json.array(list)
end

--- `canister settings update`: one update_settings call changing what
-- the status reports (unchanged fields keep their values).
function M.settings_update(ctx)
  local o = ctx.cmd.options
  local parsed = {}
  for _, n in ipairs(NAT_OPTIONS) do
    if o[n[1]] then
      parsed[n[2]] = amount(o[n[1]], n[3])
      if not parsed[n[2]] then
        return ctx.fail("Error: invalid value '" .. o[n[1]] .. "' for '--" .. n[1] .. "'\n")
      end
    end
  end
  return mutation(ctx, function(sim, c)
    Home.tick(sim)
    local settings = c.settings or {}
    for k, v in pairs(parsed) do settings[k] = v end
    for _, name in ipairs({ "log", "snapshot", "status" }) do
      local v, rc = new_visibility(ctx, o, name, M.setting(c, name .. "_visibility"))
      if v == nil then return rc end
      settings[name .. "_visibility"] = v
    end
    if o["remove-all-controllers"] then c.controllers = json.array({}) end
    for _, p in ipairs(o["remove-controller"] or {}) do remove(c.controllers, p) end
    for _, p in ipairs(o["add-controller"] or {}) do add(c.controllers, p) end
    local vars = c.environment_variables or {}
    for _, k in ipairs(o["remove-environment-variable"] or {}) do
      for i = #vars, 1, -1 do if vars[i].name == k then table.remove(vars, i) end end
    end
    for _, kv in ipairs(o["add-environment-variable"] or {}) do
      local k, v = kv:match("^([^=]+)=(.*)$")
      if not k then return ctx.fail("Error: environment variable '" .. kv .. "' is not KEY=VALUE\n") end
      local found = false
      for _, e in ipairs(vars) do
        if e.name == k then e.value, found = v, true end
      end
      if not found then vars[#vars + 1] = { name = k, value = v } end
    end
    c.settings, c.environment_variables = json.object(settings), json.array(vars)
    Home.count_effect(c, "settings_update")
    ctx.home:save_canister(c)
    return 0
  end)
end

function M.identity(ctx)
  ctx.stdout(ctx.caller .. "\n")
  return 0
end

local HANDLERS = {
  ["canister stop"] = M.stop,
  ["canister start"] = M.start,
  ["canister status"] = M.status,
  ["canister snapshot create"] = M.create,
  ["canister snapshot list"] = M.list,
  ["canister snapshot delete"] = M.delete,
  ["canister snapshot restore"] = M.restore,
  ["canister snapshot download"] = function(ctx) return require("icp_sim.transfer").download(ctx) end,
  ["canister snapshot upload"] = function(ctx) return require("icp_sim.transfer").upload(ctx) end,
  ["canister call"] = M.call,
  ["canister create"] = M.create_canister,
  ["canister delete"] = M.delete_canister,
  ["canister settings update"] = M.settings_update,
  ["identity principal"] = M.identity,
}

function M.run(ctx)
  -- Latency is paid before the call reaches the (simulated) network, and
  -- never under the home lock.
  ctx.sleep_ms(ctx.faults.latency_ms)
  return HANDLERS[ctx.cmd.command](ctx)
end

return M
