"""Managing hooks through the API: activate and stop (stored, so neither a
restart nor a reload of the file undoes them; a stopped hook captures
nothing and holds its queue), clone (a new file, stopped until activated),
delete (the file to the trash, the queue to dead letters or discarded),
test sends (an example event through the hook's shaping and transport,
bypassing filters and batching), 405 answers with Allow, and the API
token on every admin endpoint."""

import json
import os
import time
import unittest

import harness
from harness import Hookd, Sink, bare, click, http, http_hook, wait_for


def post(hookd, path, body=b"", headers=None):
    return http("POST", hookd.base + path, body, headers)


class HookOps(harness.SinkTest):
    def start(self, hooks, workdir=None, config=None):
        self.hookd = Hookd(hooks=hooks, workdir=workdir, config=config)
        return self.hookd

    def slow_hook(self, path="/a", extra=""):
        """A hook whose partial batches wait one second."""
        return """return {
  name = "Hook A", database = "all", actions = {"click"},
  send = {type = "http", url = %s, batch_size = 100, timeout_sec = 1},
  %s
}""" % (json.dumps(self.sink.url(path)), extra)

    def test_stop_holds_queue_and_survives_restart_and_reload(self):
        h = self.start({"a": self.slow_hook()})
        self.assertEqual(h.post_events([click(i) for i in range(3)])[0], 202)
        status, doc = post(h, "/v1/hooks/a/stop")
        self.assertEqual((status, doc["state"], doc["active"]),
                         (200, "stopped", False))
        self.assertEqual(doc["counters"]["queued"], 3)
        h.post_events([click(10)])
        time.sleep(1.5)
        self.assertEqual(self.sink.messages("/a"), [])
        self.assertEqual(h.counters("a")["matched"], 3)
        # A reload of the file does not undo the stored state.
        h.write_hook("a", self.slow_hook(extra="-- edited"))
        h.wait_hook("a", lambda x: x["version"] == 2, "the reload")
        self.assertEqual(h.hook("a")["state"], "stopped")
        h.stop()
        h = self.start(None, workdir=h.dir)
        self.assertEqual(h.hook("a")["state"], "stopped")
        self.assertEqual(h.counters("a")["queued"], 3)
        time.sleep(1.3)
        self.assertEqual(self.sink.messages("/a"), [])
        status, doc = post(h, "/v1/hooks/a/activate")
        self.assertEqual((status, doc["state"]), (200, "running"))
        got = self.sink.wait_messages("/a", 3)
        self.assertEqual(sorted(m["custom_data"]["n"] for m in got),
                         [0, 1, 2])
        h.post_events([click(11)])
        self.sink.wait_messages("/a", 4)

    def test_file_active_false_applies_until_the_api_decides(self):
        h = self.start({"a": self.slow_hook(extra="active = false")})
        self.assertEqual(h.hook("a")["state"], "stopped")
        h.write_hook("a", self.slow_hook(extra="active = true"))
        h.wait_hook("a", lambda x: x["state"] == "running", "file active")
        post(h, "/v1/hooks/a/stop")
        h.write_hook("a", self.slow_hook(extra="active = true -- again"))
        h.wait_hook("a", lambda x: x["version"] == 3, "the reload")
        self.assertEqual(h.hook("a")["state"], "stopped")

    def test_unknown_hook_and_bad_ids(self):
        h = self.start({"a": self.slow_hook()})
        for path in ("/v1/hooks/nope/stop", "/v1/hooks/nope/activate",
                     "/v1/hooks/nope/clone", "/v1/hooks/nope/test",
                     "/v1/hooks/nope/export",
                     "/v1/hooks/" + "x" * 200 + "/stop"):
            status, doc = post(h, path, {"id": "b", "name": "B"})
            self.assertEqual(status, 404, path)
            self.assertIn("error", doc)
        # An encoded '/' never reaches a hook: the path is refused whole.
        for path in ("/v1/hooks/..%2Fa/stop", "/v1/hooks/a%2Fstop"):
            status, doc = post(h, path, {"id": "b", "name": "B"})
            self.assertEqual(status, 400, path)
            self.assertIn("'/'", doc["error"])
        self.assertEqual(h.hook("a")["state"], "running")
        self.assertEqual(http("DELETE", h.base + "/v1/hooks/nope")[0], 404)
        self.assertEqual(post(h, "/v1/hooks/a/explode")[0], 404)

    def test_methods_not_allowed_name_the_allowed_ones(self):
        h = self.start({"a": self.slow_hook()})
        cases = [("POST", "/v1/hooks", "GET, HEAD"),
                 ("PUT", "/v1/hooks/a", "GET, HEAD, DELETE"),
                 ("GET", "/v1/hooks/a/stop", "POST"),
                 ("DELETE", "/v1/hooks/a/export", "GET, HEAD, POST"),
                 ("GET", "/v1/hooks/a/export/pause", "POST"),
                 ("POST", "/healthz", "GET, HEAD"),
                 ("GET", "/v1/events", "POST"),
                 ("PUT", "/metrics", "GET, HEAD"),
                 ("POST", "/v1/dead-letters", "GET, HEAD"),
                 ("GET", "/v1/dead-letters/5", "DELETE"),
                 ("GET", "/v1/dead-letters/retry", "POST"),
                 ("GET", "/v1/dead-letters/5/retry", "POST"),
                 ("GET", "/v1/content", "POST"),
                 ("POST", "/v1/profiles/1/p", "GET, HEAD, PUT, DELETE"),
                 ("POST", "/v1/catalog", "GET, HEAD"),
                 ("PATCH", "/v1/catalog/campaigns/1", "PUT, DELETE")]
        for method, path, allow in cases:
            status, _, headers = harness.http_full(method, h.base + path)
            self.assertEqual(status, 405, path)
            self.assertEqual(headers.get("Allow"), allow, path)

    def test_clone_writes_a_stopped_copy_with_the_new_name(self):
        h = self.start({"a": self.slow_hook(
            extra='custom_data = {who = "{{event_date_ymd}}"}')})
        status, doc = post(h, "/v1/hooks/a/clone",
                           {"id": "a_copy", "name": 'Copy "of" A\\'})
        self.assertEqual(status, 201, doc)
        self.assertEqual((doc["id"], doc["name"], doc["state"]),
                         ("a_copy", 'Copy "of" A\\', "stopped"))
        path = os.path.join(h.plugins, "a_copy.lua")
        self.assertTrue(os.path.exists(path))
        self.assertEqual(h.hook("a")["name"], "Hook A")
        h.post_events([bare(1)])
        self.sink.wait_messages("/a", 1, timeout=3)
        self.assertEqual(h.counters("a_copy")["matched"], 0)
        post(h, "/v1/hooks/a_copy/activate")
        h.post_events([bare(2)])
        got = self.sink.wait_messages("/a", 3, timeout=5)
        self.assertEqual([m["custom_data"]["who"] for m in got],
                         ["2026-11-01"] * 3)
        # The clone survives a restart, still with its own name.
        h.stop()
        h = self.start(None, workdir=h.dir)
        self.assertEqual(h.hook("a_copy")["name"], 'Copy "of" A\\')
        self.assertEqual(h.hook("a_copy")["state"], "running")

    def test_clone_refusals(self):
        h = self.start({"a": self.slow_hook(), "b": self.slow_hook("/b")})
        cases = [({"id": "b", "name": "B"}, 409),
                 ({"id": "../evil", "name": "E"}, 400),
                 ({"id": "x y", "name": "E"}, 400),
                 ({"id": "c"}, 400),
                 ({"id": "c", "name": ""}, 400),
                 ({"id": "c", "name": "bad\nname"}, 400),
                 ({"id": "c", "name": "n" * 300}, 400),
                 ({"id": 5, "name": "E"}, 400),
                 ([1, 2], 400), (b"not json", 400)]
        for body, want in cases:
            status, doc = post(h, "/v1/hooks/a/clone", body)
            self.assertEqual(status, want, body)
            self.assertIn("error", doc)
        self.assertEqual(sorted(os.listdir(h.plugins)),
                         ["a.lua", "b.lua", "lib"])
        # A file that is on disk but not loaded still counts as taken.
        with open(os.path.join(h.plugins, "c.lua"), "w") as f:
            f.write("return 42")
        h.wait_hook("c", lambda x: x["state"] == "broken", "broken c")
        self.assertEqual(post(h, "/v1/hooks/a/clone",
                              {"id": "c", "name": "C"})[0], 409)
        self.assertEqual(post(h, "/v1/hooks/c/clone",
                              {"id": "d", "name": "D"})[0], 409)

    def test_racing_clones_to_one_id_make_one_hook(self):
        import concurrent.futures
        h = self.start({"a": self.slow_hook()})

        def clone(i):
            return post(h, "/v1/hooks/a/clone",
                        {"id": "race", "name": "r%d" % i})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(clone, range(8)))
        won = [doc for status, doc in answers if status == 201]
        self.assertEqual(len(won), 1, answers)
        self.assertEqual(sorted(status for status, _ in answers),
                         [201] + [409] * 7)
        self.assertEqual(h.hook("race")["name"], won[0]["name"])
        time.sleep(0.4)
        self.assertEqual(h.hook("race")["version"], 1)
        self.assertEqual([f for f in os.listdir(h.plugins)
                          if f.startswith("race")], ["race.lua"])

    def test_clone_keeps_a_shebang_and_refuses_a_file_that_does_not_load(
            self):
        h = self.start({"a": "#!/usr/bin/env lua\n" + self.slow_hook()})
        status, doc = post(h, "/v1/hooks/a/clone", {"id": "b", "name": "B"})
        self.assertEqual((status, doc.get("state")), (201, "stopped"), doc)
        h.write_hook("a", self.slow_hook(extra="x = = 1"))
        h.wait_hook("a", lambda x: x["error"], "the failed reload")
        status, doc = post(h, "/v1/hooks/a/clone", {"id": "c", "name": "C"})
        self.assertEqual(status, 409, doc)
        self.assertIn("does not load", doc["error"])
        self.assertFalse(os.path.exists(os.path.join(h.plugins, "c.lua")))

    def test_odd_parameters_are_refused(self):
        h = self.start({"a": self.slow_hook()})
        status, doc = post(h, "/v1/hooks/a/clone",
                           {"id": "b", "name": "B", "extra": 1})
        self.assertEqual(status, 400, doc)
        self.assertIn("extra", doc["error"])
        status, doc = http("DELETE", h.base + "/v1/hooks/a?discard=yes")
        self.assertEqual(status, 400, doc)
        self.assertEqual(h.hook("a")["state"], "running")
        status, _, headers = harness.http_full("GET", h.base + "/v1/hooks",
                                               headers={})
        self.assertEqual(status, 200)

    def test_delete_keeps_queue_as_dead_letters(self):
        h = self.start({"a": self.slow_hook(), "b": self.slow_hook("/b")})
        post(h, "/v1/hooks/a/stop")
        h.post_events([click(i) for i in range(3)])
        time.sleep(0.3)
        post(h, "/v1/hooks/a/activate")  # stop captures nothing
        post(h, "/v1/hooks/a/stop")
        h.post_events([click(i) for i in range(3)])
        status, doc = post(h, "/v1/hooks/a/activate")
        h.post_events([click(i) for i in range(4, 6)])
        post(h, "/v1/hooks/a/stop")
        queued = h.counters("a")["queued"]
        self.assertGreater(queued, 0)
        status, doc = http("DELETE", h.base + "/v1/hooks/a")
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["dead_letters"], queued)
        self.assertTrue(doc["file"].startswith(
            os.path.join(h.dir, "data", "trash")))
        self.assertTrue(os.path.exists(doc["file"]))
        self.assertFalse(os.path.exists(os.path.join(h.plugins, "a.lua")))
        self.assertEqual(http("GET", h.base + "/v1/hooks/a")[0], 404)
        ids = [x["id"] for x in http("GET", h.base + "/v1/hooks")[1]["hooks"]]
        self.assertEqual(ids, ["b"])
        _, dl = http("GET", h.base + "/v1/dead-letters?hook=a")
        self.assertEqual(len(dl["items"]), queued)
        self.assertIn("deleted", dl["items"][0]["reason"])
        # The deleted hook captures nothing; the other goes on.
        h.post_events([click(9)])
        self.sink.wait_messages("/b", 1)
        time.sleep(1.3)
        self.assertEqual(self.sink.messages("/a"), [])
        # Its dead letters cannot be sent to a hook that is gone.
        self.assertEqual(post(h, "/v1/dead-letters/retry?hook=a")[0], 409)
        # A restart does not bring it back.
        h.stop()
        h = self.start(None, workdir=h.dir)
        self.assertIsNone(h.hook("a"))

    def test_delete_with_discard_drops_the_queue(self):
        h = self.start({"a": self.slow_hook()})
        post(h, "/v1/hooks/a/stop")
        post(h, "/v1/hooks/a/activate")
        h.post_events([click(i) for i in range(4)])
        post(h, "/v1/hooks/a/stop")
        status, doc = http("DELETE", h.base + "/v1/hooks/a?discard=true")
        self.assertEqual((status, doc["discarded"]), (200, 4), doc)
        _, dl = http("GET", h.base + "/v1/dead-letters?hook=a")
        self.assertEqual(dl["items"], [])
        con = harness.sqlite_rows(h.db_path(),
                                  "SELECT count(*) FROM outbox")
        self.assertEqual(con, [(0,)])
        # A new file with the same id is a new hook.
        h.write_hook("a", self.slow_hook())
        h.wait_hook("a", lambda x: x["state"] == "running", "a is back")
        self.assertEqual(h.counters("a")["queued"], 0)

    def test_delete_waits_for_the_delivery_in_flight(self):
        self.sink.script("/a", default={"status": 200, "delay": 1.0})
        h = self.start({"a": http_hook(self.sink.url("/a"))})
        h.post_events([click(1)])
        wait_for("the request in flight",
                 lambda: len(self.sink.requests("/a")) == 1, 3)
        t0 = time.monotonic()
        status, doc = http("DELETE", h.base + "/v1/hooks/a")
        self.assertEqual(status, 200, doc)
        self.assertGreater(time.monotonic() - t0, 0.3)
        # Delivered, so not a dead letter as well.
        self.assertEqual(doc["dead_letters"], 0)
        self.assertEqual(len(self.sink.messages("/a")), 1)


