--- What a long run has done so far, from its events: operations done of
-- total, bytes moved of the total known, the rate, an ETA, how many
-- canisters this run holds stopped right now, and what the summary block
-- needs (snapshots taken and deleted, each member's downtime as seen).
-- Pure: the clock is passed in, so a spec can drive it.
local M = {}
M.__index = M

-- The rate is measured over this window (ns): recent, not the whole run's.
local RATE_WINDOW = 5 * 1000000000

-- At most one progress line or event per this many ns (10 a second).
M.INTERVAL = 100000000

--- A tracker for a run that starts at `now_ns`.
function M.new(now_ns)
  return setmetatable({ started = now_ns, done = 0, total = 0, bytes_done = 0, bytes_total = 0,
    bytes_known = false, stopped = 0, snapshots = 0, deleted = 0, samples = {}, stopped_at = {},
    downtime = {}, last_shown = nil }, M)
end

--- Takes one event (with `at`, ns). Returns true when the numbers moved.
function M:take(e)
  local at = e.at
  if e.type == "created" or e.type == "restore" then
    -- Phase barriers are order, not work.
    self.total = (e.operations or 0) - (e.barriers or 0)
    if e.bytes then self.bytes_total, self.bytes_known = e.bytes, true end
    return true
  end
  if e.type == "retention" then
    self.deleted = self.deleted + #(e.deleted or {})
    return false
  end
  if e.type == "contained" then
    self.stopped = math.max(0, self.stopped - #(e.started or {}))
    return true
  end
  if e.type ~= "operation-completed" or e.kind == "barrier" then return false end
  self.done = self.done + 1
  if e.kind == "stop" then
    self.stopped = self.stopped + 1
    self.stopped_at[e.canister] = at
  elseif e.kind == "start" then
    self.stopped = math.max(0, self.stopped - 1)
    local since = self.stopped_at[e.canister]
    if since then self.downtime[e.canister] = at - since end
  elseif e.kind == "snapshot" or e.kind == "upload" then
    -- An upload makes a snapshot on the target too.
    self.snapshots = self.snapshots + 1
    -- A backup learns its bytes as its snapshots are taken.
    if e.snapshot_bytes and not self.bytes_known then self.bytes_total = self.bytes_total + e.snapshot_bytes end
  elseif e.kind == "delete" then
    self.deleted = self.deleted + 1
  end
  if e.bytes and (e.kind == "download" or e.kind == "upload") then
    self.bytes_done = self.bytes_done + e.bytes
    local s = self.samples
    s[#s + 1] = { at = at, bytes = self.bytes_done }
    while #s > 2 and at - s[1].at > RATE_WINDOW do table.remove(s, 1) end
  end
  return true
end

--- Bytes per second over the last few seconds of transfers (0 before two
-- have finished).
function M:rate()
  local s = self.samples
  if #s < 2 or s[#s].at <= s[1].at then
    if #s == 1 and s[1].at > self.started then
      return s[1].bytes * 1e9 / (s[1].at - self.started)
    end
    return 0
  end
  return (s[#s].bytes - s[1].bytes) * 1e9 / (s[#s].at - s[1].at)
end

--- Nanoseconds left, or nil while nothing tells: by bytes when their total
-- and a rate are known, else by operations at the pace so far.
function M:eta(now_ns)
  local rate = self:rate()
  if self.bytes_total > 0 and rate > 0 and self.bytes_done < self.bytes_total then
    return math.floor((self.bytes_total - self.bytes_done) / rate * 1e9)
  end
  if self.done > 0 and self.total > self.done then
    return math.floor((now_ns - self.started) * (self.total - self.done) / self.done)
  end
  if self.total > 0 and self.done >= self.total then return 0 end
  return nil
end

--- The fields of a `progress` event (the NDJSON stream's) at now_ns.
function M:fields(now_ns)
  local eta = self:eta(now_ns)
  return { type = "progress", elapsed_ns = now_ns - self.started, done = self.done, total = self.total,
    bytes_done = self.bytes_done, bytes_total = self.bytes_total, rate_bps = math.floor(self:rate()),
    eta_ns = eta, stopped = self.stopped }
end

--- Whether a line (or event) is due at now_ns: at most one per INTERVAL.
function M:due(now_ns)
  if self.last_shown and now_ns - self.last_shown < M.INTERVAL then return false end
  self.last_shown = now_ns
  return true
end

--- The longest downtime seen, as canister, ns (nil when none).
function M:longest_downtime()
  local best, who = nil, nil
  for cid, ns in pairs(self.downtime) do
    if not best or ns > best or (ns == best and cid < who) then best, who = ns, cid end
  end
  return who, best
end

return M
