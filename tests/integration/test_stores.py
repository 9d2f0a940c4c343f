"""What the store keeps besides the outbox, end to end: message content
(from send events and POST /v1/content, attached for hooks with content on,
forgotten after HOOK_CONTENT_CLEANUP_HOURS and removed by the cleanup job),
profiles (the API, import events merging fields, inline profile first),
the catalog of names (the API, and API entries winning over the file across
restarts), and bodies that are too large (413 halving, max_body_bytes)."""

import collections
import json
import os
import shutil
import sqlite3
import tempfile
import time
import unittest
import urllib.parse

import harness
from harness import FIXTURES, Hookd, Sink, bare, click, http, wait_for

RETRY_PERIOD = 0.3
# HOOK_CONTENT_CLEANUP_HOURS for the expiry tests: 1.8 seconds.
SHORT_HOURS = 0.0005
SHORT_SEC = SHORT_HOURS * 3600


def hook_src(url, actions=("click",), extra="", batch_size=1,
             timeout_sec=0.05, send_extra=""):
    """A hook sending every captured event to url."""
    return """return {
  database = "all", actions = {%s},
  send = {type = "http", url = "%s", batch_size = %d,
          timeout_sec = %s %s},
  %s
}""" % (", ".join(json.dumps(a) for a in actions), url, batch_size,
        timeout_sec, send_extra, extra)


def padded(i, size):
    """A click whose custom_data carries size bytes of padding."""
    return click(i, custom_data={"n": i, "pad": "x" * size})


def by_n(messages):
    return {m["custom_data"]["n"]: m for m in messages}


