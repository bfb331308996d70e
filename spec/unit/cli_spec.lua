-- The CLI in-process: parsing, option validation, and how failures are
-- rendered (exit status, JSON, next steps, tracebacks). Handlers are
-- stubbed where a failure has to be provoked.
local engine = require "fleetsnap.engine"
local cli = require "fleetsnap.cli"
local errors = require "fleetsnap.errors"
local output = require "fleetsnap.cli.output"
local helpers = require "helpers"

local json = engine.json

-- Runs cli.main with stdout and stderr captured (the CLI looks them up at
-- each write).
-- luacheck: push ignore 122
local function run(argv)
  local out, err = {}, {}
  local saved_out, saved_err = io.stdout, io.stderr
  io.stdout = { write = function(_, s) out[#out + 1] = s end, flush = function() end }
  io.stderr = { write = function(_, s) err[#err + 1] = s end, flush = function() end }
  local ok, rc = pcall(cli.main, argv)
  io.stdout, io.stderr = saved_out, saved_err
  assert(ok, rc)
  return { status = rc, stdout = table.concat(out), stderr = table.concat(err) }
end
-- luacheck: pop

-- Replaces `policy list`'s handler by `fn` for the duration of `body`.
local function with_handler(fn, body)
  local handlers = require("fleetsnap.cli.policy").handlers
  local saved = handlers.list
  handlers.list = fn
  local ok, e = pcall(body)
  handlers.list = saved
  assert(ok, e)
end

-- A --sim home that passes the CLI's check (a sim.json naming a root).
local function sim_home()
  local home = helpers.tmpdir()
  helpers.write(home .. "/sim.json", '{"root": "aaaaa-aa"}')
  return home
end

describe("require 'fleetsnap.cli'", function()
  it("gives main", function()
    assert.is_function(cli.main)
  end)
end)

describe("cli.integer", function()
  local at_least_1 = cli.integer("--concurrency", 1)

  it("accepts an integer at the bound", function()
    assert.equal(1, at_least_1("1"))
    assert.equal(0, cli.integer("--keep-last", 0)("0"))
  end)

  it("refuses text, naming the option and the value", function()
    local n, err = at_least_1("abc")
    assert.is_nil(n)
    assert.equal("--concurrency must be an integer >= 1, got 'abc'", err)
  end)

  it("refuses a value below the bound, naming the option", function()
    local n, err = at_least_1("0")
    assert.is_nil(n)
    assert.equal("--concurrency must be an integer >= 1, got 0", err)
  end)

  it("refuses a fraction and an exponent", function()
    assert.is_nil(at_least_1("1.5"))
    assert.is_nil(at_least_1("1e3"))
  end)

  it("refuses an integer too large for Lua", function()
    assert.is_nil(at_least_1("99999999999999999999"))
  end)
end)

describe("cli.main usage errors", function()
  it("exits 2 on an unknown option, naming it and the command, and points at the command's --help", function()
    local r = run({ "backup", "list", "--bogus" })
    assert.equal(2, r.status)
    assert.equal("fleetsnap: backup list: unknown option '--bogus'\nnext: fleetsnap backup list --help\n", r.stderr)
    assert.equal("", r.stdout)
  end)

  it("prints one JSON error document when --json was given", function()
    local r = run({ "--json", "backup", "list", "--bogus" })
    assert.equal(2, r.status)
    local doc = json.decode(r.stdout)
    assert.same({ type = "error", code = "EUSAGE", exit = 2, message = "backup list: unknown option '--bogus'" },
      { type = doc.type, code = doc.code, exit = doc.exit, message = doc.message })
  end)

  it("gives the next step of a --json usage error as the string field next", function()
    local doc = json.decode(run({ "--json", "backup", "list", "--bogus" }).stdout)
    assert.equal("fleetsnap backup list --help", doc.next)
  end)

  local bad = {
    { { "backup", "create", "--concurrency", "abc" }, "--concurrency must be an integer >= 1, got 'abc'" },
    { { "backup", "create", "--concurrency", "0" }, "--concurrency must be an integer >= 1, got 0" },
    { { "backup", "create", "--downloads", "0" }, "--downloads must be an integer >= 1, got 0" },
    { { "backup", "create", "--snapshot-limit", "0" }, "--snapshot-limit must be an integer >= 1, got 0" },
    { { "backup", "create", "--keep-on-canister", "two" }, "--keep-on-canister must be an integer >= 0, got 'two'" },
    { { "backup", "prune", "--keep-last", "1.5" }, "--keep-last must be an integer >= 0, got '1.5'" },
    { { "backup", "prune", "--keep-last", "-1" }, "--keep-last must be an integer >= 0, got -1" },
    { { "backup", "prune", "--keep-daily", "x" }, "--keep-daily must be an integer >= 0, got 'x'" },
    { { "backup", "prune", "--keep-weekly", "x" }, "--keep-weekly must be an integer >= 0, got 'x'" },
    { { "restore", "plan", "b", "--concurrency", "0" }, "--concurrency must be an integer >= 1, got 0" },
    { { "restore", "plan", "b", "--uploads", "0" }, "--uploads must be an integer >= 1, got 0" },
    { { "restore", "plan", "b", "--snapshot-limit", "x" }, "--snapshot-limit must be an integer >= 1, got 'x'" },
    { { "restore", "run", "b", "--max-steps", "0" }, "--max-steps must be an integer >= 1, got 0" },
    { { "--timeout", "0", "policy", "list" }, "--timeout must be an integer >= 1, got 0" },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. table.concat(case[1], " ") .. " naming the option, without a traceback", function()
      local r = run(case[1])
      assert.equal(2, r.status)
      assert.matches(": " .. case[2] .. "\nnext: fleetsnap ", r.stderr, 1, true)
      assert.is_nil(r.stderr:find("traceback", 1, true))
    end)
  end

  it("refuses contradictory restore options (exit 2) before looking for the backup", function()
    local r = run({ "restore", "run", "nowhere", "--dry-run", "--retry-failed" })
    assert.equal(2, r.status)
    assert.matches("cannot be combined with %-%-dry%-run", r.stderr)
  end)

  it("refuses prune without a keep rule (exit 2)", function()
    local r = run({ "backup", "prune", "--dir", helpers.tmpdir() })
    assert.equal(2, r.status)
    assert.matches("prune needs %-%-keep%-last", r.stderr)
    helpers.cleanup()
  end)
end)

describe("cli.main messages", function()
  after_each(function() helpers.cleanup() end)

  -- The last line of a text.
  local function last_line(text)
    return text:match("([^\n]*)\n$")
  end

  it("names --concurrency in the error of --concurrency abc", function()
    local r = run({ "backup", "create", "--concurrency", "abc" })
    assert.equal(2, r.status)
    assert.matches("%-%-concurrency must be an integer >= 1, got 'abc'", r.stderr)
  end)

  it("ends a usage error with the next line pointing to the command's --help", function()
    local r = run({ "backup", "create", "--concurrency", "abc" })
    assert.equal("next: fleetsnap backup create --help", last_line(r.stderr))
  end)

  it("names --timeout in the error of --timeout x", function()
    local r = run({ "--timeout", "x", "backup", "list" })
    assert.equal(2, r.status)
    assert.matches("%-%-timeout must be an integer >= 1, got 'x'", r.stderr)
  end)

  it("names the command whose argument is missing", function()
    local r = run({ "backup", "resume" })
    assert.equal(2, r.status)
    assert.equal("fleetsnap: backup resume: missing argument 'ref'\nnext: fleetsnap backup resume --help\n", r.stderr)
  end)

  it("names the group of an unknown command and points to the group's --help", function()
    local r = run({ "restore", "bogus" })
    assert.equal(2, r.status)
    assert.equal("fleetsnap: restore: unknown command 'bogus'\nnext: fleetsnap restore --help\n", r.stderr)
  end)

  it("refuses `fleetsnap backup` alone (exit 2), naming its commands and pointing to `fleetsnap backup --help`",
    function()
      local r = run({ "backup" })
      assert.equal(2, r.status)
      assert.equal("fleetsnap: backup needs a command: create, diff, forget, inspect, list, prune, pull, push, "
        .. "resume, status, verify\n"
        .. "next: fleetsnap backup --help\n", r.stderr)
    end)

  it("refuses `fleetsnap restore` and `fleetsnap policy` alone the same way", function()
    local r = run({ "restore" })
    assert.equal(2, r.status)
    assert.equal("fleetsnap: restore needs a command: drill, plan, run, status, undo\nnext: fleetsnap restore --help\n",
      r.stderr)
    r = run({ "policy" })
    assert.equal(2, r.status)
    assert.equal("fleetsnap: policy needs a command: check, list, show\nnext: fleetsnap policy --help\n", r.stderr)
  end)

  it("points a missing command to `fleetsnap --help`", function()
    local r = run({})
    assert.equal(2, r.status)
    assert.equal("next: fleetsnap --help", last_line(r.stderr))
  end)

  it("points an internal error to the same command with --debug", function()
    with_handler(function() error("boom") end, function()
      local r = run({ "policy", "list" })
      assert.equal("next: fleetsnap --debug policy list", last_line(r.stderr))
    end)
  end)

  it("points a locked run to the same command, connection flags included", function()
    local home = sim_home()
    with_handler(function() errors.raise("ELOCKED", "held by pid 1") end, function()
      local r = run({ "--sim", home, "policy", "list" })
      assert.equal("next: fleetsnap --sim " .. home .. " policy list", last_line(r.stderr))
    end)
  end)

  it("points an error with no step of its own that the same command cannot get past to the command's --help",
    function()
      with_handler(function() errors.raise("ECORRUPT", "bad document") end, function()
        local r = run({ "policy", "list" })
        assert.equal(7, r.status)
        assert.equal("fleetsnap: bad document\nnext: fleetsnap policy list --help\n", r.stderr)
      end)
    end)

  it("refuses a missing bundled policy with exit 3 (ENOTFOUND), pointing to `policy list`", function()
    local r = run({ "--json", "policy", "show", "nosuch" })
    assert.equal(3, r.status)
    local doc = json.decode(r.stdout)
    assert.equal("ENOTFOUND", doc.code)
    assert.equal("fleetsnap policy list", doc.next)
  end)

  it("refuses a missing policy file with exit 3", function()
    local r = run({ "policy", "check", helpers.tmpdir() .. "/missing.lua" })
    assert.equal(3, r.status)
    assert.matches("missing%.lua", r.stderr)
  end)

  it("still refuses a policy file that is there but broken with exit 7", function()
    local path = helpers.tmpdir() .. "/broken.lua"
    helpers.write(path, "return 1")
    assert.equal(7, run({ "policy", "check", path }).status)
  end)
end)

describe("cli.main failures", function()
  after_each(function() helpers.cleanup() end)

  it("exits 70 on a Lua error in a handler and hides the traceback", function()
    with_handler(function() error("boom") end, function()
      local r = run({ "policy", "list" })
      assert.equal(70, r.status)
      assert.matches("fleetsnap: internal error: .*boom", r.stderr)
      assert.matches("%-%-debug", r.stderr)
      assert.is_nil(r.stderr:find("stack traceback", 1, true))
    end)
  end)

  it("prints the traceback of an internal error with --debug", function()
    with_handler(function() error("boom") end, function()
      local r = run({ "--debug", "policy", "list" })
      assert.equal(70, r.status)
      assert.matches("stack traceback:", r.stderr, 1, true)
    end)
  end)

  it("reports an internal error as a JSON document with --json", function()
    with_handler(function() local t = nil; return t.x end, function()
      local r = run({ "--json", "policy", "list" })
      assert.equal(70, r.status)
      local doc = json.decode(r.stdout)
      assert.equal("EINTERNAL", doc.code)
      assert.equal(70, doc.exit)
    end)
  end)

  it("still prints the JSON error document when its failures cannot be encoded", function()
    with_handler(function() errors.raise("EICP", "stop failed", { failures = { { f = print } } }) end, function()
      local r = run({ "--json", "policy", "list" })
      assert.equal(1, r.status)
      local doc = json.decode(r.stdout)
      assert.equal("EICP", doc.code)
      assert.is_nil(doc.failures)
    end)
  end)

  it("exits with the registry's status of an error object", function()
    with_handler(function() errors.raise("ELOCKED", "held by pid 1") end, function()
      local r = run({ "policy", "list" })
      assert.equal(4, r.status)
      assert.equal("fleetsnap: held by pid 1\nnext: fleetsnap policy list\n", r.stderr)
    end)
  end)

  it("maps a domain table with an engine code by the registry", function()
    with_handler(function() error({ fleetsnap = true, code = "ENOSPC", message = "disk full" }, 0) end, function()
      assert.equal(8, run({ "policy", "list" }).status)
    end)
  end)

  it("reports Lua's own interrupt as exit 130", function()
    with_handler(function() error("interrupted!") end, function()
      assert.equal(130, run({ "policy", "list" }).status)
    end)
  end)

  it("exits with a handler's returned code, printing no error", function()
    with_handler(function() return "EVERIFY" end, function()
      local r = run({ "policy", "list" })
      assert.equal(6, r.status)
      assert.equal("", r.stderr)
    end)
  end)

  it("refuses --sim where no simulated fleet is (exit 3)", function()
    local r = run({ "--sim", helpers.tmpdir(), "policy", "list" })
    assert.equal(3, r.status)
    assert.matches("no simulated fleet there", r.stderr)
  end)
end)

describe("cli.main next steps", function()
  after_each(function() helpers.cleanup() end)

  local step = { command = "restore run", ref = "/b/x", options = { execute = true, retry_failed = true } }

  it("renders a next step with --sim as a full command line", function()
    local home = sim_home()
    with_handler(function() errors.raise("EFAILED", "upload failed", { next = step }) end, function()
      local r = run({ "--sim", home, "policy", "list" })
      assert.equal(5, r.status)
      assert.matches("fleetsnap: upload failed\nnext: fleetsnap --sim " .. home
        .. " restore run /b/x --execute --retry-failed\n", r.stderr, 1, true)
    end)
  end)

  it("carries every connection flag of the run into the next step", function()
    with_handler(function() errors.raise("EFAILED", "x", { next = step }) end, function()
      local r = run({ "--icp", "/opt/icp", "-n", "http://127.0.0.1:4943", "-k", "ab12", "--identity", "ops",
        "--identity-password-file", "/p/pw", "--json", "policy", "list" })
      assert.matches("next: fleetsnap --icp /opt/icp -n http://127.0.0.1:4943 -k ab12 --identity ops "
        .. "--identity-password-file /p/pw restore run /b/x --execute --retry-failed", r.stderr, 1, true)
      assert.equal("fleetsnap --icp /opt/icp -n http://127.0.0.1:4943 -k ab12 --identity ops "
        .. "--identity-password-file /p/pw restore run /b/x --execute --retry-failed", json.decode(r.stdout).next)
    end)
  end)

  it("renders -e and every step of next_steps: the first as the final next line, the others as alternatives",
    function()
      with_handler(function()
        errors.raise("EFAILED", "x", { next_steps = { step, { command = { "restore", "undo" }, ref = "/b/x" } } })
      end, function()
        local r = run({ "-e", "staging", "policy", "list" })
        assert.equal("fleetsnap: x\nalternative: fleetsnap -e staging restore undo /b/x\n"
          .. "next: fleetsnap -e staging restore run /b/x --execute --retry-failed\n", r.stderr)
      end)
    end)

  it("gives the alternatives of a --json error as the array alternatives", function()
    with_handler(function()
      errors.raise("EFAILED", "x", { next_steps = { step, { command = { "restore", "undo" }, ref = "/b/x" } } })
    end, function()
      local doc = json.decode(run({ "--json", "policy", "list" }).stdout)
      assert.equal("fleetsnap restore run /b/x --execute --retry-failed", doc.next)
      assert.same({ "fleetsnap restore undo /b/x" }, doc.alternatives)
    end)
  end)
end)

describe("output.command_line", function()
  it("sorts options, turns underscores into dashes and drops false and null", function()
    assert.equal("fleetsnap restore run b --execute --max-steps 3 --retry-failed",
      output.command_line({ command = "restore run", ref = "b",
        options = { retry_failed = true, max_steps = 3, execute = true, abort = false, state = json.null } }, {}))
  end)

  it("joins a list with commas and quotes what a shell would split", function()
    assert.equal("fleetsnap -e local restore plan 'my backups/b' --members 'a,b'",
      output.command_line({ command = "restore plan", ref = "my backups/b", options = { members = { "a", "b" } } },
        { "-e", "local" }))
  end)
end)

describe("the next: line of each failure class", function()
  -- Every registry code, raised by a handler, ends the run's output with
  -- exactly one next: line naming a fleetsnap command, in text and in JSON.
  local codes = {}
  for code in pairs(errors.REGISTRY) do codes[#codes + 1] = code end
  table.sort(codes)
  for _, code in ipairs(codes) do
    it(code, function()
      with_handler(function() errors.raise(code, "a " .. code .. " failure") end, function()
        local r = run({ "policy", "list" })
        assert.equal(errors.REGISTRY[code].exit, r.status)
        local last = r.stderr:match("([^\n]+)\n$")
        assert.matches("^next: fleetsnap ", last)
        local _, n = r.stderr:gsub("\nnext: ", "")
        assert.equal(1, n + (r.stderr:match("^next: ") and 1 or 0))
        local doc = json.decode(run({ "--json", "policy", "list" }).stdout:match("([^\n]+)\n?$"))
        assert.equal(code, doc.code)
        assert.matches("^fleetsnap ", doc.next)
      end)
    end)
  end
end)
