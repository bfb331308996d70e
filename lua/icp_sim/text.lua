--- The texts icp 1.5.0 prints: sizes, timestamps, grouped numbers, and the
-- replica's reject messages wrapped the way icp wraps them.
local json = require("fleetsnap.engine").json

local M = {}

--- "<n> B" below 1 KiB, else the largest binary unit with a value >= 1 and
-- the shortest round-trip float without a trailing ".0" ("3.2717514038085938 MiB").
function M.size(n)
  if n < 1024 then
    return string.format("%d B", n)
  end
  local units = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" }
  local v, u = n / 1024.0, 1
  while v >= 1024 and u < #units do
    v = v / 1024
    u = u + 1
  end
  return json.encode(v):gsub("%.0$", "") .. " " .. units[u]
end

--- "YYYY-MM-DD HH:MM:SS UTC" of a nanosecond timestamp.
function M.timestamp(ns)
  return os.date("!%Y-%m-%d %H:%M:%S", ns // 1000000000) .. " UTC"
end

--- Decimal digits grouped by "_" in threes, as Candid nats display.
function M.grouped(n)
  local s = string.format("%d", n)
  local out = s:reverse():gsub("(%d%d%d)", "%1_"):reverse()
  return (out:gsub("^_", ""))
end

local DOCS = "http://internetcomputer.org/docs/current/references/execution-errors"

local REJECT_CODES = {
  ["1"] = "SysFatal", ["2"] = "SysTransient", ["3"] = "DestinationInvalid", ["4"] = "CanisterReject",
  ["5"] = "CanisterError",
}

--- The replica's message for a reject: `kind` and its parameters.
function M.reject_message(code, params)
  params = params or {}
  local cid = params.canister or "aaaaa-aa"
  if code == "IC0301" then
    return string.format("Canister %s not found.\nCheck the ICP dashboard to ensure the canister exists. "
      .. "See documentation: %s#canister-not-found", cid, DOCS)
  elseif code == "IC0512" then
    return string.format("Only the controllers of the canister %s can control it.\nCanister's controllers: %s\n"
      .. "Sender's ID: %s\nExecute this call from a controller of the target canister or add the current caller as "
      .. "a controller. See documentation: %s#invalid-controller", cid, table.concat(params.controllers or {}, " "),
      params.sender or "2vxsx-fae", DOCS)
  elseif code == "IC0305" then
    return string.format("Could not find the snapshot ID %s for canister %s.\nUse the `list_canister_snapshot` API "
      .. "to see which snapshots are present. See documentation: %s#canister-snapshot-not-found",
      params.snapshot or (cid .. "-0"), cid, DOCS)
  elseif code == "IC0406" and params.reason == "limit" then
    return string.format("Canister %s has reached the maximum number of snapshots allowed: %d.\nConsider deleting an "
      .. "unnecessary snapshot of the specified canister before creating a new one. See documentation: "
      .. "canister-snapshot-limit-exceeded", cid, params.limit or 10)
  elseif code == "IC0406" and params.reason == "not-loadable" then
    return string.format("Snapshot %s is not currently loadable on the specified canister %s. Try again later. "
      .. "The call should succeed if you wait sufficiently long (usually ten minutes).", params.snapshot, cid)
  elseif code == "IC0406" and params.reason == "ownership" then
    return string.format("The snapshot %s does not belong to canister %s.\nUse the `list_canister_snapshot` API to "
      .. "see which snapshots are present. See documentation: %s#canister-snapshot-invalid-ownership",
      params.snapshot, cid, DOCS)
  elseif code == "IC0536" then
    return string.format("Canister has no %s method '%s'", params.query and "query" or "update", params.method or "?")
  elseif code == "IC0207" then
    return "Canister snapshotting failed with: `Canister " .. cid .. " is out of cycles`\nTry sending more cycles "
      .. "with the request. See documentation: " .. DOCS .. "#canister-out-of-cycles"
  elseif code == "IC0210" then
    return string.format("Canister %s is heap delta rate limited: current delta debit is 100, but limit is 10.\n"
      .. "Try waiting a few seconds before retrying the operation. See documentation: %s#heap-delta-rate-limited",
      cid, DOCS)
  elseif code == "IC0409" then
    return "Only canister snapshots created by metadata upload can be mutated."
  end
  return string.format("Simulated reject %s for canister %s.", code, cid)
end

local function indent(text, pad)
  return (text:gsub("\n", "\n" .. pad))
end

--- stderr of an icp command that the replica rejected (§1.5 of the
-- reference); `query` calls carry no "direct update call failed" prefix.
function M.reject(code, params)
  local rc = REJECT_CODES[code:sub(4, 4)] or "CanisterError"
  local inner = string.format("The replica returned a rejection error: reject code %s, reject message %s, "
    .. "error code Some(\"%s\")", rc, M.reject_message(code, params), code)
  if params and params.query then
    return "Error: " .. inner .. "\n"
  end
  return "Error: direct update call failed: " .. inner .. "\n\nCaused by:\n    " .. indent(inner, "    ") .. "\n"
end

--- stderr of a transport failure of an update call to canister `cid`.
function M.transport(url, cid)
  local inner = string.format("An error happened during communication with the replica: error sending request for "
    .. "url (%s/api/v4/canister/%s/call)", url, cid)
  return "Error: direct update call failed: " .. inner .. "\n\nCaused by:\n    " .. inner .. "\n", inner
end

function M.http(status)
  local reason = status == 429 and "Too Many Requests" or "Service Unavailable"
  local inner = string.format("The replica returned an HTTP Error: Http Error: status %d %s, content type "
    .. "\"text/plain\", content: %s", status, reason, reason)
  return "Error: direct update call failed: " .. inner .. "\n\nCaused by:\n    " .. inner .. "\n", inner
end

--- An error with several causes, numbered as anyhow prints them.
function M.chain(top, causes)
  if #causes == 0 then
    return "Error: " .. top .. "\n"
  end
  if #causes == 1 then
    return "Error: " .. top .. "\n\nCaused by:\n    " .. indent(causes[1], "    ") .. "\n"
  end
  local lines = { "Error: " .. top, "", "Caused by:" }
  for i, c in ipairs(causes) do
    lines[#lines + 1] = string.format("    %d: %s", i - 1, indent(c, "       "))
  end
  return table.concat(lines, "\n") .. "\n"
end

return M
