-- Tests for events decoded on demand (core/lua_event.h): an event's
-- top-level containers are decoded when first read, and whatever reads
-- it (a field, pairs, next, rawget, the encoder, json.copy, a hook's code
-- in the sandbox) sees the same members a whole decode gives.
local json = require "hookd.json"
local sandbox = require "hookd.sandbox"
local testing = require "testing"

local check, eq = testing.check, testing.eq

local TEXT = '{"event_type":"click","list_id":7,"profile_id":"p1",' ..
  '"event_data":{"campaign_id":973,"link_url":"https://x.example/a"},' ..
  '"subscription":[{"resource_id":3,"email":"a@example.com"}],' ..
  '"profile":{"email":"a@example.com"},"custom_data":{},"flag":true,' ..
  '"none":null}'

-- The event's members as JSON, keys sorted, for comparing two tables.
local function canonical(v)
  if type(v) ~= "table" then return json.encode(v) end
  local keys = {}
  for k in pairs(json.materialize(v)) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = tostring(k) .. "=" .. canonical(v[k])
  end
  return (json.is_array(v) and "[" or "{") .. table.concat(parts, ",") ..
    (json.is_array(v) and "]" or "}")
end

local function same_as_whole(ev, text, what)
  eq(canonical(ev), canonical(json.decode(text)), what)
end

-- The same, each member read by name before anything else reads it.
local function fields_as_whole(ev, text, what)
  for k, v in pairs(json.decode(text)) do
    eq(canonical(ev[k]), canonical(v), what .. ": " .. k)
  end
  same_as_whole(ev, text, what)
end

check("scalars are in the table, containers only once read", function()
  local ev = json.decode_event(TEXT)
  eq(rawget(ev, "event_type"), "click", "event_type")
  eq(rawget(ev, "list_id"), 7, "list_id")
  eq(rawget(ev, "flag"), true, "flag")
  eq(rawget(ev, "none"), json.null, "null")
  eq(rawget(ev, "event_data"), nil, "event_data before a read")
  eq(ev.event_data.campaign_id, 973, "campaign_id")
  eq(rawget(ev, "event_data"), ev.event_data, "kept after the read")
  eq(ev.subscription[1].resource_id, 3, "an array's element")
  eq(json.is_array(ev.subscription), true, "an array stays an array")
  eq(ev.no_such_member, nil, "a member the event lacks")
end)

check("a container read then removed stays removed", function()
  local ev = json.decode_event(TEXT)
  eq(type(ev.profile), "table", "profile")
  ev.profile = nil
  eq(ev.profile, nil, "profile after removing it")
end)

check("a container set or removed before a read keeps what was set",
  function()
    local ev = json.decode_event(TEXT)
    ev.profile = nil
    eq(ev.profile, nil, "removed unread")
    ev.event_data = "replaced"
    eq(ev.event_data, "replaced", "set unread")
    json.materialize(ev)
    eq(ev.profile, nil, "removed, after materialize")
    eq(ev.event_data, "replaced", "set, after materialize")
  end)

check("encode, copy and materialize see every member", function()
  local ev = json.decode_event(TEXT)
  same_as_whole(json.decode(json.encode(json.decode_event(TEXT))), TEXT,
    "encoded")
  same_as_whole(json.copy(json.decode_event(TEXT)), TEXT, "copied")
  local _ = ev.event_data -- one member read, the others not
  json.materialize(ev)
  eq(getmetatable(ev), json.object_mt, "an ordinary object after")
  local n = 0
  for k in next, ev do
    eq(type(k), "string", "key type")
    n = n + 1
  end
  eq(n, 9, "members after materialize")
  same_as_whole(ev, TEXT, "materialized")
end)

