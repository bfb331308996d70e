--- icp 1.5.0's command line, as clap parses it, for the subset icp-sim
-- serves. `parse(argv)` returns a command table, or nil and a usage error
-- `{rc = 2, stderr = ...}` (or rc 0 for --help) with clap's texts.
local principal = require "fleetsnap.principal"

local M = {}

local MORE = "\nFor more information, try '--help'.\n"

local function hex_error(v)
  if #v % 2 == 1 then
    for i = 1, #v do
      if not v:sub(i, i):match("%x") then
        return string.format("Invalid character '%s' at position %d", v:sub(i, i), i - 1)
      end
    end
    return "Odd number of digits"
  end
  for i = 1, #v do
    if not v:sub(i, i):match("%x") then
      return string.format("Invalid character '%s' at position %d", v:sub(i, i), i - 1)
    end
  end
end

local function root_key_error(v)
  if v == "mainnet" or v == "fetch" then return nil end
  local bad = hex_error(v)
  if bad then
    return "invalid root key: " .. bad
  end
  if #v ~= 266 then
    return string.format("invalid root key: expected 133 bytes but got %d", #v // 2)
  end
end

local function principal_error(v)
  local _, reason = principal.from_text(v)
  return reason
end

local function enum(values)
  return function(v)
    for _, x in ipairs(values) do
      if x == v then return nil end
    end
    return "", "  [possible values: " .. table.concat(values, ", ") .. "]"
  end
end

-- Options every canister subcommand has (clap's flattened groups).
local NETWORK = {
  { long = "network", short = "n", value = "NETWORK" },
  { long = "root-key", short = "k", value = "ROOT_KEY", check = root_key_error },
  { long = "environment", short = "e", value = "ENVIRONMENT" },
}
local IDENTITY = { { long = "identity", value = "IDENTITY" } }
local PROXY = { long = "proxy", value = "PROXY", check = principal_error }
-- Common parameters are global: accepted at any level.
local COMMON = {
  { long = "project-root-override", value = "PROJECT_ROOT_OVERRIDE" },
  { long = "debug" },
  { long = "identity-password-file", value = "FILE" },
}

local function leaf(path, positionals, options, conflicts, extra)
  local opts = {}
  for _, group in ipairs({ options, NETWORK, IDENTITY }) do
    for _, o in ipairs(group) do opts[#opts + 1] = o end
  end
  return { path = path, positionals = positionals, options = opts, conflicts = conflicts or {}, network = true,
    extra = extra }
end

-- icp's visibility parser (a value_parser function, not a clap enum:
-- its message is its own).
local function visibility_error(v)
  if v ~= "controllers" and v ~= "public" then return "Must be `controllers` or `public`." end
end

local CANISTER = { name = "CANISTER", required = true }
local SNAPSHOT_ID = { name = "SNAPSHOT_ID", required = true, check = hex_error }
local JSON = { long = "json" }
local QUIET = { long = "quiet", short = "q" }
local REPLACE = { long = "replace", value = "REPLACE", check = hex_error }

M.COMMANDS = {
  ["canister stop"] = leaf("canister stop", { CANISTER }, { PROXY }),
  ["canister start"] = leaf("canister start", { CANISTER }, { PROXY }),
  ["canister status"] = leaf("canister status", { { name = "CANISTER" } },
    { { long = "id-only", short = "i" }, JSON, { long = "public", short = "p" }, PROXY },
    { { "id-only", "json" } }),
  ["canister snapshot create"] = leaf("canister snapshot create", { CANISTER }, { REPLACE, JSON, QUIET, PROXY },
    { { "json", "quiet" } }),
  ["canister snapshot list"] = leaf("canister snapshot list", { CANISTER }, { JSON, QUIET, PROXY },
    { { "json", "quiet" } }),
  ["canister snapshot delete"] = leaf("canister snapshot delete", { CANISTER, SNAPSHOT_ID }, { PROXY }),
  ["canister snapshot restore"] = leaf("canister snapshot restore", { CANISTER, SNAPSHOT_ID }, { PROXY }),
  ["canister snapshot download"] = leaf("canister snapshot download", { CANISTER, SNAPSHOT_ID },
    { { long = "output", short = "o", value = "OUTPUT", required = true }, { long = "resume" }, PROXY }),
  ["canister snapshot upload"] = leaf("canister snapshot upload", { CANISTER },
    { { long = "input", short = "i", value = "INPUT", required = true }, REPLACE, { long = "resume" }, JSON, QUIET,
      PROXY }, { { "json", "quiet" } }),
  ["canister call"] = leaf("canister call", { CANISTER, { name = "METHOD" }, { name = "ARGS" } }, {
    { long = "args-file", value = "ARGS_FILE" },
    { long = "args-format", value = "ARGS_FORMAT", check = enum({ "hex", "candid", "bin" }) },
    { long = "candid", value = "PATH" },
    PROXY,
    { long = "cycles", value = "CYCLES" },
    { long = "query" },
    { long = "output", short = "o", value = "OUTPUT", check = enum({ "auto", "candid", "text", "hex" }) },
    JSON,
    { long = "sign-only", value = "FILE" },
    { long = "valid-from", value = "WHEN" },
  }),
  -- `<CANISTER|--detached>`: exactly one of the two (icp-sim serves only
  -- --detached; a project canister has no project to live in here).
  ["canister create"] = leaf("canister create", { { name = "CANISTER" } }, {
    { long = "controller", value = "CONTROLLER", multiple = true, check = principal_error },
    { long = "cycles", value = "CYCLES" },
    QUIET, JSON, { long = "detached" }, PROXY,
  }, { { "json", "quiet" } }, { either = { option = "detached", label = "<CANISTER|--detached>" } }),
  ["canister delete"] = leaf("canister delete", { CANISTER }, { { long = "no-recover-cycles" }, PROXY }),
  ["canister settings update"] = leaf("canister settings update", { CANISTER }, {
    { long = "force", short = "f" },
    { long = "add-controller", value = "ADD_CONTROLLER", check = principal_error, multiple = true },
    { long = "remove-controller", value = "REMOVE_CONTROLLER", check = principal_error, multiple = true },
    { long = "remove-all-controllers" },
    { long = "compute-allocation", value = "COMPUTE_ALLOCATION" },
    { long = "memory-allocation", value = "MEMORY_ALLOCATION" },
    { long = "freezing-threshold", value = "FREEZING_THRESHOLD" },
    { long = "reserved-cycles-limit", value = "RESERVED_CYCLES_LIMIT" },
    { long = "wasm-memory-limit", value = "WASM_MEMORY_LIMIT" },
    { long = "wasm-memory-threshold", value = "WASM_MEMORY_THRESHOLD" },
    { long = "log-memory-limit", value = "LOG_MEMORY_LIMIT" },
    { long = "log-visibility", value = "LOG_VISIBILITY", check = visibility_error },
    { long = "add-log-viewer", value = "ADD_LOG_VIEWER", check = principal_error, multiple = true },
    { long = "remove-log-viewer", value = "REMOVE_LOG_VIEWER", check = principal_error, multiple = true },
    { long = "set-log-viewer", value = "SET_LOG_VIEWER", check = principal_error, multiple = true },
    { long = "snapshot-visibility", value = "SNAPSHOT_VISIBILITY", check = visibility_error },
    { long = "add-snapshot-viewer", value = "ADD_SNAPSHOT_VIEWER", check = principal_error, multiple = true },
    { long = "remove-snapshot-viewer", value = "REMOVE_SNAPSHOT_VIEWER", check = principal_error, multiple = true },
    { long = "set-snapshot-viewer", value = "SET_SNAPSHOT_VIEWER", check = principal_error, multiple = true },
    { long = "status-visibility", value = "STATUS_VISIBILITY", check = visibility_error },
    { long = "add-status-viewer", value = "ADD_STATUS_VIEWER", check = principal_error, multiple = true },
    { long = "remove-status-viewer", value = "REMOVE_STATUS_VIEWER", check = principal_error, multiple = true },
    { long = "set-status-viewer", value = "SET_STATUS_VIEWER", check = principal_error, multiple = true },
    { long = "add-environment-variable", value = "ADD_ENVIRONMENT_VARIABLE", multiple = true },
    { long = "remove-environment-variable", value = "REMOVE_ENVIRONMENT_VARIABLE", multiple = true },
    PROXY,
  }, { { "log-visibility", "set-log-viewer" }, { "snapshot-visibility", "set-snapshot-viewer" },
    { "status-visibility", "set-status-viewer" } }),
  ["identity principal"] = { path = "identity principal", positionals = {}, options = IDENTITY, conflicts = {} },
}

-- Subcommand names the real icp knows (an unknown one is a usage error;
-- a known one the simulator does not serve is a runtime error).
local GROUPS = {
  [""] = { "build", "canister", "cycles", "deploy", "environment", "identity", "network", "new", "project", "settings",
    "sync", "token", "help" },
  canister = { "call", "create", "delete", "install", "link", "list", "logs", "metadata", "migrate-id", "settings",
    "snapshot", "start", "status", "stop", "top-up", "help" },
  ["canister snapshot"] = { "create", "delete", "download", "list", "restore", "upload", "help" },
  ["canister settings"] = { "show", "update", "help" },
  identity = { "default", "delete", "export", "import", "link", "list", "new", "principal", "rename", "help" },
}

-- What clap prints above the usage when a group is given no subcommand.
local ABOUT = {
  canister = "Perform canister operations against a network",
  ["canister snapshot"] = "Commands to manage canister snapshots",
  ["canister settings"] = "Commands to manage canister settings",
  identity = "Manage your identities",
}

local function usage_line(cmd, kind, used, given)
  local parts = { "Usage: icp " .. cmd.path }
  local has_options = #cmd.options > 0
  if kind == "full" then
    if has_options then parts[#parts + 1] = "[OPTIONS]" end
    for _, o in ipairs(cmd.options) do
      if o.required then parts[#parts + 1] = "--" .. o.long .. " <" .. o.value .. ">" end
    end
  else
    if used then parts[#parts + 1] = used end
    for _, o in ipairs(cmd.options) do
      if o.required then parts[#parts + 1] = "--" .. o.long .. " <" .. o.value .. ">" end
    end
  end
  for k, p in ipairs(cmd.positionals) do
    if p.required or (given and given[k] ~= nil and kind == "used") then
      parts[#parts + 1] = "<" .. p.name .. ">"
    elseif kind == "full" then
      parts[#parts + 1] = "[" .. p.name .. "]"
    end
  end
  return table.concat(parts, " ")
end

local function usage_error(msg, usage)
  local text = "error: " .. msg .. "\n"
  if usage then
    text = text .. "\n" .. usage .. "\n"
  end
  return nil, { rc = 2, stderr = text .. MORE }
end

local function option_label(o)
  return o.value and ("--" .. o.long .. " <" .. o.value .. ">") or ("--" .. o.long)
end

-- The value of an option given as "--opt value" or "-o value": the next
-- argument, which clap never takes when it is itself an option. Returns the
-- value (or nil) and how many arguments it used.
local function next_value(argv, i)
  local v = argv[i + 1]
  if v and v ~= "-" and v:sub(1, 1) == "-" then return nil, 1 end
  return v, 1
end

-- Stores v as option o's value; returns nil, usage error on failure.
local function store_value(cmd, o, v, store)
  if v == nil then
    return usage_error("a value is required for '" .. option_label(o) .. "' but none was supplied")
  end
  local ok, err, no_usage = store(o, v)
  if not ok then return usage_error(err, not no_usage and usage_line(cmd, "full") or nil) end
end

local function find_long(options, name)
  for _, o in ipairs(options) do
    if o.long == name then return o end
  end
end

local function find_short(options, ch)
  for _, o in ipairs(options) do
    if o.short == ch then return o end
  end
end

--- Parses argv (an array of strings, without the program name).
function M.parse(argv)
  local common = {}
  local i = 1
  local path = {}
  local function take_common(a, next_arg)
    local name, inline = a:match("^%-%-([%w%-]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-]+)$")
    local o = name and find_long(COMMON, name)
    if not o then return nil end
    if o.value then
      local v = inline or next_arg
      if v == nil then
        return false, "a value is required for '" .. option_label(o) .. "' but none was supplied"
      end
      common[o.long] = v
      return inline and 1 or 2
    end
    common[o.long] = true
    return 1
  end

  -- Walk the subcommand groups.
  local group = ""
  while true do
    local a = argv[i]
    if a == nil then
      if group == "" then
        return nil, { rc = 2, stderr = "Usage: icp [OPTIONS] [COMMAND]\n" .. MORE }
      end
      return nil, { rc = 2, stderr = ABOUT[group] .. "\n\nUsage: icp " .. group .. " [OPTIONS] <COMMAND>\n" }
    end
    if group == "" and (a == "--version" or a == "-V") then
      return { command = "version", common = common }
    end
    if a == "--help" or a == "-h" then
      return nil, { rc = 0, stdout = "Usage: icp " .. (group == "" and "" or group .. " ") .. "[OPTIONS] <COMMAND>\n" }
    end
    local n, err = take_common(a, argv[i + 1])
    if n == false then return usage_error(err) end
    if n then
      i = i + n
    elseif a:sub(1, 1) == "-" then
      return usage_error("unexpected argument '" .. a .. "' found",
        group == "" and "Usage: icp [OPTIONS] [COMMAND]" or ("Usage: icp " .. group .. " [OPTIONS] <COMMAND>"))
    else
      local known = false
      for _, s in ipairs(GROUPS[group]) do
        if s == a then known = true end
      end
      if not known then
        return usage_error("unrecognized subcommand '" .. a .. "'",
          "Usage: icp " .. (group == "" and "[OPTIONS] [COMMAND]" or group .. " [OPTIONS] <COMMAND>"))
      end
      path[#path + 1] = a
      i = i + 1
      local key = table.concat(path, " ")
      if GROUPS[key] then
        group = key
      else
        local cmd = M.COMMANDS[key]
        if not cmd then
          return { command = "unsupported", name = key, common = common }
        end
        return M.parse_leaf(cmd, argv, i, common)
      end
    end
  end
end

function M.parse_leaf(cmd, argv, i, common)
  local values, positionals, seen_order = {}, {}, {}
  local only_positional = false
  local function set(o, v)
    if values[o.long] ~= nil and not o.multiple then
      return false, "the argument '" .. option_label(o) .. "' cannot be used multiple times"
    end
    if o.value and o.check then
      local bad, extra = o.check(v)
      if bad then
        local msg = "invalid value '" .. v .. "' for '" .. option_label(o) .. "'"
        if bad ~= "" then msg = msg .. ": " .. bad end
        if extra then msg = msg .. "\n" .. extra end
        return false, msg, true
      end
    end
    if o.multiple then
      -- A repeatable option (clap's Vec): every occurrence, in order.
      values[o.long] = values[o.long] or {}
      table.insert(values[o.long], v)
    else
      values[o.long] = o.value and v or true
    end
    seen_order[#seen_order + 1] = o.long
    return true
  end

  while i <= #argv do
    local a = argv[i]
    if only_positional or a == "-" or a:sub(1, 1) ~= "-" then
      if #positionals >= #cmd.positionals then
        return usage_error("unexpected argument '" .. a .. "' found", usage_line(cmd, "full"))
      end
      local p = cmd.positionals[#positionals + 1]
      if p.check then
        local bad = p.check(a)
        if bad then
          return usage_error("invalid value '" .. a .. "' for '<" .. p.name .. ">': " .. bad)
        end
      end
      positionals[#positionals + 1] = a
      i = i + 1
    elseif a == "--" then
      only_positional = true
      i = i + 1
    elseif a == "--help" or a == "-h" then
      return nil, { rc = 0, stdout = usage_line(cmd, "full") .. "\n" }
    elseif a:sub(1, 2) == "--" then
      local name, inline = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local o = find_long(cmd.options, name) or find_long(COMMON, name)
      if not o then
        return usage_error("unexpected argument '" .. a .. "' found\n\n  tip: to pass '" .. a
          .. "' as a value, use '-- " .. a .. "'", usage_line(cmd, "full"))
      end
      local store = find_long(COMMON, name) and function(oo, v)
        common[oo.long] = oo.value and v or true
        return true
      end or set
      if o.value then
        local v, used = inline, 0
        if v == nil then v, used = next_value(argv, i) end
        i = i + used
        local _, uerr = store_value(cmd, o, v, store)
        if uerr then return nil, uerr end
      else
        if inline then
          return usage_error("unexpected value '" .. inline .. "' for '" .. option_label(o)
            .. "' found; no more were expected", usage_line(cmd, "full"))
        end
        local ok, err = store(o)
        if not ok then return usage_error(err, usage_line(cmd, "full")) end
      end
      i = i + 1
    else
      -- A cluster of short options: -qi, -oDIR, -o DIR.
      local j = 2
      while j <= #a do
        local ch = a:sub(j, j)
        local o = find_short(cmd.options, ch)
        if not o then
          return usage_error("unexpected argument '-" .. ch .. "' found\n\n  tip: to pass '-" .. ch
            .. "' as a value, use '-- -" .. ch .. "'", usage_line(cmd, "full"))
        end
        if o.value then
          local v, used = a:sub(j + 1), 0
          if v:sub(1, 1) == "=" then v = v:sub(2) end
          if v == "" then v, used = next_value(argv, i) end
          i = i + used
          local _, uerr = store_value(cmd, o, v, set)
          if uerr then return nil, uerr end
          break
        end
        local ok, err = set(o)
        if not ok then return usage_error(err, usage_line(cmd, "full")) end
        j = j + 1
      end
      i = i + 1
    end
  end

  -- Checks clap makes once everything is read.
  for _, pair in ipairs(cmd.conflicts) do
    if values[pair[1]] ~= nil and values[pair[2]] ~= nil then
      local first, second = pair[1], pair[2]
      for _, name in ipairs(seen_order) do
        if name == pair[2] then first, second = pair[2], pair[1] break end
        if name == pair[1] then break end
      end
      local o1, o2 = find_long(cmd.options, first), find_long(cmd.options, second)
      return usage_error("the argument '" .. option_label(o1) .. "' cannot be used with '" .. option_label(o2) .. "'",
        usage_line(cmd, "used", option_label(o1), positionals))
    end
  end
  if values.network and values.environment then
    local o1, o2 = find_long(cmd.options, "network"), find_long(cmd.options, "environment")
    local first, second = o1, o2
    for _, name in ipairs(seen_order) do
      if name == "environment" then first, second = o2, o1 break end
      if name == "network" then break end
    end
    return usage_error("the argument '" .. option_label(first) .. "' cannot be used with '" .. option_label(second)
      .. "'", usage_line(cmd, "used", option_label(first)))
  end
  local either = cmd.extra and cmd.extra.either
  if either then
    -- clap's required group of the first positional and one flag.
    local used = "Usage: icp " .. cmd.path .. " " .. either.label
    if positionals[1] ~= nil and values[either.option] then
      return usage_error("the argument '[" .. cmd.positionals[1].name .. "]' cannot be used with '--"
        .. either.option .. "'", used)
    end
    if positionals[1] == nil and not values[either.option] then
      return usage_error("the following required arguments were not provided:\n  " .. either.label, used)
    end
  end
  local missing = {}
  for _, o in ipairs(cmd.options) do
    if o.required and values[o.long] == nil then missing[#missing + 1] = "  " .. option_label(o) end
  end
  for k, p in ipairs(cmd.positionals) do
    if p.required and positionals[k] == nil then missing[#missing + 1] = "  <" .. p.name .. ">" end
  end
  if values["root-key"] and not values.network then
    missing[#missing + 1] = "  --network <NETWORK>"
  end
  if #missing > 0 then
    return usage_error("the following required arguments were not provided:\n" .. table.concat(missing, "\n"),
      usage_line(cmd, "missing"))
  end
  if values.network and values.network:match("^https?://") and not values["root-key"] then
    return nil, { rc = 2, stderr = "error: `--root-key` is required when `--network` is a URL.\n\n\n"
      .. "Usage: icp [OPTIONS] [COMMAND]\n" .. MORE }
  end

  local named = {}
  for k, p in ipairs(cmd.positionals) do
    named[p.name:lower()] = positionals[k]
  end
  return { command = cmd.path, options = values, args = named, common = common }
end

return M
