#!/usr/bin/env python3
"""Tests of the benchmark's counting sink (bench/sink.c, built as
hookd-bench-sink): its message counts against those of sink.py's
count_messages on the same bodies, keep-alive, pipelined, chunked and
100-continue requests, large bodies, the stats document and the 404s of the
control paths it does not serve.

Run as `test_bench_sink.py [--sink PATH]` (default: build/hookd-bench-sink
of the source tree); the other arguments go to unittest."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sink as py_sink  # noqa: E402  (tests/sink/sink.py)

SINK_BIN = os.path.join(os.path.dirname(os.path.dirname(HERE)), "build",
                        "hookd-bench-sink")

# Bodies whose count both sinks must agree on, from plain to odd.
AGREE = [
    b'[1,2,3]', b'[]', b' [ ] ', b'{}', b'{"a":[1,2,3]}', b'"text"', b'42',
    b'null', b'true', b'false', b'-0', b'-1.5e+3', b'1E5', b'0.25',
    b'[{"a":1},{"b":[2,3]},[4,[5,[6]]],"x"]',
    b'["a \\" ] [ } {", "\\\\", "\\/\\b\\f\\n\\r\\t", "\\u005d\\u005B"]',
    b'[{"k":"]"},{"k":"[\\"]"}]', b'["\\ud800", "\\udc00\\ud800"]',
    b'[NaN, Infinity, -Infinity]', b'NaN', b'[-Infinity]',
    '["caf\u00e9", "\u20ac", "\U0001f600"]'.encode(),
    b'\xef\xbb\xbf[1,2]', b'["\xed\xa0\x80"]',
    b'[' + b'[' * 100 + b']' * 100 + b']',
    b'[' + b'9' * 4300 + b']', b'[' + b'9' * 4301 + b']',
    b'[' + b'9' * 4301 + b'.5]', b'[-' + b'9' * 4301 + b']',
    b'[1e' + b'9' * 5000 + b']',
    # not JSON
    b'', b' ', b'nope', b'[1,2', b'[1,]', b'[,1]', b'{"a"}', b'{"a":}',
    b'{"a":1,}', b'{1:2}', b'[1] x', b'[1][2]', b'01', b'[01]', b'-', b'1.',
    b'[1.]', b'[1e]', b'[.5]', b'[+1]', b'nul', b'[nulll]', b'[True]',
    b'["a\tb"]', b'["\x01"]', b'["\\x"]', b'["\\u12"]', b'["\\u12g4"]',
    b'["abc', b'["\xff"]', b'["\xc0\x80"]', b'["\xe0\x80\x80"]',
    b'["\xf4\x90\x80\x80"]', b'["\xe2\x82"]', b'[\xc3\xa9]',
    b'\xef\xbb\xbf', b'\xef\xbb\xbf\xef\xbb\xbf[1]', b'[1]\x00 ',
    b'[-Inf]', b'[Infinity1]', b'{"a" 1}', b'{"a":1 "b":2}', b'[1 2]',
    b'[1,\n2,\r\n3]\n', b'[\f1]', b'[1]\x0b',
]


def start_sink(binary):
    """Starts the sink; returns (process, port)."""
    proc = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError("sink did not start: %r" % line)
    return proc, int(line.split()[1])


def raw_request(path, body, extra=""):
    """The bytes of one POST with a Content-Length."""
    head = ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n" %
            (path, len(body), extra))
    return head.encode() + body


def read_response(f):
    """Reads one response from a socket file: (status, headers, body)."""
    status = int(f.readline().split()[1])
    headers = {}
    for line in iter(f.readline, b"\r\n"):
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers.get("content-length", 0)))


class CountingSinkTest(unittest.TestCase):
    binary = SINK_BIN

    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_sink(cls.binary)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.proc.terminate()
            status = cls.proc.wait(10)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            status = cls.proc.wait()
        cls.proc.stdout.close()
        if status != 0:
            raise AssertionError("the sink exited with %s on SIGTERM" %
                                 status)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def post(self, path, body, conn=None):
        """POSTs body; returns the answer's status and parsed body."""
        c = conn or self.conn()
        c.request("POST", path, body, {"Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read()
        self.assertEqual(r.getheader("Content-Type"), "application/json")
        if conn is None:
            c.close()
        return r.status, json.loads(raw)

    def stats(self, conn=None):
        c = conn or self.conn()
        c.request("GET", "/_sink/stats")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        doc = json.loads(r.read())
        if conn is None:
            c.close()
        return doc

    def path_counts(self, path):
        pp = self.stats()["per_path"].get(path)
        return (pp["requests"], pp["messages"]) if pp else (0, 0)

    def test_counts_agree_with_sink_py(self):
        for i, body in enumerate(AGREE):
            path = "/agree/%d" % i
            with self.subTest(body=body[:60]):
                self.assertEqual(self.post(path, body), (200, {"ok": True}))
                want = py_sink.count_messages(body)[0]
                self.assertEqual(self.path_counts(path), (1, want))

    def test_per_path_counts_and_query(self):
        self.post("/p/a", b'[1,2,3]')
        self.post("/p/a?x=1&y=[", b'[{"a":[1,2]},"]"]')
        self.post("/p/b", b'{"one": "document"}')
        self.post("/p/c", b'not json')
        self.post("/p/d", b'[]')
        st = self.stats()["per_path"]
        self.assertEqual(st["/p/a"], {"requests": 2, "messages": 5})
        self.assertEqual(st["/p/b"], {"requests": 1, "messages": 1})
        self.assertEqual(st["/p/c"], {"requests": 1, "messages": 0})
        self.assertEqual(st["/p/d"], {"requests": 1, "messages": 0})

    def test_depth_limit(self):
        # Python's json gives up (RecursionError) near 1000 levels; this
        # sink takes 1000 and counts deeper documents 0.
        self.post("/deep", b"[" * 1000 + b"]" * 1000)
        self.post("/deep", b"[" * 1001 + b"]" * 1001)
        self.assertEqual(self.path_counts("/deep"), (2, 1))

    def test_big_body(self):
        msg = {"event_type": "send", "custom_data": {"s": 'x"]}[\\' * 20,
                                                      "n": [1, [2, {}]]}}
        doc = [dict(msg, i=i) for i in range(9000)]
        body = json.dumps(doc).encode()
        self.assertGreater(len(body), 2 * 1024 * 1024)
        self.assertEqual(self.post("/big", body)[0], 200)
        self.assertEqual(self.path_counts("/big"), (1, 9000))

    def test_keep_alive_one_connection(self):
        before = self.stats()["connections"]
        c = self.conn()
        self.post("/ka", b'[1,2]', c)
        self.post("/ka", b'[3,4,5]', c)
        st = self.stats(c)
        c.close()
        self.assertEqual(st["per_path"]["/ka"],
                         {"requests": 2, "messages": 5})
        self.assertEqual(st["connections"], before + 1)

    def test_pipelined_requests(self):
        with socket.create_connection(("127.0.0.1", self.port), 10) as s:
            s.sendall(raw_request("/pipe", b'[1,2,3]') +
                      raw_request("/pipe", b'[{"a":"],["}]') +
                      b"GET /_sink/stats HTTP/1.1\r\nHost: t\r\n\r\n")
            f = s.makefile("rb")
            answers = [read_response(f) for _ in range(3)]
        self.assertEqual([a[0] for a in answers], [200, 200, 200])
        self.assertEqual(answers[0][2], b'{"ok":true}')
        st = json.loads(answers[2][2])
        self.assertEqual(st["per_path"]["/pipe"],
                         {"requests": 2, "messages": 4})

    def test_chunked_body(self):
        c = self.conn()
        c.request("POST", "/chunked", iter([b'[1,', b'"a\\"', b'",[]]']),
                  {"Content-Type": "application/json"}, encode_chunked=True)
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b'{"ok":true}'))
        c.close()
        self.assertEqual(self.path_counts("/chunked"), (1, 3))

    def test_expect_100_continue(self):
        body = b'[1,2,3,4]'
        with socket.create_connection(("127.0.0.1", self.port), 10) as s:
            head = raw_request("/expect", b"", "Expect: 100-continue\r\n")
            s.sendall(head.replace(b"Length: 0", b"Length: %d" % len(body)))
            f = s.makefile("rb")
            self.assertIn(b" 100 ", f.readline())
            self.assertEqual(f.readline(), b"\r\n")
            s.sendall(body)
            self.assertEqual(read_response(f)[0], 200)
        self.assertEqual(self.path_counts("/expect"), (1, 4))

    def test_connection_close(self):
        with socket.create_connection(("127.0.0.1", self.port), 10) as s:
            s.sendall(raw_request("/close", b'[1]', "Connection: close\r\n"))
            f = s.makefile("rb")
            status, headers, _ = read_response(f)
            self.assertEqual(status, 200)
            self.assertEqual(headers.get("connection"), "close")
            self.assertEqual(f.read(), b"")  # closed by the sink

    def test_stats_shape(self):
        self.post("/shape", b'[1]')
        st = self.stats()
        self.assertEqual(set(st), {"requests", "messages", "per_path",
                                   "connections", "idle_closed", "first_t",
                                   "last_t", "now_t"})
        for k in ("requests", "messages", "connections", "idle_closed"):
            self.assertIsInstance(st[k], int)
        self.assertEqual(st["requests"],
                         sum(v["requests"] for v in st["per_path"].values()))
        self.assertEqual(st["messages"],
                         sum(v["messages"] for v in st["per_path"].values()))
        self.assertLessEqual(st["first_t"], st["last_t"])
        self.assertLessEqual(st["last_t"], st["now_t"])
        # The same clock as time.monotonic().
        self.assertLess(abs(st["now_t"] - time.monotonic()), 2.0)

    def test_control_paths_refused(self):
        for method, path in [("POST", "/_sink/script"), ("GET", "/_sink/seqs"),
                             ("POST", "/_sink/reset"),
                             ("GET", "/_sink/requests"),
                             ("POST", "/_sink/stats")]:
            with self.subTest(path=path):
                req = urllib.request.Request(
                    "http://127.0.0.1:%d%s" % (self.port, path),
                    data=b"{}" if method == "POST" else None, method=method)
                with self.assertRaises(urllib.error.HTTPError) as cm:
                    urllib.request.urlopen(req, timeout=10)
                self.assertEqual(cm.exception.code, 404)
                err = json.loads(cm.exception.read())["error"]
                self.assertIn("only counts", err)
        self.assertNotIn("/_sink/script", self.stats()["per_path"])


