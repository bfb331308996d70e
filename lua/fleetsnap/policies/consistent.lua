-- consistent (the default): one consistency point for the whole selection.
-- Stop parents first, level by level, each level in parallel; snapshot every
-- member once all are stopped; restart children first; download each
-- snapshot as soon as it exists (downloads never hold a canister stopped).
return {
  name = "consistent",
  summary = "stop parents-first level by level, snapshot all, restart children-first, then download",
  plan = function(selection, plan)
    local levels = plan:levels()
    -- Phase barriers: every snapshot waits on one "all stopped" operation,
    -- and each level's starts on one after the level below, instead of on
    -- every operation before them (a plan linear in the fleet).
    local stopped = plan:barrier("stopped", { after = plan:stop_by_level() })
    local snapshots = {}
    for i, m in ipairs(selection) do
      snapshots[i] = plan:snapshot(m, { after = { stopped } })
    end
    local previous = { plan:barrier("snapshotted", { after = snapshots }) }
    for i = #levels, 1, -1 do
      local this = {}
      for _, m in ipairs(levels[i]) do
        this[#this + 1] = plan:start(m, { after = previous })
      end
      previous = (i > 1 and #this > 1) and { plan:barrier("started-depth-" .. levels[i][1].depth, { after = this }) }
        or this
    end
    for i, m in ipairs(selection) do
      plan:download(m, { after = { snapshots[i] } })
    end
  end,
}
