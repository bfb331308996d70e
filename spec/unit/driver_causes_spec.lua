-- The driver's reading of icp's `Caused by:` block, on texts the real icp
-- 1.5.0 printed through the test replica (spec/e2e/fidelity_spec.lua).
local icp = require "fleetsnap.drivers.icp"

-- A transfer error: numbered causes, each continued on a line indented
-- under its text, the second repeating the first's source.
local TRANSFER = [[
Downloading snapshot 000000000000000900000000000000020101 from canister ryjl3-tyaaa-aaaaa-aaaba-cai (ryjl3-tyaaa-aaaaa-aaaba-cai)
Error: Failed to read snapshot metadata for canister ryjl3-tyaaa-aaaaa-aaaba-cai

Caused by:
    0: direct update call failed: The replica returned a rejection error: reject code DestinationInvalid, reject message Could not find the snapshot ID ryjl3-tyaaa-aaaaa-aaaba-cai-9 for canister ryjl3-tyaaa-aaaaa-aaaba-cai.
       Use the `list_canister_snapshot` API to see which snapshots are present. See documentation: http://internetcomputer.org/docs/current/references/execution-errors#canister-snapshot-not-found, error code Some("IC0305")
    1: The replica returned a rejection error: reject code DestinationInvalid, reject message Could not find the snapshot ID ryjl3-tyaaa-aaaaa-aaaba-cai-9 for canister ryjl3-tyaaa-aaaaa-aaaba-cai.
       Use the `list_canister_snapshot` API to see which snapshots are present. See documentation: http://internetcomputer.org/docs/current/references/execution-errors#canister-snapshot-not-found, error code Some("IC0305")
]]

-- One cause over several lines (IC0512 names controllers and sender).
local NOT_CONTROLLER = [[
Error: direct update call failed: The replica returned a rejection error: reject code CanisterError, reject message Only the controllers of the canister ryjl3-tyaaa-aaaaa-aaaba-cai can control it.
Canister's controllers: az5n6-6msdx-yefg4-3zvea-55oey-2osfd-allv6-2kkis-fhfh2-7ip3p-hae rrkah-fqaaa-aaaaa-aaaaq-cai
Sender's ID: 2vxsx-fae
Execute this call from a controller of the target canister or add the current caller as a controller. See documentation: http://internetcomputer.org/docs/current/references/execution-errors#invalid-controller, error code Some("IC0512")

Caused by:
    The replica returned a rejection error: reject code CanisterError, reject message Only the controllers of the canister ryjl3-tyaaa-aaaaa-aaaba-cai can control it.
    Canister's controllers: az5n6-6msdx-yefg4-3zvea-55oey-2osfd-allv6-2kkis-fhfh2-7ip3p-hae rrkah-fqaaa-aaaaa-aaaaq-cai
    Sender's ID: 2vxsx-fae
    Execute this call from a controller of the target canister or add the current caller as a controller. See documentation: http://internetcomputer.org/docs/current/references/execution-errors#invalid-controller, error code Some("IC0512")
]]

local IDENTITY = "Error: failed to load identity\n\nCaused by:\n    no identity found with name `nobody`\n"

describe("driver: icp's Caused by block", function()
  it("keeps a numbered cause whole (continuation lines joined) and drops the repeated source", function()
    local causes = icp.causes(TRANSFER)
    assert.equal(1, #causes)
    assert.matches("^direct update call failed: The replica returned a rejection error: .* Could not find the "
      .. "snapshot ID ryjl3%-tyaaa%-aaaaa%-aaaba%-cai%-9 for canister ryjl3%-tyaaa%-aaaaa%-aaaba%-cai%. Use the "
      .. "`list_canister_snapshot` API .* error code Some%(\"IC0305\"%)$", causes[1])
  end)

  it("reads an unnumbered multi-line cause as one cause", function()
    local causes = icp.causes(NOT_CONTROLLER)
    assert.equal(1, #causes)
    assert.matches("can control it%. Canister's controllers: az5n6%-.- Sender's ID: 2vxsx%-fae Execute this call",
      causes[1])
  end)

  it("keeps an identity error's reason", function()
    assert.same({ "no identity found with name `nobody`" }, icp.causes(IDENTITY))
  end)

  it("keeps distinct numbered causes apart", function()
    local text = "Error: Failed to upload snapshot metadata\n\nCaused by:\n    0: upload failed\n"
      .. "    1: has reached the maximum number of snapshots allowed\n"
    assert.same({ "upload failed", "has reached the maximum number of snapshots allowed" }, icp.causes(text))
  end)

  it("puts the causes into the classified message", function()
    local err = icp.classify("snapshot_download", { canister = "ryjl3-tyaaa-aaaaa-aaaba-cai" },
      { status = 1, stderr = TRANSFER })
    assert.equal("SNAPSHOT_GONE", err.code)
    assert.matches("Failed to read snapshot metadata for canister ryjl3%-tyaaa%-aaaaa%-aaaba%-cai %(caused by: "
      .. "direct update call failed: .*IC0305.*%)$", err.message)
    err = icp.classify("stop", { canister = "x" }, { status = 1, stderr = IDENTITY })
    assert.matches("failed to load identity %(caused by: no identity found with name `nobody`%)$", err.message)
  end)
end)

describe("driver: classify", function()
  local FULL = "Error: Failed to write to file /b/.staging/x/wasm_memory.bin\n\nCaused by:\n"
    .. "    No space left on device (os error 28)\n"

  it("reads a full local disk under icp as the file system's failure (exit 8), its cause kept", function()
    local err = icp.classify("snapshot_download", { canister = "x" }, { status = 1, stderr = FULL })
    assert.equal("LOCAL_IO", err.code)
    assert.equal("EIO", require("fleetsnap.errors").DRIVER[err.code])
    assert.matches("%(caused by: No space left on device %(os error 28%)%)$", err.message)
  end)

  it("reads a read-only file system and a quota as the file system's failure", function()
    for _, cause in ipairs({ "Read-only file system (os error 30)", "Disk quota exceeded (os error 122)" }) do
      local err = icp.classify("snapshot_download", { canister = "x" },
        { status = 1, stderr = "Error: Failed to write to file /b/m\n\nCaused by:\n    " .. cause .. "\n" })
      assert.equal("LOCAL_IO", err.code, cause)
    end
  end)

  it("leaves other OS errors to icp's failure (a missing upload file is not a full disk)", function()
    local err = icp.classify("snapshot_upload", { canister = "x" }, { status = 1, stderr = "Error: Failed to get file "
      .. "size at /b/wasm_module.bin\n\nCaused by:\n    No such file or directory (os error 2)\n" })
    assert.equal("ICP_FAILED", err.code)
    err = icp.classify("stop", { canister = "x" }, { status = 1, stderr = IDENTITY })
    assert.equal("ICP_FAILED", err.code)
  end)
end)
