-- Tests for hookd.message: custom_data precedence, profile fields and
-- templates, profile and content handling, and the shared event untouched.

local json = require "hookd.json"
local catalog = require "hookd.catalog"
local template = require "hookd.template"
local message = require "hookd.message"
local testing = require "testing"

local check, eq, fixture = testing.check, testing.eq, testing.fixture

local CAT = assert(catalog.new(fixture("catalog.json")))

-- A hook as settings.validate returns it (only the keys build reads).
local function hook(t)
  t = t or {}
  local compiled = nil
  if t.custom_data then
    compiled = {}
    for k, src in pairs(t.custom_data) do
      compiled[k] = assert(template.compile(src))
    end
  end
  return { content = t.content or false, profile_fields = t.profile_fields,
    custom_data = compiled }
end

local function build(h, ev, lookup)
  return message.build(h, ev, template.new_context(ev, CAT), lookup)
end

local count = testing.count

-- A click with an inline profile and no custom_data.
local function profiled_click()
  local ev = fixture("click.json")
  ev.custom_data = nil
  ev.profile_id = "p1"
  ev.profile = json.decode('{"email":"a@example.com","bonus":374,'
    .. '"vip":false,"tags":["x"],"city":null}')
  return ev
end

check("message_nonempty_custom_data_kept_as_is", function()
  local ev = fixture("click.json")
  local msg = build(hook({ profile_fields = { "email" },
    custom_data = { cname = "{{campaign_name}}" } }), ev)
  eq(msg.custom_data, ev.custom_data, "same custom_data table")
  eq(count(msg.custom_data), 1, "keys in custom_data")
  eq(msg.custom_data.email, "subscriber@example.com", "email")
  eq(msg.custom_data.cname, nil, "template added")
end)

check("message_empty_custom_data_is_built", function()
  local ev = fixture("click.json")
  ev.custom_data = json.object({})
  local msg = build(hook({ custom_data = { cname = "{{campaign_name}}" } }),
    ev)
  eq(msg.custom_data.cname, "Black Friday", "cname")
  eq(count(ev.custom_data), 0, "event's {} untouched")
end)

check("message_missing_or_null_custom_data_is_built", function()
  local h = hook({ custom_data = { day = "{{event_date_ymd}}" } })
  local ev = fixture("click.json")
  ev.custom_data = nil
  eq(build(h, ev).custom_data.day, "2018-03-04", "missing")
  ev.custom_data = json.null
  eq(build(h, ev).custom_data.day, "2018-03-04", "null")
end)

check("message_built_custom_data_empty_is_object", function()
  local ev = fixture("click.json")
  ev.custom_data = nil
  local msg = build(hook(), ev)
  eq(type(msg.custom_data), "table", "custom_data type")
  eq(next(msg.custom_data), nil, "custom_data keys")
  eq(getmetatable(msg.custom_data), json.object_mt, "marked object")
  assert(json.encode(msg):find('"custom_data":{}', 1, true),
    "encoded: " .. json.encode(msg))
end)

check("message_profile_fields_keep_json_types", function()
  local ev = profiled_click()
  local msg = build(hook({ profile_fields = { "email", "bonus", "vip",
    "tags", "city" } }), ev)
  local cd = msg.custom_data
  eq(cd.email, "a@example.com", "email")
  eq(cd.bonus, 374, "bonus number")
  eq(cd.vip, false, "vip boolean")
  eq(cd.tags, ev.profile.tags, "tags array")
  eq(cd.city, json.null, "city null")
end)

check("message_missing_profile_field_left_out", function()
  local msg = build(hook({ profile_fields = { "email", "phone" } }),
    profiled_click())
  eq(msg.custom_data.phone, nil, "phone")
  eq(count(msg.custom_data), 1, "keys")
end)

check("message_profile_lookup_fills_missing_fields", function()
  local calls = {}
  local function lookup(list_id, profile_id, field)
    calls[#calls + 1] = table.concat({ list_id, profile_id, field }, "/")
    if field == "phone" then return "+100" end
    return nil
  end
  local msg = build(hook({ profile_fields = { "email", "phone", "fax" } }),
    profiled_click(), lookup)
  eq(msg.custom_data.email, "a@example.com", "inline wins")
  eq(msg.custom_data.phone, "+100", "looked up")
  eq(msg.custom_data.fax, nil, "absent everywhere")
  eq(table.concat(calls, " "), "111/p1/phone 111/p1/fax", "lookups")
end)

check("message_profile_lookup_skipped_without_profile_id", function()
  local ev = profiled_click()
  ev.profile_id = nil
  local called = false
  build(hook({ profile_fields = { "phone" } }), ev, function()
    called = true
  end)
  eq(called, false, "lookup called")
end)

check("message_templates_after_profile_fields", function()
  local msg = build(hook({ profile_fields = { "email", "bonus" },
    custom_data = { bonus = "{{campaign_subid}}",
      cname = "{{campaign_name}}" } }),
    profiled_click())
  eq(msg.custom_data.email, "a@example.com", "email")
  eq(msg.custom_data.bonus, "bf-2026", "template wins over field")
  eq(msg.custom_data.cname, "Black Friday", "cname")
end)

check("message_profile_never_copied", function()
  local msg = build(hook({ profile_fields = { "email" }, content = true }),
    profiled_click())
  eq(msg.profile, nil, "profile")
end)

check("message_content_only_with_flag", function()
  local ev = fixture("click.json")
  ev.content = json.decode('{"email":{"subject":"Hi"}}')
  eq(build(hook(), ev).content, nil, "without flag")
  eq(build(hook({ content = true }), ev).content, ev.content, "with flag")
end)

check("message_other_fields_sent_as_received", function()
  local ev = fixture("click.json")
  local msg = build(hook({ custom_data = { x = "{{event_date}}" } }), ev)
  eq(msg.event_date, "2018-03-04T13:13:19.034315796Z", "event_date text")
  for k, v in pairs(ev) do eq(msg[k], v, k) end
  eq(count(msg), count(ev), "top-level keys")
  eq(getmetatable(msg), json.object_mt, "message marked object")
end)

check("message_event_not_modified", function()
  local ev = profiled_click()
  ev.content = json.decode('{"sms":{"text":"t"}}')
  local before = json.encode(ev)
  local h = hook({ profile_fields = { "email" },
    custom_data = { c = "{{campaign_name}}" } })
  local a = build(h, ev)
  local b = build(hook({ content = true }), ev)
  eq(json.encode(ev), before, "event JSON")
  assert(a.custom_data ~= b.custom_data, "custom_data shared between hooks")
  eq(ev.custom_data, nil, "event custom_data")
end)

check("message_without_context_renders_names_empty", function()
  local ev = fixture("click.json")
  ev.custom_data = nil
  local msg = message.build(hook({ custom_data = {
    c = "{{campaign_name}}", d = "{{event_date_ymd}}" } }), ev, nil, nil)
  eq(msg.custom_data.c, "", "name")
  eq(msg.custom_data.d, "2018-03-04", "date")
end)

print("message_test: ok")
