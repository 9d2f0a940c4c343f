-- Tests for plugins/lib/slack.lua, loaded through the sandbox as a hook
-- loads it: the payload's shape, summaries per event type, escaping and
-- cutting text safely, overrides, and that every sample event gives a
-- payload that encodes.

local testing = require "testing"
local json = require "hookd.json"

local check, eq = testing.check, testing.eq
local slack = testing.lib_module("slack")

local function msg(fields)
  local m = { event_type = "click", profile_id = "p1", list_id = 111,
    event_date = "2026-11-01T10:00:00Z",
    event_data = { campaign_id = 973, link_url = "https://x.example/?a=1&b" },
    custom_data = { email = "u@example.com" } }
  for k, v in pairs(fields or {}) do m[k] = v end
  return m
end

check("slack_payload_shape", function()
  local p = slack.payload(msg(), { title = "Clicks" })
  eq(p.text, "Click on <https://x.example/?a=1&amp;b> by p1 (u@example.com)"
    .. " in campaign 973", "text")
  eq(#p.blocks, 3, "header, section, context")
  eq(p.blocks[1].type, "header", "header")
  eq(p.blocks[1].text.text, "Clicks", "title")
  eq(p.blocks[2].type, "section", "section")
  eq(p.blocks[2].text.type, "mrkdwn", "mrkdwn")
  eq(p.blocks[2].text.text, p.text, "section text is the summary")
  eq(p.blocks[3].elements[1].text,
    "database 111 · campaign 973 · 2026-11-01T10:00:00Z", "context")
  local encoded = json.decode(json.encode(p))
  eq(encoded.blocks[2].text.text, p.text, "encodes")
  eq(#slack.payload(msg()).blocks, 2, "no title, no header")
end)

check("slack_summaries_per_type", function()
  eq(slack.summary(msg({ event_type = "hbounce",
    event_data = { campaign_id = 5, reason = "mailbox unknown" } })),
    "Hard bounce for p1 (u@example.com) in campaign 5: mailbox unknown",
    "bounce")
  eq(slack.summary(msg({ event_type = "deliv_sms", custom_data = {} })),
    "Delivered (SMS) to p1 in campaign 973", "delivery by SMS")
  eq(slack.summary(msg({ event_type = "open_push", profile_id = json.null })),
    "Open (push) by an unknown profile (u@example.com) in campaign 973",
    "no profile")
  eq(slack.summary(msg({ event_type = "unsub", event_data = {} })),
    "Unsubscribed for p1 (u@example.com)", "no campaign")
  eq(slack.summary(msg({ event_type = "promocode_activate",
    event_data = json.null, custom_data = json.null })),
    "promocode_activate for p1", "unknown type")
  eq(slack.summary(msg({ custom_data = { cname = "Sale <1>" } })),
    "Click on <https://x.example/?a=1&amp;b> by p1 in campaign Sale &lt;1&gt;",
    "campaign name escaped")
end)

check("slack_summary_overrides", function()
  local p = slack.payload(msg(), { summaries = {
    click = function(m) return "custom " .. m.profile_id end } })
  eq(p.text, "custom p1", "override")
end)

check("slack_long_text_cut_on_character_boundary", function()
  local long = string.rep("я", 400) -- two bytes each
  local text = slack.summary(msg({ event_type = "unsub", profile_id = long,
    custom_data = {}, event_data = {} }))
  local cut = text:match("^Unsubscribed for (.*)$")
  assert(#cut <= 300, "cut to 300 bytes: " .. #cut)
  eq(cut:sub(-3), "...", "marked")
  assert(cut:sub(1, -4):match("^[\208\209\143\128-\191]*$"), "whole chars")
  eq((#cut - 3) % 2, 0, "no half character")
  json.encode({ text }) -- valid UTF-8 encodes
end)

check("slack_every_sample_event_encodes", function()
  local f = assert(io.open(testing.fixture_path("sample-1k.ndjson")))
  local n = 0
  for line in f:lines() do
    local p = slack.payload(json.decode(line), { title = "t" })
    assert(type(p.text) == "string" and p.text ~= "", line)
    json.encode(p)
    n = n + 1
  end
  f:close()
  eq(n, 1000, "events")
end)
