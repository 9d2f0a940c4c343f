"""POST /v1/events over HTTP: accepted shapes, refusals that name the bad
event and route nothing, the body size limit, and health."""

import gzip
import json
import os
import time
import unittest

import harness
from harness import FIXTURES, Hookd, Sink, click, http, http_hook, wait_for


class Ingest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = Sink()
        # Class cleanups run also when setUpClass fails half way: a hookd
        # left running would hold ctest's output pipe open, and ctest would
        # wait for it until its timeout.
        cls.addClassCleanup(cls.sink.stop)
        cls.hookd = Hookd({"all": http_hook(cls.sink.url("/all"))},
                          {"max_body_bytes": 1000000})
        cls.addClassCleanup(cls.hookd.stop)
        cls.hookd.wait_hook("all", lambda h: h["state"] == "running", "run")

    @classmethod
    def tearDownClass(cls):
        assert cls.hookd.stop() == 0
        cls.sink.stop()

    def routed(self):
        return [m["custom_data"]["n"] for m in self.sink.messages("/all")]

    def assert_nothing_routed(self, marker):
        """Posts a good event after a refused one: once it arrives, the
        refused request's events would have arrived before it."""
        status, _ = self.hookd.post_events(click(marker))
        self.assertEqual(status, 202)
        wait_for("marker", lambda: marker in self.routed())
        self.assertEqual([n for n in self.routed() if 1000 <= n < 1900],
                         [])

    def test_ingest_one_object(self):
        self.assertEqual(self.hookd.post_events(click(1)),
                         (202, {"accepted": 1}))

    def test_ingest_array(self):
        self.assertEqual(self.hookd.post_events([click(2), click(3)]),
                         (202, {"accepted": 2}))

    def test_ingest_ndjson_by_content_type(self):
        body = "\n".join(json.dumps(click(i)) for i in range(3)) + "\n"
        self.assertEqual(
            self.hookd.post_events(body, "application/x-ndjson"),
            (202, {"accepted": 3}))

    def test_ingest_ndjson_media_type_in_any_case(self):
        """Media types are case-insensitive, and only the type itself
        counts, not its parameters: an array body sent as NDJSON is one
        line that is not an object, whatever the case."""
        body = json.dumps([click(0), click(1)])
        for ctype in ("application/x-ndjson", "APPLICATION/X-NDJSON",
                      "Application/JSONL; charset=utf-8"):
            status, doc = self.hookd.post_events(body, ctype)
            self.assertEqual((status, doc.get("index")), (400, 0), ctype)
        for ctype in ("application/json; profile=ndjson",
                      "application/jsonld", "application/x-ndjson-seq"):
            self.assertEqual(self.hookd.post_events(body, ctype),
                             (202, {"accepted": 2}), ctype)

    def test_ingest_ndjson_without_content_type(self):
        body = "\n".join(json.dumps(click(i)) for i in range(4))
        self.assertEqual(self.hookd.post_events(body, "text/plain"),
                         (202, {"accepted": 4}))

    def test_ingest_bom_is_accepted(self):
        body = b"\xef\xbb\xbf" + json.dumps(click(5)).encode()
        self.assertEqual(self.hookd.post_events(body),
                         (202, {"accepted": 1}))

    def test_ingest_sample_file(self):
        with open(os.path.join(FIXTURES, "sample-1k.ndjson"), "rb") as f:
            body = f.read()
        self.assertEqual(self.hookd.post_events(body, "application/x-ndjson"),
                         (202, {"accepted": 1000}))

    def test_ingest_refuses_whole_request_with_index(self):
        bad = click(1001)
        bad["event_date"] = "2026-13-01T00:00:00Z"
        status, doc = self.hookd.post_events([click(1000), bad, click(1002)])
        self.assertEqual(status, 400)
        self.assertEqual(doc["index"], 1)
        self.assertIn("event_date", doc["error"])
        self.assert_nothing_routed(1900)

    def test_ingest_missing_event_type(self):
        ev = click(1003)
        del ev["event_type"]
        status, doc = self.hookd.post_events([ev])
        self.assertEqual((status, doc["index"]), (400, 0))
        self.assertIn("event_type", doc["error"])

    def test_ingest_event_date_number_refused(self):
        status, doc = self.hookd.post_events([click(1004, event_date=1)])
        self.assertEqual((status, doc["index"]), (400, 0))
        self.assertIn("event_date", doc["error"])

    def test_ingest_ndjson_bad_line_index(self):
        body = json.dumps(click(1005)) + "\n\n{bad json}\n"
        status, doc = self.hookd.post_events(body, "application/x-ndjson")
        self.assertEqual((status, doc["index"]), (400, 2))
        self.assert_nothing_routed(1901)

    def test_ingest_array_syntax_error_names_the_event(self):
        body = ("[" + json.dumps(click(1011)) + "," +
                json.dumps(click(1012))[:-1] + ',"a":tru}]')
        status, doc = self.hookd.post_events(body)
        self.assertEqual((status, doc["index"]), (400, 1))
        self.assertIn("not valid JSON", doc["error"])
        self.assert_nothing_routed(1903)

    def test_ingest_not_json_has_no_index(self):
        status, doc = self.hookd.post_events("hello", "application/json")
        self.assertEqual(status, 400)
        self.assertNotIn("index", doc)

    def test_ingest_compressed_body_is_refused_with_415(self):
        """A gzip body is refused as such, not read as broken JSON, and
        nothing of it is routed; "identity" is no encoding at all."""
        body = gzip.compress(json.dumps(click(1100)).encode())
        status, doc = http("POST", self.hookd.base + "/v1/events", body,
                           {"Content-Type": "application/json",
                            "Content-Encoding": "gzip"})
        self.assertEqual(status, 415)
        self.assertEqual(doc["error"], "Content-Encoding gzip is not "
                         "supported: send the body uncompressed")
        status, doc = http("POST", self.hookd.base + "/v1/content",
                           body, {"Content-Encoding": "br"})
        self.assertEqual(status, 415)
        self.assertIn("Content-Encoding br", doc["error"])
        status, _ = http("POST", self.hookd.base + "/v1/events",
                         json.dumps(click(2101)).encode(),
                         {"Content-Type": "application/json",
                          "Content-Encoding": "Identity"})
        self.assertEqual(status, 202)
        wait_for("identity", lambda: 2101 in self.routed())
        self.assert_nothing_routed(1910)

    def test_ingest_invalid_utf8(self):
        body = json.dumps(click(1006)).encode().replace(b"p1006",
                                                         b"p\xff\xfe")
        status, doc = self.hookd.post_events(body)
        self.assertEqual(status, 400)
        self.assertIn("UTF-8", doc["error"])
        self.assertEqual(doc["index"], 0)

    def test_ingest_nesting_depth(self):
        ev = click(1007)
        deep = {}
        cur = deep
        for _ in range(100):
            cur["x"] = {}
            cur = cur["x"]
        ev["event_data"]["deep"] = deep
        status, doc = self.hookd.post_events([click(1008), ev])
        self.assertEqual((status, doc["index"]), (400, 1))
        self.assertIn("nesting", doc["error"])

    def test_ingest_body_too_large(self):
        body = json.dumps([click(1010 + i % 800) for i in range(6000)])
        self.assertGreater(len(body), 1000000)
        status, doc = self.hookd.post_events(body)
        self.assertEqual(status, 413)
        self.assertIn("error", doc)
        self.assert_nothing_routed(1902)

    def test_ingest_wrong_method(self):
        status, doc = http("GET", self.hookd.base + "/v1/events")
        self.assertEqual(status, 405)

    def test_healthz(self):
        self.assertEqual(http("GET", self.hookd.base + "/healthz")[0], 200)
        self.assertEqual(http("POST", self.hookd.base + "/healthz")[0], 405)
        self.assertEqual(http("GET", self.hookd.base + "/v1/hooks/")[0], 404)

    def test_unknown_path_is_404(self):
        status, doc = http("GET", self.hookd.base + "/nope")
        self.assertEqual(status, 404)
        self.assertIn("error", doc)


