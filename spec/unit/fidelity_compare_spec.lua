-- The comparator of spec/e2e/fidelity_spec.lua: what it normalises away
-- (ids, hashes, numbers, timestamps, paths) and that every part of a step
-- it compares catches an injected difference.
local engine = require "fleetsnap.engine"
local helpers = require "helpers"
local compare = require "fidelity_compare"

local function result(status, stdout, stderr)
  return { status = status, stdout = stdout or "", stderr = stderr or "" }
end

describe("fidelity comparator: normalisation", function()
  it("replaces ids, snapshot ids, hashes, numbers, timestamps, paths and URLs", function()
    assert.equal("Created snapshot <snapshot> for canister <principal> (<principal>)",
      compare.normalise_line("Created snapshot 000000000000000000000000000000020101 for canister "
        .. "ryjl3-tyaaa-aaaaa-aaaba-cai (ryjl3-tyaaa-aaaaa-aaaba-cai)"))
    assert.equal("  Timestamp: <time> UTC", compare.normalise_line("  Timestamp: 2026-11-30 20:13:23 UTC"))
    assert.equal("  Size: <n> KiB", compare.normalise_line("  Size: 70.03125 KiB"))
    assert.equal("  Memory size: <n>", compare.normalise_line("  Memory size: 71_712"))
    assert.equal("  Module hash: <hex>", compare.normalise_line("  Module hash: 0x" .. string.rep("ab", 32)))
    assert.equal("<hash>.bin", compare.normalise_line(string.rep("0f", 32) .. ".bin"))
    assert.equal("Sender's ID: <principal>", compare.normalise_line("Sender's ID: 2vxsx-fae"))
    assert.equal("Snapshot downloaded to <path>", compare.normalise_line("Snapshot downloaded to /tmp/fsn-spec-x/real/snap"))
    assert.equal("error sending request for url (<url>/api/v4)",
      compare.normalise_line("error sending request for url (http://127.0.0.1:4943/api/v4)"))
  end)

  it("keeps words, units and error codes", function()
    assert.equal('error code Some("IC0305")', compare.normalise_line('error code Some("IC0305")'))
    assert.are_not.equal(compare.normalise_line("Size: 1 KiB"), compare.normalise_line("Size: 1 MiB"))
    assert.are_not.equal(compare.normalise_line("Status: Running"), compare.normalise_line("Status: Stopped"))
  end)

  it("reduces JSON to key paths and value types", function()
    assert.same({ ".a: string", ".b: array", ".b[].c: number", ".b[]: object", ".d: null", ": object" },
      compare.json_shape(engine.json.decode('{"a":"x","b":[{"c":1},{"c":2}],"d":null}')))
  end)
end)

describe("fidelity comparator: each part catches an injected difference", function()
  local base = result(0, '{"settings":{"environment_variables":[]},"cycles":"1_000"}\n', "WARN x\n")

  it("finds nothing between equal results that differ only in values", function()
    local other = result(0, '{"settings":{"environment_variables":[]},"cycles":"2_000_000"}\n', "WARN x\n")
    assert.same({}, compare.compare("s", base, other, { json = true }))
  end)

  it("an exit code", function()
    assert.same({ "s exit: real 0, sim 1" }, compare.compare("s", base, result(1, base.stdout, base.stderr), { json = true }))
  end)

  it("a JSON value's type (null where icp prints an array)", function()
    local other = result(0, '{"settings":{"environment_variables":null},"cycles":"1_000"}\n', base.stderr)
    assert.same({ "s stdout: - .settings.environment_variables: array",
      "s stdout: + .settings.environment_variables: null" }, compare.compare("s", base, other, { json = true }))
  end)

  it("a missing JSON key, and output that is not JSON", function()
    local other = result(0, '{"settings":{"environment_variables":[]}}\n', base.stderr)
    assert.same({ "s stdout: - .cycles: string" }, compare.compare("s", base, other, { json = true }))
    assert.same({ "s stdout: - .cycles: string", "s stdout: - .settings.environment_variables: array",
      "s stdout: - .settings: object", "s stdout: - : object", 's stdout: + not JSON: (blob "\\<n>")' },
      compare.compare("s", base, result(0, '(blob "\\00")', base.stderr), { json = true }))
  end)

  it("the element shape of arrays non-empty on both sides, not of an empty one", function()
    local a = result(0, '{"g":[{"i32":1}]}')
    assert.same({ "s stdout: + .g[].i64: number" },
      compare.compare("s", a, result(0, '{"g":[{"i32":1},{"i64":2}]}'), { json = true }))
    assert.same({}, compare.compare("s", result(0, '{"g":[]}'), result(0, '{"g":[{"i64":2}]}'), { json = true }))
  end)

  it("a text line and a stderr line", function()
    local a = result(1, "Canister Id: rrkah-fqaaa-aaaaa-aaaaq-cai\n  Environment Variables: N/A\n",
      "Error: Canister ryjl3-tyaaa-aaaaa-aaaba-cai was not found.\n")
    local b = result(1, "Canister Id: uucx7-3qaaa-aaaaa-aatua-cai\n  Environment Variables:\n",
      "Error: Canister u5b4d-nyaaa-aaaaa-aatvq-cai was not found.\nCaused by:\n")
    assert.same({ "t stdout: -   Environment Variables: N/A", "t stdout: +   Environment Variables:",
      "t stderr: + Caused by:" }, compare.compare("t", a, b))
  end)

  it("a download layout: a file's mode, a blob's size, an extra file", function()
    local real, sim = helpers.tmpdir(), helpers.tmpdir()
    for _, d in ipairs({ real, sim }) do
      helpers.sh("mkdir -p " .. d .. "/snap/wasm_chunk_store && umask 022 && : > " .. d .. "/snap/.lock")
      helpers.write(d .. "/snap/metadata.json", '{"globals":[{"i32":1}]}')
    end
    helpers.write(real .. "/snap/wasm_memory.bin", "abcd")
    helpers.write(sim .. "/snap/wasm_memory.bin", "abc")
    helpers.write(sim .. "/snap/.download_progress.json", "{}")
    helpers.sh("chmod 644 " .. real .. "/snap/.lock && chmod 600 " .. sim .. "/snap/.lock && chmod 644 "
      .. real .. "/snap/wasm_memory.bin " .. sim .. "/snap/wasm_memory.bin " .. sim .. "/snap/.download_progress.json")
    local diffs = compare.compare("d", result(0), result(0), { layout = { real, sim } })
    table.sort(diffs)
    assert.same({ "d layout: + snap/.download_progress.json: file 0644", "d layout: + snap/.lock: file 0600",
      "d layout: + snap/wasm_memory.bin: file 0644 3 bytes", "d layout: - snap/.lock: file 0644",
      "d layout: - snap/wasm_memory.bin: file 0644 4 bytes" }, diffs)
    helpers.cleanup()
  end)

  it("lets an allowed difference pass, noting it was met, and keeps any other", function()
    local met = {}
    local left = compare.unexpected({ "a", "b" }, { a = true }, met)
    assert.same({ "b" }, left)
    assert.same({ a = true }, met)
  end)
end)
