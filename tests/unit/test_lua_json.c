/* Unit tests for core/lua_json.c (the "hookd.json" module): fidelity of
 * decode -> encode round trips, Lua-side values, encode errors with their
 * key paths, and the C entry points used by the router. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua5.1/lua-cjson.h>

#include "buf.h"
#include "lua_json.h"
#include "test_util.h"

static lua_State *L;

/* Runs a Lua chunk; a Lua error is a failure reported at the C line. */
static void run_lua(int line, const char *name, const char *code) {
  int top = lua_gettop(L);

  if (luaL_loadbuffer(L, code, strlen(code), name) != 0 ||
      lua_pcall(L, 0, 0, 0) != 0)
    test_failf(__FILE__, line, "%s", lua_tostring(L, -1));
  lua_settop(L, top);
}

#define LUA_TEST(code) run_lua(__LINE__, __func__, code)

/* Helpers every chunk can use. eq/fails report the chunk's line. */
static const char *k_prelude =
    "json = require 'hookd.json'\n"
    "function rt(s) return json.encode(assert(json.decode(s))) end\n"
    "function eq(got, want, what)\n"
    "  if got ~= want then\n"
    "    error(string.format('%s: got %q, want %q', what or 'value',\n"
    "          tostring(got), tostring(want)), 2)\n"
    "  end\n"
    "end\n"
    "function fails(f, want)\n"
    "  local ok, err = pcall(f)\n"
    "  if ok then error('no error, want ' .. want, 2) end\n"
    "  if not string.find(err, want, 1, true) then\n"
    "    error('error ' .. err .. ', want ' .. want, 2)\n"
    "  end\n"
    "end\n"
    "function same(a, b)\n" /* strict: kinds, literals and null count */
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'userdata' then return tostring(a) == tostring(b) end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  if getmetatable(a) ~= getmetatable(b) then return false end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n";

/* ---- fidelity ----------------------------------------------------------- */

static void lua_json_empty_array_stays_array(void) {
  LUA_TEST("eq(rt('[]'), '[]')\n"
           "eq(rt('{\"a\":[]}'), '{\"a\":[]}')\n"
           "eq(getmetatable(json.decode('[]')), json.array_mt, 'mt')\n"
           "eq(json.is_array(json.decode('[]')), true, 'is_array')\n");
}

static void lua_json_empty_object_stays_object(void) {
  LUA_TEST("eq(rt('{}'), '{}')\n"
           "eq(rt('[{}]'), '[{}]')\n"
           "eq(getmetatable(json.decode('{}')), json.object_mt, 'mt')\n"
           "eq(json.is_array(json.decode('{}')), false, 'is_array')\n");
}

static void lua_json_null_stays_null(void) {
  LUA_TEST("eq(json.decode('null'), json.null)\n"
           "eq(json.decode('{\"a\":null}').a, json.null)\n"
           "eq(rt('{\"a\":null}'), '{\"a\":null}')\n"
           "eq(rt('null'), 'null')\n"
           "eq(type(json.null), 'userdata')\n");
}

static void lua_json_null_inside_array_keeps_length(void) {
  LUA_TEST("local t = json.decode('[1,null,3]')\n"
           "eq(#t, 3, 'length')\n"
           "eq(t[2], json.null, 't[2]')\n"
           "eq(t[3], 3, 't[3]')\n"
           "eq(json.encode(t), '[1,null,3]')\n"
           "eq(rt('[null]'), '[null]')\n"
           "eq(rt('[null,null]'), '[null,null]')\n");
}

static void lua_json_nested_empty_containers(void) {
  LUA_TEST("local s = '[[],{},[[]],[{}],{\"a\":[]},{\"b\":{}},[[[{}]]]]'\n"
           "eq(rt(s), s)\n");
}

