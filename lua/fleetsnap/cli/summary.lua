--- The summary of a finished backup or restore: members, bytes, duration
-- and throughput, the downtime window, the longest member downtime,
-- snapshots taken and deleted. One table, which `--json` prints as the
-- result's `summary` and the text output as a block under the result line.
local engine = require "fleetsnap.engine"
local units = require "fleetsnap.units"

local json = engine.json

local M = {}

local function nullable(v)
  if v == nil then return json.null end
  return v
end

--- A backup's summary: its manifest's fleetsnap section and the run's
-- tracker (nil when this run did nothing: the backup was complete).
function M.backup(fsn, tracker)
  local bytes, longest, who, ids = 0, nil, nil, {}
  for _, m in ipairs(fsn.members) do
    bytes = bytes + m.bytes
    ids[#ids + 1] = m.snapshot_id
    local d = m.downtime_ns
    if d ~= nil and d ~= json.null and (not longest or d > longest) then longest, who = d, m.canister_id end
  end
  return {
    members = #fsn.members, bytes = bytes,
    duration_ns = tracker and (engine.monotonic_ns() - tracker.started) or json.null,
    window_ns = fsn.consistency_window.window_ns,
    longest_downtime_ns = nullable(longest), longest_downtime_canister = nullable(who),
    snapshots_taken = tracker and tracker.snapshots or 0, snapshots_deleted = tracker and tracker.deleted or 0,
    snapshot_ids = json.array(ids),
  }
end

--- A restore's summary: its plan, its result and the run's tracker.
function M.restore(plan, res, tracker)
  local bytes = 0
  for _, m in ipairs(plan.members) do bytes = bytes + (m.bytes or 0) end
  local who, longest
  if tracker then who, longest = tracker:longest_downtime() end
  return {
    members = #plan.members, bytes = bytes,
    duration_ns = tracker and (engine.monotonic_ns() - tracker.started) or json.null,
    window_ns = nullable(res.window_ns),
    longest_downtime_ns = nullable(longest), longest_downtime_canister = nullable(who),
    snapshots_taken = tracker and tracker.snapshots or 0, snapshots_deleted = tracker and tracker.deleted or 0,
  }
end

--- An undo's summary: the safety snapshots' sizes are not the tool's to
-- know (the IC took them), so bytes is null; the window is the events'.
function M.undo(plan, tracker)
  local who, longest
  if tracker then who, longest = tracker:longest_downtime() end
  return {
    members = #plan.members, bytes = json.null,
    duration_ns = tracker and (engine.monotonic_ns() - tracker.started) or json.null,
    window_ns = json.null,
    longest_downtime_ns = nullable(longest), longest_downtime_canister = nullable(who),
    snapshots_taken = tracker and tracker.snapshots or 0, snapshots_deleted = tracker and tracker.deleted or 0,
  }
end

local function present(v)
  return v ~= nil and v ~= json.null
end

--- The text block of a summary; `window` names the window's kind.
function M.text(s, window)
  local list = { { "members", tostring(s.members) } }
  if present(s.bytes) then list[#list + 1] = { "bytes", units.bytes(s.bytes) } end
  if present(s.duration_ns) then
    local d = units.duration(s.duration_ns)
    if s.duration_ns > 0 and present(s.bytes) and s.bytes > 0 then
      d = d .. " (" .. units.rate(s.bytes * 1e9 / s.duration_ns) .. ")"
    end
    list[#list + 1] = { "duration", d }
  end
  list[#list + 1] = { window, present(s.window_ns) and units.duration(s.window_ns) or "n/a" }
  if present(s.longest_downtime_ns) then
    list[#list + 1] = { "longest downtime", units.duration(s.longest_downtime_ns) .. " ("
      .. s.longest_downtime_canister .. ")" }
  end
  list[#list + 1] = { "snapshots", string.format("%d taken, %d deleted", s.snapshots_taken, s.snapshots_deleted) }
  local out = {}
  for _, r in ipairs(list) do out[#out + 1] = string.format("  %-20s %s\n", r[1], r[2]) end
  return table.concat(out)
end

return M
