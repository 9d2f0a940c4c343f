"""Shared plumbing of hookd's benchmarks (bench/run.py and its latency and
backlog scenarios): the sink and hookd processes, CPU and memory sampling,
posting requests and waiting for delivery (Python standard library only)."""

import http.client
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINK = os.path.join(ROOT, "tests", "sink", "sink.py")
GEN = os.path.join(ROOT, "bench", "gen_events.py")
CATALOG = os.path.join(ROOT, "examples", "catalog.json")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUSY_SHARE = 0.2  # other processes' cores above which a run is flagged


# -- events ----------------------------------------------------------------

def generate_events(count, seed, path):
    """Writes COUNT events of bench/gen_events.py to path."""
    with open(path, "wb") as out:
        subprocess.run([sys.executable, GEN, str(count), str(seed)],
                       stdout=out, check=True)
    return path


class Corpus:
    """Generated events, read and parsed once. A run that wants more events
    than the file holds goes round it again: hookd keys nothing on an
    event's identity (no id is unique in the store), so a repeated event is
    accepted and routed like a new one."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.lines = f.read().splitlines(keepends=True)
        self.events = [json.loads(line) for line in self.lines]
        self.types = sorted({e["event_type"] for e in self.events})

    def __len__(self):
        return len(self.lines)

    def line(self, i):
        return self.lines[i % len(self.lines)]

    def event(self, i):
        return self.events[i % len(self.events)]

    def bodies(self, n, size):
        """Request bodies of `size` NDJSON lines, n events in all. Equal
        slices share one bytes object, so two million events take no more
        memory than the corpus when its length is a multiple of size."""
        cache, out = {}, []
        for start in range(0, n, size):
            key = (start % len(self), min(size, n - start))
            if key not in cache:
                cache[key] = b"".join(self.line(start + i)
                                      for i in range(key[1]))
            out.append(cache[key])
        return out

    def count(self, pred, n):
        """How many of the first n events (going round) pred keeps."""
        kept = [bool(pred(e)) for e in self.events]
        rounds, rest = divmod(n, len(self))
        return rounds * sum(kept) + sum(kept[:rest])


# -- processes -------------------------------------------------------------

def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_seconds(pid, name):
    """utime + stime of the threads of pid called name, in seconds."""
    total = 0.0
    for tid in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(base + "comm") as f:
                if f.read().strip() != name:
                    continue
            with open(base + "stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_seconds():
    """CPU seconds of the whole machine (all cores) from /proc/stat:
    (user+nice+system, irq+softirq, steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return ((v[0] + v[1] + v[2]) / CLK_TCK, (v[5] + v[6]) / CLK_TCK,
            v[7] / CLK_TCK)


def cpu_sample(hookd_pid, sink_pid):
    """CPU seconds so far of hookd, the sink, this process (the posters),
    and the machine (see machine_seconds)."""
    task, irq, steal = machine_seconds()
    return {"hookd": cpu_seconds(hookd_pid), "sink": cpu_seconds(sink_pid),
            "store": thread_seconds(hookd_pid, "hookd-store"),
            "loop": thread_seconds(hookd_pid, "hookd"),
            "poster": time.process_time(), "machine": task, "irq": irq,
            "steal": steal}


def cpu_shares(before, after, wall):
    """Per source: CPU seconds in the window divided by wall seconds (1.0 =
    one core busy). "other" is the user and system time of every other
    process on the machine."""
    d = {k: after[k] - before[k] for k in before}
    d["other"] = d.pop("machine") - d["hookd"] - d["sink"] - d["poster"]
    # The store's writer thread and the loop thread are part of hookd:
    # their shares are reported apart but not subtracted from anything.
    return {k: max(v, 0.0) / wall for k, v in d.items()}, d


def peak_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def rss_parts(pid):
    """Resident memory of a process now, in MB: VmRSS and its anonymous,
    file-backed and shared-memory parts (the store's -shm file is mapped
    shared); None once the process is gone."""
    parts = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in RSS_FIELDS:
                    parts[key] = int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return parts if "VmRSS" in parts else None


def rss_mb(pid):
    """Resident memory of a process now (VmRSS), in MB; None once gone."""
    parts = rss_parts(pid)
    return parts["VmRSS"] if parts else None


class RssSampler:
    """Samples a process's VmRSS every `period` seconds on a thread:
    self.samples is a list of (monotonic time, MB), self.parts the same
    samples' rss_parts."""

    def __init__(self, pid, period=0.1):
        self.pid, self.period = pid, period
        self.samples, self.parts = [], []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            parts = rss_parts(self.pid)
            if parts is not None:
                self.samples.append((time.monotonic(), parts["VmRSS"]))
                self.parts.append(parts)
            self.done.wait(self.period)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.samples

    def window(self, t0, t1):
        """The MB figures sampled between t0 and t1."""
        return [mb for t, mb in self.samples if t0 <= t <= t1]

    def parts_at(self, t):
        """rss_parts of the first sample at or after t (else the last)."""
        for (ts, _), parts in zip(self.samples, self.parts):
            if ts >= t:
                return parts
        return self.parts[-1] if self.parts else None

    def at(self, t):
        """The first figure sampled at or after t (the last one if none)."""
        for ts, mb in self.samples:
            if ts >= t:
                return mb
        return self.samples[-1][1] if self.samples else None


def percentile(sorted_values, p):
    """Nearest-rank percentile (p an integer 0..100) of a sorted list."""
    if not sorted_values:
        return None
    rank = max(1, (len(sorted_values) * p + 99) // 100)
    return sorted_values[rank - 1]


def get_json(port, path, timeout=10):
    url = "http://127.0.0.1:%d%s" % (port, path)
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post_json(port, path, doc, timeout=10):
    req = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, path), method="POST",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


SINK_BIN_NAME = "hookd-bench-sink"
SINK_KINDS = ("c", "python")


def sink_binary(hookd=None):
    """Where the C sink (bench/sink.c) is built: beside the hookd binary
    when one is named (the top-level CMake build puts both in build/), else
    in build/ of the source tree."""
    base = (os.path.dirname(os.path.abspath(hookd)) if hookd else
            os.path.join(ROOT, "build"))
    return os.path.join(base, SINK_BIN_NAME)


class Sink:
    """A sink on a free loopback port that counts the batches hookd
    delivers, per path. Two kinds:

    "c": bench/sink.c (built as hookd-bench-sink), which only counts and
        answers /_sink/stats, at little CPU cost;
    "python": tests/sink/sink.py in count-only mode, which also takes
        scripts (script, release) and, with seq_field, keeps each message's
        value of that field and the monotonic time its batch arrived.

    kind None picks "c" when it is built and no seq_field is asked for,
    else "python" (with a note on stderr when the C sink is missing)."""

    noted_missing = False  # the note about a missing C sink was printed

    def __init__(self, seq_field=None, kind=None, binary=None):
        binary = binary or sink_binary()
        self.kind = kind or self.pick(seq_field, binary)
        if self.kind == "c":
            if seq_field:
                raise ValueError("the C sink keeps no seqs: use "
                                 "kind='python' with seq_field")
            if not os.path.exists(binary):
                raise RuntimeError("no C sink at %s: build it (cmake "
                                   "--build build) or use the Python one"
                                   % binary)
            cmd = [binary, "--port", "0"]
        elif self.kind == "python":
            cmd = [sys.executable, SINK, "--port", "0", "--count-only",
                   "--quiet"]
            if seq_field:
                cmd += ["--seq-field", seq_field]
        else:
            raise ValueError("unknown sink kind %r" % (self.kind,))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError("sink did not start: %r" % line)
        self.port = int(line.split()[1])

    @classmethod
    def pick(cls, seq_field, binary):
        """The kind for kind=None (see the class)."""
        if seq_field:
            return "python"
        if os.path.exists(binary):
            return "c"
        if not cls.noted_missing:
            cls.noted_missing = True
            sys.stderr.write("note: no C sink at %s; using tests/sink/"
                             "sink.py, which takes CPU from hookd\n" % binary)
        return "python"

    def need_python(self, what):
        if self.kind != "python":
            raise RuntimeError("the C sink only counts; %s need "
                               "Sink(kind='python')" % what)

    def stats(self):
        return get_json(self.port, "/_sink/stats")

    def script(self, spec):
        self.need_python("scripts")
        post_json(self.port, "/_sink/script", spec)

    def release(self):
        """Answers the requests held by a "hold" script."""
        self.need_python("holds")
        post_json(self.port, "/_sink/release", {})

    def seqs(self):
        """(sequence values, receive times) of every message so far."""
        self.need_python("seqs")
        doc = get_json(self.port, "/_sink/seqs", timeout=60)
        return doc["seq"], doc["t"]

    def stop(self):
        """SIGTERM (either kind exits at once); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode


class Hookd:
    """A hookd process with its own temp dir, main.json and plugins; its
    stderr is kept in self.log (read by a thread so the pipe never fills)."""

    def __init__(self, binary, hooks, sink_port, workdir, history_days=30):
        self.dir = tempfile.mkdtemp(prefix="hookd-", dir=workdir)
        self.history_days = history_days
        self.write_files(hooks, sink_port)
        self.log = []
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            [binary, "run", "--config", os.path.join(self.dir, "main.json")],
            stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self.read_log, daemon=True).start()
        self.port = self.wait_port()

    def write_files(self, hooks, sink_port):
        plugins = os.path.join(self.dir, "plugins")
        os.makedirs(os.path.join(plugins, "lib"))
        for hook_id, src in hooks.items():
            url = "http://127.0.0.1:%d/%s" % (sink_port, hook_id)
            with open(os.path.join(plugins, hook_id + ".lua"), "w") as f:
                f.write(src.replace("{url}", url))
        cfg = {"listen": "127.0.0.1:0", "data_dir": "data",
               "plugins_dir": "plugins", "catalog": CATALOG,
               "log_level": "info", "HOOK_RETRY_PERIOD_SEC": 1,
               "history_days": self.history_days}
        with open(os.path.join(self.dir, "main.json"), "w") as f:
            json.dump(cfg, f, indent=2)

    def read_log(self):
        for line in iter(self.proc.stderr.readline, ""):
            self.log.append(line)
            self.lines.put(line)

    def wait_port(self, timeout=10.0):
        """Returns the port of the `info main ... port=N` line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("info main") and " port=" in line:
                return int(line.split(" port=")[1].split()[0])
        raise RuntimeError("hookd did not log its port:\n" +
                           "".join(self.log[-20:]))

    def hooks(self):
        return get_json(self.port, "/v1/hooks")["hooks"]

    def store_mb(self):
        """Size of the store on disk (database, write-ahead log), in MB."""
        base = os.path.join(self.dir, "data", "hookd.db")
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(base + suffix)
            except OSError:
                pass
        return total / 1e6

    def wait_running(self, ids, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = {h["id"] for h in self.hooks()
                       if h["state"] == "running"}
            if set(ids) <= running:
                return
            time.sleep(0.02)
        raise RuntimeError("hooks not running: %s" % self.hooks())

    def stop(self):
        """SIGTERM; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# -- posting ---------------------------------------------------------------

NDJSON = {"Content-Type": "application/x-ndjson"}


def post_one(conn, body, n):
    """Posts one body; returns None when it was accepted whole, else
    (status, start of the answer)."""
    conn.request("POST", "/v1/events", body, NDJSON)
    resp = conn.getresponse()
    raw = resp.read()
    if resp.status != 202 or json.loads(raw).get("accepted") != n:
        return resp.status, raw[:200]
    return None


def post_bodies(port, bodies, sizes, starts, errors, barrier, answers):
    """Posts bodies in order over one keep-alive connection; records the
    monotonic time of the first send in starts, any non-202 in errors, and
    the time of each answer in answers (when it is a list)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    barrier.wait()
    starts.append(time.monotonic())
    for body, n in zip(bodies, sizes):
        error = post_one(conn, body, n)
        if error:
            errors.append(error)
        if answers is not None:
            answers.append(time.monotonic())
    conn.close()


def post_all(port, bodies, threads, answers=None):
    """Posts every body from `threads` concurrent connections; returns
    (monotonic time of the first send, of the last answer)."""
    sizes = [body.count(b"\n") for body in bodies]
    starts, errors = [], []
    barrier = threading.Barrier(threads)
    workers = [threading.Thread(target=post_bodies, args=(
        port, bodies[i::threads], sizes[i::threads], starts, errors, barrier,
        answers)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError("ingest failed: %d requests, first %r" %
                           (len(errors), errors[0]))
    return min(starts), time.monotonic()


# -- waiting for delivery --------------------------------------------------

def totals(hooks):
    keys = ("matched", "sent", "failed", "retried", "dead", "queued")
    return {k: sum(h["counters"][k] for h in hooks) for k in keys}


def wait_delivered(hookd, sink, timeout):
    """Polls until every hook's queue is empty and sent and dead together
    make at least the matched total read once all posts were answered. The
    sink counts a batch before it answers, and hookd counts it sent only
    after the answer, so by then the sink has every batch; whether it has
    exactly those is for the checks. Returns (hooks, totals, sink stats,
    matched at the end of posting); raises on timeout or when delivery
    stalls."""
    matched = totals(hookd.hooks())["matched"]
    deadline = time.monotonic() + timeout
    progress, seen = time.monotonic(), None
    while True:
        hooks = hookd.hooks()
        tot, st = totals(hooks), sink.stats()
        if tot["queued"] == 0 and tot["sent"] + tot["dead"] >= matched:
            return hooks, tot, st, matched
        now = time.monotonic()
        if (st["messages"], tot["sent"]) != seen:
            seen, progress = (st["messages"], tot["sent"]), now
        if now > deadline or now - progress > 15:
            raise RuntimeError(
                "delivery incomplete: matched at end of posts=%d now=%s "
                "sink=%d" % (matched, tot, st["messages"]))
        time.sleep(0.02)



# -- checks ----------------------------------------------------------------

def check_counts(hooks, expected, sink_stats):
    """Returns a list of problems: hookd's per-hook counters against the
    independent count, and the sink's per-path counts against `sent`."""
    problems = []
    per_path = sink_stats["per_path"]
    for h in hooks:
        c, hid = h["counters"], h["id"]
        got = per_path.get("/" + hid, {}).get("messages", 0)
        if c["matched"] != expected[hid]:
            problems.append("%s: matched=%d expected=%d" %
                            (hid, c["matched"], expected[hid]))
        if c["sent"] != c["matched"] or got != c["sent"]:
            problems.append("%s: matched=%d sent=%d sink=%d" %
                            (hid, c["matched"], c["sent"], got))
        for k in ("failed", "retried", "dead"):
            if c[k]:
                problems.append("%s: %s=%d" % (hid, k, c[k]))
    return problems


def exit_problems(hookd, status):
    """A status other than 0 on SIGTERM, and the first warn/error lines."""
    problems = []
    if status != 0:
        problems.append("hookd exited with status %s" % status)
    problems += [line.strip() for line in hookd.log
                 if line.startswith(("warn ", "error "))][:10]
    return problems
