-- directory: the members from a Canic 0.100+ component directory instead
-- of the registry: discovery walks `canic_root_component_directory_page`
-- on the root page by page (ctx.directory), and the drift check asks every
-- page again before the first stop. The plan is consistent's: one
-- consistency point for the whole selection.
return {
  name = "directory",
  summary = "discover from the root's component directory (Canic 0.100+), then plan as consistent",
  discover = function(ctx)
    return ctx.directory()
  end,
  plan = function(selection, plan)
    local levels = plan:levels()
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
