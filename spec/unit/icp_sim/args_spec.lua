local args = require "icp_sim.args"

local function parse(line)
  local argv = {}
  for w in line:gmatch("%S+") do argv[#argv + 1] = w end
  return args.parse(argv)
end

describe("sim args.parse", function()
  it("parses a download with attached and separate values", function()
    local c = assert(parse("canister snapshot download x 00ff -o/tmp/d --resume -e local"))
    assert.equal("canister snapshot download", c.command)
    assert.same({ output = "/tmp/d", resume = true, environment = "local" }, c.options)
    assert.same({ canister = "x", snapshot_id = "00ff" }, c.args)
  end)

  it("accepts common parameters anywhere", function()
    local c = assert(parse("--debug canister stop --project-root-override /p x --environment=local"))
    assert.is_true(c.common.debug)
    assert.equal("/p", c.common["project-root-override"])
  end)

  it("prints the version", function()
    assert.equal("version", parse("--version").command)
  end)

  local usage = {
    { "canister stop a b", "error: unexpected argument 'b' found\n\nUsage: icp canister stop [OPTIONS] <CANISTER>\n" },
    { "canister snapshot create x --json -q", "error: the argument '--json' cannot be used with '--quiet'\n" },
    { "canister snapshot delete x zz", "error: invalid value 'zz' for '<SNAPSHOT_ID>': Invalid character 'z' at position 0\n" },
    { "canister snapshot delete x abc", "error: invalid value 'abc' for '<SNAPSHOT_ID>': Odd number of digits\n" },
    { "canister stop x -n http://127.0.0.1:9", "error: `--root-key` is required when `--network` is a URL.\n" },
    { "canister stop x -n local -e local",
      "error: the argument '--network <NETWORK>' cannot be used with '--environment <ENVIRONMENT>'\n" },
    { "canister call x m --output json",
      "error: invalid value 'json' for '--output <OUTPUT>'\n  [possible values: auto, candid, text, hex]\n" },
    { "canister frob", "error: unrecognized subcommand 'frob'\n" },
    { "canister snapshot upload x", "error: the following required arguments were not provided:\n  --input <INPUT>\n" },
    { "canister stop x --proxy bad",
      "error: invalid value 'bad' for '--proxy <PROXY>': Text must be in valid Base32 encoding.\n" },
    { "canister stop x -k abcd", "error: invalid value 'abcd' for '--root-key <ROOT_KEY>': invalid root key: "
      .. "expected 133 bytes but got 2\n" },
    { "canister stop x -e a -e b", "error: the argument '--environment <ENVIRONMENT>' cannot be used multiple times\n" },
    { "canister stop x --identity", "error: a value is required for '--identity <IDENTITY>' but none was supplied\n" },
    { "-e local canister stop x", "error: unexpected argument '-e' found\n" },
  }
  for _, u in ipairs(usage) do
    it("refuses `" .. u[1] .. "` as clap does (exit 2)", function()
      local c, err = parse(u[1])
      assert.is_nil(c)
      assert.equal(2, err.rc)
      assert.equal(u[2], err.stderr:sub(1, #u[2]))
      assert.matches("For more information, try '%-%-help'%.\n$", err.stderr)
    end)
  end

  it("reports a subcommand it does not serve as unsupported, not as a usage error", function()
    assert.equal("unsupported", parse("canister install x").command)
  end)
end)
