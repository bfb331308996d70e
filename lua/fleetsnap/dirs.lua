--- Directories fleetsnap writes into (backup and restore state
-- directories): making their parents, resolving them, and removing what a
-- dead writer left behind.
local engine = require "fleetsnap.engine"
local errors = require "fleetsnap.errors"

local fs = engine.fs

local M = {}

--- Removes temp files of durable writes that a dead writer left behind
-- (call only under the directory's lock: then no writer is alive).
function M.clean_temp(dir)
  for _, name in ipairs(fs.list(dir) or {}) do
    if name:match("^%..+%.fsn%-tmp%-%d+%-%x+$") then os.remove(dir .. "/" .. name) end
  end
end

--- Makes the parent directories of `path` (as `mkdir -p`), or raises EIO
-- naming the path and why.
function M.make_parents(path)
  local parent = path:match("^(.*)/[^/]+/*$")
  if not parent or parent == "" or fs.lstat(parent) then
    local st = parent and parent ~= "" and fs.lstat(parent)
    if st and st.type ~= "directory" and st.type ~= "symlink" then
      errors.raise("EIO", path .. ": " .. parent .. " is not a directory")
    end
    return
  end
  local r = engine.proc.run({ argv = { "mkdir", "-p", "--", parent } })
  if r.status ~= 0 then
    errors.raise("EIO", path .. ": cannot make its parent directory: " .. (r.stderr or ""):gsub("%s+$", ""))
  end
end

--- The absolute, symlink-free path of an existing directory.
function M.realpath(dir)
  local r = engine.proc.run({ argv = { "realpath", "-e", "--", dir } })
  if r.status ~= 0 then errors.raise("ENOTFOUND", "no directory " .. dir) end
  return (r.stdout:gsub("\n$", ""))
end

return M
