--- fleetsnap: back up and restore fleets of Internet Computer canisters.
--
-- `require "fleetsnap"` gives the engine (`fleetsnap.engine`, the C module)
-- and its parts under short names; the domain modules (discovery, plans,
-- runner, restore, drivers) are loaded on first use, so requiring this
-- module costs no more than loading the engine.
local engine = require "fleetsnap.engine"

local M = {
  engine = engine,
  json = engine.json,
  hash = engine.hash,
  fs = engine.fs,
  lock = engine.lock,
  proc = engine.proc,
  journal = engine.journal,
  version = engine.version,
}

-- Domain modules that exist are loaded lazily as `fleetsnap.<name>`.
local lazy = {}

return setmetatable(M, {
  __index = function(t, name)
    if type(name) ~= "string" or lazy[name] == false then
      return nil
    end
    local ok, mod = pcall(require, "fleetsnap." .. name)
    if not ok then
      if tostring(mod):find("module 'fleetsnap." .. name .. "' not found", 1, true) then
        lazy[name] = false
        return nil
      end
      error(mod, 2)
    end
    rawset(t, name, mod)
    return mod
  end,
})