check("strings other than type, date and profile id wait to be read",
  function()
    local text = '{"event_type":"click","event_date":"2026-11-01T00:00:01Z",' ..
      '"profile_id":"p1","_md5":"0123abcd","note":"a\\"b\\u00e9\\n",' ..
      '"n":5,"t":true}'
    local ev = json.decode_event(text)
    eq(rawget(ev, "event_type"), "click", "event_type in the table")
    eq(rawget(ev, "event_date"), "2026-11-01T00:00:01Z", "event_date too")
    eq(rawget(ev, "profile_id"), "p1", "profile_id too")
    eq(rawget(ev, "n"), 5, "numbers too")
    eq(rawget(ev, "_md5"), nil, "another string is not, before a read")
    eq(ev._md5, "0123abcd", "read")
    eq(rawget(ev, "_md5"), "0123abcd", "and kept once read")
    eq(ev.note, 'a"b\195\169\n', "escapes decoded on the read")
    eq(json.peek(ev, "note", "x"), nil, "peek into a string")
    local ids = json.decode_event('{"d":{"a":-12,"b":1234567890123456,' ..
      '"c":"x\\u0041","e":"\195\169","f":0,"g":12.5,"h":"","i":true},' ..
      '"s":"plain text"}')
    eq(json.peek(ids, "d", "a"), -12, "a negative integer")
    eq(json.peek(ids, "d", "b"), 1234567890123456, "16 digits")
    eq(json.peek(ids, "d", "c"), "xA", "an escape")
    eq(json.peek(ids, "d", "e"), "\195\169", "UTF-8")
    eq(json.peek(ids, "d", "f"), 0, "zero")
    eq(json.peek(ids, "d", "g"), 12.5, "a fraction")
    eq(json.peek(ids, "d", "h"), "", "an empty string")
    eq(json.peek(ids, "d", "i"), true, "true")
    eq(ids.s, "plain text", "a string read")
    same_as_whole(json.decode_event(text), text, "every member")
    local twice = '{"s":"first-one","b":1,"s":"second"}'
    same_as_whole(json.decode_event(twice), twice, "a string key twice")
    local parts = {}
    for i = 1, 40 do parts[i] = ('"s%d":"v%d"'):format(i, i) end
    text = "{" .. table.concat(parts, ",") .. ',"c":{"k":1}}'
    ev = json.decode_event(text)
    eq(ev.s1, "v1", "a string kept as text")
    eq(rawget(ev, "s40"), "v40", "strings beyond the limit are decoded")
    eq(rawget(ev, "c"), nil, "a container after them still waits")
    same_as_whole(ev, text, "40 strings and a container")
  end)

check("where a broker message goes reads members kept as text", function()
  local pipeline = require "hookd.pipeline"
  local ev = json.decode_event('{"event_type":"rk","list_id":"111",' ..
    '"_md5":"abc","event_data":{"k":"v"}}')
  eq(rawget(ev, "list_id"), nil, "a string list_id is kept as text")
  eq(pipeline.destination({ type = "rabbitmq_exchange" }, ev), "111.rk",
    "the exchange's routing key")
  local topic, key = pipeline.destination({ type = "kafka", topic = "t",
    key = "_md5" }, json.decode_event('{"event_type":"rk","_md5":"abc"}'))
  eq(topic .. "/" .. key, "t/abc", "a Kafka key from a kept string")
  _, key = pipeline.destination({ type = "kafka", topic = "t",
    key = "event_data.k" }, ev)
  eq(key, "v", "a Kafka key inside a kept container")
end)

check("a key given twice: the last one wins, as in a whole decode",
  function()
    for _, text in ipairs({
      '{"a":{"x":1},"a":2}', '{"a":1,"a":{"x":1}}',
      '{"a":{"x":1},"a":{"y":2}}', '{"a":{"x":1},"b":[1],"a":[3]}',
      '{"a":{"x":1},"\\u0061":2}', '{"\\u0061":2,"a":{"x":1}}',
      '{"s":1,"s":"text"}', '{"s":true,"t":2,"s":["x"]}',
    }) do
      fields_as_whole(json.decode_event(text), text, text)
    end
    -- More members decoded at once than the decoder remembers by name:
    -- a repeat of the last is still found.
    local parts = {}
    for i = 1, 40 do parts[i] = ('"n%d":%d'):format(i, i) end
    local text = "{" .. table.concat(parts, ",") .. ',"n40":{"x":1}}'
    fields_as_whole(json.decode_event(text), text, "a repeat after 40 numbers")
  end)

check("a kept member's key is checked like any other", function()
  for _, case in ipairs({
    { '{"a\1":{"x":1}}', "control character in string" },
    { '{"a\255":"text"}', "invalid UTF-8" },
    { '{"a\237\160\128":[1]}', "invalid UTF-8" },
  }) do
    local ev, err = json.decode_event(case[1])
    eq(ev, nil, case[2])
    eq(err:find(case[2], 1, true) ~= nil, true, err)
  end
end)