static void lua_json_integers_unchanged(void) {
  LUA_TEST("for _, s in ipairs{'0', '-1', '1520169199', '9007199254740992',\n"
           "    '-9007199254740992', '9007199254740993',\n"
           "    '1234567890123456789',\n"
           "    '-9223372036854775808', '18446744073709551615',\n"
           "    '123456789012345678901234567890'} do\n"
           "  eq(rt(s), s)\n"
           "  eq(rt('[' .. s .. ']'), '[' .. s .. ']')\n"
           "  eq(rt('{\"id\":' .. s .. '}'), '{\"id\":' .. s .. '}')\n"
           "end\n");
}

static void lua_json_exact_integers_are_lua_numbers(void) {
  LUA_TEST("eq(json.decode('1520169199'), 1520169199)\n"
           "eq(json.decode('9007199254740992'), 2^53)\n"
           "eq(json.decode('-9007199254740992'), -2^53)\n"
           "eq(type(json.decode('9007199254740993')), 'userdata')\n"
           "eq(json.is_number_literal(json.decode('9007199254740993')), true)\n"
           "eq(json.is_number_literal(json.decode('5')), false)\n");
}

static void lua_json_number_literal_behaves(void) {
  LUA_TEST("local n = json.decode('1234567890123456789')\n"
           "eq(tostring(n), '1234567890123456789')\n"
           "eq('id=' .. n, 'id=1234567890123456789')\n"
           "eq(n .. '!', '1234567890123456789!')\n"
           "eq(n == json.decode('1234567890123456789'), true, '==')\n"
           "eq(n == json.decode('1234567890123456788'), false, '~=')\n"
           "eq(n == json.number('1234567890123456789'), true, 'number()')\n"
           "eq(getmetatable(n), json.number_mt, 'mt')\n"
           "eq(json.encode({id = json.number('77')}), '{\"id\":77}')\n"
           "eq(json.encode(json.number('-1.5e400')), '-1.5e400')\n"
           "fails(function() json.number('12a') end, 'not a JSON number')\n"
           "fails(function() json.number('') end, 'not a JSON number')\n");
}

static void lua_json_out_of_range_double_kept_as_literal(void) {
  LUA_TEST("eq(rt('1e400'), '1e400')\n"
           "eq(rt('[-1e400]'), '[-1e400]')\n");
}

static void lua_json_integral_doubles_have_no_fraction(void) {
  LUA_TEST("eq(json.encode(5.0), '5')\n"
           "eq(json.encode(-5), '-5')\n"
           "eq(json.encode(1520169199), '1520169199')\n"
           "eq(json.encode(2^53 - 1), '9007199254740991')\n"
           "eq(json.encode(1e15), '1000000000000000')\n"
           "eq(rt('-74.0'), '-74')\n"
           "eq(rt('-0'), '-0')\n"
           "eq(rt('1E2'), '100')\n");
}

static void lua_json_doubles_print_shortest(void) {
  LUA_TEST("eq(json.encode(0.1), '0.1')\n"
           "eq(json.encode(55.75), '55.75')\n"
           "eq(json.encode(-37.62), '-37.62')\n"
           "eq(json.encode(1e300), '1e+300')\n"
           "eq(json.encode(2^60), '1.152921504606847e+18')\n"
           "for _, v in ipairs{1/3, 2/3, 0.1 + 0.2, 5e-324,\n"
           "    1.7976931348623157e308,\n"
           "    123456.789e-10} do\n"
           "  eq(json.decode(json.encode(v)), v, json.encode(v))\n"
           "end\n");
}

static void lua_json_slash_not_escaped(void) {
  LUA_TEST("eq(rt('\"http://x/y\"'), '\"http://x/y\"')\n"
           "eq(json.decode('\"a\\\\/b\"'), 'a/b')\n"
           "eq(json.encode('</script>'), '\"</script>\"')\n");
}

static void lua_json_utf8_passes_through(void) {
  LUA_TEST("local s = '\"\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 "
           "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80\"'\n"
           "eq(rt(s), s)\n"
           "eq(json.encode('\xc3\xa9'), '\"\xc3\xa9\"')\n");
}

