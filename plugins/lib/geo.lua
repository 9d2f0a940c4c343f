-- geo: keep or drop events by where they happened, from the country, city
-- and region fields of event_data, with allow and deny lists.
--
--   local geo = require "geo"
--   local in_market = geo.filter {
--     countries = {allow = {"de", "at", "ch"}},
--     cities = {deny = {"Berlin"}},
--   }
--   return { ..., filter = in_market }
--
-- Each of countries, cities and regions takes allow (only these pass)
-- and/or deny (these never pass); the kinds given must all hold. Countries
-- are compared without a leading dot and case ("DE", "de" and ".de" are
-- one), cities and regions without surrounding blanks and, for ASCII
-- letters, case. An event whose field is missing or empty has an unknown
-- place: it fails an allow list unless keep_unknown = true is given, and
-- passes a deny list. A mistake in the rules (an unknown kind, a list that
-- is not a list of strings) is an error when the hook loads.
--
--   geo.place(event) --> {country = "de", city = "berlin", region = ...}
--                        (normalized; a field is nil when unknown)

local M = {}

local FIELDS = {countries = "country", cities = "city", regions = "region"}

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- The compared form of a value of kind, or nil when it is unknown.
local function normalize(kind, value)
  if type(value) ~= "string" then return nil end
  value = trim(value):lower()
  if kind == "countries" then value = value:gsub("^%.", "") end
  if value == "" then return nil end
  return value
end

-- The event's place, normalized; fields are nil when unknown.
function M.place(event)
  local data = type(event) == "table" and event.event_data
  if type(data) ~= "table" then data = {} end
  return {
    country = normalize("countries", data.country),
    city = normalize("cities", data.city),
    region = normalize("regions", data.region),
  }
end

-- A list of strings as a set of normalized values.
local function value_set(kind, which, list)
  if type(list) ~= "table" or #list == 0 then
    error("geo: " .. kind .. "." .. which ..
      " must be a non-empty list of strings", 4)
  end
  local set = {}
  for i, v in ipairs(list) do
    local n = normalize(kind, v)
    if n == nil then
      error("geo: " .. kind .. "." .. which .. "[" .. i ..
        "] must be a non-empty string", 4)
    end
    set[n] = true
  end
  return set
end

local function compile_kind(kind, rule)
  if type(rule) ~= "table" then
    error("geo: " .. kind .. " must be a table {allow = ..., deny = ...}", 3)
  end
  local out = {}
  for key, list in pairs(rule) do
    if key ~= "allow" and key ~= "deny" then
      error("geo: " .. kind .. "." .. tostring(key) ..
        ": unknown key (allow, deny)", 3)
    end
    out[key] = value_set(kind, key, list)
  end
  return out
end

local function passes(rule, value, keep_unknown)
  if value == nil then return rule.allow == nil or keep_unknown end
  if rule.allow and not rule.allow[value] then return false end
  return not (rule.deny and rule.deny[value])
end

-- A filter function(event) -> boolean for the rules (see above).
function M.filter(rules)
  if type(rules) ~= "table" then
    error("geo.filter: give a table of rules", 2)
  end
  local compiled, keep_unknown = {}, false
  for key, rule in pairs(rules) do
    if key == "keep_unknown" then
      if type(rule) ~= "boolean" then
        error("geo.filter: keep_unknown must be true or false", 2)
      end
      keep_unknown = rule
    elseif FIELDS[key] then
      compiled[FIELDS[key]] = compile_kind(key, rule)
    else
      error("geo.filter: unknown key '" .. tostring(key) ..
        "' (countries, cities, regions, keep_unknown)", 2)
    end
  end
  return function(event)
    local place = M.place(event)
    for field, rule in pairs(compiled) do
      if not passes(rule, place[field], keep_unknown) then return false end
    end
    return true
  end
end

return M
