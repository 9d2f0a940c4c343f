-- Tests for plugins/lib/flatten.lua, loaded through the sandbox as a hook
-- loads it: dotted keys, arrays by index from 0, null and empty values,
-- the depth limit, messages flattening only the named fields, and that
-- the result encodes as one flat JSON object.

local testing = require "testing"
local json = require "hookd.json"

local check, eq = testing.check, testing.eq
local flatten = testing.lib_module("flatten")

local count = testing.count

check("flatten_nested_objects_and_arrays", function()
  local v = json.decode([[{"a": {"b": 1, "c": ["x", {"d": true}]},
    "e": null, "f": [], "g": {}, "h": "text"}]])
  local out = flatten.value(v)
  eq(out["a.b"], 1, "a.b")
  eq(out["a.c.0"], "x", "first element has index 0")
  eq(out["a.c.1.d"], true, "object inside array")
  eq(out.e, json.null, "null kept")
  eq(json.encode(out.f), "[]", "empty array kept")
  eq(json.encode(out.g), "{}", "empty object kept")
  eq(out.h, "text", "top-level scalar")
  eq(count(out), 7, "keys")
end)

check("flatten_depth_limit_keeps_rest_as_json", function()
  local v = json.decode([=[{"a": {"b": {"c": {"d": 1}}}, "x": [[1, 2]]}]=])
  local out = flatten.value(v, { max_depth = 2 })
  eq(out["a.b"], '{"c":{"d":1}}', "cut at depth 2")
  eq(out["x.0"], "[1,2]", "arrays too")
  eq(flatten.value(v, { max_depth = 4 })["a.b.c.d"], 1, "deep enough")
end)

check("flatten_separator_and_big_numbers", function()
  local v = json.decode('{"a": {"b": 12345678901234567890}}')
  local out = flatten.value(v, { sep = "_" })
  eq(json.encode(out), '{"a_b":12345678901234567890}', "literal kept")
end)

check("flatten_message_only_named_fields", function()
  local msg = json.decode([[{"event_type": "click", "list_id": 111,
    "event_data": {"campaign_id": 973, "geo": {"country": ".de"}},
    "custom_data": {"tags": ["a", "b"]},
    "subscription": [{"resource_id": 3}]}]])
  local out = flatten.message(msg)
  eq(out.event_type, "click", "top level kept")
  eq(out["event_data.campaign_id"], 973, "event_data flattened")
  eq(out["event_data.geo.country"], ".de", "nested")
  eq(out["custom_data.tags.1"], "b", "custom_data arrays")
  eq(out.event_data, nil, "no nested event_data left")
  eq(out.subscription[1].resource_id, 3, "other fields as they came")
  local only = flatten.message(msg, { fields = { "subscription" } })
  eq(only["subscription.0.resource_id"], 3, "chosen field")
  eq(only.event_data.campaign_id, 973, "event_data left alone")
  local empty = flatten.message(json.decode('{"event_data": {}}'))
  eq(json.encode(empty), '{"event_data":{}}', "empty field kept")
end)

check("flatten_message_encodes_flat", function()
  local ev = testing.fixture("click.json")
  local text = json.encode(flatten.message(ev))
  local back = json.decode(text)
  for k, v in pairs(back) do
    if k ~= "custom_data.email" then
      assert(type(v) ~= "table", "nested value at " .. k)
    end
  end
  eq(back["event_data.link_url"], "http://www.example.com/", "link")
  eq(back["custom_data.email"], "subscriber@example.com", "email")
end)

check("flatten_option_mistakes", function()
  for _, opts in ipairs({ { max_depth = 0 }, { max_depth = 1.5 },
      { max_depth = "2" }, { sep = 1 } }) do
    local ok = pcall(flatten.value, {}, opts)
    eq(ok, false, "refused " .. json.encode(opts))
  end
  eq(count(flatten.value("x")), 0, "a scalar has no keys")
end)