static void lua_json_unicode_escapes_decode_to_utf8(void) {
  LUA_TEST("eq(json.decode('\"\\\\ud83d\\\\ude00\"'), '\xf0\x9f\x98\x80')\n"
           "eq(json.decode('\"\\\\u00e9\\\\u0416\\\\u65e5\"'),\n"
           "   '\xc3\xa9\xd0\x96\xe6\x97\xa5')\n"
           "eq(rt('\"\\\\ud83d\\\\ude00\"'), '\"\xf0\x9f\x98\x80\"')\n"
           "eq(json.decode('\"a\\\\u0000b\"'), 'a\\0b')\n"
           "eq(json.decode('\"\\\\\"\\\\\\\\\\\\b\\\\f\\\\n\\\\r\\\\t\"'),\n"
           "   '\"\\\\\\b\\f\\n\\r\\t')\n");
}

static void lua_json_long_escaped_string_decodes(void) {
  LUA_TEST("local s = string.rep('ab\\\\n\\\\u00e9', 1000)\n"
           "eq(json.decode('\"' .. s .. '\"'),\n"
           "   string.rep('ab\\n\xc3\xa9', 1000))\n");
}

static void lua_json_control_characters_escaped(void) {
  LUA_TEST("eq(json.encode('a\\nb\\tc\\rd\\be\\ff'), "
           "'\"a\\\\nb\\\\tc\\\\rd\\\\be\\\\ff\"')\n"
           "eq(json.encode('\\1\\31\\0'), '\"\\\\u0001\\\\u001f\\\\u0000\"')\n"
           "eq(json.encode('q\"b\\\\'), '\"q\\\\\"b\\\\\\\\\"')\n"
           "eq(json.encode('\\127'), '\"\\127\"')\n");
}

static void lua_json_lua_tables_classified(void) {
  LUA_TEST("local s = json.encode({a = {}, b = {1, 2}})\n"
           "assert(s == '{\"a\":{},\"b\":[1,2]}' or\n"
           "       s == '{\"b\":[1,2],\"a\":{}}', s)\n"
           "eq(json.encode({}), '{}')\n"
           "eq(json.encode({'x', true, false}), '[\"x\",true,false]')\n"
           "eq(json.encode({[1] = 'a', [2] = 'b'}), '[\"a\",\"b\"]')\n"
           "local t = {} t[3] = 'c' t[2] = 'b' t[1] = 'a'\n"
           "eq(json.encode(t), '[\"a\",\"b\",\"c\"]', 'keys added backwards')\n"
           "eq(json.is_array({1, 2}), true, 'is_array')\n"
           "eq(json.is_array({a = 1}), false, 'is_array')\n"
           "eq(json.is_array({}), false, 'is_array')\n");
}

static void lua_json_array_and_object_tags(void) {
  LUA_TEST("eq(json.encode(json.array({})), '[]')\n"
           "eq(json.encode(json.array()), '[]')\n"
           "eq(json.encode(json.object()), '{}')\n"
           "local t = {}\n"
           "eq(json.array(t), t, 'returns its argument')\n"
           "eq(json.is_array(t), true)\n"
           "eq(json.encode({list = json.array({})}), '{\"list\":[]}')\n"
           "eq(json.encode(json.array({1, json.null, 3})), '[1,null,3]')\n"
           "fails(function() json.array(5) end, 'table expected')\n");
}

static void lua_json_decoded_values_can_be_edited(void) {
  LUA_TEST("local e = json.decode('{\"a\":[1],\"b\":{}}')\n"
           "e.a[#e.a + 1] = 2\n"
           "e.b.x = 'y'\n"
           "e.a = e.a\n"
           "local s = json.encode(e)\n"
           "assert(s == '{\"a\":[1,2],\"b\":{\"x\":\"y\"}}' or\n"
           "       s == '{\"b\":{\"x\":\"y\"},\"a\":[1,2]}', s)\n");
}

/* ---- encode errors ------------------------------------------------------ */

static void lua_json_encode_refuses_nan_and_infinity(void) {
  LUA_TEST("fails(function() json.encode(0/0) end,\n"
           "      'cannot encode NaN/infinity')\n"
           "fails(function() json.encode(math.huge) end, 'NaN/infinity')\n"
           "fails(function() json.encode({x = -math.huge}) end,\n"
           "      'cannot encode NaN/infinity at x')\n");
}

