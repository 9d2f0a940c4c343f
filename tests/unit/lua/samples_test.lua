-- Tests for hookd.samples: a sample of every event type of the spec that
-- the ingest would accept and that has its group's event_data, the options
-- (now, list_id, catalog, seed), generic samples of unknown types, and the
-- errors for malformed types and options.

local json = require "hookd.json"
local core = require "hookd.core"
local catalog = require "hookd.catalog"
local filters = require "hookd.filters"
local template = require "hookd.template"
local message = require "hookd.message"
local samples = require "hookd.samples"
local testing = require "testing"

local check, eq, fixture = testing.check, testing.eq, testing.fixture

local CAT = assert(catalog.new(fixture("catalog.json")))
local NOW = 1615988820.25 -- 2021-03-17T13:47:00.25Z

-- The types of the spec (section 3), by the event_data they carry. Written
-- out here rather than taken from the module, so a type it drops fails.
local GROUPS = {
  delivery = { "send", "deliv", "complain", "suppress", "reply", "send_sms",
    "deliv_sms", "send_push", "deliv_push" },
  failure = { "undeliv", "sbounce", "hbounce", "undeliv_sms",
    "undeliv_push" },
  tracking = { "uopen", "open", "read", "glanced", "skimmed", "unsub_sms",
    "open_push", "uopen_push" },
  link = { "uclick", "click", "confirm", "confirmsub", "unsub", "click_sms",
    "uclick_sms", "click_push", "uclick_push" },
  import = { "import_manual", "import_file", "import_api" },
  detail = { "profile_merge", "profile_split", "subscription_status",
    "promocode_assign", "promocode_activate" },
  pixel = { "pixel" },
  launch = { "campaign_launch" },
}

