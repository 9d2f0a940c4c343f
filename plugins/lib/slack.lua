-- slack: a message as a Slack-style chat payload, {"text": ..., "blocks":
-- [...]}, with a one-line summary a person reads at a glance.
--
--   local slack = require "slack"
--   shape = function(message)
--     return slack.payload(message, {title = "Bounces"})
--   end
--   slack.summary(message) --> "Hard bounce for p1 (user@example.com)
--                               in campaign 973: mailbox unknown"
--
-- text is the summary (what notifications show); blocks are an optional
-- header with the title, a section with the summary, and a context line
-- with the database, the campaign name or id, and the time. Known event
-- types (clicks, opens, deliveries, bounces, complaints, unsubscribes,
-- sends, imports) have a summary of their own, any other one a generic
-- "<event_type> for <profile>". opts.summaries = {type = function(message)
-- -> text} adds or replaces them. Text from the event is escaped for
-- Slack's mrkdwn (&, < and >) and cut at 300 characters.
--
-- hookd posts a batch as a JSON array even of one message; a receiver
-- that takes one payload per request needs batch_size = 1 and to read the
-- first element (or a small relay in front of it).

local M = {}

local MAX_FIELD = 300

-- s cut to MAX_FIELD bytes, never inside a UTF-8 character (the message
-- must stay valid text), and escaped for mrkdwn.
local function escape(s)
  s = tostring(s)
  if #s > MAX_FIELD then
    local cut = MAX_FIELD - 3
    -- A continuation byte right after the cut: its character straddles it.
    while cut > 0 and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xC0 do
      cut = cut - 1
    end
    s = s:sub(1, cut) .. "..."
  end
  return (s:gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end

local function data_of(m)
  return type(m.event_data) == "table" and m.event_data or {}
end

local function present(v)
  return v ~= nil and v ~= json.null and v ~= ""
end

-- "p1 (user@example.com)": the profile and, when the message has it, an
-- email from custom_data.
local function who(m)
  local id = present(m.profile_id) and escape(m.profile_id) or
    "an unknown profile"
  local cd = type(m.custom_data) == "table" and m.custom_data or {}
  if present(cd.email) then return id .. " (" .. escape(cd.email) .. ")" end
  return id
end

local function campaign(m)
  local cd = type(m.custom_data) == "table" and m.custom_data or {}
  local d = data_of(m)
  if present(cd.cname) then return " in campaign " .. escape(cd.cname) end
  if present(d.campaign_id) then
    return " in campaign " .. escape(d.campaign_id)
  end
  return ""
end

local function reason(m)
  local d = data_of(m)
  local r = present(d.reason) and d.reason or d.detail
  return present(r) and (": " .. escape(r)) or ""
end

local function channel(et)
  return et:match("_sms$") and " (SMS)" or et:match("_push$") and " (push)"
    or ""
end

-- "<text> (SMS) <prep> <who> in campaign <c>"
local function verb(text, prep)
  return function(m)
    return text .. channel(m.event_type) .. " " .. prep .. " " .. who(m) ..
      campaign(m)
  end
end

local function link(m)
  local url = data_of(m).link_url
  return present(url) and (" on <" .. escape(url) .. ">") or ""
end

local function click(m)
  return "Click" .. channel(m.event_type) .. link(m) .. " by " .. who(m) ..
    campaign(m)
end

local function failure(text)
  return function(m)
    return text .. channel(m.event_type) .. " for " .. who(m) ..
      campaign(m) .. reason(m)
  end
end

local SUMMARIES = {
  click = click, uclick = click, click_sms = click, click_push = click,
  uclick_sms = click, uclick_push = click,
  open = verb("Open", "by"), uopen = verb("Open", "by"),
  open_push = verb("Open", "by"), uopen_push = verb("Open", "by"),
  send = verb("Sent", "to"), send_sms = verb("Sent", "to"),
  send_push = verb("Sent", "to"),
  deliv = verb("Delivered", "to"), deliv_sms = verb("Delivered", "to"),
  deliv_push = verb("Delivered", "to"),
  undeliv = failure("Not delivered"), undeliv_sms = failure("Not delivered"),
  undeliv_push = failure("Not delivered"),
  hbounce = failure("Hard bounce"), sbounce = failure("Soft bounce"),
  complain = failure("Spam complaint"), suppress = failure("Suppressed"),
  unsub = failure("Unsubscribed"), unsub_sms = failure("Unsubscribed"),
}
SUMMARIES.import_file = function(m) return "Profile " .. who(m) ..
  " imported from a file" end
SUMMARIES.import_api = function(m) return "Profile " .. who(m) ..
  " imported through the API" end

-- The one-line summary of message (see the top of the file).
function M.summary(message, summaries)
  local et = tostring(message.event_type or "event")
  local fn = (summaries and summaries[et]) or SUMMARIES[et]
  if fn then return fn(message) end
  return escape(et) .. " for " .. who(message) .. campaign(message)
end

local function context(m)
  local parts = {}
  if present(m.list_id) then parts[#parts + 1] = "database " ..
    escape(m.list_id) end
  local cd = type(m.custom_data) == "table" and m.custom_data or {}
  local d = data_of(m)
  if present(cd.cname) then parts[#parts + 1] = escape(cd.cname)
  elseif present(d.campaign_id) then
    parts[#parts + 1] = "campaign " .. escape(d.campaign_id)
  end
  if present(m.event_date) then parts[#parts + 1] = escape(m.event_date) end
  return table.concat(parts, " · ")
end

-- The payload for message: {text, blocks}. opts.title adds a header
-- block; opts.summaries adds or replaces summaries by event type.
function M.payload(message, opts)
  opts = opts or {}
  local text = M.summary(message, opts.summaries)
  local blocks = {}
  if opts.title then
    blocks[#blocks + 1] = {type = "header",
      text = {type = "plain_text", text = tostring(opts.title)}}
  end
  blocks[#blocks + 1] = {type = "section",
    text = {type = "mrkdwn", text = text}}
  local ctx = context(message)
  if ctx ~= "" then
    blocks[#blocks + 1] = {type = "context",
      elements = {{type = "mrkdwn", text = ctx}}}
  end
  return {text = text, blocks = blocks}
end

return M
