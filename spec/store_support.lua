--- What the store specs share: a small complete backup (made once per
-- spec file, copied per test), restic repositories (local, and REST ones
-- served by `rclone serve restic` on loopback, started and stopped here),
-- and fleetsnap runs whose only restic settings are the ones given.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"

local json, fs = engine.json, engine.fs

local M = {}

M.PASSWORD = "store-spec-password-5e1f"

-- restic's variables a test must not inherit from the shell that runs it.
M.RESTIC_VARS = { "RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE",
  "RESTIC_PASSWORD_COMMAND", "FLEETSNAP_CONFIG", "FLEETSNAP_PUSH" }

local function unset(extra)
  local out = { "LD_PRELOAD" }
  for _, k in ipairs(M.RESTIC_VARS) do out[#out + 1] = k end
  for _, k in ipairs(extra or {}) do out[#out + 1] = k end
  return out
end

--- Runs scripts/fleetsnap with argv; env: extra variables (PATH for a
-- fake restic, RESTIC_* for the variable layer).
function M.fleetsnap(argv, env)
  local full = { helpers.root .. "/scripts/fleetsnap" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local e = { RUST_BACKTRACE = "0", XDG_CONFIG_HOME = "/nonexistent" }
  for k, v in pairs(env or {}) do e[k] = v end
  return assert(engine.proc.run({ argv = full, env = e, unset_env = unset(), timeout_ms = 300000,
    capture_limit = 8 << 20 }))
end

--- Runs restic itself against repository `repo` with the spec's password.
function M.restic(repo, argv, password_file)
  local full = { "restic", "--no-cache" }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return assert(engine.proc.run({ argv = full, env = { RESTIC_REPOSITORY = repo,
    RESTIC_PASSWORD_FILE = password_file }, unset_env = unset(), timeout_ms = 120000 }))
end

--- A password file holding `text` (default the spec's password).
function M.password_file(dir, text)
  local path = dir .. "/password"
  helpers.write(path, (text or M.PASSWORD) .. "\n")
  return path
end

--- A new local repository: {repo, password_file}. A copy of an empty
-- repository made once per process (restic's key derivation takes a
-- second per init; the copies share a repository id and keys, which no
-- spec compares across repositories).
function M.local_repo()
  local dir = helpers.tmpdir()
  local pw = M.password_file(dir)
  local repo = dir .. "/repo"
  local template = helpers.lasting("push-repo", function(t)
    local r = M.restic(t .. "/repo", { "init" }, M.password_file(t))
    assert(r.status == 0, r.stderr)
  end)
  helpers.sh("cp -a " .. template .. "/repo " .. repo)
  return { repo = repo, password_file = pw, dir = dir }
end

--- The snapshots of `repo` (restic snapshots --json), optionally with
-- one tag filter.
function M.snapshots(repo, pw, tag)
  local argv = { "snapshots", "--json" }
  if tag then argv[#argv + 1] = "--tag"; argv[#argv + 1] = tag end
  local r = M.restic(repo, argv, pw)
  assert(r.status == 0, r.stderr)
  local doc = json.decode(r.stdout)
  if doc == json.null then return {} end
  return doc
end

-- The complete backups made once per spec file, by key: their directories.
local prepared = {}

--- A fresh copy of a small complete backup (2 members, 4 KiB memories),
-- in a directory named `name`: {dir, backup_id (its plan's), root}. Copies
-- of one `key` (default "a") are the same backup; another key makes
-- another backup of the same fleet.
function M.backup(name, key)
  key = key or "a"
  if not prepared[key] then
    local home = helpers.sim_home({ members = 2, depth = 1, heap = 4096, stable = 4096 })
    -- Kept for the whole run, as helpers.sim_home keeps its prepared homes.
    local out = helpers.sh("mktemp -d /tmp/fsn-spec-store-XXXXXX"):gsub("%s+$", "") .. "/pb-" .. key
    local r = helpers.fleetsnap(home, { "backup", "create", "--out", out })
    assert(r.status == 0, r.stderr)
    prepared[key] = out
  end
  local dir = helpers.tmpdir() .. "/backups/" .. (name or "pb1")
  helpers.sh("mkdir -p '" .. dir:match("^(.*)/[^/]+$") .. "' && cp -a '" .. prepared[key] .. "' '" .. dir .. "'")
  local man = json.decode(fs.read(dir .. "/fleet-backup-manifest.json"))
  return { dir = dir, backup_id = man.backup_id, root = man.source.root_canister }
end

--- The push record of a backup directory (nil when none).
function M.record(dir)
  local text = helpers.read(dir .. "/fleetsnap-push.json")
  return text and json.decode(text) or nil
end

-- Whether something answers on 127.0.0.1:port (bash's /dev/tcp).
local function answers(port)
  local r = engine.proc.run({ argv = { "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/" .. port }, timeout_ms = 5000 })
  return r.status == 0
end

--- A port nothing listens on (for a repository that cannot be reached).
function M.closed_port()
  for _ = 1, 50 do
    local port = math.random(20000, 60000)
    if not answers(port) then return port end
  end
  error("no closed port found")
end

--- Starts `rclone serve restic` on a free loopback port over a fresh
-- directory: {url (rest:http://127.0.0.1:PORT/), port, stop()}. The
-- caller calls stop() in a finally/teardown: it kills the process group.
function M.rest_server()
  local dir = helpers.tmpdir() .. "/rest"
  helpers.sh("mkdir -p '" .. dir .. "'")
  for _ = 1, 10 do
    local port = M.closed_port()
    local h = assert(engine.proc.spawn({ argv = { "rclone", "serve", "restic", "--addr", "127.0.0.1:" .. port, dir },
      unset_env = unset(), capture_limit = 1 << 16 }))
    -- Wait until it answers, or has exited (the port was taken meanwhile).
    local up = false
    for _ = 1, 400 do
      if h:done() then break end
      if answers(port) then
        up = true
        break
      end
      engine.sleep_ms(25)
    end
    if up then
      local server = { port = port, url = "rest:http://127.0.0.1:" .. port .. "/", dir = dir }
      local stopped = false
      function server.stop()
        if stopped then return end
        stopped = true
        if not h:done() then h:kill() end
        h:result()
        h:close()
      end
      return server
    end
    h:close()
  end
  error("rclone serve restic did not start")
end

--- A fake restic on PATH (a directory holding `restic`): the real one,
-- after which `behaviour` applies: "backup-exit-3" (a backup that
-- succeeded reports exit 3, as restic does when it could not read some
-- files, after printing its summary and the read error), or
-- "backup-exit-3-forget-fails" (also every forget fails).
function M.fake_restic(behaviour)
  local dir = helpers.tmpdir() .. "/fakebin"
  helpers.sh("mkdir -p '" .. dir .. "'")
  local real = helpers.sh("command -v restic"):gsub("%s+$", "")
  local forget = behaviour == "backup-exit-3-forget-fails"
    and 'case " $* " in *" forget "*) echo "Fatal: injected forget failure" >&2; exit 1;; esac\n' or ""
  helpers.write(dir .. "/restic", "#!/bin/sh\n" .. forget .. real .. ' "$@"\nrc=$?\n'
    .. 'case " $* " in *" backup "*) if [ $rc -eq 0 ]; then\n'
    .. '  echo "error: open /x/member/stable_memory.bin: permission denied" >&2\n'
    .. '  echo "Warning: at least one source file could not be read" >&2\n  exit 3\nfi;; esac\nexit $rc\n')
  helpers.sh("chmod +x '" .. dir .. "/restic'")
  return dir
end

--- The PATH with `dir` first.
--- A restic on PATH that appends its subcommand to `log` (one line each)
-- and runs the real one: {dir (for path_with), commands() -> list}.
function M.logging_restic(log)
  local dir = helpers.tmpdir() .. "/logbin"
  helpers.sh("mkdir -p '" .. dir .. "'")
  local real = helpers.sh("command -v restic"):gsub("%s+$", "")
  -- The subcommand is the first argument that is not an option.
  helpers.write(dir .. "/restic", "#!/bin/sh\nfor a in \"$@\"; do case $a in -*) ;; *) echo $a >> '" .. log
    .. "'; break;; esac; done\nexec " .. real .. ' "$@"\n')
  helpers.sh("chmod +x '" .. dir .. "/restic'")
  return { dir = dir, commands = function()
    local out = {}
    for line in (helpers.read(log) or ""):gmatch("[^\n]+") do out[#out + 1] = line end
    return out
  end }
end

function M.path_with(dir)
  return dir .. ":" .. os.getenv("PATH")
end

return M