class TestSends(harness.SinkTest):
    def test_example_event_is_shaped_and_sent_at_once(self):
        extra = '''custom_data = {day = "{{event_date_ymd}}"},
  filter = function(e) return false end,
  shape = function(m) m.shaped = true return m end'''
        self.hookd = h = Hookd(hooks={"a": http_hook(
            self.sink.url("/a"), extra=extra)})
        post(h, "/v1/hooks/a/stop")  # works on a stopped hook too
        status, doc = post(h, "/v1/hooks/a/test", {"event_type": "uclick"})
        self.assertEqual(status, 200, doc)
        self.assertTrue(doc["delivered"])
        self.assertEqual((doc["outcome"], doc["status"]), ("delivered", 200))
        self.assertEqual(doc["destination"], self.sink.url("/a"))
        self.assertEqual(doc["event"]["event_type"], "uclick")
        self.assertTrue(doc["message"]["shaped"])
        self.assertEqual(doc["message"]["custom_data"],
                         {"day": doc["event"]["event_date"][:10]})
        reqs = self.sink.requests("/a")
        self.assertEqual(len(reqs), 1)
        sent = json.loads(reqs[0]["body"])
        self.assertEqual(sent, [doc["message"]])
        self.assertTrue(sent[0]["hookd_test"])
        c = h.counters("a")
        self.assertEqual((c["test_sent"], c["sent"], c["matched"]), (1, 0, 0))

    def test_callers_own_event(self):
        self.hookd = h = Hookd(hooks={"a": http_hook(self.sink.url("/a"))})
        ev = click(5)
        status, doc = post(h, "/v1/hooks/a/test", {"event": ev})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["message"]["custom_data"], {"n": 5})
        self.assertEqual(doc["message"]["profile_id"], "p5")

    def test_failing_endpoint_reports_status_and_body(self):
        self.sink.script("/a", default={"status": 503, "body": "down for now"})
        self.hookd = h = Hookd(hooks={"a": http_hook(self.sink.url("/a"))})
        status, doc = post(h, "/v1/hooks/a/test", {"event_type": "open"})
        self.assertEqual(status, 200, doc)
        self.assertFalse(doc["delivered"])
        self.assertEqual((doc["outcome"], doc["status"]), ("retriable", 503))
        self.assertIn("down for now", doc["reason"])
        self.assertEqual(h.counters("a")["test_failed"], 1)
        # Not retried: a test is one attempt.
        time.sleep(0.8)
        self.assertEqual(len(self.sink.requests("/a")), 1)
        self.assertEqual(h.counters("a")["dead"], 0)

    def test_unreachable_endpoint(self):
        self.hookd = h = Hookd(hooks={"a": http_hook(
            "http://127.0.0.1:9/nowhere")})
        status, doc = post(h, "/v1/hooks/a/test", {"event_type": "click"})
        self.assertEqual(status, 200, doc)
        self.assertFalse(doc["delivered"])
        self.assertIsNone(doc["status"])
        self.assertIn("error=", doc["reason"])
        line = h.wait_log("test_send=1 delivered=0")
        self.assertTrue(line.startswith("warn dispatch "), line)
        self.assertIn("hook=a dest=http://127.0.0.1:9/nowhere ", line)

    def test_refusals(self):
        extra = 'shape = function(m) if m.event_type == "open" then ' \
                'error("no opens") end if m.event_type == "uclick" then ' \
                'm.f = print return m end return nil end'
        self.hookd = h = Hookd(hooks={"a": http_hook(
            self.sink.url("/a"), extra=extra)})
        for body in ({"event_type": "bad type!"}, {"event_type": ""},
                     {"event_type": 7}, {}, [1], b"{", {"event": [1]},
                     {"event_type": "click", "x": 1},
                     {"event": {"event_type": "x" * 200}}):
            status, doc = post(h, "/v1/hooks/a/test", body)
            self.assertEqual(status, 400, body)
            self.assertIn("error", doc)
        for body in ({"event": {"event_type": "click"}},
                     {"event": {"event_type": "click", "event_date": "nope"}},
                     {"event_type": "click", "event": click(1)}):
            status, doc = post(h, "/v1/hooks/a/test", body)
            self.assertEqual(status, 400, body)
        # The caller's event as written: an escape ingest refuses is
        # refused here too, though it decodes to a valid type or date.
        ev = json.dumps(click(1))
        for raw in (ev.replace('"click"', '"\\u0063lick"', 1),
                    ev.replace('Z"', '\\u005a"', 1)):
            status, doc = post(h, "/v1/hooks/a/test",
                               ('{"event": %s}' % raw).encode())
            self.assertEqual(status, 400, raw)
            self.assertIn("without escapes", doc["error"])
        status, doc = post(h, "/v1/hooks/a/test", {"event_type": "open"})
        self.assertEqual(status, 422, doc)
        self.assertIn("no opens", doc["error"])
        self.assertEqual(h.counters("a")["test_failed"], 1)
        line = h.wait_log("test_send=1 delivered=0")
        self.assertIn("hook=a version=1 dest=http://", line)
        self.assertEqual(doc["event"]["event_type"], "open")
        status, doc = post(h, "/v1/hooks/a/test", {"event_type": "click"})
        self.assertEqual(status, 422, doc)
        self.assertIn("shape() returned nil", doc["error"])
        # A message that cannot be encoded: the reason, not the runtime's
        # own file.
        status, doc = post(h, "/v1/hooks/a/test", {"event_type": "uclick"})
        self.assertEqual(status, 422, doc)
        self.assertIn("cannot encode message: cannot encode function at f",
                      doc["error"])
        self.assertNotIn("pipeline.lua", doc["error"])
        self.assertEqual(self.sink.requests("/a"), [])

    def test_unknown_but_valid_type_gets_a_generic_event(self):
        self.hookd = h = Hookd(hooks={"a": http_hook(self.sink.url("/a"))})
        status, doc = post(h, "/v1/hooks/a/test",
                           {"event_type": "my.custom-type_1"})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["event"]["event_type"], "my.custom-type_1")


