-- sequential: upstream canic-backup's exact operation order, one at a
-- time: stop each (depth, then id), snapshot each, start each in reverse,
-- then download each. The baseline of the benchmarks.
return {
  name = "sequential",
  summary = "upstream's order, one operation at a time (benchmark baseline)",
  concurrency = 1,
  downloads = 1,
  -- Restores in upstream's order too: every upload, every stop, every
  -- load, every start (children first), every verification, one by one.
  restore = { serial = true, concurrency = 1, uploads = 1 },
  plan = function(selection, plan)
    local order = {}
    for i, m in ipairs(selection) do order[i] = m end
    table.sort(order, function(a, b)
      if a.depth ~= b.depth then return a.depth < b.depth end
      return a.canister_id < b.canister_id
    end)
    local last
    local function chain(id)
      last = id
      return id
    end
    for _, m in ipairs(order) do chain(plan:stop(m, { after = last and { last } or {} })) end
    for _, m in ipairs(order) do chain(plan:snapshot(m, { after = { last } })) end
    for i = #order, 1, -1 do chain(plan:start(order[i], { after = { last } })) end
    for _, m in ipairs(selection) do chain(plan:download(m, { after = { last } })) end
  end,
}
