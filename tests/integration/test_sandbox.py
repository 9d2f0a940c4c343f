"""The sandbox and the limits on hook code: each way out of the sandbox
tried one by one; a huge string, a huge table, deep recursion and a
memory error caught by the hook's own pcall each stopped within the limit
while another hook keeps delivering; failed events kept as dead letters
with the script version; and reloads that give their memory back."""

import json
import os
import re
import time
import unittest

import harness
from harness import Hookd, click, http, http_hook

# Each probe is Lua that yields a value the message then carries; every
# one must come out as "nil", false or "refused".
ESCAPES = {
    "io": "type(io)",
    "os_execute": "type(os.execute)",
    "os_getenv": "type(os.getenv)",
    "os_exit": "type(os.exit)",
    "os_remove": "type(os.remove)",
    "loadstring": "type(loadstring)",
    "load": "type(load)",
    "dofile": "type(dofile)",
    "loadfile": "type(loadfile)",
    "debug": "type(debug)",
    "package": "type(package)",
    "getfenv": "type(getfenv)",
    "setfenv": "type(setfenv)",
    "collectgarbage": "type(collectgarbage)",
    "jit": "type(jit)",
    "module": "type(module)",
    "newproxy": "type(newproxy)",
    "string_dump": "type(string.dump)",
    "string_dump_via_string": "type((\"\").dump)",
    "codec_object_mt": "type(getmetatable(json.object({})))",
    "codec_array_mt": "type(getmetatable(json.array({})))",
    "event_mt": "type(getmetatable(message.event_data))",
    "string_mt": "type(getmetatable(''))",
    "require_ffi": "(pcall(require, 'ffi')) and 'loaded' or 'refused'",
    "require_io": "(pcall(require, 'io')) and 'loaded' or 'refused'",
    "require_debug": "(pcall(require, 'debug')) and 'loaded' or 'refused'",
    "require_path": "(pcall(require, '../../etc/passwd')) and 'loaded' "
                    "or 'refused'",
    "require_core": "(pcall(require, 'hookd.core')) and 'loaded' or "
                    "'refused'",
    "global_write": "(pcall(function() x_global = 1 end)) and 'written' or "
                    "'refused'",
}
SAFE = ("nil", False, "refused")


def probe_hook(url):
    lines = "\n".join("    message.%s = %s" % (k, v)
                      for k, v in ESCAPES.items())
    return http_hook(url, extra="""
  shape = function(message)
%s
    return message
  end,""" % lines)


