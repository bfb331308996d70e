--- The comparison of spec/e2e/fidelity_spec.lua: one command's result from
-- the real icp 1.5.0 and from icp-sim reduced to what must agree (exit code,
-- stdout shape, normalised stderr, a download's layout) and the differences
-- listed one per line, so an assertion failure reads as a diff.
local engine = require "fleetsnap.engine"

local json, fs = engine.json, engine.fs

local M = {}

-- Order matters: the longest, most specific forms first, so a snapshot id
-- is not read as a hash prefix and a principal's digits are not numbers.
local RULES = {
  -- tmp directories of either side (paths in messages)
  { "/tmp/[%w%-%._/]+", "<path>" },
  { "https?://[%w%.%-:%[%]]+", "<url>" },
  -- ISO 8601 and icp's "YYYY-MM-DD HH:MM:SS[.fff] UTC" timestamps (the zone
  -- word stays: it is part of icp's format)
  { "%d%d%d%d%-%d%d%-%d%d[T ]%d%d:%d%d:%d%d[%.%d]*Z?", "<time>" },
  { "%f[%w]%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x" ..
    "%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%f[^%w]", "<hash>" },
  { "%f[%w]" .. string.rep("%x", 36) .. "%f[^%w]", "<snapshot>" },
  -- principals: groups of 5 (the last 1-5) base32 characters joined by dashes
  { "%f[%w][a-z2-7][a-z2-7][a-z2-7][a-z2-7][a-z2-7]%-[a-z2-7%-]+%f[^%w%-]", "<principal>" },
  { "0x%x+", "<hex>" },
  { "%f[%w]%x*%d%x*[a-f]%x*%f[^%w]", "<hex>" },
  { "%f[%w]%x*[a-f]%x*%d%x*%f[^%w]", "<hex>" },
  -- numbers standing alone, icp's `_` grouping and decimals included (sizes,
  -- cycles, versions); digits inside a word stay (IC0305 must not become
  -- IC<n>: the error code is what the comparison is for).
  { "%f[%w]%d[%d_]*%.?%d*%f[^%w]", "<n>" },
}

--- One line with ids, hashes, timestamps, paths and numbers replaced by
-- placeholders; trailing blanks dropped.
function M.normalise_line(line)
  for _, r in ipairs(RULES) do line = line:gsub(r[1], r[2]) end
  return (line:gsub("%s+$", ""))
end

