-- Tests for hookd.settings: defaults, each error naming the file and key,
-- destinations by name and with overrides, transports, and describe().

local json = require "hookd.json"
local template = require "hookd.template"
local settings = require "hookd.settings"
local testing = require "testing"

local check, eq = testing.check, testing.eq

local DESTS = {
  crm = { type = "http", url = "https://crm.example/hook", batch_size = 50,
    headers = { Authorization = "Bearer s3cret" } },
  broken = { type = "http", url = "ftp://crm.example/" },
}
local CTX = { id = "crm", file = "plugins/crm.lua", destinations = DESTS }

-- A valid hook table with the given keys replaced (NONE removes a key).
local NONE = {}
local function hook(over)
  local t = { database = 111, actions = { "click" },
    send = { type = "http", url = "https://hooks.example/in" } }
  for k, v in pairs(over or {}) do
    if v == NONE then t[k] = nil else t[k] = v end
  end
  return t
end

local function valid(over)
  local s, err = settings.validate(hook(over), CTX)
  if not s then error("unexpected error: " .. err, 2) end
  return s
end

-- Asserts validation fails with exactly want (a string) or a message
-- containing every string of want (a list).
local function fails(over, want)
  local s, err = settings.validate(hook(over), CTX)
  if s then error("validated, wanted error " .. tostring(want), 2) end
  if type(want) == "string" then
    if err ~= want then error(("got %q, want %q"):format(err, want), 2) end
    return
  end
  for _, part in ipairs(want) do
    if not err:find(part, 1, true) then
      error(("error %q lacks %q"):format(err, part), 2)
    end
  end
end

