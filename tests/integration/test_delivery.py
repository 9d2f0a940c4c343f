"""HTTP JSON batch delivery end to end: batching by size and by time,
the success rule, every retry class with its count and spacing,
Retry-After, dead letters, and one failing endpoint not slowing another."""

import time
import unittest

import harness
from harness import Hookd, Sink, click, http, http_hook, wait_for

RETRY_PERIOD = 0.3


class Delivery(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.hookd = None

    def tearDown(self):
        if self.hookd:
            self.assertEqual(self.hookd.stop(), 0, "hookd exit status")
        self.sink.stop()

    def start(self, hooks, **config):
        cfg = {"HOOK_RETRY_PERIOD_SEC": RETRY_PERIOD, "HOOK_RETRY_TIMES": 2}
        cfg.update(config)
        self.hookd = Hookd(hooks, cfg)
        for hook_id in hooks:
            self.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                 "hook %s running" % hook_id)

    def hook_src(self, path, batch_size=10, timeout_sec=30, extra=""):
        return """return {
  database = "all", actions = {"click"},
  send = {type = "http", url = "%s", batch_size = %d,
          timeout_sec = %s %s},
}""" % (self.sink.url(path), batch_size, timeout_sec, extra)

    def post_clicks(self, n, start=0):
        status, body = self.hookd.post_events([click(start + i)
                                               for i in range(n)])
        self.assertEqual(status, 202, body)
        self.assertEqual(body, {"accepted": n})

    def test_delivery_batches_by_size(self):
        self.start({"h": self.hook_src("/b", batch_size=10, timeout_sec=60)})
        self.post_clicks(20)
        reqs = wait_for("two batches", lambda: len(self.sink.requests("/b"))
                        == 2 and self.sink.requests("/b"), timeout=5)
        self.assertEqual([len(__import__("json").loads(r["body"]))
                          for r in reqs], [10, 10])
        msgs = self.sink.messages("/b")
        self.assertEqual([m["custom_data"]["n"] for m in msgs],
                         list(range(20)), "order kept")

    def test_delivery_batches_by_timeout(self):
        self.start({"h": self.hook_src("/t", batch_size=100, timeout_sec=0.5)})
        t0 = time.monotonic()
        self.post_clicks(3)
        self.sink.wait_messages("/t", 3, timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual(len(self.sink.requests("/t")), 1)
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 3.0)

    def test_delivery_body_is_a_bare_array_with_json_headers(self):
        self.start({"h": self.hook_src("/a", batch_size=1)})
        self.post_clicks(1)
        req = wait_for("request", lambda: self.sink.requests("/a"))[0]
        self.assertTrue(req["body"].startswith("[{"))
        headers = {k.lower(): v for k, v in req["headers"].items()}
        self.assertEqual(headers["content-type"], "application/json")
        self.assertNotIn("expect", headers)

    def test_delivery_success_regex_match_sends(self):
        self.sink.script("/r", default={"status": 200,
                                        "body": '{"result":"accepted"}'})
        self.start({"h": self.hook_src(
            "/r", batch_size=1, extra=', success_regex = "accepted"')})
        self.post_clicks(1)
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 1,
                             "sent=1")

    def test_delivery_success_regex_mismatch_is_permanent(self):
        self.sink.script("/r", default={"status": 200, "body": '{"ok":false}'})
        self.start({"h": self.hook_src(
            "/r", batch_size=1, extra=', success_regex = "\\"ok\\":true"')})
        self.post_clicks(1)
        h = self.hookd.wait_hook("h", lambda h: h["counters"]["dead"] == 1,
                                 "dead=1")
        self.assertEqual(h["counters"]["retried"], 0)
        self.assertEqual(len(self.sink.requests("/r")), 1)

    def check_retried(self, path, failure):
        """Two failures then success: three identical requests spaced by
        the retry period, and the message counted as sent."""
        self.sink.script(path, responses=[failure, failure])
        self.start({"h": self.hook_src(path, batch_size=1,
                                       extra=", request_timeout_sec = 0.5")})
        self.post_clicks(1)
        h = self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 1,
                                 "sent after retries")
        reqs = self.sink.requests(path)
        self.assertEqual(len(reqs), 3)
        self.assertEqual(h["counters"]["retried"], 2)
        self.assertEqual(h["counters"]["dead"], 0)
        self.assertEqual(len({r["body"] for r in reqs}), 1, "same bytes")
        times = [r["t"] for r in reqs]
        for a, b in zip(times, times[1:]):
            self.assertGreaterEqual(b - a, RETRY_PERIOD - 0.05)
        return reqs

    def test_retry_on_503(self):
        self.check_retried("/s503", {"status": 503})

    def test_retry_on_500(self):
        self.check_retried("/s500", {"status": 500})

    def test_retry_on_408(self):
        self.check_retried("/s408", {"status": 408})

    def test_retry_on_429(self):
        self.check_retried("/s429", {"status": 429})

    def test_retry_on_connection_dropped(self):
        self.check_retried("/drop", {"close": True})

    def test_retry_on_timeout(self):
        self.check_retried("/slow", {"status": 200, "delay": 2})

    def test_retry_on_connection_refused_until_dead(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.start({"h": http_hook("http://127.0.0.1:%d/x" % port)})
        self.post_clicks(1)
        h = self.hookd.wait_hook("h", lambda h: h["counters"]["dead"] == 1,
                                 "dead after retries")
        self.assertEqual(h["counters"]["retried"], 2)
        line = self.hookd.wait_log("dead_letter=1")
        self.assertIn("hook=h", line)
        self.assertIn("127.0.0.1:%d" % port, line)

    def test_retry_times_exhausted_makes_dead_letter(self):
        self.sink.script("/d", default={"status": 502, "body": "bad gateway"})
        self.start({"h": self.hook_src("/d", batch_size=1)})
        self.post_clicks(1)
        h = self.hookd.wait_hook("h", lambda h: h["counters"]["dead"] == 1,
                                 "dead=1")
        self.assertEqual(len(self.sink.requests("/d")), 3)  # 1 + 2 retries
        self.assertEqual(h["counters"]["queued"], 0)
        status, doc = http("GET", self.hookd.base +
                           "/v1/dead-letters?hook=h")
        self.assertEqual(status, 200)
        [letter] = doc["items"]
        self.assertEqual(letter["attempts"], 3)
        self.assertIn("status=502", letter["reason"])
        self.assertEqual(letter["message"]["custom_data"], {"n": 0})
        self.assertEqual(letter["hook"], "h")

    def test_dead_letter_paging_parameters_are_checked(self):
        self.start({"h": self.hook_src("/d", batch_size=1)})
        base = self.hookd.base + "/v1/dead-letters"
        self.assertEqual(http("GET", base + "?limit=-5")[0], 400)
        self.assertEqual(http("GET", base + "?after=zzz")[0], 400)
        self.assertEqual(
            http("GET", base + "?after=99999999999999999999999")[0], 400)
        status, doc = http("GET", base + "?limit=10&after=0")
        self.assertEqual((status, doc), (200, {"items": [], "next": None}))

    def test_dead_letter_pages_end_early_when_letters_are_large(self):
        """A page of dead letters stops, with a cursor, once it holds
        8 MiB: four letters of 3 MB come as three, then one."""
        self.sink.script("/big", default={"status": 400})
        self.start({"h": self.hook_src("/big", batch_size=1)},
                   max_body_bytes=4 << 20, max_message_bytes=4 << 20)
        pad = "x" * (3 << 20)
        for i in range(4):
            status, _ = self.hookd.post_events([click(i, pad=pad)])
            self.assertEqual(status, 202)
        self.hookd.wait_hook("h", lambda h: h["counters"]["dead"] == 4,
                             "dead=4")
        base = self.hookd.base + "/v1/dead-letters?hook=h"
        status, doc = http("GET", base)
        self.assertEqual(status, 200)
        self.assertEqual(len(doc["items"]), 3)
        self.assertIsNotNone(doc["next"])
        status, doc = http("GET", base + "&after=" + doc["next"])
        self.assertEqual([d["message"]["custom_data"]["n"]
                          for d in doc["items"]], [3])
        self.assertIsNone(doc["next"])

    def test_permanent_status_is_not_retried(self):
        for path, status in (("/p400", 400), ("/p204", 204), ("/p302", 302)):
            self.sink.script(path, default={"status": status,
                                            "headers": {"Location": "/x"}})
        self.start({"a": self.hook_src("/p400", batch_size=1),
                    "b": self.hook_src("/p204", batch_size=1),
                    "c": self.hook_src("/p302", batch_size=1)})
        self.post_clicks(1)
        for hook_id in "abc":
            h = self.hookd.wait_hook(hook_id,
                                     lambda h: h["counters"]["dead"] == 1,
                                     "dead=1 for " + hook_id)
            self.assertEqual(h["counters"]["retried"], 0)
        self.assertEqual(len(self.sink.requests("/p400")), 1)
        self.assertEqual(len(self.sink.requests("/x")), 0, "no redirect")

    def test_success_statuses_widen_the_rule(self):
        self.sink.script("/n", default={"status": 204, "body": ""})
        self.start({"h": self.hook_src(
            "/n", batch_size=1, extra=", success_statuses = {200, 204}")})
        self.post_clicks(1)
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 1,
                             "sent=1")

    def test_retry_after_longer_than_period_is_honoured(self):
        self.sink.script("/ra", responses=[
            {"status": 429, "headers": {"Retry-After": "1"}}])
        self.start({"h": self.hook_src("/ra", batch_size=1)})
        self.post_clicks(1)
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 1,
                             "sent=1", timeout=10)
        t = [r["t"] for r in self.sink.requests("/ra")]
        self.assertEqual(len(t), 2)
        self.assertGreaterEqual(t[1] - t[0], 0.95)

    def test_uuid_is_fixed_across_retries(self):
        self.sink.script("/u", responses=[{"status": 503}])
        src = self.hook_src("/u", batch_size=1).replace(
            'actions = {"click"},',
            'actions = {"click"}, custom_data = {id = "{{uuid}}"},')
        self.start({"h": src})
        ev = click(1)
        del ev["custom_data"]
        self.hookd.post_events(ev)
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 1,
                             "sent=1")
        bodies = [r["body"] for r in self.sink.requests("/u")]
        self.assertEqual(len(bodies), 2)
        self.assertEqual(bodies[0], bodies[1])
        self.assertRegex(bodies[0], r'"id":"[0-9a-f-]{36}"')

    def test_failing_endpoint_does_not_slow_another_hook(self):
        self.sink.script("/slow", default={"status": 503, "delay": 3})
        self.start({"slow": self.hook_src("/slow", batch_size=1,
                                          extra=", request_timeout_sec = 10"),
                    "fast": self.hook_src("/fast", batch_size=1)})
        t0 = time.monotonic()
        self.post_clicks(5)
        self.sink.wait_messages("/fast", 5, timeout=5)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(self.hookd.counters("slow")["sent"], 0)

    def test_headers_and_bearer_token_arrive(self):
        self.start({"h": self.hook_src(
            "/auth", batch_size=1,
            extra=', bearer_token = "s3cret", headers = {["X-Tenant"] = "7"}')})
        self.post_clicks(1)
        req = wait_for("request", lambda: self.sink.requests("/auth"))[0]
        headers = {k.lower(): v for k, v in req["headers"].items()}
        self.assertEqual(headers["authorization"], "Bearer s3cret")
        self.assertEqual(headers["x-tenant"], "7")
        status, doc = http("GET", self.hookd.base + "/v1/hooks/h")
        self.assertNotIn("s3cret", str(doc), "secrets are masked")


if __name__ == "__main__":
    harness.main()
