-- Tests for hookd.lookups: ids as text, the checks of POST /v1/content and
-- PUT /v1/profiles bodies, and what send and import events bring for the
-- store, seen before and after their batch is settled. Outside the router
-- hookd.core has no store, so store_put and store_get are replaced here by
-- a small in-memory stand-in for the length of each test.

local json = require "hookd.json"
local core = require "hookd.core"
local lookups = require "hookd.lookups"
local testing = require "testing"

local check, eq, eq_quoted = testing.check, testing.eq, testing.eq_quoted

-- Deep equality of decoded JSON values (key order does not matter).
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function eq_json(got, want_text, what)
  local want = json.decode(want_text)
  if not same(got, want) then
    local shown = got == nil and "nil" or json.encode(got)
    error(string.format("%s: got %s, want %s", what, shown, want_text), 2)
  end
end

-- Runs fn(store) with core.store_put and core.store_get answering from
-- store = {rows = {key -> JSON text}, puts = {...}, gets = n}; the real
-- functions come back afterwards, also when fn fails.
local function with_store(rows, fn)
  local store = { rows = rows or {}, puts = {}, gets = 0 }
  local real_put, real_get = core.store_put, core.store_get
  core.store_put = function(kind, k1, k2, value)
    store.puts[#store.puts + 1] = { kind = kind, k1 = k1, k2 = k2,
      value = json.encode(value) }
  end
  core.store_get = function(kind, k1, k2)
    store.gets = store.gets + 1
    return store.rows[kind .. ":" .. k1 .. (k2 and ":" .. k2 or "")]
  end
  local ok, err = pcall(fn, store)
  core.store_put, core.store_get = real_put, real_get
  if not ok then error(err, 0) end
end

local batch = 0
-- Starts a new routing batch and returns its number.
local function begin()
  batch = batch + 1
  lookups.begin(batch)
  return batch
end

local function event(text) return json.decode(text) end

check("lookups_id_text", function()
  eq(lookups.id_text("m-1"), "m-1", "string")
  eq(lookups.id_text(""), nil, "empty string")
  eq(lookups.id_text(4242), "4242", "integer")
  eq(lookups.id_text(0), "0", "zero")
  eq(lookups.id_text(-1), nil, "negative")
  eq(lookups.id_text(1.5), nil, "fraction")
  eq(lookups.id_text(json.decode("[12345678901234567890]")[1]),
    "12345678901234567890", "big integer literal")
  eq(lookups.id_text(json.null), nil, "null")
  eq(lookups.id_text(true), nil, "boolean")
  eq(lookups.id_text({}), nil, "table")
  eq(lookups.id_text(nil), nil, "nil")
end)