check("settings_defaults_filled", function()
  local s = valid()
  eq(s.name, "crm", "name")
  eq(s.active, true, "active")
  eq(s.content, false, "content")
  eq(s.database, 111, "database")
  eq(s.actions[1], "click", "actions")
  eq(s.send.type, "http", "send.type")
  eq(s.send.batch_size, 100, "batch_size")
  eq(s.send.timeout_sec, 5, "timeout_sec")
  eq(s.send.request_timeout_sec, 30, "request_timeout_sec")
  eq(#s.send.success_statuses, 1, "success_statuses")
  eq(s.send.success_statuses[1], 200, "success_statuses[1]")
end)

check("settings_all_top_level_keys_accepted", function()
  local f = function() return true end
  local s = valid({ name = "CRM sync", active = false, database = "all",
    actions = { "click", "open" },
    filters = { resources = { 3 }, campaigns = { 973 }, templates = { 17 },
      segments = { 41 }, pixels = { 9 } },
    profile_fields = { "email" }, custom_data = { c = "{{campaign_name}}" },
    content = true, filter = f, shape = f,
    tests = { { event = {}, expect = false } },
    description = "d" })
  eq(s.name, "CRM sync", "name")
  eq(s.active, false, "active")
  eq(s.database, "all", "database")
  eq(s.filters.pixels[1], 9, "filters.pixels")
  eq(s.profile_fields[1], "email", "profile_fields")
  assert(template.is_compiled(s.custom_data.c), "custom_data compiled")
  eq(s.content, true, "content")
  eq(s.filter, f, "filter")
  eq(s.tests[1].event ~= nil, true, "tests kept")
end)

check("settings_unknown_setting", function()
  fails({ actions = NONE, acitons = { "click" } },
    "plugins/crm.lua: unknown setting 'acitons'")
end)

check("settings_template_error_names_key", function()
  fails({ custom_data = { cname = "{{campain_name}}" } },
    "plugins/crm.lua: custom_data.cname: unknown template variable "
      .. "{{campain_name}}")
  fails({ custom_data = { cname = 5 } },
    { "plugins/crm.lua: ", "custom_data.cname must be" })
end)

check("settings_batch_size_checked", function()
  local send = function(b)
    return { send = { type = "http", url = "https://x.example",
      batch_size = b } }
  end
  fails(send(0),
    "plugins/crm.lua: send.batch_size must be an integer from 1 to 10000")
  fails(send(1.5),
    "plugins/crm.lua: send.batch_size must be an integer from 1 to 10000")
  fails(send(10001), { "plugins/crm.lua: send.batch_size", "10000" })
  eq(valid(send(10000)).send.batch_size, 10000, "10000")
end)

check("settings_database_required_and_checked", function()
  fails({ database = NONE }, { "plugins/crm.lua: database is required" })
  fails({ database = 0 }, { "plugins/crm.lua: database must be" })
  fails({ database = "111" }, { "plugins/crm.lua: database must be" })
end)

check("settings_actions_checked", function()
  fails({ actions = NONE }, { "plugins/crm.lua: actions is required" })
  fails({ actions = {} }, { "plugins/crm.lua: actions must be a non-empty" })
  fails({ actions = { "click", "bad type" } },
    { "plugins/crm.lua: actions[2] must be an event type" })
  fails({ actions = { string.rep("a", 129) } }, { "actions[1]" })
  fails({ actions = "click" }, { "plugins/crm.lua: actions must be" })
end)

check("settings_filters_checked", function()
  fails({ filters = { campains = { 1 } } },
    { "plugins/crm.lua: filters.campains: unknown filter kind" })
  fails({ filters = { resources = { 3, "x" } } },
    { "plugins/crm.lua: filters.resources[2] must be" })
  fails({ filters = { resources = {} } },
    { "plugins/crm.lua: filters.resources must be a non-empty list" })
end)

check("settings_small_keys_checked", function()
  fails({ name = 5 }, { "plugins/crm.lua: name must be" })
  fails({ active = "yes" }, { "plugins/crm.lua: active must be" })
  fails({ content = 1 }, { "plugins/crm.lua: content must be" })
  fails({ profile_fields = { "email", 7 } },
    { "plugins/crm.lua: profile_fields[2] must be" })
  fails({ filter = "x" }, { "plugins/crm.lua: filter must be a function" })
  fails({ shape = {} }, { "plugins/crm.lua: shape must be a function" })
  fails({ tests = 3 }, { "plugins/crm.lua: tests must be a list" })
  fails({ description = NONE, [1] = "x" },
    { "plugins/crm.lua: unknown setting '1'" })
end)

check("settings_send_required", function()
  fails({ send = NONE }, { "plugins/crm.lua: send is required" })
  fails({ send = 5 }, { "plugins/crm.lua: send must be" })
end)

check("settings_send_destination_by_name", function()
  local s = valid({ send = "crm" })
  eq(s.send.url, "https://crm.example/hook", "url")
  eq(s.send.batch_size, 50, "batch_size")
  eq(s.send.destination, "crm", "destination")
  fails({ send = "crn" },
    { "plugins/crm.lua: send: unknown destination 'crn'", "crm" })
end)

check("settings_send_destination_with_overrides", function()
  local s = valid({ send = { destination = "crm", batch_size = 500 } })
  eq(s.send.batch_size, 500, "override")
  eq(s.send.url, "https://crm.example/hook", "inherited url")
  eq(DESTS.crm.batch_size, 50, "destination untouched")
  fails({ send = { destination = "crm", batch_size = -1 } },
    "plugins/crm.lua: send.batch_size must be an integer from 1 to 10000")
end)

check("settings_send_destination_errors_name_destination", function()
  fails({ send = "broken" }, "plugins/crm.lua: send.url must be an "
    .. "http:// or https:// URL (from destination 'broken')")
  fails({ send = { destination = "broken", url = "http://127.0.0.1:9/x" } },
    { "send.url: a hook cannot move destination 'broken' elsewhere" })
  fails({ send = { destination = "crm", headers = { Host = "evil" } } },
    { "send.headers: a hook cannot move destination 'crm' elsewhere" })
  local many = {}
  for i = 1, 300 do many["k" .. i] = "x" end
  fails({ custom_data = many }, { "custom_data has 300 keys; at most 256" })
  fails({ custom_data = { k = ("x"):rep(5000) } },
    { "custom_data.k is longer than 4096 bytes" })
end)

check("settings_send_type_checked", function()
  fails({ send = { url = "https://x.example" } },
    { "plugins/crm.lua: send.type must be one of: http, kafka, "
      .. "rabbitmq_exchange, rabbitmq_queue" })
  fails({ send = { type = "smtp" } }, { "send.type", "'smtp'", "kafka" })
end)

check("settings_http_keys_checked", function()
  local function http(extra)
    local t = { type = "http", url = "https://x.example/" }
    for k, v in pairs(extra) do t[k] = v end
    return { send = t }
  end
  fails(http({ url = "x.example" }), { "plugins/crm.lua: send.url must be" })
  fails(http({ timeout_sec = 0 }), { "plugins/crm.lua: send.timeout_sec" })
  fails(http({ request_timeout_sec = "5" }),
    { "plugins/crm.lua: send.request_timeout_sec" })
  fails(http({ success_statuses = { 200, 700 } }),
    { "plugins/crm.lua: send.success_statuses[2]" })
  fails(http({ headers = { ["X-A"] = "a\r\nb" } }),
    { "plugins/crm.lua: send.headers.X-A" })
  fails(http({ headers = { ["Bad Name"] = "a" } }),
    { "plugins/crm.lua: send.headers" })
  fails(http({ basic_auth = { user = "u" } }),
    { "plugins/crm.lua: send.basic_auth.password" })
  fails(http({ max_body_bytes = 0 }), { "send.max_body_bytes" })
  fails(http({ bearer_token = "t", basic_auth = { user = "u",
    password = "p" } }), { "bearer_token", "basic_auth" })
  fails(http({ queue = "q" }),
    { "plugins/crm.lua: unknown setting 'send.queue'" })
  local s = valid(http({ success_regex = "\"ok\":true", bearer_token = "t",
    success_statuses = { 200, 202 }, max_body_bytes = 1048576,
    headers = { ["X-Source"] = "hookd" } }))
  eq(s.send.success_statuses[2], 202, "success_statuses")
  eq(s.send.success_regex, "\"ok\":true", "success_regex")
end)

check("settings_rabbitmq_queue", function()
  local s = valid({ send = { type = "rabbitmq_queue", host = "127.0.0.1",
    queue = "events", user = "u", password = "p" } })
  eq(s.send.port, 5672, "port")
  eq(s.send.vhost, "/", "vhost")
  eq(s.send.durable, true, "durable")
  eq(s.send.auto_delete, false, "auto_delete")
  eq(valid({ send = { type = "rabbitmq_queue", host = "h" } }).send.queue,
    "", "queue defaults to one per event type")
  eq(s.send.batch_size, 100, "batch_size")
  eq(s.send.confirm_timeout_sec, 30, "confirm_timeout_sec")
  fails({ send = { type = "rabbitmq_queue", host = "h",
    queue = string.rep("q", 256) } }, { "send.queue", "255" })
  fails({ send = { type = "rabbitmq_queue", host = "h", queue = "q",
    exchange = "x" } }, { "unknown setting 'send.exchange'" })
  fails({ send = { type = "rabbitmq_queue", host = "h", queue = "q",
    port = 70000 } }, { "send.port" })
end)

check("settings_rabbitmq_exchange", function()
  local s = valid({ send = { type = "rabbitmq_exchange", host = "h",
    exchange = "events", exchange_type = "topic", durable = false } })
  eq(s.send.exchange_type, "topic", "exchange_type")
  eq(s.send.durable, false, "durable")
  fails({ send = { type = "rabbitmq_exchange", host = "h", exchange = "x",
    exchange_type = "fanout" } }, { "plugins/crm.lua: send.exchange_type" })
  fails({ send = { type = "rabbitmq_exchange", exchange = "x" } },
    { "send.host is required" })
end)

-- queue_type: how a queue hook declares its queue. Classic by default,
-- quorum on request, nothing else; exchange hooks declare no queue and
-- reject it as an unknown setting.
check("settings_rabbitmq_queue_type", function()
  local function q(extra)
    local send = { type = "rabbitmq_queue", host = "h", queue = "q" }
    for k, v in pairs(extra or {}) do send[k] = v end
    return { send = send }
  end
  eq(valid(q()).send.queue_type, "classic", "classic by default")
  eq(valid(q({ queue_type = "quorum" })).send.queue_type, "quorum", "quorum")
  eq(valid(q({ queue_type = "classic" })).send.queue_type, "classic",
    "classic")
  eq(valid(q({ queue = "", queue_type = "quorum" })).send.queue_type,
    "quorum", "one quorum queue per event type")
  fails(q({ queue_type = "fast" }), "plugins/crm.lua: send.queue_type " ..
    'must be "classic" or "quorum"')
  fails(q({ queue_type = "Quorum" }), { "send.queue_type", '"quorum"' })
  fails(q({ queue_type = true }), { "send.queue_type", '"classic"' })
  fails({ send = { type = "rabbitmq_exchange", host = "h", exchange = "x",
    queue_type = "quorum" } },
    "plugins/crm.lua: unknown setting 'send.queue_type' for type " ..
    "rabbitmq_exchange")
  -- A destination may set it, and a hook using the destination may
  -- change it: it says how, not where, messages go.
  eq(settings.validate_destination("rq", { type = "rabbitmq_queue",
    host = "h", queue_type = "quorum" }), true, "destination")
  local ok, err = settings.validate_destination("rq", {
    type = "rabbitmq_queue", host = "h", queue_type = "fast" })
  eq(ok, nil, "bad destination")
  eq(err, 'send.queue_type must be "classic" or "quorum" (from ' ..
    "destination 'rq')", "bad destination's message")
  local s = settings.validate(hook({ send = { destination = "rq",
    queue_type = "classic" } }), { id = "x", file = "x.lua",
    destinations = { rq = { type = "rabbitmq_queue", host = "h",
      queue_type = "quorum" } } })
  eq(s.send.queue_type, "classic", "a hook overrides its destination's")
  eq(settings.describe(valid(q({ queue_type = "quorum" }))).send.queue_type,
    "quorum", "shown by describe")
end)

-- connections: how many connections a RabbitMQ hook publishes over,
-- one by default, at most four (a hook's batches in flight).
check("settings_rabbitmq_connections", function()
  local function r(type, extra)
    local send = { type = type, host = "h", queue = "q", exchange = "x" }
    if type == "rabbitmq_queue" then send.exchange = nil
    else send.queue = nil end
    for k, v in pairs(extra or {}) do send[k] = v end
    return { send = send }
  end
  eq(valid(r("rabbitmq_queue")).send.connections, 1, "one by default")
  eq(valid(r("rabbitmq_queue", { connections = 4 })).send.connections, 4,
    "four")
  eq(valid(r("rabbitmq_exchange", { connections = 2 })).send.connections, 2,
    "exchange hooks too")
  fails(r("rabbitmq_queue", { connections = 5 }),
    "plugins/crm.lua: send.connections must be an integer from 1 to 4")
  fails(r("rabbitmq_queue", { connections = 0 }),
    "plugins/crm.lua: send.connections must be an integer from 1 to 4")
  fails(r("rabbitmq_queue", { connections = 1.5 }), { "send.connections" })
  fails(r("rabbitmq_queue", { connections = "2" }), { "send.connections" })
  fails({ send = { type = "kafka", brokers = { "h:1" }, topic = "t",
    connections = 2 } },
    { "unknown setting 'send.connections' for type kafka" })
end)

check("settings_kafka", function()
  local s = valid({ send = { type = "kafka", brokers = { "127.0.0.1:9092" },
    topic = "events", key = "event_data.campaign_id",
    properties = { ["compression.type"] = "lz4" } } })
  eq(s.send.key, "event_data.campaign_id", "key")
  eq(valid({ send = { type = "kafka", brokers = { "h:1" }, topic = "t" } })
    .send.key, "profile_id", "default key")
  eq(valid({ send = { type = "kafka", brokers = { "h:1" }, key = false } })
    .send.key, false, "no key")
  eq(valid({ send = { type = "kafka", brokers = { "h:1" } } }).send.topic,
    "", "topic defaults to one per event type")
  fails({ send = { type = "kafka", topic = "t" } },
    { "plugins/crm.lua: send.brokers is required" })
  fails({ send = { type = "kafka", brokers = { "nohost" }, topic = "t" } },
    { "send.brokers[1]" })
  fails({ send = { type = "kafka", brokers = { "h:1" }, topic = "bad topic" } },
    { "send.topic" })
  fails({ send = { type = "kafka", brokers = { "h:1" }, topic = "t",
    key = true } }, { "send.key" })
  fails({ send = { type = "kafka", brokers = { "h:1" }, topic = "t",
    properties = { acks = 1 } } }, { "send.properties.acks" })
end)

check("settings_describe_masks_secrets", function()
  local s = valid({ send = { type = "http",
    url = "https://user:pw@x.example/in", bearer_token = "tok",
    headers = { ["X-Api-Key"] = "k1", Cookie = "c", ["X-Auth-Token"] = "t2",
      ["X-Client-Secret"] = "s", Accept = "application/json" } } })
  local d = settings.describe(s)
  eq(d.send.bearer_token, "***", "bearer_token")
  eq(d.send.headers["X-Api-Key"], "***", "X-Api-Key")
  eq(d.send.headers.Cookie, "***", "Cookie")
  eq(d.send.headers["X-Auth-Token"], "***", "X-Auth-Token")
  eq(d.send.headers["X-Client-Secret"], "***", "X-Client-Secret")
  eq(d.send.headers.Accept, "application/json", "Accept")
  eq(d.send.url, "https://user:***@x.example/in", "url password")
  eq(s.send.bearer_token, "tok", "normalized untouched")
  local b = settings.describe(valid({ send = "crm" }))
  eq(b.send.headers.Authorization, "***", "Authorization")
  local r = settings.describe(valid({ send = { type = "rabbitmq_queue",
    host = "h", queue = "q", password = "p" } }))
  eq(r.send.password, "***", "rabbitmq password")
  local a = settings.describe(valid({ send = { type = "http",
    url = "https://x.example", basic_auth = { user = "u", password = "p" } } }))
  eq(a.send.basic_auth.password, "***", "basic_auth.password")
  eq(a.send.basic_auth.user, "u", "basic_auth.user")
end)

check("settings_describe_shows_functions_and_templates", function()
  local d = settings.describe(valid({ filter = function() end,
    custom_data = { c = "{{campaign_name}} / {{event_date_ymd}}" } }))
  eq(d.filter, "function", "filter")
  eq(d.custom_data.c, "{{campaign_name}} / {{event_date_ymd}}", "template")
  local text = json.encode(d)
  assert(text:find('"actions":["click"]', 1, true), text)
end)

print("settings_test: ok")
