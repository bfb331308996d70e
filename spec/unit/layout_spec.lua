-- The shape of lua/fleetsnap/: no module requires a module that requires it
-- back (directly or through others), backup and restore never require each
-- other, and no domain module prints or names a command-line flag (the CLI
-- parses and renders; the domain decides and returns data).
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local fs = engine.fs

local ROOT = helpers.root .. "/lua/"

local function lua_files(dir, prefix, out)
  for _, name in ipairs(fs.list(dir) or {}) do
    local path = dir .. "/" .. name
    local st = fs.lstat(path)
    if st.type == "directory" then
      lua_files(path, prefix .. name .. ".", out)
    elseif name:match("%.lua$") then
      local mod = prefix .. name:gsub("%.lua$", "")
      out[(mod:gsub("%.init$", ""))] = path
    end
  end
  return out
end

local MODULES = lua_files(ROOT .. "fleetsnap", "fleetsnap.", {})

-- The module's source with comments and long strings removed.
local function code_of(path)
  local text = helpers.read(path)
  text = text:gsub("%-%-%[(=*)%[.-%]%1%]", "")
  local out = {}
  for line in text:gmatch("[^\n]*") do
    -- A comment starts at `--` outside a string (good enough for our code:
    -- none of it has `--` inside a string before a comment).
    local code = line:gsub("^%s*%-%-.*$", "")
    out[#out + 1] = code
  end
  return table.concat(out, "\n")
end

local function requires(path)
  local out = {}
  for name in code_of(path):gmatch("require%s*%(?%s*[\"']([%w%._]+)[\"']") do
    if MODULES[name] then out[#out + 1] = name end
  end
  return out
end

describe("the module graph of lua/fleetsnap", function()
  it("finds the modules it checks", function()
    assert.is_truthy(MODULES["fleetsnap.exec.executor"])
    assert.is_truthy(MODULES["fleetsnap.backup"])
    assert.is_truthy(MODULES["fleetsnap.restore"])
  end)

  it("has no require cycle", function()
    local state, stack = {}, {}
    local function visit(m)
      if state[m] == "done" then return end
      assert.is_nil(state[m] == "active" and m or nil,
        "require cycle: " .. table.concat(stack, " -> ") .. " -> " .. m)
      state[m] = "active"
      stack[#stack + 1] = m
      for _, r in ipairs(requires(MODULES[m])) do visit(r) end
      stack[#stack] = nil
      state[m] = "done"
    end
    for m in pairs(MODULES) do visit(m) end
  end)

  it("keeps backup and restore apart (neither requires the other)", function()
    for m, path in pairs(MODULES) do
      for _, r in ipairs(requires(path)) do
        if m:find("^fleetsnap%.backup") then
          assert.is_nil(r:find("^fleetsnap%.restore"), m .. " requires " .. r)
        elseif m:find("^fleetsnap%.restore") then
          assert.is_nil(r:find("^fleetsnap%.backup"), m .. " requires " .. r)
        end
      end
    end
  end)
end)

describe("the domain modules", function()
  -- The CLI renders; the drivers render icp's and restic's own flags (not
  -- fleetsnap's).
  local function domain()
    local out = {}
    for m, path in pairs(MODULES) do
      if not m:find("^fleetsnap%.cli") and not m:find("^fleetsnap%.drivers")
        and m ~= "fleetsnap.store.restic" then out[m] = path end
    end
    return out
  end

  it("print nothing", function()
    for m, path in pairs(domain()) do
      local code = code_of(path)
      for _, pat in ipairs({ "io%.write", "io%.stdout", "io%.stderr", "[^%w_%.:]print%s*%(" }) do
        assert.is_nil(code:find(pat), m .. " prints (" .. pat .. ")")
      end
    end
  end)

  it("name no command-line flag in their strings", function()
    for m, path in pairs(domain()) do
      local code = code_of(path)
      for s in code:gmatch('"([^"\n]*)"') do
        assert.is_nil(s:find("%-%-%a"), m .. " names a flag: \"" .. s .. "\"")
      end
      for s in code:gmatch("`([^`\n]*)`") do
        assert.is_nil(s:find("%-%-%a"), m .. " names a flag: `" .. s .. "`")
      end
    end
  end)
end)