check("escaped keys, many containers, and texts that are no object",
  function()
    local text = '{"pro\\u0066ile":{"email":"e"},"event_data":{"k":1}}'
    local ev = json.decode_event(text)
    eq(ev.profile.email, "e", "escaped key")
    same_as_whole(ev, text, text)
    local parts = {}
    for i = 1, 40 do parts[i] = ('"c%d":{"v":%d}'):format(i, i) end
    text = "{" .. table.concat(parts, ",") .. "}"
    ev = json.decode_event(text)
    eq(getmetatable(ev), json.object_mt, "over the limit: decoded whole")
    same_as_whole(ev, text, "40 containers")
    local big = '{"a":1,"d":[' .. string.rep('"x",', 20000) .. '"x"]}'
    eq(getmetatable(json.decode_event(big)), json.object_mt,
      "over 64 KiB of containers: decoded whole")
    eq(#json.decode_event(big).d, 20001, "and complete")
    eq(json.decode_event("[1,{}]")[2] ~= nil, true, "an array")
    eq(json.decode_event('"s"'), "s", "a string")
    local bad, err = json.decode_event('{"a":1,}')
    eq(bad, nil, "trailing comma")
    eq(err:find("trailing comma", 1, true) ~= nil, true, err)
  end)

check("hook code sees every member however it looks", function()
  local src = [[
    local seen = {}
    return {
      walk = function(event)
        local keys = {}
        for k in pairs(event) do keys[#keys + 1] = k end
        table.sort(keys)
        return table.concat(keys, ",")
      end,
      step = function(event)
        local n, k = 0, next(event)
        while k ~= nil do n = n + 1; k = next(event, k) end
        return n
      end,
      raw = function(event) return rawget(event, "event_data") end,
      bypass = function(event)
        local n, keys = 0, {}
        for _ in (pairs({})), event do n = n + 1 end
        table.foreach(event, function(k) keys[#keys + 1] = k end)
        return n, #keys
      end,
      kind = function(event)
        json.object(event)
        return event.event_data ~= nil, json.encode(event)
      end,
      as_meta = function(event)
        local p = setmetatable({}, event)
        return p.x
      end,
      meta = function(event)
        local before = getmetatable(event)
        setmetatable(event, {__index = function() return "x" end})
        return before, event.subscription, event.missing
      end,
    }
  ]]
  local hook, err = sandbox.run("h", "h.lua", src, "/nonexistent")
  assert(hook, err)
  local want = "custom_data,event_data,event_type,flag,list_id,none," ..
    "profile,profile_id,subscription"
  eq(hook.walk(json.decode_event(TEXT)), want, "pairs")
  eq(hook.step(json.decode_event(TEXT)), 9, "next")
  eq(hook.raw(json.decode_event(TEXT)).campaign_id, 973, "rawget")
  local n, foreach_n = hook.bypass(json.decode_event(TEXT))
  eq(n, 9, "the next that pairs hands out")
  eq(foreach_n, 9, "table.foreach")
  local has_data, text = hook.kind(json.decode_event(TEXT))
  eq(has_data, true, "json.object keeps the containers")
  same_as_whole(json.decode(text), TEXT, "encoded after json.object")
  eq(hook.as_meta(json.decode_event(
    '{"event_type":"t","__index":{"x":1}}')), 1, "an event as a metatable")
  local before, subs, missing = hook.meta(json.decode_event(TEXT))
  eq(before, nil, "getmetatable hides the runtime's metatable")
  eq(type(subs), "table", "a container after setmetatable")
  eq(missing, "x", "the hook's own __index")
end)

check("peek reads one member of a container, decoding only it", function()
  local ev = json.decode_event(TEXT)
  eq(json.peek(ev, "event_data", "campaign_id"), 973, "campaign_id")
  eq(json.peek(ev, "event_data", "no_such"), nil, "a member it lacks")
  eq(rawget(ev, "event_data"), nil, "event_data still kept as text")
  eq(json.peek(ev, "subscription", "resource_id"), nil, "an array")
  eq(json.peek(ev, "list_id", "x"), nil, "a number")
  eq(json.peek(ev, "nothing", "x"), nil, "a member the event lacks")
  ev.event_data.campaign_id = 5
  eq(json.peek(ev, "event_data", "campaign_id"), 5, "after a change")
  ev.event_data = nil
  eq(json.peek(ev, "event_data", "campaign_id"), nil, "after removal")
  local plain = json.decode(TEXT)
  eq(json.peek(plain, "event_data", "campaign_id"), 973, "a plain table")
  local twice = json.decode_event('{"d":{"a":1,"a":2}}')
  eq(json.peek(twice, "d", "a"), 2, "a key given twice")
  local esc = json.decode_event('{"d":{"\\u0061":"x\\ny"}}')
  eq(json.peek(esc, "d", "a"), "x\ny", "escapes")
end)
