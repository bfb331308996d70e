local errors = require "fleetsnap.errors"
local helpers = require "helpers"

local function exits()
  local set = {}
  for _, row in pairs(errors.REGISTRY) do set[row.exit] = true end
  return set
end

describe("errors.REGISTRY", function()
  it("gives every code an exit status between 1 and 255 and a meaning", function()
    for code, row in pairs(errors.REGISTRY) do
      assert.equal("integer", math.type(row.exit), code)
      assert.is_true(row.exit >= 1 and row.exit <= 255, code)
      assert.is_true(type(row.meaning) == "string" and row.meaning ~= "", code)
    end
  end)

  it("keeps 70 for internal errors and 2 for usage", function()
    assert.equal(70, errors.REGISTRY.EINTERNAL.exit)
    assert.equal(2, errors.REGISTRY.EUSAGE.exit)
  end)
end)

describe("errors.ALIASES, ENGINE and DRIVER", function()
  it("map every older, engine and driver code to a registry code", function()
    for _, map in ipairs({ errors.ALIASES, errors.ENGINE, errors.DRIVER }) do
      for from, to in pairs(map) do
        assert.is_not_nil(errors.REGISTRY[to], from .. " -> " .. tostring(to))
      end
    end
  end)

  it("shadow no registry code with an alias", function()
    for from in pairs(errors.ALIASES) do assert.is_nil(errors.REGISTRY[from], from) end
  end)
end)

describe("errors.new", function()
  it("turns an alias into its registry code and keeps the alias as the cause", function()
    local e = errors.new("EMANIFEST", "m.json: bad")
    assert.equal("ECORRUPT", e.code)
    assert.equal("EMANIFEST", e.cause)
    assert.equal(7, errors.exit_code(e))
  end)

  it("makes an unregistered code an internal error that names it", function()
    local e = errors.new("EWHATEVER", "x")
    assert.equal("EINTERNAL", e.code)
    assert.matches("unregistered error code EWHATEVER", e.message)
  end)

  it("copies fields but never lets them replace the code or the message", function()
    local e = errors.new("EFAILED", "m", { code = "EUSAGE", message = "other", next = { command = "x" } })
    assert.equal("EFAILED", e.code)
    assert.equal("m", e.message)
    assert.same({ command = "x" }, e.next)
  end)
end)

describe("errors.raise", function()
  it("raises an error object without a position", function()
    local ok, e = pcall(errors.raise, "ENOTFOUND", "no backup x")
    assert.is_false(ok)
    assert.is_true(errors.is(e))
    assert.equal("no backup x", e.message)
  end)
end)

describe("errors.is", function()
  it("is false for a table that only looks like an error", function()
    assert.is_false(errors.is({ fleetsnap = true, code = "EICP", message = "x" }))
  end)
end)

describe("errors.wrap", function()
  it("makes a string an internal error (exit 70) and keeps the traceback", function()
    local e = errors.wrap("attempt to index a nil value", "stack traceback: ...")
    assert.equal("EINTERNAL", e.code)
    assert.equal(70, errors.exit_code(e))
    assert.equal("stack traceback: ...", e.traceback)
    assert.matches("internal error: attempt to index a nil value", e.message, 1, true)
  end)

  it("returns an error object unchanged", function()
    local e = errors.new("ELOCKED", "held")
    assert.equal(e, errors.wrap(e, "tb"))
  end)

  it("adopts a domain table with a registry code, keeping its fields", function()
    local e = errors.wrap({ fleetsnap = true, code = "EVERIFY", message = "differs", failures = { 1 } })
    assert.is_true(errors.is(e))
    assert.equal(6, errors.exit_code(e))
    assert.same({ 1 }, e.failures)
  end)

  it("makes a table with an unknown code an internal error", function()
    assert.equal(70, errors.exit_code(errors.wrap({ code = "EVERIFY", message = "not ours" })))
  end)
end)

describe("errors.exit_code", function()
  it("is 70 for anything that is not an error object", function()
    assert.equal(70, errors.exit_code("boom"))
    assert.equal(70, errors.exit_code(nil))
  end)
end)

describe("errors.from_engine", function()
  it("maps an errno to the local file system row and names what failed", function()
    local e = errors.from_engine("backups/x", "No space left on device", "ENOSPC")
    assert.equal(8, errors.exit_code(e))
    assert.equal("ENOSPC", e.cause)
    assert.equal("backups/x: No space left on device", e.message)
  end)
end)

describe("errors.exit_table", function()
  it("lists each exit status once, ascending, with every code under its own", function()
    local t, seen, last = errors.exit_table(), {}, 0
    for _, row in ipairs(t) do
      assert.is_true(row.exit > last)
      last = row.exit
      for i, code in ipairs(row.codes) do
        assert.equal(row.exit, errors.REGISTRY[code].exit)
        assert.equal(errors.REGISTRY[code].meaning, row.meanings[i])
        seen[code] = true
      end
    end
    for code in pairs(errors.REGISTRY) do assert.is_true(seen[code], code) end
  end)
end)

-- The README's `| exit | meaning |` table: exit -> the row's text.
local function readme_exit_table()
  local text = assert(helpers.read(helpers.root .. "/README.md"))
  local rows, inside = {}, false
  for line in text:gmatch("([^\n]*)\n") do
    if line:match("^|%s*exit%s*|%s*meaning%s*|") then
      inside = true
    elseif inside and line:match("^|") then
      local exit, meaning = line:match("^|%s*(%d+)%s*|%s*(.-)%s*|$")
      if exit then rows[tonumber(exit)] = meaning end
    elseif inside then
      break
    end
  end
  return rows
end

describe("README's exit table", function()
  local rows = readme_exit_table()

  it("has exactly the registry's exit statuses, plus 0", function()
    local want = exits()
    want[0] = true
    local have = {}
    for exit in pairs(rows) do have[exit] = true end
    assert.same(want, have)
  end)

  it("gives every registry code's meaning and name in the row of its exit", function()
    for code, row in pairs(errors.REGISTRY) do
      local text = rows[row.exit] or ""
      assert.is_truthy(text:find(row.meaning, 1, true), code .. ": README row " .. row.exit .. " lacks: " .. row.meaning)
      assert.is_truthy(text:find("`" .. code .. "`", 1, true), code .. ": not named in README row " .. row.exit)
    end
  end)
end)
