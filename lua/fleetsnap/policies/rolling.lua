-- rolling: minimal downtime per member. Each member is stopped,
-- snapshotted and started on its own, several at a time (the runner's
-- --concurrency bound); there is no single consistency point.
return {
  name = "rolling",
  summary = "stop, snapshot and start one member at a time (bounded concurrency), then download",
  -- A few members down at once: each member's downtime stays a few calls.
  concurrency = 4,
  plan = function(selection, plan)
    for _, m in ipairs(selection) do
      local stop = plan:stop(m)
      local snap = plan:snapshot(m, { after = { stop } })
      plan:start(m, { after = { snap } })
      plan:download(m, { after = { snap } })
    end
  end,
}
