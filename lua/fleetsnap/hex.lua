--- Lowercase hexadecimal text of bytes and back: call replies, module
-- hashes from the registry, snapshot chunk digests, random ids.
local M = {}

-- Table-driven gsub: replies of a large fleet's registry run to megabytes,
-- and a Lua function call per byte made encoding them the slow part.
local TO_HEX = {}
for b = 0, 255 do
  TO_HEX[string.char(b)] = string.format("%02x", b)
end

-- Pairs are filled in on first use, in any letter case tonumber accepts.
local FROM_HEX = setmetatable({}, {
  __index = function(t, h)
    local c = string.char(tonumber(h, 16))
    t[h] = c
    return c
  end,
})

--- The lowercase hex of a byte string.
function M.encode(bytes)
  return (bytes:gsub(".", TO_HEX))
end

--- The hex of an array of byte values (icp's metadata.json holds chunk
-- hashes and certified data that way).
function M.encode_list(values)
  return M.encode(string.char(table.unpack(values)))
end

--- The bytes of an even-length hex string (the caller checks the form).
function M.decode(text)
  return (text:gsub("..", FROM_HEX))
end

return M
