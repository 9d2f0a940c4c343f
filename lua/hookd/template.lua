-- custom_data templates: compiling "{{variable}}" text once at load time,
-- and rendering it per event from a context that caches what the variables
-- derive from the event (its parsed date, catalog names).

local json = require "hookd.json"
local core = require "hookd.core"
local catalog_mod = require "hookd.catalog"

local M = {}

local type, setmetatable, getmetatable = type, setmetatable, getmetatable
local find, sub, format, gsub = string.find, string.sub, string.format,
  string.gsub
local concat, floor = table.concat, math.floor
local id_key = catalog_mod.id_key

-- Compiled templates carry this metatable, so settings.describe can show
-- their source text.
local compiled_mt = {}
compiled_mt.__tostring = function(c) return c.source end
M.compiled_mt = compiled_mt

-- ---- event date, computed once per context ----

-- Proleptic Gregorian date for a count of days since 1970-01-01 (UTC
-- arithmetic only, so the host's TZ never matters).
local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524)
    - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- Exact decimal unix nanoseconds from (sec, nsec), nsec in [0, 1e9).
local function unixnano(sec, nsec)
  if sec >= 0 then
    if sec == 0 then return format("%d", nsec) end
    return format("%d%09d", sec, nsec)
  end
  -- sec * 1e9 + nsec = -((-sec - 1) * 1e9 + (1e9 - nsec)) when nsec > 0.
  if nsec == 0 then return format("-%d000000000", -sec) end
  local hi, lo = -sec - 1, 1000000000 - nsec
  if hi == 0 then return format("-%d", lo) end
  return format("-%d%09d", hi, lo)
end

-- Each date variable's text from the event date's (sec, nsec).
local function ymd_of(sec)
  return format("%04d-%02d-%02d", civil_from_days(floor(sec / 86400)))
end

local function hms_of(sec)
  local secs = sec - floor(sec / 86400) * 86400
  return format("%02d:%02d:%02d", floor(secs / 3600), floor(secs / 60) % 60,
    secs % 60)
end

local DATE_FORMS = {
  date_ymd = ymd_of,
  date_rfc3339 = function(sec)
    return ymd_of(sec) .. "T" .. hms_of(sec) .. "Z"
  end,
  date_text = function(sec, nsec)
    local us, frac = floor(nsec / 1000), ""
    if us > 0 then frac = "." .. gsub(format("%06d", us), "0+$", "") end
    return ymd_of(sec) .. "T" .. hms_of(sec) .. frac .. "Z"
  end,
  date_unix = function(sec) return format("%d", sec) end,
  date_unixnano = unixnano,
}

-- Parses the event date once per context into ctx.date_sec and
-- ctx.date_nsec; an event without a parsable event_date leaves them nil
-- and renders every date variable as "" (events from the ingest are
-- always valid). Each form is made only when a template asks for it.
local function load_date(ctx)
  ctx.date_loaded = true
  local text = ctx.event.event_date
  if type(text) ~= "string" then return end
  ctx.date_sec, ctx.date_nsec = core.parse_time(text)
end

-- ---- catalog names, looked up once per context ----

-- event_data.<name> of the event, reading only that member of it.
local peek = json.peek
local function data_field(ctx, name)
  return peek(ctx.event, "event_data", name)
end

-- A usable id key, with 0 meaning "none".
local function ref(v)
  local key = id_key(v)
  if key == "0" then return nil end
  return key
end

local function first_subscription_resource(event)
  local subs = event.subscription
  if type(subs) ~= "table" then return nil end
  for i = 1, #subs do
    local s = subs[i]
    if type(s) == "table" then
      local key = ref(s.resource_id)
      if key then return key end
    end
  end
  return nil
end

-- The id each kind is looked up by, from the event.
local function lookup_id(ctx, kind)
  if kind == "databases" then return ref(ctx.event.list_id) end
  if kind == "resources" then
    return ref(data_field(ctx, "resource_id"))
      or first_subscription_resource(ctx.event)
  end
  if kind == "campaigns" then return ref(data_field(ctx, "campaign_id")) end
  if kind == "segments" then return ref(data_field(ctx, "segment_id")) end
  return ref(data_field(ctx, "message_id")) -- templates
end

-- Returns the catalog entry of a kind for this event, or false; cached.
local function entry(ctx, kind)
  local cache = ctx.entries
  if not cache then
    cache = {}
    ctx.entries = cache
  end
  local e = cache[kind]
  if e ~= nil then return e end
  e = false
  local cat = ctx.catalog
  if cat then
    local id = lookup_id(ctx, kind)
    if id then e = cat:get(kind, id) or false end
  end
  cache[kind] = e
  return e
end

local function field(ctx, kind, name)
  local e = entry(ctx, kind)
  if not e then return "" end
  local v = e[name]
  if type(v) == "string" then return v end
  return ""
end

