-- Analytics hook: clicks on links that carry UTM tags, reshaped into the
-- analytics service's own flat format with the tags parsed out.
local function utm_tags(url)
  local tags, found = {}, false
  for key, value in url:gmatch("[?&](utm_[%w_]+)=([^&#]*)") do
    tags[key] = value
    found = true
  end
  return found and tags or nil
end

return {
  name = "Analytics: UTM clicks",
  database = "all",
  actions = {"click", "uclick", "click_sms", "click_push"},

  -- Keep only clicks whose link has at least one utm_ parameter.
  filter = function(event)
    local data = event.event_data
    return type(data) == "table" and type(data.link_url) == "string"
      and utm_tags(data.link_url) ~= nil
  end,

  -- The receiver wants one flat object per click.
  shape = function(message, event)
    local data = event.event_data
    return {
      kind = event.event_type,
      at = event.event_date,
      profile = event.profile_id or json.null,
      campaign = data.campaign_id,
      url = data.link_url,
      utm = utm_tags(data.link_url),
      device = data.device,
    }
  end,
  send = {destination = "analytics", batch_size = 100, timeout_sec = 1},
}
