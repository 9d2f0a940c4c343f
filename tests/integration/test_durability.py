"""The durable store end to end: nothing accepted with 202 is lost when the
router is killed, dead letters can be listed, sent again and deleted, a
restart resumes the stored retry schedule and keeps the order of a hook's
messages, the store refuses files it does not own, and SIGTERM leaves
undelivered messages for the next start."""

import collections
import datetime
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import Hookd, Sink, click, http, wait_for


def hook_src(url, actions=("click",), database='"all"', batch_size=10,
             timeout_sec=0.2, extra=""):
    """An HTTP hook; database is Lua source (a number or "all")."""
    return """return {
  database = %s,
  actions = {%s},
  send = {type = "http", url = %s, batch_size = %d, timeout_sec = %s%s},
}
""" % (database, ", ".join(json.dumps(a) for a in actions), json.dumps(url),
       batch_size, timeout_sec, extra)


def event(n, event_type="click", list_id=111):
    """An event whose custom_data.n names it: hookd sends a non-empty
    custom_data as it came, so n arrives unchanged."""
    ev = click(n)
    ev["event_type"] = event_type
    ev["list_id"] = list_id
    return ev


def ndjson(events):
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def received(sink, path):
    return [m["custom_data"]["n"] for m in sink.messages(path)]


def parse_time(text):
    """Unix seconds of a time rendered by the dead letter API."""
    dt = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def dead_letters(hookd, hook_id, limit=100):
    """Every dead letter of hook_id, following the "next" cursor."""
    items, after = [], None
    while True:
        url = "%s/v1/dead-letters?hook=%s&limit=%d" % (hookd.base, hook_id,
                                                        limit)
        if after is not None:
            url += "&after=%s" % after
        status, doc = http("GET", url)
        assert status == 200, (status, doc)
        assert len(doc["items"]) <= limit, len(doc["items"])
        items.extend(doc["items"])
        if doc["next"] is None:
            return items
        after = doc["next"]


def wait_letters(hookd, hook_id, n, timeout=15.0, limit=100):
    """The dead letters of hook_id once there are n. The dead counter moves
    before the store has committed the letters, so the list is polled."""
    return wait_for("%d dead letters of %s" % (n, hook_id),
                    lambda: (lambda items: len(items) == n and items)(
                        dead_letters(hookd, hook_id, limit)), timeout)


