-- Bad input never gives a traceback (issue #9). A valid document of each
-- kind is mutated at every field path (every key of every object, every
-- element of every array, and the document itself) to each of: removed,
-- 5, "x", {}, [], null, true, false. Each reader must then refuse the document
-- with nil, a message naming the file, and ECORRUPT, or accept it; it must
-- never raise. Where it accepts, what uses the document next (verify for
-- a manifest, the operation graph for a restore plan) must not raise
-- either.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"
local backup_plan = require "fleetsnap.backup.plan"
local manifest = require "fleetsnap.manifest"
local operations = require "fleetsnap.restore.operations"
local restore_plan = require "fleetsnap.restore.plan"
local verify = require "fleetsnap.verify"
local docs = require "fixtures.documents"
local helpers = require "helpers"

local json = engine.json

local REMOVED = {}
local MUTATIONS = {
  { "removed", function() return REMOVED end },
  { "5", function() return 5 end },
  { '"x"', function() return "x" end },
  { "{}", function() return json.object({}) end },
  { "[]", function() return json.array({}) end },
  { "null", function() return json.null end },
  { "true", function() return true end },
  -- false is the one decoded value a reader's `if not doc` took for a
  -- decode failure (and refused with no message): the fuzzer's finding.
  { "false", function() return false end },
}

-- Every field path of a decoded document, parents before children: an
-- array of key lists ({} is the document itself).
local function field_paths(doc)
  local out = { {} }
  local function walk(v, path)
    if type(v) ~= "table" then return end
    local keys = {}
    if json.kind(v) == "array" then
      for i = 1, #v do keys[i] = i end
    else
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys)
    end
    for _, k in ipairs(keys) do
      local p = table.move(path, 1, #path, 1, {})
      p[#p + 1] = k
      out[#out + 1] = p
      walk(v[k], p)
    end
  end
  walk(doc, {})
  return out
end

local function show_path(path)
  local parts = {}
  for i, k in ipairs(path) do parts[i] = math.type(k) and ("[" .. k .. "]") or ("." .. k) end
  return #parts == 0 and "(document)" or table.concat(parts):gsub("^%.", "")
end

-- The text of the document with value at path (REMOVED: the key deleted,
-- or the element taken out of its array; the document removed is an empty
-- file).
local function mutated(text, path, value)
  if #path == 0 then return value == REMOVED and "" or json.encode(value) end
  local doc = json.decode(text)
  local parent = doc
  for i = 1, #path - 1 do parent = parent[path[i]] end
  local key = path[#path]
  if value ~= REMOVED then
    parent[key] = value
  elseif json.kind(parent) == "array" then
    table.remove(parent, key)
  else
    parent[key] = nil
  end
  return json.encode(doc)
end

-- Runs check(text, label) for every mutation of the document; counts what
-- the reader refused and accepted (check returns "refused"/"accepted").
local function each_mutation(doc, check)
  local text = json.encode(doc)
  local counts = { refused = 0, accepted = 0 }
  for _, path in ipairs(field_paths(json.decode(text))) do
    for _, m in ipairs(MUTATIONS) do
      local label = show_path(path) .. " = " .. m[1]
      local verdict = check(mutated(text, path, m[2]()), label)
      counts[verdict] = counts[verdict] + 1
    end
  end
  return counts
end

-- A reader's answer to a mutated document: it returned (no Lua error),
-- and a refusal names the file and is ECORRUPT. Returns the result.
local function read_safely(label, file, reader, ...)
  local ok, res, msg, code = pcall(reader, ...)
  assert(ok, label .. ": the reader raised: " .. tostring(errors.is(res) and res.message or res))
  if res == nil then
    assert(type(msg) == "string" and msg:sub(1, #file + 2) == file .. ": ",
      label .. ": the message does not name " .. file .. ": " .. tostring(msg))
    assert(code == "ECORRUPT", label .. ": code " .. tostring(code) .. " (" .. tostring(msg) .. ")")
  end
  return res
end

describe("bad input", function()
  after_each(function() helpers.cleanup() end)

  it("never makes the 0.36 manifest reader or verify raise", function()
    local dir = helpers.tmpdir()
    local file = dir .. "/" .. manifest.FILE_036
    local counts = each_mutation(docs.backup(dir), function(text, label)
      helpers.write(file, text)
      local m = read_safely(label, file, manifest.read, dir)
      if not m then return "refused" end
      local ok, err = pcall(verify.backup, dir, m)
      assert(ok, label .. ": verify raised: " .. tostring(errors.is(err) and err.message or err))
      return "accepted"
    end)
    assert.is_true(counts.refused > 0 and counts.accepted > 0)
  end)

  it("never makes the 0.108 manifest reader or verify raise", function()
    local dir = helpers.tmpdir()
    local doc = docs.backup(dir)
    os.remove(dir .. "/" .. manifest.FILE_036)
    doc.deployment, doc.fleet, doc.fleetsnap = doc.fleet, nil, nil
    doc.verification = { deployment_checks = json.array({}), member_checks = json.array({}) }
    local file = dir .. "/" .. manifest.FILE_108
    local counts = each_mutation(doc, function(text, label)
      helpers.write(file, text)
      local m = read_safely(label, file, manifest.read, dir)
      if not m then return "refused" end
      local ok, err = pcall(verify.backup, dir, m)
      assert(ok, label .. ": verify raised: " .. tostring(errors.is(err) and err.message or err))
      return "accepted"
    end)
    assert.is_true(counts.refused > 0 and counts.accepted > 0)
  end)

  it("never makes the download journal reader raise, nor verify with anything but ECORRUPT", function()
    local dir = helpers.tmpdir()
    docs.backup(dir)
    local file = dir .. "/" .. manifest.DOWNLOAD_JOURNAL
    local counts = each_mutation(json.decode(helpers.read(file)), function(text, label)
      helpers.write(file, text)
      local dj = read_safely(label, file, manifest.read_download_journal, dir)
      local ok, err = pcall(verify.backup, dir)
      if dj then
        assert(ok, label .. ": verify raised: " .. tostring(errors.is(err) and err.message or err))
        return "accepted"
      end
      assert(not ok and errors.is(err) and err.code == "ECORRUPT", label .. ": verify of a corrupt journal: "
        .. tostring(errors.is(err) and err.message or err))
      return "refused"
    end)
    assert.is_true(counts.refused > 0 and counts.accepted > 0)
  end)

  it("never makes the backup plan reader raise", function()
    local dir = helpers.tmpdir()
    local file = dir .. "/" .. backup_plan.FILE
    local counts = each_mutation(docs.backup_plan(), function(text, label)
      helpers.write(file, text)
      return read_safely(label, file, backup_plan.read, dir) and "accepted" or "refused"
    end)
    assert.is_true(counts.refused > 0 and counts.accepted > 0)
  end)

  it("never makes the restore plan reader raise, nor the operations of a plan it accepts", function()
    local backup, state = helpers.tmpdir(), helpers.tmpdir()
    docs.backup(backup)
    local file = state .. "/" .. restore_plan.FILE
    local counts = each_mutation(docs.restore_plan(backup), function(text, label)
      helpers.write(file, text)
      local doc = read_safely(label, file, restore_plan.read, state)
      if not doc then return "refused" end
      local ok, err = pcall(operations.restore, doc, { safety_snapshot = true, verify_data = true })
      assert(ok, label .. ": operations raised: " .. tostring(err))
      return "accepted"
    end)
    assert.is_true(counts.refused > 0 and counts.accepted > 0)
  end)

  it("never makes the mapping reader raise", function()
    local file = helpers.tmpdir() .. "/mapping.json"
    local counts = each_mutation(docs.mapping(), function(text, label)
      helpers.write(file, text)
      return read_safely(label, file, restore_plan.read_mapping, file) and "accepted" or "refused"
    end)
    assert.is_true(counts.refused > 0 and counts.accepted > 0)
  end)
end)
