"""Shared plumbing for hookd's integration tests: a scripted loopback sink,
a hookd process with its own config and plugins folder, and bounded
polling. Tests are plain unittest cases run as `test_x.py --hookd PATH`."""

import json
import os
import queue
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

SOURCE_DIR = os.environ.get(
    "HOOKD_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
FIXTURES = os.path.join(SOURCE_DIR, "tests", "fixtures")
SINK = os.path.join(SOURCE_DIR, "tests", "sink", "sink.py")
HOOKD = os.environ.get("HOOKD_BIN",
                       os.path.join(SOURCE_DIR, "build", "hookd"))


def http(method, url, body=None, headers=None, timeout=10):
    """Returns (status, parsed JSON or text) without raising on 4xx/5xx."""
    data = body if isinstance(body, (bytes, type(None))) else \
        json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def http_full(method, url, body=None, headers=None, timeout=10):
    """Returns (status, raw body, response headers) without raising."""
    req = urllib.request.Request(url, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def sqlite_rows(path, sql):
    """The rows of a query on a store, read-only."""
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def history_events(path):
    """Every event the store's history keeps, in the order received, as
    (event_date, JSON text): history rows are chunks, each with one
    16-byte entry per event in meta (date as a little-endian double, the
    text's length, flags). The texts are in the history file the row
    names, from its offset, each followed by a newline; rows older than
    history files have them one after another in body."""
    out = []
    folder = os.path.join(os.path.dirname(path), "history")
    for meta, body, file, offset in sqlite_rows(
            path, "SELECT meta, body, file, file_offset FROM history "
            "ORDER BY id"):
        sep = 0 if file is None else 1
        if file is not None:
            size = sum(struct.unpack_from("<dII", meta, k)[1] + 1
                       for k in range(0, len(meta), 16))
            with open(os.path.join(folder, "%010d.ndjson" % file),
                      "rb") as f:
                f.seek(offset)
                body = f.read(size)
        off = 0
        for k in range(0, len(meta), 16):
            date, length, _flags = struct.unpack_from("<dII", meta, k)
            out.append((date, body[off:off + length].decode()))
            off += length + sep
    return out


def wait_for(what, check, timeout=10.0, interval=0.02):
    """Polls check() until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


def read_lines(stream, sink):
    for line in iter(stream.readline, ""):
        sink.put(line)


class Sink:
    """The scripted loopback HTTP sink of tests/sink/sink.py."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, SINK, "--quiet", *args],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("sink did not start: " + line)
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port

    def url(self, path):
        return self.base + path

    def script(self, path, responses=None, default=None):
        spec = {"path": path}
        if responses is not None:
            spec["responses"] = responses
        if default is not None:
            spec["default"] = default
        status, _ = http("POST", self.base + "/_sink/script", spec)
        assert status == 200, status

    def requests(self, path):
        return http("GET", self.base + "/_sink/requests?path=" + path)[1][
            "requests"]

    def messages(self, path):
        return http("GET", self.base + "/_sink/messages?path=" + path)[1][
            "messages"]

    def reset(self):
        """Forgets every recorded request and every script: from now on
        each path gets the built-in 200."""
        status, _ = http("POST", self.base + "/_sink/reset", b"")
        assert status == 200, status

    def wait_messages(self, path, n, timeout=10.0):
        return wait_for("%d messages at %s" % (n, path),
                        lambda: len(self.messages(path)) >= n and
                        self.messages(path), timeout)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.proc.stdout.close()


class Hookd:
    """A hookd process with a temporary plugins folder and main.json."""

    def __init__(self, hooks=None, config=None, catalog=True, env=None,
                 workdir=None):
        """workdir: the folder of an earlier Hookd, to start again on its
        plugins and data_dir (a restart)."""
        self.dir = workdir or tempfile.mkdtemp(prefix="hookd-test-")
        self.plugins = os.path.join(self.dir, "plugins")
        os.makedirs(os.path.join(self.plugins, "lib"), exist_ok=True)
        for hook_id, src in (hooks or {}).items():
            self.write_hook(hook_id, src, settle=False)
        cfg = {"listen": "127.0.0.1:0", "data_dir": "data",
               "plugins_dir": "plugins", "log_level": "debug",
               "HOOK_RETRY_PERIOD_SEC": 0.3, "shutdown_grace_sec": 1}
        if catalog:
            cfg["catalog"] = os.path.join(FIXTURES, "catalog.json")
        cfg.update(config or {})
        self.config_path = os.path.join(self.dir, "main.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)
        self.lines = queue.Queue()
        self.log = []
        self.proc = subprocess.Popen(
            [HOOKD, "run", "--config", self.config_path],
            stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, **(env or {})))
        self.reader = threading.Thread(
            target=read_lines, args=(self.proc.stderr, self.lines),
            daemon=True)
        self.reader.start()
        line = self.wait_log("port=")
        self.port = int(line.split("port=")[1].split()[0])
        self.base = "http://127.0.0.1:%d" % self.port

    def write_hook(self, hook_id, src, settle=True):
        """Writes plugins/<id>.lua atomically (temp file and rename)."""
        path = os.path.join(self.plugins, hook_id + ".lua")
        tmp = os.path.join(self.plugins, "." + hook_id + ".tmp")
        with open(tmp, "w") as f:
            f.write(src)
        os.rename(tmp, path)
        return path

    def drain_log(self):
        while True:
            try:
                self.log.append(self.lines.get_nowait())
            except queue.Empty:
                return self.log

    def wait_log(self, needle, timeout=10.0):
        """Returns the first log line containing needle (seen so far or
        arriving within timeout)."""
        deadline = time.monotonic() + timeout
        for line in self.log:
            if needle in line:
                return line
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.log.append(line)
            if needle in line:
                return line
        raise AssertionError("hookd never logged %r; log:\n%s" %
                             (needle, "".join(self.drain_log()[-40:])))

    def post_events(self, events, content_type="application/json"):
        if isinstance(events, (list, dict)):
            body = json.dumps(events).encode()
        elif isinstance(events, str):
            body = events.encode()
        else:
            body = events
        return http("POST", self.base + "/v1/events", body,
                    {"Content-Type": content_type})

    def hook(self, hook_id):
        status, doc = http("GET", self.base + "/v1/hooks/" + hook_id)
        return doc if status == 200 else None

    def counters(self, hook_id):
        h = self.hook(hook_id)
        return h["counters"] if h else None

    def wait_hook(self, hook_id, pred, what, timeout=10.0):
        return wait_for(what, lambda: (lambda h: h and pred(h) and h)(
            self.hook(hook_id)), timeout)

    def error_lines(self):
        return [l for l in self.drain_log() if l.startswith("error ")]

    def db_path(self):
        return os.path.join(self.dir, "data", "hookd.db")

    def kill(self):
        """SIGKILL: a crash, with no chance to tidy up."""
        self.proc.kill()
        self.proc.wait()
        self.reader.join(5)
        self.drain_log()
        self.proc.stderr.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        self.drain_log()
        self.proc.stderr.close()
        return self.proc.returncode


class LineTool:
    """A helper process of the tests (the Kafka mock cluster, amqp_tool):
    commands on stdin, each answered with lines ending in "ok" (or
    "ok ...") or "error ...". Subclasses start self.proc."""

    name = "helper"

    def exchange(self, line):
        """Sends one command; returns (its lines before "ok", the rest of
        the "ok" line). Raises AssertionError on "error"."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = []
        while True:
            reply = self.proc.stdout.readline()
            if reply == "":
                raise AssertionError("%s exited on %s" % (self.name, line))
            reply = reply.rstrip("\n")
            if reply == "ok" or reply.startswith("ok "):
                return out, reply[3:]
            if reply.startswith("error"):
                raise AssertionError("%s: %s" % (line, reply))
            out.append(reply)

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(10)
        self.proc.stdout.close()


class SinkTest(unittest.TestCase):
    """A test with a sink of its own and, once a test starts one, a hookd
    (self.hookd); both are stopped after the test, and with clean_exit
    hookd must exit 0."""

    clean_exit = False

    def setUp(self):
        self.sink = Sink()
        self.hookd = None

    def tearDown(self):
        if self.hookd:
            status = self.hookd.stop()
            if self.clean_exit:
                self.assertEqual(status, 0)
        self.sink.stop()


def http_hook(url, actions=("click",), database="all", extra=""):
    """Source of a simple HTTP hook for tests."""
    return """return {
  database = %s,
  actions = {%s},
  send = {type = "http", url = %s, batch_size = 10, timeout_sec = 0.2},
  %s
}
""" % (json.dumps(database) if database == "all" else database,
       ", ".join(json.dumps(a) for a in actions), json.dumps(url), extra)


def bare(i, **fields):
    """A click without custom_data (unless given), so the hook builds it."""
    ev = click(i, **fields)
    if "custom_data" not in fields:
        del ev["custom_data"]
    return ev


def example_events():
    """The documented example events and the 1,000 sample events."""
    events = []
    for name in ("click.json", "deliv.json"):
        with open(os.path.join(FIXTURES, name)) as f:
            events.append(json.load(f))
    with open(os.path.join(FIXTURES, "sample-1k.ndjson")) as f:
        events.extend(json.loads(line) for line in f if line.strip())
    return events


def click(i, **fields):
    """A small valid click event with a unique marker in custom_data."""
    ev = {"event_type": "click", "event_date": "2026-11-01T10:00:00.5Z",
          "list_id": 111, "profile_id": "p%d" % i,
          "event_data": {"campaign_id": 973, "message_id": 17,
                         "segment_id": 0, "resource_id": 3},
          "custom_data": {"n": i}}
    ev.update(fields)
    return ev


def main():
    """Runs the calling module's tests; --hookd PATH picks the binary."""
    global HOOKD
    args = sys.argv[1:]
    if "--hookd" in args:
        i = args.index("--hookd")
        HOOKD = args[i + 1]
        del args[i:i + 2]
    unittest.main(module="__main__", argv=[sys.argv[0]] + args, verbosity=2)