static void lua_json_encode_refuses_function_with_path(void) {
  LUA_TEST("fails(function() json.encode(print) end,\n"
           "      'cannot encode function')\n"
           "fails(function()\n"
           "  json.encode({message = {custom_data = {f = print}}})\n"
           "end, 'cannot encode function at message.custom_data.f')\n"
           "fails(function() json.encode({items = {1, 2, print}}) end,\n"
           "      'cannot encode function at items[3]')\n"
           "fails(function() json.encode({['a b'] = {print}}) end,\n"
           "      'cannot encode function at [\"a b\"][1]')\n");
}

static void lua_json_encode_refuses_other_types(void) {
  LUA_TEST("fails(function() json.encode(coroutine.create(print)) end,\n"
           "      'cannot encode thread')\n"
           "fails(function() json.encode(newproxy()) end,\n"
           "      'cannot encode userdata')\n"
           "local ffi = require 'ffi'\n"
           "fails(function() json.encode({v = ffi.new('int', 1)}) end,\n"
           "      'cannot encode cdata at v')\n"
           "fails(function() json.encode({[true] = 1}) end,\n"
           "      'cannot encode table with boolean keys')\n");
}

static void lua_json_encode_refuses_sparse_arrays(void) {
  LUA_TEST("fails(function() json.encode({1, nil, 3}) end,\n"
           "      'cannot encode sparse array')\n"
           "fails(function() json.encode({[5] = 1}) end,\n"
           "      'cannot encode sparse array')\n"
           "fails(function() json.encode({[0] = 1}) end,\n"
           "      'cannot encode sparse array')\n"
           "fails(function() json.encode({a = {[2] = 1}}) end,\n"
           "      'cannot encode sparse array at a')\n"
           "fails(function() json.encode(json.array({1, nil, 3})) end,\n"
           "      'cannot encode sparse array')\n");
}

static void lua_json_encode_refuses_mixed_keys(void) {
  LUA_TEST("fails(function() json.encode({1, a = 2}) end,\n"
           "      'cannot encode table with mixed keys')\n"
           "fails(function() json.encode({x = {a = 1, [1] = 2}}) end,\n"
           "      'cannot encode table with mixed keys at x')\n");
}

static void lua_json_encode_refuses_invalid_utf8(void) {
  LUA_TEST("fails(function() json.encode('a\\255') end,\n"
           "      'cannot encode invalid UTF-8 string')\n"
           "fails(function() json.encode({s = '\\192\\175'}) end,\n"
           "      'cannot encode invalid UTF-8 string at s')\n"
           "fails(function() json.encode('\\237\\160\\128') end,\n"
           "      'invalid UTF-8')\n"
           "fails(function() json.encode('\\240\\159\\152') end,\n"
           "      'invalid UTF-8')\n"
           "fails(function() json.encode({['k\\255'] = 1}) end,\n"
           "      'invalid UTF-8')\n");
}

static void lua_json_encode_refuses_cycles(void) {
  LUA_TEST("local t = {} t.self = t\n"
           "fails(function() json.encode(t) end, 'nested deeper than 512')\n"
           "fails(function() json.encode(t) end, 'at self.self.self')\n"
           "local a = json.array({}) a[1] = a\n"
           "fails(function() json.encode(a) end, '(cycle?)')\n");
}

static void lua_json_encode_depth_limit(void) {
  LUA_TEST("local function nest(n)\n"
           "  local t = {} for i = 1, n - 1 do t = {t} end return t\n"
           "end\n"
           "assert(json.encode(nest(512)))\n"
           "fails(function() json.encode(nest(513)) end, 'nested deeper')\n");
}

/* ---- decode ------------------------------------------------------------- */

