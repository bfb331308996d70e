local text = require "icp_sim.text"

describe("sim text.size", function()
  it("prints sizes as icp does", function()
    assert.equal("1023 B", text.size(1023))
    assert.equal("1 KiB", text.size(1024))
    assert.equal("1.5 KiB", text.size(1536))
    assert.equal("976.5625 KiB", text.size(1000000))
    assert.equal("3.2717514038085938 MiB", text.size(3430680))
    assert.equal("5.000000000931323 GiB", text.size(5368709121))
  end)
end)

describe("sim text.timestamp and grouped", function()
  it("formats nanosecond timestamps in UTC", function()
    assert.equal("2025-11-22 02:40:00 UTC", text.timestamp(1763779200123456790))
    assert.equal("1970-01-01 00:00:00 UTC", text.timestamp(0))
  end)

  it("groups digits by three with underscores", function()
    assert.equal("2_592_000", text.grouped(2592000))
    assert.equal("0", text.grouped(0))
    assert.equal("999", text.grouped(999))
  end)
end)

describe("sim text.reject", function()
  it("wraps the limit reject exactly as icp does", function()
    local want = "Error: direct update call failed: The replica returned a rejection error: reject code "
      .. "CanisterReject, reject message Canister ryjl3-tyaaa-aaaaa-aaaba-cai has reached the maximum number of "
      .. "snapshots allowed: 10.\nConsider deleting an unnecessary snapshot of the specified canister before creating "
      .. "a new one. See documentation: canister-snapshot-limit-exceeded, error code Some(\"IC0406\")\n\nCaused by:\n"
      .. "    The replica returned a rejection error: reject code CanisterReject, reject message Canister "
      .. "ryjl3-tyaaa-aaaaa-aaaba-cai has reached the maximum number of snapshots allowed: 10.\n    Consider deleting "
      .. "an unnecessary snapshot of the specified canister before creating a new one. See documentation: "
      .. "canister-snapshot-limit-exceeded, error code Some(\"IC0406\")\n"
    assert.equal(want, text.reject("IC0406", { canister = "ryjl3-tyaaa-aaaaa-aaaba-cai", reason = "limit",
      limit = 10 }))
  end)

  it("maps the first digit of the code to the reject code", function()
    assert.matches("reject code DestinationInvalid", text.reject("IC0301", { canister = "aaaaa-aa" }))
    assert.matches("reject code CanisterError", text.reject("IC0512", { canister = "aaaaa-aa" }))
    assert.matches("reject code SysTransient", text.reject("IC0207", { canister = "aaaaa-aa" }))
  end)
end)

describe("sim text.chain", function()
  it("numbers several causes", function()
    assert.equal("Error: top\n\nCaused by:\n    0: a\n    1: b\n", text.chain("top", { "a", "b" }))
  end)
end)
