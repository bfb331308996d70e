-- restic 0.14 exits 1 for every failure below: the driver tells them
-- apart by stderr. The texts are what restic 0.14.0 printed here, case by
-- case (a missing directory, a wrong password, no password, an exclusive
-- lock held by `restic key passwd` waiting for its new password, the same
-- lock after its holder was SIGKILLed, a REST URL to a closed port, an
-- unknown host, a REST server without the repository).
local restic = require "fleetsnap.store.restic"

local OBSERVED = {
  missing_dir = "Fatal: unable to open config file: stat /tmp/x/nope/config: no such file or directory\n"
    .. "Is there a repository at the following location?\n/tmp/x/nope\n",
  missing_rest = "Fatal: unable to open config file: <config/> does not exist\n"
    .. "Is there a repository at the following location?\nrest:http://127.0.0.1:18765/x/\n",
  wrong_password = "Fatal: wrong password or no key found\n",
  no_password = "reading repository password from stdin\nFatal: an empty password is not a password\n",
  locked = "unable to create lock in backend: repository is already locked exclusively by PID 24136 on vm by "
    .. "root (UID 0, GID 0)\nlock was created at 2026-12-01 01:40:54 (1.146374561s ago)\nstorage ID bef29be4\n"
    .. "the `unlock` command can be used to remove stale locks\n",
  closed_port = "Fatal: unable to open config file: client.Head: Head \"http://user:***@127.0.0.1:1/x/config\": "
    .. "dial tcp 127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?\n"
    .. "rest:http://user:***@127.0.0.1:1/x/\n",
  no_host = "Fatal: unable to open config file: client.Head: Head \"http://nosuchhost.invalid:8000/x/config\": "
    .. "dial tcp: lookup nosuchhost.invalid on 10.255.255.53:53: no such host\n"
    .. "Is there a repository at the following location?\nrest:http://nosuchhost.invalid:8000/x/\n",
}

local function classify(stderr, display)
  return restic.classify("snapshots", { status = 1, stderr = stderr }, display or "/tmp/x/repo")
end

describe("restic.classify", function()
  it("maps a missing local repository to ENOREPO", function()
    assert.equal("ENOREPO", classify(OBSERVED.missing_dir).code)
  end)

  it("maps a REST server without the repository to ENOREPO", function()
    assert.equal("ENOREPO", classify(OBSERVED.missing_rest).code)
  end)

  it("maps a wrong password to EREPOKEY", function()
    local e = classify(OBSERVED.wrong_password)
    assert.equal("EREPOKEY", e.code)
    assert.matches("wrong password or no key found", e.message, 1, true)
  end)

  it("maps no password at all to EREPOKEY", function()
    assert.equal("EREPOKEY", classify(OBSERVED.no_password).code)
  end)

  it("maps an exclusive lock (live or stale) to EREPOLOCKED and names restic unlock", function()
    local e = classify(OBSERVED.locked)
    assert.equal("EREPOLOCKED", e.code)
    assert.matches("PID 24136", e.message, 1, true)
    assert.matches("restic unlock", e.message, 1, true)
  end)

  it("maps a closed port to EREPONET although restic also asks whether a repository is there", function()
    assert.equal("EREPONET", classify(OBSERVED.closed_port).code)
  end)

  it("maps an unknown host to EREPONET", function()
    assert.equal("EREPONET", classify(OBSERVED.no_host).code)
  end)

  it("maps any other failure to EREPO with restic's Fatal line", function()
    local e = classify("Fatal: something new\n")
    assert.equal("EREPO", e.code)
    assert.matches("something new", e.message, 1, true)
  end)

  it("maps a restic killed by a signal to EREPO", function()
    local e = restic.classify("backup", { signal = 9, stderr = "" }, "/r")
    assert.equal("EREPO", e.code)
    assert.matches("signal 9", e.message, 1, true)
  end)

  it("keeps a URL's password out of the message and the stderr tail", function()
    local e = restic.classify("snapshots", { status = 1, stderr = "Fatal: Head http://u:hunter22@h/x: dial tcp: "
      .. "connection refused hunter22\n" }, "rest:http://u:***@h/x", { "hunter22" })
    assert.equal("EREPONET", e.code)
    assert.is_nil(e.message:find("hunter22", 1, true))
    assert.is_nil(e.stderr_tail:find("hunter22", 1, true))
  end)
end)

describe("restic.redact", function()
  it("replaces the password of a URL", function()
    assert.equal("rest:https://alice:***@host:8000/repo", restic.redact("rest:https://alice:s3cr3t@host:8000/repo"))
  end)

  it("leaves a URL without a password alone", function()
    assert.equal("rest:http://127.0.0.1:8000/repo", restic.redact("rest:http://127.0.0.1:8000/repo"))
  end)

  it("replaces every given secret", function()
    assert.equal("a *** b ***", restic.redact("a pw123 b pw123", { "pw123" }))
  end)
end)

describe("restic.open", function()
  it("keeps the repository out of argv and redacts it in its name", function()
    local repo = restic.open({ repository = "rest:http://u:topsecret@127.0.0.1:1/x", restic = "restic" })
    assert.equal("rest:http://u:***@127.0.0.1:1/x", repo:name())
    assert.equal("rest:http://u:topsecret@127.0.0.1:1/x", repo.env.RESTIC_REPOSITORY)
    for _, a in ipairs(repo:argv({ "snapshots" })) do assert.is_nil(a:find("topsecret", 1, true)) end
  end)

  it("calls `missing` when no repository is known", function()
    local called = false
    local repo = restic.open({ repository = "", missing = function() called = true end })
    assert.is_true(called)
    assert.is_nil(repo)
  end)

  it("passes a password file as the only password source", function()
    local repo = restic.open({ repository = "/r", password_file = "/p" })
    assert.equal("/p", repo.env.RESTIC_PASSWORD_FILE)
    local unset = {}
    for _, k in ipairs(repo.unset_env) do unset[k] = true end
    assert.is_true(unset.RESTIC_PASSWORD and unset.RESTIC_PASSWORD_COMMAND and true)
  end)
end)
