--- Canic's root registry: the Candid types of `canic_subnet_registry`
-- (Canic 0.1.0 to 0.100.79, reference icp-cli-interface.md §8) and the
-- encoding of a fleet as its reply.
local candid = require "fleetsnap.candid"

local M = {}

M.METHOD = "canic_subnet_registry"

local CanisterInfo = candid.record({
  { "pid", candid.principal },
  { "role", candid.text },
  { "parent_pid", candid.opt(candid.principal) },
  { "module_hash", candid.opt(candid.blob) },
  { "created_at", candid.nat64 },
})

local Entry = candid.record({
  { "pid", candid.principal },
  { "role", candid.text },
  { "record", CanisterInfo },
})

M.ERROR_CODES = { "Conflict", "Forbidden", "Internal", "InvalidInput", "NotFound", "Unauthorized", "Unavailable" }

local codes = {}
for i, name in ipairs(M.ERROR_CODES) do
  codes[i] = { name }
end

local Error = candid.record({
  { "code", candid.variant(codes) },
  { "message", candid.text },
})

M.RESULT = candid.variant({ { "Ok", candid.vec(Entry) }, { "Err", Error } })

M.NAMES = { "Ok", "Err", "pid", "role", "record", "parent_pid", "module_hash", "created_at", "code", "message" }
for _, name in ipairs(M.ERROR_CODES) do
  M.NAMES[#M.NAMES + 1] = name
end

--- The reply bytes for a fleet: members = {{canister_id, role, parent,
-- module_hash (raw bytes or nil), created_at}, ...}.
function M.encode_registry(members)
  local entries = {}
  for i, m in ipairs(members) do
    entries[i] = {
      pid = m.canister_id,
      role = m.role,
      record = {
        pid = m.canister_id,
        role = m.role,
        parent_pid = m.parent,
        module_hash = m.module_hash,
        created_at = m.created_at or 0,
      },
    }
  end
  return candid.encode({ M.RESULT }, { { Ok = entries } })
end

function M.encode_error(code, message)
  return candid.encode({ M.RESULT }, { { Err = { code = { [code] = true }, message = message } } })
end

return M
