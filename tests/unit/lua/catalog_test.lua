-- Tests for hookd.catalog: loading and shape checks, lookups by number or
-- string id, and updates through set().

local json = require "hookd.json"
local catalog = require "hookd.catalog"
local testing = require "testing"

local check, eq, fixture = testing.check, testing.eq, testing.fixture

local function load_error(text)
  local cat, err = catalog.new(json.decode(text))
  eq(cat, nil, "catalog for " .. text)
  return err
end

check("catalog_loads_fixture", function()
  local cat = assert(catalog.new(fixture("catalog.json")))
  eq(cat:get("campaigns", 973).name, "Black Friday", "campaign name")
  eq(cat:get("campaigns", 973).subid, "bf-2026", "campaign subid")
  eq(cat:get("databases", 111).name, "Customers", "database")
  eq(cat:get("segments", 41).name, "Active buyers", "segment")
  eq(cat:get("templates", 17).subject, "Black Friday: up to 70% off",
    "template subject")
  eq(cat:get("resources", 12).name, "App push", "resource")
end)

check("catalog_get_by_number_or_string", function()
  local cat = assert(catalog.new(fixture("catalog.json")))
  eq(cat:get("campaigns", "974").name, "Cyber Monday", "string id")
  eq(cat:get("campaigns", 974.0).name, "Cyber Monday", "float id")
  eq(cat:get("campaigns", "0974").name, "Cyber Monday", "leading zero")
end)

check("catalog_get_big_ids_exact", function()
  local cat = assert(catalog.new(json.decode(
    '{"campaigns": {"9007199254740993": {"name": "Big"}}}')))
  local ev = json.decode('{"a": 9007199254740993, "b": 9007199254740992}')
  eq(cat:get("campaigns", ev.a).name, "Big", "decoded big id")
  eq(cat:get("campaigns", ev.b), nil, "neighbouring id")
  eq(cat:get("campaigns", "9007199254740993").name, "Big", "string id")
end)

check("catalog_get_missing_is_nil", function()
  local cat = assert(catalog.new(fixture("catalog.json")))
  eq(cat:get("campaigns", 1), nil, "unknown id")
  eq(cat:get("campaigns", nil), nil, "nil id")
  eq(cat:get("campaigns", json.null), nil, "null id")
  eq(cat:get("campaigns", 973.5), nil, "fractional id")
  eq(cat:get("campaigns", "abc"), nil, "text id")
end)

check("catalog_empty", function()
  local cat = assert(catalog.new(nil))
  eq(cat:get("databases", 111), nil, "from nil")
  cat = assert(catalog.new(json.decode('{"segments": {}}')))
  eq(cat:get("segments", 41), nil, "from {}")
end)

check("catalog_unknown_kind_is_an_error", function()
  local err = load_error('{"campains": {}}')
  assert(err:find("unknown kind 'campains'", 1, true), err)
end)

check("catalog_bad_shapes_are_errors", function()
  local err = load_error('{"campaigns": [1]}')
  assert(err:find("campaigns", 1, true), err)
  err = load_error('{"campaigns": {"abc": {"name": "x"}}}')
  assert(err:find("campaigns: id 'abc'", 1, true), err)
  err = load_error('{"campaigns": {"1": "x"}}')
  assert(err:find("campaigns.1 must be an object", 1, true), err)
  err = load_error('{"templates": {"5": {"subject": 5}}}')
  assert(err:find("templates.5.subject must be a string", 1, true), err)
  err = select(2, catalog.new("text"))
  eq(err, "catalog: must be an object", "non-table")
end)

check("catalog_null_field_reads_absent", function()
  local cat = assert(catalog.new(json.decode(
    '{"campaigns": {"7": {"name": "N", "subid": null}}}')))
  eq(cat:get("campaigns", 7).subid, nil, "subid")
end)

check("catalog_set_adds_updates_and_removes", function()
  local cat = assert(catalog.new(fixture("catalog.json")))
  assert(cat:set("campaigns", 1, { name = "New", subid = "n" }))
  eq(cat:get("campaigns", "1").name, "New", "added")
  assert(cat:set("campaigns", "973", { name = "BF 2" }))
  eq(cat:get("campaigns", 973).name, "BF 2", "updated")
  assert(cat:set("campaigns", 973, nil))
  eq(cat:get("campaigns", 973), nil, "removed")
end)

check("catalog_set_rejects_bad_input", function()
  local cat = assert(catalog.new(nil))
  local ok, err = cat:set("campains", 1, { name = "x" })
  eq(ok, nil, "unknown kind accepted")
  assert(err:find("unknown kind 'campains'", 1, true), err)
  ok, err = cat:set("campaigns", "x1", { name = "x" })
  eq(ok, nil, "bad id accepted")
  ok, err = cat:set("campaigns", 1, { name = {} })
  eq(ok, nil, "bad name accepted")
  assert(err:find("campaigns.1.name", 1, true), err)
end)

check("catalog_get_unknown_kind_raises", function()
  local cat = assert(catalog.new(nil))
  local ok, err = pcall(cat.get, cat, "campains", 1)
  eq(ok, false, "get returned")
  assert(tostring(err):find("unknown kind 'campains'", 1, true), err)
end)

print("catalog_test: ok")
