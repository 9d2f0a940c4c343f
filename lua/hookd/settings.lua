-- Validation of the settings table a hook file returns: every key checked,
-- defaults filled, templates compiled, send resolved against the named
-- destinations; plus describe(), the same settings safe to show in the API.

local json = require "hookd.json"
local core = require "hookd.core"
local template = require "hookd.template"
local filters = require "hookd.filters"

local M = {}

local type, pairs, next, tostring, error, pcall, setmetatable, getmetatable =
  type, pairs, next, tostring, error, pcall, setmetatable, getmetatable
local format, find, lower, gsub = string.format, string.find, string.lower,
  string.gsub
local concat, sort, floor = table.concat, table.sort, math.floor
local array_mt, object_mt = json.array_mt, json.object_mt

M.TRANSPORTS = { "http", "kafka", "rabbitmq_exchange", "rabbitmq_queue" }

-- Validation stops at the first problem by raising a Problem; validate
-- turns it into "file: message". While an inherited send key is checked,
-- suffix says which destination it came from.
local Problem = {}
local suffix = ""
local function bad(fmt, ...)
  error(setmetatable({ msg = format(fmt, ...) .. suffix }, Problem), 0)
end

-- ---- generic checks; key is the dotted name used in messages ----

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function is_list(v)
  if type(v) ~= "table" then return false end
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
      return false
    end
  end
  return true
end

local function is_int(v)
  return type(v) == "number" and v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

local function want_string(v, key, allow_empty)
  if type(v) ~= "string" or (v == "" and not allow_empty) then
    bad("%s must be a%s string", key, allow_empty and "" or " non-empty")
  end
  return v
end

local function want_bool(v, key)
  if type(v) ~= "boolean" then bad("%s must be true or false", key) end
  return v
end

local function want_int(v, key, min, max)
  if min == 1 and not max and (not is_int(v) or v < 1) then
    bad("%s must be a positive integer", key)
  end
  if not is_int(v) or v < min or (max and v > max) then
    if max then bad("%s must be an integer from %d to %d", key, min, max) end
    bad("%s must be an integer of at least %d", key, min)
  end
  return v
end

local function want_positive_number(v, key)
  if type(v) ~= "number" or not (v > 0) or v == 1 / 0 then
    bad("%s must be a number greater than 0", key)
  end
  return v
end

