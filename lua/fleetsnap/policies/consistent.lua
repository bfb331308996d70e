-- consistent (the default): one consistency point for the whole selection.
-- Stop parents first, level by level, each level in parallel; snapshot every
-- member once all are stopped; restart children first; download each
-- snapshot as soon as it exists (downloads never hold a canister stopped).
return {
  name = "consistent",
  summary = "stop parents-first level by level, snapshot all, restart children-first, then download",
  plan = function(selection, plan)
    local levels = plan:levels()
    local stops = plan:stop_by_level()
    local snapshots = {}
    for _, m in ipairs(selection) do
      snapshots[m.canister_id] = plan:snapshot(m, { after = stops })
    end
    local all_snapshots = {}
    for _, m in ipairs(selection) do all_snapshots[#all_snapshots + 1] = snapshots[m.canister_id] end
    local previous = all_snapshots
    for i = #levels, 1, -1 do
      local this = {}
      for _, m in ipairs(levels[i]) do
        this[#this + 1] = plan:start(m, { after = previous })
      end
      previous = this
    end
    for _, m in ipairs(selection) do
      plan:download(m, { after = { snapshots[m.canister_id] } })
    end
  end,
}
