-- Tests for plugins/lib/geo.lua, loaded through the sandbox as a hook
-- loads it: normalized places, allow and deny lists per kind, unknown
-- places, and rule mistakes reported when the hook loads.

local testing = require "testing"
local json = require "hookd.json"

local check, eq = testing.check, testing.eq
local geo = testing.lib_module("geo")

local function at(country, city, region)
  return { event_type = "click",
    event_data = { country = country, city = city, region = region } }
end

-- Asserts geo.filter(rules) fails with a message containing want.
local function bad(rules, want)
  local ok, err = pcall(geo.filter, rules)
  eq(ok, false, "rules refused: " .. want)
  assert(tostring(err):find(want, 1, true), tostring(err))
end

check("geo_place_normalizes", function()
  local p = geo.place(at(".DE", " Berlin ", "Berlin"))
  eq(p.country, "de", "country without dot and case")
  eq(p.city, "berlin", "city trimmed, lower case")
  eq(p.region, "berlin", "region")
  local u = geo.place(at("", json.null, nil))
  eq(u.country, nil, "empty is unknown")
  eq(u.city, nil, "null is unknown")
  eq(u.region, nil, "missing is unknown")
  eq(geo.place({}).country, nil, "no event_data")
  eq(geo.place({ event_data = json.null }).city, nil, "null event_data")
end)

check("geo_allow_countries", function()
  local keep = geo.filter { countries = { allow = { "de", ".US", "at" } } }
  eq(keep(at(".de")), true, ".de")
  eq(keep(at("us")), true, "us")
  eq(keep(at(".jp")), false, "not allowed")
  eq(keep(at("")), false, "unknown fails an allow list")
  eq(keep({ event_type = "open" }), false, "no data")
end)

check("geo_deny_cities_and_unknown", function()
  local keep = geo.filter { cities = { deny = { "Berlin", "New York" } } }
  eq(keep(at(".de", "Berlin")), false, "denied")
  eq(keep(at(".us", "new york")), false, "case")
  eq(keep(at(".de", "Hamburg")), true, "other city")
  eq(keep(at(".de", "")), true, "unknown passes a deny list")
end)

check("geo_kinds_combine_and_keep_unknown", function()
  local keep = geo.filter {
    countries = { allow = { "de" }, deny = { "de" } },
  }
  eq(keep(at(".de")), false, "deny wins within a kind")
  keep = geo.filter {
    countries = { allow = { "de" } }, regions = { deny = { "Bayern" } },
    keep_unknown = true,
  }
  eq(keep(at(".de", "x", "Berlin")), true, "both hold")
  eq(keep(at(".de", "x", "Bayern")), false, "region denied")
  eq(keep(at("", "x", "Berlin")), true, "unknown country kept")
  eq(keep(at(".fr", "x", "")), false, "known and not allowed")
end)

check("geo_rule_mistakes_fail_at_load", function()
  bad({ contries = { allow = { "de" } } }, "unknown key 'contries'")
  bad({ countries = { allow = {} } }, "countries.allow must be a non-empty")
  bad({ countries = { allow = { "de", 5 } } }, "countries.allow[2]")
  bad({ countries = { allow = { "" } } }, "countries.allow[1]")
  bad({ cities = { only = { "x" } } }, "cities.only: unknown key")
  bad({ regions = "x" }, "regions must be a table")
  bad({ keep_unknown = "yes" }, "keep_unknown must be true or false")
  bad("de", "give a table of rules")
end)

check("geo_filter_on_sample_matches_independent_count", function()
  local keep = geo.filter { countries = { allow = { "de", "us" } },
    cities = { deny = { "Berlin" } } }
  local f = assert(io.open(testing.fixture_path("sample-1k.ndjson")))
  local got, want = 0, 0
  for line in f:lines() do
    local ev = json.decode(line)
    local d = type(ev.event_data) == "table" and ev.event_data or {}
    if (d.country == ".de" or d.country == ".us") and d.city ~= "Berlin" then
      want = want + 1
    end
    if keep(ev) then got = got + 1 end
  end
  f:close()
  assert(want > 0, "the sample has such events")
  eq(got, want, "kept")
end)
