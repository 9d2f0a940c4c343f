-- Warehouse hook (example, stopped until activated): delivery events with
-- event_data and custom_data as dotted columns ("event_data.campaign_id"),
-- for a warehouse that loads flat JSON rows.
local flatten = require "flatten"

return {
  name = "Warehouse: deliveries, flat",
  active = false,
  database = "all",
  actions = {"send", "deliv", "undeliv", "sbounce", "hbounce"},
  shape = function(message)
    return flatten.message(message)
  end,
  send = {destination = "warehouse", batch_size = 500, timeout_sec = 2},
}
