"""Latency scenario of bench/run.py: events are posted at a steady rate,
each with a sequence number at its top level, which hookd passes through
into the message. The sink notes the monotonic time each numbered message
arrived; the benchmark notes the time each request's 202 arrived. Both read
CLOCK_MONOTONIC, so their difference is the time from acceptance to the
destination, batch timeout included."""

import http.client
import threading
import time

from benchlib import (BUSY_SHARE, Hookd, Sink, check_counts, cpu_sample,
                      cpu_shares, exit_problems, percentile, post_one,
                      wait_delivered)

SEQ_FIELD = "bench_seq"
PERCENTILES = (50, 90, 99, 100)


def add_options(ap):
    g = ap.add_argument_group("latency scenario")
    g.add_argument("--rate", type=float, default=20000,
                   help="events per second posted (default 20000)")
    g.add_argument("--latency-seconds", type=float, default=10,
                   help="how long to post at that rate (default 10)")
    g.add_argument("--latency-request-size", type=int, default=100,
                   help="events per request (default 100: a request every "
                   "5 ms at 20,000/s)")
    g.add_argument("--latency-threads", type=int, choices=range(1, 5),
                   default=4, metavar="1..4",
                   help="connections the paced requests share (default 4)")
    g.add_argument("--batch-timeout", type=float, default=0.05,
                   help="the hook's timeout_sec (default 0.05)")


def events_wanted(args):
    if "latency" not in args.scenario:
        return 0
    return int(args.rate * args.latency_seconds)


def numbered_bodies(corpus, n, size):
    """Bodies of `size` events, event i carrying SEQ_FIELD = i. Generated
    lines all open with `{`, so the field goes right after it."""
    head = b'{"' + SEQ_FIELD.encode() + b'":%d,'
    bodies = []
    for start in range(0, n, size):
        bodies.append(b"".join(head % i + corpus.line(i)[1:]
                               for i in range(start, min(n, start + size))))
    return bodies