-- A non-empty list; each element goes through check(v, "key[i]") and the
-- results form a new list marked as a JSON array.
local function want_list(v, key, check, allow_empty)
  if not is_list(v) or (#v == 0 and not allow_empty) then
    bad("%s must be a%s list", key, allow_empty and "" or " non-empty")
  end
  local out = setmetatable({}, array_mt)
  for i = 1, #v do out[i] = check(v[i], format("%s[%d]", key, i)) end
  return out
end

local function want_table(v, key)
  if type(v) ~= "table" or getmetatable(v) == array_mt then
    bad("%s must be a table", key)
  end
  return v
end

local function no_ctl(v, key)
  if find(v, "[%z\1-\31\127]") then
    bad("%s must not contain control characters", key)
  end
  return v
end

-- Rejects keys of t not in allowed; prefix is "" or "send." etc.
local function only_keys(t, allowed, prefix)
  for _, k in pairs(sorted_keys(t)) do
    if type(k) ~= "string" or allowed[k] == nil then
      bad("unknown setting '%s%s'", prefix, tostring(k))
    end
  end
end

-- ---- top-level settings ----

local function check_event_type(v, key)
  if type(v) ~= "string" or #v > 128 or not find(v, "^[%w_.%-]+$") then
    bad("%s must be an event type (1 to 128 of A-Z a-z 0-9 _ . -)", key)
  end
  return v
end

local function check_id(v, key)
  if not is_int(v) or v < 0 then
    bad("%s must be a non-negative integer id", key)
  end
  return v
end

local function check_database(v)
  if v == nil then
    bad("database is required (a positive integer or \"all\")")
  end
  if v == "all" then return v end
  if not is_int(v) or v < 1 then
    bad("database must be a positive integer or \"all\"")
  end
  return v
end

local function check_filters(v)
  want_table(v, "filters")
  local out = {}
  for _, kind in pairs(sorted_keys(v)) do
    if type(kind) ~= "string" or not filters.KINDS[kind] then
      bad("filters.%s: unknown filter kind (known: campaigns, pixels, "
        .. "resources, segments, templates)", tostring(kind))
    end
    out[kind] = want_list(v[kind], "filters." .. kind, check_id)
  end
  return out
end

local function check_field_name(v, key)
  return want_string(v, key)
end

-- What a hook builds per event without code of its own runs outside the
-- CPU guard, so its size is bounded here: keys of custom_data, profile
-- fields, and the length of one template.
local MAX_BUILT_KEYS, MAX_TEMPLATE = 256, 4096

local function check_custom_data(v)
  want_table(v, "custom_data")
  local out, n = {}, 0
  for _ in pairs(v) do n = n + 1 end
  if n > MAX_BUILT_KEYS then
    bad("custom_data has %d keys; at most %d", n, MAX_BUILT_KEYS)
  end
  for _, k in pairs(sorted_keys(v)) do
    if type(k) ~= "string" or k == "" then
      bad("custom_data keys must be non-empty strings (got %s)", tostring(k))
    end
    local key = "custom_data." .. k
    if type(v[k]) ~= "string" then bad("%s must be a template string", key) end
    if #v[k] > MAX_TEMPLATE then
      bad("%s is longer than %d bytes", key, MAX_TEMPLATE)
    end
    local compiled, err = template.compile(v[k])
    if not compiled then bad("%s: %s", key, err) end
    out[k] = compiled
  end
  return out
end

local function want_function(v, key)
  if type(v) ~= "function" then bad("%s must be a function", key) end
  return v
end

-- One example of the tests setting: an event and what the hook must make
-- of it, a table the message must match or false for "dropped". The
-- examples run when the hook loads (see router.lua).
local function check_example(v, key)
  want_table(v, key)
  only_keys(v, { event = true, expect = true }, key .. ".")
  local event, expect = v.event, v.expect
  if event == nil then
    bad("%s.event is required (the event, as a table of its fields)", key)
  end
  if type(event) ~= "table" or getmetatable(event) == array_mt or
      (next(event) ~= nil and is_list(event)) then
    bad("%s.event must be a table of event fields", key)
  end
  if expect == nil then
    bad("%s.expect is required (a table the message must match, or false "
      .. "for a dropped event)", key)
  end
  if expect ~= false and type(expect) ~= "table" then
    bad("%s.expect must be a table or false", key)
  end
  return v
end

-- ---- send: destinations and transports ----

local function known_destinations(dests)
  local names = sorted_keys(dests or {})
  if #names == 0 then return "none defined" end
  return "known: " .. concat(names, ", ")
end

-- Where a destination sends to. A hook that names a destination may
-- change how it sends (batch_size, timeouts) but not where: the
-- destination's token, password or headers were meant for that address.
local ADDRESS_KEYS = {
  url = true, host = true, port = true, vhost = true, brokers = true,
  tls = true, headers = true, -- a Host header moves it as well
}

-- Resolves send into one merged table: a string names a destination; a
-- table may name one in its destination key and override its keys (per
-- key, shallow: a headers table replaces the destination's). Returns the
-- merged table, the set of keys inherited from the destination (for error
-- messages) and the destination's name or nil. Inputs are not modified.
local function resolve_send(v, dests)
  local name, over
  if type(v) == "string" then
    name, over = v, {}
  elseif type(v) == "table" and getmetatable(v) ~= array_mt then
    name, over = v.destination, v
    if name ~= nil and type(name) ~= "string" then
      bad("send.destination must be a destination name")
    end
  else
    bad("send must be a table or the name of a destination")
  end
  local merged, inherited = {}, {}
  if name then
    local dest = dests and dests[name]
    if type(dest) ~= "table" then
      bad("send: unknown destination '%s' (%s)", name,
        known_destinations(dests))
    end
    for k, x in pairs(dest) do merged[k], inherited[k] = x, true end
  end
  for k, x in pairs(over) do
    if name and ADDRESS_KEYS[k] then
      bad("send.%s: a hook cannot move destination '%s' elsewhere (its " ..
        "credentials would go along); define another destination", k, name)
    end
    if k ~= "destination" then merged[k], inherited[k] = x, nil end
  end
  return merged, inherited, name
end

-- A success_regex must compile as the transport will compile it (POSIX
-- extended); checked here so the error names the file and the key.
local function check_regex(v, key)
  want_string(v, key)
  local ok, reason = true, nil
  if core.check_regex then ok, reason = core.check_regex(v) end
  if not ok then bad("%s is not a valid regular expression: %s", key, reason) end
  return v
end

local function check_url(v, key)
  want_string(v, key)
  if not find(v, "^[hH][tT][tT][pP][sS]?://[^/%s?#]+") or find(v, "%s") then
    bad("%s must be an http:// or https:// URL", key)
  end
  return v
end

local function check_status(v, key)
  return want_int(v, key, 100, 599)
end

local function check_headers(v, key)
  want_table(v, key)
  local out = {}
  for _, name in pairs(sorted_keys(v)) do
    if type(name) ~= "string" or not find(name, "^[%w!#$%%&'*+.^_`|~-]+$") then
      bad("%s: '%s' is not a valid header name", key, tostring(name))
    end
    local hkey = key .. "." .. name
    out[name] = no_ctl(want_string(v[name], hkey, true), hkey)
  end
  return out
end

local function check_basic_auth(v, key)
  want_table(v, key)
  only_keys(v, { user = true, password = true }, key .. ".")
  local user = no_ctl(want_string(v.user, key .. ".user"), key .. ".user")
  if find(user, ":", 1, true) then
    bad("%s.user must not contain ':'", key)
  end
  local pw = want_string(v.password, key .. ".password", true)
  return { user = user, password = no_ctl(pw, key .. ".password") }
end

-- Transport schemas: key -> {check, default}; check(v, key) returns the
-- normalized value. required = true marks a key without default.
local function opt(check, default)
  return { check = check, default = default }
end
local function req(check) return { check = check, required = true } end

local HTTP = {
  url = req(check_url),
  batch_size = opt(function(v, k) return want_int(v, k, 1, 10000) end, 100),
  timeout_sec = opt(want_positive_number, 5),
  request_timeout_sec = opt(want_positive_number, 30),
  success_regex = opt(check_regex),
  success_statuses = opt(function(v, k)
    return want_list(v, k, check_status)
  end),
  headers = opt(check_headers),
  bearer_token = opt(function(v, k) return no_ctl(want_string(v, k), k) end),
  basic_auth = opt(check_basic_auth),
  max_body_bytes = opt(function(v, k) return want_int(v, k, 1) end),
}

local function check_port(v, k) return want_int(v, k, 1, 65535) end

-- A check that takes one of two words.
local function either(a, b)
  return function(v, k)
    if v ~= a and v ~= b then
      bad("%s must be \"%s\" or \"%s\"", k, a, b)
    end
    return v
  end
end
local check_exchange_type = either("direct", "topic")

-- Batching for broker transports: a send publishes up to batch_size
-- messages and waits for all their confirmations.
local BATCHING = {
  batch_size = opt(function(v, k) return want_int(v, k, 1, 10000) end, 100),
  timeout_sec = opt(want_positive_number, 1),
}

-- An AMQP short string: a queue, exchange or routing key name.
local function check_amqp_name(v, k)
  want_string(v, k, true)
  if #v > 255 or find(v, "%c") then
    bad("%s must be at most 255 bytes without control characters", k)
  end
  return v
end

local RABBIT_COMMON = {
  host = req(want_string), port = opt(check_port, 5672),
  user = opt(want_string, "guest"), password = opt(function(v, k)
    return want_string(v, k, true)
  end, "guest"),
  vhost = opt(want_string, "/"),
  durable = opt(want_bool, true), auto_delete = opt(want_bool, false),
  tls = opt(want_bool, false), tls_ca_file = opt(want_string),
  heartbeat_sec = opt(function(v, k) return want_int(v, k, 0, 3600) end, 30),
  confirm_timeout_sec = opt(want_positive_number, 30),
  connect_timeout_sec = opt(want_positive_number, 10),
  -- More than one connection lets the broker work on several streams at
  -- once, but messages of different batches may then arrive in either
  -- order. Four at most: a hook has four batches in flight.
  connections = opt(function(v, k) return want_int(v, k, 1, 4) end, 1),
}

local function extend(base, extra)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(extra) do t[k] = v end
  return t
end

-- The type hookd declares a queue with: "classic" (declared without
-- arguments, as queues were before this setting) or "quorum".
local check_queue_type = either("classic", "quorum")

-- queue "" means a queue named after each event's type (each declared
-- with the same queue_type). Exchange hooks declare no queue, so
-- queue_type is not among their settings.
local RABBIT_QUEUE = extend(extend(RABBIT_COMMON, BATCHING), {
  queue = opt(check_amqp_name, ""),
  queue_type = opt(check_queue_type, "classic"),
})
local RABBIT_EXCHANGE = extend(extend(RABBIT_COMMON, BATCHING), {
  exchange = req(function(v, k)
    check_amqp_name(v, k)
    if v == "" then bad("%s must name an exchange", k) end
    return v
  end),
  exchange_type = opt(check_exchange_type, "direct"),
})

local function check_broker(v, k)
  if type(v) ~= "string" or not find(v, "^[^%s]+:%d+$") then
    bad("%s must be \"host:port\"", k)
  end
  return v
end

local function check_kafka_key(v, k)
  if v == false then return v end
  if type(v) ~= "string" or not find(v, "^[%w_][%w_.]*$") or find(v, "%.$")
      or find(v, "..", 1, true) then
    bad("%s must be a field path such as \"profile_id\" or "
      .. "\"event_data.campaign_id\", or false", k)
  end
  return v
end

local function check_properties(v, key)
  want_table(v, key)
  local out = {}
  for _, name in pairs(sorted_keys(v)) do
    if type(name) ~= "string" or name == "" then
      bad("%s keys must be non-empty strings", key)
    end
    out[name] = want_string(v[name], key .. "." .. name, true)
  end
  return out
end

-- topic "" means a topic named after each event's type; key is the
-- event field whose value keys the message (false: no key).
local KAFKA = extend(BATCHING, {
  brokers = req(function(v, k) return want_list(v, k, check_broker) end),
  topic = opt(function(v, k)
    if type(v) ~= "string" or #v > 249 or
        (v ~= "" and not find(v, "^[%w._%-]+$")) then
      bad("%s must be a topic name (up to 249 of A-Z a-z 0-9 . _ -) or "
        .. "\"\" for one topic per event type", k)
    end
    return v
  end, ""),
  key = opt(check_kafka_key, "profile_id"),
  properties = opt(check_properties),
})

local SCHEMAS = {
  http = HTTP, kafka = KAFKA,
  rabbitmq_queue = RABBIT_QUEUE, rabbitmq_exchange = RABBIT_EXCHANGE,
}

local function http_conflicts(out)
  local auth = out.headers and (out.headers.Authorization
    or out.headers.authorization)
  if out.bearer_token and out.basic_auth then
    bad("send: bearer_token and basic_auth cannot both be set")
  end
  if auth and (out.bearer_token or out.basic_auth) then
    bad("send: an Authorization header cannot be combined with "
      .. "bearer_token or basic_auth")
  end
end

-- Checks one schema key of the merged send table; returns its value.
local function check_send_key(merged, k, spec)
  local v = merged[k]
  if v == nil then
    if spec.required then bad("send.%s is required", k) end
    return spec.default
  end
  return spec.check(v, "send." .. k)
end

local function check_unknown_send_keys(merged, schema, kind, inherited,
                                       dest_name)
  for _, k in pairs(sorted_keys(merged)) do
    if k ~= "type" and (type(k) ~= "string" or not schema[k]) then
      if inherited[k] then
        suffix = format(" (from destination '%s')", dest_name)
      end
      bad("unknown setting 'send.%s' for type %s", tostring(k), kind)
    end
  end
end

-- Validates the merged send table against its transport's schema and
-- returns the normalized one (defaults filled, destination name kept).
local function check_send(merged, inherited, dest_name)
  local kind = merged.type
  local schema = SCHEMAS[kind]
  if not schema then
    if dest_name and inherited.type then
      suffix = format(" (from destination '%s')", dest_name)
    end
    bad("send.type must be one of: %s (got %s)", concat(M.TRANSPORTS, ", "),
      kind == nil and "nothing" or "'" .. tostring(kind) .. "'")
  end
  check_unknown_send_keys(merged, schema, kind, inherited, dest_name)
  local out = { type = kind, destination = dest_name }
  for _, k in pairs(sorted_keys(schema)) do
    if inherited[k] then
      suffix = format(" (from destination '%s')", dest_name)
    end
    out[k] = check_send_key(merged, k, schema[k])
    suffix = ""
  end
  if kind == "http" then
    if out.success_statuses == nil then
      out.success_statuses = setmetatable({ 200 }, array_mt)
    end
    http_conflicts(out)
  end
  return out
end

-- ---- the whole table ----

local TOP = {
  name = true, active = true, database = true, actions = true,
  filters = true, profile_fields = true, custom_data = true, content = true,
  send = true, filter = true, shape = true, tests = true, description = true,
}

local function check_top(tbl, ctx)
  if type(tbl) ~= "table" then bad("the file must return a settings table") end
  only_keys(tbl, TOP, "")
  local s = { id = ctx.id, file = ctx.file }
  s.name = tbl.name == nil and ctx.id or want_string(tbl.name, "name")
  s.active = tbl.active == nil or want_bool(tbl.active, "active")
  s.database = check_database(tbl.database)
  if tbl.actions == nil then
    bad("actions is required (a list of event types)")
  end
  s.actions = want_list(tbl.actions, "actions", check_event_type)
  if tbl.filters ~= nil then s.filters = check_filters(tbl.filters) end
  if tbl.profile_fields ~= nil then
    s.profile_fields = want_list(tbl.profile_fields, "profile_fields",
      check_field_name, true)
    if #s.profile_fields > MAX_BUILT_KEYS then
      bad("profile_fields has %d names; at most %d", #s.profile_fields,
        MAX_BUILT_KEYS)
    end
  end
  if tbl.custom_data ~= nil then
    s.custom_data = check_custom_data(tbl.custom_data)
  end
  s.content = tbl.content ~= nil and want_bool(tbl.content, "content")
  if tbl.send == nil then
    bad("send is required (a table or a destination name)")
  end
  s.send = check_send(resolve_send(tbl.send, ctx.destinations))
  if tbl.filter ~= nil then s.filter = want_function(tbl.filter, "filter") end
  if tbl.shape ~= nil then s.shape = want_function(tbl.shape, "shape") end
  if tbl.tests ~= nil then
    s.tests = want_list(tbl.tests, "tests", check_example, true)
  end
  if tbl.description ~= nil then
    s.description = want_string(tbl.description, "description", true)
  end
  return s
end

-- The setting a problem message is about, as the dotted path it starts
-- with ("send.url", "custom_data.cname", "tests[2].expect"), or nil when
-- it names none. Used to find the setting's line in the hook's source.
function M.problem_path(msg)
  local quoted = msg:match("^unknown setting '([^']+)'")
  if quoted then return quoted end
  local path = msg:match("^([%a_][%w_]*[%w_.%[%]]*)")
  if path and TOP[path:match("^[%w_]+")] then return path end
  return nil
end

-- Validates a hook's settings table. ctx = {id =, file =, destinations =
-- {name -> send table}}. Returns the normalized settings (defaults filled,
-- custom_data compiled, send merged with its destination), or nil,
-- "<file>: <message naming the key>" and the key's path (see
-- problem_path). Only the first problem is reported.
function M.validate(tbl, ctx)
  suffix = ""
  local ok, r = pcall(check_top, tbl, ctx)
  suffix = ""
  if ok then return r end
  if getmetatable(r) ~= Problem then error(r, 0) end
  return nil, format("%s: %s", ctx.file or ctx.id or "?", r.msg),
    M.problem_path(r.msg)
