--- Textual principals of the Internet Computer: validation exactly as
-- `Principal::from_text` does it (case-insensitive, base32 without padding,
-- CRC-32 check, canonical dash grouping), and encoding from raw bytes.
local M = {}

local ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

local CRC_TABLE = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if c & 1 == 1 then
      c = 0xEDB88320 ~ (c >> 1)
    else
      c = c >> 1
    end
  end
  CRC_TABLE[i] = c
end

--- CRC-32 (IEEE 802.3) of a byte string.
function M.crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = CRC_TABLE[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8)
  end
  return c ~ 0xFFFFFFFF
end

local DECODE = {}
for i = 1, #ALPHABET do
  DECODE[ALPHABET:byte(i)] = i - 1
end

-- Lookup tables rather than a string.sub or string.char per symbol.
local ENCODE, CHAR = {}, {}
for i = 1, #ALPHABET do
  ENCODE[i - 1] = ALPHABET:sub(i, i)
end
for b = 0, 255 do
  CHAR[b] = string.char(b)
end

local function base32_encode(bytes)
  local out, bits, nbits = {}, 0, 0
  for i = 1, #bytes do
    bits = (bits << 8) | bytes:byte(i)
    nbits = nbits + 8
    while nbits >= 5 do
      nbits = nbits - 5
      local v = (bits >> nbits) & 31
      out[#out + 1] = ENCODE[v]
    end
  end
  if nbits > 0 then
    out[#out + 1] = ENCODE[(bits << (5 - nbits)) & 31]
  end
  return table.concat(out)
end

local function base32_decode(text)
  local rem = #text % 8
  if rem == 1 or rem == 3 or rem == 6 then
    return nil
  end
  local out, bits, nbits = {}, 0, 0
  for i = 1, #text do
    local v = DECODE[text:byte(i)]
    if not v then
      return nil
    end
    bits = ((bits << 5) | v) & 0xFFFF
    nbits = nbits + 5
    if nbits >= 8 then
      nbits = nbits - 8
      out[#out + 1] = CHAR[(bits >> nbits) & 0xFF]
    end
  end
  return table.concat(out)
end

-- Texts already made, by raw bytes (parse gives the canonical text of the
-- same ids over and over); bounded like `parsed` below.
local texts, n_texts = {}, 0
local TEXTS_MAX = 1 << 16

--- Canonical text of a raw principal (0 to 29 bytes).
function M.to_text(bytes)
  local known = texts[bytes]
  if known then return known end
  assert(type(bytes) == "string" and #bytes <= 29, "principal: 0 to 29 raw bytes expected")
  local text = base32_encode(string.pack(">I4", M.crc32(bytes)) .. bytes)
  local groups = {}
  for i = 1, #text, 5 do
    groups[#groups + 1] = text:sub(i, i + 4)
  end
  text = table.concat(groups, "-")
  if n_texts >= TEXTS_MAX then texts, n_texts = {}, 0 end
  texts[bytes], n_texts = text, n_texts + 1
  return text
end

-- Texts already parsed, and their bytes: a fleet's ids are parsed again and
-- again (listing, encoding a registry names each one several times), at
-- tens of microseconds a parse. Bounded: emptied when it grows past the
-- size of any fleet.
local parsed, n_parsed = {}, 0
local PARSED_MAX = 1 << 16

--- Raw bytes of a textual principal, or nil and the reason in the words of
-- the Internet Computer's own parser.
function M.from_text(text)
  local known = parsed[text]
  if known then return known end
  if type(text) ~= "string" then
    return nil, "Text must be in valid Base32 encoding."
  end
  local lower = text:lower()
  local raw = base32_decode((lower:gsub("-", "")))
  if not raw then
    return nil, "Text must be in valid Base32 encoding."
  end
  if #raw < 4 then
    return nil, "Text is too short."
  end
  if #raw > 33 then
    return nil, "Text is too long."
  end
  local bytes = raw:sub(5)
  if string.unpack(">I4", raw) ~= M.crc32(bytes) then
    return nil, "CRC32 check sequence doesn't match with calculated from Principal bytes."
  end
  local canonical = M.to_text(bytes)
  if canonical ~= lower then
    return nil, string.format('Text should be separated by - (dash) every 5 characters: expected "%s"', canonical)
  end
  if n_parsed >= PARSED_MAX then parsed, n_parsed = {}, 0 end
  parsed[text], n_parsed = bytes, n_parsed + 1
  return bytes
end

--- The canonical (lowercase) text of a valid principal, or nil, a message
-- naming the input, and "EPRINCIPAL".
function M.parse(text, what)
  local bytes, reason = M.from_text(text)
  if not bytes then
    return nil, string.format("%s %q is not a valid principal: %s", what or "principal", tostring(text), reason),
      "EPRINCIPAL"
  end
  return M.to_text(bytes)
end

function M.is_valid(text)
  return M.from_text(text) ~= nil
end

--- The id of the canister with the given index (8-byte big-endian counter
-- followed by 0x01 0x01, as the IC allocates them).
function M.canister_id(index)
  return M.to_text(string.pack(">I8", index) .. "\1\1")
end

M.MANAGEMENT = "aaaaa-aa"
M.ANONYMOUS = "2vxsx-fae"

return M
