-- hold: stop and snapshot the selection and leave it stopped, for
-- maintenance before an upgrade or a migration. Explicit: canisters stay
-- stopped after a successful backup (a failure still restarts them).
return {
  name = "hold",
  summary = "stop parents-first and snapshot, leaving the selection stopped",
  leaves_stopped = true,
  plan = function(selection, plan)
    -- One barrier after every stop, not every stop before every snapshot.
    local stopped = plan:barrier("stopped", { after = plan:stop_by_level() })
    for _, m in ipairs(selection) do
      local snap = plan:snapshot(m, { after = { stopped } })
      plan:download(m, { after = { snap } })
    end
  end,
}
