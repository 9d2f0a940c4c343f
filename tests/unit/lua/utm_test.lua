-- Tests for plugins/lib/utm.lua, loaded through the sandbox as a hook
-- loads it: query parsing and decoding, which keys are tags, and the
-- event helpers, checked against the example events too.

local testing = require "testing"
local json = require "hookd.json"

local check, eq = testing.check, testing.eq
local utm = testing.lib_module("utm")

local count = testing.count

local function click(url)
  return { event_type = "click", event_data = { link_url = url } }
end

check("utm_query_parses_and_decodes", function()
  local q = utm.query("https://x.example/p?a=1&b=two+words&c=%41%2f&d&e=#f=9")
  eq(q.a, "1", "a")
  eq(q.b, "two words", "plus is a space")
  eq(q.c, "A/", "percent escapes")
  eq(q.d, "", "key without =")
  eq(q.e, "", "empty value")
  eq(q.f, nil, "fragment is not query")
  eq(count(q), 5, "keys")
end)

check("utm_query_edge_cases", function()
  eq(count(utm.query("https://x.example/p")), 0, "no query")
  eq(count(utm.query("https://x.example/p#x?a=1")), 0, "? after #")
  eq(count(utm.query(nil)), 0, "nil")
  eq(count(utm.query(5)), 0, "number")
  eq(utm.query("?a=1&a=2").a, "1", "first value wins")
  eq(utm.query("?=1&&b=2").b, "2", "empty parts skipped")
  eq(utm.query("?a=x=y").a, "x=y", "= inside a value")
end)

check("utm_tags_only_utm_keys", function()
  local t = utm.tags("https://x.example/?utm_source=mail&utm_medium=email"
    .. "&id=7&utm_=x&UTM_TERM=y&utm_campaign=black%20friday")
  eq(t.utm_source, "mail", "source")
  eq(t.utm_medium, "email", "medium")
  eq(t.utm_campaign, "black friday", "decoded")
  eq(t.id, nil, "not a tag")
  eq(t.utm_, nil, "utm_ alone is no tag")
  eq(t.UTM_TERM, nil, "upper case is no tag")
  eq(count(t), 3, "tags")
  eq(utm.tags("https://x.example/?id=7"), nil, "no tags")
  eq(utm.tags("https://x.example/?utm_source=").utm_source, "", "empty")
end)

check("utm_event_helpers", function()
  eq(utm.has_tags(click("https://x.example/?utm_source=mail")), true, "has")
  eq(utm.has_tags(click("https://x.example/?id=1")), false, "none")
  eq(utm.has_tags({ event_type = "click" }), false, "no event_data")
  eq(utm.has_tags({ event_data = { link_url = json.null } }), false, "null")
  eq(utm.has_tags({ event_data = json.null }), false, "null data")
  eq(utm.event_tags(click("https://x.example/?utm_term=a")).utm_term, "a",
    "event_tags")
end)

-- The example hook utm_clicks.lua counts a link as tagged when a utm_ key
-- appears after ? or &; on the sample events the module agrees with it.
check("utm_agrees_with_example_hook_on_sample", function()
  local f = assert(io.open(testing.fixture_path("sample-1k.ndjson")))
  local tagged, links = 0, 0
  for line in f:lines() do
    local ev = json.decode(line)
    local url = type(ev.event_data) == "table" and ev.event_data.link_url
    if type(url) == "string" then
      links = links + 1
      local simple = url:find("[?&]utm_[%w_]+=") ~= nil
      eq(utm.has_tags(ev), simple, url)
      if simple then tagged = tagged + 1 end
    end
  end
  f:close()
  assert(tagged > 0, "the sample has tagged links")
  eq(utm.has_tags(testing.fixture("click.json")), false, "click.json")
end)
