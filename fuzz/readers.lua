--- The Lua side of the `readers` fuzz target (fuzz/fuzz_readers.c): each
-- reader of an untrusted document, fed the bytes of one input. A reader
-- may accept the document or refuse it with a registry code (returned as
-- nil, message, code, or raised as an error object); anything else, a Lua
-- error or a code nobody registered, is a finding: `check` returns the
-- reason, with the traceback, and the C side aborts on it.
local errors = require "fleetsnap.errors"
local manifest = require "fleetsnap.manifest"
local backup_plan = require "fleetsnap.backup.plan"
local restore_plan = require "fleetsnap.restore.plan"
local fleet = require "fleetsnap.fleet"
local principal = require "fleetsnap.principal"
local engine = require "fleetsnap.engine"

-- luacheck: read globals FUZZ_TMPDIR
local DIR = assert(FUZZ_TMPDIR, "FUZZ_TMPDIR is not set") .. "/doc"
local ROOT = principal.canister_id(1)

-- Plain io, not the engine's durable writes: an fsync per input is time
-- taken from fuzzing, and the readers are what is under test.
local function write(name, bytes)
  local path = DIR .. "/" .. name
  local f = assert(io.open(path, "wb"))
  assert(f:write(bytes))
  assert(f:close())
  return path
end

-- A driver whose only reply is the input: the registry's Candid bytes.
local function reply_driver(bytes)
  return { run = function(_, kind, p)
    assert(kind == "call" and p.method == "canic_subnet_registry", "unexpected driver call")
    return bytes
  end }
end

--- The readers, chosen by the first byte of an input (modulo their count).
-- Each names its document, and reads `bytes` as that document.
local READERS = {
  { "manifest-0.36", function(bytes)
    write(manifest.FILE_036, bytes)
    return manifest.read(DIR)
  end },
  { "manifest-0.108", function(bytes)
    write(manifest.FILE_108, bytes)
    return manifest.read(DIR)
  end },
  { "download-journal", function(bytes)
    write(manifest.DOWNLOAD_JOURNAL, bytes)
    return manifest.read_download_journal(DIR)
  end },
  { "backup-plan", function(bytes)
    write(backup_plan.FILE, bytes)
    return backup_plan.read(DIR)
  end },
  { "restore-plan", function(bytes)
    write(restore_plan.FILE, bytes)
    return restore_plan.read(DIR)
  end },
  { "mapping", function(bytes)
    return restore_plan.read_mapping(write("mapping.json", bytes))
  end },
  { "candid-registry", function(bytes)
    return fleet.from_registry(reply_driver(bytes), ROOT)
  end },
  { "inventory", function(bytes)
    return fleet.from_inventory(write("inventory.json", bytes))
  end },
}

local M = { READERS = READERS }

local function registered(code)
  return type(code) == "string" and (errors.REGISTRY[code] ~= nil or errors.ALIASES[code] ~= nil)
end

--- nil when the reader behaved; otherwise what went wrong.
function M.check(input)
  if #input == 0 then return nil end
  local reader = READERS[input:byte(1) % #READERS + 1]
  local name, read = reader[1], reader[2]
  -- A fresh directory: one reader's document is not another's.
  assert(engine.fs.remove_tree(DIR))
  assert(engine.fs.mkdir_private(DIR))
  local tb
  local ok, value, msg, code = xpcall(read, function(e)
    if not errors.is(e) then tb = debug.traceback(tostring(e), 2) end
    return e
  end, input:sub(2))
  if not ok then
    if errors.is(value) then
      if value.code == "EINTERNAL" then return name .. ": raised an internal error: " .. tostring(value) end
      return nil
    end
    return name .. ": raised a non-registry error: " .. tostring(tb)
  end
  if value ~= nil then return nil end
  if type(msg) ~= "string" then return name .. ": refused with no message" end
  if not registered(code) then return name .. ": refused with unregistered code " .. tostring(code) .. ": " .. msg end
  if (errors.ALIASES[code] or code) == "EINTERNAL" then return name .. ": refused as internal: " .. msg end
  return nil
end

return M
