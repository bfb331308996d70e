-- The product's namespace (fleetsnap) and the simulator's (icp_sim, installed
-- beside it for bin/icp-sim) stay apart: fleetsnap never loads icp_sim's code;
-- --sim only locates the simulator's script entry to run it as a process.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

-- Every .lua file under dir, recursively.
local function lua_files(dir, out)
  out = out or {}
  for _, name in ipairs(engine.fs.list(dir) or {}) do
    local path = dir .. "/" .. name
    local st = engine.fs.lstat(path)
    if st and st.type == "directory" then
      lua_files(path, out)
    elseif name:match("%.lua$") then
      out[#out + 1] = path
    end
  end
  return out
end

describe("the fleetsnap namespace", function()
  it("requires nothing of the simulator's", function()
    local files = lua_files(helpers.root .. "/lua/fleetsnap")
    assert.is_true(#files > 10)
    for _, path in ipairs(files) do
      local text = helpers.read(path)
      assert.is_nil(text:find("require%s*%(?%s*[\"']icp_sim"), path .. " requires icp_sim")
      assert.is_nil(text:find("dofile", 1, true), path .. " runs a file in-process")
    end
  end)

  it("holds no simulator module", function()
    assert.is_nil(package.searchpath("fleetsnap.sim.main", package.path))
    assert.is_nil((engine.fs.lstat(helpers.root .. "/lua/fleetsnap/sim")))
  end)
end)
