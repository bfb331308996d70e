--- Lowercase hexadecimal text of bytes and back: call replies, module
-- hashes from the registry, snapshot chunk digests, random ids.
local M = {}

--- The lowercase hex of a byte string.
function M.encode(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- The hex of an array of byte values (icp's metadata.json holds chunk
-- hashes and certified data that way).
function M.encode_list(values)
  return M.encode(string.char(table.unpack(values)))
end

--- The bytes of an even-length hex string (the caller checks the form).
function M.decode(text)
  return (text:gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end

return M
