-- The static match of a hook: event types (actions), database and the
-- id filters, compiled once into lookup sets so matching an event costs a
-- few table lookups. A hook's own filter() function is applied by the caller.

local json = require "hookd.json"

local M = {}

local type, tonumber, tostring = type, tonumber, tostring
local find, format, floor = string.find, string.format, math.floor

-- The filter kinds and the event_data field each one looks at (resources
-- also look at subscription[].resource_id).
M.KINDS = {
  resources = "resource_id",
  campaigns = "campaign_id",
  templates = "message_id",
  segments = "segment_id",
  pixels = "pixel_id",
}

-- An id as an integer-valued number, from 973 or "973"; nil for anything
-- else (json.null, fractions, big-number literals, other strings).
local function to_int(v)
  local t = type(v)
  if t == "number" then
    if v == floor(v) then return v end
  elseif t == "string" then
    if find(v, "^%-?%d+$") then return tonumber(v) end
  end
  return nil
end
M.to_int = to_int

local function id_set(list)
  if list == nil then return nil end
  local set = {}
  for i = 1, #list do
    local id = to_int(list[i])
    if id ~= nil then set[id] = true end
  end
  return set
end

-- Compiles the match from hook settings (as settings.validate returns
-- them, or any table with the same keys): actions = {types...},
-- database = id | "all", filters = {kind = {ids...}}. Raises on a missing
-- actions list; the settings were validated before.
function M.compile(hook)
  local c = { actions = {}, database = false }
  local actions = hook.actions
  if type(actions) ~= "table" then
    error("filters: actions must be a list", 2)
  end
  for i = 1, #actions do c.actions[actions[i]] = true end
  if hook.database ~= "all" then c.database = to_int(hook.database) end
  local f = hook.filters
  if type(f) == "table" then
    c.resources = id_set(f.resources)
    c.campaigns = id_set(f.campaigns)
    c.templates = id_set(f.templates)
    c.segments = id_set(f.segments)
    c.pixels = id_set(f.pixels)
  end
  c.needs_data = (c.campaigns or c.templates or c.segments or c.pixels)
    and true or false
  return c
end

-- Whether event_data.resource_id or any subscription[].resource_id of the
-- event is in the set.
local function resource_match(set, ed, event)
  if ed and set[to_int(ed.resource_id)] then return true end
  local subs = event.subscription
  if type(subs) ~= "table" then return false end
  for i = 1, #subs do
    local s = subs[i]
    if type(s) == "table" and set[to_int(s.resource_id)] then return true end
  end
  return false
end

-- Whether the event passes the static match: its type is one of the
-- actions, its list_id is the database (unless "all"), and for every kind
-- with a filter one of the ids is on the event. An event lacking what a
-- filter looks at does not match. Never raises on odd event shapes.
function M.match(c, event)
  if not c.actions[event.event_type] then return false end
  local db = c.database
  if db and to_int(event.list_id) ~= db then return false end
  local res = c.resources
  if not c.needs_data and not res then return true end
  local ed = event.event_data
  if type(ed) ~= "table" then ed = nil end
  if c.needs_data then
    if not ed then return false end
    local set = c.campaigns
    if set and not set[to_int(ed.campaign_id)] then return false end
    set = c.templates
    if set and not set[to_int(ed.message_id)] then return false end
    set = c.segments
    if set and not set[to_int(ed.segment_id)] then return false end
    set = c.pixels
    if set and not set[to_int(ed.pixel_id)] then return false end
  end
  if res and not resource_match(res, ed, event) then return false end
  return true
end

-- The kinds that look at one field of event_data, in the order match
-- checks them (resources, which also look at subscriptions, come last).
local DATA_KINDS = { "campaigns", "templates", "segments", "pixels" }

local function shown(v)
  if type(v) == "string" then return format("%q", v) end
  if v == json.null then return "null" end
  return tostring(v)
end

-- Which id filter keeps the event out, or nil. Same order as match.
local function explain_filters(c, event, ed)
  for i = 1, #DATA_KINDS do
    local kind = DATA_KINDS[i]
    local set, field = c[kind], M.KINDS[kind]
    local v = ed and ed[field]
    if set and not set[to_int(v)] then
      if v == nil then
        return format("%s filter: the event has no event_data.%s", kind,
          field)
      end
      return format("%s filter: event_data.%s %s is not in the list", kind,
        field, shown(v))
    end
  end
  if c.resources and not resource_match(c.resources, ed, event) then
    return "resources filter: neither event_data.resource_id nor a " ..
      "subscription[].resource_id is in the list"
  end
  return nil
end

-- Why the event fails the static match: "<stage>: <detail>" naming the
-- stage (actions, database, or the kind of id filter), or nil when it
-- passes. For `hookd try` and a hook's examples; match stays lean for the
-- hot path, so this repeats its checks rather than sharing them.
function M.explain(c, event)
  local et = event.event_type
  if not c.actions[et] then
    return format("actions: event_type %s is not one of the hook's actions",
      shown(et))
  end
  local db = c.database
  if db and to_int(event.list_id) ~= db then
    if event.list_id == nil then
      return format("database: the event has no list_id (the hook's " ..
        "database is %d)", db)
    end
    return format("database: list_id %s is not the hook's database %d",
      shown(event.list_id), db)
  end
  local ed = event.event_data
  if type(ed) ~= "table" then ed = nil end
  return explain_filters(c, event, ed)
end

return M
