--- Human units for text output: byte sizes, durations and UTC times. One
-- formatter for every command, so that the same size reads the same in
-- `backup create`, `list`, `inspect` and `diff`; JSON keeps exact integers
-- and never goes through here.
local M = {}

local BINARY = { "KiB", "MiB", "GiB", "TiB", "PiB" }

local function absent(v)
  -- json.null is a light userdata sentinel; a missing value reads as nil.
  return v == nil or type(v) ~= "number"
end

--- Bytes as "512 B", "1.5 KiB", "48.0 MiB", "1.5 GiB" (binary units, one
-- decimal from KiB up); "-" when unknown.
function M.bytes(n)
  if absent(n) then return "-" end
  if n < 0 then return "-" .. M.bytes(-n) end
  if n < 1024 then return string.format("%d B", n) end
  local v, unit = n / 1024, BINARY[1]
  for i = 2, #BINARY do
    -- Rounded as printed, so that 1023.96 KiB reads "1.0 MiB", not "1024.0 KiB".
    if v < 1023.95 then break end
    v, unit = v / 1024, BINARY[i]
  end
  return string.format("%.1f %s", v, unit)
end

--- A size change: "+1.5 MiB", "-512 B", "0 B"; "-" when either is unknown.
function M.bytes_change(a, b)
  if absent(a) or absent(b) then return "-" end
  local d = b - a
  if d == 0 then return "0 B" end
  return (d > 0 and "+" or "-") .. M.bytes(math.abs(d))
end

--- A duration in nanoseconds: "0.445 s" under a minute, "2 min 3 s", then
-- "1 h 2 min"; "n/a" when unknown.
function M.duration(ns)
  if absent(ns) then return "n/a" end
  local s = ns / 1e9
  if s < 60 then return string.format("%.3f s", s) end
  local whole = math.floor(s)
  if whole < 3600 then return string.format("%d min %d s", whole // 60, whole % 60) end
  return string.format("%d h %d min", whole // 3600, whole % 3600 // 60)
end

--- ns as a clock, "0:07", "12:34", "1:02:03" (the progress line's).
function M.clock(ns)
  local s = math.floor(ns / 1e9)
  if s < 3600 then return string.format("%d:%02d", s // 60, s % 60) end
  return string.format("%d:%02d:%02d", s // 3600, (s % 3600) // 60, s % 60)
end

--- Bytes per second as "48.3 MiB/s".
function M.rate(bps)
  return M.bytes(math.floor(bps)) .. "/s"
end

--- A time in ns since the epoch as RFC 3339 UTC with its nanoseconds
-- ("2026-11-30T17:02:51.123456789Z"), for --json; nil when unknown.
function M.rfc3339(ns)
  if absent(ns) then return nil end
  return os.date("!%Y-%m-%dT%H:%M:%S", ns // 1000000000) .. string.format(".%09dZ", ns % 1000000000)
end

--- A time in nanoseconds since the epoch as UTC RFC 3339 / ISO 8601,
-- seconds precision ("2026-11-30T17:02:51Z"); nil when unknown.
function M.utc(ns)
  if absent(ns) then return nil end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", ns // 1000000000)
end

--- Text rows as a table with one space-padded column each, the last column
-- unpadded (a reason or a list may be long). `rows` are lists of strings,
-- the header first.
function M.table(rows, indent)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, #c) end
  end
  local out = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      cells[i] = i < #r and (c .. string.rep(" ", widths[i] - #c)) or c
    end
    out[#out + 1] = (indent or "") .. table.concat(cells, "  ")
  end
  return table.concat(out, "\n") .. "\n"
end

return M
