-- Tests for what `hookd check` and `hookd try` build on: matching an
-- example's expectation (hookd.examples), finding a setting's line in a
-- hook's source (hookd.source), and filters.explain agreeing with
-- filters.match.

local json = require "hookd.json"
local examples = require "hookd.examples"
local source = require "hookd.source"
local filters = require "hookd.filters"
local testing = require "testing"

local check, eq = testing.check, testing.eq

local function got(text) return json.decode(text) end

check("examples_expect_is_a_subset_of_objects", function()
  local msg = got('{"a": 1, "b": {"c": "x", "d": 2}, "e": null}')
  eq(examples.compare({ a = 1 }, msg), nil, "one key")
  eq(examples.compare({ b = { c = "x" } }, msg), nil, "nested subset")
  eq(examples.compare({ e = json.null }, msg), nil, "null")
  eq(examples.compare({}, msg), nil, "empty table")
  eq(examples.compare({ b = { c = "y" } }, msg),
    'b.c: expected "y", got "x"', "nested difference")
  eq(examples.compare({ z = json.null }, msg),
    "z: expected null, got nothing", "null is not missing")
  eq(examples.compare({ e = 5 }, msg), "e: expected 5, got null",
    "null for a number")
  eq(examples.compare({ a = { 1 } }, msg), "a: expected [1], got 1",
    "a number for an array")
end)

check("examples_arrays_match_exactly", function()
  local msg = got('{"t": ["a", {"k": 1, "l": 2}], "u": []}')
  eq(examples.compare({ t = { "a", { k = 1, l = 2 } } }, msg), nil, "same")
  eq(examples.compare({ u = { 1, 2 } }, got('{"u": [1]}')),
    "u: expected [1,2], got [1]", "longer")
  eq(examples.compare({ t = { "a", { k = 1 } } }, msg),
    "t[2].l: expected nothing, got 2", "objects in arrays are exact")
  eq(examples.compare({ u = {} }, msg), nil, "{} for an empty array")
  eq(examples.compare({ u = json.array() }, msg), nil, "json.array()")
  eq(examples.compare({ u = { 1 } }, msg), "u: expected [1], got []")
end)

check("examples_numbers_compare_by_value", function()
  local msg = got('{"n": 973, "big": 12345678901234567890, "f": 0.5}')
  eq(examples.compare({ n = 973, f = 0.5 }, msg), nil, "numbers")
  eq(examples.compare({ big = json.number("12345678901234567890") }, msg),
    nil, "a literal the codec keeps as text")
  eq(examples.compare({ n = "973" }, msg),
    'n: expected "973", got 973', "a string is not a number")
end)

check("examples_verdicts", function()
  eq(examples.verdict(false, "dropped", "database: x"), nil, "drop wanted")
  eq(examples.verdict({}, "dropped", "database: x"),
    "expected a message, but the event was dropped: database: x")
  eq(examples.verdict(false, "message", '{"a":1}'),
    'expected the event to be dropped, got {"a":1}')
  eq(examples.verdict({}, "error", "h.lua:3: boom"), "error: h.lua:3: boom")
  eq(examples.verdict({ a = 1 }, "message", '{"a":1}'), nil, "match")
end)

local SRC = [[
-- send = "commented out"
return {
  database = 111,
  custom_data = {
    cname = "{{campaign_name}}",
    ["x-y"] = "{{uuid}}",
  },
  send = {
    type = "http",
    url = "http://127.0.0.1/",
  },
  filter = function(e) return e.event == nil end,
  tests = {
    {
      event = {event_type = "click"},
      expect = false,
    },
    {event = {event_type = "open"}, expect = {}},
  },
}
]]

check("source_finds_the_line_of_a_setting", function()
  eq(source.key_line(SRC, "database"), 3, "top level")
  eq(source.key_line(SRC, "custom_data.cname"), 5, "nested")
  eq(source.key_line(SRC, "custom_data.x-y"), 6, "bracketed key")
  eq(source.key_line(SRC, "send.url"), 10, "not the comment")
  eq(source.key_line(SRC, "send.bearer_token"), 8, "missing: its table")
  eq(source.key_line(SRC, "actions"), 1, "missing altogether")
  eq(source.key_line(SRC, "tests[2].expect"), 18, "second example")
  eq(source.example_line(SRC, 1), 15, "first example")
  eq(source.example_line(SRC, 2), 18, "second example")
  eq(source.example_line(SRC, 3), 13, "no such example: tests")
end)

check("filters_explain_agrees_with_match", function()
  local c = filters.compile({ actions = { "click" }, database = 111,
    filters = { campaigns = { 973 }, templates = { 17 }, segments = { 41 },
      pixels = { 9 }, resources = { 3 } } })
  local ok = { campaign_id = 973, message_id = 17, segment_id = 41,
    pixel_id = 9, resource_id = 3 }
  local function with(k, v)
    local ed = {}
    for key, value in pairs(ok) do ed[key] = value end
    if k then ed[k] = v end
    return { event_type = "click", list_id = 111, event_data = ed }
  end
  local cases = {
    { with(), nil },
    { { event_type = "open", list_id = 111, event_data = ok }, "actions" },
    { { event_type = "click", list_id = 7, event_data = ok }, "database" },
    { { event_type = "click", event_data = ok }, "database" },
    { { event_type = "click", list_id = 111 }, "campaigns filter" },
    { with("campaign_id", 974), "campaigns filter" },
    { with("message_id", "18"), "templates filter" },
    { with("segment_id", json.null), "segments filter" },
    { with("pixel_id", nil), "pixels filter" },
    { with("resource_id", 4), "resources filter" },
  }
  for i, case in ipairs(cases) do
    local why = filters.explain(c, case[1])
    eq(why == nil, filters.match(c, case[1]), "case " .. i .. " agrees")
    eq(why and why:match("^[^:]+"), case[2], "case " .. i .. " stage")
  end
end)
