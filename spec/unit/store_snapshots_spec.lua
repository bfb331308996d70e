-- fleetsnap.store.snapshots: the repository's snapshot list read as
-- fleetsnap backups (tags, restic's times, grouping, `latest`).
local snapshots = require "fleetsnap.store.snapshots"

local function snap(id, backup_id, time, extra)
  local s = { id = id, time = time, paths = { "/srv/b/" .. tostring(backup_id) }, hostname = "r1",
    tags = { "fleetsnap", "backup_id=" .. tostring(backup_id), "root=r1", "policy=consistent" } }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

describe("snapshots.time_ns", function()
  it("reads restic's UTC times with and without nanoseconds", function()
    assert.equal(1796032800000000000, snapshots.time_ns("2026-11-30T10:00:00Z"))
    assert.equal(1796032800123456789, snapshots.time_ns("2026-11-30T10:00:00.123456789Z"))
    assert.equal(1796032800500000000, snapshots.time_ns("2026-11-30T10:00:00.5Z"))
  end)

  it("applies a zone offset whatever this host's time zone", function()
    assert.equal(snapshots.time_ns("2026-11-30T10:00:00Z"), snapshots.time_ns("2026-11-30T11:00:00+01:00"))
    assert.equal(snapshots.time_ns("2026-11-30T10:00:00Z"), snapshots.time_ns("2026-11-30T05:30:00-04:30"))
  end)

  it("refuses what is not an RFC 3339 time", function()
    assert.is_nil(snapshots.time_ns("2026-11-30 10:00:00"))
    assert.is_nil(snapshots.time_ns("2026-11-30T10:00:00"))
    assert.is_nil(snapshots.time_ns("2026-11-30T10:00:00.Z"))
    assert.is_nil(snapshots.time_ns(42))
  end)
end)

describe("snapshots.backups", function()
  it("keeps only snapshots tagged fleetsnap with a backup_id, a path and a time", function()
    local list = { snap("a", "b1", "2026-11-30T10:00:00Z"), snap("b", "b2", "2026-11-30T11:00:00Z", { tags = { "x" } }),
      snap("c", "b3", "2026-11-30T11:00:00Z", { tags = { "fleetsnap" } }),
      snap("d", "b4", "not a time"), snap("e", "b5", "2026-11-30T11:00:00Z", { paths = {} }) }
    local out = snapshots.backups(list)
    assert.equal(1, #out)
    assert.equal("b1", out[1].backup_id)
  end)

  it("groups a backup's snapshots, newest first, and orders backups newest first", function()
    local out = snapshots.backups({ snap("a", "b1", "2026-11-30T10:00:00Z"), snap("b", "b2", "2026-11-30T09:00:00Z"),
      snap("c", "b1", "2026-11-30T10:00:00Z") })
    assert.same({ "b1", "b2" }, { out[1].backup_id, out[2].backup_id })
    assert.same({ "c", "a" }, { out[1].snapshots[1].id, out[1].snapshots[2].id })
  end)
end)

describe("snapshots.find", function()
  local list = snapshots.backups({ snap("a", "b1", "2026-11-30T11:00:00Z"), snap("b", "b2", "2026-11-30T10:00:00Z"),
    snap("c", "b0", "2026-11-30T11:00:00Z") })

  it("takes latest as the newest capture time, a tie to the greater id", function()
    assert.equal("b1", snapshots.find(list, "latest").backup_id)
  end)

  it("finds an id exactly, and says not found otherwise", function()
    assert.equal("b2", snapshots.find(list, "b2").backup_id)
    local b, why, code = snapshots.find(list, "b")
    assert.is_nil(b)
    assert.equal("ENOTFOUND", code)
    assert.matches("no fleetsnap backup b in the repository", why, 1, true)
  end)

  it("needs a root for latest among several roots", function()
    local two = snapshots.backups({ snap("a", "b1", "2026-11-30T11:00:00Z"),
      snap("b", "x1", "2026-11-30T12:00:00Z", { tags = { "fleetsnap", "backup_id=x1", "root=r2" } }) })
    local b, why, code = snapshots.find(two, "latest")
    assert.is_nil(b)
    assert.equal("EUSAGE", code)
    assert.matches("several roots %(r1, r2%)", why)
    assert.equal("b1", snapshots.find(two, "latest", "r1").backup_id)
  end)
end)
