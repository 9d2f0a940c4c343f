"""Historical export: the stored events of a range of days sent again
through one hook, with its current settings, compared with what the sink
received. Also: types never exported, no content, null profile fields for
deleted profiles, pause and resume, abort, stopping the hook, a crash, live
traffic alongside, and every refusal."""

import calendar
import collections
import json
import time
import unittest

import harness
from harness import Hookd, Sink, http, wait_for

TYPES = ["click", "open", "send", "deliv", "campaign_launch",
         "profile_merge", "profile_split", "import_api", "unsub"]
NEVER = {"campaign_launch", "profile_merge", "profile_split"}
DAY = 86400
OCT_1 = 1790812800  # 2026-10-01T00:00:00Z


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".25Z"


def event(i, ts):
    et = TYPES[i % len(TYPES)]
    ev = {"event_type": et, "event_date": iso(ts), "list_id": 111,
          "profile_id": "p%d" % (i % 40), "seq": i,
          "event_data": {"campaign_id": 973, "message_id": 17,
                         "send_message_id": "s%d" % i},
          "profile": {"email": "u%d@example.com" % i}}
    if et == "send":
        ev["content"] = {"email": {"subject": "hello %d" % i}}
    return ev


def month(n):
    """n events spread over October 2026, and one on each day around it."""
    evs = [event(i, OCT_1 + (i * 31 * DAY) // n) for i in range(n)]
    evs.append(event(n, OCT_1 - 1))           # 2026-09-30T23:59:59
    evs.append(event(n + 1, OCT_1 + 31 * DAY))  # 2026-11-01T00:00:00
    return evs


def hook_src(url, batch_size=100, active="false"):
    return """return {
  name = "export test", active = %s, database = "all",
  actions = {%s}, content = true, profile_fields = {"email"},
  send = {type = "http", url = %s, batch_size = %d, timeout_sec = 0.05},
}""" % (active, ", ".join(json.dumps(t) for t in TYPES), json.dumps(url),
        batch_size)


class Export(harness.SinkTest):
    def start(self, n, batch_size=100, workdir=None):
        """hookd with the hook stopped (live traffic does not reach the
        sink), n October events stored, then the hook activated."""
        self.hookd = h = Hookd(
            hooks=None if workdir else {
                "x": hook_src(self.sink.url("/x"), batch_size)},
            workdir=workdir, config={"history_days": 3650})
        if workdir:
            return h
        evs = month(n)
        for i in range(0, len(evs), 1000):
            status, _ = h.post_events(evs[i:i + 1000])
            self.assertEqual(status, 202)
        self.assertEqual(self.post("/activate")[0], 200)
        self.expected = [e["seq"] for e in evs
                         if e["event_type"] not in NEVER
                         and OCT_1 <= self.ts(e) < OCT_1 + 31 * DAY]
        self.in_range = sum(1 for e in evs
                            if e["event_type"] not in NEVER and
                            OCT_1 <= self.ts(e) < OCT_1 + 31 * DAY)
        return h

    @staticmethod
    def ts(e):
        return calendar.timegm(time.strptime(e["event_date"][:19],
                                             "%Y-%m-%dT%H:%M:%S"))

    def post(self, path, body=b""):
        return http("POST", self.hookd.base + "/v1/hooks/x" + path, body)

    def status(self):
        return http("GET", self.hookd.base + "/v1/hooks/x/export")[1]

    def export(self, frm="2026-10-01", to="2026-10-31"):
        status, doc = self.post("/export", {"from": frm, "to": to})
        self.assertEqual(status, 201, doc)
        return doc

    def wait_status(self, want, timeout=30):
        return wait_for("export " + want,
                        lambda: (lambda d: d["status"] == want and d)(
                            self.status()), timeout)

    def seqs(self):
        return [m["seq"] for m in self.sink.messages("/x")]

    def assert_exactly_once(self):
        got = self.seqs()
        dup = [s for s, c in collections.Counter(got).items() if c > 1]
        self.assertEqual(dup, [])
        self.assertEqual(sorted(got), sorted(self.expected))

    def test_a_month_exported_in_full(self):
        h = self.start(3000)
        http("DELETE", h.base + "/v1/profiles/111/p3")
        doc = self.export()
        self.assertEqual((doc["status"], doc["total"]),
                         ("in_progress", self.in_range))
        doc = self.wait_status("completed")
        self.assert_exactly_once()
        self.assertEqual((doc["scanned"], doc["sent"], doc["percent"]),
                         (self.in_range, len(self.expected), 100.0))
        self.assertIsNotNone(doc["ended_at"])
        msgs = self.sink.messages("/x")
        self.assertFalse(any(m["event_type"] in NEVER for m in msgs))
        self.assertFalse(any("content" in m for m in msgs))
        for m in msgs:
            want = None if m["profile_id"] == "p3" else \
                "u%d@example.com" % m["seq"]
            self.assertEqual(m["custom_data"], {"email": want}, m["seq"])
        # Exported messages are not live captures.
        self.assertEqual(h.counters("x")["matched"], 0)

    def test_pause_and_resume_send_everything_once(self):
        self.sink.script("/x", default={"status": 200, "delay": 0.02})
        self.start(4000, batch_size=50)
        self.export()
        wait_for("first messages", lambda: len(self.seqs()) > 0, 10)
        status, doc = self.post("/export/resume")  # not paused: 409
        self.assertEqual(status, 409, doc)
        self.assertIn("only a paused one resumes", doc["error"])
        status, doc = self.post("/export/pause")
        self.assertEqual((status, doc["status"], doc["paused_by"]),
                         (200, "paused", "user"))
        wait_for("the last page delivered",
                 lambda: self.status()["in_flight"] == 0, 20)
        self.assertEqual(len(self.seqs()), self.status()["sent"])
        held = len(self.seqs())
        time.sleep(0.6)
        self.assertEqual(len(self.seqs()), held)
        self.assertLess(held, len(self.expected))
        self.assertEqual(self.post("/export/pause")[0], 200)  # still paused
        status, doc = self.post("/export/resume")
        self.assertEqual((status, doc["status"]), (200, "in_progress"))
        self.wait_status("completed", 60)
        self.assert_exactly_once()

    def test_abort_stops_reading(self):
        self.sink.script("/x", default={"status": 200, "delay": 0.02})
        self.start(4000, batch_size=50)
        self.export()
        wait_for("first messages", lambda: len(self.seqs()) > 0, 10)
        status, doc = self.post("/export/abort")
        self.assertEqual((status, doc["status"]), (200, "aborted"))
        self.assertIsNotNone(doc["ended_at"])
        time.sleep(2.5)
        n = len(self.seqs())
        time.sleep(0.5)
        self.assertEqual(len(self.seqs()), n)
        self.assertLess(n, len(self.expected))
        for what in ("/export/pause", "/export/resume", "/export/abort"):
            self.assertEqual(self.post(what)[0], 409, what)
        # A new export may start once the last one ended.
        self.export("2026-10-01", "2026-10-01")

    def test_stopping_the_hook_pauses_the_export(self):
        self.sink.script("/x", default={"status": 200, "delay": 0.02})
        self.start(3000, batch_size=50)
        self.export()
        wait_for("first messages", lambda: len(self.seqs()) > 0, 10)
        self.assertEqual(self.post("/stop")[0], 200)
        doc = self.status()
        self.assertEqual((doc["status"], doc["paused_by"]), ("paused", "hook"))
        status, doc = self.post("/export/resume")
        self.assertEqual(status, 409, doc)
        n = len(self.seqs())
        time.sleep(0.6)
        self.assertLessEqual(len(self.seqs()), n + 50)  # one batch in flight
        self.assertEqual(self.post("/activate")[0], 200)
        self.wait_status("completed", 60)
        self.assert_exactly_once()

    def test_restart_resumes_where_it_was(self):
        self.sink.script("/x", default={"status": 200, "delay": 0.02})
        h = self.start(4000, batch_size=50)
        self.export()
        wait_for("a page sent", lambda: self.status()["sent"] > 0, 20)
        h.kill()
        self.start(0, workdir=h.dir)
        doc = self.wait_status("completed", 60)
        self.assertEqual(doc["scanned"], self.in_range)
        got = self.seqs()
        self.assertEqual(sorted(set(got)), sorted(self.expected))
        # At least once: only what was in flight at the crash comes twice.
        self.assertLessEqual(len(got) - len(set(got)), 50)

    def test_live_traffic_is_not_starved(self):
        self.sink.script("/x", default={"status": 200, "delay": 0.02})
        h = self.start(6000, batch_size=50)
        self.export()
        wait_for("first messages", lambda: len(self.seqs()) > 0, 10)
        live = event(99999, time.time())
        live["event_type"] = "click"
        t0 = time.monotonic()
        self.assertEqual(h.post_events([live])[0], 202)
        wait_for("the live event", lambda: 99999 in self.seqs(), 20)
        waited = time.monotonic() - t0
        self.assertNotEqual(self.status()["status"], "completed")
        # At most one page of export messages stood in front of it.
        self.assertLess(waited, 6.0)
        self.wait_status("completed", 90)

    def test_refusals(self):
        h = self.start(10)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + DAY))
        for body in ({"from": "2026-10-01", "to": today},
                     {"from": "2026-10-01", "to": tomorrow},
                     {"from": "2026-10-05", "to": "2026-10-04"},
                     {"from": "1969-12-31", "to": "2026-10-01"},
                     {"from": "2026-13-01", "to": "2026-10-01"},
                     {"from": "2026-02-30", "to": "2026-03-01"},
                     {"from": "20261001", "to": "2026-10-02"},
                     {"from": "2026-10-01 ", "to": "2026-10-02"},
                     {"from": "2026-10-01"}, {}, b"nope", [1]):
            status, doc = self.post("/export", body)
            self.assertEqual(status, 400, body)
            self.assertIn("error", doc)
        status, doc = self.post("/export", {"from": "1969-12-31",
                                            "to": "2026-10-01"})
        self.assertIn("1970-01-01 or later", doc["error"])
        self.assertEqual(self.post("/export/pause")[0], 404)
        self.assertEqual(http("GET", h.base + "/v1/hooks/x/export")[0], 404)
        self.assertEqual(self.post("/stop")[0], 200)
        status, doc = self.post("/export", {"from": "1970-01-01",
                                            "to": "2026-10-01"})
        self.assertEqual(status, 409, doc)
        self.assertEqual(self.post("/activate")[0], 200)
        self.sink.script("/x", default={"status": 200, "delay": 0.5})
        self.export("1970-01-01", "2026-10-31")
        status, doc = self.post("/export", {"from": "2026-10-01",
                                            "to": "2026-10-02"})
        self.assertEqual(status, 409, doc)

    def test_events_the_hook_fails_on_are_counted(self):
        self.hookd = h = Hookd(
            hooks={"x": hook_src(self.sink.url("/x")).replace(
                "send = {", 'shape = function(m) if m.event_type == "open" '
                'then error("no opens") end return m end,\n  send = {')},
            config={"history_days": 3650})
        h.post_events(month(90))
        self.post("/activate")
        self.export()
        doc = self.wait_status("completed")
        opens = sum(1 for e in month(90)[:90] if e["event_type"] == "open")
        self.assertEqual(doc["failed"], opens)
        _, dl = http("GET", h.base + "/v1/dead-letters?hook=x&limit=1000")
        self.assertEqual(len([i for i in dl["items"]
                              if i["kind"] == "event"]), opens)

    def test_no_history_kept_is_refused(self):
        self.hookd = h = Hookd(
            hooks={"x": hook_src(self.sink.url("/x"), active="true")},
            config={"history_days": 0})
        status, doc = self.post("/export", {"from": "2026-10-01",
                                            "to": "2026-10-02"})
        self.assertEqual(status, 409, doc)
        self.assertIn("history_days", doc["error"])


if __name__ == "__main__":
    harness.main()