class Stores(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.hookd = None
        self.scratch = None

    def tearDown(self):
        if self.hookd:
            self.assertEqual(self.hookd.stop(), 0, "hookd exit status")
        self.sink.stop()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    # ---- helpers ----

    def start(self, hooks, workdir=None, **config):
        cfg = {"HOOK_RETRY_PERIOD_SEC": RETRY_PERIOD, "HOOK_RETRY_TIMES": 2}
        cfg.update(config)
        self.hookd = Hookd(hooks, cfg, workdir=workdir)
        for hook_id in hooks:
            self.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                 "hook %s running" % hook_id)
        return self.hookd

    def api(self, method, path, body=None):
        if isinstance(body, str):
            body = body.encode()
        return http(method, self.hookd.base + path, body)

    def post(self, events):
        status, body = self.hookd.post_events(events)
        self.assertEqual(status, 202, body)
        return body

    def query(self, sql, *args):
        """Rows of a query on the store, read-only, beside the router."""
        uri = "file:%s?mode=ro" % urllib.parse.quote(self.hookd.db_path())
        con = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def content_ids(self):
        return sorted(r[0] for r in self.query(
            "SELECT send_message_id FROM content"))

    def sink_limit(self, path, max_body):
        """The sink answers 413 to bodies over max_body bytes at path."""
        status, _ = http("POST", self.sink.url("/_sink/script"),
                         {"path": path, "max_body": max_body})
        self.assertEqual(status, 200)

    def dead_letters(self, hook_id):
        status, doc = self.api("GET", "/v1/dead-letters?hook=" + hook_id)
        self.assertEqual(status, 200, doc)
        return doc["items"]

    def store_content(self, items):
        status, doc = self.api("POST", "/v1/content", items)
        self.assertEqual(status, 200, doc)
        return doc

    # ---- message content ----

    def test_content_from_send_events_goes_to_later_events(self):
        actions = ("send", "send_sms", "send_push", "click")
        self.start({"with": hook_src(self.sink.url("/with"), actions,
                                     "content = true"),
                    "without": hook_src(self.sink.url("/without"), actions)})
        a, b, c = {"email": {"subject": "A"}}, {"sms": {"text": "B"}}, \
            {"push": {"title": "C", "n": [1, None, {}]}}
        self.post([click(0, event_type="send", send_message_id="m-send",
                         content=a),
                   click(1, event_type="send_sms", send_message_id="m-sms",
                         content=b),
                   click(2, event_type="send_push", send_message_id=4242,
                         content=c),
                   # not a send event: its content is not kept
                   click(3, event_type="open", send_message_id="m-open",
                         content={"x": 1})])
        self.sink.wait_messages("/with", 3)
        self.post([click(10, send_message_id="m-send"),
                   click(11, send_message_id="m-sms"),
                   click(12, send_message_id="4242"),
                   click(13, send_message_id="m-open"),
                   click(14, send_message_id="m-none"),
                   click(15, send_message_id="m-send", content={"own": 1}),
                   click(16)])
        self.sink.wait_messages("/with", 10)
        self.post(click(17, send_message_id="m-send"))
        got = by_n(self.sink.wait_messages("/with", 11))
        want = {0: a, 1: b, 2: c, 10: a, 11: b, 12: c, 13: None, 14: None,
                15: {"own": 1}, 16: None, 17: a}
        self.assertEqual(sorted(got), sorted(want))
        for n, content in want.items():
            self.assertEqual(got[n].get("content"), content, "message %d" % n)
        without = self.sink.wait_messages("/without", 11)
        self.assertEqual([m for m in without if "content" in m], [])
        self.assertEqual(self.content_ids(), ["4242", "m-send", "m-sms"])

    def test_content_from_the_same_request_is_seen(self):
        self.start({"h": hook_src(self.sink.url("/c"), ("send", "click"),
                                  "content = true")})
        first, second = {"v": 1}, {"v": 2}
        self.post([click(0, event_type="send", send_message_id="s1",
                         content=first),
                   click(1, send_message_id="s1"),
                   # a later send for the same id replaces the content
                   click(2, event_type="send", send_message_id="s1",
                         content=second),
                   click(3, send_message_id="s1")])
        got = by_n(self.sink.wait_messages("/c", 4))
        self.assertEqual([got[n].get("content") for n in range(4)],
                         [first, first, second, second])
        self.post(click(4, send_message_id="s1"))
        self.assertEqual(self.sink.wait_messages("/c", 5)[4]["content"],
                         second)

    def test_content_is_kept_as_the_send_wrote_it(self):
        """Content is stored as the send event's own text: escapes, spacing
        and number forms reach later events as the same JSON values; a
        send giving content twice counts its last, as a decoder does."""
        self.start({"h": hook_src(self.sink.url("/c"), ("send", "click"),
                                  "content = true")})
        spaced = ('{ "subject" : "Sale \\u00e9 \\"now\\"", "n": 1.50e1,'
                  ' "parts": [ {"t": "a\\/b"} ] }')
        send = json.dumps(click(0, event_type="send", send_message_id="s1"))
        twice = json.dumps(click(2, event_type="send", send_message_id="s2"))
        lines = [send[:-1] + ', "content": ' + spaced + "}",
                 json.dumps(click(1, send_message_id="s1")),
                 twice[:-1] + ', "content": {"v": 1}, "content": {"v": 2}}',
                 json.dumps(click(3, send_message_id="s2"))]
        self.post("\n".join(lines[:2]) + "\n")
        self.post("\n".join(lines[2:]) + "\n")
        got = by_n(self.sink.wait_messages("/c", 4))
        want = {"subject": 'Sale \u00e9 "now"', "n": 15,
                "parts": [{"t": "a/b"}]}
        self.assertEqual([got[n].get("content") for n in range(4)],
                         [want, want, {"v": 2}, {"v": 2}])
        self.post(json.dumps(click(4, send_message_id="s1")))
        self.assertEqual(self.sink.wait_messages("/c", 5)[4]["content"], want)

    def test_what_cannot_be_stored_is_logged_and_the_event_still_routed(
            self):
        """A send's content without a usable send_message_id, or an
        import's profile without a usable list_id, cannot be stored: a
        warning says what and why (at most a line a second, counting the
        rest), and the events are routed all the same."""
        self.start({"h": hook_src(self.sink.url("/c"),
                                  ("send", "import_api"))})
        sends = [click(i, event_type="send", send_message_id=bad,
                       content={"subject": "x"})
                 for i, bad in enumerate([-1, 1.5, "", True])]
        imports = [bare(4, event_type="import_api", profile_id="p4",
                        list_id="x", profile={"email": "a@example.com"})]
        self.post(sends + imports)
        self.assertEqual(len(self.sink.wait_messages("/c", 5)), 5)
        line = self.hookd.wait_log("not_stored=content")
        self.assertIn("events=1", line)
        self.assertIn("usable send_message_id", line)
        time.sleep(1.1)
        self.post(imports)
        line = self.hookd.wait_log("not_stored=profile")
        self.assertIn("events=5", line)  # 3 sends and 1 import held back
        self.assertIn("usable list_id", line)
        # Held back and followed by nothing: logged when hookd stops.
        self.post(sends[:2])
        self.assertEqual(len(self.sink.wait_messages("/c", 8)), 8)
        self.assertEqual(self.hookd.stop(), 0)
        lines = [l for l in self.hookd.drain_log() if "not_stored=" in l]
        self.assertEqual(len(lines), 3, lines)  # the two above, then this
        self.assertIn("not_stored=content events=2", lines[2])

    def test_stored_content_is_attached_as_its_text(self):
        """A hook without shape attaches stored content as the text it was
        stored as: the send's key order stays, and content with more
        values than a hook may encode still goes out whole."""
        shaped = 'shape = function(m) return {n = m.custom_data.n} end'
        self.start({"h": hook_src(self.sink.url("/c"), ("send", "click"),
                                  "content = true"),
                    # decodes the same content first, for its own messages
                    "a": hook_src(self.sink.url("/s"), ("send", "click"),
                                  "content = true, " + shaped)})
        content = ('{"z": 1, "a": [true], "m": ['
                   + ",".join("0" for _ in range(300000)) + ']}')
        send = json.dumps(click(0, event_type="send", send_message_id="s9"))
        self.post(send[:-1] + ', "content": ' + content + "}\n" +
                  json.dumps(click(1, send_message_id="s9")) + "\n" +
                  json.dumps(click(2, send_message_id="s9")) + "\n")
        self.post([click(3, send_message_id="s9")])
        got = by_n(self.sink.wait_messages("/c", 4))
        for n in (1, 2, 3):
            self.assertEqual(list(got[n]["content"]), ["z", "a", "m"])
            self.assertEqual(len(got[n]["content"]["m"]), 300000)
        self.assertEqual(self.hookd.counters("h")["dead"], 0)
        self.assertEqual(len(self.sink.wait_messages("/s", 4)), 4)

    def test_content_send_message_id_inside_event_data(self):
        """The repository's sample events (tests/fixtures/sample-1k.ndjson,
        click.json) carry send_message_id only in event_data; content must
        reach later events of that shape too."""
        self.start({"h": hook_src(self.sink.url("/ed"), ("send", "click"),
                                  "content = true")})
        content = {"email": {"subject": "Offer"}}
        send = click(0, event_type="send", content=content)
        send["event_data"]["send_message_id"] = "ed-1"
        later = click(1)
        later["event_data"]["send_message_id"] = "ed-1"
        self.post(send)
        self.sink.wait_messages("/ed", 1)
        self.post(later)
        got = self.sink.wait_messages("/ed", 2)
        self.assertEqual(got[1].get("content"), content,
                         "content for event_data.send_message_id")

    def test_content_api_stores_one_or_a_list(self):
        self.start({"h": hook_src(self.sink.url("/api"), ("click",),
                                  "content = true")})
        self.assertEqual(self.store_content(
            {"send_message_id": "one", "content": {"k": 1}}), {"stored": 1})
        self.assertEqual(self.store_content(
            [{"send_message_id": "two", "content": {"k": 2}},
             {"send_message_id": 77, "content": {"k": 3}},
             {"send_message_id": "one", "content": {"k": 4}}]),
            {"stored": 3})
        self.post([click(0, send_message_id="one"),
                   click(1, send_message_id="two"),
                   click(2, send_message_id=77),
                   click(3, send_message_id="77")])
        got = self.sink.wait_messages("/api", 4)
        self.assertEqual([m["content"] for m in got],
                         [{"k": 4}, {"k": 2}, {"k": 3}, {"k": 3}])
        self.assertEqual(self.content_ids(), ["77", "one", "two"])

    def test_content_api_refuses_bad_items_and_stores_none(self):
        self.start({"h": hook_src(self.sink.url("/bad"), ("click",),
                                  "content = true")})
        ok = {"send_message_id": "fine", "content": {"k": 1}}
        cases = [
            ([ok, {"send_message_id": "x"}], 1),
            ([ok, ok, {"send_message_id": "x", "content": [1]}], 2),
            ([{"send_message_id": "", "content": {}}], 0),
            ([{"send_message_id": None, "content": {}}], 0),
            ([{"send_message_id": 1.5, "content": {}}], 0),
            ([ok, "text"], 1),
            ({"content": {"k": 1}}, 0),
        ]
        for body, index in cases:
            status, doc = self.api("POST", "/v1/content", body)
            self.assertEqual(status, 400, body)
            self.assertEqual(doc.get("index"), index, (body, doc))
            self.assertIsInstance(doc.get("error"), str)
        for body in ("", "not json", "[]", "5", '"x"'):
            status, doc = self.api("POST", "/v1/content", body)
            self.assertEqual(status, 400, (body, doc))
            self.assertIsInstance(doc.get("error"), str)
        huge = {"send_message_id": "h", "content": {"m": [0] * 300000}}
        status, doc = self.api("POST", "/v1/content", [ok, huge])
        self.assertEqual((status, doc.get("index")), (400, 1), doc)
        self.assertEqual(doc["error"], "content cannot be stored: more than "
                         "250000 values to encode at m[249999]")
        self.assertEqual(self.api("GET", "/v1/content")[0], 405)
        self.assertEqual(self.content_ids(), [], "nothing stored")
        self.post(click(0, send_message_id="fine"))
        [m] = self.sink.wait_messages("/bad", 1)
        self.assertNotIn("content", m)

    def test_content_lookup_ignores_content_past_its_age(self):
        # The cleanup job runs once at start, then not for an hour: the
        # rows stay, and only the lookup's own age check can hide them.
        self.start({"h": hook_src(self.sink.url("/age"), ("send", "click"),
                                  "content = true")},
                   HOOK_CONTENT_CLEANUP_HOURS=SHORT_HOURS,
                   cleanup_interval_sec=3600)
        before = time.time()
        self.store_content({"send_message_id": "api", "content": {"v": 1}})
        self.post(click(0, event_type="send", send_message_id="ev",
                        content={"v": 2}))
        after = time.time()
        self.post([click(1, send_message_id="api"),
                   click(2, send_message_id="ev")])
        got = self.sink.wait_messages("/age", 3)
        self.assertLess(time.time() - before, SHORT_SEC,
                        "too slow to see the content while it is fresh")
        self.assertEqual([m.get("content") for m in got[1:]],
                         [{"v": 1}, {"v": 2}])
        time.sleep(max(0.0, after + SHORT_SEC + 0.3 - time.time()))
        self.assertEqual(self.content_ids(), ["api", "ev"], "rows kept")
        self.post([click(3, send_message_id="api"),
                   click(4, send_message_id="ev")])
        got = self.sink.wait_messages("/age", 5)
        self.assertEqual([m.get("content") for m in got[3:]], [None, None])
        # Storing it again makes it fresh again.
        self.store_content({"send_message_id": "api", "content": {"v": 3}})
        self.post(click(5, send_message_id="api"))
        got = self.sink.wait_messages("/age", 6)
        self.assertEqual(got[5].get("content"), {"v": 3})

    def test_content_cleanup_job_deletes_old_rows(self):
        self.start({"h": hook_src(self.sink.url("/gc"), ("send", "click"),
                                  "content = true")},
                   HOOK_CONTENT_CLEANUP_HOURS=SHORT_HOURS,
                   cleanup_interval_sec=0.2)
        t0 = time.time()
        self.store_content([{"send_message_id": "a", "content": {"v": 1}},
                            {"send_message_id": "b", "content": {"v": 2}}])
        self.post(click(0, event_type="send", send_message_id="c",
                        content={"v": 3}))
        self.assertEqual(self.content_ids(), ["a", "b", "c"])
        wait_for("content rows deleted", lambda: self.content_ids() == [],
                 timeout=SHORT_SEC + 5)
        self.assertGreaterEqual(time.time() - t0, SHORT_SEC,
                                "deleted before HOOK_CONTENT_CLEANUP_HOURS")
        # Fresh content survives several runs of the job.
        self.store_content({"send_message_id": "d", "content": {"v": 4}})
        time.sleep(0.7)
        self.assertEqual(self.content_ids(), ["d"])
        self.post(click(1, send_message_id="d"))
        [m] = self.sink.wait_messages("/gc", 2)[1:]
        self.assertEqual(m.get("content"), {"v": 4})

    # ---- profiles ----

    def test_profile_api_put_get_delete(self):
        self.start({})
        fields = {"email": "a@example.com", "bonus": 374, "vip": False,
                  "tags": ["x", None], "note": None}
        status, doc = self.api("PUT", "/v1/profiles/111/p1", fields)
        self.assertEqual((status, doc), (200, {"list_id": 111,
                                                "profile_id": "p1",
                                                "fields": fields}))
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1"),
                         (200, {"list_id": 111, "profile_id": "p1",
                                "fields": fields}))
        # PUT replaces all fields; the list id is read as an integer.
        status, doc = self.api("PUT", "/v1/profiles/0111/p1", {"b": 2})
        self.assertEqual((status, doc), (200, {"list_id": 111,
                                                "profile_id": "p1",
                                                "fields": {"b": 2}}))
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1")[1]["fields"],
                         {"b": 2})
        self.assertEqual(self.api("GET", "/v1/profiles/50/p1")[0], 404)
        self.assertEqual(self.api("GET", "/v1/profiles/111/p2")[0], 404)
        self.assertEqual(self.api("DELETE", "/v1/profiles/111/p1"),
                         (200, {"deleted": 1}))
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1")[0], 404)
        self.assertEqual(self.api("DELETE", "/v1/profiles/111/p1")[0], 404)
        self.assertEqual(self.query("SELECT count(*) FROM profiles"), [(0,)])

    def test_profile_delete_removes_the_profile_every_time(self):
        # Each DELETE comes while the store's writer is idle, as from an
        # API client working at its own pace.
        self.start({})
        answers = []
        for i in range(20):
            path = "/v1/profiles/111/d%d" % i
            self.assertEqual(self.api("PUT", path, {"k": i})[0], 200)
            time.sleep(0.05)
            answers.append(self.api("DELETE", path)[0])
        left = [r[0] for r in self.query("SELECT profile_id FROM profiles")]
        self.assertEqual((answers, left), ([200] * 20, []),
                         "DELETE statuses and profiles left behind")

    def test_profile_api_refuses_bad_requests(self):
        self.start({})
        for list_id in ("abc", "-1", "1.5", "99999999999999999999"):
            for method in ("GET", "PUT", "DELETE"):
                status, doc = self.api(method, "/v1/profiles/%s/p1" % list_id,
                                       {"a": 1} if method == "PUT" else None)
                self.assertEqual(status, 400, (method, list_id, doc))
        for body in ("[1, 2]", "5", '"text"', "null", "not json", ""):
            status, doc = self.api("PUT", "/v1/profiles/111/p1", body)
            self.assertEqual(status, 400, (body, doc))
            self.assertIsInstance(doc.get("error"), str)
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1")[0], 404)
        self.assertEqual(self.api("GET", "/v1/profiles/111")[0], 404)
        self.assertEqual(self.api("POST", "/v1/profiles/111/p1", {})[0], 405)

    def test_profile_fields_follow_the_store(self):
        self.start({"h": hook_src(self.sink.url("/pf"), extra="""
  profile_fields = {"email", "bonus", "vip"},""")})
        self.api("PUT", "/v1/profiles/111/p1",
                 {"email": "a@example.com", "bonus": 5, "vip": True,
                  "other": "not asked"})
        self.post([bare(0, profile_id="p1"),
                   bare(1, list_id=50, profile_id="p1"),
                   bare(2, profile_id="p0")])
        self.sink.wait_messages("/pf", 3)
        self.api("PUT", "/v1/profiles/111/p1", {"email": "b@example.com"})
        self.post(bare(3, profile_id="p1"))
        self.sink.wait_messages("/pf", 4)
        self.api("DELETE", "/v1/profiles/111/p1")
        self.post(bare(4, profile_id="p1"))
        got = [m["custom_data"] for m in self.sink.wait_messages("/pf", 5)]
        # p1 of list 50 and p0 of list 111 have no stored profile.
        self.assertEqual(got, [{"email": "a@example.com", "bonus": 5,
                                "vip": True}, {}, {},
                               {"email": "b@example.com"}, {}])
        self.api("PUT", "/v1/profiles/111/p1", {"email": "c@example.com",
                                                "bonus": 7, "vip": False})
        self.post(bare(5, profile_id="p1"))
        m = self.sink.wait_messages("/pf", 6)[5]
        self.assertEqual(m["custom_data"], {"email": "c@example.com",
                                            "bonus": 7, "vip": False})
        # Nothing is added when the event brings custom_data of its own.
        self.post(click(6, profile_id="p1"))
        self.assertEqual(self.sink.wait_messages("/pf", 7)[6]["custom_data"],
                         {"n": 6})

    def test_inline_profile_comes_before_the_store(self):
        self.start({"h": hook_src(self.sink.url("/inl"), extra="""
  profile_fields = {"email", "bonus", "city"},""")})
        self.api("PUT", "/v1/profiles/111/p1",
                 {"email": "stored@example.com", "bonus": 1, "city": "Paris"})
        self.post(bare(0, profile_id="p1",
                       profile={"email": "inline@example.com", "bonus": None}))
        [m] = self.sink.wait_messages("/inl", 1)
        self.assertEqual(m["custom_data"], {"email": "inline@example.com",
                                            "bonus": None, "city": "Paris"})
        self.assertNotIn("profile", m)
        # An inline profile on an event that is not an import changes
        # nothing in the store.
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1")[1]["fields"],
                         {"email": "stored@example.com", "bonus": 1,
                          "city": "Paris"})

    def test_import_events_merge_into_the_profile(self):
        self.start({"h": hook_src(self.sink.url("/imp"), extra="""
  profile_fields = {"email", "tier", "city", "age"},""")})
        self.api("PUT", "/v1/profiles/111/p1",
                 {"email": "old@example.com", "tier": "gold", "city": "Paris"})
        self.post(bare(0, event_type="import_file", profile_id="p1",
                       profile={"email": "new@example.com", "city": None,
                                "age": 30}))
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1"),
                         (200, {"list_id": 111, "profile_id": "p1",
                                "fields": {"email": "new@example.com",
                                           "tier": "gold", "age": 30}}))
        self.post(bare(1, profile_id="p1"))
        [m] = self.sink.wait_messages("/imp", 1)
        self.assertEqual(m["custom_data"], {"email": "new@example.com",
                                            "tier": "gold", "age": 30})
        # A profile that did not exist is created by an import.
        self.post(bare(2, event_type="import_api", profile_id="p2",
                       list_id=50, profile={"email": "p2@example.com",
                                            "gone": None}))
        self.assertEqual(self.api("GET", "/v1/profiles/50/p2")[1]["fields"],
                         {"email": "p2@example.com"})
        # An event that is not an import leaves the store alone, and an
        # import without a profile object changes nothing either.
        self.post([bare(3, event_type="click", profile_id="p2", list_id=50,
                        profile={"email": "click@example.com"}),
                   bare(4, event_type="import_api", profile_id="p2",
                        list_id=50, profile=[1]),
                   bare(5, event_type="import_api", profile_id="p2",
                        list_id=50)])
        self.assertEqual(self.api("GET", "/v1/profiles/50/p2")[1]["fields"],
                         {"email": "p2@example.com"})

    def test_import_merges_like_a_json_merge_patch(self):
        """An import is a JSON merge patch (RFC 7396) on the stored
        profile: objects merge key by key, null removes, arrays and other
        values replace. Events later in the same request and events of
        later requests see the same profile."""
        self.start({"h": hook_src(self.sink.url("/whole"), extra="""
  profile_fields = {"address", "tags"},""")})
        self.api("PUT", "/v1/profiles/111/p1",
                 {"address": {"city": "Paris", "zip": "75001", "floor": 2},
                  "tags": [1, 2]})
        self.post([bare(0, event_type="import_api", profile_id="p1",
                        profile={"address": {"city": "Rome", "floor": None},
                                 "tags": [3]}),
                   bare(1, profile_id="p1")])
        self.post(bare(2, profile_id="p1"))
        got = self.sink.wait_messages("/whole", 2)
        want = {"address": {"city": "Rome", "zip": "75001"}, "tags": [3]}
        self.assertEqual([m["custom_data"] for m in got], [want, want],
                         "same request, then a later request")
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1")[1]["fields"],
                         want)

    def test_import_is_seen_by_later_events_of_the_same_request(self):
        self.start({"h": hook_src(self.sink.url("/same"), extra="""
  profile_fields = {"email", "tier"},""")})
        self.api("PUT", "/v1/profiles/111/p1", {"email": "a@example.com"})
        self.post([bare(0, profile_id="p1"),
                   bare(1, event_type="import_manual", profile_id="p1",
                        profile={"tier": "gold"}),
                   bare(2, profile_id="p1"),
                   bare(3, event_type="import_manual", profile_id="p1",
                        profile={"email": None, "tier": "silver"}),
                   bare(4, profile_id="p1"),
                   bare(5, event_type="import_manual", profile_id="p9",
                        profile={"email": "nine@example.com"}),
                   bare(6, profile_id="p9")])
        got = self.sink.wait_messages("/same", 4)
        self.assertEqual([m["custom_data"] for m in got],
                         [{"email": "a@example.com"},
                          {"email": "a@example.com", "tier": "gold"},
                          {"tier": "silver"},
                          {"email": "nine@example.com"}])
        self.assertEqual(self.api("GET", "/v1/profiles/111/p1")[1]["fields"],
                         {"tier": "silver"})
        self.assertEqual(self.api("GET", "/v1/profiles/111/p9")[1]["fields"],
                         {"email": "nine@example.com"})

    # ---- catalog ----

    def names_hook(self, path):
        return hook_src(self.sink.url(path), extra="""
  custom_data = {campaign = "{{campaign_name}}", subid = "{{campaign_subid}}",
                 database = "{{database_name}}", segment = "{{segment_name}}",
                 message = "{{message_name}}",
                 resource = "{{resource_name}}"},""")

    def names_event(self, i, campaign=973, segment=41):
        return bare(i, event_data={"campaign_id": campaign, "message_id": 17,
                                   "segment_id": segment, "resource_id": 3})

    def test_catalog_is_loaded_from_the_file(self):
        self.start({"h": self.names_hook("/cat")})
        with open(os.path.join(FIXTURES, "catalog.json")) as f:
            want = json.load(f)
        self.assertEqual(self.api("GET", "/v1/catalog"), (200, want))
        rows = self.query("SELECT kind, id, source FROM catalog")
        self.assertEqual(len(rows), sum(len(v) for v in want.values()))
        self.assertEqual({r[2] for r in rows}, {"file"})
        self.post(self.names_event(0))
        [m] = self.sink.wait_messages("/cat", 1)
        self.assertEqual(m["custom_data"], {
            "campaign": "Black Friday", "subid": "bf-2026",
            "database": "Customers", "segment": "Active buyers",
            "message": "BF main", "resource": "Main newsletter"})

    def test_catalog_api_changes_names_at_once(self):
        self.start({"h": self.names_hook("/names")})
        status, doc = self.api("PUT", "/v1/catalog/campaigns/973",
                               {"name": "Black Friday II"})
        self.assertEqual((status, doc), (200, {
            "kind": "campaigns", "id": "973",
            "entry": {"name": "Black Friday II"}}))
        self.assertEqual(self.api("PUT", "/v1/catalog/segments/0041",
                                  {"name": "Buyers"})[1]["id"], "41")
        self.assertEqual(self.api("PUT", "/v1/catalog/campaigns/9000",
                                  {"name": "New", "subid": "n-1"})[0], 200)
        self.assertEqual(self.api("PUT", "/v1/catalog/databases/111",
                                  {"name": "Clients"})[0], 200)
        self.post([self.names_event(0), self.names_event(1, campaign=9000)])
        got = self.sink.wait_messages("/names", 2)
        self.assertEqual([(m["custom_data"]["campaign"],
                           m["custom_data"]["subid"],
                           m["custom_data"]["segment"],
                           m["custom_data"]["database"]) for m in got],
                         [("Black Friday II", "", "Buyers", "Clients"),
                          ("New", "n-1", "Buyers", "Clients")])
        cat = self.api("GET", "/v1/catalog")[1]
        self.assertEqual(cat["campaigns"]["973"], {"name": "Black Friday II"})
        self.assertEqual(cat["campaigns"]["9000"],
                         {"name": "New", "subid": "n-1"})
        self.assertEqual(cat["campaigns"]["974"],
                         {"name": "Cyber Monday", "subid": "cm-2026"})
        self.assertEqual(cat["segments"]["41"], {"name": "Buyers"})
        # A second change is seen as soon as it is answered.
        self.api("PUT", "/v1/catalog/campaigns/973", {"name": "BF III"})
        self.post(self.names_event(2))
        m = self.sink.wait_messages("/names", 3)[2]
        self.assertEqual(m["custom_data"]["campaign"], "BF III")

    def test_catalog_api_delete_removes_an_entry(self):
        self.start({"h": self.names_hook("/del")})
        self.api("PUT", "/v1/catalog/campaigns/9000", {"name": "Temp"})
        status, doc = self.api("DELETE", "/v1/catalog/campaigns/09000")
        self.assertEqual((status, doc), (200, {
            "kind": "campaigns", "id": "9000", "entry": None}))
        self.assertEqual(self.api("DELETE", "/v1/catalog/campaigns/9000")[0],
                         404)
        self.assertEqual(self.api("DELETE", "/v1/catalog/campains/1")[0], 400)
        self.assertNotIn("9000", self.api("GET", "/v1/catalog")[1]
                         .get("campaigns", {}))
        self.post(self.names_event(0, campaign=9000))
        m = self.sink.wait_messages("/del", 1)[0]
        self.assertEqual(m["custom_data"]["campaign"], "")

    def test_catalog_api_refuses_bad_requests(self):
        self.start({})
        before = self.api("GET", "/v1/catalog")[1]
        bad = [("PUT", "/v1/catalog/campains/973", {"name": "x"}),
               ("PUT", "/v1/catalog/campaigns/abc", {"name": "x"}),
               ("PUT", "/v1/catalog/campaigns/-5", {"name": "x"}),
               ("PUT", "/v1/catalog/campaigns/1.5", {"name": "x"}),
               ("PUT", "/v1/catalog/campaigns/973", {"name": 5}),
               ("PUT", "/v1/catalog/campaigns/973", ["x"]),
               ("PUT", "/v1/catalog/campaigns/973", "not json"),
               ("PUT", "/v1/catalog/campaigns/973", "null"),
               ("PUT", "/v1/catalog/campaigns/973", "")]
        for method, path, body in bad:
            status, doc = self.api(method, path, body)
            self.assertEqual(status, 400, (path, body, doc))
            self.assertIsInstance(doc.get("error"), str)
        self.assertEqual(self.api("PUT", "/v1/catalog/campaigns",
                                  {"name": "x"})[0], 404)
        self.assertEqual(self.api("POST", "/v1/catalog", {})[0], 405)
        self.assertEqual(self.api("GET", "/v1/catalog")[1], before)

    def test_catalog_api_entry_wins_over_the_file_across_restarts(self):
        self.scratch = tempfile.mkdtemp(prefix="hookd-stores-")
        path = os.path.join(self.scratch, "catalog.json")
        with open(os.path.join(FIXTURES, "catalog.json")) as f:
            original = json.load(f)
        with open(path, "w") as f:
            json.dump(original, f)
        hooks = {"h": self.names_hook("/cr")}
        first = self.start(hooks, catalog=path)
        self.assertEqual(self.api("PUT", "/v1/catalog/campaigns/973",
                                  {"name": "From the API"})[0], 200)
        self.assertEqual(first.stop(), 0)
        self.hookd = None

        edited = json.loads(json.dumps(original))
        edited["campaigns"]["973"] = {"name": "File 973 v2", "subid": "f2"}
        edited["campaigns"]["974"]["name"] = "File 974 v2"
        edited["segments"]["43"] = {"name": "New segment"}
        with open(path, "w") as f:
            json.dump(edited, f)
        self.start(hooks, workdir=first.dir, catalog=path)
        cat = self.api("GET", "/v1/catalog")[1]
        self.assertEqual(cat["campaigns"]["973"], {"name": "From the API"})
        self.assertEqual(cat["campaigns"]["974"],
                         {"name": "File 974 v2", "subid": "cm-2026"})
        self.assertEqual(cat["segments"]["43"], {"name": "New segment"})
        self.assertEqual(cat["databases"], original["databases"])
        self.assertEqual(
            dict(((k, i), s) for k, i, s in self.query(
                "SELECT kind, id, source FROM catalog WHERE kind = "
                "'campaigns' AND id IN ('973', '974')")),
            {("campaigns", "973"): "api", ("campaigns", "974"): "file"})
        self.post([self.names_event(0, campaign=973),
                   self.names_event(1, campaign=974, segment=43)])
        got = self.sink.wait_messages("/cr", 2)
        self.assertEqual([(m["custom_data"]["campaign"],
                           m["custom_data"]["subid"],
                           m["custom_data"]["segment"]) for m in got],
                         [("From the API", "", "Active buyers"),
                          ("File 974 v2", "cm-2026", "New segment")])

        # A restart with the file unchanged keeps both.
        second = self.hookd
        self.assertEqual(second.stop(), 0)
        self.hookd = None
        self.start(hooks, workdir=first.dir, catalog=path)
        self.assertEqual(self.api("GET", "/v1/catalog")[1], cat)

    # ---- bodies that are too large ----

    def test_413_splits_the_batch_in_halves_until_it_fits(self):
        # Messages of about 2.2 kB: four fit in 10000 bytes, five do not.
        self.sink_limit("/big", 10000)
        self.start({"h": hook_src(self.sink.url("/big"), batch_size=16,
                                  timeout_sec=0.3)})
        self.post([padded(i, 2000) for i in range(16)])
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 16,
                             "sent=16")
        reqs = self.sink.requests("/big")
        sizes = [r["messages"] for r in reqs]
        self.assertEqual(sizes, [16, 8, 4, 4, 4, 4], "requests in halves")
        for r in reqs[:2]:
            self.assertGreater(r["len"], 10000)
        for r in reqs[2:]:
            self.assertLessEqual(r["len"], 10000)
        delivered = [m["custom_data"]["n"] for r in reqs[2:]
                     for m in json.loads(r["body"])]
        self.assertEqual(delivered, list(range(16)), "each once, in order")
        c = self.hookd.counters("h")
        self.assertEqual((c["dead"], c["queued"], c["retried"]), (0, 0, 0))
        self.assertEqual(self.dead_letters("h"), [])
        self.assertIn("too_large=1", self.hookd.wait_log("too_large=1"))

    def test_413_halves_leave_without_waiting_for_the_batch_timeout(self):
        """The batch was full and due when it was refused: its halves go
        at once, not timeout_sec after their first message arrived."""
        self.sink_limit("/due", 10000)
        self.start({"h": hook_src(self.sink.url("/due"), batch_size=16,
                                  timeout_sec=10)})
        self.post([padded(i, 2000) for i in range(16)])
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 16,
                             "sent=16 well before timeout_sec", timeout=4)

    def test_413_for_one_message_makes_a_dead_letter_at_once(self):
        self.sink_limit("/one", 1000)
        self.start({"h": hook_src(self.sink.url("/one"))})
        self.post(padded(0, 2000))
        h = self.hookd.wait_hook("h", lambda h: h["counters"]["dead"] == 1,
                                 "dead=1")
        self.assertEqual(h["counters"]["retried"], 0)
        [letter] = self.dead_letters("h")
        self.assertIn("413", letter["reason"])
        self.assertEqual(letter["attempts"], 1)
        self.assertEqual(letter["message"]["custom_data"]["n"], 0)
        time.sleep(RETRY_PERIOD * 3)
        self.assertEqual(len(self.sink.requests("/one")), 1, "not retried")
        # The hook goes on with the next message.
        self.post(click(1))
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 1,
                             "sent=1")
        [m] = self.sink.messages("/one")[1:]
        self.assertEqual(m["custom_data"], {"n": 1})

    def test_413_isolates_the_one_message_too_large(self):
        self.sink_limit("/mix", 1000)
        self.start({"h": hook_src(self.sink.url("/mix"), batch_size=4,
                                  timeout_sec=0.3)})
        self.post([click(0), click(1), padded(2, 2000), click(3)])
        self.hookd.wait_hook("h", lambda h: h["counters"]["dead"] == 1 and
                             h["counters"]["sent"] == 3, "dead=1 sent=3")
        reqs = self.sink.requests("/mix")
        batches = [[m["custom_data"]["n"] for m in json.loads(r["body"])]
                   for r in reqs]
        self.assertEqual(batches, [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]])
        self.assertEqual([m["custom_data"]["n"] for r in reqs
                          if r["len"] <= 1000 for m in json.loads(r["body"])],
                         [0, 1, 3])
        [letter] = self.dead_letters("h")
        self.assertEqual(letter["message"]["custom_data"]["n"], 2)
        self.assertIn("413", letter["reason"])

    def test_max_body_bytes_splits_batches_before_sending(self):
        self.sink_limit("/mb", 10000)
        self.start({"h": hook_src(self.sink.url("/mb"), batch_size=16,
                                  timeout_sec=0.3,
                                  send_extra=", max_body_bytes = 10000")})
        self.post([padded(i, 2000) for i in range(16)])
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 16,
                             "sent=16")
        reqs = self.sink.requests("/mb")
        self.assertEqual([r["messages"] for r in reqs], [4, 4, 4, 4])
        self.assertTrue(all(r["len"] <= 10000 for r in reqs))
        self.assertEqual([m["custom_data"]["n"] for m in
                          self.sink.messages("/mb")], list(range(16)))
        self.assertEqual(self.hookd.counters("h")["failed"], 0, "no 413")

    def test_max_body_bytes_parts_leave_without_waiting(self):
        """A full batch split by max_body_bytes is due as a whole: every
        part goes at once, not timeout_sec after its first message."""
        self.start({"h": hook_src(self.sink.url("/now"), batch_size=16,
                                  timeout_sec=10,
                                  send_extra=", max_body_bytes = 10000")})
        self.post([padded(i, 2000) for i in range(16)])
        self.hookd.wait_hook("h", lambda h: h["counters"]["sent"] == 16,
                             "sent=16 well before timeout_sec", timeout=4)

    def test_max_body_bytes_exact_fit(self):
        # Two messages whose batch is exactly max_body_bytes go together.
        self.start({"h": hook_src(self.sink.url("/fit"), batch_size=16,
                                  timeout_sec=0.3)})
        self.post([padded(0, 500), padded(1, 500)])
        [req] = wait_for("probe batch", lambda: self.sink.requests("/fit"))
        exact = req["len"]
        self.hookd.write_hook("h", hook_src(
            self.sink.url("/fit2"), batch_size=16, timeout_sec=0.3,
            send_extra=", max_body_bytes = %d" % exact))
        self.hookd.wait_hook("h", lambda h: h["version"] == 2, "reloaded")
        self.post([padded(0, 500), padded(1, 500)])
        [req] = wait_for("batch", lambda: self.sink.requests("/fit2"))
        self.assertEqual((req["messages"], req["len"]), (2, exact))
        self.hookd.write_hook("h", hook_src(
            self.sink.url("/fit3"), batch_size=16, timeout_sec=0.3,
            send_extra=", max_body_bytes = %d" % (exact - 1)))
        self.hookd.wait_hook("h", lambda h: h["version"] == 3, "reloaded")
        self.post([padded(0, 500), padded(1, 500)])
        reqs = wait_for("two batches", lambda: len(self.sink.requests(
            "/fit3")) == 2 and self.sink.requests("/fit3"))
        self.assertEqual([r["messages"] for r in reqs], [1, 1])

    def test_max_body_bytes_oversized_message_dead_without_sending(self):
        self.start({"h": hook_src(self.sink.url("/over"), batch_size=10,
                                  timeout_sec=0.3,
                                  send_extra=", max_body_bytes = 1000")})
        self.post([click(0), padded(1, 2000), click(2)])
        h = self.hookd.wait_hook("h", lambda h: h["counters"]["dead"] == 1 and
                                 h["counters"]["sent"] == 2, "dead=1 sent=2")
        self.assertEqual((h["counters"]["retried"], h["counters"]["queued"]),
                         (0, 0))
        reqs = self.sink.requests("/over")
        self.assertTrue(all(r["len"] <= 1000 for r in reqs))
        self.assertEqual([m["custom_data"]["n"] for m in
                          self.sink.messages("/over")], [0, 2])
        [letter] = self.dead_letters("h")
        self.assertEqual(letter["message"]["custom_data"]["n"], 1)
        self.assertIn("max_body_bytes", letter["reason"])
        self.assertEqual(letter["attempts"], 0, "never sent")


    # ---- limits and odd keys ----

    def test_request_whose_messages_exceed_max_pending_bytes_is_refused(self):
        """Twenty hooks turn one request into twenty times its size in
        messages: past max_pending_bytes the request is refused whole with
        413, nothing of it is kept, and a smaller request still goes."""
        hooks = {"h%02d" % i: hook_src(self.sink.url("/many"))
                 for i in range(20)}
        self.start(hooks, max_pending_bytes=1024 * 1024)
        pad = "x" * 1000
        big = [click(i, pad=pad) for i in range(200)]  # ~240 KB of events
        status, doc = self.hookd.post_events(big)
        self.assertEqual(status, 413, doc)
        self.assertIn("max_pending_bytes", doc["error"])
        self.assertEqual(self.query("SELECT count(*) FROM outbox"), [(0,)])
        self.assertEqual(self.query("SELECT count(*) FROM history"), [(0,)])
        self.post([click(i, pad=pad) for i in range(10)])
        self.sink.wait_messages("/many", 200)
        counts = collections.Counter(
            m["custom_data"]["n"] for m in self.sink.messages("/many"))
        self.assertEqual(counts, {i: 20 for i in range(10)})

    def test_ids_with_nul_are_refused_not_cut(self):
        """A NUL inside an id must not address the record named by the part
        before it."""
        self.start({"h": hook_src(self.sink.url("/nul"))})
        self.api("PUT", "/v1/profiles/1/p", {"email": "victim@x"})
        self.post([bare(0, event_type="import_api", list_id=1,
                        profile_id="p\u0000attacker",
                        profile={"email": "attacker@x"})])
        status, doc = self.api("POST", "/v1/content",
                               {"send_message_id": "a\u0000b",
                                "content": {"x": 1}})
        self.assertEqual(status, 400, doc)
        self.assertEqual(self.api("GET", "/v1/profiles/1/p")[1]["fields"],
                         {"email": "victim@x"})
        status, _ = http("POST", self.hookd.base +
                         "/v1/dead-letters/retry?hook=h%00x")
        self.assertEqual(status, 400)


if __name__ == "__main__":
    harness.main()
