--- Artifact paths that a document names, resolved beneath the directory
-- that holds the document. A manifest (or a restore plan) is input: its
-- `artifact_path` must not lead out of the backup, neither by its text
-- (`..`, an absolute path) nor through a symlink on the way. The engine's
-- tree walk opens the artifact itself no-follow and everything inside it
-- no-follow, but not the directories between the backup and the artifact:
-- those are checked here, one component at a time.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"

local fs = engine.fs

local M = {}

--- The components of a safe relative path: a non-empty string, not
-- absolute, without NUL and without an empty, `.` or `..` component (so
-- `a//b`, `./a` and `a/` are refused: upstream's rule for artifact paths
-- refuses a leading `./` too). Returns the array of components, or nil and
-- why.
function M.components(rel)
  if type(rel) ~= "string" then return nil, "not a string" end
  if rel == "" then return nil, "empty" end
  if rel:find("\0", 1, true) then return nil, "contains a NUL byte" end
  if rel:sub(1, 1) == "/" then return nil, "absolute" end
  local parts = {}
  for part in (rel .. "/"):gmatch("([^/]*)/") do
    if part == "" then return nil, "empty component" end
    if part == "." or part == ".." then return nil, "component " .. part end
    parts[#parts + 1] = part
  end
  return parts
end

--- `base/rel`, once checked: rel is a safe relative path (see
-- `components`) and no component from base down to and including the
-- last is a symlink (each is lstat'ed; every one but the last must be a
-- directory). `base` itself is the operator's reference (it may be a
-- symlink such as `backups/latest`); everything below it comes from a
-- document. Returns the joined path, or nil, a message naming the path and
-- the component, and a code: "ECORRUPT" (unsafe text, a symlink, a
-- non-directory on the way), "ENOTFOUND" (a component does not exist) or
-- the registry code of another lstat failure.
--
-- The check and the later open are two steps: this refuses what the
-- backup holds, not a concurrent attacker with write access to it (the
-- last component is opened no-follow by the engine anyway).
function M.check_beneath(base, rel)
  local parts, why = M.components(rel)
  if not parts then
    return nil, string.format("%s/%s: not a safe relative path (%s)", tostring(base), tostring(rel), why), "ECORRUPT"
  end
  local joined = base .. "/" .. table.concat(parts, "/")
  local path = base
  for i, part in ipairs(parts) do
    path = path .. "/" .. part
    local st, err, code = fs.lstat(path)
    if not st then
      if code == "ENOENT" then
        return nil, joined .. ": " .. (path == joined and "" or (path .. " ")) .. "does not exist", "ENOTFOUND"
      end
      return nil, joined .. ": " .. tostring(err), errors.engine_code(code)
    end
    if st.type == "symlink" then
      return nil, string.format("%s: %s is a symlink (an artifact path may not pass through one)",
        joined, path), "ECORRUPT"
    end
    if i < #parts and st.type ~= "directory" then
      return nil, string.format("%s: %s is a %s, not a directory", joined, path, st.type), "ECORRUPT"
    end
  end
  return joined
end

return M
