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

-- {=== the component directory (Canic 0.100+) ===}
--
-- fleetsnap's model of `canic_root_component_directory_page`
-- (crates/canic-core/src/dto/component_registry.rs in Canic: the request
-- ComponentDirectoryPageRequest, the reply ComponentDirectoryPageResponse),
-- trimmed to what discovery reads; docs/policies.md lists what was left
-- out. The request, as Candid text (icp encodes it):
--   record { directory : opt nat64; parent_canister_id : opt principal;
--            role : opt text; cursor : opt blob; limit : nat16 }
-- `directory` is the head's revision the walk is bound to (null on the
-- first page); Canic passes the whole ComponentDirectoryHead instead.

M.DIRECTORY_METHOD = "canic_root_component_directory_page"
M.DIRECTORY_MAX_LIMIT = 100 -- MAX_COMPONENT_DIRECTORY_PAGE_ENTRIES in Canic
M.DIRECTORY_STATUSES = { "Prepared", "Active", "Draining", "Removed" }

local statuses = {}
for i, name in ipairs(M.DIRECTORY_STATUSES) do statuses[i] = { name } end

local Head = candid.record({ { "revision", candid.nat64 }, { "descendant_count", candid.nat32 } })
local ChildBinding = candid.record({
  { "parent_canister_id", candid.principal },
  { "role", candid.text },
  { "canister_id", candid.principal },
})
local DirectoryEntry = candid.record({ { "binding", ChildBinding }, { "status", candid.variant(statuses) } })
local Page = candid.record({
  { "directory", Head },
  { "entries", candid.vec(DirectoryEntry) },
  { "next_cursor", candid.opt(candid.blob) },
})

M.DIRECTORY_RESULT = candid.variant({ { "Ok", Page }, { "Err", Error } })

-- The field names of a page reply, for candid.decode.
M.DIRECTORY_NAMES = { "Ok", "Err", "directory", "revision", "descendant_count", "entries", "binding", "status",
  "next_cursor", "parent_canister_id", "role", "canister_id", "code", "message" }
for _, list in ipairs({ M.DIRECTORY_STATUSES, M.ERROR_CODES }) do
  for _, name in ipairs(list) do M.DIRECTORY_NAMES[#M.DIRECTORY_NAMES + 1] = name end
end

--- The reply bytes for a page: head {revision, descendant_count}, entries
-- {{canister_id, role, parent, status}, ...}, next_cursor (bytes or nil).
function M.encode_directory_page(head, entries, next_cursor)
  local out = {}
  for i, e in ipairs(entries) do
    out[i] = { binding = { parent_canister_id = e.parent, role = e.role, canister_id = e.canister_id },
      status = { [e.status] = true } }
  end
  return candid.encode({ M.DIRECTORY_RESULT }, { { Ok = { directory = head, entries = out,
    next_cursor = next_cursor } } })
end

function M.encode_directory_error(code, message)
  return candid.encode({ M.DIRECTORY_RESULT }, { { Err = { code = { [code] = true }, message = message } } })
end

return M