class Sandbox(harness.SinkTest):
    def start(self, hooks, **config):
        self.hookd = Hookd(hooks, config=config)
        for hook_id in hooks:
            self.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                 hook_id + " running")
        return self.hookd

    def test_escapes_are_refused_one_by_one(self):
        self.start({"p": probe_hook(self.sink.url("/p"))})
        self.hookd.post_events([click(1)])
        [m] = self.sink.wait_messages("/p", 1)
        for name in ESCAPES:
            self.assertIn(m[name], SAFE, name)

    def test_changes_to_shared_libraries_do_not_leak(self):
        self.start({
            "a": http_hook(self.sink.url("/a"), extra="""
  filter = function(e)
    rawset(_G, "shared", "from a")
    string.upper = function() return "pwned" end
    table.concat = nil
    math.floor = nil
    return true
  end,"""),
            "b": http_hook(self.sink.url("/b"), extra="""
  shape = function(m)
    m.upper = string.upper("ok")
    m.concat = table.concat({"x", "y"})
    m.floor = math.floor(2.5)
    m.shared = type(shared)
    return m
  end,""")})
        self.hookd.post_events([click(1)])
        [m] = self.sink.wait_messages("/b", 1)
        self.assertEqual((m["upper"], m["concat"], m["floor"], m["shared"]),
                         ("OK", "xy", 2, "nil"))

    def test_log_text_is_one_quoted_field(self):
        self.start({"l": http_hook(self.sink.url("/l"), extra="""
  filter = function(e)
    log('x hook=other forged=1', "\\nerror next line", '"q"')
    return true
  end,""")})
        self.hookd.post_events([click(1)])
        line = self.hookd.wait_log("hook=l msg=")
        self.assertIn('hook=l msg="x hook=other forged=1 \\nerror next '
                      'line \\"q\\""', line)
        self.assertNotIn("\nerror", "".join(self.hookd.drain_log()))

    def test_long_or_binary_log_text_keeps_the_line_whole(self):
        # Escaping can make a text four times longer: the line is cut
        # after it, so that the closing quote and the count of held-back
        # lines survive; bytes that are not UTF-8 are escaped too.
        h = self.start({"l": http_hook(self.sink.url("/l"), extra="""
  filter = function(e)
    log("bad \\255\\192 utf8 ok \\195\\169")
    for i = 1, 150 do log(string.rep("\\1", 600)) end
    return true
  end,""")})
        h.post_events([click(1)])
        self.sink.wait_messages("/l", 1)
        time.sleep(0.2)  # a token for the next line, which counts the rest
        h.post_events([click(2)])
        self.sink.wait_messages("/l", 2)
        bad = h.wait_log(" utf8 ok ")
        self.assertIn('msg="bad \\xff\\xc0 utf8 ok \u00e9"', bad)
        lines = [l for l in h.drain_log() if "hook=l msg=" in l]
        long = [l for l in lines if "\\x01" in l]
        self.assertTrue(long)
        for line in long:
            self.assertRegex(line, r'\\x01"( held_back=\d+)?$')
        self.assertTrue(any("held_back=" in l for l in lines))

    def test_one_hook_cannot_change_the_json_module_of_another(self):
        self.start({
            "a": http_hook(self.sink.url("/a"), extra="""
  filter = function(e)
    json.encode = function() return '"pwned"' end
    json.decode = nil
    return true
  end,"""),
            "b": http_hook(self.sink.url("/b"), extra="""
  shape = function(m)
    local j = require "json"
    m.enc = json.encode({x = 1})
    m.same = j == json
    return m
  end,""")})
        self.hookd.post_events([click(1)])
        [m] = self.sink.wait_messages("/b", 1)
        self.assertEqual((json.loads(m["enc"]), m["same"]), ({"x": 1}, True))

    def test_metamethods_of_a_hook_never_run_outside_its_limits(self):
        loop = "function() while true do end end"
        h = self.start({
            "good": http_hook(self.sink.url("/good")),
            # Settings behind a metatable: read raw, the loop never runs.
            "mt": "return setmetatable({database = 'all', actions = "
                  "{'click'}, send = {type = 'http', url = %s, batch_size "
                  "= 1, timeout_sec = 0.1}}, {__index = %s, __pairs = %s})"
                  % (json.dumps(self.sink.url("/mt")), loop, loop),
            # A filter leaving a looping __index on its event copy.
            "trap": http_hook(self.sink.url("/trap"), extra="""
  filter = function(e)
    setmetatable(e, {__index = %s})
    return true
  end,""" % loop)})
        t0 = time.monotonic()
        events = [click(i) for i in range(3)]
        for e in events:
            del e["custom_data"]  # so the message builder looks further
        h.post_events(events)
        self.sink.wait_messages("/good", 3)
        self.sink.wait_messages("/mt", 3)
        h.wait_hook("trap", lambda x: x["counters"]["failed"] == 3, "failed")
        self.assertLess(time.monotonic() - t0, 5)
        line = h.wait_log("hook=trap version=1 dest")
        self.assertRegex(line, "message: .*ran longer than")
        self.assertEqual(http("GET", h.base + "/healthz")[0], 200)

    def test_a_hook_cannot_reach_the_codecs_shared_metatables(self):
        h = self.start({"good": http_hook(self.sink.url("/good"))})
        h.write_hook("evil", http_hook(self.sink.url("/evil"), extra="""
  x = (function() getmetatable(json.object({})).__index =
    function() while true do end end end)(),"""))
        doc = h.wait_hook("evil", lambda x: x["error"], "evil refused")
        self.assertEqual(doc["state"], "broken")
        self.assertIn("nil value", doc["error"])
        h.post_events([click(1)])
        self.sink.wait_messages("/good", 1)

    def test_all_hooks_together_are_bounded(self):
        h = self.start({
            "good": http_hook(self.sink.url("/good")),
            "hoard": """local kept = {}
""" + http_hook(self.sink.url("/hoard"), extra="""
  filter = function(e) kept[#kept + 1] = string.rep("k", 6 * 1024 * 1024)
    .. #kept return true end,""")},
            lua_memory_limit_mb=48)
        h.post_events([click(i) for i in range(20)])
        self.sink.wait_messages("/good", 20)
        h.wait_hook("hoard", lambda x: x["counters"]["failed"] >= 10,
                    "hoard stopped")
        self.assertIn("lua_memory_limit_mb", "".join(h.drain_log()))
        self.assertLess(self.lua_memory(), 64 << 20)

    def test_removing_a_hook_gives_its_memory_back(self):
        src = """local big = {}
for i = 1, 200000 do big[i] = string.rep("z", 100) .. i end
""" + http_hook(self.sink.url("/m"), extra="""
  shape = function(m) m.size = #big return m end,""")
        h = self.start({"m": src, "good": http_hook(self.sink.url("/g"))},
                       hook_cpu_limit_ms=5000, hook_memory_limit_mb=256)
        self.assertGreater(self.lua_memory(), 20e6)
        os.remove(os.path.join(h.plugins, "m.lua"))
        h.wait_log("hook=m removed=1")
        self.assertLess(self.lua_memory(), 10e6)

    def assert_stopped(self, extra, want, **config):
        h = self.start({"bad": http_hook(self.sink.url("/bad"), extra=extra),
                        "good": http_hook(self.sink.url("/good"))}, **config)
        t0 = time.monotonic()
        h.post_events([click(i) for i in range(3)])
        got = self.sink.wait_messages("/good", 3)
        self.assertEqual(len(got), 3)
        h.wait_hook("bad", lambda x: x["counters"]["failed"] == 3, "failed")
        self.assertLess(time.monotonic() - t0, 5)
        line = h.wait_log("event_failed=1")
        self.assertIn("hook=bad version=1 ", line)
        self.assertRegex(line, want)
        self.assertEqual(self.sink.messages("/bad"), [])
        return h

    def test_huge_string_is_stopped_by_the_memory_limit(self):
        self.assert_stopped("""
  filter = function(e) local s = string.rep("x", 300 * 1024 * 1024)
    return true end,""", "used more than 16 MiB of memory",
                            hook_memory_limit_mb=16)

    def test_huge_table_is_stopped_by_the_memory_limit(self):
        self.assert_stopped("""
  filter = function(e) local t = {}
    for i = 1, 1e9 do t[i] = {i} end return true end,""",
                            "used more than 16 MiB of memory",
                            hook_memory_limit_mb=16, hook_cpu_limit_ms=20000)

    def test_memory_error_cannot_be_caught_by_the_hooks_pcall(self):
        # Strings of different lengths: the same long string made again is
        # the one LuaJIT already holds, and would take no memory at all.
        self.assert_stopped("""
  filter = function(e)
    local keep = {}
    for i = 1, 100 do
      pcall(function()
        keep[#keep + 1] = string.rep("y", 8 * 1024 * 1024 + i)
      end)
    end
    return true end,""", "used more than 16 MiB of memory",
                            hook_memory_limit_mb=16)

    def test_an_event_of_big_members_is_decoded_before_the_hook_runs(self):
        # Small nested members are decoded when the hook's code first reads
        # them, on the hook's limits; an event whose members hold more than
        # 64 KiB is decoded whole beforehand, as every event once was, so a
        # member bigger than the hook's memory limit still reads fine, and
        # what the hook then allocates itself is limited as before.
        h = self.start({"reader": http_hook(self.sink.url("/r"), extra="""
  filter = function(e)
    local n = #e.event_data.items
    if e.event_data.grow then
      local t = {} for i = 1, 1e9 do t[i] = {i} end
    end
    return n == 200000 end,"""),
                        "good": http_hook(self.sink.url("/good"))},
                       hook_memory_limit_mb=16, hook_cpu_limit_ms=20000,
                       max_message_bytes=4 << 20)
        big = click(1)
        big["event_data"] = {"items": [{"k": i} for i in range(200000)]}
        grows = click(2)
        grows["event_data"] = {"items": [], "grow": True}
        h.post_events([big, grows])
        self.sink.wait_messages("/good", 2)
        [m] = self.sink.wait_messages("/r", 1)
        self.assertEqual(len(m["event_data"]["items"]), 200000)
        h.wait_hook("reader", lambda x: x["counters"]["failed"] == 1,
                    "the growing call stopped")
        self.assertIn("used more than 16 MiB of memory",
                      h.wait_log("event_failed=1"))

    def test_a_tostring_that_calls_itself_is_stopped(self):
        # The library's tostring calls __tostring from C: with tostring
        # itself as __tostring it looped in C, out of the guard's reach,
        # and the router hung.
        self.assert_stopped("""
  filter = function(e)
    return tostring(setmetatable({}, {__tostring = tostring})) ~= "" end,""",
                            "ran longer than 50 ms of CPU")

    # json.is_array walks every key of a table of 100,000: as a sort's
    # comparator, or as a metamethod the sort calls, each call is C
    # calling C, which the guard can stop only once a hook instruction
    # runs in between. 2,000 items took seconds before.
    SLOW_SORT = """
  filter = function(e)
    local big = {}
    for i = 1, 100000 do big[i] = i end
    big[100002] = 1
    local arr = {}
    for i = 1, 2000 do arr[i] = big end
    %s
    return true end,"""

    def test_a_slow_c_comparator_is_stopped(self):
        self.assert_stopped(self.SLOW_SORT % "table.sort(arr, json.is_array)",
                            "ran longer than 50 ms of CPU")

    def test_a_slow_c_metamethod_is_stopped(self):
        self.assert_stopped(self.SLOW_SORT % (
            "setmetatable(big, {__lt = json.is_array}) table.sort(arr)"),
                            "ran longer than 50 ms of CPU")

    def test_catastrophic_pattern_is_stopped_by_the_cpu_limit(self):
        # Days of backtracking in the library's C matcher; here the guard
        # stops it like any loop, through the method call too.
        self.assert_stopped("""
  filter = function(e)
    local s = ("a"):rep(300)
    return s:find((".-"):rep(5) .. "b") ~= nil end,""",
                            "ran longer than 50 ms of CPU")

    def test_common_patterns_still_work(self):
        self.start({"p": http_hook(self.sink.url("/p"), extra="""
  shape = function(m)
    local long = ("x"):rep(5000) .. "utm_source=mail&utm_medium=email"
    m.src = long:match("utm_source=([^&]+)")
    m.n = select(2, long:gsub("utm_", "UTM_"))
    m.first = ("a.b.c"):match("^(%a)")
    local parts = {}
    for w in ("k1=v1;k2=v2"):gmatch("(%w+)=(%w+)") do parts[#parts + 1] = w end
    m.parts = table.concat(parts, ",")
    return m
  end,""")})
        self.hookd.post_events([click(1)])
        [m] = self.sink.wait_messages("/p", 1)
        self.assertEqual((m["src"], m["n"], m["first"], m["parts"]),
                         ("mail", 2, "a", "k1,k2"))

    def test_linear_but_huge_patterns_are_stopped_too(self):
        self.assert_stopped("""
  filter = function(e)
    local s = ("("):rep(400000)
    return s:find("%b()") ~= nil end,""", "ran longer than 50 ms of CPU")

    def test_encoding_a_huge_shared_table_fails_quickly(self):
        self.assert_stopped("""
  shape = function(m)
    local t = {1}
    for i = 1, 30 do t = {t, t} end
    m.big = t
    return m
  end,""", "more than 250000 values")

    def test_a_big_sort_is_stopped_by_the_cpu_limit(self):
        self.assert_stopped("""
  filter = function(e)
    local t = {}
    for i = 1, 400000 do t[i] = (i * 7919) % 1000003 end
    table.sort(t)
    return true end,""", "ran longer than 200 ms of CPU",
                            hook_cpu_limit_ms=200, hook_memory_limit_mb=512)

    def test_a_message_over_max_message_bytes_fails_that_event(self):
        self.assert_stopped("""
  shape = function(m) m.pad = ("p"):rep(20000) return m end,""",
                            "over max_message_bytes", max_message_bytes=10000)

    def test_settings_that_share_tables_load_quickly(self):
        h = self.start({"good": http_hook(self.sink.url("/good"))})
        t0 = time.monotonic()
        h.write_hook("dag", """local t = {1}
for i = 1, 40 do t = {a = t, b = t} end
""" + http_hook(self.sink.url("/dag"), extra="bogus = t,"))
        doc = h.wait_hook("dag", lambda x: x["error"], "dag refused")
        self.assertIn("more than 200000 values", doc["error"])
        self.assertLess(time.monotonic() - t0, 3)
        h.post_events([click(1)])
        self.sink.wait_messages("/good", 1)

    def test_a_hoarding_hook_does_not_fail_the_others(self):
        h = self.start({
            "good": http_hook(self.sink.url("/good"), extra="""
  shape = function(m) m.seen = true return m end,"""),
            "hoard": """local kept = {}
""" + http_hook(self.sink.url("/hoard"), extra="""
  filter = function(e) kept[#kept + 1] = string.rep("k", 6 * 1024 * 1024)
    .. #kept return true end,""")},
            lua_memory_limit_mb=48)
        h.post_events([click(i) for i in range(30)])
        self.sink.wait_messages("/good", 30)
        self.assertEqual(h.counters("good")["failed"], 0)
        self.assertEqual(h.hook("good")["state"], "running")

    def test_shape_cannot_change_what_another_hook_sends(self):
        h = self.start({
            "a_evil": http_hook(self.sink.url("/evil"), extra="""
  profile_fields = {"addr"},
  shape = function(m) m.custom_data.addr.city = "PWNED" return m end,"""),
            "b_victim": http_hook(self.sink.url("/victim"), extra="""
  profile_fields = {"addr"},""")})
        status, _ = http("PUT", h.base + "/v1/profiles/111/p1",
                         {"addr": {"city": "Berlin"}})
        self.assertEqual(status, 200)
        ev = click(1)
        del ev["custom_data"]
        h.post_events([ev])
        [m] = self.sink.wait_messages("/victim", 1)
        self.assertEqual(m["custom_data"], {"addr": {"city": "Berlin"}})

    def test_each_hook_has_its_own_random_numbers(self):
        h = self.start({
            "a": http_hook(self.sink.url("/a"), extra="""
  filter = function(e) math.randomseed(12345) return true end,"""),
            "b": http_hook(self.sink.url("/b"), extra="""
  shape = function(m) m.r = math.random(1, 1000000) return m end,""")})
        h.post_events([click(i) for i in range(5)])
        got = self.sink.wait_messages("/b", 5)
        self.assertGreater(len({m["r"] for m in got}), 1)

    def test_log_is_rate_limited(self):
        h = self.start({"l": http_hook(self.sink.url("/l"), extra="""
  filter = function(e)
    for i = 1, 1000 do log(("x"):rep(5000)) end
    return true
  end,""")})
        h.post_events([click(1)])
        self.sink.wait_messages("/l", 1)
        lines = [l for l in h.drain_log() if "hook=l msg=" in l]
        self.assertLessEqual(len(lines), 101)
        self.assertLess(max(len(l) for l in lines), 2200)

    def test_slow_examples_cannot_hold_a_load_up(self):
        h = self.start({"good": http_hook(self.sink.url("/good"))})
        examples = ",\n".join(
            '{event = {event_type = "click", event_date = '
            '"2026-11-01T10:00:00Z"}, expect = false}' for _ in range(100))
        t0 = time.monotonic()
        h.write_hook("slow", http_hook(self.sink.url("/slow"), extra="""
  filter = function(e) local t = os.clock() while os.clock() - t < 0.02
    do end return false end,
  tests = {%s},""" % examples))
        doc = h.wait_hook("slow", lambda x: x["error"], "refused")
        self.assertIn("more than 0.25 s together", doc["error"])
        self.assertLess(time.monotonic() - t0, 5)

    def test_deep_recursion_fails_that_event(self):
        self.assert_stopped("""
  filter = function(e) local function f(n) return f(n + 1) + 1 end
    return f(1) end,""", "stack overflow")

    def test_endless_loop_within_the_cpu_limit(self):
        self.assert_stopped("""
  filter = function(e) while true do end end,""",
                            "ran longer than 20 ms of CPU",
                            hook_cpu_limit_ms=20)

    def test_failed_event_is_a_dead_letter_with_version(self):
        h = self.start({"bad": http_hook(self.sink.url("/bad"), extra="""
  filter = function(e) error("no thanks") end,""")})
        ev = click(7)
        h.post_events([ev])
        items = harness.wait_for("a dead letter", lambda: http(
            "GET", h.base + "/v1/dead-letters?hook=bad")[1]["items"])
        [item] = items
        self.assertEqual((item["kind"], item["version"]), ("event", 1))
        h.wait_hook("bad", lambda x: x["counters"]["dead"] == 1, "dead 1")
        self.assertEqual(item["event"], ev)
        self.assertIn("no thanks", item["reason"])
        status, doc = http("POST", h.base + "/v1/dead-letters/%d/retry" %
                           item["id"])
        self.assertEqual(status, 409, doc)
        self.assertEqual(http("POST", h.base +
                              "/v1/dead-letters/retry?hook=bad")[1],
                         {"resent": 0})

    def test_messages_carry_the_version_that_made_them(self):
        self.sink.script("/v", default={"status": 400})
        h = self.start({"v": http_hook(self.sink.url("/v"))})
        h.post_events([click(1)])
        h.write_hook("v", http_hook(self.sink.url("/v"), extra="-- v2"))
        h.wait_hook("v", lambda x: x["version"] == 2, "version 2")
        h.post_events([click(2)])
        items = harness.wait_for("two dead letters", lambda: (
            lambda i: len(i) == 2 and i)(http(
                "GET", h.base + "/v1/dead-letters?hook=v")[1]["items"]))
        self.assertEqual(sorted((i["message"]["custom_data"]["n"],
                                 i["version"]) for i in items),
                         [(1, 1), (2, 2)])
        log = "".join(h.drain_log())
        self.assertRegex(log, r"hook=v version=1 dest=\S+ messages=1 "
                              r"attempts=1 dead_letter=1")
        self.assertRegex(log, r"hook=v version=2 dest=")

    def lua_memory(self):
        _, text = http("GET", self.hookd.base + "/metrics")
        return int(re.search(r"^hookd_lua_memory_bytes (\d+)$", text,
                             re.M).group(1))

    def test_reloads_give_their_memory_back(self):
        src = """-- version %d: about 20 MB kept by the hook from its load on
local big = {}
for i = 1, 200000 do big[i] = string.rep("z", 100) .. i end
""" + http_hook(self.sink.url("/m"), extra="""
  shape = function(m) m.size = #big return m end,""")
        h = self.start({"m": src % 1}, hook_cpu_limit_ms=5000,
                       hook_memory_limit_mb=256)
        one = self.lua_memory()
        self.assertGreater(one, 20e6)
        for v in range(2, 22):
            h.write_hook("m", src % v)
            h.wait_hook("m", lambda x, v=v: x["version"] == v,
                        "version %d" % v, timeout=20)
        self.assertLess(self.lua_memory(), one * 1.5)
        h.post_events([click(1)])
        self.sink.wait_messages("/m", 1)


if __name__ == "__main__":
    harness.main()
