"""GET /metrics: valid Prometheus text, and each family counting what it
names after known traffic: captures, deliveries, retries, dead letters,
the queue, test sends, latency and batch histograms, Lua time, loads and
load failures, export progress, the store's size; and metrics_token."""

import re
import time
import unittest

import harness
from harness import Hookd, Sink, click, http, http_hook

SAMPLE = re.compile(r'^([a-z_]+)(\{([a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*)\})? '
                    r'(-?[0-9.]+(e[+-]?[0-9]+)?|\+Inf|NaN)$')


def parse(text):
    """{(name, labels): value}, checking the format on the way: every
    sample line is well formed and its family was introduced by HELP and
    TYPE before it."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, "malformed line: %r" % line
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, "no TYPE for %s" % name
        labels = tuple(sorted(re.findall(r'([a-z_]+)="([^"]*)"',
                                         m.group(3) or "")))
        out[(name, labels)] = float(m.group(5))
    return out


def value(metrics, name, **labels):
    return metrics[(name, tuple(sorted(labels.items())))]


class Metrics(harness.SinkTest):
    def scrape(self, headers=None):
        status, body = http("GET", self.hookd.base + "/metrics", None,
                            headers)
        self.assertEqual(status, 200, body)
        return parse(body)

    def history_text_bytes(self):
        return sum(len(text.encode()) + 1 for _, text in
                   harness.history_events(self.hookd.db_path()))

    def test_counts_follow_the_traffic(self):
        # The first request fails (retried), the rest succeed.
        self.sink.script("/a", responses=[{"status": 503}])
        self.sink.script("/b", default={"status": 400})
        self.hookd = h = Hookd(
            hooks={"a": http_hook(self.sink.url("/a")),
                   "b": http_hook(self.sink.url("/b"), actions=("open",))},
            config={"HOOK_RETRY_TIMES": 2})
        h.post_events([click(i) for i in range(25)])
        h.post_events([click(i, event_type="open") for i in range(3)])
        self.sink.wait_messages("/a", 25 + 10)
        h.wait_hook("a", lambda x: x["counters"]["sent"] == 25, "sent")
        h.wait_hook("b", lambda x: x["counters"]["dead"] == 3, "dead")
        http("POST", h.base + "/v1/hooks/a/test", {"event_type": "click"})
        m = self.scrape()
        a = {"hook": "a", "transport": "http"}
        b = {"hook": "b", "transport": "http"}
        self.assertEqual(value(m, "hookd_events_accepted_total"), 28)
        self.assertEqual(value(m, "hookd_hook_messages_matched_total", **a),
                         25)
        self.assertEqual(value(m, "hookd_hook_messages_sent_total", **a), 25)
        self.assertEqual(value(m, "hookd_hook_messages_retried_total", **a),
                         10)
        self.assertEqual(value(m, "hookd_hook_messages_failed_total", **a),
                         10)
        self.assertEqual(value(m, "hookd_hook_messages_dead_total", **b), 3)
        self.assertEqual(value(m, "hookd_hook_messages_queued", **a), 0)
        self.assertEqual(value(m, "hookd_hook_test_sends_total",
                               outcome="delivered", **a), 1)
        self.assertEqual(value(m, "hookd_hook_delivery_latency_seconds_count",
                               **a), 25)
        self.assertEqual(value(m, "hookd_hook_delivery_latency_seconds_bucket",
                               le="+Inf", **a), 25)
        # The retried batch was attempted twice.
        self.assertEqual(value(m, "hookd_hook_batch_messages_sum", **a), 35)
        self.assertEqual(value(m, "hookd_hook_state", hook="a",
                               state="running"), 1)
        self.assertEqual(value(m, "hookd_hook_loads_total", hook="a"), 1)
        self.assertGreater(value(m, "hookd_store_bytes"), 0)
        # The texts of the events accepted, each with a newline.
        self.assertEqual(value(m, "hookd_history_bytes"),
                         self.history_text_bytes())
        self.assertGreaterEqual(value(m, "hookd_hook_lua_seconds_total",
                                      hook="a"), 0)

    def test_load_failures_and_queue(self):
        self.sink.script("/a", default={"status": 200, "delay": 0.5})
        self.hookd = h = Hookd(hooks={"a": http_hook(self.sink.url("/a"))})
        h.write_hook("a", "return {")
        h.wait_hook("a", lambda x: x["error"], "the failed reload")
        h.post_events([click(i) for i in range(5)])
        time.sleep(0.3)
        m = self.scrape()
        self.assertEqual(value(m, "hookd_hook_load_failures_total",
                               hook="a"), 1)
        self.assertEqual(value(m, "hookd_hook_messages_queued", hook="a",
                               transport="http"), 5)

    def test_lua_time_grows_with_work(self):
        slow = 'filter = function(e) local x = 0 for i = 1, 20000 do ' \
               'x = x + i end return true end'
        self.hookd = h = Hookd(hooks={"a": http_hook(
            self.sink.url("/a"), extra=slow)})
        h.post_events([click(i) for i in range(320)])
        self.sink.wait_messages("/a", 320)
        self.assertGreater(value(self.scrape(), "hookd_hook_lua_seconds_total",
                                 hook="a"), 0.0005)

    def test_export_progress(self):
        self.hookd = h = Hookd(hooks={"a": http_hook(self.sink.url("/a"))},
                               config={"history_days": 3650})
        h.post_events([click(i, event_date="2026-10-0%dT10:00:00Z" % (1 + i))
                       for i in range(3)])
        self.sink.wait_messages("/a", 3)
        status, _ = http("POST", h.base + "/v1/hooks/a/export",
                         {"from": "2026-10-01", "to": "2026-10-02"})
        self.assertEqual(status, 201)
        h.wait_hook("a", lambda x: x["counters"]["sent"] == 5, "export sent")
        harness.wait_for("completed", lambda: http(
            "GET", h.base + "/v1/hooks/a/export")[1]["status"] == "completed")
        m = self.scrape()
        self.assertEqual(value(m, "hookd_export_events", hook="a"), 2)
        self.assertEqual(value(m, "hookd_export_events_scanned", hook="a"), 2)
        self.assertEqual(value(m, "hookd_export_messages_sent", hook="a"), 2)
        self.assertEqual(value(m, "hookd_export_status", hook="a",
                               status="completed"), 1)

    def test_metrics_token(self):
        self.hookd = h = Hookd(config={"metrics_token": "m-tok",
                                       "api_token": "a-tok"})
        self.assertEqual(http("GET", h.base + "/metrics")[0], 401)
        self.assertEqual(http("GET", h.base + "/metrics", None,
                              {"Authorization": "Bearer a-tok"})[0], 401)
        self.scrape({"Authorization": "Bearer m-tok"})

    def test_open_without_metrics_token_even_with_api_token(self):
        self.hookd = Hookd(config={"api_token": "a-tok"})
        self.scrape()


if __name__ == "__main__":
    harness.main()