static void lua_json_decode_errors_say_where(void) {
  LUA_TEST("local function bad(s, want)\n"
           "  local v, err = json.decode(s)\n"
           "  if v ~= nil or\n"
           "     not string.find(tostring(err), want, 1, true) then\n"
           "    error(string.format('%q: got %s, %s', s, tostring(v),\n"
           "          tostring(err)), 2)\n"
           "  end\n"
           "end\n"
           "bad('{\"a\":1,}', 'trailing comma at byte 7')\n"
           "bad('[1', 'unexpected end of input at byte 2')\n"
           "bad('', 'expected a value at byte 0')\n"
           "bad('[1] x', 'unexpected content after the value at byte 4')\n"
           "bad('01', 'invalid number at byte 0')\n"
           "bad('[NaN]', 'unexpected character at byte 1')\n"
           "bad('\"\\\\ud800\"', 'lone surrogate in \\\\u escape at byte 1')\n"
           "bad('\"\\\\x\"', 'invalid escape in string at byte 1')\n"
           "bad('\"a\\255\"', 'invalid UTF-8 at byte 2')\n"
           "bad('\"a\\nb\"', 'control character in string at byte 2')\n"
           "bad('{\"a\" 1}', \"expected ':' at byte 5\")\n"
           "bad('tru', 'invalid literal at byte 0')\n");
}

/* Strings are read eight bytes at a time: what ends a plain run is found
 * at every place in and around such a word. */
static void lua_json_string_bytes_found_at_every_position(void) {
  LUA_TEST("local abc = 'abcdefghijklmnopqrstuvwxyz'\n"
           "for at = 0, 19 do\n"
           "  local a, b = abc:sub(1, at), abc:sub(1, 20 - at)\n"
           "  for _, c in ipairs({'\\1', '\\31', '\\255', '\\192'}) do\n"
           "    local v, err = json.decode('\"' .. a .. c .. b .. '\"')\n"
           "    eq(v, nil, 'byte ' .. c:byte() .. ' at ' .. at)\n"
           "  end\n"
           "  eq(json.decode('\"' .. a .. '\\\\\"' .. b .. '\"'),\n"
           "     a .. '\"' .. b, 'escape at ' .. at)\n"
           "  eq(json.decode('\"' .. a .. '\\195\\169' .. b .. '\"'),\n"
           "     a .. '\\195\\169' .. b, 'UTF-8 at ' .. at)\n"
           "end\n");
}

static void lua_json_decode_depth_limit(void) {
  LUA_TEST("assert(json.decode(string.rep('[', 512) .. string.rep(']', 512)))\n"
           "local v, err = json.decode(string.rep('[', 513) ..\n"
           "                           string.rep(']', 513))\n"
           "eq(v, nil)\n"
           "local want = 'nesting deeper than 512 levels at byte 512'\n"
           "assert(string.find(err, want, 1, true), err)\n");
}

static void lua_json_decode_duplicate_keys_last_wins(void) {
  LUA_TEST("eq(json.decode('{\"a\":1,\"a\":2}').a, 2)\n");
}

/* ---- the sample file ---------------------------------------------------- */

/* Every line: encode(decode(line)) decodes to the same values and kinds,
 * and lua-cjson (an independent decoder) sees the same data in the line and
 * in our output. */
static void lua_json_sample_round_trip(void) {
  size_t len = 0;
  char *data = test_read_file("fixtures/sample-1k.ndjson", &len);

  CHECK(data != NULL);
  if (data == NULL) return;
  lua_pushlstring(L, data, len);
  lua_setglobal(L, "SAMPLE");
  free(data);
  LUA_TEST("local cjson = require 'cjson'\n"
           "local function loose(a, b)\n" /* values only, for cjson */
           "  if type(a) == 'userdata' and a ~= json.null then\n"
           "    a = tonumber(tostring(a))\n"
           "  end\n"
           "  if type(a) ~= type(b) then return false end\n"
           "  if type(a) ~= 'table' then return a == b end\n"
           "  for k, v in pairs(a) do\n"
           "    if not loose(v, b[k]) then return false end\n"
           "  end\n"
           "  for k in pairs(b) do if a[k] == nil then return false end end\n"
           "  return true\n"
           "end\n"
           "local n = 0\n"
           "for line in SAMPLE:gmatch('[^\\n]+') do\n"
           "  n = n + 1\n"
           "  local v = assert(json.decode(line))\n"
           "  local out = json.encode(v)\n"
           "  local back = assert(json.decode(out))\n"
           "  if not same(v, back) then\n"
           "    error('line ' .. n .. ' changed: ' .. out)\n"
           "  end\n"
           "  if not loose(v, cjson.decode(line)) or\n"
           "     not loose(back, cjson.decode(out)) then\n"
           "    error('line ' .. n .. ' differs from cjson: ' .. out)\n"
           "  end\n"
           "end\n"
           "eq(n, 1000, 'lines')\n"
           "SAMPLE = nil\n");
}