check("lookups_check_content_one_or_a_list", function()
  local out = assert(lookups.check_content(
    '{"send_message_id": "m1", "content": {"k": [1, null, {}]}}'))
  eq(#out, 2, "one item")
  eq(out[1], "m1", "id")
  eq_quoted(out[2], '{"k":[1,null,{}]}', "content as JSON")
  out = assert(lookups.check_content('[{"send_message_id": 77, '
    .. '"content": {}}, {"send_message_id": "b", "content": {"x": 1}}]'))
  eq(#out, 4, "two items")
  eq(out[1], "77", "integer id as text")
  eq_quoted(out[2], "{}", "empty content stays an object")
  eq(out[3], "b", "second id")
end)

check("lookups_check_content_names_the_bad_item", function()
  local cases = {
    { '[{"send_message_id": "a", "content": {}}, {"content": {}}]', 1,
      "send_message_id" },
    { '[{"send_message_id": "a", "content": []}]', 0, "content" },
    { '[{"send_message_id": "a", "content": {}}, 5]', 1, "send_message_id" },
    { '{"send_message_id": "", "content": {}}', 0, "send_message_id" },
    { '{"send_message_id": 2.5, "content": {}}', 0, "send_message_id" },
    { '{"send_message_id": "a"}', 0, "content" },
  }
  for _, c in ipairs(cases) do
    local out, err, index = lookups.check_content(c[1])
    eq(out, nil, "result for " .. c[1])
    eq(index, c[2], "index for " .. c[1])
    eq(err:find(c[3], 1, true) ~= nil, true, "reason '" .. err .. "'")
  end
  for _, text in ipairs({ "", "nope", "[]", "5", '"x"', "null" }) do
    local out, err, index = lookups.check_content(text)
    eq(out, nil, "result for " .. text)
    eq(type(err), "string", "reason for " .. text)
    eq(index, nil, "index for " .. text)
  end
end)

check("lookups_check_profile", function()
  local out = assert(lookups.check_profile('{"email": "a@b", "n": null}'))
  eq(#out, 1, "one value")
  eq_json(json.decode(out[1]), '{"email": "a@b", "n": null}', "fields")
  eq_quoted(assert(lookups.check_profile("{}"))[1], "{}", "empty object")
  for _, text in ipairs({ "[1]", "[]", "5", "null", '"x"', "", "{" }) do
    local none, err = lookups.check_profile(text)
    eq(none, nil, "result for " .. text)
    eq(type(err), "string", "reason for " .. text)
  end
end)

check("lookups_capture_content_of_send_events_only", function()
  with_store(nil, function(store)
    local n = begin()
    for _, t in ipairs({ "send", "send_sms", "send_push" }) do
      local ev = event('{"send_message_id": "' .. t .. '", "content": {"t": "'
        .. t .. '"}}')
      lookups.capture(ev, t)
    end
    lookups.capture(event('{"send_message_id": 4242, "content": {"i": 1}}'),
      "send")
    lookups.capture(event('{"send_message_id": "o", "content": {"x": 1}}'),
      "open")
    lookups.capture(event('{"send_message_id": "arr", "content": [1]}'),
      "send")
    lookups.capture(event('{"content": {"x": 1}}'), "send")
    eq(#store.puts, 4, "writes")
    eq(store.puts[4].kind, "content", "kind")
    eq(store.puts[4].k1, "4242", "integer id as text")
    eq(store.puts[4].k2, nil, "no second key")
    eq_quoted(store.puts[4].value, '{"i":1}', "value")
    eq_json(lookups.content("send_sms"), '{"t": "send_sms"}', "pending")
    eq_json(lookups.content(4242), '{"i": 1}', "by integer")
    eq_json(lookups.content("4242"), '{"i": 1}', "by string")
    eq(store.gets, 0, "pending content read from the store")
    eq(lookups.content("o"), nil, "content of an open event")
    eq(lookups.content(json.null), nil, "null id")
    lookups.settle(n)
  end)
end)

check("lookups_settled_content_is_read_from_the_store", function()
  with_store({ ["content:m"] = '{"v": "stored"}' }, function(store)
    local n = begin()
    lookups.capture(event('{"send_message_id": "m", "content": {"v": 1}}'),
      "send")
    eq_json(lookups.content("m"), '{"v": 1}', "pending wins")
    lookups.settle(n)
    begin()
    eq_json(lookups.content("m"), '{"v": "stored"}', "after settle")
    eq_json(lookups.content("m"), '{"v": "stored"}', "again")
    eq(lookups.content("none"), nil, "unknown id")
    eq(lookups.content("none"), nil, "unknown id again")
    eq(store.gets, 2, "one store read per id and batch")
    begin()
    lookups.content("m")
    eq(store.gets, 3, "a new batch reads again")
  end)
end)

check("lookups_settle_keeps_newer_pending_writes", function()
  with_store(nil, function()
    local first = begin()
    lookups.capture(event('{"send_message_id": "s", "content": {"v": 1}}'),
      "send")
    local second = begin()
    lookups.capture(event('{"send_message_id": "s", "content": {"v": 2}}'),
      "send")
    lookups.settle(first)
    eq_json(lookups.content("s"), '{"v": 2}', "the later batch's content")
    lookups.settle(second)
    begin()
    eq(lookups.content("s"), nil, "settled: only the store is asked")
  end)
end)

check("lookups_import_merges_into_the_profile", function()
  local stored = '{"email": "old@x", "tier": "gold", "city": "Paris"}'
  with_store({ ["profile:111:p1"] = stored }, function(store)
    local n = begin()
    eq_json(lookups.profile(111, "p1"), stored, "stored profile")
    eq(lookups.profile_field("111", "p1", "tier"), "gold", "one field")
    lookups.capture(event('{"list_id": "0111", "profile_id": "p1", '
      .. '"profile": {"email": "new@x", "city": null, "age": 30}}'),
      "import_file")
    eq(#store.puts, 1, "one write")
    eq(store.puts[1].kind, "profile", "kind")
    eq(store.puts[1].k1, "111", "list id canonical")
    eq(store.puts[1].k2, "p1", "profile id")
    eq_json(json.decode(store.puts[1].value),
      '{"email": "new@x", "city": null, "age": 30}',
      "the import's fields, null included, go to the store")
    eq_json(lookups.profile(111, "p1"),
      '{"email": "new@x", "tier": "gold", "age": 30}', "merged")
    eq(lookups.profile_field(111, "p1", "city"), nil, "removed field")
    lookups.capture(event('{"list_id": 111, "profile_id": "p1", '
      .. '"profile": {"tier": null}}'), "import_api")
    eq_json(lookups.profile(111, "p1"), '{"email": "new@x", "age": 30}',
      "second import of the batch")
    lookups.settle(n)
  end)
end)

check("lookups_import_creates_a_profile", function()
  with_store(nil, function(store)
    local n = begin()
    eq(lookups.profile(50, 7), nil, "nothing stored")
    lookups.capture(event('{"list_id": 50, "profile_id": 7, '
      .. '"profile": {"email": "p7@x", "gone": null}}'), "import_manual")
    eq(store.puts[1].k2, "7", "integer profile id as text")
    eq_json(lookups.profile(50, "7"), '{"email": "p7@x"}', "created")
    lookups.settle(n)
  end)
end)

check("lookups_only_imports_with_a_profile_write", function()
  with_store(nil, function(store)
    local n = begin()
    local cases = {
      { '{"list_id": 1, "profile_id": "a", "profile": {"x": 1}}', "click" },
      { '{"list_id": 1, "profile_id": "a", "profile": {"x": 1}}', "imports" },
      { '{"list_id": 1, "profile_id": "a", "profile": [1]}', "import_api" },
      { '{"list_id": 1, "profile_id": "a"}', "import_api" },
      { '{"profile_id": "a", "profile": {"x": 1}}', "import_api" },
      { '{"list_id": -1, "profile_id": "a", "profile": {"x": 1}}',
        "import_api" },
      { '{"list_id": 1, "profile_id": "", "profile": {"x": 1}}',
        "import_api" },
      { '{"list_id": 1, "profile_id": null, "profile": {"x": 1}}',
        "import_api" },
    }
    for _, c in ipairs(cases) do lookups.capture(event(c[1]), c[2]) end
    lookups.capture(event('{"list_id": 1}'), nil)
    eq(#store.puts, 0, "writes")
    eq(lookups.profile(1, "a"), nil, "profile")
    eq(lookups.profile(nil, "a"), nil, "no list id")
    eq(lookups.profile(1, nil), nil, "no profile id")
    lookups.settle(n)
  end)
end)
