-- The outgoing message of one hook for one event: the event's top-level
-- fields, minus the input-only profile, content only when the hook asks,
-- and custom_data kept or built from profile fields and templates.

local json = require "hookd.json"
local template = require "hookd.template"

local M = {}

local type, pairs, next, setmetatable, getmetatable =
  type, pairs, next, setmetatable, getmetatable
local render = template.render
local object_mt, array_mt, null = json.object_mt, json.array_mt, json.null
local materialize = json.materialize
-- (narray, nhash): a table made with room for that many values.
local new_table = require "table.new"

-- Whether the event brought custom_data to keep: an object with at least
-- one key. Missing, null, {} (and non-objects such as [] or "x") do not
-- count; custom_data is then built.
local function has_custom_data(cd)
  return type(cd) == "table" and getmetatable(cd) ~= array_mt
    and next(cd) ~= nil
end

-- Adds hook.profile_fields to out: first from the event's inline profile,
-- then from profile_lookup. A field found nowhere is left out.
local function add_profile_fields(out, fields, event, profile_lookup)
  local prof = event.profile
  if type(prof) ~= "table" then prof = nil end
  local pid = event.profile_id
  if pid == null then pid = nil end
  for i = 1, #fields do
    local name = fields[i]
    local v = nil
    if prof then v = prof[name] end
    if v == nil and profile_lookup and pid ~= nil then
      v = profile_lookup(event.list_id, pid, name)
    end
    if v ~= nil then out[name] = v end
  end
end

local counted = setmetatable({}, { __mode = "k" }) -- templates -> count

-- How many keys custom_data built by hook may get: its profile fields
-- and its templates (counted once per set of templates).
local function keys_built(fields, templates)
  local n = 0
  if templates then
    n = counted[templates]
    if not n then
      n = 0
      for _ in pairs(templates) do n = n + 1 end
      counted[templates] = n
    end
  end
  return n + (fields and #fields or 0)
end

-- custom_data built for the hook: profile fields, then templates (a
-- template key equal to a profile field wins). Empty gives {} — an empty
-- object is sent rather than omitting the key, so receivers always find it.
local function build_custom_data(hook, event, ctx, profile_lookup)
  local fields, templates = hook.profile_fields, hook.custom_data
  local out = setmetatable(new_table(0, keys_built(fields, templates)),
    object_mt)
  if fields then add_profile_fields(out, fields, event, profile_lookup) end
  if templates then
    if type(ctx) == "function" then ctx = ctx()
    elseif not ctx then ctx = template.new_context(event, nil) end
    for key, compiled in pairs(templates) do
      out[key] = render(compiled, ctx)
    end
  end
  return out
end

-- Builds the message for hook (normalized settings: content,
-- profile_fields, custom_data as compiled templates) and event. Returns a
-- new table marked json.object_mt; the event, shared by every hook, is not
-- modified (nested tables are shared, not copied: treat them as read-only).
--
-- Precedence of custom_data: when the event carries a non-empty
-- custom_data object it is sent exactly as it came, nothing added. Else
-- (missing, null or {}) it is built from the hook's profile_fields and
-- custom_data templates; when that gives nothing it is sent as {}.
--
-- ctx is the event's template.new_context(event, catalog), shared by all
-- hooks for the event, or a function that returns it, called only when a
-- template is rendered; nil is allowed (names then render as "").
--
-- profile_lookup(list_id, profile_id, field) -> value | nil is optional.
-- It is called only for a field the inline profile lacks and only when the
-- event has a profile_id; the value (any JSON type, json.null included) is
-- added as is, nil means the profile has no such field. It must not raise
-- or yield: this runs on the router's hot path.
--
-- content_lookup(event) -> content | nil is optional too: for a hook with
-- content on, an event that carries no content of its own gets the one
-- stored for the send it is about, when there is one.
function M.build(hook, event, ctx, profile_lookup, content_lookup)
  local msg = setmetatable({}, object_mt)
  for k, v in pairs(materialize(event)) do msg[k] = v end
  msg.profile = nil
  if not hook.content then
    msg.content = nil
  elseif msg.content == nil and content_lookup then
    msg.content = content_lookup(event)
  end
  if not has_custom_data(event.custom_data) then
    msg.custom_data = build_custom_data(hook, event, ctx, profile_lookup)
  end
  return msg
end

-- What build would add to the event, for a message the core makes from
-- the event's own text (core/splice.h): the custom_data to send (nil when
-- the event's own is kept), the content to attach (what content_lookup
-- gave: a table, or JSON text the core copies as it is; nil when none),
-- and whether the event's own content stays. Same arguments and rules as
-- build.
function M.parts(hook, event, ctx, profile_lookup, content_lookup)
  local content, cd = nil, nil
  if hook.content and event.content == nil and content_lookup then
    content = content_lookup(event)
  end
  if not has_custom_data(event.custom_data) then
    cd = build_custom_data(hook, event, ctx, profile_lookup)
  end
  return cd, content, hook.content == true
end

return M
