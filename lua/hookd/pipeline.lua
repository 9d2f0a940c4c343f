-- One hook's work on one event: its filter(), the message, its shape(),
-- and where the message goes. For a hook with code of its own, all of it
-- runs under the guard (see guard.lua): its functions, and any metamethod
-- they left on the event or the message that the message builder then
-- meets, count against the hook's CPU and memory limits, so none of it
-- can stall the router or the other hooks.
local guard = require "hookd.guard"
local json = require "hookd.json"
local catalog_mod = require "hookd.catalog"

local M = {}

local copy = json.copy

-- A built message made safe to hand to shape(), which may change it at
-- will: its custom_data (profile fields) and content come from caches
-- that every hook shares; the rest is the hook's own copy of the event.
local function own(msg)
  local cd, content = rawget(msg, "custom_data"), rawget(msg, "content")
  if type(cd) == "table" then msg.custom_data = copy(cd) end
  if type(content) == "table" then msg.content = copy(content) end
  return msg
end

local type, tostring, rawget = type, tostring, rawget
local id_key = catalog_mod.id_key

-- A value that keys a Kafka message: strings as they are, integers in
-- decimal; nil (no key) for anything else.
local function key_text(v)
  if type(v) == "string" then return v end
  if type(v) == "number" or type(v) == "userdata" then
    return id_key(v) or (v ~= json.null and tostring(v) or nil)
  end
  return nil
end

-- A member of a table, read raw, so that no metamethod a hook left runs
-- here; only the event's own, which decodes a member kept as text (a
-- container, or a string such as a list_id given as one) on first read,
-- is let through.
local event_mt = json.event_mt
local function member(t, key)
  if getmetatable(t) == event_mt then return t[key] end
  return rawget(t, key)
end

-- The value at a dotted path of the event.
local function field_at(event, path)
  local v = event
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = member(v, part)
  end
  return v
end

-- Where a broker message goes, and its key: a queue (the hook's, or one
-- named after the event type), an exchange routing key
-- "<list_id>.<event_type>" ("none" for an event without a database), or
-- a Kafka topic and key. nil for HTTP hooks.
function M.destination(send, event)
  local t = send.type
  if t == "http" then return nil end
  local et = member(event, "event_type")
  if t == "rabbitmq_queue" then
    return send.queue ~= "" and send.queue or et
  elseif t == "rabbitmq_exchange" then
    return (id_key(member(event, "list_id")) or "none") .. "." .. et
  elseif t == "kafka" then
    local key = send.key and key_text(field_at(event, send.key)) or nil
    return send.topic ~= "" and send.topic or et, key
  end
  return nil
end

-- An error as its first line (file, line, message), so a log line stays
-- one line.
local function first_line(err)
  return (tostring(err):gsub("\n.*", ""))
end
M.first_line = first_line

-- The call in progress, passed through upvalues rather than a closure so
-- that the hot path allocates nothing.
local cur_hook, cur_event, cur_ctx, cur_build, cur_skip, cur_parts
local stage, out_msg, out_route, out_key, out_text, out_content, out_keep
local encode = json.encode

local function work()
  local hook, event = cur_hook, cur_event
  stage = "filter"
  if hook.filter and not cur_skip and not hook.filter(event) then
    return "filtered"
  end
  stage = "message"
  if cur_parts and not hook.shape then
    out_msg, out_content, out_keep = cur_parts(hook.settings, event, cur_ctx)
    out_route, out_key = M.destination(hook.settings.send, event)
    return "parts"
  end
  local msg = cur_build(hook.settings, event, cur_ctx)
  if hook.shape then
    msg = own(msg)
    stage = "shape"
    msg = hook.shape(msg, event)
    if not msg then
      out_msg = msg
      return "dropped"
    end
    stage = "message"
  end
  out_route, out_key = M.destination(hook.settings.send, event)
  out_msg = msg
  if hook.isolate and not cur_parts then -- the hook's code made it
    stage = "encode"
    local ok, text = pcall(encode, msg)
    -- The codec's error says where it was called: here, not in the hook.
    if not ok then error((tostring(text):gsub("^[^\n]-:%d+: ", "")), 0) end
    out_text = text
  end
  return "message"
end

-- An encoding that failed for size: a message built to be huge counts
-- against the hook like running over a limit.
local function oversized(reason)
  return reason:find("values to encode", 1, true) or
    reason:find("would be larger than", 1, true)
end
M.oversized = oversized

-- Runs hook over event (ctx: its template context; build(settings, event,
-- ctx) makes the message; skip_filter for a test send; parts(settings,
-- event, ctx), when given, is message.parts for the same kind of message:
-- the caller then encodes the message itself, see oversized). Returns
--   "parts", custom_data, content, keep_content, route, key for a hook
--   without shape() when parts is given: the core makes the message from
--   the event's text (core/splice.h);
--   "message", msg, route, key, and the message's JSON text when it was
--   encoded here (hooks with code of their own, unless parts is given);
--   "filtered" when filter() said no;
--   "dropped", value when shape() returned nil or false;
--   "error", reason, stage ("filter", "shape", "message" or "encode"),
--   and true when the guard stopped the code or the message was huge.
function M.run(hook, event, ctx, build, skip_filter, parts)
  local ok, r, stopped
  cur_hook, cur_event, cur_ctx, cur_build = hook, event, ctx, build
  cur_skip, cur_parts = skip_filter, parts
  if hook.isolate then
    ok, r, stopped = guard.call(work, first_line)
  else
    ok, r = true, work()
  end
  cur_hook, cur_event, cur_ctx, cur_build, cur_parts = nil, nil, nil, nil, nil
  local msg, route, key, text = out_msg, out_route, out_key, out_text
  local content, keep = out_content, out_keep
  out_msg, out_route, out_key, out_text = nil, nil, nil, nil
  out_content, out_keep = nil, nil
  if not ok then
    return "error", r, stage, stopped or (stage == "encode" and
      oversized(r) ~= nil)
  end
  if r == "message" then return r, msg, route, key, text end
  if r == "parts" then return r, msg, content, keep, route, key end
  if r == "dropped" then return r, msg end
  return r
end

return M
