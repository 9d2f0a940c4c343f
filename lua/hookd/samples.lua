-- Example events for the router's "test event": one event of a chosen type
-- with plausible values, shaped like the events the platform produces, so
-- a hook's filter, templates and shape run on it as on a real one.
--
-- Every sample carries a top-level "hookd_test": true. That field is how a
-- receiver tells a router test event from a real one. is_test stays false:
-- in the domain it marks a test send of a message, which this is not.
--
-- Samples carry no custom_data on purpose: an event's own custom_data is
-- sent untouched, so a sample with one would hide the hook's templates and
-- profile fields, which is what a test event is meant to show.
--
-- A sample is for one hook's shaping and transport only. It must not go
-- through routing's capture step (lookups.capture): that would store the
-- send events' content and the import events' profile as if they were real.

local json = require "hookd.json"
local catalog_mod = require "hookd.catalog"

-- The C core is there inside the router; without it (a bare Lua) the
-- defaults fall back to os.time.
local has_core, core = pcall(require, "hookd.core")
if not has_core then core = nil end

local M = {}

local type, pairs, tostring, tonumber, setmetatable =
  type, pairs, tostring, tonumber, setmetatable
local find, format, sub = string.find, string.format, string.sub
local floor, huge = math.floor, math.huge
local concat, sort = table.concat, table.sort
local object_mt, array_mt = json.object_mt, json.array_mt
local id_key = catalog_mod.id_key

local function obj(t) return setmetatable(t, object_mt) end
local function arr(t) return setmetatable(t, array_mt) end

-- ---- the known types: channel and event_data group ----

-- channel: whom the subscription entry is for (email, phone or device).
-- group: which event_data the type carries (see BUILDERS below).
local TYPES = {}

local function add(channel, group, names)
  for i = 1, #names do
    TYPES[names[i]] = { channel = channel, group = group }
  end
end

add("email", "delivery", { "send", "deliv", "complain", "suppress", "reply" })
add("email", "failure", { "undeliv", "sbounce", "hbounce" })
add("email", "tracking", { "uopen", "open", "read", "glanced", "skimmed" })
add("email", "link", { "uclick", "click", "confirm", "confirmsub", "unsub" })
add("sms", "delivery", { "send_sms", "deliv_sms" })
add("sms", "failure", { "undeliv_sms" })
add("sms", "tracking", { "unsub_sms" })
add("sms", "link", { "click_sms", "uclick_sms" })
add("push", "delivery", { "send_push", "deliv_push" })
add("push", "failure", { "undeliv_push" })
add("push", "tracking", { "open_push", "uopen_push" })
add("push", "link", { "click_push", "uclick_push" })
add("email", "import", { "import_manual", "import_file", "import_api" })
add("email", "launch", { "campaign_launch" })
add("email", "pixel", { "pixel" })
add("email", "detail", { "profile_merge", "profile_split",
  "subscription_status", "promocode_assign", "promocode_activate" })

-- Send events bring the message content with them, as the platform's do.
TYPES.send.content = true
TYPES.send_sms.content = true
TYPES.send_push.content = true

