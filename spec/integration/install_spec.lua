-- The installed tool: `cmake --install` into a temporary prefix, then a
-- whole backup and restore through bin/fleetsnap and bin/icp-sim with a
-- bare environment (PATH=<prefix>/bin:/usr/bin:/bin, no LUA_PATH or
-- LUA_CPATH), so that nothing can come from the source tree.
local engine = require "fleetsnap.engine"
local json = engine.json
local helpers = require "helpers"

local prefix, work

-- Runs argv in the bare environment; extra: {NAME = value} added to it.
local function bare(argv, extra)
  local env = { "env", "-i", "PATH=" .. prefix .. "/bin:/usr/bin:/bin", "HOME=" .. work }
  for k, v in pairs(extra or {}) do env[#env + 1] = k .. "=" .. v end
  return engine.proc.run({ argv = table.move(argv, 1, #argv, #env + 1, env), cwd = work })
end

local function lines_of(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return table.concat(out, "\n")
end

setup(function()
  work = helpers.tmpdir()
  prefix = work .. "/prefix"
  local r = engine.proc.run({ argv = { "cmake", "--install", helpers.build, "--prefix", prefix } })
  assert(r.status == 0, r.stderr)
end)
teardown(function() helpers.cleanup() end)

describe("an installed fleetsnap", function()
  it("installs the commands, the modules, the engine, the man page and the completions", function()
    for _, path in ipairs({ "bin/fleetsnap", "bin/icp-sim", "share/lua/5.4/fleetsnap/cli/init.lua",
      "share/lua/5.4/fleetsnap/policies/consistent.lua", "share/lua/5.4/icp_sim/run.lua",
      "lib/lua/5.4/fleetsnap/engine.so", "share/man/man1/fleetsnap.1",
      "share/bash-completion/completions/fleetsnap", "share/zsh/site-functions/_fleetsnap",
      "share/fish/vendor_completions.d/fleetsnap.fish", "share/doc/fleetsnap/README.md" }) do
      assert.is_truthy(engine.fs.lstat(prefix .. "/" .. path), path)
    end
    -- The launchers name the prefix, never the source tree.
    assert.is_nil(lines_of(prefix .. "/bin/fleetsnap"):find(helpers.root, 1, true))
  end)

  it("prints its version, the engine's", function()
    local r = bare({ "fleetsnap", "--version" })
    assert.equal(0, r.status, r.stderr)
    assert.equal("fleetsnap " .. engine.version .. " (" .. _VERSION .. ")\n", r.stdout)
    r = bare({ "fleetsnap", "--json", "--version" })
    assert.equal(engine.version, json.decode(r.stdout).fleetsnap)
  end)

  it("lists the bundled policies", function()
    local r = bare({ "fleetsnap", "policy", "list" })
    assert.equal(0, r.status, r.stderr)
    for _, name in ipairs({ "consistent", "directory", "rolling", "hold", "sequential" }) do
      assert.matches("\n?" .. name .. " ", r.stdout)
    end
  end)

  it("backs up a simulated fleet and restores it, every memory equal to the backup's", function()
    local home = work .. "/fleet"
    local sim = { ICP_SIM_HOME = home }
    assert.equal(0, bare({ "icp-sim", "sim", "init", "--members", "3", "--depth", "1" }, sim).status)
    local r = bare({ "fleetsnap", "--sim", home, "backup", "create", "--out", work .. "/b1" })
    assert.equal(0, r.status, r.stderr)
    local before = helpers.digests(home)
    assert.equal(0, bare({ "icp-sim", "sim", "mutate", "--all" }, sim).status)
    assert.are_not.same(before, helpers.digests(home)) -- the mutation happened
    r = bare({ "fleetsnap", "--sim", home, "restore", "plan", work .. "/b1" })
    assert.equal(0, r.status, r.stderr)
    r = bare({ "fleetsnap", "--sim", home, "restore", "run", work .. "/b1", "--execute" })
    assert.equal(0, r.status, r.stderr)
    local after = helpers.digests(home)
    local root = helpers.fleet(home).root
    for cid, digest in pairs(before) do
      if cid ~= root then assert.equal(digest, after[cid], cid) end
    end
  end)

  it("has a man page naming every command of the parser and a section per command", function()
    local page = lines_of(prefix .. "/share/man/man1/fleetsnap.1")
    local docgen = dofile(helpers.root .. "/scripts/lib/docgen.lua")
    local commands = docgen.commands(require("fleetsnap.cli").parser())
    assert.is_true(#commands >= 10)
    for _, c in ipairs(commands) do
      assert.is_truthy(page:find('.SS "fleetsnap ' .. c.path .. '"', 1, true), c.path)
    end
    for _, var in pairs(require("fleetsnap.cli.settings").VARIABLES) do
      assert.is_truthy(page:find("\n" .. var .. "\n", 1, true), var)
    end
    for code, row in pairs(require("fleetsnap.errors").REGISTRY) do
      assert.is_truthy(page:find(code, 1, true), code)
      assert.is_truthy(page:find("\n" .. row.exit .. "\n", 1, true), code)
    end
  end)

  it("renders the man page without a roff warning", function()
    local r = engine.proc.run({ argv = { "groff", "-man", "-Tutf8", "-ww", "-z",
      prefix .. "/share/man/man1/fleetsnap.1" } })
    assert.equal(0, r.status, r.stderr)
    assert.equal("", r.stderr)
  end)

  it("has a bash completion that parses and completes the commands", function()
    local file = prefix .. "/share/bash-completion/completions/fleetsnap"
    local r = engine.proc.run({ argv = { "bash", "-c", '. "$0" && COMP_WORDS=(fleetsnap back) COMP_CWORD=1 '
      .. '&& _fleetsnap && printf "%s\\n" "${COMPREPLY[@]}"', file } })
    assert.equal(0, r.status, r.stderr)
    assert.equal("backup\n", r.stdout)
  end)

  it("has zsh and fish completions naming every command group", function()
    for _, path in ipairs({ "share/zsh/site-functions/_fleetsnap", "share/fish/vendor_completions.d/fleetsnap.fish" }) do
      local text = lines_of(prefix .. "/" .. path)
      for _, group in ipairs({ "backup", "restore", "policy" }) do
        assert.is_truthy(text:find(group, 1, true), path .. ": " .. group)
      end
    end
  end)
end)