class PacedPoster:
    """Open-loop posting: request j is due at t0 + j * interval, whatever
    happened to the ones before. The connections take the next request in
    turn, so a slow answer delays the next request only when every
    connection is waiting for one."""

    def __init__(self, port, bodies, interval, threads):
        self.port, self.bodies, self.interval = port, bodies, interval
        self.threads = threads
        self.sent = [None] * len(bodies)
        self.answered = [None] * len(bodies)
        self.errors = []
        self.next = 0
        self.lock = threading.Lock()
        self.t0 = None

    def run(self):
        self.t0 = time.monotonic() + 0.05
        workers = [threading.Thread(target=self.work)
                   for _ in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if self.errors:
            raise RuntimeError("ingest failed: %d requests, first %r" %
                               (len(self.errors), self.errors[0]))

    def take(self):
        with self.lock:
            j = self.next
            self.next += 1
        return j if j < len(self.bodies) else None

    def work(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while True:
            j = self.take()
            if j is None:
                break
            wait = self.t0 + j * self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.sent[j] = time.monotonic()
            error = post_one(conn, self.bodies[j],
                             self.bodies[j].count(b"\n"))
            self.answered[j] = time.monotonic()
            if error:
                self.errors.append(error)
        conn.close()

    def lateness(self):
        """Seconds each request left after it was due."""
        return sorted(t - (self.t0 + j * self.interval)
                      for j, t in enumerate(self.sent))


def spread(values):
    """{p50, p90, p99, max} in milliseconds of unsorted seconds."""
    s = sorted(values)
    return {("max" if p == 100 else "p%d" % p): percentile(s, p) * 1e3
            for p in PERCENTILES} if s else {}


def hook_source(spec, timeout):
    hid, src, pred = spec
    old = "timeout_sec = 0.2"
    assert old in src
    return hid, src.replace(old, "timeout_sec = %r" % timeout), pred


def run(args, spec, corpus, workdir):
    """One latency run of the one-hook scenario's hook (spec: id, source,
    predicate); returns the result dict."""
    hid, src, pred = hook_source(spec, args.batch_timeout)
    n, size = events_wanted(args), args.latency_request_size
    bodies = numbered_bodies(corpus, n, size)
    expected = [i for i in range(n) if pred(corpus.event(i))]
    sink, hookd = Sink(seq_field=SEQ_FIELD, kind="python"), None
    try:
        hookd = Hookd(args.hookd, {hid: src}, sink.port, workdir,
                      args.history_days)
        hookd.wait_running([hid])
        m = measure(args, hookd, sink, bodies, size)
    finally:
        status = hookd.stop() if hookd else None
        sink.stop()
    problems = check_counts(m["hooks"], {hid: len(expected)}, m["sink"])
    problems += check_seqs(m["seqs"], expected)
    problems += exit_problems(hookd, status)
    r = make_result(args, n, size, m, problems)
    print("latency: p99 %.1f ms after the 202 (%.1f ms beyond timeout_sec)"
          % (r["sink_after_202_ms"]["p99"],
             r["beyond_timeout_ms"]["p99"]), flush=True)
    return r


def measure(args, hookd, sink, bodies, size):
    poster = PacedPoster(hookd.port, bodies, size / args.rate,
                         args.latency_threads)
    cpu0 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    poster.run()
    hooks, tot, st, _ = wait_delivered(hookd, sink, args.timeout)
    cpu1 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    seqs, times = sink.seqs()
    wall = st["last_t"] - poster.t0 if st["last_t"] else 1.0
    return {"poster": poster, "hooks": hooks, "totals": tot, "sink": st,
            "seqs": list(zip(seqs, times)),
            "cpu": cpu_shares(cpu0, cpu1, wall)[0]}


def check_seqs(seqs, expected):
    """Every expected message arrived once, and nothing else."""
    got = [s for s, _ in seqs]
    problems = []
    if len(got) != len(set(got)):
        problems.append("%d messages arrived more than once" %
                        (len(got) - len(set(got))))
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    if missing:
        problems.append("%d messages never arrived, first seq %d" %
                        (len(missing), min(missing)))
    if extra:
        problems.append("%d unexpected messages, first seq %d" %
                        (len(extra), min(extra)))
    return problems


def make_result(args, n, size, m, problems):
    p = m["poster"]
    lat = [t - p.answered[seq // size] for seq, t in m["seqs"]]
    span = p.sent[-1] - p.sent[0]
    return {
        "scenario": "latency", "events": n, "request_size": size,
        "threads": args.latency_threads, "rate": args.rate,
        "rate_achieved": size * (len(p.sent) - 1) / span if span else None,
        "timeout_sec": args.batch_timeout, "messages": len(m["seqs"]),
        "late_ms": spread(p.lateness()),
        "answer_ms": spread(a - s for s, a in zip(p.sent, p.answered)),
        "sink_after_202_ms": spread(lat),
        "beyond_timeout_ms": spread(x - args.batch_timeout for x in lat),
        "cpu": m["cpu"], "counters": m["totals"],
        "other_cpu_share": m["cpu"]["other"] + m["cpu"]["steal"],
        "problems": problems,
    }


def fmt_spread(d):
    return "  ".join("%s %6.1f" % (k, d[k]) for k in ("p50", "p90", "p99",
                                                       "max") if k in d)


def print_result(r):
    print("\nlatency run %s: %d events at %.0f/s (posted at %.0f/s), "
          "requests of %d over %d connections, timeout_sec %g, %d messages"
          % (r["run"], r["events"], r["rate"], r["rate_achieved"] or 0,
             r["request_size"], r["threads"], r["timeout_sec"],
             r["messages"]))
    for label, key in (("sink - 202", "sink_after_202_ms"),
                       ("sink - 202 - timeout", "beyond_timeout_ms"),
                       ("send -> 202", "answer_ms"),
                       ("send after due time", "late_ms")):
        print("  ms  %-20s  %s" % (label, fmt_spread(r[key])))
    print("  cpu: hookd %.2f  sink %.2f  poster %.2f  other %.2f" % (
        r["cpu"]["hookd"], r["cpu"]["sink"], r["cpu"]["poster"],
        r["other_cpu_share"]))
    for prob in r["problems"]:
        print("PROBLEM latency run %s: %s" % (r["run"], prob))
    if r["other_cpu_share"] > BUSY_SHARE:
        print("NOTE latency run %s: other processes used %.2f cores during "
              "the run; its figures are not from a quiet machine" % (
                  r["run"], r["other_cpu_share"]))
