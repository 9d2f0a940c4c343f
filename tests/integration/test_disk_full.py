"""A full disk under the store: hookd answers 503 and keeps nothing of a
refused request, keeps delivering what it had already accepted, and
accepts events again once there is space. The data_dir is a small tmpfs
mounted for each test (root only), grown later with a remount."""

import datetime
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from collections import Counter

import harness
from harness import Hookd, Sink, http, wait_for

# Why 6 MiB: the WAL checkpoints itself at about 1000 pages (4 MiB with
# 4 KiB pages) and is reused from its start afterwards, so a disk smaller
# than that fills with the WAL alone and checkpoints never run. At 6 MiB
# the WAL reaches its checkpoint size at least once, the database file
# grows with what the checkpoint copies in, and the disk then fills with
# database and WAL together, which is how a real disk runs out.
SMALL = 6 * 1024 * 1024
LARGE = 96 * 1024 * 1024
PAD = "x" * 2048          # each event carries 2 KiB: history and outbox
PER_REQUEST = 25          # events per NDJSON request
# Events enough that one request's pages outgrow hookd's 16 MiB page
# cache, so that SQLite writes them out before the commit: each event
# makes a history row and an outbox row, each on a 4 KiB page of its own
# at this size, about 24 MiB in all (in a 7 MB body).
LARGE_REQUEST = 3000
RETRY_PERIOD = 0.3


def now_date():
    """An event_date of now, so history cleanup never removes the events
    whatever the day the test runs."""
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.5Z")


def event(event_id):
    return {"event_type": "click", "event_date": now_date(),
            "list_id": 111, "profile_id": "p-" + event_id,
            "event_data": {"campaign_id": 973, "message_id": 17,
                           "segment_id": 0, "resource_id": 3},
            "custom_data": {"id": event_id, "pad": PAD}}


