-- consistent (the default): one consistency point for the whole selection.
-- Stop parents first, level by level, each level in parallel; snapshot every
-- member once all are stopped; restart children first; download each
-- snapshot as soon as it exists (downloads never hold a canister stopped).
-- The plan builder's `consistent()` builds exactly this (with phase
-- barriers, so the plan stays linear in the fleet), so that a policy that
-- only finds the fleet differently (`directory`) plans the same way.
return {
  name = "consistent",
  summary = "stop parents-first level by level, snapshot all, restart children-first, then download",
  plan = function(_, plan)
    plan:consistent()
  end,
}
