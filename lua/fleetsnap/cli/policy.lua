--- `fleetsnap policy ...`: list the bundled policies, show one's source,
-- check one by planning a sample fleet with it.
local errors = require "fleetsnap.errors"

local M = {}

--- Adds `policy` and its subcommands to parser `p`.
function M.add(p, cli)
  local pol = cli.group_command(p, "policy", "Bundled and custom policies.")
  cli.command(pol, "list", "Bundled policies.")
  cli.command(pol, "show", "A policy's source."):argument("name", "Name or file.")
  cli.command(pol, "check", "Load a policy and plan a sample fleet with it."):argument("name", "Name or file.")
end

M.handlers = {}

local function load(name)
  local policy = require "fleetsnap.policy"
  local p, err, code = policy.load(name)
  if not p then errors.raise(code or "EPOLICY", err, policy.missing_step(code)) end
  return p
end

function M.handlers.list(_, ui)
  local policy = require "fleetsnap.policy"
  local rows, lines = {}, {}
  for _, name in ipairs(policy.bundled()) do
    local p = policy.load(name)
    rows[#rows + 1] = { name = name, summary = p and p.summary }
    lines[#lines + 1] = string.format("%-12s %s", name, p and p.summary or "(does not load)")
  end
  ui:doc({ type = "policies", policies = rows }, table.concat(lines, "\n") .. "\n")
end

function M.handlers.show(args, ui)
  local p = load(args.name)
  ui:doc({ type = "policy", name = p.name, path = p.path, source = p.source }, p.source)
end

-- A 7-member sample: a root-level member, two children, four
-- grandchildren, so that a policy's levels and ordering are exercised.
local function sample()
  local principal = require "fleetsnap.principal"
  local out = {}
  for i = 1, 7 do
    out[i] = { canister_id = principal.canister_id(100 + i), role = "r" .. i,
      parent = i > 1 and principal.canister_id(100 + (i - 1) // 2 + 1) or nil,
      depth = i == 1 and 1 or (i <= 3 and 2 or 3) }
  end
  return out
end

function M.handlers.check(args, ui)
  local p = load(args.name)
  local ops, err, code = require("fleetsnap.policy").build(p, sample())
  if not ops then errors.raise(code or "EPOLICY", err) end
  ui:doc({ type = "policy-check", name = p.name, ok = true, operations = #ops },
    string.format("policy %s: ok (%d operations for a 7-member sample)\n", p.name, #ops))
end

return M
