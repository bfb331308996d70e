-- The real icp 1.5.0 binary judges our command lines: for every vector of
-- this corpus, icp-sim and icp must agree on whether it is a usage error
-- (exit 2). The real binary runs offline with a throwaway HOME, against
-- loopback addresses only, for a few seconds at most per vector.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local REAL = os.getenv("FLEETSNAP_ICP_REAL") or (helpers.root .. "/.cache/icp/package/bin/icp")
local KEY = string.rep("ab", 133)
local NET = { "-n", "http://127.0.0.1:9", "-k", KEY }
local C = "ryjl3-tyaaa-aaaaa-aaaba-cai"
local SID = "000000000000000200000000000000020101"
local SID_P = "rrkah-fqaaa-aaaaa-aaaaq-cai"

local function v(...)
  return { ... }
end

local function with(base, extra)
  local out = {}
  for _, a in ipairs(base) do out[#out + 1] = a end
  for _, a in ipairs(extra) do out[#out + 1] = a end
  return out
end

-- Valid and invalid vectors. Every command line fleetsnap's driver emits is
-- among the valid ones (with -e, or -n URL -k KEY, and --identity).
local CORPUS = {
  v("--version"),
  with(v("canister", "stop", C), NET),
  with(v("canister", "start", C), NET),
  with(v("canister", "status", C, "--json"), NET),
  with(v("canister", "status", C, "--json", "--identity", "ops"), NET),
  with(v("canister", "status", C), NET),
  with(v("canister", "status", C, "-i"), NET),
  with(v("canister", "snapshot", "create", C, "--json"), NET),
  with(v("canister", "snapshot", "create", C, "--json", "--replace", SID), NET),
  with(v("canister", "snapshot", "create", C, "-q"), NET),
  with(v("canister", "snapshot", "list", C, "--json"), NET),
  with(v("canister", "snapshot", "delete", C, SID), NET),
  with(v("canister", "snapshot", "restore", C, SID), NET),
  with(v("canister", "call", C, "canic_subnet_registry", "()", "--query", "--json"), NET),
  with(v("canister", "call", C, "canic_subnet_registry", "()", "--json"), NET),
  with(v("canister", "call", C, "health", "()", "--query", "-o", "hex"), NET),
  v("canister", "stop", C, "-e", "local"),
  v("canister", "stop", C, "-e", "local", "--identity", "ops", "--identity-password-file", "/dev/null"),
  v("--project-root-override", "/tmp", "canister", "status", C, "-e", "local", "--json"),
  v("canister", "status", C, "--json", "-e", "local", "--debug"),
  v("canister", "stop", "--environment=local", C),
  v("canister", "stop", "-elocal", C),
  v("canister", "snapshot", "delete", C, "", "-e", "local"),
  v("identity", "principal"),
  v("identity", "principal", "--identity", "ops"),
  -- usage errors
  v("canister", "stop"),
  v("canister", "stop", C, C, "-e", "local"),
  v("canister", "stop", "--bogus", C),
  v("canister", "stop", C, "-n", "http://127.0.0.1:9"),
  v("canister", "stop", C, "-n", "http://127.0.0.1:9", "-e", "local"),
  v("canister", "stop", C, "-k", "mainnet"),
  v("canister", "stop", C, "-n", "http://127.0.0.1:9", "-k", "abcd"),
  v("canister", "stop", C, "-e", "a", "-e", "b"),
  v("canister", "stop", C, "--identity"),
  v("canister", "stop", C, "--proxy", "bad"),
  v("-e", "local", "canister", "stop", C),
  v("canister", "-e", "local", "stop", C),
  v("canister", "stop", "--", C, "-e", "local"),
  v("canister", "frob"),
  v("canister"),
  v("canister", "snapshot"),
  v("canister", "status", C, "-i", "--json", "-e", "local"),
  v("canister", "snapshot", "create", C, "--json", "-q", "-e", "local"),
  v("canister", "snapshot", "create", C, "--replace", "zz", "-e", "local"),
  v("canister", "snapshot", "create", C, "--replace=abc", "-e", "local"),
  v("canister", "snapshot", "create", C, "--replace", "00", "--replace", "01", "-e", "local"),
  v("canister", "snapshot", "list", C, "-q", "-q", "-e", "local"),
  v("canister", "snapshot", "delete", C, "zz", "-e", "local"),
  v("canister", "snapshot", "delete", C, "abc", "-e", "local"),
  v("canister", "snapshot", "delete", C, "-e", "local"),
  v("canister", "snapshot", "restore", C, "-e", "local"),
  v("canister", "snapshot", "download", C, SID, "-e", "local"),
  v("canister", "snapshot", "download", C, SID, "-o", "-e", "local"),
  v("canister", "snapshot", "download", C, SID, "-o"),
  v("canister", "snapshot", "upload", C, "-e", "local"),
  v("canister", "snapshot", "upload", C, "-i", "/tmp/x", "--json", "-q", "-e", "local"),
  v("canister", "call", C, "m", "()", "--output", "json", "-e", "local"),
  v("canister", "call", C, "m", "()", "--args-format", "xml", "-e", "local"),
  v("canister", "call", C, "m", "()", "--query=yes", "-e", "local"),
  v("canister", "create", "-e", "local"),
  v("canister", "create", C, "--detached", "-e", "local"),
  v("canister", "create", "--detached", "-q", "--json", "-e", "local"),
  v("canister", "create", "--detached", "--controller", "bad", "-e", "local"),
  v("canister", "delete", "-e", "local"),
  v("canister", "delete", C, "--no-recover-cycles=yes", "-e", "local"),
  v("canister", "settings", "update", C, "--log-visibility", "all", "-e", "local"),
  v("canister", "settings", "update", C, "--log-visibility", "public", "--set-log-viewer", C, "-e", "local"),
  v("canister", "settings", "update", C, "--add-controller", "bad", "-e", "local"),
}

-- Every command line the driver renders, in both target forms, with an
-- identity, a password file and a project root.
do
  local driver = require "fleetsnap.drivers.icp"
  local forms = {
    driver.new({ network = "http://127.0.0.1:9", root_key = KEY, identity = "ops" }),
    driver.new({ environment = "local", identity = "ops", identity_password_file = "/dev/null",
      project_root = "/tmp" }),
  }
  local params = {
    status = { canister = C }, stop = { canister = C }, start = { canister = C },
    snapshot_create = { canister = C, replace = SID }, snapshot_list = { canister = C },
    snapshot_delete = { canister = C, snapshot_id = SID }, snapshot_restore = { canister = C, snapshot_id = SID },
    call = { canister = C, method = "canic_subnet_registry", args = "()", query = true },
    identity = {},
    canister_create = {}, canister_delete = { canister = C },
    settings_update = { canister = C, change = { nats = { compute_allocation = "3", memory_allocation = "0",
      freezing_threshold = "86400", reserved_cycles_limit = "5000000000000", wasm_memory_limit = "3221225472",
      wasm_memory_threshold = "0", log_memory_limit = "4096" },
      visibility = { log = { type = "public" }, snapshot = { type = "allowed_viewers", viewers = { C, SID_P } },
        status = { type = "controllers" } },
      add_controllers = { C, SID_P }, remove_controllers = { SID_P },
      add_env = { "A=1", "B=x=y" }, remove_env = { "C" } } },
  }
  for _, d in ipairs(forms) do
    for kind, p in pairs(params) do CORPUS[#CORPUS + 1] = d:args(kind, p) end
    CORPUS[#CORPUS + 1] = d:args("snapshot_create", { canister = C })
    CORPUS[#CORPUS + 1] = d:args("canister_create", { cycles = 500000000000 })
    CORPUS[#CORPUS + 1] = d:args("canister_delete", { canister = C, burn_cycles = true })
  end
end

-- The queries a directory walk (fleetsnap.directory) sends: the first page,
-- a page after a cursor holding every byte that needs escaping, and the
-- filters. Besides the parse, the real icp must accept the argument as
-- Candid text (it reports a bad one before it reaches the network).
local DIRECTORY_ARGS = {}
do
  local directory = require "fleetsnap.directory"
  local canic = require "fleetsnap.canic"
  local d = require("fleetsnap.drivers.icp").new({ network = "http://127.0.0.1:9", root_key = KEY, identity = "ops" })
  local cursor = "\0\1\"\\\127\255"
  for _, args in ipairs({
    directory.request(nil, nil, 100),
    directory.request(7, cursor, 2),
    directory.request(7, cursor, 1, { role = 'a "quoted" \\ role', parent = C }),
  }) do
    DIRECTORY_ARGS[#DIRECTORY_ARGS + 1] = args
    CORPUS[#CORPUS + 1] = d:args("call", { canister = C, method = canic.DIRECTORY_METHOD, args = args, query = true })
  end
end

-- Transfers against an unreachable host retry for a minute: vectors that
-- would start one are checked only for parse errors, with the real binary
-- given a short cap (still running at the cap = not a usage error).
local DRIVER = require("fleetsnap.drivers.icp").new({ network = "http://127.0.0.1:9", root_key = KEY })
local TRANSFERS = {
  DRIVER:args("snapshot_download", { canister = C, snapshot_id = SID, dir = "/tmp/fsn-conf-dl" }),
  DRIVER:args("snapshot_download", { canister = C, snapshot_id = SID, dir = "/tmp/fsn-conf-dl", resume = true }),
  DRIVER:args("snapshot_upload", { canister = C, dir = "/tmp/fsn-conf-up", replace = SID }),
  DRIVER:args("snapshot_upload", { canister = C, dir = "/tmp/fsn-conf-up", resume = true }),
  with(v("canister", "snapshot", "download", C, SID, "--output", "/tmp/fsn-conf-dl"), NET),
  with(v("canister", "snapshot", "download", C, SID, "-o", "/tmp/fsn-conf-dl", "--resume"), NET),
  with(v("canister", "snapshot", "upload", C, "--input", "/tmp/fsn-conf-up", "--json"), NET),
  with(v("canister", "snapshot", "upload", C, "-i", "/tmp/fsn-conf-up", "--resume", "--json"), NET),
}

local function real(argv, cwd, home)
  local full = { REAL }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return assert(engine.proc.run({ argv = full, cwd = cwd, timeout_ms = 5000, kill_grace_ms = 500,
    env = { HOME = home, DO_NOT_TRACK = "1" }, unset_env = { "RUST_BACKTRACE", "ICP_NETWORK", "ICP_ENVIRONMENT",
      "ICP_PROJECT_ROOT", "LD_PRELOAD" } }))
end

local function usage_error(r)
  return not r.timed_out and r.status == 2
end

describe("icp-sim argument parsing against icp 1.5.0", function()
  if not engine.fs.lstat(REAL) then
    it("needs the real icp binary", function()
      error("the real icp is not at " .. REAL .. ": scripts/test installs it with npm")
    end)
    return
  end

  local home, scratch
  setup(function()
    home = helpers.sim_home()
    scratch = helpers.tmpdir()
  end)
  teardown(function() helpers.cleanup() end)

  it("has a real binary that says it is 1.5.0", function()
    assert.equal("icp 1.5.0\n", real({ "--version" }, scratch, scratch).stdout)
  end)

  for _, argv in ipairs(CORPUS) do
    it("agrees on `icp " .. table.concat(argv, " "):gsub(KEY, "<KEY>") .. "`", function()
      local want = real(argv, scratch, scratch)
      local got = helpers.icp(home, argv)
      assert.equal(usage_error(want), usage_error(got), "real icp: " .. want.stderr .. "\nicp-sim: " .. got.stderr)
      if usage_error(want) then
        -- The first line (clap's message) must be the same text.
        assert.equal(want.stderr:match("^[^\n]*"), got.stderr:match("^[^\n]*"))
      end
    end)
  end

  for _, args in ipairs(DIRECTORY_ARGS) do
    it("has the real icp accept the Candid text " .. args, function()
      local want = real(with(v("canister", "call", C, "canic_root_component_directory_page", args, "--query",
        "--json"), NET), scratch, scratch)
      assert.is_false(usage_error(want), want.stderr)
      assert.is_nil(want.stderr:find("failed to parse Candid arguments", 1, true), want.stderr)
      -- It got as far as the (unreachable) replica.
      assert.matches("communication with the replica", want.stderr, 1, true)
    end)
  end

  for _, argv in ipairs(TRANSFERS) do
    it("agrees that `icp " .. table.concat(argv, " "):gsub(KEY, "<KEY>") .. "` parses", function()
      local want = real(argv, scratch, scratch)
      assert.is_false(usage_error(want), want.stderr)
      local got = helpers.icp(home, argv)
      assert.is_false(usage_error(got), got.stderr)
    end)
  end
end)
