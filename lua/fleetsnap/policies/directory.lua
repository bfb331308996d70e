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
  plan = function(_, plan)
    plan:consistent()
  end,
}