end

-- Validates one destination of main.json as the send settings of a hook
-- that uses it unchanged. Returns true, or nil and the reason.
function M.validate_destination(name, dest)
  suffix = ""
  local ok, r = pcall(function()
    return check_send(resolve_send(name, { [name] = dest }))
  end)
  suffix = ""
  if ok then return true end
  if getmetatable(r) ~= Problem then error(r, 0) end
  return nil, r.msg
end

-- ---- describe ----

local MASK = "***"

-- Authorization, Cookie, X-Api-Key and any name containing token, secret,
-- key, pass or auth (case-insensitive).
local SECRET_WORDS = { "token", "secret", "key", "pass", "auth" }
local function secret_name(name)
  local n = lower(name)
  if n == "cookie" or n == "set-cookie" then return true end
  for i = 1, #SECRET_WORDS do
    if find(n, SECRET_WORDS[i], 1, true) then return true end
  end
  return false
end

-- A plain copy: functions -> "function", templates -> their source,
-- lists and objects marked for json.encode.
local function plain(v, depth)
  local t = type(v)
  if t == "function" then return "function" end
  if t ~= "table" then
    if t == "userdata" and v ~= json.null then return tostring(v) end
    return v
  end
  if template.is_compiled(v) then return v.source end
  if depth > 32 then return "..." end
  local list = getmetatable(v) == array_mt or (next(v) ~= nil and is_list(v))
  local out = setmetatable({}, list and array_mt or object_mt)
  for k, x in pairs(v) do out[k] = plain(x, depth + 1) end
  return out
end

local function mask_map(t)
  if type(t) ~= "table" then return end
  for name in pairs(t) do
    if type(name) == "string" and secret_name(name) then t[name] = MASK end
  end
end

local function mask_send(send)
  if send.bearer_token then send.bearer_token = MASK end
  if send.password then send.password = MASK end
  if type(send.basic_auth) == "table" then send.basic_auth.password = MASK end
  mask_map(send.headers)
  mask_map(send.properties)
  if type(send.url) == "string" then
    send.url = gsub(send.url, "^(%a+://[^/@:]*):[^/@]*@", "%1:" .. MASK .. "@")
  end
end

-- Returns the normalized settings as plain data for the admin API:
-- functions shown as "function", templates as their source text, and
-- secrets (tokens, passwords, sensitive header and property values, a
-- password in the URL) as "***". The argument is not modified.
function M.describe(s)
  local out = plain(s, 0)
  if type(out.send) == "table" then mask_send(out.send) end
  return out
end

-- Keys in a stable order (by their text), for messages that list them.
M.sorted_keys = sorted_keys

return M