def free_port():
    """A loopback port nobody listens on (for a refused connection)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class Client(threading.Thread):
    """Posts NDJSON batches of events with unique numbers to whatever router
    is current, and records the numbers of the requests answered 202."""

    KINDS = (("click", 111), ("open", 111), ("click", 222))

    def __init__(self, per_request=20, pause=0.01):
        super().__init__(daemon=True)
        self.per_request = per_request
        self.pause = pause
        self.base = None  # None while the router is down
        self.accepted = []  # (n, event_type, list_id)
        self.requests = collections.Counter()
        self.next_n = 0
        self.halt = threading.Event()

    def batch(self):
        events = []
        for _ in range(self.per_request):
            kind, list_id = self.KINDS[self.next_n % len(self.KINDS)]
            events.append(event(self.next_n, kind, list_id))
            self.next_n += 1
        return events

    def post(self, base, events):
        try:
            status, doc = http("POST", base + "/v1/events", ndjson(events),
                               {"Content-Type": "application/x-ndjson"},
                               timeout=5)
        except OSError:  # refused, reset or timed out: not accepted
            return "error"
        if status == 202 and doc == {"accepted": len(events)}:
            self.accepted.extend((e["custom_data"]["n"], e["event_type"],
                                  e["list_id"]) for e in events)
            return "accepted"
        return "status %s" % status

    def run(self):
        while not self.halt.is_set():
            base = self.base
            if base is None:
                time.sleep(0.005)
                continue
            self.requests[self.post(base, self.batch())] += 1
            time.sleep(self.pause)


class Durability(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.hookd = None
        self.config = {}
        self.scratch = []

    def tearDown(self):
        if self.hookd and self.hookd.proc.returncode is None:
            self.hookd.stop()
        self.sink.stop()
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)

    def start(self, hooks=None, workdir=None):
        """Starts (or, with workdir, restarts) the router on self.config
        and waits until its hooks run."""
        self.hookd = Hookd(hooks, self.config, workdir=workdir)
        for hook_id in hooks or self.hook_ids:
            self.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                 "hook %s running" % hook_id)
        if hooks:
            self.hook_ids = list(hooks)
        return self.hookd

    def restart(self):
        return self.start(workdir=self.hookd.dir)

    def post(self, events, ndjson_body=True):
        if ndjson_body:
            status, doc = self.hookd.post_events(ndjson(events),
                                                 "application/x-ndjson")
        else:
            status, doc = self.hookd.post_events(events)
        self.assertEqual((status, doc), (202, {"accepted": len(events)}))

    def wait_drained(self, hook_ids, timeout=20.0):
        for hook_id in hook_ids:
            self.hookd.wait_hook(hook_id,
                                 lambda h: h["counters"]["queued"] == 0,
                                 "outbox of %s drained" % hook_id, timeout)

    # ---- 1: crashes under load ----

    def test_crash_loses_no_accepted_event(self):
        seed = int(os.environ.get("HOOKD_TEST_SEED", time.time_ns() % 10**9))
        rng = random.Random(seed)
        print("\ncrash test seed=%d (HOOKD_TEST_SEED=%d repeats it)"
              % (seed, seed))
        # a: every click; b: clicks and opens of database 111 only.
        self.start({
            "a": hook_src(self.sink.url("/a"), batch_size=20),
            "b": hook_src(self.sink.url("/b"), actions=("click", "open"),
                          database="111", batch_size=20)})
        client = Client()
        client.base = self.hookd.base
        client.start()
        kills = 5
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.2, 1.5))
                self.hookd.kill()
                self.restart()
                client.base = self.hookd.base
            time.sleep(1.0)
        finally:
            client.halt.set()
            client.join(10)
        self.wait_drained(["a", "b"], timeout=40)
        want = {"a": {n for n, t, _ in client.accepted if t == "click"},
                "b": {n for n, _, l in client.accepted if l == 111}}
        print("requests: %s; accepted events: %d; kills: %d"
              % (dict(client.requests), len(client.accepted), kills))
        self.assertGreater(len(client.accepted), 500, "a steady stream")
        self.assertGreater(client.requests["error"], 0,
                           "some requests hit a dead router")
        for path in ("a", "b"):
            got = collections.Counter(received(self.sink, "/" + path))
            dups = sorted(n for n, c in got.items() if c > 1)
            print("hook %s: expected %d, received %d distinct, %d "
                  "duplicated%s" % (path, len(want[path]), len(got),
                                    len(dups),
                                    (": " + str(dups[:40])) if dups else ""))
            missing = sorted(want[path] - set(got))
            self.assertEqual(missing, [], "accepted events missing at /%s"
                             " (seed %d)" % (path, seed))
            self.assertEqual(self.hookd.counters(path)["dead"], 0)

    def test_crash_during_outage_then_replay_loses_nothing(self):
        """The endpoint is down for longer than the whole retry schedule
        while the router is killed again and again: every accepted event
        ends as a dead letter or in the outbox, never nowhere, and a
        replay from the dead letters delivers them all."""
        seed = int(os.environ.get("HOOKD_TEST_SEED", time.time_ns() % 10**9))
        rng = random.Random(seed)
        print("\noutage crash test seed=%d" % seed)
        self.config = {"HOOK_RETRY_TIMES": 1, "HOOK_RETRY_PERIOD_SEC": 0.2}
        self.sink.script("/down", default={"status": 503, "body": "down"})
        # Big batches: the dispatcher sends one at a time, each waiting out
        # its retry before the next, so the outage costs time per batch.
        self.start({"h": hook_src(self.sink.url("/down"), batch_size=500)})
        client = Client()
        client.base = self.hookd.base
        client.start()
        try:
            for _ in range(4):
                time.sleep(rng.uniform(0.2, 1.0))
                self.hookd.kill()
                self.restart()
                client.base = self.hookd.base
            time.sleep(0.5)
        finally:
            client.halt.set()
            client.join(10)
        want = {n for n, t, _ in client.accepted if t == "click"}
        self.assertGreater(len(want), 200, "a steady stream")
        self.wait_drained(["h"], timeout=30)  # every message is dead now
        letters = dead_letters(self.hookd, "h", limit=1000)
        dead = collections.Counter(l["message"]["custom_data"]["n"]
                                   for l in letters)
        self.assertEqual(sorted(want - set(dead)), [],
                         "accepted but neither delivered nor dead "
                         "(seed %d)" % seed)
        self.sink.reset()
        status, doc = http("POST", self.hookd.base +
                           "/v1/dead-letters/retry?hook=h")
        self.assertEqual((status, doc), (200, {"resent": len(letters)}))
        self.wait_drained(["h"], timeout=30)
        got = collections.Counter(received(self.sink, "/down"))
        print("accepted %d, dead letters %d (%d duplicated), delivered %d"
              % (len(want), len(letters),
                 sum(1 for c in dead.values() if c > 1), len(got)))
        self.assertEqual(sorted(want - set(got)), [],
                         "accepted events missing after the replay "
                         "(seed %d)" % seed)
        self.assertEqual(dead_letters(self.hookd, "h"), [])

    # ---- 2: an outage, dead letters, and replay ----

    def test_outage_dead_letters_then_replay(self):
        self.config = {"HOOK_RETRY_TIMES": 2, "HOOK_RETRY_PERIOD_SEC": 0.3}
        self.sink.script("/o", default={"status": 503,
                                        "body": "down for maintenance"})
        self.start({"h": hook_src(self.sink.url("/o"), batch_size=10)})
        self.post([event(n) for n in range(30)])
        letters = wait_letters(self.hookd, "h", 30, limit=7)
        self.assertEqual(self.hookd.counters("h")["dead"], 30)
        self.assertEqual(len({l["id"] for l in letters}), 30)
        self.assertEqual(sorted(l["message"]["custom_data"]["n"]
                                for l in letters), list(range(30)))
        for letter in letters:
            self.assertEqual(letter["hook"], "h")
            self.assertIn("503", letter["reason"])
            self.assertEqual(letter["attempts"], 3, "1 + HOOK_RETRY_TIMES")
            self.assertIn(self.sink.url("/o"), letter["destination"])
            self.assertLessEqual(parse_time(letter["first_attempt_at"]),
                                 parse_time(letter["last_attempt_at"]))
            self.assertIsNotNone(letter["dead_at"])
        self.assertEqual(len(self.sink.requests("/o")), 9, "3 x 3 attempts")

        self.sink.reset()  # the endpoint is back: 200 for everything
        status, doc = http("POST", self.hookd.base +
                           "/v1/dead-letters/retry?hook=h")
        self.assertEqual((status, doc), (200, {"resent": 30}))
        self.sink.wait_messages("/o", 30, timeout=10)
        wait_for("no dead letters left",
                 lambda: dead_letters(self.hookd, "h") == [], timeout=5)
        self.assertEqual(sorted(received(self.sink, "/o")), list(range(30)))
        status, doc = http("GET", self.hookd.base + "/v1/dead-letters")
        self.assertEqual((status, doc), (200, {"items": [], "next": None}))

    def test_replayed_letters_leave_queued_at_zero(self):
        """The hook's queued counter counts resent letters in and out."""
        self.config = {"HOOK_RETRY_TIMES": 0}
        self.sink.script("/q", default={"status": 503})
        self.start({"h": hook_src(self.sink.url("/q"), batch_size=5)})
        self.post([event(n) for n in range(10)])
        wait_letters(self.hookd, "h", 10)
        self.sink.reset()
        status, doc = http("POST", self.hookd.base +
                           "/v1/dead-letters/retry?hook=h")
        self.assertEqual((status, doc), (200, {"resent": 10}))
        self.sink.wait_messages("/q", 10)
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 10,
                             "sent=10")
        time.sleep(0.2)
        self.assertEqual(self.hookd.counters("h")["queued"], 0)

    # ---- 3: a restart during a retry wait ----

    def first_attempt_then_restart(self, stop, retries=2, period=4.0,
                                   responses=({"status": 503},),
                                   default=None, down_after=1.2):
        """Posts one event; once its first attempt failed, stops the router
        down_after seconds later with stop() and starts it again at once.
        Returns (the first request, monotonic time the restart was up)."""
        self.config = {"HOOK_RETRY_TIMES": retries,
                       "HOOK_RETRY_PERIOD_SEC": period}
        self.sink.script("/r", responses=list(responses), default=default)
        self.start({"h": hook_src(self.sink.url("/r"), batch_size=1)})
        self.post([event(1)])
        first = wait_for("first attempt", lambda: self.sink.requests("/r"),
                         timeout=5)[0]
        # The line names the version of the script that made the batch.
        self.assertIn(" hook=h version=1 dest=", self.hookd.wait_log(
            "retry_in="))
        time.sleep(max(0.0, first["t"] + down_after - time.monotonic()))
        stop()
        self.restart()
        return first, time.monotonic()

    def check_retry_resumes_at_stored_time(self, stop):
        period = 4.0
        first, up = self.first_attempt_then_restart(stop, period=period)
        self.assertIn(" hook=h version=1 dest=", self.hookd.wait_log(
            "retry_resumed=1"))
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 1,
                             "sent after the resumed retry", timeout=10)
        reqs = self.sink.requests("/r")
        self.assertEqual(len(reqs), 2, "one failure, one retry")
        retry_t = reqs[1]["t"]
        print("\nfirst attempt +%.3fs restart up, +%.3fs retry (period %.1f)"
              % (up - first["t"], retry_t - first["t"], period))
        self.assertAlmostEqual(retry_t - first["t"], period, delta=0.8,
                               msg="retry at first attempt + period")
        self.assertGreater(retry_t - up, 1.0, "not at once on restart")
        self.assertLess(retry_t - up, period - 0.5, "not restart + period")
        self.assertEqual(reqs[0]["body"], reqs[1]["body"])

    def test_retry_wait_survives_kill(self):
        self.check_retry_resumes_at_stored_time(lambda: self.hookd.kill())

    def test_retry_wait_survives_sigterm(self):
        self.check_retry_resumes_at_stored_time(
            lambda: self.assertEqual(self.hookd.stop(), 0))

    def test_attempts_continue_after_restart(self):
        first, _ = self.first_attempt_then_restart(
            lambda: self.hookd.kill(), retries=2, period=1.0, responses=(),
            default={"status": 503}, down_after=0.4)
        [letter] = wait_letters(self.hookd, "h", 1, timeout=10)
        self.assertEqual(letter["attempts"], 3, "attempts before and after "
                         "the restart add up")
        reqs = self.sink.requests("/r")
        self.assertEqual(len(reqs), 3)
        self.assertAlmostEqual(parse_time(letter["first_attempt_at"]),
                               first["wall"], delta=0.5)
        self.assertAlmostEqual(parse_time(letter["last_attempt_at"]),
                               reqs[2]["wall"], delta=0.5)
        self.assertAlmostEqual(reqs[1]["t"] - reqs[0]["t"], 1.0, delta=0.5)

    # ---- 4: one letter at a time ----

    def test_dead_letter_retry_delete_and_errors(self):
        for path in ("/h", "/g"):
            self.sink.script(path, default={"status": 400})
        self.start({"h": hook_src(self.sink.url("/h"), batch_size=1),
                    "g": hook_src(self.sink.url("/g"), batch_size=1)})
        self.post([event(n) for n in range(3)])
        base = self.hookd.base + "/v1/dead-letters"
        h_letters = wait_letters(self.hookd, "h", 3)
        g_letter = wait_letters(self.hookd, "g", 3)[0]
        self.sink.reset()

        one, two, three = h_letters
        status, doc = http("POST", "%s/%d/retry" % (base, one["id"]))
        self.assertEqual((status, doc), (200, {"resent": 1}))
        [msg] = self.sink.wait_messages("/h", 1)
        self.assertEqual(msg, one["message"])
        self.assertEqual(http("POST", "%s/%d/retry" % (base, one["id"]))[0],
                         404, "a letter resent is no longer a letter")

        status, doc = http("DELETE", "%s/%d" % (base, two["id"]))
        self.assertEqual((status, doc), (200, {"deleted": 1}))
        self.assertEqual(http("DELETE", "%s/%d" % (base, two["id"]))[0], 404)
        self.assertEqual([l["id"] for l in dead_letters(self.hookd, "h")],
                         [three["id"]])

        for method, url in (("POST", base + "/987654/retry"),
                            ("DELETE", base + "/987654"),
                            ("POST", base + "/abc/retry"),
                            ("DELETE", base + "/abc")):
            self.assertEqual(http(method, url)[0], 404, method + " " + url)

        os.remove(os.path.join(self.hookd.plugins, "g.lua"))
        self.hookd.wait_log("hook=g removed=1", timeout=5)
        status, doc = http("POST", "%s/%d/retry" % (base, g_letter["id"]))
        self.assertEqual(status, 409, doc)
        status, doc = http("POST", base + "/retry?hook=g")
        self.assertEqual(status, 409, doc)
        self.assertEqual(http("POST", base + "/retry?hook=nosuch")[0], 409)
        self.assertEqual(len(dead_letters(self.hookd, "g")), 3,
                         "letters of an unloaded hook are kept")
        status, doc = http("DELETE", "%s/%d" % (base, g_letter["id"]))
        self.assertEqual((status, doc), (200, {"deleted": 1}))
        time.sleep(0.3)
        self.assertEqual(self.sink.requests("/g"), [])
        self.assertEqual(len(self.sink.requests("/h")), 1)

    # ---- 5: order across a restart ----

    def test_order_kept_across_restart(self):
        port = free_port()
        self.config = {"HOOK_RETRY_TIMES": 100, "HOOK_RETRY_PERIOD_SEC": 0.3}
        url = "http://127.0.0.1:%d/ord" % port
        self.start({"h": hook_src(url, batch_size=50, timeout_sec=0.2)})
        for start in range(0, 300, 30):
            self.post([event(n) for n in range(start, start + 30)],
                      ndjson_body=start % 60 == 0)
        self.hookd.wait_log("retry_in=")
        time.sleep(0.7)  # a few refused attempts, more batches waiting
        self.assertEqual(self.hookd.stop(), 0)
        self.hookd.drain_log()
        sink = Sink("--port", str(port))
        try:
            self.restart()
            self.hookd.wait_log("retry_resumed=1")
            self.wait_drained(["h"])
            got = received(sink, "/ord")
        finally:
            sink.stop()
        out_of_order = [(a, b) for a, b in zip(got, got[1:]) if b <= a]
        self.assertEqual(out_of_order, [], "received n must increase")
        self.assertEqual(got, list(range(300)))

    # ---- 6: a store of an older hookd ----

    def downgrade_to_schema_5(self, path):
        """Makes the stopped router's store what hookd of schema 5 left:
        no hook_slots, the outbox index by hook, outbox ids counted
        across hooks, history as a row per event (none here) and no
        history files. Its outbox gets a and b messages interleaved (one
        waiting for a retry that is due), messages of a hook with no
        file, two dead letters of a, and b's paused export with a page of
        three messages in flight, one of them already delivered."""
        db = sqlite3.connect(path)
        db.executescript("""
            DROP TABLE hook_slots;
            DROP TABLE history_files;
            CREATE INDEX outbox_by_hook ON outbox(hook, id);
            DROP TABLE history;
            CREATE TABLE events (id INTEGER PRIMARY KEY, received_at REAL
              NOT NULL, event_date REAL NOT NULL, event_type TEXT NOT NULL,
              list_id INTEGER, body TEXT NOT NULL);
            CREATE INDEX events_by_date ON events(event_date);
            PRAGMA user_version=5;""")
        rows = []
        for n in range(12):
            rows.append((2 * n + 1, "a", n))
            if n != 9:  # b's n=9 (id 20) was delivered
                rows.append((2 * n + 2, "b", n))
        rows += [(30, "gone", 0), (31, "gone", 1)]
        for oid, hook, n in rows:
            db.execute("INSERT INTO outbox(id, hook, body, created_at) "
                       "VALUES(?, ?, ?, 1700000000)",
                       (oid, hook, json.dumps({"custom_data": {"n": n}})))
        db.execute("UPDATE outbox SET attempts = 1, first_attempt_at = "
                   "1700000000, next_attempt_at = 1700000001 WHERE id = 3")
        for n in (100, 101):
            db.execute("INSERT INTO dead_letters(hook, reason, attempts, "
                       "created_at, body) VALUES('a', 'status=500', 3, "
                       "1700000000, ?)",
                       (json.dumps({"custom_data": {"n": n}}),))
        db.execute("INSERT INTO exports(hook, from_day, to_day, status, "
                   "paused_by, total, scanned, sent, started_at, "
                   "chunk_first, chunk_last, chunk_count) VALUES('b', "
                   "'2024-01-01', '2024-01-02', 'paused', 'user', 3, 3, 0, "
                   "1700000000, 18, 22, 3)")
        db.commit()
        db.close()

    def test_schema_5_store_migrates_and_delivers_each_message_once(self):
        self.config = {"HOOK_RETRY_TIMES": 5, "HOOK_RETRY_PERIOD_SEC": 0.3}
        self.start({"a": hook_src(self.sink.url("/a"), batch_size=5),
                    "b": hook_src(self.sink.url("/b"), batch_size=5)})
        self.assertEqual(http("POST", self.hookd.base +
                              "/v1/hooks/b/stop")[0], 200)
        self.assertEqual(self.hookd.stop(), 0)
        self.downgrade_to_schema_5(self.hookd.db_path())
        self.hookd = Hookd(None, self.config, workdir=self.hookd.dir)
        self.hookd.wait_log("migrated_from=5")
        self.wait_drained(["a"])
        self.assertEqual(received(self.sink, "/a"), list(range(12)))
        gone = self.hookd.hook("gone")
        self.assertEqual((gone["state"], gone["counters"]["queued"]),
                         ("removed", 2))
        # b is stopped: its page in flight is still queued, not sent.
        export = self.hookd.base + "/v1/hooks/b/export"
        time.sleep(0.5)
        doc = http("GET", export)[1]
        self.assertEqual((doc["sent"], doc["in_flight"]), (0, 3), doc)
        # Its place in the old history cannot be kept: it ends, with the
        # reason, and still counts its page in flight.
        self.assertEqual(doc["status"], "error")
        self.assertIn("start the export again", doc["reason"])
        self.assertEqual(self.hookd.counters("b")["queued"], 11)
        self.assertEqual(received(self.sink, "/b"), [])
        self.assertEqual(http("POST", self.hookd.base +
                              "/v1/hooks/b/activate")[0], 200)
        self.wait_drained(["b"])
        self.assertEqual(received(self.sink, "/b"),
                         [n for n in range(12) if n != 9])
        wait_for("b's page counted as sent",
                 lambda: http("GET", export)[1]["sent"] == 3, 10)
        # a's dead letters go to the end of a's outbox, after the rest.
        status, doc = http("POST", self.hookd.base +
                           "/v1/dead-letters/retry?hook=a")
        self.assertEqual((status, doc), (200, {"resent": 2}))
        self.wait_drained(["a"])
        self.assertEqual(received(self.sink, "/a"),
                         list(range(12)) + [100, 101])
        # Nothing comes twice after another start.
        self.assertEqual(self.hookd.stop(), 0)
        self.restart()
        self.post([event(1000)])
        self.wait_drained(["a", "b"])
        self.assertEqual(received(self.sink, "/a"),
                         list(range(12)) + [100, 101, 1000])
        self.assertEqual(received(self.sink, "/b"),
                         [n for n in range(12) if n != 9] + [1000])
        self.assertEqual(harness.sqlite_rows(
            self.hookd.db_path(), "SELECT name FROM sqlite_master WHERE "
            "name = 'outbox_by_hook'"), [])

    # ---- 7: files the store refuses ----

    def refused(self, prepare):
        """Runs hookd on a data_dir whose hookd.db prepare(path) made;
        returns (exit status, stderr, the db's bytes before and after)."""
        root = tempfile.mkdtemp(prefix="hookd-refuse-", dir="/tmp")
        self.scratch.append(root)
        os.makedirs(os.path.join(root, "plugins"))
        os.makedirs(os.path.join(root, "data"))
        db = os.path.join(root, "data", "hookd.db")
        prepare(db)
        before = file_bytes(db)
        config = os.path.join(root, "main.json")
        with open(config, "w") as f:
            json.dump({"listen": "127.0.0.1:0", "data_dir": "data",
                       "plugins_dir": "plugins"}, f)
        proc = subprocess.run([harness.HOOKD, "run", "--config", config],
                              capture_output=True, text=True, timeout=15)
        return proc.returncode, proc.stderr, before, file_bytes(db)

    def check_refused(self, prepare, words):
        rc, err, before, after = self.refused(prepare)
        self.assertEqual(rc, 2, err)
        self.assertIn("hookd.db", err)
        for word in words:
            self.assertIn(word, err)
        self.assertEqual(before, after, "the file is left alone")

    def test_refuses_a_text_file(self):
        def text(path):
            with open(path, "w") as f:
                f.write("my notes, not a database\n" * 40)
        self.check_refused(text, ["not a usable SQLite database"])

    def test_refuses_another_programs_database(self):
        def other(path):
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE recipes (name TEXT, steps TEXT)")
            db.execute("INSERT INTO recipes VALUES ('bread', 'knead')")
            db.commit()
            db.close()
        self.check_refused(other, ["another program"])

    def test_refuses_a_newer_schema(self):
        def newer(path):
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY)")
            db.execute("PRAGMA application_id=%d" % 0x686f6f6b)
            db.execute("PRAGMA user_version=999")
            db.commit()
            db.close()
        self.check_refused(newer, ["newer", "999"])

    def test_refuses_a_store_with_a_table_missing(self):
        def damaged(path):
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
            db.execute("PRAGMA application_id=%d" % 0x686f6f6b)
            db.execute("PRAGMA user_version=1")
            db.commit()
            db.close()
        self.check_refused(damaged, ["damaged", "outbox"])

    def test_refuses_a_store_with_a_column_missing(self):
        def damaged(path):
            """A store made by this build, then a column dropped."""
            root = os.path.dirname(os.path.dirname(path))
            config = os.path.join(root, "make.json")
            with open(config, "w") as f:
                json.dump({"listen": "127.0.0.1:0", "data_dir": "data",
                           "plugins_dir": "plugins"}, f)
            proc = subprocess.Popen([harness.HOOKD, "run", "--config",
                                     config], stderr=subprocess.PIPE,
                                    text=True)
            for line in proc.stderr:
                if "port=" in line:
                    break
            proc.terminate()
            proc.wait(10)
            proc.stderr.close()
            db = sqlite3.connect(path)
            db.execute("ALTER TABLE outbox DROP COLUMN next_attempt_at")
            db.commit()
            db.close()
        self.check_refused(damaged, ["damaged", "next_attempt_at"])

    def test_hook_without_file_is_listed_with_its_queue_after_restart(self):
        port = free_port()
        self.config = {"HOOK_RETRY_TIMES": 100, "HOOK_RETRY_PERIOD_SEC": 0.3}
        src = hook_src("http://127.0.0.1:%d/gone" % port)
        self.start({"h": src})
        self.post([event(n) for n in range(12)])
        self.hookd.wait_log("retry_in=")
        os.remove(os.path.join(self.hookd.plugins, "h.lua"))
        self.hookd.kill()
        self.hookd = Hookd(None, self.config, workdir=self.hookd.dir)
        self.hookd.wait_log("kept_in_outbox=12")
        h = self.hookd.hook("h")
        self.assertEqual((h["state"], h["counters"]["queued"]),
                         ("removed", 12))
        sink = Sink("--port", str(port))
        try:
            self.hookd.write_hook("h", src)
            self.wait_drained(["h"])
            self.assertEqual(sorted(received(sink, "/gone")), list(range(12)))
        finally:
            sink.stop()

    def test_sighup_is_logged_and_ignored(self):
        self.start({"h": hook_src(self.sink.url("/hup"))})
        self.hookd.proc.send_signal(signal.SIGHUP)
        self.hookd.wait_log("ignored=1")
        self.post([event(1)])
        self.sink.wait_messages("/hup", 1)
        self.assertIsNone(self.hookd.proc.poll())

    def test_second_router_on_same_data_dir_is_refused(self):
        self.start({"h": hook_src(self.sink.url("/one"), batch_size=1)})
        proc = subprocess.run(
            [harness.HOOKD, "run", "--config", self.hookd.config_path],
            capture_output=True, text=True, timeout=15)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("lock", proc.stderr)
        self.assertIn("another hookd", proc.stderr)
        self.assertIsNone(self.hookd.proc.poll(), "the first keeps running")
        self.assertEqual(http("GET", self.hookd.base + "/healthz")[0], 200)
        self.post([event(7)])
        self.sink.wait_messages("/one", 1)
        self.assertEqual(received(self.sink, "/one"), [7])

    # ---- 7: SIGTERM with a slow endpoint ----

    def test_sigterm_with_slow_endpoint_then_restart(self):
        grace = 1.0
        self.config = {"shutdown_grace_sec": grace}
        self.sink.script("/slow", default={"status": 200, "delay": 5})
        self.start({"h": hook_src(self.sink.url("/slow"), batch_size=10,
                                  extra=", request_timeout_sec = 30")})
        self.post([event(n) for n in range(50)])
        wait_for("a request in flight", lambda: self.sink.requests("/slow"),
                 timeout=5)
        t0 = time.monotonic()
        rc = self.hookd.stop()
        took = time.monotonic() - t0
        print("\nexit after SIGTERM took %.2fs (grace %.1fs)" % (took, grace))
        self.assertEqual(rc, 0)
        self.assertLess(took, grace + 3.0)
        kept = self.hookd.wait_log("kept_in_outbox=")
        self.assertIn("kept_in_outbox=50", kept)

        self.sink.reset()  # fast from now on; forget the first attempt
        self.restart()
        self.wait_drained(["h"])
        got = received(self.sink, "/slow")
        self.assertEqual(sorted(set(got)), list(range(50)))
        self.assertEqual(len(got), 50, "each message sent once after start")


if __name__ == "__main__":
    harness.main()
