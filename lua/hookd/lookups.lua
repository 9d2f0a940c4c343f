-- Profiles and message content as routing sees them: what events bring
-- (content on send events, profiles on import events) is written to the
-- store through the core, and what hooks ask for is read back from it.
--
-- A routing batch is committed to the store after it is routed, so what an
-- event wrote is kept here as "pending" until the core settles that batch;
-- later events of the same or of another uncommitted batch see it.

local json = require "hookd.json"
local core = require "hookd.core"
local catalog_mod = require "hookd.catalog"

local M = {}

local type, pairs, getmetatable, setmetatable =
  type, pairs, getmetatable, setmetatable
local null, array_mt, object_mt = json.null, json.array_mt, json.object_mt
local id_key = catalog_mod.id_key

local CONTENT_EVENTS = { send = true, send_sms = true, send_push = true }

local pending_content = {}  -- send_message_id -> {seq =, value =}
local pending_profiles = {} -- "list:profile" -> {seq =, value =}
local by_seq = {}           -- seq -> {table1, key1, table2, key2, ...}
local seq = 0
local memo = {}             -- reads from the store during one batch

local function is_object(v)
  return type(v) == "table" and getmetatable(v) ~= array_mt
end

-- A profile or message id as text: strings as they are, integers in
-- decimal; nil for anything else.
local function id_text(v)
  local t = type(v)
  if t == "string" then
    -- A NUL would end the key early in the core and name another record.
    if v == "" or v:find("\0", 1, true) then return nil end
    return v
  end
  if t == "number" or t == "userdata" then return id_key(v) end
  return nil
end
M.id_text = id_text

local function remember(tbl, key, value)
  tbl[key] = { seq = seq, value = value }
  local list = by_seq[seq]
  if not list then list = {}; by_seq[seq] = list end
  local n = #list
  list[n + 1], list[n + 2] = tbl, key
end

-- Starts routing batch n: reads from the store are fresh again.
function M.begin(n)
  seq = n
  memo = {}
end

-- Batch n is committed (or refused): its writes are now in the store (or
-- nowhere), so the pending copies go.
function M.settle(n)
  local list = by_seq[n]
  by_seq[n] = nil
  if not list then return end
  for i = 1, #list, 2 do
    local tbl, key = list[i], list[i + 1]
    local entry = tbl[key]
    if entry and entry.seq == n then tbl[key] = nil end
  end
end

-- A record of the store as its JSON text, or nil; read once per batch.
local function stored_text(kind, a, b)
  local key = "text\0" .. kind .. "\0" .. a .. "\0" .. (b or "")
  local hit = memo[key]
  if hit == nil then
    hit = core.store_get(kind, a, b) or false
    memo[key] = hit
  end
  return hit or nil
end

-- The same record decoded, or nil; decoded once per batch.
local function stored(kind, a, b)
  local key = kind .. "\0" .. a .. "\0" .. (b or "")
  local hit = memo[key]
  if hit == nil then
    local text = stored_text(kind, a, b)
    hit = text and json.decode(text) or false
    memo[key] = hit
  end
  return hit or nil
end

-- The fields of a profile: pending, then stored. nil when none.
function M.profile(list_id, profile_id)
  local lid, pid = id_key(list_id), id_text(profile_id)
  if not lid or not pid then return nil end
  local p = pending_profiles[lid .. ":" .. pid]
  if p then return p.value end
  return stored("profile", lid, pid)
end

function M.profile_field(list_id, profile_id, name)
  local fields = M.profile(list_id, profile_id)
  if fields then return fields[name] end
  return nil
end

-- Whether a profile was deleted through the API and not written since.
function M.profile_deleted(list_id, profile_id)
  local lid, pid = id_key(list_id), id_text(profile_id)
  if not lid or not pid then return false end
  return stored("tombstone", lid, pid) == true
end

-- The send an event is about: event_data.send_message_id, where the
-- platform puts it, or a top-level send_message_id.
local function send_id(event)
  local smid = json.peek(event, "event_data", "send_message_id")
  if smid == nil or smid == null then smid = event.send_message_id end
  return id_text(smid)
end
M.send_id = send_id

-- The content stored for a send_message_id, or nil.
function M.content(send_message_id)
  local smid = id_text(send_message_id)
  if not smid then return nil end
  local c = pending_content[smid]
  if c then
    -- Kept as text: decoded once, and the text kept too for messages
    -- that copy it (event_content_text).
    if type(c.value) ~= "string" then return c.value end
    if c.decoded == nil then c.decoded = json.decode(c.value) end
    return c.decoded
  end
  return stored("content", smid)
end

-- The content of the send an event is about, or nil.
function M.event_content(event)
  local smid = send_id(event)
  return smid and M.content(smid) or nil
end

-- The same for a message made from the event's text: the content's JSON
-- text as stored (or as kept from a send not yet committed), copied into
-- the message as it is, without decoding and encoding it again; a table
-- when routing already holds it decoded.
function M.event_content_text(event)
  local smid = send_id(event)
  if not smid then return nil end
  local c = pending_content[smid]
  if c then return c.value end
  return stored_text("content", smid)
