--- Which members' bytes a `backup verify --read-data-subset` re-hashes
-- (restic's convention): `N/T`, the N-th (1-based) of T slices, or `P%`,
-- a seeded random P% of the members.
--
-- A slice is a property of the canister id alone (the first 6 bytes of
-- SHA-256 of its text, big-endian, mod T): it does not depend on the
-- backup's other members or their order, so 1/T..T/T cover every member
-- exactly once, and a member stays in its slice from one backup to the
-- next. A percentage ranks the members by SHA-256 of seed, NUL, canister
-- id and takes the first ceil(P * n / 100): the same seed and members give
-- the same choice on any machine (no PRNG whose sequence a Lua version
-- could change).
local engine = require "fleetsnap.engine"

local M = {}

-- Percentages are kept in hundredths, so that the member count is integer
-- arithmetic (33.33% of 300 is exactly 100, never 100.00000000000001).
local SCALE = 10000

local function bad(text, why)
  return nil, string.format("must be N/T (1 <= N <= T) or P%% (0 <= P <= 100, at most 2 decimals), got '%s'%s",
    text, why and (": " .. why) or "")
end

--- Parses a --read-data-subset value: {kind = "slice", n, t, text} or
-- {kind = "percent", hundredths, text}, or nil and what is wrong (the
-- CLI names its option before it). 0% is allowed: the structural checks alone, no byte read.
function M.parse(text)
  text = tostring(text)
  local n, t = text:match("^(%d+)/(%d+)$")
  if n then
    n, t = math.tointeger(tonumber(n)), math.tointeger(tonumber(t))
    if not n or not t then return bad(text, "too large") end
    if t < 1 then return bad(text, "T must be at least 1") end
    if n < 1 or n > t then return bad(text, "N must be from 1 to T") end
    return { kind = "slice", n = n, t = t, text = n .. "/" .. t }
  end
  local whole, frac = text:match("^(%d+)%.?(%d*)%%$")
  if not whole or #frac > 2 or #whole > 3 then return bad(text) end
  local hundredths = math.tointeger(tonumber(whole)) * 100 + (frac == "" and 0 or
    math.tointeger(tonumber((frac .. "0"):sub(1, 2))))
  if hundredths > 100 * 100 then return bad(text, "more than 100%") end
  return { kind = "percent", hundredths = hundredths, text = text }
end

--- The slice (1..t) canister id `cid` belongs to.
function M.slice_of(cid, t)
  local head = engine.hash.sha256(cid):sub(1, 12)
  return math.tointeger(tonumber(head, 16)) % t + 1
end

--- How many of `total` members P% (in hundredths) chooses: rounded up,
-- so at least one when P > 0 and there is a member.
function M.percent_count(hundredths, total)
  return (hundredths * total + SCALE - 1) // SCALE
end

--- A fresh seed (16 hex digits from /dev/urandom; the clock where there is
-- none), for a P% run that was given none: it is reported, so that the
-- same members can be chosen again with --seed.
function M.new_seed()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(8)
  if f then f:close() end
  if not bytes or #bytes ~= 8 then bytes = tostring(os.time()) .. tostring(os.clock()) end
  return engine.hash.sha256(bytes):sub(1, 16)
end

--- The set (cid -> true) of `ids` (canister ids) that `spec` (M.parse's)
-- chooses; `seed` (text) is required for a percentage.
function M.choose(ids, spec, seed)
  local chosen = {}
  if spec.kind == "slice" then
    for _, cid in ipairs(ids) do
      if M.slice_of(cid, spec.t) == spec.n then chosen[cid] = true end
    end
    return chosen
  end
  assert(seed, "a percentage needs a seed")
  local ranked = {}
  for i, cid in ipairs(ids) do ranked[i] = { cid = cid, key = engine.hash.sha256(seed .. "\0" .. cid) } end
  -- The id breaks a tie, so that the choice never depends on the order given.
  table.sort(ranked, function(a, b)
    if a.key ~= b.key then return a.key < b.key end
    return a.cid < b.cid
  end)
  for i = 1, M.percent_count(spec.hundredths, #ids) do chosen[ranked[i].cid] = true end
  return chosen
end

return M
