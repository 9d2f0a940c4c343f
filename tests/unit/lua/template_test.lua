-- Tests for hookd.template: every variable's exact format, compile errors,
-- and the per-event context cache. Run by lua_runner (CTest sets
-- TZ=Asia/Kolkata so a local-time implementation would shift dates).

local json = require "hookd.json"
local core = require "hookd.core"
local catalog = require "hookd.catalog"
local template = require "hookd.template"
local testing = require "testing"

local check, eq, fixture = testing.check, testing.eq_quoted, testing.fixture

local CAT = assert(catalog.new(fixture("catalog.json")))

-- Renders src for event (a table, or an event_date string) with CAT.
local function render(src, event)
  if type(event) == "string" then
    event = { event_type = "click", event_date = event }
  end
  local c = assert(template.compile(src))
  return template.render(c, template.new_context(event, CAT))
end

local UUID4 = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-"
  .. "%x%x%x%x%x%x%x%x%x%x%x%x$"

check("template_documented_example", function()
  local ev = fixture("click.json")
  local ctx = template.new_context(ev, CAT)
  local function r(src) return template.render(template.compile(src), ctx) end
  eq(r("{{campaign_name}}"), "Black Friday", "cname")
  eq(r("{{event_date_ymd}}"), "2018-03-04", "eventTime")
  eq(r("{{event_date_unix}}"), "1520169199", "eventTimeUnix")
  local id = r("{{uuid}}")
  assert(id:find(UUID4), "id is not a UUID v4: " .. id)
end)

check("template_uuid_new_per_rendering", function()
  local c = template.compile("{{uuid}}")
  local ctx = template.new_context({ event_type = "x" }, CAT)
  local a, b = template.render(c, ctx), template.render(c, ctx)
  assert(a:find(UUID4) and b:find(UUID4), "not UUID v4: " .. a .. " " .. b)
  assert(a ~= b, "two renderings gave the same uuid " .. a)
end)

check("template_event_date_keeps_six_digits", function()
  eq(render("{{event_date}}", "2018-03-04T13:13:19.034315796Z"),
    "2018-03-04T13:13:19.034315Z")
end)

check("template_event_date_truncates_not_rounds", function()
  eq(render("{{event_date}}", "2021-03-17T13:47:00.9999999Z"),
    "2021-03-17T13:47:00.999999Z")
end)

check("template_event_date_removes_trailing_zeros", function()
  eq(render("{{event_date}}", "2021-03-17T13:47:00.1234000Z"),
    "2021-03-17T13:47:00.1234Z")
  eq(render("{{event_date}}", "2021-03-17T13:47:00.100Z"),
    "2021-03-17T13:47:00.1Z")
end)

check("template_event_date_drops_bare_point", function()
  eq(render("{{event_date}}", "2021-03-17T13:47:00.000000900Z"),
    "2021-03-17T13:47:00Z")
  eq(render("{{event_date}}", "2021-03-17T13:47:00Z"),
    "2021-03-17T13:47:00Z")
end)

check("template_event_date_offset_converted_to_utc", function()
  local d = "2021-03-18T01:17:00.5+03:30"
  eq(render("{{event_date}}", d), "2021-03-17T21:47:00.5Z")
  eq(render("{{event_date_ymd}}", d), "2021-03-17")
  eq(render("{{event_date_rfc3339}}", d), "2021-03-17T21:47:00Z")
  eq(render("{{event_date_rfc3339}}", "2021-03-17T23:00:00-02:00"),
    "2021-03-18T01:00:00Z")
end)

check("template_event_date_rfc3339_to_the_second", function()
  eq(render("{{event_date_rfc3339}}", "2018-03-04T13:13:19.034315796Z"),
    "2018-03-04T13:13:19Z")
end)

check("template_event_date_ymd_utc_date", function()
  eq(render("{{event_date_ymd}}", "2018-03-04T13:13:19.034315796Z"),
    "2018-03-04")
  eq(render("{{event_date_ymd}}", "2024-02-29T23:59:59Z"), "2024-02-29")
end)

check("template_event_date_unix_seconds", function()
  eq(render("{{event_date_unix}}", "2018-03-04T13:13:19.999Z"),
    "1520169199")
  eq(render("{{event_date_unix}}", "1970-01-01T00:00:00Z"), "0")
end)