end

-- Applies an import's fields to what is known of the profile the way the
-- store does (a JSON merge patch, RFC 7396): objects merge key by key, a
-- null removes the key, anything else replaces the value.
local function merged(old, patch)
  if not is_object(patch) then return patch end
  local out = setmetatable({}, object_mt)
  if is_object(old) then for k, v in pairs(old) do out[k] = v end end
  for k, v in pairs(patch) do
    if v == null then out[k] = nil else out[k] = merged(out[k], v) end
  end
  return out
end

-- What an event brought that cannot be kept (content without a usable
-- send_message_id, an import's profile without a usable list_id and
-- profile_id) is logged, at most once a second, with how many there were
-- since the last such line (the reason is the latest one's); the event
-- itself is routed as usual. What is held back is logged at shutdown
-- too (flush_not_kept).
local unkept, unkept_logged_at = 0, -math.huge
local unkept_what, unkept_why

local function log_not_kept()
  core.log("warn", "router", string.format(
    'not_stored=%s events=%d reason="%s"', unkept_what, unkept, unkept_why))
  unkept, unkept_logged_at = 0, core.now()
end

local function not_kept(what, why)
  unkept, unkept_what, unkept_why = unkept + 1, what, why
  if core.now() - unkept_logged_at >= 1 then log_not_kept() end
end

-- Logs the events held back since the last such line, if any.
function M.flush_not_kept()
  if unkept > 0 then log_not_kept() end
end

local NO_SEND_ID = "a send's content without a usable send_message_id " ..
  "(event_data.send_message_id or send_message_id: a non-empty string " ..
  "without NUL or a non-negative integer)"
local NO_PROFILE_ID = "an import's profile without a usable list_id " ..
  "(a non-negative integer) and profile_id (a non-empty string without " ..
  "NUL or a non-negative integer)"

-- Takes what an event brings for the stores: content on send events, and
-- a profile on import events. What is kept here is a copy: the last hook
-- to see the event gets the event itself and may change it. index is the
-- event's place in the batch being routed, if it is there: its content
-- is then stored and kept as the text it came as, decoded only if a later
-- event of an unsettled batch asks for it.
function M.capture(event, event_type, index)
  if CONTENT_EVENTS[event_type] then
    -- From the batch, the member's text tells whether content is an
    -- object without decoding it; otherwise the decoded event does.
    local text = index and core.event_member(index, "content")
    local content
    if text then
      if text:byte(1) ~= 123 then return end -- not "{": not an object
    else
      content = event.content
      if not is_object(content) then return end
    end
    local smid = send_id(event)
    if not smid then
      not_kept("content", NO_SEND_ID)
    else
      if text then
        core.store_put_json("content", smid, nil, text)
        remember(pending_content, smid, text)
      else
        core.store_put("content", smid, nil, content)
        remember(pending_content, smid, json.copy(content))
      end
    end
  elseif type(event_type) == "string" and event_type:byte(1) == 105 and
      event_type:sub(1, 7) == "import_" then -- 105: "i", spares a sub
    local fields = event.profile
    local lid, pid = id_key(event.list_id), id_text(event.profile_id)
    if not is_object(fields) then return end
    if not (lid and pid) then
      not_kept("profile", NO_PROFILE_ID)
    else
      core.store_put("profile", lid, pid, fields)
      remember(pending_profiles, lid .. ":" .. pid,
        merged(M.profile(lid, pid), json.copy(fields)))
    end
  end
end

-- For the API: checks a POST /v1/content body. Returns a flat list
-- {id1, json1, id2, json2, ...}, or nil, reason, index.
function M.check_content(text)
  local doc, err = json.decode(text)
  if doc == nil then return nil, "not valid JSON: " .. err end
  local items = doc
  if is_object(doc) then items = { doc } end
  if type(items) ~= "table" then
    return nil, "expected {\"send_message_id\", \"content\"} or a list of them"
  end
  if #items == 0 then return nil, "the list of content is empty" end
  local out = {}
  for i = 1, #items do
    local item = items[i]
    local smid = is_object(item) and id_text(item.send_message_id)
    if not smid then
      return nil, "send_message_id must be a non-empty string without NUL "
        .. "or a non-negative integer",
        i - 1
    end
    if not is_object(item.content) then
      return nil, "content must be an object", i - 1
    end
    local ok, encoded = pcall(json.encode, item.content)
    if not ok then -- the reason, without where in Lua it was raised
      return nil, "content cannot be stored: " ..
        tostring(encoded):gsub("^[^\n]-:%d+: ", ""):gsub("\n.*", ""), i - 1
    end
    out[#out + 1] = smid
    out[#out + 1] = encoded
  end
  return out
end

-- For the API: a profile's fields must be one JSON object.
function M.check_profile(text)
  local doc, err = json.decode(text)
  if doc == nil then return nil, "not valid JSON: " .. err end
  if not is_object(doc) then return nil, "profile fields must be an object" end
  return { json.encode(doc) }
end

return M
