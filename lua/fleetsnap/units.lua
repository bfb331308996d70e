--- Human units for text output: sizes in binary units ("48.0 MiB"),
-- durations ("0.445 s", "2 min 03 s"), rates. JSON keeps exact integers.
local M = {}

local SIZES = { "KiB", "MiB", "GiB", "TiB", "PiB" }

--- n bytes as "512 B", "1.5 KiB", "48.0 MiB".
function M.bytes(n)
  if n < 1024 then return string.format("%d B", n) end
  local v, i = n / 1024, 1
  while v >= 1024 and i < #SIZES do
    v, i = v / 1024, i + 1
  end
  return string.format("%.1f %s", v, SIZES[i])
end

--- ns as "0.445 s" under a minute, "2 min 03 s", "1 h 02 min".
function M.duration(ns)
  local s = ns / 1e9
  if s < 60 then return string.format("%.3f s", s) end
  local whole = math.floor(s)
  if whole < 3600 then return string.format("%d min %02d s", whole // 60, whole % 60) end
  return string.format("%d h %02d min", whole // 3600, (whole % 3600) // 60)
end

--- ns as a clock, "0:07", "12:34", "1:02:03" (the progress line's).
function M.clock(ns)
  local s = math.floor(ns / 1e9)
  if s < 3600 then return string.format("%d:%02d", s // 60, s % 60) end
  return string.format("%d:%02d:%02d", s // 3600, (s % 3600) // 60, s % 60)
end

--- bytes per second as "48.3 MiB/s".
function M.rate(bps)
  return M.bytes(math.floor(bps)) .. "/s"
end

return M