check("template_event_date_unixnano_exact", function()
  eq(render("{{event_date_unixnano}}", "2018-03-04T13:13:19.034315796Z"),
    "1520169199034315796")
  eq(render("{{event_date_unixnano}}", "2018-03-04T13:13:19Z"),
    "1520169199000000000")
  eq(render("{{event_date_unixnano}}", "1970-01-01T00:00:00.000000007Z"),
    "7")
  eq(render("{{event_date_unixnano}}", "1970-01-01T00:00:00Z"), "0")
  eq(render("{{event_date_unixnano}}", "2262-04-11T23:47:16.854775807Z"),
    "9223372036854775807")
end)

check("template_event_date_before_1970", function()
  local d = "1969-12-31T23:59:59.5Z"
  eq(render("{{event_date_unix}}", d), "-1", "unix floors")
  eq(render("{{event_date_unixnano}}", d), "-500000000")
  eq(render("{{event_date}}", d), "1969-12-31T23:59:59.5Z")
  eq(render("{{event_date_ymd}}", d), "1969-12-31")
  local moon = "1969-07-20T20:17:40.000000001Z"
  eq(render("{{event_date_unix}}", moon), "-14182940")
  eq(render("{{event_date_unixnano}}", moon), "-14182939999999999")
  eq(render("{{event_date_rfc3339}}", moon), "1969-07-20T20:17:40Z")
  eq(render("{{event_date_unixnano}}", "1900-01-01T00:00:00Z"),
    "-2208988800000000000")
  eq(render("{{event_date_ymd}}", "1900-03-01T00:00:00Z"), "1900-03-01")
end)

check("template_dates_ignore_local_time_zone", function()
  -- 20:00 UTC is already the next day in Asia/Kolkata (+05:30) and in any
  -- zone east of +04:00; the UTC date and seconds must not move.
  local d = "2018-03-04T20:00:00Z"
  eq(render("{{event_date_ymd}}", d), "2018-03-04")
  eq(render("{{event_date_rfc3339}}", d), "2018-03-04T20:00:00Z")
  eq(render("{{event_date_unix}}", d), "1520193600")
  eq(render("{{event_date}}", "2018-03-04T00:10:00Z"),
    "2018-03-04T00:10:00Z")
  local tz = os.getenv("TZ")
  if tz == "Asia/Kolkata" then
    -- The zone really is in effect, so the checks above could fail.
    eq(os.date("%H:%M", 0), "05:30", "local time at epoch")
  end
end)

check("template_campaign_name_and_subid", function()
  local ev = fixture("click.json")
  eq(render("{{campaign_name}}", ev), "Black Friday")
  eq(render("{{campaign_subid}}", ev), "bf-2026")
end)

check("template_database_name_by_list_id", function()
  eq(render("{{database_name}}", fixture("click.json")), "Customers")
  eq(render("{{database_name}}", { list_id = "50" }), "Leads")
end)

check("template_segment_name", function()
  eq(render("{{segment_name}}", { event_data = { segment_id = 41 } }),
    "Active buyers")
  eq(render("{{segment_name}}", fixture("click.json")), "", "segment 0")
end)

check("template_message_name_and_subject", function()
  local ev = fixture("click.json")
  eq(render("{{message_name}}", ev), "BF main")
  eq(render("{{message_subject}}", ev), "Black Friday: up to 70% off")
  eq(render("{{message_subject}}", { event_data = { message_id = 5 } }),
    "Добро пожаловать!")
end)

check("template_resource_name_from_event_data", function()
  local ev = { event_data = { resource_id = 4 },
    subscription = { { resource_id = 3 } } }
  eq(render("{{resource_name}}", ev), "SMS alerts")
end)

check("template_resource_name_from_subscription", function()
  local ev = { event_data = { campaign_id = 973 },
    subscription = { { channel = "email" }, { resource_id = 12 },
      { resource_id = 3 } } }
  eq(render("{{resource_name}}", ev), "App push")
end)

check("template_names_accept_string_ids", function()
  eq(render("{{campaign_name}}", { event_data = { campaign_id = "974" } }),
    "Cyber Monday")
end)

check("template_missing_names_render_empty", function()
  local none = { event_data = { campaign_id = 0, segment_id = json.null } }
  for _, v in ipairs({ "campaign_name", "campaign_subid", "database_name",
      "segment_name", "message_name", "message_subject",
      "resource_name" }) do
    eq(render("{{" .. v .. "}}", none), "", v .. " with no ids")
    eq(render("{{" .. v .. "}}", { event_data = "odd", subscription = 5 }),
      "", v .. " with odd shapes")
  end
  eq(render("{{campaign_name}}", { event_data = { campaign_id = 999 } }),
    "", "unknown campaign")
  eq(render("{{campaign_subid}}", { event_data = { campaign_id = 130 } }),
    "", "empty subid")
  local c = template.compile("[{{campaign_name}}]")
  local ctx = template.new_context(fixture("click.json"), nil)
  eq(template.render(c, ctx), "[]", "no catalog")
end)

