-- Analytics hook (example, stopped until activated): clicks on links with
-- UTM tags, at most one per profile and utm_campaign within an hour of
-- event time, as one flat record with the tags parsed out.
local utm = require "utm"
local dedupe = require "dedupe"

local once = dedupe.new {
  window = 3600,
  key = function(event) return utm.event_tags(event).utm_campaign end,
  time = dedupe.event_time,
  max_entries = 100000,
}

return {
  name = "Analytics: UTM campaign clicks (deduplicated)",
  active = false,
  database = "all",
  actions = {"click", "uclick", "click_sms", "click_push"},

  -- The dedupe check comes last, so it remembers only kept clicks.
  filter = function(event)
    return utm.has_tags(event) and once:keep(event)
  end,

  shape = function(message, event)
    local tags = utm.event_tags(event)
    return {
      kind = event.event_type,
      at = event.event_date,
      profile = event.profile_id or json.null,
      campaign = event.event_data.campaign_id,
      source = tags.utm_source or json.null,
      medium = tags.utm_medium or json.null,
      utm_campaign = tags.utm_campaign or json.null,
    }
  end,
  send = {destination = "analytics", batch_size = 100, timeout_sec = 1},
}