class RefusalLog(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.hookd = Hookd({"all": http_hook(self.sink.url("/all"))})

    def tearDown(self):
        self.assertEqual(self.hookd.stop(), 0)
        self.sink.stop()

    def test_malformed_requests_are_logged_at_most_once_a_second(self):
        """A producer posting bad requests in a loop gets each one refused,
        but the log gets one line a second; each line counts the refusals
        it stands for, so none goes unaccounted."""
        for i in range(30):
            self.assertEqual(self.hookd.post_events('{"event_type": 1}')[0],
                             400)
        time.sleep(1.1)
        self.assertEqual(self.hookd.post_events("[1]")[0], 400)
        self.hookd.wait_log("index=0 reason=\"event must be a JSON object")
        lines = [l for l in self.hookd.drain_log()
                 if "refused=1 status=400" in l]
        self.assertLessEqual(len(lines), 3, "".join(lines))
        counted = sum(1 + int(l.split("unlogged_before=")[1].split()[0])
                      for l in lines)
        self.assertEqual(counted, 31, "".join(lines))


    def test_compressed_body_is_logged_like_a_malformed_request(self):
        body = gzip.compress(json.dumps(click(1)).encode())
        status, _ = http("POST", self.hookd.base + "/v1/events", body,
                         {"Content-Type": "application/json",
                          "Content-Encoding": "gzip"})
        self.assertEqual(status, 415)
        line = self.hookd.wait_log("refused=1 status=415")
        self.assertIn("Content-Encoding gzip", line)

    def test_refusals_held_back_are_counted_at_shutdown(self):
        """Refusals held back by the once-a-second limit and not followed
        by another refusal are logged with their count when hookd stops."""
        for i in range(5):
            self.assertEqual(self.hookd.post_events("[1]")[0], 400)
        self.assertEqual(self.hookd.stop(), 0)
        log = self.hookd.drain_log()
        first = [l for l in log if "refused=1 status=400" in l]
        flushed = [l for l in log if "unlogged=1" in l]
        self.assertEqual(len(flushed), 1, "".join(log[-20:]))
        counted = sum(1 + int(l.split("unlogged_before=")[1].split()[0])
                      for l in first)
        counted += int(flushed[0].split("refused=")[1].split()[0])
        self.assertEqual(counted, 5, "".join(first + flushed))


class Tokens(unittest.TestCase):
    def setUp(self):
        self.hookd = Hookd({}, {"api_token": "admin-t", "ingest_token": "in-t"})

    def tearDown(self):
        self.assertEqual(self.hookd.stop(), 0)

    def test_ingest_token_required(self):
        url = self.hookd.base + "/v1/events"
        body = json.dumps(click(1)).encode()
        self.assertEqual(http("POST", url, body)[0], 401)
        self.assertEqual(http("POST", url, body,
                              {"Authorization": "Bearer admin-t"})[0], 401)
        self.assertEqual(http("POST", url, body,
                              {"Authorization": "Bearer in-t"})[0], 202)

    def test_api_token_guards_admin_api(self):
        url = self.hookd.base + "/v1/hooks"
        self.assertEqual(http("GET", url)[0], 401)
        self.assertEqual(http("GET", url, None,
                              {"Authorization": "Bearer in-t"})[0], 401)
        self.assertEqual(http("GET", url, None,
                              {"Authorization": "Bearer admin-t"})[0], 200)
        self.assertEqual(http("GET", self.hookd.base + "/healthz")[0], 200)


if __name__ == "__main__":
    harness.main()