local SPEC_TYPES, GROUP_OF = {}, {}
for group, names in pairs(GROUPS) do
  for _, t in ipairs(names) do
    SPEC_TYPES[#SPEC_TYPES + 1] = t
    GROUP_OF[t] = group
  end
end
table.sort(SPEC_TYPES)

local function channel_of(t)
  if t:find("_sms$") then return "sms" end
  if t:find("_push$") then return "push" end
  return "email"
end

local function sample(t, opts)
  local ev, err = samples.event(t, opts)
  assert(ev, t .. ": " .. tostring(err))
  return ev
end

local function is_int(v)
  return type(v) == "number" and v == math.floor(v)
end

local function want_int(v, what)
  assert(is_int(v), what .. ": not an integer: " .. tostring(v))
end

local function want_string(v, what, pattern)
  assert(type(v) == "string", what .. ": not a string: " .. tostring(v))
  if pattern then
    assert(v:find(pattern), what .. ": " .. v .. " does not match " .. pattern)
  end
end

-- a and b hold the same values, and their tables the same metatables (so
-- they encode alike).
local function same(a, b, path)
  path = path or "event"
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b then
      error(path .. ": " .. tostring(a) .. " vs " .. tostring(b), 0)
    end
    return
  end
  if getmetatable(a) ~= getmetatable(b) then
    error(path .. ": metatables differ", 0)
  end
  for k, v in pairs(a) do same(v, b[k], path .. "." .. tostring(k)) end
  for k in pairs(b) do
    if a[k] == nil then error(path .. "." .. tostring(k) .. ": extra", 0) end
  end
end

-- What the ingest checks on every event (core/json_scan.c): event_type of
-- 1-128 letters, digits, '_', '-', '.'; event_date an RFC 3339 string that
-- the core's own parser accepts. The date must also be UTC as the spec says.
local function passes_ingest(ev, what)
  local t = ev.event_type
  want_string(t, what .. " event_type", "^[A-Za-z0-9_.%-]+$")
  assert(#t <= 128, what .. ": event_type too long")
  want_string(ev.event_date, what .. " event_date",
    "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%d%d%d%dZ$")
  assert(core.parse_time(ev.event_date), what .. ": event_date unparsable")
end

-- The fields every sample has, as the corpus writes them.
local function has_envelope(ev, t)
  eq(ev.event_type, t, t .. " event_type")
  want_string(ev.profile_id, t .. " profile_id", "^%x+$")
  want_string(ev._xxh, t .. " _xxh", "^" .. ("%x"):rep(16) .. "$")
  want_string(ev._md5, t .. " _md5", "^" .. ("%x"):rep(32) .. "$")
  want_string(ev.subscription_hash_id, t .. " subscription_hash_id")
  want_int(ev.list_id, t .. " list_id")
  assert(ev.list_id > 0, t .. ": list_id " .. ev.list_id)
  want_int(ev.account_id, t .. " account_id")
  eq(ev.is_test, false, t .. " is_test")
  eq(ev.hookd_test, true, t .. " hookd_test")
  eq(ev.custom_data, nil, t .. " custom_data")
  eq(getmetatable(ev), json.object_mt, t .. " event marked object")
  eq(getmetatable(ev.event_data), json.object_mt, t .. " event_data mark")
  eq(getmetatable(ev.subscription), json.array_mt, t .. " subscription mark")
  eq(#ev.subscription, 1, t .. " subscriptions")
end

check("samples_types_sorted_and_cover_the_spec", function()
  local types = samples.types()
  for i = 2, #types do
    assert(types[i - 1] < types[i], "not sorted or repeated: " .. types[i])
  end
  eq(#types, #SPEC_TYPES, "number of types")
  for i = 1, #SPEC_TYPES do eq(types[i], SPEC_TYPES[i], "type " .. i) end
  types[1] = "changed"
  eq(samples.types()[1], SPEC_TYPES[1], "list is a copy")
end)

check("samples_every_type_passes_ingest_and_encodes", function()
  for _, t in ipairs(samples.types()) do
    local ev = sample(t, { seed = 11, now = NOW })
    passes_ingest(ev, t)
    has_envelope(ev, t)
    local text = assert(json.encode(ev))
    assert(text:find('"subscription":[{', 1, true), t .. ": " .. text)
    local back = assert(json.decode(text))
    same(back, ev, t)
  end
end)

local function message_fields(ed, t)
  for _, k in ipairs({ "message_id", "campaign_id", "segment_id",
      "resource_id" }) do
    want_int(ed[k], t .. " " .. k)
  end
  want_string(ed.launch_id, t .. " launch_id", "^%x+$")
  want_string(ed.send_message_id, t .. " send_message_id", "%S")
end

local function tracking_fields(ed, t)
  message_fields(ed, t)
  want_string(ed.ip, t .. " ip", "^%d+%.%d+%.%d+%.%d+$")
  want_string(ed.country, t .. " country", "^%.?%a*$")
  for _, k in ipairs({ "city", "postal_code", "region", "tz", "user_agent",
      "os", "browser", "device" }) do
    want_string(ed[k], t .. " " .. k)
  end
  assert(type(ed.lat) == "number" and type(ed.lon) == "number",
    t .. ": lat/lon")
  if channel_of(t) == "push" then want_string(ed.extra_uid, t .. " uid") end
end

local CHECK_GROUP = {
  delivery = message_fields,
  failure = function(ed, t)
    message_fields(ed, t)
    want_string(ed.reason, t .. " reason", "%S")
  end,
  tracking = tracking_fields,
  link = function(ed, t)
    tracking_fields(ed, t)
    want_string(ed.link_url, t .. " link_url", "^https://")
  end,
  import = function(ed, t)
    want_int(ed.import_id, t .. " import_id")
    want_int(ed.fields_updated, t .. " fields_updated")
  end,
  detail = function(ed, t)
    eq(ed.detail, t, t .. " detail")
    want_int(ed.value, t .. " value")
  end,
  pixel = function(ed, t)
    want_int(ed.pixel_id, t .. " pixel_id")
    want_string(ed.url, t .. " url", "^https://")
  end,
  launch = function(ed, t)
    want_int(ed.campaign_id, t .. " campaign_id")
    want_string(ed.launch_id, t .. " launch_id", "^%x+$")
  end,
}

check("samples_event_data_per_group", function()
  for _, t in ipairs(SPEC_TYPES) do
    for seed = 1, 20 do
      local ev = sample(t, { seed = seed, now = NOW })
      CHECK_GROUP[GROUP_OF[t]](ev.event_data, t)
    end
  end
end)

check("samples_send_events_carry_content", function()
  for _, t in ipairs(SPEC_TYPES) do
    local ev = sample(t, { seed = 3 })
    local ch = channel_of(t)
    if t:find("^send") then
      eq(getmetatable(ev.content), json.object_mt, t .. " content mark")
      eq(type(ev.content[ch]), "table", t .. " content." .. ch)
    else
      eq(ev.content, nil, t .. " content")
    end
  end
  want_string(sample("send").content.email.subject, "subject", "%S")
  want_string(sample("send_sms").content.sms.text, "sms text", "%S")
  want_string(sample("send_push").content.push.title, "push title", "%S")
end)

check("samples_subscription_per_channel", function()
  for _, t in ipairs(SPEC_TYPES) do
    local ev = sample(t, { seed = 5 })
    local s, ch = ev.subscription[1], channel_of(t)
    eq(s.channel, ch, t .. " channel")
    eq(s.resource_id, ev.event_data.resource_id or s.resource_id,
      t .. " resource_id matches event_data")
    want_int(s.resource_id, t .. " subscription resource_id")
    if ch == "sms" then
      want_string(s.phone, t .. " phone", "^%+1555%d%d%d%d%d%d%d$")
    elseif ch == "push" then
      want_string(s.subscription_id, t .. " subscription_id")
      want_string(s.provider, t .. " provider")
    else
      want_string(s.email, t .. " email", "@")
    end
  end
end)

-- Every string in v, with the path to it.
local function each_string(v, path, fn)
  if type(v) == "string" then return fn(v, path) end
  if type(v) ~= "table" then return end
  for k, item in pairs(v) do each_string(item, path .. "." .. k, fn) end
end

local EXAMPLE_DOMAIN = { ["example.com"] = true, ["example.org"] = true }

local function only_examples(s, path)
  local domain = s:match("^[^@%s]+@([^@%s]+)$")
  if domain then assert(EXAMPLE_DOMAIN[domain], path .. ": " .. s) end
  local host = s:match("^https?://([^/?#:]+)")
  if host then
    assert(EXAMPLE_DOMAIN[host] or EXAMPLE_DOMAIN[host:match("%.(.*)$")],
      path .. ": " .. s)
  end
  if path:find("phone$") then
    assert(s:find("^%+1555%d+$"), path .. ": " .. s)
  end
end

check("samples_only_example_addresses", function()
  local seen_email = 0
  for _, t in ipairs(SPEC_TYPES) do
    for seed = 1, 10 do
      local ev = sample(t, { seed = seed })
      each_string(ev, t, only_examples)
      if ev.subscription[1].email then seen_email = seen_email + 1 end
    end
  end
  assert(seen_email > 0, "no email address checked")
end)

check("samples_event_date_is_now_in_utc", function()
  -- The test runs with TZ=Asia/Kolkata: local time would show 19:17.
  eq(sample("click", { now = NOW }).event_date,
    "2021-03-17T13:47:00.250000000Z", "fractional now")
  eq(sample("click", { now = 1520169199 }).event_date,
    "2018-03-04T13:13:19.000000000Z", "whole seconds")
  eq(sample("click", { now = 0 }).event_date,
    "1970-01-01T00:00:00.000000000Z", "epoch")
  -- The double just below a whole second rounds up to it.
  eq(sample("click", { now = 1615988821 - 2 ^ -22 }).event_date,
    "2021-03-17T13:47:01.000000000Z", "rounded up into the next second")
  local sec = core.parse_time(sample("deliv").event_date)
  assert(math.abs(sec - core.now()) < 5, "default now: " .. sec)
end)

check("samples_list_id_option_is_used", function()
  for _, t in ipairs(samples.types()) do
    local ev = sample(t, { list_id = 50, seed = 9 })
    eq(ev.list_id, 50, t .. " list_id")
    local hook = filters.compile({ actions = { t }, database = 50 })
    eq(filters.match(hook, ev), true, t .. " captured by database 50")
    hook = filters.compile({ actions = { t }, database = 51 })
    eq(filters.match(hook, ev), false, t .. " captured by database 51")
  end
  eq(sample("click", { list_id = "111" }).list_id, 111, "decimal text")
  local big = sample("click", { list_id = "9007199254740993" })
  assert(json.encode(big):find('"list_id":9007199254740993', 1, true),
    "big list_id: " .. json.encode(big))
end)

check("samples_bad_list_id_is_an_error", function()
  for _, bad in ipairs({ 0, -1, 1.5, "abc", "", true, {} }) do
    local ev, err = samples.event("click", { list_id = bad })
    eq(ev, nil, "event for list_id " .. tostring(bad))
    want_string(err, "error", "list_id")
  end
end)

local function render(src, ev, cat)
  return template.render(assert(template.compile(src)),
    template.new_context(ev, cat))
end

local NAMES = {
  campaign_name = { "campaigns", "campaign_id" },
  message_name = { "templates", "message_id" },
  resource_name = { "resources", "resource_id" },
  segment_name = { "segments", "segment_id" },
}

-- Each id of ev's event_data that NAMES covers is in the catalog and its
-- {{..._name}} renders the catalog's name.
local function uses_catalog(ev, t)
  local ed = ev.event_data
  for var, where in pairs(NAMES) do
    local id = ed[where[2]]
    if id ~= nil then
      local entry = CAT:get(where[1], id)
      assert(entry, t .. ": " .. where[2] .. " " .. id .. " not in catalog")
      eq(render("{{" .. var .. "}}", ev, CAT), entry.name, t .. " " .. var)
    end
  end
  eq(render("{{database_name}}", ev, CAT), CAT:get("databases",
    ev.list_id).name, t .. " database_name")
end

check("samples_catalog_ids_are_used", function()
  for _, t in ipairs(SPEC_TYPES) do
    for seed = 1, 10 do uses_catalog(sample(t, { seed = seed,
      catalog = CAT }), t) end
  end
  local ev = sample("send", { seed = 4, catalog = CAT })
  eq(ev.content.email.subject, CAT:get("templates",
    ev.event_data.message_id).subject, "subject from the catalog")
  eq(sample("click", { catalog = CAT, list_id = 7 }).list_id, 7,
    "list_id wins over the catalog")
end)

check("samples_catalog_as_plain_table", function()
  local plain = fixture("catalog.json")
  for _, t in ipairs({ "click", "send", "campaign_launch" }) do
    same(sample(t, { seed = 8, now = NOW, catalog = plain }),
      sample(t, { seed = 8, now = NOW, catalog = CAT }), t)
  end
  local ev, err = samples.event("click", {
    catalog = json.decode('{"campains": {}}') })
  eq(ev, nil, "event for a bad catalog")
  want_string(err, "error", "unknown kind")
  ev, err = samples.event("click", { catalog = "catalog.json" })
  eq(ev, nil, "event for a string catalog")
  want_string(err, "error", "catalog")
end)

check("samples_empty_catalog_falls_back", function()
  local ev = sample("click", { catalog = catalog.new(nil), seed = 2 })
  want_int(ev.event_data.campaign_id, "campaign_id")
  want_int(ev.list_id, "list_id")
  want_int(ev.event_data.segment_id, "segment_id")
end)

check("samples_same_seed_same_event", function()
  for _, t in ipairs(samples.types()) do
    local opts = { seed = 42, now = NOW, catalog = CAT }
    same(sample(t, opts), sample(t, opts), t)
  end
  for _, seed in ipairs({ 0, -7, 2.5, 1e300 }) do
    same(sample("click", { seed = seed, now = NOW }),
      sample("click", { seed = seed, now = NOW }), "seed " .. seed)
  end
  local a = sample("click", { seed = 1, now = NOW })
  local b = sample("click", { seed = 2, now = NOW })
  assert(a.profile_id ~= b.profile_id, "seeds 1 and 2 give one profile")
  assert(sample("click").profile_id ~= sample("click").profile_id,
    "no seed: two samples alike")
end)

check("samples_unknown_valid_type_is_generic", function()
  for _, t in ipairs({ "my.custom-event_1", ("a"):rep(128), "Click", "7" }) do
    local ev = sample(t, { seed = 6, list_id = 111 })
    passes_ingest(ev, t)
    has_envelope(ev, t)
    eq(next(ev.event_data), nil, t .. " event_data keys")
    eq(ev.subscription[1].channel, "email", t .. " channel")
    assert(json.encode(ev):find('"event_data":{}', 1, true),
      t .. ": " .. json.encode(ev))
  end
end)

check("samples_malformed_type_is_an_error", function()
  local bad = { "", ("a"):rep(129), "bad type", "a/b", "клик", "tab\t",
    "click\0", 42, true, {} }
  for i = 1, #bad do
    local ev, err = samples.event(bad[i])
    eq(ev, nil, "event for bad type " .. i)
    want_string(err, "error for bad type " .. i, "event type")
  end
  local ev, err = samples.event(nil)
  eq(ev, nil, "event for nil")
  want_string(err, "error for nil", "event type")
end)

check("samples_bad_options_are_errors", function()
  local cases = {
    { "x", "options" }, { { now = -1 }, "now" }, { { now = 1 / 0 }, "now" },
    { { now = 0 / 0 }, "now" }, { { now = "1" }, "now" },
    { { now = 253402300800 }, "now" }, { { seed = 0 / 0 }, "seed" },
    { { seed = "7" }, "seed" },
  }
  for i, c in ipairs(cases) do
    local ev, err = samples.event("click", c[1])
    eq(ev, nil, "event for case " .. i)
    want_string(err, "error for case " .. i, c[2])
  end
end)

check("samples_run_through_a_hook", function()
  local hook = { content = false, profile_fields = { "email" },
    custom_data = { c = assert(template.compile("{{campaign_name}}")),
      d = assert(template.compile("{{event_date_unix}}")) } }
  local ev = sample("click", { seed = 12, now = NOW, catalog = CAT })
  local before = json.encode(ev)
  local msg = message.build(hook, ev, template.new_context(ev, CAT))
  eq(msg.custom_data.c, CAT:get("campaigns", ev.event_data.campaign_id).name,
    "campaign name")
  eq(msg.custom_data.d, "1615988820", "event_date_unix")
  eq(msg.custom_data.email, ev.subscription[1].email, "profile email")
  eq(msg.profile, nil, "inline profile left out")
  eq(msg.hookd_test, true, "hookd_test kept")
  eq(msg.is_test, false, "is_test kept")
  assert(json.encode(msg), "message encodes")
  eq(json.encode(ev), before, "sample unchanged")
end)

print("samples_test: ok")
