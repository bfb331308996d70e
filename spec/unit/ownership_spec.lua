-- Which recorded connections name the same network (exec/ownership.lua):
-- a finished backup's snapshot ids prove ownership only there.
local ownership = require "fleetsnap.exec.ownership"

describe("ownership.same_network", function()
  it("holds for the same simulated fleet home", function()
    assert.is_true(ownership.same_network({ sim = "/h" }, { sim = "/h" }))
  end)

  it("fails for another simulated fleet home", function()
    assert.is_false(ownership.same_network({ sim = "/h" }, { sim = "/other" }))
  end)

  it("fails for the same network address under another root key (another replica there)", function()
    assert.is_false(ownership.same_network({ network = "http://127.0.0.1:4943", root_key = "aa" },
      { network = "http://127.0.0.1:4943", root_key = "bb" }))
  end)

  it("fails for another environment", function()
    assert.is_false(ownership.same_network({ environment = "local" }, { environment = "staging" }))
  end)

  it("ignores the identity and the icp binary", function()
    assert.is_true(ownership.same_network({ environment = "ic", identity = "ops", icp = "/usr/bin/icp" },
      { environment = "ic", identity = "backup" }))
  end)

  it("fails when either connection is unknown", function()
    assert.is_false(ownership.same_network(nil, { sim = "/h" }))
    assert.is_false(ownership.same_network({ sim = "/h" }, nil))
    assert.is_false(ownership.same_network(nil, nil))
  end)
end)