check("template_zero_id_means_none", function()
  local cat = assert(catalog.new({ campaigns = { ["0"] = { name = "Zero" } },
    segments = { ["0"] = { name = "Zero" } } }))
  local ev = { event_data = { campaign_id = 0, segment_id = "0" } }
  local ctx = template.new_context(ev, cat)
  eq(template.render(template.compile("{{campaign_name}}"), ctx), "",
    "campaign 0")
  eq(template.render(template.compile("{{segment_name}}"), ctx), "",
    "segment '0'")
end)

check("template_missing_event_date_renders_empty", function()
  eq(render("{{event_date}}|{{event_date_unix}}", { event_type = "x" }),
    "|")
  eq(render("{{event_date_ymd}}", "yesterday"), "")
end)

check("template_mixed_text_and_variables", function()
  eq(render("{{campaign_name}} / {{event_date_ymd}}", fixture("click.json")),
    "Black Friday / 2018-03-04")
  eq(render("t={{event_date_unix}}&c={{campaign_subid}}.",
    fixture("click.json")), "t=1520169199&c=bf-2026.")
end)

check("template_spaces_inside_braces_accepted", function()
  eq(render("{{ campaign_name }}|{{database_name  }}", fixture("click.json")),
    "Black Friday|Customers")
end)

check("template_text_without_variables_is_constant", function()
  local c = assert(template.compile("plain } text {"))
  eq(c.const, "plain } text {", "compiled constant")
  eq(template.render(c, template.new_context({}, nil)), "plain } text {")
  eq(render("", "2018-03-04T13:13:19Z"), "", "empty template")
end)

check("template_unknown_variable_is_an_error", function()
  local c, err = template.compile("x {{campain_name}} y")
  eq(c, nil, "compiled")
  eq(err, "unknown template variable {{campain_name}}")
  c, err = template.compile("{{ foo }}")
  eq(err, "unknown template variable {{foo}}")
end)

check("template_malformed_variable_is_an_error", function()
  for _, src in ipairs({ "a {{campaign name}} b", "{{}}", "open {{ only",
      "{{{uuid}}}", "{{uuid}" }) do
    local c, err = template.compile(src)
    eq(c, nil, "compiled " .. src)
    assert(err:find("malformed template variable {{", 1, true),
      "error for " .. src .. ": " .. tostring(err))
  end
end)

check("template_non_string_is_an_error", function()
  local c, err = template.compile(42)
  eq(c, nil, "compiled")
  eq(err, "template must be a string")
end)

check("template_context_parses_date_once", function()
  local real, calls = core.parse_time, 0
  core.parse_time = function(s)
    calls = calls + 1
    return real(s)
  end
  local ok, err = pcall(function()
    local ctx = template.new_context(fixture("click.json"), CAT)
    for _, src in ipairs({ "{{event_date}}", "{{event_date_unix}}",
        "{{event_date_ymd}} {{event_date_unixnano}}" }) do
      template.render(template.compile(src), ctx)
    end
  end)
  core.parse_time = real
  assert(ok, err)
  eq(calls, 1, "parse_time calls")
end)

check("template_context_caches_names", function()
  local cat = assert(catalog.new(fixture("catalog.json")))
  local ctx = template.new_context(fixture("click.json"), cat)
  local c = template.compile("{{campaign_name}}")
  eq(template.render(c, ctx), "Black Friday", "first")
  assert(cat:set("campaigns", 973, { name = "Renamed" }))
  eq(template.render(c, ctx), "Black Friday", "same event, cached")
  eq(template.render(c, template.new_context(fixture("click.json"), cat)),
    "Renamed", "next event")
end)

check("template_render_leaves_event_unchanged", function()
  local ev = fixture("click.json")
  local before = json.encode(ev)
  local ctx = template.new_context(ev, CAT)
  for _, v in ipairs(template.VARIABLES) do
    template.render(template.compile("{{" .. v .. "}}"), ctx)
  end
  eq(json.encode(ev), before, "event JSON")
end)

check("template_has_thirteen_variables", function()
  eq(#template.VARIABLES, 13, "variable count")
end)

print("template_test: ok")
