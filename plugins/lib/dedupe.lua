-- dedupe: drop repeats. An event is a repeat when an event of the same
-- profile_id, event_type and key was kept less than `window` seconds
-- before it; the first one passes, the repeats are dropped until the
-- window has passed, then the next one passes again.
--
--   local dedupe = require "dedupe"
--   local once = dedupe.new {
--     window = 3600,                  -- seconds
--     key = "event_data.link_url",    -- a dotted path, or function(event)
--     max_entries = 50000,            -- memory bound (default 10000)
--   }
--   return { ..., filter = function(event) return once:keep(event) end }
--
-- Without key only profile_id and event_type count. Events without a
-- profile_id are never repeats. Time is the arrival time (os.time());
-- time = dedupe.event_time judges by the event's own event_date instead,
-- which suits replays and historical exports, or give any
-- function(event) -> seconds.
--
-- What it remembers lives in the hook's memory in this router process:
-- it is not shared between routers, it starts empty when hookd restarts,
-- and it starts empty when the hook is reloaded (its file, or a module it
-- requires, changed), so a repeat that straddles a restart or a reload
-- passes. At most max_entries keys are kept; past that the least recently
-- seen key is forgotten first (an LRU list), so memory stays bounded
-- whatever the traffic. Put keep() last in a filter so that events other
-- conditions drop are not remembered.

local M = {}

local Dedupe = {}
Dedupe.__index = Dedupe

-- The value at a dotted path of the event ("event_data.link_url").
local function at_path(event, path)
  local v = event
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = v[part]
  end
  return v
end

local function key_function(key)
  if key == nil then return function() return "" end end
  if type(key) == "function" then return key end
  if type(key) == "string" and key ~= "" then
    return function(event) return at_path(event, key) end
  end
  error("dedupe: key must be a dotted path or a function(event)", 3)
end

local function positive(v, what)
  if type(v) ~= "number" or v <= 0 or v ~= v then
    error("dedupe: " .. what .. " must be a positive number", 3)
  end
  return v
end

-- A new deduplicator; see the top of the file for the options.
function M.new(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "window" and k ~= "key" and k ~= "max_entries" and
        k ~= "time" then
      error("dedupe: unknown option '" .. tostring(k) ..
        "' (window, key, max_entries, time)", 2)
    end
  end
  local time = opts.time or function() return os.time() end
  if type(time) ~= "function" then
    error("dedupe: time must be a function(event) -> seconds", 2)
  end
  local self = setmetatable({
    window = positive(opts.window, "window"),
    max_entries = math.floor(positive(opts.max_entries or 10000,
      "max_entries")),
    key_of = key_function(opts.key), time = time,
    entries = {}, count = 0,
  }, Dedupe)
  -- The LRU list runs from head (most recent) to tail (least recent).
  self.head = {}
  self.tail = {}
  self.head.next, self.tail.prev = self.tail, self.head
  return self
end

local function unlink(e)
  e.prev.next, e.next.prev = e.next, e.prev
end

local function push_front(self, e)
  e.prev, e.next = self.head, self.head.next
  self.head.next.prev = e
  self.head.next = e
end

local function forget_oldest(self)
  local e = self.tail.prev
  unlink(e)
  self.entries[e.id] = nil
  self.count = self.count - 1
end

-- The identity of an event, or nil when it has no profile_id.
local function identity(self, event)
  local profile = event.profile_id
  if profile == nil or (type(profile) ~= "string" and
      type(profile) ~= "number") then
    return nil
  end
  local key = self.key_of(event)
  if key == nil then key = "" end
  return tostring(profile) .. "\0" .. tostring(event.event_type) .. "\0" ..
    (type(key) == "table" and json.encode(key) or tostring(key))
end

-- True when the event passes (not a repeat); remembers it when it does.
function Dedupe:keep(event)
  local id = identity(self, event)
  if id == nil then return true end
  local now = self.time(event)
  local e = self.entries[id]
  if e then
    unlink(e)
    push_front(self, e)
    if math.abs(now - e.at) < self.window then return false end
    e.at = now
    return true
  end
  e = {id = id, at = now}
  self.entries[id] = e
  self.count = self.count + 1
  push_front(self, e)
  if self.count > self.max_entries then forget_oldest(self) end
  return true
end

-- How many keys are remembered.
function Dedupe:size()
  return self.count
end

-- A filter function(event) for dedupe.new(opts).
function M.filter(opts)
  local d = M.new(opts)
  return function(event) return d:keep(event) end
end

local function days_from_civil(y, m, d)
  -- Days since 1970-01-01 of a proleptic Gregorian date.
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Seconds since the epoch of the event's event_date (RFC 3339: "Z" or an
-- offset, fractions allowed), for time = dedupe.event_time. An event
-- without a readable date gets the arrival time.
function M.event_time(event)
  local text = type(event) == "table" and event.event_date
  if type(text) ~= "string" then return os.time() end
  local y, mo, d, h, mi, s, frac, zone = text:match(
    "^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if y == nil then return os.time() end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  if #frac > 1 then t = t + tonumber("0" .. frac) end
  local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
  if sign then
    local offset = tonumber(zh) * 3600 + tonumber(zm) * 60
    t = sign == "+" and t - offset or t + offset
  elseif zone ~= "Z" and zone ~= "z" and zone ~= "" then
    return os.time()
  end
  return t
end

return M
