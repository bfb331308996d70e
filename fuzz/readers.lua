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
local operations = require "fleetsnap.restore.operations"
local verify = require "fleetsnap.verify"
local snapshot_index = require "fleetsnap.snapshot_index"
local ownership = require "fleetsnap.exec.ownership"

-- luacheck: read globals FUZZ_TMPDIR
local PARENT = assert(FUZZ_TMPDIR, "FUZZ_TMPDIR is not set")
local DIR = PARENT .. "/doc"
local ROOT = principal.canister_id(1)
-- The manifest and plan an index is read beside: their digests are what
-- an index must name to be accepted (the seed does).
local INDEXED_MANIFEST = '{"backup_id": "b1"}\n'
local INDEXED_PLAN = '{"connection": {"sim": "/h"}}\n'

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

-- What uses an accepted fleet next: the selection and its topology hash,
-- twice from two reads of the same bytes, which must agree (the hash is
-- how drift is detected: a hash that varies would report drift forever).
local function fleet_then(read)
  return function(f, bytes)
    local sel, msg, code = fleet.select(f, { include_root = true })
    if not sel then return nil, msg, code end
    local hash = fleet.scope_hash(f, sel)
    local f2 = read(bytes)
    if not f2 then return false, "a second read of the same document was refused" end
    local hash2 = fleet.scope_hash(f2, assert(fleet.select(f2, { include_root = true })))
    if hash ~= hash2 then return false, "the topology hash of one document differs between two reads" end
    return true
  end
end

local function read_registry(bytes)
  return fleet.from_registry(reply_driver(bytes), ROOT)
end

local function read_inventory(bytes)
  return fleet.from_inventory(write("inventory.json", bytes))
end

-- What uses an accepted manifest next: offline verification (which may
-- refuse, raising an error object: the artifacts are not there).
local function verify_then(m)
  local report = verify.backup(DIR, m)
  return report ~= nil
end

--- The readers, chosen by the first byte of an input (modulo their count):
-- {name, read(bytes), then(value, bytes)}. `read` reads the bytes as its
-- document; `then`, for an accepted document, runs what uses it next
-- (as spec/unit/bad_input_spec.lua does): true, or nil, message, code
-- for a refusal, or false and a broken invariant.

local READERS = {
  { "manifest-0.36", function(bytes)
    write(manifest.FILE_036, bytes)
    return manifest.read(DIR)
  end, verify_then },
  { "manifest-0.108", function(bytes)
    write(manifest.FILE_108, bytes)
    return manifest.read(DIR)
  end, verify_then },
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
  end, function(doc)
    operations.restore(doc, { safety_snapshot = true, verify_data = true })
    return true
  end },
  { "mapping", function(bytes)
    return restore_plan.read_mapping(write("mapping.json", bytes))
  end },
  { "candid-registry", read_registry, fleet_then(read_registry) },
  { "inventory", read_inventory, fleet_then(read_inventory) },
  -- Appended (a reader's index is its seeds' first byte): the index of a
  -- backup directory, beside a fixed manifest and plan, so that an index
  -- naming their digests is reachable; what then uses it is the proof of
  -- ownership, which must report exactly the index's snapshots.
  { "snapshot-index", function(bytes)
    write(manifest.FILE_036, INDEXED_MANIFEST)
    write(backup_plan.FILE, INDEXED_PLAN)
    write(snapshot_index.FILE, bytes)
    return snapshot_index.read(DIR)
  end, function(index)
    local network = index.connection ~= engine.json.null and index.connection or nil
    local known = ownership.known(PARENT, network)
    local want, n = {}, 0
    if network then
      for _, s in ipairs(index.snapshots) do want[s.snapshot_id] = s.canister_id end
    end
    for id, canister in pairs(want) do
      n = n + 1
      if not known[id] or known[id].canister ~= canister or known[id].backup ~= DIR then
        return false, "the proof of ownership does not report the index's snapshot " .. id
      end
    end
    for _ in pairs(known) do n = n - 1 end
    if n ~= 0 then return false, "the proof of ownership reports snapshots the index does not list" end
    return true
  end },
}

local M = { READERS = READERS, INDEXED_MANIFEST = INDEXED_MANIFEST, INDEXED_PLAN = INDEXED_PLAN }

local function registered(code)
  return type(code) == "string" and (errors.REGISTRY[code] ~= nil or errors.ALIASES[code] ~= nil)
end

-- nil when a call behaved: it returned a value, or refused with a
-- message and a registry code, or raised an error object of the
-- registry; otherwise what went wrong.
local function judge(what, ok, tb, value, msg, code)
  if not ok then
    if errors.is(value) then
      if value.code == "EINTERNAL" then return what .. ": raised an internal error: " .. tostring(value) end
      return nil
    end
    return what .. ": raised a non-registry error: " .. tostring(tb)
  end
  if value == false then return what .. ": " .. tostring(msg) end
  if value ~= nil then return nil end
  if type(msg) ~= "string" then return what .. ": refused with no message" end
  if not registered(code) then return what .. ": refused with unregistered code " .. tostring(code) .. ": " .. msg end
  if (errors.ALIASES[code] or code) == "EINTERNAL" then return what .. ": refused as internal: " .. msg end
  return nil
end

-- Calls f(...) as judge wants it: ok, traceback, results.
local function call(f, ...)
  local tb
  local function handler(e)
    if not errors.is(e) then tb = debug.traceback(tostring(e), 2) end
    return e
  end
  return (function(ok, ...) return ok, tb, ... end)(xpcall(f, handler, ...))
end

--- nil when the reader (and what uses its document next) behaved;
-- otherwise what went wrong.
function M.check(input)
  if #input == 0 then return nil end
  local reader = READERS[input:byte(1) % #READERS + 1]
  local name, read, after = reader[1], reader[2], reader[3]
  -- A fresh directory: one reader's document is not another's.
  assert(engine.fs.remove_tree(DIR))
  assert(engine.fs.mkdir_private(DIR))
  local bytes = input:sub(2)
  local ok, tb, value, msg, code = call(read, bytes)
  local why = judge(name, ok, tb, value, msg, code)
  if why or not ok or value == nil or not after then return why end
  return judge(name .. " (then)", call(after, value, bytes))
end

return M