/* ---- the C API ---------------------------------------------------------- */

static void lua_json_c_decode_push_balances_stack(void) {
  char err[128];
  int top = lua_gettop(L);

  CHECK(hk_json_decode_push(L, "{\"a\":[1,2]}", 11, err, sizeof err) == 0);
  CHECK(lua_gettop(L) == top + 1 && lua_istable(L, -1));
  lua_pop(L, 1);
  CHECK(hk_json_decode_push(L, "{\"a\":[1,2}", 10, err, sizeof err) == -1);
  CHECK(lua_gettop(L) == top);
  CHECK(strcmp(err, "expected ',' or ']' at byte 9") == 0);
}

static void lua_json_c_decode_respects_length(void) {
  char err[128];

  /* Only the first 3 bytes are the text: "123" must not read on. */
  CHECK(hk_json_decode_push(L, "1234.5", 3, err, sizeof err) == 0);
  CHECK(lua_tonumber(L, -1) == 123);
  lua_pop(L, 1);
  CHECK(hk_json_decode_push(L, "2.5e1x", 5, err, sizeof err) == 0);
  CHECK(lua_tonumber(L, -1) == 25);
  lua_pop(L, 1);
}

static void lua_json_c_encode_appends(void) {
  hk_buf b = HK_BUF_INIT;
  char err[128];
  int top = lua_gettop(L);

  hk_buf_append(&b, "batch:", 6);
  CHECK(luaL_dostring(L, "return {a = json.array()}") == 0);
  CHECK(hk_json_encode_append(L, -1, &b, err, sizeof err) == 0);
  CHECK(b.len == 14 && memcmp(b.data, "batch:{\"a\":[]}", 14) == 0);
  CHECK(lua_gettop(L) == top + 1);
  lua_pop(L, 1);
  hk_buf_free(&b);
}

static void lua_json_c_encode_failure_appends_nothing(void) {
  hk_buf b = HK_BUF_INIT;
  char err[128];
  int top = lua_gettop(L);

  hk_buf_append(&b, "batch:", 6);
  CHECK(luaL_dostring(L, "return {a = 1, b = {c = {1, 2, print}}}") == 0);
  CHECK(hk_json_encode_append(L, -1, &b, err, sizeof err) == -1);
  CHECK(b.len == 6);
  CHECK(strcmp(err, "cannot encode function at b.c[3]") == 0);
  CHECK(lua_gettop(L) == top + 1);
  lua_pop(L, 1);
  hk_buf_free(&b);
}

/* Events decoded one after another with the context of
 * hk_json_push_event_ctx: many more distinct keys than the key cache has
 * places, so keys displace one another, and every event still has its
 * own keys with their own values. */