--- A text as its normalised lines (empty lines kept: they are layout).
function M.normalise(text)
  local out = {}
  text = (text or ""):gsub("\n$", "")
  if text == "" then return out end
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do out[#out + 1] = M.normalise_line(line) end
  return out
end

local function type_of(v)
  if v == json.null then return "null" end
  if type(v) == "table" then return json.kind(v) or "object" end
  return type(v)
end

--- The shape of a decoded JSON value: sorted "path: type" lines; array
-- elements share the path `[]` (their shapes merged), so values and lengths
-- do not matter but an element's keys and types do.
function M.json_shape(value)
  local seen = {}
  local function walk(v, path)
    local t = type_of(v)
    seen[path .. ": " .. t] = true
    if t == "array" then
      for _, e in ipairs(v) do walk(e, path .. "[]") end
    elseif t == "object" then
      for k, e in pairs(v) do walk(e, path .. "." .. k) end
    end
  end
  walk(value, "")
  local out = {}
  for k in pairs(seen) do out[#out + 1] = k end
  table.sort(out)
  return out
end

--- Two JSON shapes with the element lines of an array that is empty on the
-- other side dropped: an empty array says nothing about its elements' shape
-- (the fleets' contents differ, e.g. globals), so only arrays with elements
-- on both sides are compared element-wise.
function M.shape_pair(a, b)
  local function index(lines)
    local set = {}
    for _, l in ipairs(lines) do set[l] = true end
    return set
  end
  local sa, sb = index(a), index(b)
  local function has_elements(set, path)
    for l in pairs(set) do
      if l:sub(1, #path + 2) == path .. "[]" then return true end
    end
    return false
  end
  local function keep(lines, other)
    local out = {}
    for _, l in ipairs(lines) do
      local drop = false
      local from = 1
      while true do
        local i = l:find("[]", from, true)
        if not i then break end
        local path = l:sub(1, i - 1)
        if other[path .. ": array"] and not has_elements(other, path) then drop = true break end
        from = i + 2
      end
      if not drop then out[#out + 1] = l end
    end
    return out
  end
  return keep(a, sb), keep(b, sa)
end

--- stdout as compared: the JSON shape when it parses as JSON, else lines.
function M.stdout_form(text, is_json)
  if is_json then
    local ok, v = pcall(json.decode, text)
    if ok and v ~= nil then return M.json_shape(v) end
    return { "not JSON: " .. M.normalise_line((text or ""):sub(1, 80)) }
  end
  return M.normalise(text)
end

local function mode_string(st)
  return string.format("%04o", st.mode & 4095)
end

--- A directory tree as sorted "relative path: kind mode [size]" lines.
-- Blob sizes are kept (the fleets have equal memories); metadata.json's size
-- depends on ids and timestamps, so it is replaced by its JSON shape.
function M.layout(dir, keep_size)
  -- Heap and stable memory have equal sizes in both fleets; a module names
  -- its canister's role and a chunk's name is its hash, so those sizes are
  -- fleet content, not layout.
  keep_size = keep_size or function(rel)
    local name = rel:match("[^/]+$")
    return (name == "wasm_memory.bin" or name == "stable_memory.bin") and not rel:match("wasm_chunk_store/")
  end
  local out = {}
  local function walk(abs, rel)
    for _, name in ipairs(fs.list(abs) or {}) do
      local a, r = abs .. "/" .. name, rel == "" and name or (rel .. "/" .. name)
      local st = assert(fs.lstat(a))
      local shown = M.normalise_line(r)
      if st.type == "directory" then
        out[#out + 1] = shown .. ": dir " .. mode_string(st)
        walk(a, r)
      else
        out[#out + 1] = shown .. ": " .. tostring(st.type) .. " " .. mode_string(st)
          .. (keep_size(r) and (" " .. st.size .. " bytes") or "")
        if name == "metadata.json" then
          local f = assert(io.open(a, "rb"))
          local body = f:read("a")
          f:close()
          for _, l in ipairs(M.json_shape(json.decode(body))) do out[#out + 1] = shown .. " " .. l end
        end
      end
    end
  end
  walk(dir, "")
  table.sort(out)
  return out
end

--- A line diff of two sorted or ordered lists: "- real" / "+ sim" lines for
-- what differs (by position for ordered lists; a longest common
-- subsequence keeps the diff small and readable).
function M.diff(a, b)
  local n, m = #a, #b
  local lcs = {}
  for i = n + 1, 1, -1 do
    lcs[i] = {}
    for j = m + 1, 1, -1 do
      if i > n or j > m then lcs[i][j] = 0
      elseif a[i] == b[j] then lcs[i][j] = lcs[i + 1][j + 1] + 1
      else lcs[i][j] = math.max(lcs[i + 1][j], lcs[i][j + 1]) end
    end
  end
  local out, i, j = {}, 1, 1
  while i <= n or j <= m do
    if i <= n and j <= m and a[i] == b[j] then i, j = i + 1, j + 1
    elseif j > m or (i <= n and lcs[i + 1][j] >= lcs[i][j + 1]) then
      out[#out + 1] = "- " .. a[i]
      i = i + 1
    else
      out[#out + 1] = "+ " .. b[j]
      j = j + 1
    end
  end
  return out
end

--- The differences of one step: `real` and `sim` are process results
-- ({status, stdout, stderr}); opts.json compares stdout as JSON shapes;
-- opts.layout = {real_dir, sim_dir} adds the directory trees. Each
-- difference is "<step> <part>: - real line" / "+ sim line".
function M.compare(step, real, sim, opts)
  opts = opts or {}
  local out = {}
  if real.status ~= sim.status then
    out[#out + 1] = string.format("%s exit: real %s, sim %s", step, tostring(real.status), tostring(sim.status))
  end
  local out_a, out_b = M.stdout_form(real.stdout, opts.json), M.stdout_form(sim.stdout, opts.json)
  if opts.json then out_a, out_b = M.shape_pair(out_a, out_b) end
  local parts = {
    { "stdout", out_a, out_b },
    { "stderr", M.normalise(real.stderr), M.normalise(sim.stderr) },
  }
  if opts.layout then
    local la, lb = M.shape_pair(M.layout(opts.layout[1]), M.layout(opts.layout[2]))
    parts[#parts + 1] = { "layout", la, lb }
  end
  for _, p in ipairs(parts) do
    for _, d in ipairs(M.diff(p[2], p[3])) do out[#out + 1] = step .. " " .. p[1] .. ": " .. d end
  end
  return out
end

--- The differences not in `allowed` (a set of difference lines); records
-- the allowed ones met in `met` (when given) so a stale entry is noticed.
function M.unexpected(diffs, allowed, met)
  local out = {}
  for _, d in ipairs(diffs) do
    if allowed[d] then
      if met then met[d] = true end
    else
      out[#out + 1] = d
    end
  end
  return out
end

return M