class FreshSinkTest(unittest.TestCase):
    """What a sink shows before any batch, and how it ends."""

    def test_empty_stats_and_sigterm(self):
        proc, port = start_sink(CountingSinkTest.binary)
        try:
            url = "http://127.0.0.1:%d/_sink/stats" % port
            with urllib.request.urlopen(url, timeout=10) as r:
                st = json.loads(r.read())
            self.assertEqual((st["requests"], st["messages"]), (0, 0))
            self.assertEqual(st["per_path"], {})
            self.assertIsNone(st["first_t"])
            self.assertIsNone(st["last_t"])
            # A batch without messages sets no time.
            req = urllib.request.Request(url[:-len("/_sink/stats")] + "/z",
                                         data=b"[]", method="POST")
            urllib.request.urlopen(req, timeout=10).read()
            with urllib.request.urlopen(url, timeout=10) as r:
                self.assertIsNone(json.loads(r.read())["first_t"])
            # An open idle connection does not hold up the exit.
            idle = socket.create_connection(("127.0.0.1", port), 10)
            proc.terminate()
            self.assertEqual(proc.wait(10), 0)
            idle.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def main():
    args = sys.argv[1:]
    if "--sink" in args:
        i = args.index("--sink")
        CountingSinkTest.binary = args[i + 1]
        del args[i:i + 2]
    unittest.main(argv=[sys.argv[0]] + args, verbosity=2)


if __name__ == "__main__":
    main()
