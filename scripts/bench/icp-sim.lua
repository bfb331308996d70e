--- icp-sim must never be the bottleneck of a benchmark: its transfers are
-- compared with `cp` + `sync` of the same bytes, best of three each.
local engine = require "fleetsnap.engine"

local MiB = 1024 * 1024
local HEAP = (arg[1] == "--quick" and 32 or 256) * MiB
local SIM = os.getenv("FLEETSNAP_SOURCE") .. "/scripts/icp-sim"

local function run(argv, env)
  local r = assert(engine.proc.run({ argv = argv, env = env, capture_limit = 1 << 20 }))
  if r.status ~= 0 then error(table.concat(argv, " ") .. ": " .. r.stderr) end
  return r.stdout
end

local function sh(cmd) return run({ "sh", "-c", cmd }) end

local function seconds(f)
  local t0 = engine.monotonic_ns()
  f()
  return (engine.monotonic_ns() - t0) / 1e9
end

local dir = sh("mktemp -d /tmp/fsn-bench-sim-XXXXXX"):gsub("%s+$", "")
if engine.fs.free_space(dir) < 6 * HEAP then
  io.stderr:write("bench: not enough free space in /tmp\n")
  os.exit(1)
end
local home = dir .. "/home"
local env = { ICP_SIM_HOME = home, ICP_SIM_SNAPSHOT_LIMIT = "100" }
local ok, err = pcall(function()
  run({ SIM, "sim", "init", "--members", "0", "--depth", "1", "--heap", tostring(HEAP), "--stable", "65536" }, env)
  local root = engine.json.decode(run({ SIM, "sim", "show", "--json" }, env)).root
  run({ SIM, "canister", "stop", root, "-e", "local" }, env)
  local id = run({ SIM, "canister", "snapshot", "create", root, "-e", "local", "-q" }, env):gsub("%s+$", "")

  local best = { download = math.huge, upload = math.huge, cp = math.huge }
  for i = 1, 3 do
    local out = dir .. "/dl" .. i
    best.download = math.min(best.download, seconds(function()
      run({ SIM, "canister", "snapshot", "download", root, id, "-o", out, "-e", "local" }, env)
    end))
    best.upload = math.min(best.upload, seconds(function()
      run({ SIM, "canister", "snapshot", "upload", root, "-i", out, "-e", "local", "-q" }, env)
    end))
    -- The same bytes as the snapshot (the download just made them).
    best.cp = math.min(best.cp, seconds(function() sh("cp -r " .. out .. " " .. dir .. "/cp" .. i .. " && sync") end))
    sh("rm -rf " .. dir .. "/cp" .. i)
  end
  local mb = (HEAP + 65536) / 1e6
  print(string.format("| measure | result | goal |\n|---|---|---|"))
  print(string.format("| download %d MiB vs cp + sync (speed ratio) | %.2fx (%.0f vs %.0f MB/s) | >= 0.5x |",
    HEAP // MiB, best.cp / best.download, mb / best.download, mb / best.cp))
  print(string.format("| upload %d MiB vs cp + sync (speed ratio) | %.2fx (%.0f vs %.0f MB/s) | >= 0.5x |",
    HEAP // MiB, best.cp / best.upload, mb / best.upload, mb / best.cp))
end)
sh("rm -rf " .. dir)
if not ok then
  io.stderr:write("bench: " .. tostring(err) .. "\n")
  os.exit(1)
end