static void lua_json_c_event_context_keeps_each_events_keys(void) {
  char text[128], err[128];
  int top = lua_gettop(L), ctx;

  hk_json_push_event_ctx(L);
  ctx = top + 1;
  CHECK(lua_gettop(L) == top + HK_JSON_EVENT_CTX);
  for (int i = 0; i < 1000; i++) {
    int n = snprintf(text, sizeof text,
                     "{\"key_%d\":%d,\"event_type\":\"t%d\",\"n%d\":%d,"
                     "\"data\":{\"a\":%d}}",
                     i, i, i % 3, i % 7, -i, i);
    int keys = 0;

    CHECK(hk_json_decode_event_with(L, ctx, text, (size_t)n, NULL, err,
                                    sizeof err) == 0);
    CHECK(lua_gettop(L) == top + HK_JSON_EVENT_CTX + 1);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      const char *k = lua_type(L, -2) == LUA_TSTRING
                          ? lua_tostring(L, -2) : NULL;
      lua_pop(L, 1);
      if (k != NULL) keys++; /* not the key of the kept texts */
    }
    CHECK(keys == 3); /* data is kept as text until read */
    snprintf(text, sizeof text, "key_%d", i);
    lua_getfield(L, -1, text);
    CHECK(lua_tonumber(L, -1) == i);
    snprintf(text, sizeof text, "n%d", i % 7);
    lua_getfield(L, -2, text);
    CHECK(lua_tonumber(L, -1) == -i);
    lua_getfield(L, -3, "event_type");
    snprintf(text, sizeof text, "t%d", i % 3);
    CHECK(strcmp(lua_tostring(L, -1), text) == 0);
    lua_getfield(L, -4, "data");
    lua_getfield(L, -1, "a");
    CHECK(lua_tonumber(L, -1) == i);
    lua_pop(L, 6);
  }
  lua_settop(L, top);
}

static void lua_json_module_works_in_several_states(void) {
  lua_State *other = luaL_newstate();
  const char *s;

  luaL_openlibs(other);
  luaopen_hookd_json(other);
  lua_setglobal(other, "json");
  CHECK(luaL_dostring(other,
                      "return json.encode(json.decode('[[],{}]'))") == 0);
  s = lua_tostring(other, -1);
  CHECK(s != NULL && strcmp(s, "[[],{}]") == 0);
  CHECK(luaL_dostring(other, "return json.array_mt") == 0);
  lua_getglobal(L, "json");
  lua_getfield(L, -1, "array_mt");
  CHECK(lua_topointer(other, -1) != lua_topointer(L, -1));
  lua_pop(L, 2);
  lua_close(other);
  LUA_TEST("eq(rt('[[],{}]'), '[[],{}]')\n");
}

int main(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_hookd_json);
  lua_setfield(L, -2, "hookd.json");
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pop(L, 2);
  run_lua(__LINE__, "prelude", k_prelude);

  lua_json_empty_array_stays_array();
  lua_json_empty_object_stays_object();
  lua_json_null_stays_null();
  lua_json_null_inside_array_keeps_length();
  lua_json_nested_empty_containers();
  lua_json_integers_unchanged();
  lua_json_exact_integers_are_lua_numbers();
  lua_json_number_literal_behaves();
  lua_json_out_of_range_double_kept_as_literal();
  lua_json_integral_doubles_have_no_fraction();
  lua_json_doubles_print_shortest();
  lua_json_slash_not_escaped();
  lua_json_utf8_passes_through();
  lua_json_unicode_escapes_decode_to_utf8();
  lua_json_long_escaped_string_decodes();
  lua_json_control_characters_escaped();
  lua_json_lua_tables_classified();
  lua_json_array_and_object_tags();
  lua_json_decoded_values_can_be_edited();
  lua_json_encode_refuses_nan_and_infinity();
  lua_json_encode_refuses_function_with_path();
  lua_json_encode_refuses_other_types();
  lua_json_encode_refuses_sparse_arrays();
  lua_json_encode_refuses_mixed_keys();
  lua_json_encode_refuses_invalid_utf8();
  lua_json_encode_refuses_cycles();
  lua_json_encode_depth_limit();
  lua_json_decode_errors_say_where();
  lua_json_decode_depth_limit();
  lua_json_string_bytes_found_at_every_position();
  lua_json_decode_duplicate_keys_last_wins();
  lua_json_sample_round_trip();
  lua_json_c_decode_push_balances_stack();
  lua_json_c_decode_respects_length();
  lua_json_c_encode_appends();
  lua_json_c_encode_failure_appends_nothing();
  lua_json_c_event_context_keeps_each_events_keys();
  lua_json_module_works_in_several_states();
  lua_close(L);
  return test_finish("test_lua_json");
}
