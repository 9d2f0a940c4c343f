"""Hooks at run time: JSON fidelity of what leaves the router, errors in a
hook's functions or output confined to that hook and event, a hook's
changes to the event invisible to other hooks, and the sandbox."""

import json

import harness
from harness import Hookd, click, wait_for

# Every fidelity case, written as the producer sends it. The router must
# send these bytes back unchanged (key order aside).
FIDELITY_FIELDS = (
    '"empty_array":[],"empty_object":{},"nothing":null,'
    '"mixed":[1,null,"x",[],{}],"big_id":1234567890123456789,'
    '"neg_big":-9223372036854775808,"unix_ns":1520169199034315796,'
    '"small":42,"url":"http://www.example.com/a/b?c=d",'
    '"text":"Новогодняя распродажа 東京 😀","escaped":"tab\\there \\"q\\""'
)


def hook(url, extra="", actions='"click"'):
    return """return {
  database = "all", actions = {%s},
  send = {type = "http", url = "%s", batch_size = 1, timeout_sec = 0.1},
  %s
}""" % (actions, url, extra)


class HookRuntime(harness.SinkTest):
    clean_exit = True

    def start(self, hooks):
        self.hookd = Hookd(hooks)
        for hook_id in hooks:
            self.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                 hook_id + " running")

    def test_fidelity_untouched_fields_leave_as_they_came(self):
        self.start({"plain": hook(self.sink.url("/plain")),
                    "shaped": hook(self.sink.url("/shaped"), extra="""
  shape = function(message, event) message.extra = true return message end,
""")})
        body = ('{"event_type":"click","event_date":"2026-11-01T10:00:00+03:00",'
                '"list_id":111,"custom_data":{"k":"v"},"event_data":{' +
                FIDELITY_FIELDS + '}}')
        status, _ = self.hookd.post_events(body.encode())
        self.assertEqual(status, 202)
        for path in ("/plain", "/shaped"):
            raw = wait_for("batch", lambda: self.sink.requests(path))[0]["body"]
            self.assertIn('"event_date":"2026-11-01T10:00:00+03:00"', raw)
            sent = json.loads(raw)[0]["event_data"]
            want = json.loads("{" + FIDELITY_FIELDS + "}")
            self.assertEqual(sent, want)
            for literal in ('"empty_array":[]', '"empty_object":{}',
                            '"nothing":null', '[1,null,"x",[],{}]',
                            '1234567890123456789', '-9223372036854775808',
                            '1520169199034315796', '"small":42',
                            '"http://www.example.com/a/b?c=d"',
                            'Новогодняя распродажа 東京 😀'):
                self.assertIn(literal, raw, path)
            self.assertNotIn("\\/", raw)
            self.assertNotIn("42.0", raw)

    def test_runtime_error_in_filter_fails_only_that_event_and_hook(self):
        self.start({"fragile": hook(self.sink.url("/fragile"), extra="""
  filter = function(event)
    if event.profile_id == "p1" then error("cannot handle p1") end
    return true
  end,
"""), "other": hook(self.sink.url("/other"))})
        self.hookd.post_events([click(i) for i in range(3)])
        got = self.sink.wait_messages("/fragile", 2)
        self.assertEqual(sorted(m["profile_id"] for m in got), ["p0", "p2"])
        self.sink.wait_messages("/other", 3)
        h = self.hookd.wait_hook("fragile",
                                 lambda h: h["counters"]["failed"] == 1,
                                 "failed=1")
        self.assertEqual(h["state"], "running")
        line = self.hookd.wait_log("event_failed=1")
        self.assertIn("hook=fragile", line)
        self.assertRegex(line, r"fragile\.lua:\d+: cannot handle p1")
        self.assertTrue(line.endswith('"\n'), "one line: " + line)
        self.assertIn("cannot handle p1", line)

    def test_unencodable_output_fails_that_event_with_reason(self):
        self.start({"bad": hook(self.sink.url("/bad"), extra="""
  shape = function(message, event)
    local n = tonumber(string.sub(event.profile_id, 2))
    if n == 0 then message.x = 0/0 end
    if n == 1 then message.x = print end
    if n == 2 then message.x = {1, nil, 3} end
    return message
  end,
"""), "good": hook(self.sink.url("/good"))})
        self.hookd.post_events([click(i) for i in range(4)])
        got = self.sink.wait_messages("/bad", 1)
        self.sink.wait_messages("/good", 4)
        self.assertEqual([m["profile_id"] for m in got], ["p3"])
        self.hookd.wait_hook("bad", lambda h: h["counters"]["failed"] == 3,
                             "failed=3")
        line = self.hookd.wait_log("cannot encode message")
        self.assertIn("hook=bad", line)
        # The rate limit holds back the next two lines, then counts them
        # and gives the last one's reason.
        held = self.hookd.wait_log("event_failed=2", timeout=5)
        self.assertIn("hook=bad", held)
        self.assertIn("held_back=1", held)
        self.assertIn('last_reason="', held)
        self.assertIn("cannot encode message", held)

    def test_shape_changes_do_not_leak_to_other_hooks(self):
        self.start({"a_mutator": hook(self.sink.url("/m"), extra="""
  filter = function(event) event.event_data.campaign_id = -1 return true end,
  shape = function(message, event)
    message.event_data.message_id = -2
    event.list_id = -3
    return message
  end,
"""), "b_reader": hook(self.sink.url("/r"))})
        self.hookd.post_events(click(1))
        [mutated] = self.sink.wait_messages("/m", 1)
        [seen] = self.sink.wait_messages("/r", 1)
        self.assertEqual(mutated["event_data"]["campaign_id"], -1)
        self.assertEqual(mutated["event_data"]["message_id"], -2)
        self.assertEqual(seen["event_data"]["campaign_id"], 973)
        self.assertEqual(seen["event_data"]["message_id"], 17)
        self.assertEqual(seen["list_id"], 111)

    def test_filter_changes_are_not_sent_without_shape(self):
        # The message of a hook without shape() is made from the event as
        # it came; what filter() changes is only for deciding. The changer
        # routes last, so it gets the event itself rather than a copy.
        self.start({"z_changer": hook(self.sink.url("/c"), extra="""
  filter = function(event)
    event.list_id = -3
    event.event_data.campaign_id = -1
    event.profile = {secret = true}
    return true
  end,
"""), "a_reader": hook(self.sink.url("/r"))})
        self.hookd.post_events(click(1))
        [changed] = self.sink.wait_messages("/c", 1)
        [seen] = self.sink.wait_messages("/r", 1)
        for m in (changed, seen):
            self.assertEqual(m["list_id"], 111)
            self.assertEqual(m["event_data"]["campaign_id"], 973)
            self.assertNotIn("profile", m)

    def test_filter_giving_custom_data_does_not_cancel_the_built_one(self):
        # The event came without custom_data, so the hook builds it from
        # its profile fields, whatever filter() put on its event.
        self.start({"z_builder": hook(self.sink.url("/b"), extra="""
  profile_fields = {"email"},
  filter = function(event)
    event.custom_data = {x = 1}
    return true
  end,
""")})
        self.hookd.post_events(click(1, custom_data={},
                                     profile={"email": "a@x"}))
        [got] = self.sink.wait_messages("/b", 1)
        self.assertEqual(got["custom_data"], {"email": "a@x"})
        self.assertNotIn("profile", got)

    def test_endless_loop_is_stopped_and_fails_only_that_event(self):
        self.start({"spinner": hook(self.sink.url("/spin"), extra="""
  filter = function(event)
    if event.profile_id == "p1" then while true do end end
    return true
  end,
"""), "other": hook(self.sink.url("/other"))})
        self.hookd.post_events([click(i) for i in range(3)])
        got = self.sink.wait_messages("/spin", 2)
        self.assertEqual(sorted(m["profile_id"] for m in got), ["p0", "p2"])
        self.sink.wait_messages("/other", 3)
        line = self.hookd.wait_log("event_failed=1")
        self.assertRegex(line, r"spinner\.lua:\d+: ran longer than 50 ms")

    def test_cpu_limit_cannot_be_caught_by_the_hooks_pcall(self):
        self.start({"catcher": hook(self.sink.url("/c"), extra="""
  filter = function(event)
    if event.profile_id ~= "p1" then return true end
    while true do pcall(function() while true do end end) end
  end,
""")})
        self.hookd.post_events([click(i) for i in range(3)])
        got = self.sink.wait_messages("/c", 2)
        self.assertEqual(sorted(m["profile_id"] for m in got), ["p0", "p2"])
        line = self.hookd.wait_log("event_failed=1")
        self.assertRegex(line, r"catcher\.lua:\d+: ran longer than 50 ms")

    def test_slow_library_call_in_shape_loses_nothing_for_others(self):
        self.start({"base": hook(self.sink.url("/base")),
                    "heavy": hook(self.sink.url("/heavy"), extra="""
  shape = function(message)
    local s = string.rep("x", 2^28)
    return message
  end,
""")})
        self.hookd.post_events([click(i) for i in range(5)])
        got = self.sink.wait_messages("/base", 5)
        self.assertEqual([m["profile_id"] for m in got],
                         ["p%d" % i for i in range(5)])
        self.hookd.wait_hook("base", lambda h: h["counters"]["matched"] == 5,
                             "base matched=5")
        self.hookd.wait_hook("heavy", lambda h: h["counters"]["failed"] >= 1,
                             "the guard stopped heavy at least once")
        self.assertEqual(
            [l for l in self.hookd.drain_log() if "routing failed" in l], [])

    def test_hook_breaching_cpu_limit_ten_times_is_suspended(self):
        self.start({"spinner": hook(self.sink.url("/spin"), extra="""
  filter = function(event) while true do end end,
"""), "other": hook(self.sink.url("/other"))})
        self.hookd.post_events([click(i) for i in range(12)])
        h = self.hookd.wait_hook("spinner",
                                 lambda h: h["state"] == "suspended",
                                 "suspended")
        self.assertEqual(h["counters"]["failed"], 10, "no calls after 10")
        self.assertIn("CPU limit", h["error"])
        line = self.hookd.wait_log(" suspended=1 ")
        self.assertIn("hook=spinner version=1 dest=%s " %
                      self.sink.url("/spin"), line)
        self.sink.wait_messages("/other", 12)
        self.hookd.write_hook("spinner", hook(self.sink.url("/spin")))
        self.hookd.wait_hook("spinner", lambda h: h["state"] == "running",
                             "running again after reload")

    def test_invalid_success_regex_is_a_load_error(self):
        self.start({"other": hook(self.sink.url("/other"))})
        self.hookd.write_hook("rx", hook(self.sink.url("/rx")).replace(
            "timeout_sec = 0.1", 'timeout_sec = 0.1, success_regex = "("'))
        h = self.hookd.wait_hook("rx", lambda h: h["error"], "error")
        self.assertIn("rx.lua", h["error"])
        self.assertIn("success_regex", h["error"])

    def test_endless_loop_in_hook_file_is_a_load_error(self):
        self.start({"other": hook(self.sink.url("/other"))})
        self.hookd.write_hook("spinner", "while true do end")
        h = self.hookd.wait_hook("spinner", lambda h: h["error"], "error")
        self.assertEqual(h["state"], "broken")
        self.assertIn("ran longer than", h["error"])
        self.hookd.post_events(click(1))
        self.sink.wait_messages("/other", 1)

    def test_global_assignment_is_an_error_for_that_event(self):
        self.start({"leaky": hook(self.sink.url("/l"), extra="""
  filter = function(event) counter = 1 return true end,
""")})
        self.hookd.post_events(click(1))
        line = self.hookd.wait_log("event_failed=1")
        self.assertIn("global 'counter'", line)

    def test_sandbox_has_no_files_or_processes(self):
        self.start({"h": hook(self.sink.url("/s"), extra="""
  shape = function(message)
    message.io = type(io)
    message.os_execute = type(os.execute)
    message.loadstring = type(loadstring)
    message.ffi = pcall(require, "ffi")
    return message
  end,
""")})
        self.hookd.post_events(click(1))
        [m] = self.sink.wait_messages("/s", 1)
        self.assertEqual((m["io"], m["os_execute"], m["loadstring"], m["ffi"]),
                         ("nil", "nil", "nil", False))

    def test_content_only_with_flag_and_profile_never(self):
        self.start({"with": hook(self.sink.url("/with"), "content = true",
                                 '"send"'),
                    "without": hook(self.sink.url("/without"), "",
                                    '"send"')})
        ev = click(1, event_type="send",
                   content={"email": {"subject": "Hi", "html": "<p>x</p>"}},
                   profile={"email": "a@example.com"})
        self.hookd.post_events(ev)
        [w] = self.sink.wait_messages("/with", 1)
        [wo] = self.sink.wait_messages("/without", 1)
        self.assertEqual(w["content"], ev["content"])
        self.assertNotIn("content", wo)
        self.assertNotIn("profile", w)
        self.assertNotIn("profile", wo)


if __name__ == "__main__":
    harness.main()