def post_ndjson(base, events):
    """Returns (status, parsed body, headers); never raises on 4xx/5xx."""
    body = "".join(json.dumps(e) + "\n" for e in events).encode()
    req = urllib.request.Request(
        base + "/v1/events", data=body, method="POST",
        headers={"Content-Type": "application/x-ndjson"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw, headers = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, raw, headers = e.code, e.read(), e.headers
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = raw.decode("utf-8", "replace")
    return status, doc, headers


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskFull(unittest.TestCase):
    def setUp(self):
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs as data_dir")
        if shutil.which("mount") is None or shutil.which("umount") is None:
            self.skipTest("mount/umount not installed")
        self.dir = tempfile.mkdtemp(prefix="hookd-diskfull-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = os.path.join(self.dir, "data")
        os.mkdir(self.data)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % SMALL,
             "tmpfs", self.data], capture_output=True, text=True, timeout=20)
        if done.returncode != 0:
            self.skipTest("cannot mount a tmpfs (needs CAP_SYS_ADMIN): " +
                          " ".join((done.stderr or done.stdout).split()))
        # Cleanups run after tearDown, so hookd has let go of the files.
        self.addCleanup(self.unmount)
        self.sink = Sink()
        self.hookd = None
        self.requests = []  # (status, body, [event ids]) per request
        self.thread_errors = []
        self.numbers = itertools.count()

    def tearDown(self):
        if self.hookd and self.hookd.proc.poll() is None:
            self.assertEqual(self.hookd.stop(), 0, "hookd exit status")
        self.sink.stop()

    def unmount(self):
        """Unmounts the tmpfs this test mounted, and only that one."""
        if self.hookd and self.hookd.proc.poll() is None:
            self.hookd.kill()
        if not os.path.ismount(self.data):
            return
        done = subprocess.run(["umount", self.data], capture_output=True,
                              text=True, timeout=20)
        if done.returncode != 0:
            # Busy only if something still holds a file there; detach it
            # so that no mount outlives the test.
            subprocess.run(["umount", "-l", self.data], timeout=20)
        self.assertFalse(os.path.ismount(self.data), "tmpfs unmounted")

    def grow_disk(self):
        done = subprocess.run(
            ["mount", "-o", "remount,size=%d" % LARGE, self.data],
            capture_output=True, text=True, timeout=20)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertGreater(free_bytes(self.data), LARGE // 2)

    def start(self, retry_times=2):
        src = """return {
  database = "all", actions = {"click"},
  send = {type = "http", url = "%s", batch_size = 50, timeout_sec = 0.2,
          request_timeout_sec = 2},
}""" % self.sink.url("/full")
        self.hookd = Hookd({"h": src}, {
            "data_dir": self.data, "history_days": 3650,
            "HOOK_RETRY_PERIOD_SEC": RETRY_PERIOD,
            "HOOK_RETRY_TIMES": retry_times, "log_level": "info"},
            workdir=self.dir)
        self.hookd.wait_hook("h", lambda h: h["state"] == "running",
                             "hook h running")

    # ---- posting and checking ----

    def post(self, tag, count=PER_REQUEST):
        n = next(self.numbers)
        ids = ["%s-r%d-e%d" % (tag, n, i) for i in range(count)]
        status, doc, headers = post_ndjson(self.hookd.base,
                                           [event(i) for i in ids])
        self.assertIn(status, (202, 503), doc)
        self.requests.append((status, doc, ids))
        return status, doc, headers

    def post_async(self, tag, count):
        """Posts from a thread; join it, then look in self.requests and
        self.thread_errors."""
        def run():
            try:
                self.post(tag, count)
            except Exception as e:  # reported by the test after join
                self.thread_errors.append("%s: %r" % (tag, e))
        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th

    def fill_disk(self):
        """Posts until the store refuses a request; returns that answer.
        Gives up after several times the disk's size in events."""
        limit = 8 * SMALL // (len(PAD) * PER_REQUEST)
        for _ in range(limit):
            status, doc, headers = self.post("fill")
            if status == 503:
                return doc, headers
        self.fail("no 503 after %d requests; %d bytes free" %
                  (limit, free_bytes(self.data)))

    def ids(self, status):
        return [i for s, _, ids in self.requests if s == status for i in ids]

    def delivered(self):
        msgs = self.sink.messages("/full")
        return Counter(m["custom_data"]["id"] for m in msgs)

    def sink_count(self):
        stats = http("GET", self.sink.url("/_sink/stats"))[1]
        return stats["per_path"].get("/full", {}).get("messages", 0)

    def answers_of(self, ids):
        """{request: (status, answer, how many of its events)} for the
        requests the ids belong to."""
        found = {}
        for status, doc, req_ids in self.requests:
            hit = len(ids.intersection(req_ids))
            if hit:
                found[req_ids[0].rsplit("-", 1)[0]] = (status, doc, hit)
        return found

    def wait_delivered(self, timeout=20):
        """Waits until the sink has every accepted event, then checks it
        got each exactly once and nothing of a refused request."""
        want = len(self.ids(202))
        wait_for("%d messages at the sink" % want,
                 lambda: self.sink_count() >= want, timeout)
        got = self.delivered()
        accepted, refused = set(self.ids(202)), set(self.ids(503))
        self.assertEqual(set(got) - accepted - refused, set(), "unknown ids")
        self.assertEqual(accepted - set(got), set(), "accepted, not delivered")
        wrong = self.answers_of(refused & set(got))
        if wrong:
            self.fail("refused (503) but delivered:\n" + "\n".join(
                "  %s: %d of its events delivered; answer %d %s" %
                (req, hit, status, json.dumps(doc))
                for req, (status, doc, hit) in sorted(wrong.items())))
        self.assertEqual({i: c for i, c in got.items() if c > 1}, {},
                         "delivered more than once")

    def check_refusal(self, doc, headers=None):
        """The answer says why, and the router goes on serving."""
        self.assertIsInstance(doc, dict)
        self.assertIn("disk is full", doc.get("error", ""))
        if headers is not None:
            self.assertIsNotNone(headers.get("Retry-After"))
        self.assertEqual(http("GET", self.hookd.base + "/healthz")[0], 200)
        status, hooks = http("GET", self.hookd.base + "/v1/hooks")
        self.assertEqual(status, 200)
        self.assertIn('"h"', json.dumps(hooks))
        self.assertIsNone(self.hookd.proc.poll(), "hookd still running")
        self.hookd.wait_log("status=503")

    def check_queued_zero(self):
        self.hookd.wait_hook("h", lambda h: h["counters"]["queued"] == 0,
                             "queued back to 0", timeout=10)

    def check_store_after_stop(self):
        """With hookd stopped: the history holds exactly the accepted
        events and the outbox is empty (the acknowledgements that failed
        on the full disk were written once there was space)."""
        self.assertEqual(self.hookd.stop(), 0, "hookd exit status")
        db = sqlite3.connect("file:%s?mode=ro" % self.hookd.db_path(),
                             uri=True)
        try:
            outbox = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        finally:
            db.close()
        ids = [json.loads(text)["custom_data"]["id"] for _, text in
               harness.history_events(self.hookd.db_path())]
        self.assertEqual(Counter(ids), Counter(self.ids(202)),
                         "history = accepted events")
        self.assertEqual(outbox, 0, "outbox emptied")

    # ---- the tests ----

    def test_full_disk_refuses_whole_requests_and_recovers(self):
        # A slow sink (one batch of 50 in flight at a time) leaves most
        # deliveries for after the disk is full, so that their
        # acknowledgements meet the full disk too.
        self.sink.script("/full", default={"status": 200, "delay": 0.25})
        self.start()
        doc, headers = self.fill_disk()
        self.check_refusal(doc, headers)
        for _ in range(3):  # still full: more refusals, nothing kept
            self.post("full")
        self.assertGreater(len(self.ids(202)), 0, "some accepted first")
        # Deliveries of what was accepted go on while the disk is full;
        # the outbox rows they leave behind wait for space, and queued
        # says so: it counts what the outbox still holds.
        self.wait_delivered()
        self.hookd.wait_log("delivery_bookkeeping_delayed=1")
        self.assertGreater(self.hookd.counters("h")["queued"], 0,
                           "acknowledged but not yet removed from the outbox")

        self.grow_disk()
        for _ in range(5):
            status, doc, _ = self.post("after")
            self.assertEqual(status, 202, doc)
        self.wait_delivered()
        self.check_queued_zero()
        self.check_store_after_stop()

    def test_sink_down_while_disk_full(self):
        port = self.sink.port
        self.sink.stop()
        self.start(retry_times=100)
        doc, headers = self.fill_disk()
        self.check_refusal(doc, headers)
        self.post("full")
        queued = len(self.ids(202))
        self.hookd.wait_hook("h", lambda h: h["counters"]["retried"] > 0,
                             "retries against the stopped sink")
        self.assertEqual(self.hookd.counters("h")["queued"], queued)

        self.grow_disk()
        for _ in range(3):  # accepted again while the sink is still down
            status, doc, _ = self.post("after")
            self.assertEqual(status, 202, doc)
        self.sink = Sink("--port", str(port))
        self.wait_delivered(timeout=30)
        self.check_queued_zero()
        self.assertEqual(self.hookd.counters("h")["dead"], 0)
        self.check_store_after_stop()

    def test_large_refused_request_leaves_its_group_alone(self):
        # A request too large for the page cache meets the full disk in
        # the middle of its statements, where SQLite gives up the whole
        # transaction of its commit group. The requests after it in that
        # group must still be told the truth: 202 and delivered, or 503
        # and nothing kept.
        self.start()
        # Holding the store's write lock for a moment makes the writer
        # wait with the first request and queue the others behind it, so
        # that the large one and the small ones after it share a group.
        lock = sqlite3.connect(self.hookd.db_path(), timeout=10,
                               isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            threads = [self.post_async("first", 1)]
            time.sleep(0.3)
            threads.append(self.post_async("large", LARGE_REQUEST))
            time.sleep(0.7)  # read and routed before the small ones come
            for i in range(5):
                threads.append(self.post_async("small%d" % i, 3))
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            lock.close()  # rolls back: hookd's writer goes on
        for th in threads:
            th.join(30)
        self.assertEqual(self.thread_errors, [])
        [(status, doc, _)] = [r for r in self.requests
                              if r[2][0].startswith("large")]
        self.assertEqual(status, 503)
        self.check_refusal(doc)

        # Space back and a restart, which delivers whatever the outbox
        # holds on disk, kept with a 202 or not.
        self.grow_disk()
        self.assertEqual(self.hookd.stop(), 0, "hookd exit status")
        self.start()
        self.check_queued_zero()  # everything sent and answered
        self.wait_delivered()
        self.check_store_after_stop()


if __name__ == "__main__":
    harness.main()
