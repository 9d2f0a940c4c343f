#!/usr/bin/env python3
"""Scripted loopback HTTP sink for hookd's tests, benchmark and demo: records
POSTed batches, answers them from per-path scripts, and serves a JSON control
API under /_sink/ (script, release, requests, messages, stats, seqs, reset).

A script (POST /_sink/script) is {"path": P} with any of
  "responses": [spec, ...]  answers for the next requests to P, in order;
  "default": spec           the answer once those are used up;
  "max_body": N             a request to P whose body is longer than N bytes
                            is answered 413 instead, without using a scripted
                            response (a size limit such as a proxy enforces).
A spec is {"status", "body", "headers", "delay" (seconds), "close" (no
answer), "hold" (no answer until POST /_sink/release, then the rest of the
spec; after a release, holds no longer wait until the next reset)}; with no
spec the answer is 200 {"ok":true}.

With --seq-field NAME the sink also keeps, for every message that is an
object with an integer NAME, that value and the monotonic time its batch's
body had arrived: GET /_sink/seqs answers {"seq": [...], "t": [...]}."""

import argparse
import array
import http
import itertools
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

DEFAULT_BODY = b'{"ok":true}'
PRINT_WIDTH = 160


def count_messages(body):
    """Returns (message count, parsed document or None)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return 0, None
    if isinstance(doc, list):
        return len(doc), doc
    return 1, doc


def as_messages(doc):
    if doc is None:
        return []
    return doc if isinstance(doc, list) else [doc]


class State:
    """Everything the sink remembers; every access holds self.lock."""

    def __init__(self, count_only, seq_field=None):
        self.lock = threading.Lock()
        self.count_only = count_only
        self.seq_field = seq_field
        self.released = threading.Event()
        self.conn_ids = itertools.count(1)  # not reset: ids stay unique
        self.n_conns = 0
        self.reset()

    def reset(self):
        with self.lock:
            # (path, query, headers, body, t, wall, conn, n_messages)
            self.records = []
            self.scripts = {}   # path -> deque of response specs
            self.defaults = {}  # path -> response spec
            self.max_body = {}  # path -> largest body answered normally
            self.per_path = {}  # path -> [requests, messages]
            self.n_requests = 0
            self.n_messages = 0
            self.first_t = None
            self.last_t = None
            self.idle_closed = 0
            self.seqs = array.array("q")
            self.seq_times = array.array("d")
            # Requests held by the old scripts are let go; new holds wait
            # for the next release.
            self.released.set()
            self.released = threading.Event()

    def add_script(self, spec):
        path = spec["path"]
        with self.lock:
            if "responses" in spec:
                self.scripts.setdefault(path, deque()).extend(
                    spec["responses"])
            if "default" in spec:
                self.defaults[path] = spec["default"]
            if "max_body" in spec:
                self.max_body[path] = int(spec["max_body"])

    def record(self, rec, n, size):
        """Stores one batch (rec as in self.records; size is its body's
        length, known in count-only mode too) and returns the response spec
        for it (None: the built-in 200)."""
        path, t = rec[0], rec[4]
        with self.lock:
            self.n_requests += 1
            self.n_messages += n
            pp = self.per_path.setdefault(path, [0, 0])
            pp[0] += 1
            pp[1] += n
            if n > 0:
                if self.first_t is None:
                    self.first_t = t
                self.last_t = t
            if not self.count_only:
                self.records.append(rec)
            limit = self.max_body.get(path)
            if limit is not None and size > limit:
                return {"status": 413,
                        "body": {"error": "body of %d bytes exceeds %d" %
                                 (size, limit)}}
            script = self.scripts.get(path)
            if script:
                return script.popleft()
            return self.defaults.get(path)

    def record_seqs(self, doc, t):
        """Keeps (value of seq_field, t) for each message of a batch."""
        name = self.seq_field
        found = [m.get(name) for m in as_messages(doc)
                 if isinstance(m, dict)]
        found = [v for v in found if isinstance(v, int)]
        with self.lock:
            self.seqs.extend(found)
            self.seq_times.extend([t] * len(found))

    def seq_list(self):
        with self.lock:
            return {"seq": self.seqs.tolist(), "t": self.seq_times.tolist()}

    def release(self):
        with self.lock:
            self.released.set()

    def hold_event(self):
        with self.lock:
            return self.released

    def note_connection(self):
        with self.lock:
            self.n_conns += 1
            return next(self.conn_ids)

    def note_idle_close(self):
        with self.lock:
            self.idle_closed += 1

    def select(self, path):
        with self.lock:
            return [r for r in self.records if path is None or r[0] == path]

    def stats(self):
        with self.lock:
            return {
                "requests": self.n_requests,
                "messages": self.n_messages,
                "per_path": {p: {"requests": v[0], "messages": v[1]}
                             for p, v in self.per_path.items()},
                "connections": self.n_conns,
                "idle_closed": self.idle_closed,
                "first_t": self.first_t,
                "last_t": self.last_t,
                "now_t": time.monotonic(),
            }


def record_json(r):
    path, query, headers, body, t, wall, conn, n = r
    return {"path": path, "query": query, "headers": headers,
            "body": body.decode("utf-8", "replace"), "len": len(body),
            "t": t, "wall": wall, "conn": conn, "messages": n}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None        # State, set by main
    idle_close = 0.0    # seconds; 0 = keep idle connections open
    quiet = False
    print_batches = False
    print_lock = threading.Lock()

    def setup(self):
        super().setup()
        self.conn_id = self.state.note_connection()

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("sink: " + (fmt % args) + "\n")

    # -- connection handling ------------------------------------------

    def await_request(self):
        """Waits up to idle_close for the next request; False when the
        connection was idle that long (or the peer closed it)."""
        self.connection.settimeout(self.idle_close)
        try:
            return bool(self.rfile.peek(1))
        except (TimeoutError, socket.timeout):
            self.state.note_idle_close()
            return False

    def handle_one_request(self):
        try:
            if self.idle_close > 0:
                if not self.await_request():
                    self.close_connection = True
                    return
                self.connection.settimeout(None)
            super().handle_one_request()
        except OSError:  # the peer went away (e.g. it timed out)
            self.close_connection = True

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def read_chunked(self):
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def send_raw(self, status, body=b"", headers=None):
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        lines = ["HTTP/1.1 %d %s" % (status, phrase)]
        for k, v in (headers or {}).items():
            if k.lower() == "content-length":
                continue
            if k.lower() == "connection" and v.lower() == "close":
                self.close_connection = True
            lines.append("%s: %s" % (k, v))
        if not (100 <= status < 200 or status in (204, 304)):
            lines.append("Content-Length: %d" % len(body))
        else:
            body = b""
        if self.close_connection and not any(
                k.lower() == "connection" for k in (headers or {})):
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)

    def send_json(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_raw(status, body, {"Content-Type": "application/json"})

    # -- recorded batches ---------------------------------------------

    def do_POST(self):
        body = self.read_body()
        t = time.monotonic()  # before parsing: the time the batch arrived
        path, _, query = self.path.partition("?")
        if path.startswith("/_sink/"):
            self.control_post(path, body)
            return
        n, doc = count_messages(body)
        if self.state.seq_field:
            self.state.record_seqs(doc, t)
        rec = (path, query, dict(self.headers.items()),
               b"" if self.state.count_only else body, t,
               time.time(), self.conn_id, n)
        spec = self.state.record(rec, n, len(body))
        if self.print_batches:
            self.print_batch(path, n, doc)
        self.answer(spec)
        if not self.quiet:
            self.log_message("POST %s messages=%d", self.path, n)

    def answer(self, spec):
        if spec is None:
            self.send_raw(200, DEFAULT_BODY,
                          {"Content-Type": "application/json"})
            return
        if spec.get("hold"):
            self.state.hold_event().wait()
        if spec.get("delay"):
            time.sleep(float(spec["delay"]))
        if spec.get("close"):
            self.close_connection = True  # no answer at all
            return
        body = spec.get("body", "")
        if not isinstance(body, str):
            body = json.dumps(body)
        headers = dict(spec.get("headers") or {})
        if body and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        self.send_raw(int(spec.get("status", 200)), body.encode(), headers)

    def print_batch(self, path, n, doc):
        lines = ["%s messages=%d" % (path, n)]
        for m in as_messages(doc):
            if isinstance(m, dict):
                line = "  %s %s" % (m.get("event_type"),
                                    json.dumps(m.get("custom_data"),
                                               sort_keys=True))
            else:
                line = "  " + json.dumps(m)
            if len(line) > PRINT_WIDTH:
                line = line[:PRINT_WIDTH - 3] + "..."
            lines.append(line)
        with self.print_lock:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()

    # -- control API --------------------------------------------------

    def control_post(self, path, body):
        try:
            if path == "/_sink/script":
                self.state.add_script(json.loads(body))
            elif path == "/_sink/reset":
                self.state.reset()
            elif path == "/_sink/release":
                self.state.release()
            else:
                self.send_json(404, {"error": "unknown control path"})
                return
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.send_json(400, {"error": str(e)})
            return
        self.send_json(200, {"ok": True})

    def do_GET(self):
        path, _, query = self.path.partition("?")
        want = parse_qs(query).get("path", [None])[0]
        if path == "/_sink/requests":
            recs = self.state.select(want)
            self.send_json(200, {"requests": [record_json(r) for r in recs]})
        elif path == "/_sink/messages":
            self.send_json(200, self.messages(want))
        elif path == "/_sink/stats":
            self.send_json(200, self.state.stats())
        elif path == "/_sink/seqs":
            self.send_json(200, self.state.seq_list())
        else:
            self.send_json(404, {"error": "not found"})

    def messages(self, want):
        if self.state.count_only:
            st = self.state.stats()
            n = (st["messages"] if want is None else
                 st["per_path"].get(want, {}).get("messages", 0))
            return {"count": n, "messages": [], "count_only": True}
        msgs = []
        for r in self.state.select(want):
            msgs.extend(as_messages(count_messages(r[3])[1]))
        return {"count": len(msgs), "messages": msgs}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--print", dest="print_batches", action="store_true")
    ap.add_argument("--idle-close", type=float, default=0.0,
                    metavar="SECONDS")
    ap.add_argument("--count-only", action="store_true")
    ap.add_argument("--seq-field", metavar="NAME",
                    help="keep each message's NAME with its arrival time")
    args = ap.parse_args()

    Handler.state = State(args.count_only, args.seq_field)
    Handler.idle_close = args.idle_close
    Handler.quiet = args.quiet
    Handler.print_batches = args.print_batches
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("READY %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
