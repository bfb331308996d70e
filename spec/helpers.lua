--- Shared helpers of the busted specs: temporary directories, file
-- writing, running Lua children with the engine on their path.
local engine = require "fleetsnap.engine"

local M = {}

M.root = os.getenv("FLEETSNAP_ROOT") or "."
M.build = os.getenv("FLEETSNAP_BUILD") or (M.root .. "/build")

local tmp_dirs = {}

--- A fresh directory under /tmp, removed by `M.cleanup()`.
function M.tmpdir()
  local r = engine.proc.run({ argv = { "mktemp", "-d", "/tmp/fsn-spec-XXXXXX" } })
  assert(r.status == 0, r.stderr)
  local dir = r.stdout:gsub("%s+$", "")
  tmp_dirs[#tmp_dirs + 1] = dir
  return dir
end

function M.cleanup()
  for i = #tmp_dirs, 1, -1 do
    engine.proc.run({ argv = { "rm", "-rf", tmp_dirs[i] } })
    tmp_dirs[i] = nil
  end
end

function M.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local data = f:read("a")
  f:close()
  return data
end

--- Runs a shell command (test tooling: under AddressSanitizer the runtime is
-- not preloaded into it, since some tools such as ps deadlock with it).
function M.sh(cmd)
  local r = engine.proc.run({ argv = { "sh", "-c", cmd }, unset_env = { "LD_PRELOAD" } })
  assert(r.status == 0, cmd .. ": " .. r.stderr)
  return r.stdout
end

--- Runs a Lua chunk in a child lua5.4 with the same module paths.
function M.lua(code, env)
  local opts = {
    argv = { "lua5.4", "-e", code },
    env = {
      LUA_PATH = package.path,
      LUA_CPATH = package.cpath,
    },
    timeout_ms = 60000,
  }
  for k, v in pairs(env or {}) do
    opts.env[k] = v
  end
  return engine.proc.run(opts)
end

return M
