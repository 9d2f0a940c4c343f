-- Tests for hookd.filters: event types, database, each id filter kind,
-- alternatives within a kind, all kinds together, and odd event shapes.

local json = require "hookd.json"
local filters = require "hookd.filters"
local testing = require "testing"

local check, eq = testing.check, testing.eq
local fixture, fixture_path = testing.fixture, testing.fixture_path

-- A compiled match for click events of any database plus the extra keys.
local function hook(extra)
  local h = { actions = { "click" }, database = "all" }
  for k, v in pairs(extra or {}) do h[k] = v end
  return filters.compile(h)
end

local function click(event_data, extra)
  local ev = { event_type = "click", list_id = 111, event_data = event_data }
  for k, v in pairs(extra or {}) do ev[k] = v end
  return ev
end

check("filters_event_type_must_be_listed", function()
  local c = filters.compile({ actions = { "click", "open" }, database = "all" })
  eq(filters.match(c, fixture("click.json")), true, "click")
  eq(filters.match(c, fixture("deliv.json")), false, "deliv")
  eq(filters.match(c, { list_id = 111 }), false, "no event_type")
end)

check("filters_event_types_are_open", function()
  local c = filters.compile({ actions = { "my.custom-event_2" },
    database = "all" })
  eq(filters.match(c, { event_type = "my.custom-event_2" }), true)
end)

check("filters_database_one", function()
  local c = filters.compile({ actions = { "click" }, database = 111 })
  eq(filters.match(c, click({})), true, "list 111")
  eq(filters.match(c, click({}, { list_id = "111" })), true, "list '111'")
  eq(filters.match(c, click({}, { list_id = 50 })), false, "list 50")
  eq(filters.match(c, click({}, { list_id = json.null })), false, "null")
  eq(filters.match(c, { event_type = "click" }), false, "no list_id")
end)

check("filters_database_all", function()
  local c = hook()
  eq(filters.match(c, click({}, { list_id = 50 })), true, "list 50")
  eq(filters.match(c, { event_type = "click" }), true, "no list_id")
end)

check("filters_no_filter_matches_every_event_of_the_type", function()
  eq(filters.match(hook({ filters = {} }), { event_type = "click" }), true)
end)

check("filters_campaigns", function()
  local c = hook({ filters = { campaigns = { 973 } } })
  eq(filters.match(c, click({ campaign_id = 973 })), true, "973")
  eq(filters.match(c, click({ campaign_id = 974 })), false, "974")
end)

check("filters_templates_match_message_id", function()
  local c = hook({ filters = { templates = { 17 } } })
  eq(filters.match(c, click({ message_id = 17 })), true, "17")
  eq(filters.match(c, click({ message_id = 18 })), false, "18")
end)

check("filters_segments", function()
  local c = hook({ filters = { segments = { 41 } } })
  eq(filters.match(c, click({ segment_id = 41 })), true, "41")
  eq(filters.match(c, click({ segment_id = 0 })), false, "0")
end)

check("filters_pixels", function()
  local c = hook({ filters = { pixels = { 9 } } })
  eq(filters.match(c, click({ pixel_id = 9 })), true, "9")
  eq(filters.match(c, click({ pixel_id = 1 })), false, "1")
end)

check("filters_resources_from_event_data", function()
  local c = hook({ filters = { resources = { 3 } } })
  eq(filters.match(c, click({ resource_id = 3 })), true, "3")
  eq(filters.match(c, click({ resource_id = 4 })), false, "4")
end)

check("filters_resources_from_any_subscription", function()
  local c = hook({ filters = { resources = { 12 } } })
  local subs = { { resource_id = 3 }, json.null, { resource_id = 12 } }
  eq(filters.match(c, click({ resource_id = 4 }, { subscription = subs })),
    true, "second subscription")
  eq(filters.match(c, click(nil, { subscription = subs })), true,
    "no event_data")
  eq(filters.match(c, click({}, { subscription = { { resource_id = 3 } } })),
    false, "other resource")
end)

