-- utm: the UTM tags of a link, for hooks that care about campaign
-- attribution.
--
--   local utm = require "utm"
--   utm.query("https://x.example/?a=1&b=%20")  --> {a = "1", b = " "}
--   utm.tags("https://x.example/?utm_source=mail&id=7")
--                                           --> {utm_source = "mail"}
--   utm.has_tags(event)  -- true when event_data.link_url carries a tag
--   utm.event_tags(event) --> the tags of event_data.link_url, or nil
--
-- A query is the part of the link between "?" and "#". Keys and values
-- are percent-decoded ("+" is a space); when a key repeats, its first
-- value counts. A tag is a key that starts with "utm_" (lower case, as
-- analytics tools write them) and is followed by at least one letter,
-- digit or "_"; an empty value still counts as a tag.

local M = {}

local function decode(text)
  text = text:gsub("%+", " ")
  return (text:gsub("%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- The query of url as a table of decoded key -> value; {} when the link
-- has none, or is not a string.
function M.query(url)
  local out = {}
  if type(url) ~= "string" then return out end
  local query = url:match("^[^#]-%?([^#]*)")
  if query == nil then return out end
  for pair in query:gmatch("[^&]+") do
    local key, value = pair:match("^([^=]*)=?(.*)$")
    key = decode(key)
    if key ~= "" and out[key] == nil then out[key] = decode(value) end
  end
  return out
end

local function is_tag(key)
  return key:match("^utm_[%w_]+$") ~= nil
end

-- The utm_* fields of url's query, or nil when it has none.
function M.tags(url)
  local tags, found = {}, false
  for key, value in pairs(M.query(url)) do
    if is_tag(key) then
      tags[key] = value
      found = true
    end
  end
  return found and tags or nil
end

local function link_of(event)
  local data = type(event) == "table" and event.event_data
  return type(data) == "table" and data.link_url or nil
end

-- The tags of the event's link (event_data.link_url), or nil.
function M.event_tags(event)
  return M.tags(link_of(event))
end

-- True when the event's link has at least one UTM tag: a ready filter,
-- `filter = utm.has_tags`.
function M.has_tags(event)
  return M.event_tags(event) ~= nil
end

return M