ADMIN = [("GET", "/v1/hooks"), ("GET", "/v1/hooks/a"),
         ("POST", "/v1/hooks/a/activate"), ("POST", "/v1/hooks/a/stop"),
         ("POST", "/v1/hooks/a/clone"), ("DELETE", "/v1/hooks/a"),
         ("POST", "/v1/hooks/a/test"), ("POST", "/v1/hooks/a/export"),
         ("GET", "/v1/hooks/a/export"), ("POST", "/v1/hooks/a/export/pause"),
         ("POST", "/v1/hooks/a/export/resume"),
         ("POST", "/v1/hooks/a/export/abort"),
         ("GET", "/v1/dead-letters"), ("POST", "/v1/dead-letters/1/retry"),
         ("DELETE", "/v1/dead-letters/1"), ("POST", "/v1/content"),
         ("PUT", "/v1/profiles/1/p"), ("GET", "/v1/profiles/1/p"),
         ("DELETE", "/v1/profiles/1/p"), ("GET", "/v1/catalog"),
         ("PUT", "/v1/catalog/campaigns/1"),
         ("DELETE", "/v1/catalog/campaigns/1")]


class Tokens(unittest.TestCase):
    def test_every_admin_endpoint_refuses_missing_or_wrong_token(self):
        sink = Sink()
        h = Hookd(hooks={"a": http_hook(sink.url("/a"))},
                  config={"api_token": "s3cret-admin"})
        try:
            for method, path in ADMIN:
                for auth in (None, "Bearer wrong", "Bearer s3cret-admi",
                             "Bearer s3cret-admin2", "Basic s3cret-admin",
                             "s3cret-admin"):
                    headers = {"Authorization": auth} if auth else {}
                    status, raw, resp = harness.http_full(
                        method, h.base + path, b"{}", headers)
                    self.assertEqual(status, 401, (method, path, auth))
                    self.assertEqual(resp.get("WWW-Authenticate"),
                                     "Bearer")
            # The right token, in either case of the scheme, gets through.
            for scheme in ("Bearer", "bearer"):
                status, _ = http("GET", h.base + "/v1/hooks", None,
                                 {"Authorization": scheme + " s3cret-admin"})
                self.assertEqual(status, 200, scheme)
            self.assertEqual(http("GET", h.base + "/healthz")[0], 200)
            log = "".join(h.drain_log())
            self.assertNotIn("s3cret", log)
            # Nothing of the refused calls happened.
            self.assertTrue(os.path.exists(os.path.join(h.plugins, "a.lua")))
            self.assertEqual(sink.requests("/a"), [])
        finally:
            h.stop()
            sink.stop()


if __name__ == "__main__":
    harness.main()
