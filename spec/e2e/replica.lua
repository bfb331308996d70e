--- The e2e specs' side of tools/replica: an icp identity in a private
-- $HOME, a replica started per test (a small Canic fleet, loopback only),
-- its admin interface, its request log, and fleetsnap run through the real
-- icp 1.5.0 against it.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local M = {}

M.icp_path = os.getenv("FLEETSNAP_ICP_REAL") or (helpers.root .. "/.cache/icp/package/bin/icp")
local RUN = helpers.root .. "/tools/replica/run"
local CLIENT = helpers.root .. "/tools/replica/src/client.js"

-- The e2e suite needs what scripts/test installs; missing pieces are a
-- failure with the command that installs them, never a silent skip.
function M.check_installed()
  assert(fs.lstat(M.icp_path), "the real icp is missing: " .. M.icp_path
    .. " (. scripts/lib/deps.sh && fleetsnap_install_icp .)")
  assert(fs.lstat(helpers.root .. "/.cache/replica/node_modules"),
    "the replica's packages are missing (. scripts/lib/deps.sh && fleetsnap_install_replica .)")
end

-- icp never sees the operator's home, telemetry or backtraces.
local function icp_env(home)
  return { HOME = home, DO_NOT_TRACK = "1", RUST_BACKTRACE = "0" }
end

local identity
--- A $HOME holding the plaintext icp identity "ops" (made once per run),
-- and its principal: the controller of every canister of the fleets.
function M.identity()
  if identity then return identity end
  local home = helpers.tmpdir()
  local r = engine.proc.run({ argv = { M.icp_path, "identity", "new", "ops", "--storage", "plaintext" },
    env = icp_env(home), timeout_ms = 60000 })
  assert(r.status == 0, r.stderr)
  r = engine.proc.run({ argv = { M.icp_path, "identity", "principal", "--identity", "ops" }, env = icp_env(home),
    timeout_ms = 60000 })
  assert(r.status == 0, r.stderr)
  identity = { home = home, principal = (r.stdout:gsub("%s+$", "")) }
  return identity
end

local Replica = {}
Replica.__index = Replica

--- The lifecycle every e2e describe block needs, registered in it: the
-- block fails at once when the replica or icp is not installed
-- (check_installed), the replica a test started is stopped after it, and
-- the temporary files go at the end.
-- Returns start(opts), which starts a replica (M.start) that the next
-- after_each stops.
function M.each_test()
  local busted = require "busted"
  local current
  busted.setup(M.check_installed)
  busted.after_each(function()
    if current then current:stop() end
    current = nil
  end)
  busted.teardown(helpers.cleanup)
  return function(opts)
    current = M.start(opts)
    return current
  end
end

--- Starts a replica on a free loopback port with the fleet root + `members`
-- (default 2, tiny memories). Returns the handle once its state file exists.
function M.start(opts)
  opts = opts or {}
  local id = M.identity()
  local dir = helpers.tmpdir()
  local canisters = { { role = "root", heap_bytes = 65536, stable_bytes = 0 } }
  for i = 1, opts.members or 2 do
    -- Distinct shapes: a chunk store on the first member, stable memory on all.
    canisters[#canisters + 1] = { role = "member" .. i, parent = "root", heap_bytes = 65536 * i,
      stable_bytes = 4096 * i, chunks = i == 1 and 2 or 0 }
  end
  helpers.write(dir .. "/fleet.json", json.encode({ controllers = { id.principal }, seed = opts.seed or "e2e",
    canisters = canisters }))
  local proc = assert(engine.proc.spawn({
    argv = { RUN, "--fleet", dir .. "/fleet.json", "--state", dir .. "/state.json", "--log", dir .. "/log.jsonl",
      "--stop-delay-ms", tostring(opts.stop_delay_ms or 100) },
    unset_env = { "LD_PRELOAD" },
  }))
  local state
  for _ = 1, 300 do
    local text = helpers.read(dir .. "/state.json")
    if text then state = json.decode(text) break end
    engine.sleep_ms(20)
  end
  if not state then
    proc:kill(9)
    local r = proc:result()
    error("the replica did not start: " .. tostring(r.stderr))
  end
  return setmetatable({ dir = dir, proc = proc, url = state.url, root_key = state.root_key, root = state.root,
    home = id.home, log_path = dir .. "/log.jsonl" }, Replica)