local TYPE_LIST = {}
for name in pairs(TYPES) do TYPE_LIST[#TYPE_LIST + 1] = name end
sort(TYPE_LIST)

-- The sorted names of every type this module knows; a new list each call,
-- so a caller may change it.
function M.types()
  local out = {}
  for i = 1, #TYPE_LIST do out[i] = TYPE_LIST[i] end
  return out
end

-- The ingest's rule for event_type, so a sample is never one the router
-- itself would refuse. Returns true or nil and the reason.
local function check_type(t)
  if type(t) ~= "string" then
    return nil, "event type must be a string"
  end
  if #t < 1 or #t > 128 or not find(t, "^[A-Za-z0-9_.%-]+$") then
    return nil, "event type must be 1-128 characters of letters, digits, "
      .. "'_', '-' and '.'"
  end
  return true
end

-- ---- a small seeded generator ----

-- Park and Miller's multiplicative generator: every product stays below
-- 2^53, so plain Lua numbers compute it exactly and a seed gives the same
-- values on every build. math.random is left alone: hooks may use it.
local MOD = 2147483647

local Rng = {}
Rng.__index = Rng

local function new_rng(seed)
  local whole = floor(seed)
  local s = (whole % (MOD - 1) + floor((seed - whole) * 2 ^ 31)) % (MOD - 1)
  -- Huge seeds lose precision in %; any state in range will do for them.
  if not (s >= 0 and s < MOD - 1) then s = 0 end
  local r = setmetatable({ state = floor(s) + 1 }, Rng)
  -- Nearby seeds start with nearby states; a few steps spread them apart.
  for _ = 1, 3 do r:next() end
  return r
end

function Rng:next()
  self.state = self.state * 48271 % MOD
  return self.state
end

-- An integer in [lo, hi], taken from the high bits of the state.
function Rng:int(lo, hi)
  return lo + floor(self:next() / MOD * (hi - lo + 1))
end

function Rng:pick(list) return list[self:int(1, #list)] end

local HEX = "0123456789abcdef"

function Rng:hex(n)
  local out = {}
  for i = 1, n do
    local d = self:int(1, 16)
    out[i] = sub(HEX, d, d)
  end
  return concat(out)
end

-- ---- options ----

-- The latest instant RFC 3339's four-digit year can show.
local MAX_TIME = 253402300799

-- RFC 3339 in UTC with nine fraction digits, as the platform writes it;
-- microseconds are what a double holds exactly for today's times.
local function rfc3339(now)
  local sec = floor(now)
  local us = floor((now - sec) * 1e6 + 0.5)
  if us >= 1000000 then sec, us = sec + 1, us - 1000000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. format(".%06d000Z", us)
end

local function finite(v)
  return type(v) == "number" and v == v and v ~= huge and v ~= -huge
end

local function default_now()
  if core then return core.now() end
  return os.time()
end

local function default_seed()
  if core then return tonumber(sub(core.uuid4(), 1, 8), 16) end
  return os.time() + floor(os.clock() * 1e6)
end

-- An id as the corpus writes it: a JSON integer. Ids past 2^53 would lose
-- digits as a double, so they become number literals of the same text.
local function id_value(key)
  local n = tonumber(key)
  if n < 2 ^ 53 then return n end
  return json.number(key)
end

-- list_id from the options: a positive integer, its decimal text or a
-- number literal from hookd.json. Returns the id, or nil and the reason.
local function option_list_id(v)
  local key = id_key(v)
  if key == nil or key == "0" then
    return nil, "list_id must be a positive integer database id"
  end
  return id_value(key)
end

-- The router holds a hookd.catalog object; a plain table shaped like the
-- catalog file is accepted too and checked the same way.
local function option_catalog(v)
  if type(v) ~= "table" then return nil, "catalog must be a table" end
  if type(v.get) == "function" and type(v.kinds) == "table" then
    return v
  end
  return catalog_mod.new(v)
end

-- Checks opts; returns {now, seed, list_id, catalog} or nil and the reason.
local function read_options(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then return nil, "options must be a table" end
  local o = { now = opts.now, seed = opts.seed }
  if o.now == nil then o.now = default_now() end
  if not finite(o.now) or o.now < 0 or o.now > MAX_TIME then
    return nil, "now must be unix seconds between 1970 and 9999"
  end
  if o.seed == nil then o.seed = default_seed() end
  if not finite(o.seed) then return nil, "seed must be a finite number" end
  local err
  if opts.list_id ~= nil then
    o.list_id, err = option_list_id(opts.list_id)
    if o.list_id == nil then return nil, err end
  end
  if opts.catalog ~= nil then
    o.catalog, err = option_catalog(opts.catalog)
    if o.catalog == nil then return nil, err end
  end
  return o
end

-- ---- the values one sample is made of ----

-- An id of a kind that the catalog names, chosen by the generator so
-- templates such as {{campaign_name}} render a real name; nil when the
-- catalog has none. Keys are sorted first: pairs order is no order, and a
-- seed must pick the same id every time.
local function catalog_id(rng, cat, kind)
  if cat == nil then return nil end
  local keys = {}
  for key in pairs(cat.kinds[kind] or {}) do
    if key ~= "0" then keys[#keys + 1] = key end -- 0 means "none"
  end
  if #keys == 0 then return nil end
  sort(keys)
  return id_value(rng:pick(keys))
end

local function id_of(p, kind, lo, hi)
  return catalog_id(p.rng, p.catalog, kind) or p.rng:int(lo, hi)
end

-- A segment is often absent (0) in real traffic; a catalog segment is
-- preferred when there is one, so {{segment_name}} shows something.
local function segment_of(p)
  local id = catalog_id(p.rng, p.catalog, "segments")
  if id then return id end
  if p.rng:int(0, 1) == 0 then return 0 end
  return p.rng:int(1, 99)
end

local FIRST_NAMES = { "Alex", "Maria", "Li", "Zoë", "Иван", "Sam" }
local SUBJECTS = { "Your weekly picks", "New arrivals are here",
  "Last chance: 30% off", "Thanks for joining us" }

-- The template's subject from the catalog, else an invented one.
local function subject_of(p)
  local entry = p.catalog and p.catalog:get("templates", p.message_id)
  if entry and type(entry.subject) == "string" and entry.subject ~= "" then
    return entry.subject
  end
  return p.rng:pick(SUBJECTS)
end

-- Example addresses only: example.com and example.org are reserved for
-- documentation, and 555-01xx numbers are reserved fictional ones.
local function person(p)
  local rng = p.rng
  p.email = format("user%d@%s", rng:int(1000, 99999),
    rng:pick({ "example.com", "example.org" }))
  p.phone = format("+1555555%04d", rng:int(100, 199))
  p.first_name = rng:pick(FIRST_NAMES)
  p.profile_id = rng:hex(24)
  p.device_id = rng:hex(20)
end

-- Draws every value of the sample in a fixed order, so a seed gives the
-- same event whatever the type.
local function draw(o)
  local rng = new_rng(o.seed)
  local p = { rng = rng, catalog = o.catalog, now = o.now }
  p.date = rfc3339(o.now)
  p.list_id = o.list_id or id_of(p, "databases", 1, 999)
  p.account_id = rng:int(1, 999)
  p.campaign_id = id_of(p, "campaigns", 100, 9999)
  p.message_id = id_of(p, "templates", 1, 999)
  p.resource_id = id_of(p, "resources", 1, 50)
  p.segment_id = segment_of(p)
  p.subject = subject_of(p)
  person(p)
  p.launch_id = rng:hex(24)
  p.send_id = rng:hex(10)
  return p
end

-- ---- event_data by group ----

-- The decimal text of an id, number or number literal.
local function id_text(v) return id_key(v) or tostring(v) end

-- The fields every message event has: which message, campaign, segment,
-- resource, launch and send it is about.
local function message_data(p)
  local send_message_id = concat({ p.send_id, id_text(p.campaign_id),
    id_text(p.message_id), id_text(p.list_id), id_text(p.segment_id) }, "_")
    .. "." .. p.profile_id
  return obj({
    message_id = p.message_id, campaign_id = p.campaign_id,
    segment_id = p.segment_id, resource_id = p.resource_id,
    launch_id = p.launch_id, send_message_id = send_message_id,
  })
end

local REASONS = {
  undeliv = { "554 5.7.1 message rejected", "421 4.4.2 connection timed out" },
  sbounce = { "452 4.2.2 mailbox full", "451 4.7.1 try again later" },
  hbounce = { "550 5.1.1 user unknown", "550 5.1.2 domain not found" },
  undeliv_sms = { "absent subscriber", "delivery timeout",
    "number not in service" },
  undeliv_push = { "device token not registered", "push token expired" },
}

local function failure_data(p, event_type)
  local ed = message_data(p)
  ed.reason = p.rng:pick(REASONS[event_type])
  return ed
end

-- Places for geo fields; the last is the "unknown" form the platform uses
-- ("" and 0, never missing).
local PLACES = {
  { ".us", "New York", "10001", "New York", "America/New_York", 40.71, -74.01 },
  { ".de", "Berlin", "10115", "Berlin", "Europe/Berlin", 52.52, 13.4 },
  { ".jp", "東京", "100-0001", "東京都", "Asia/Tokyo", 35.68, 139.69 },
  { ".br", "São Paulo", "01000-000", "São Paulo", "America/Sao_Paulo",
    -23.55, -46.63 },
  { "", "", "", "", "", 0, 0 },
}

local CLIENTS = {
  { "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Linux x86_64", "Firefox", "web" },
  { "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    .. "like Gecko) Chrome/126.0 Safari/537.36", "Windows 10", "Chrome",
    "web" },
  { "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
    .. "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "iOS 17.5", "Safari", "mobile" },
  { "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, "
    .. "like Gecko) Chrome/126.0 Mobile Safari/537.36", "Android 14",
    "Chrome", "mobile" },
}

-- An address from the documentation ranges (RFC 5737), never a real host.
local function test_ip(rng)
  return format("%s.%d", rng:pick({ "192.0.2", "198.51.100", "203.0.113" }),
    rng:int(1, 254))
end

-- Where and on what the recipient acted. SMS and push are read on phones.
local function tracking_data(p, _, channel)
  local rng, ed = p.rng, message_data(p)
  local place = rng:pick(PLACES)
  local client = channel == "email" and rng:pick(CLIENTS)
    or CLIENTS[rng:int(3, 4)]
  ed.ip = test_ip(rng)
  ed.country, ed.city, ed.postal_code, ed.region = place[1], place[2],
    place[3], place[4]
  ed.tz, ed.lat, ed.lon = place[5], place[6], place[7]
  ed.user_agent, ed.os, ed.browser, ed.device = client[1], client[2],
    client[3], client[4]
  if channel == "push" then ed.extra_uid = rng:hex(32) end
  return ed
end

local function link_data(p, event_type, channel)
  local ed = tracking_data(p, event_type, channel)
  ed.link_url = format("https://www.example.com/%s?utm_source=%s&id=%d",
    p.rng:pick({ "sale", "new", "account", "promo" }), channel,
    p.rng:int(1000, 999999))
  return ed
end

local function import_data(p)
  return obj({ import_id = p.rng:int(1, 9999),
    fields_updated = p.rng:int(1, 20) })
end

local function launch_data(p)
  return obj({ campaign_id = p.campaign_id, launch_id = p.launch_id })
end

local function pixel_data(p)
  return obj({ pixel_id = p.rng:int(1, 99), ip = test_ip(p.rng),
    url = format("https://shop.example.org/cart?item=%d",
      p.rng:int(1, 500)) })
end

-- Profile merges and splits, subscription changes and promocodes: the
-- producer's own keys, which the router passes on untouched.
local function detail_data(p, event_type)
  return obj({ detail = event_type, value = p.rng:int(1, 999999) })
end

local BUILDERS = {
  delivery = message_data, failure = failure_data, tracking = tracking_data,
  link = link_data, import = import_data, launch = launch_data,
  pixel = pixel_data, detail = detail_data,
}

-- ---- the envelope ----

-- The subscription the event is about, in the shape of its channel.
local function subscription(p, channel)
  local s = obj({ resource_id = p.resource_id, channel = channel,
    priority = 1, status = "subscribed" })
  if channel == "sms" then
    s.phone = p.phone
  elseif channel == "push" then
    s.subscription_id, s.provider = p.device_id, "androidfirebase"
  else
    s.email = p.email
  end
  return arr({ s })
end

-- The message content of a send event, per channel.
local function content(p, channel)
  if channel == "sms" then
    return obj({ sms = obj({ text = p.subject, sender = "EXAMPLE" }) })
  elseif channel == "push" then
    return obj({ push = obj({ title = p.subject,
      body = "Open the app to see more", url = "https://www.example.com/" }) })
  end
  local text = format("Hello, %s! %s", p.first_name, p.subject)
  return obj({ email = obj({ subject = p.subject, from_name = "Example Shop",
    from_email = "news@example.com", text = text,
    html = "<p>" .. text .. "</p>" }) })
end

-- The fields every event has. _xxh and _md5 have the corpus's lengths but
-- are random, not hashes of the address: nobody can look a test up by them.
-- The inline profile is input only (the message builder drops it); it lets
-- a hook's profile fields show values for a profile the store lacks.
local function envelope(event_type, p, channel)
  local rng = p.rng
  return obj({
    event_type = event_type, event_date = p.date,
    profile_id = p.profile_id, _xxh = rng:hex(16), _md5 = rng:hex(32),
    list_id = p.list_id, account_id = p.account_id,
    is_test = false, hookd_test = true,
    subscription_hash_id = rng:hex(13),
    subscription = subscription(p, channel),
    profile = obj({ email = p.email, phone = p.phone,
      _fname = p.first_name, _lname = "Example" }),
  })
end

-- A new sample event of event_type; see the top of the file. opts (all
-- optional): now (unix seconds; default the core's clock), list_id (the
-- database the hook captures), catalog (a hookd.catalog object or a table
-- shaped like the catalog file; its ids are preferred), seed (a number:
-- the same seed, type and options give the same event). A well-formed type
-- this module does not know gets the common fields and an empty
-- event_data. Returns the event (tables tagged for hookd.json), or nil and
-- the reason for a malformed type or bad options.
function M.event(event_type, opts)
  local ok, err = check_type(event_type)
  if not ok then return nil, err end
  local o
  o, err = read_options(opts)
  if not o then return nil, err end
  local p = draw(o)
  local info = TYPES[event_type]
  local channel = info and info.channel or "email"
  local ev = envelope(event_type, p, channel)
  if not info then
    ev.event_data = obj({})
    return ev
  end
  ev.event_data = BUILDERS[info.group](p, event_type, channel)
  if info.content then ev.content = content(p, channel) end
  return ev
end

return M
