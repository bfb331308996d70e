--- Discovery by walking a Canic 0.100+ component directory: page after page
-- of `canic_root_component_directory_page` on the root, through a policy's
-- ctx.query (so every page is recorded and asked again by the drift check).
-- The request and reply types are fleetsnap's model of Canic's
-- (fleetsnap.canic; docs/policies.md says what was left out).
local canic = require "fleetsnap.canic"
local errors = require "fleetsnap.errors"

local M = {}

-- Candid text of a text value.
local function text_literal(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

-- Candid text of a blob value: every byte escaped, whatever it is.
local function blob_literal(b)
  return 'blob "' .. b:gsub(".", function(c) return string.format("\\%02x", c:byte()) end) .. '"'
end

--- The Candid text of one page request: revision (the head the walk is
-- bound to, nil on the first page), cursor (bytes or nil), limit, and
-- the optional filters opts.role and opts.parent.
function M.request(revision, cursor, limit, opts)
  opts = opts or {}
  return string.format("(record { directory = %s; parent_canister_id = %s; role = %s; cursor = %s; "
    .. "limit = %d : nat16 })",
    revision and string.format("opt (%d : nat64)", revision) or "null",
    opts.parent and "opt principal " .. text_literal(opts.parent) or "null",
    opts.role and "opt " .. text_literal(opts.role) or "null",
    cursor and "opt " .. blob_literal(cursor) or "null",
    limit)
end

--- Walks the directory of ctx.root (or opts.root) with ctx.query. opts:
-- limit (entries asked per page, 1..100, default 100), role and parent
-- (filters), root_role (the root's role in the result, "root"). Returns
-- {root, members} for discover, the root first, then every entry not
-- Removed in directory order. Raises an EREGISTRY error object naming the
-- root and the method when a reply is not a page or the root refuses.
function M.walk(ctx, opts)
  opts = opts or {}
  local root = opts.root or ctx.root
  if type(root) ~= "string" then
    errors.raise("EUSAGE", "directory discovery needs the root principal")
  end
  local limit = opts.limit or canic.DIRECTORY_MAX_LIMIT
  if math.type(limit) ~= "integer" or limit < 1 or limit > canic.DIRECTORY_MAX_LIMIT then
    errors.raise("EUSAGE", "directory discovery: limit must be an integer from 1 to " .. canic.DIRECTORY_MAX_LIMIT)
  end
  local what = string.format("directory of %s (%s)", root, canic.DIRECTORY_METHOD)
  local members = { { canister_id = root, role = opts.root_role or "root" } }
  local seen, cursors = { [root] = true }, {}
  local revision, cursor, count
  local listed = 0
  repeat
    local reply = ctx.query(root, canic.DIRECTORY_METHOD, M.request(revision, cursor, limit, opts),
      canic.DIRECTORY_NAMES)
    if type(reply) ~= "table" or (type(reply.Ok) ~= "table" and type(reply.Err) ~= "table") then
      errors.raise("EREGISTRY", what .. ": the reply is not a Result<ComponentDirectoryPageResponse, Error>")
    end
    if reply.Err then
      local code = type(reply.Err.code) == "table" and next(reply.Err.code) or "?"
      errors.raise("EREGISTRY", string.format("%s: the root refused: %s: %s%s", what, tostring(code),
        tostring(reply.Err.message), code == "Forbidden" and " (Canic serves the directory only to a registered "
        .. "member of the Component: see docs/policies.md)" or ""))
    end
    local page = reply.Ok
    if type(page.directory) ~= "table" or math.type(page.directory.revision) ~= "integer"
      or type(page.entries) ~= "table" then
      errors.raise("EREGISTRY", what .. ": a page without directory.revision or entries")
    end
    -- Every page of one walk is of one revision: the root refuses a stale
    -- one, and a root that answered with another would mix two fleets.
    if revision and page.directory.revision ~= revision then
      errors.raise("EREGISTRY", string.format("%s: the directory changed during the walk (revision %d, then %d)",
        what, revision, page.directory.revision))
    end
    revision, count = page.directory.revision, page.directory.descendant_count
    for i, e in ipairs(page.entries) do
      local b = type(e) == "table" and e.binding
      if type(b) ~= "table" or type(b.canister_id) ~= "string" or type(b.role) ~= "string"
        or type(b.parent_canister_id) ~= "string" then
        errors.raise("EREGISTRY", string.format("%s: entry %d of a page has no complete binding", what, i))
      end
      if seen[b.canister_id] then
        errors.raise("EREGISTRY", what .. ": " .. b.canister_id .. " is listed twice")
      end
      seen[b.canister_id] = true
      listed = listed + 1
      local status = type(e.status) == "table" and next(e.status) or nil
      if status ~= "Removed" then
        members[#members + 1] = { canister_id = b.canister_id, role = b.role, parent = b.parent_canister_id }
      end
    end
    cursor = page.next_cursor
    if cursor ~= nil then
      if type(cursor) ~= "string" or cursors[cursor] then
        errors.raise("EREGISTRY", what .. ": the root returned a cursor it had returned before (the walk would "
          .. "not end)")
      end
      cursors[cursor] = true
    end
  until cursor == nil
  -- Unfiltered, the walk must have seen every descendant the head counts.
  if not opts.role and not opts.parent and math.type(count) == "integer" and count ~= listed then
    errors.raise("EREGISTRY", string.format("%s: the head counts %d descendants, the pages listed %d", what, count,
      listed))
  end
  return { root = root, members = members }
end

return M