end

function Replica:stop()
  if self.proc then
    self.proc:kill()
    self.proc:result()
    self.proc = nil
  end
end

--- An admin request; the decoded JSON answer.
function Replica:admin(method, path, body)
  local argv = { "node", CLIENT, self.url, method, path }
  if body then argv[#argv + 1] = json.encode(body) end
  local r = engine.proc.run({ argv = argv, unset_env = { "LD_PRELOAD" }, timeout_ms = 30000 })
  assert(r.status == 0, method .. " " .. path .. ": " .. r.stdout .. r.stderr)
  return json.decode(r.stdout)
end

--- The fleet as the replica holds it, canisters by id.
function Replica:canisters()
  local out = {}
  for _, c in ipairs(self:admin("GET", "/admin/fleet").canisters) do out[c.canister_id] = c end
  return out
end

--- Whether a canister of the admin view is a member (has a parent; the
-- root's parent is JSON null).
function M.is_member(c)
  return c.parent ~= nil and c.parent ~= json.null
end

function Replica:members()
  local out = {}
  for _, c in ipairs(self:admin("GET", "/admin/fleet").canisters) do
    if M.is_member(c) then out[#out + 1] = c end
  end
  return out
end

--- Replaces the fault rules (see tools/replica/src/faults.js).
function Replica:faults(rules)
  return self:admin("POST", "/admin/faults", rules)
end

--- Overwrites bytes of a member's memory ("wasm_memory" or "stable_memory").
function Replica:mutate(canister, memory, offset, hex)
  return self:admin("POST", "/admin/canister/" .. canister .. "/mutate",
    { memory = memory, offset = offset, hex = hex })
end

--- The request log: one table per request the replica answered (or faulted).
function Replica:log()
  local out = {}
  local text = helpers.read(self.log_path) or ""
  for line in text:gmatch("[^\n]+") do out[#out + 1] = json.decode(line) end
  return out
end

--- Log entries matching every field of `filter`.
function Replica:requests(filter)
  local out = {}
  for _, e in ipairs(self:log()) do
    local ok = true
    for k, v in pairs(filter) do
      if e[k] ~= v then ok = false break end
    end
    if ok then out[#out + 1] = e end
  end
  return out
end

--- The connection flags of fleetsnap for this replica.
function Replica:flags()
  return { "--icp", M.icp_path, "-n", self.url, "-k", self.root_key, "--identity", "ops" }
end

--- Runs scripts/fleetsnap through the real icp against this replica.
function Replica:fleetsnap(argv, extra_env)
  local full = self:flags()
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local env = icp_env(self.home)
  for k, v in pairs(extra_env or {}) do env[k] = v end
  return helpers.fleetsnap(nil, full, env)
end

--- Runs the real icp against this replica: `canister <argv...>` with the
-- target flags and the identity appended.
function Replica:icp(argv)
  local full = { M.icp_path, "canister" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  for _, a in ipairs({ "-n", self.url, "-k", self.root_key, "--identity", "ops" }) do full[#full + 1] = a end
  return assert(engine.proc.run({ argv = full, env = icp_env(self.home), unset_env = { "LD_PRELOAD" },
    timeout_ms = 60000 }))
end

--- Like fleetsnap, but started and returned as a process (for kills).
function Replica:spawn_fleetsnap(argv)
  local full = { helpers.root .. "/scripts/fleetsnap" }
  for _, a in ipairs(self:flags()) do full[#full + 1] = a end
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return assert(engine.proc.spawn({ argv = full, env = icp_env(self.home), unset_env = { "LD_PRELOAD" } }))
end

--- sha256 of a file (hex), or nil when it does not exist.
function M.file_sha256(path)
  if not fs.lstat(path) then return nil end
  return (assert(engine.hash.file(path)))
end

return M
