-- Regional hook (example, stopped until activated): opens and clicks from
-- Germany, Austria and Switzerland, with event_data and custom_data
-- flattened into columns for a regional warehouse table.
local geo = require "geo"
local flatten = require "flatten"

return {
  name = "Warehouse: DACH engagement",
  active = false,
  database = "all",
  actions = {"open", "uopen", "click", "uclick"},
  filter = geo.filter {countries = {allow = {"de", "at", "ch"}}},
  shape = function(message)
    return flatten.message(message, {max_depth = 4})
  end,
  send = {destination = "warehouse", batch_size = 200, timeout_sec = 2},
}
