-- Alerts hook (example, stopped until activated): bounces, complaints and
-- unsubscribes as Slack-style chat messages, one per request, posted to
-- the demo sink. The campaign name comes from the catalog.
local slack = require "slack"

return {
  name = "Alerts: bounces, complaints, unsubscribes",
  active = false,
  database = "all",
  actions = {"hbounce", "sbounce", "complain", "unsub", "unsub_sms"},
  custom_data = {cname = "{{campaign_name}}"},
  shape = function(message)
    return slack.payload(message, {title = "Deliverability"})
  end,
  send = {type = "http", url = "http://127.0.0.1:18766/slack",
    batch_size = 1, timeout_sec = 1},
}