check("filters_alternatives_within_a_kind", function()
  local c = hook({ filters = { campaigns = { 973, 974 } } })
  eq(filters.match(c, click({ campaign_id = 973 })), true, "973")
  eq(filters.match(c, click({ campaign_id = 974 })), true, "974")
  eq(filters.match(c, click({ campaign_id = 130 })), false, "130")
end)

check("filters_all_kinds_must_hold", function()
  local c = hook({ filters = { resources = { 3, 4 }, campaigns = { 973 },
    templates = { 17 }, segments = { 41 }, pixels = { 9 } } })
  local ed = { resource_id = 4, campaign_id = 973, message_id = 17,
    segment_id = 41, pixel_id = 9 }
  eq(filters.match(c, click(ed)), true, "all hold")
  for _, k in ipairs({ "resource_id", "campaign_id", "message_id",
      "segment_id", "pixel_id" }) do
    local one = {}
    for kk, v in pairs(ed) do one[kk] = v end
    one[k] = 5
    eq(filters.match(c, click(one)), false, k .. " differs")
  end
end)

check("filters_missing_attribute_does_not_match", function()
  local c = hook({ filters = { pixels = { 9 } } })
  eq(filters.match(c, click({ campaign_id = 973 })), false, "no pixel_id")
  eq(filters.match(c, click({ pixel_id = json.null })), false, "null")
  eq(filters.match(c, click(nil)), false, "no event_data")
  local r = hook({ filters = { resources = { 3 } } })
  eq(filters.match(r, click({})), false, "no resource at all")
end)

check("filters_string_and_number_ids_compare_as_integers", function()
  local c = hook({ filters = { campaigns = { 973 }, resources = { "3" } } })
  eq(filters.match(c, click({ campaign_id = "973", resource_id = 3 })),
    true, "'973' and 3")
  eq(filters.match(c, click({ campaign_id = 973.5, resource_id = 3 })),
    false, "973.5")
  eq(filters.match(c, click({ campaign_id = "973x", resource_id = 3 })),
    false, "'973x'")
end)

check("filters_odd_shapes_never_raise", function()
  local c = hook({ filters = { resources = { 3 }, campaigns = { 973 } } })
  local odd = {
    click(json.null), click("text"), click({ campaign_id = {} }),
    click({ campaign_id = 973 }, { subscription = "x" }),
    click({ campaign_id = 973 }, { subscription = { 1, "a", json.null } }),
    click({ campaign_id = 973 }, { subscription = json.null }),
    { event_type = json.null }, { event_type = {} },
  }
  for i, ev in ipairs(odd) do
    eq(filters.match(c, ev), false, "odd event " .. i)
  end
end)

-- A straightforward reading of the rules, to compare against on the
-- sample stream.
local function has(list, v)
  for _, x in ipairs(list) do
    if tonumber(v) == x then return true end
  end
  return false
end

local function reference(h, ev)
  local typed = false
  for _, a in ipairs(h.actions) do typed = typed or a == ev.event_type end
  if not typed then return false end
  if h.database ~= "all" and tonumber(ev.list_id) ~= h.database then
    return false
  end
  local ed = type(ev.event_data) == "table" and ev.event_data or {}
  local f = h.filters
  if not has(f.campaigns, ed.campaign_id) then return false end
  local ok = has(f.resources, ed.resource_id)
  local subs = type(ev.subscription) == "table" and ev.subscription or {}
  for _, s in ipairs(subs) do
    ok = ok or has(f.resources, s.resource_id)
  end
  return ok
end

check("filters_sample_stream_agrees_with_reference", function()
  local h = { actions = { "send", "deliv", "click" }, database = 111,
    filters = { campaigns = { 973, 130 }, resources = { 3, 12 } } }
  local c = filters.compile(h)
  local n, hits = 0, 0
  for line in io.lines(fixture_path("sample-1k.ndjson")) do
    local ev = json.decode(line)
    local got = filters.match(c, ev)
    eq(got, reference(h, ev), "event " .. n + 1)
    n = n + 1
    if got then hits = hits + 1 end
  end
  eq(n, 1000, "events read")
  assert(hits > 10 and hits < 900, "hits " .. hits)
end)

print("filters_test: ok")
