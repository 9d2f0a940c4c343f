-- Tests for plugins/lib/dedupe.lua, loaded through the sandbox as a hook
-- loads it: repeats within the window dropped per profile, type and key,
-- the window measured from the last kept event, the LRU bound, event
-- time parsing, and option mistakes reported when the hook loads.

local testing = require "testing"
local json = require "hookd.json"

local check, eq = testing.check, testing.eq
local dedupe = testing.lib_module("dedupe")

-- A clock the test moves: time = clock.get.
local function manual_clock()
  local c = { now = 1000 }
  c.get = function() return c.now end
  return c
end

local function ev(profile, etype, url)
  return { profile_id = profile, event_type = etype or "click",
    event_data = { link_url = url or "https://x.example/a" } }
end

check("dedupe_drops_repeats_within_window", function()
  local clock = manual_clock()
  local d = dedupe.new { window = 60, time = clock.get }
  eq(d:keep(ev("p1")), true, "first")
  eq(d:keep(ev("p1")), false, "repeat")
  clock.now = clock.now + 59
  eq(d:keep(ev("p1")), false, "still within")
  clock.now = clock.now + 1
  eq(d:keep(ev("p1")), true, "window passed since the kept one")
  eq(d:keep(ev("p1")), false, "and a new window starts")
end)

check("dedupe_identity_is_profile_type_and_key", function()
  local clock = manual_clock()
  local d = dedupe.new { window = 60, key = "event_data.link_url",
    time = clock.get }
  eq(d:keep(ev("p1", "click", "u1")), true, "first")
  eq(d:keep(ev("p2", "click", "u1")), true, "other profile")
  eq(d:keep(ev("p1", "open", "u1")), true, "other type")
  eq(d:keep(ev("p1", "click", "u2")), true, "other key")
  eq(d:keep(ev("p1", "click", "u1")), false, "same all three")
  eq(d:keep({ event_type = "click" }), true, "no profile: never a repeat")
  eq(d:keep({ event_type = "click" }), true, "no profile again")
  eq(d:keep(ev(json.null)), true, "null profile")
  eq(d:size(), 4, "remembered keys")
end)

check("dedupe_key_function_and_numbers", function()
  local clock = manual_clock()
  local d = dedupe.new { window = 10, time = clock.get,
    key = function(e) return e.event_data.campaign_id end }
  local a = { profile_id = 7, event_type = "open",
    event_data = { campaign_id = 973 } }
  eq(d:keep(a), true, "first")
  eq(d:keep(a), false, "repeat with a numeric profile")
  local d2 = dedupe.new { window = 10, time = clock.get }
  eq(d2:keep(ev("p1", "click", "u1")), true, "no key")
  eq(d2:keep(ev("p1", "click", "u2")), false, "no key: links do not count")
end)

check("dedupe_memory_is_bounded_lru", function()
  local clock = manual_clock()
  local d = dedupe.new { window = 1000, max_entries = 3, time = clock.get }
  for _, p in ipairs({ "a", "b", "c" }) do d:keep(ev(p)) end
  eq(d:keep(ev("a")), false, "a remembered and now most recent")
  eq(d:keep(ev("d")), true, "d pushes out the least recent, b")
  eq(d:size(), 3, "bounded")
  eq(d:keep(ev("b")), true, "b was forgotten")
  eq(d:keep(ev("a")), false, "a still remembered")
  for i = 1, 1000 do d:keep(ev("p" .. i)) end
  eq(d:size(), 3, "still bounded")
end)

check("dedupe_filter_and_default_clock", function()
  local keep = dedupe.filter { window = 3600 }
  eq(keep(ev("p1")), true, "first")
  eq(keep(ev("p1")), false, "repeat within the hour")
end)

check("dedupe_event_time_parses_rfc3339", function()
  local t = dedupe.event_time
  eq(t({ event_date = "1970-01-01T00:00:00Z" }), 0, "epoch")
  eq(t({ event_date = "2018-03-04T13:13:19.034315796Z" }) - 1520169199 < 1,
    true, "fraction")
  eq(math.floor(t({ event_date = "2018-03-04T13:13:19.5Z" })), 1520169199,
    "floor")
  eq(t({ event_date = "2018-03-04T14:13:19+01:00" }), 1520169199, "offset")
  eq(t({ event_date = "2018-03-04T08:13:19-05:00" }), 1520169199, "minus")
  eq(t({ event_date = "2000-02-29T00:00:00Z" }), 951782400, "leap day")
  local now = os.time()
  assert(math.abs(t({ event_date = "garbage" }) - now) <= 1, "fallback")
  assert(math.abs(t({}) - now) <= 1, "no date")
end)

check("dedupe_by_event_time", function()
  local d = dedupe.new { window = 60, time = dedupe.event_time }
  local function at(date)
    return { profile_id = "p", event_type = "click", event_date = date }
  end
  eq(d:keep(at("2026-11-01T10:00:00Z")), true, "first")
  eq(d:keep(at("2026-11-01T10:00:59Z")), false, "59 s later")
  eq(d:keep(at("2026-11-01T09:59:30Z")), false, "earlier, within")
  eq(d:keep(at("2026-11-01T10:01:00Z")), true, "60 s later")
end)

check("dedupe_option_mistakes_fail_at_load", function()
  local function bad(opts, want)
    local ok, err = pcall(dedupe.new, opts)
    eq(ok, false, "refused: " .. want)
    assert(tostring(err):find(want, 1, true), tostring(err))
  end
  bad({}, "window must be a positive number")
  bad({ window = -1 }, "window must be a positive number")
  bad({ window = 0 / 0 }, "window must be a positive number")
  bad({ window = 1, max_entries = 0 }, "max_entries must be")
  bad({ window = 1, key = 5 }, "key must be a dotted path")
  bad({ window = 1, time = 5 }, "time must be a function")
  bad({ window = 1, windw = 2 }, "unknown option 'windw'")
end)