-- ---- the variables: name -> function(ctx) returning a string ----
--   uuid                 a new random UUID v4 at every rendering
--   event_date           UTC, at most 6 fraction digits, truncated, trailing
--                        zeros dropped: 2018-03-04T13:13:19.034315Z
--   event_date_ymd       2018-03-04 (UTC date)
--   event_date_rfc3339   2018-03-04T13:13:19Z
--   event_date_unix      1520169199 (floor; -1 for 1969-12-31T23:59:59.5Z)
--   event_date_unixnano  1520169199034315796 (exact)
--   campaign_name, campaign_subid     by event_data.campaign_id
--   database_name                     by list_id
--   segment_name                      by event_data.segment_id
--   message_name, message_subject     by event_data.message_id
--   resource_name        by event_data.resource_id, else the first
--                        subscription[].resource_id
-- A name whose id is missing, null, 0 or not in the catalog renders "".

local function date_var(key)
  local form = DATE_FORMS[key]
  return function(ctx)
    local v = ctx[key]
    if v ~= nil then return v end
    if not ctx.date_loaded then load_date(ctx) end
    local sec = ctx.date_sec
    v = sec and form(sec, ctx.date_nsec) or ""
    ctx[key] = v
    return v
  end
end

local VARS = {
  uuid = function() return core.uuid4() end,
  event_date = date_var("date_text"),
  event_date_ymd = date_var("date_ymd"),
  event_date_rfc3339 = date_var("date_rfc3339"),
  event_date_unix = date_var("date_unix"),
  event_date_unixnano = date_var("date_unixnano"),
  campaign_name = function(c) return field(c, "campaigns", "name") end,
  campaign_subid = function(c) return field(c, "campaigns", "subid") end,
  database_name = function(c) return field(c, "databases", "name") end,
  segment_name = function(c) return field(c, "segments", "name") end,
  message_name = function(c) return field(c, "templates", "name") end,
  message_subject = function(c) return field(c, "templates", "subject") end,
  resource_name = function(c) return field(c, "resources", "name") end,
}

-- The variable names, sorted, for documentation and error messages.
M.VARIABLES = {}
for name in pairs(VARS) do M.VARIABLES[#M.VARIABLES + 1] = name end
table.sort(M.VARIABLES)

-- ---- compiling ----

-- Text shown for a bad "{{...": up to the closing "}}" or 40 bytes.
local function bad_excerpt(str, at)
  local close = find(str, "}}", at + 2, true)
  local stop = close and close + 1 or #str
  if stop - at > 40 then stop = at + 39 end
  return sub(str, at, stop)
end

-- Splits str into literal strings and variable functions. Returns the
-- parts list, or nil and an error.
local function split(str)
  local parts, pos = {}, 1
  while true do
    local open = find(str, "{{", pos, true)
    if not open then break end
    if open > pos then parts[#parts + 1] = sub(str, pos, open - 1) end
    local s, e, name = find(str, "^{{%s*([%a_][%w_]*)%s*}}", open)
    if not s then
      return nil, format("malformed template variable %s",
        bad_excerpt(str, open))
    end
    local fn = VARS[name]
    if not fn then
      return nil, format("unknown template variable {{%s}}", name)
    end
    parts[#parts + 1] = fn
    pos = e + 1
  end
  if pos <= #str then parts[#parts + 1] = sub(str, pos) end
  return parts
end

-- Compiles a template. Variables are written {{name}}; spaces inside the
-- braces are accepted ({{ uuid }}). There is no escape: any "{{" in the
-- text must start a valid variable. Returns the compiled template, or nil
-- and "unknown template variable {{foo}}" / "malformed template variable
-- ..." / "template must be a string".
function M.compile(str)
  if type(str) ~= "string" then return nil, "template must be a string" end
  local parts, err = split(str)
  if not parts then return nil, err end
  local c = { source = str, n = #parts, parts = parts }
  if #parts == 0 then
    c.const = ""
  elseif #parts == 1 then
    if type(parts[1]) == "string" then c.const = parts[1] else
      c.var = parts[1]
    end
  end
  return setmetatable(c, compiled_mt)
end

function M.is_compiled(v)
  return type(v) == "table" and getmetatable(v) == compiled_mt
end

-- ---- rendering ----

-- Creates the per-event context. One context serves every hook rendering
-- for the same event, so dates are parsed and names looked up once.
-- catalog may be nil (every name renders as ""). The event is not changed.
-- Every field is named here, so the table is made with room for them and
-- for two date forms, rather than grown as they are added.
function M.new_context(event, catalog)
  return { event = event, catalog = catalog, entries = false,
    date_loaded = false, date_sec = false, date_nsec = false }
end

local scratch = {} -- reused by render; rendering never re-enters itself

-- Renders a compiled template for the context; always returns a string.
function M.render(c, ctx)
  local const = c.const
  if const then return const end
  local var = c.var
  if var then return var(ctx) end
  local parts, buf = c.parts, scratch
  local n = c.n
  for i = 1, n do
    local p = parts[i]
    if type(p) == "string" then buf[i] = p else buf[i] = p(ctx) end
  end
  return concat(buf, "", 1, n)
end

return M
