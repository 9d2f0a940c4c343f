"""Backlog scenario of bench/run.py: hookd's memory while the messages of
millions of events wait in the outbox on disk for a sink that does not
answer, and then while they drain once it does.

The sink holds the hook's first batch without answering (a "hold" script
of tests/sink/sink.py). A hook has one request in flight at a time and
this one has a request timeout of an hour, so hookd just waits: nothing is
retried or dead-lettered, and every later message stays in the store. The
benchmark samples hookd's VmRSS every 100 ms throughout."""

import time

from benchlib import (BUSY_SHARE, Hookd, RssSampler, Sink, check_counts,
                      cpu_sample, cpu_shares, exit_problems, post_all, rss_mb,
                      totals, wait_delivered)

HELD_BATCH = 500  # the hook's batch_size: all the sink may see before release
PROGRESS = (10, 25, 50, 75, 100)  # percent of the events posted


def add_options(ap):
    g = ap.add_argument_group("backlog scenario (uses --events)")
    g.add_argument("--backlog-idle", type=float, default=3,
                   help="seconds the whole backlog waits before the sink "
                   "answers (default 3)")


def run(args, spec, corpus, workdir):
    """One backlog run of --events events through the hook of spec (id,
    source, predicate); returns the result dict."""
    hid, src, pred = spec
    bodies = corpus.bodies(args.events, args.request_size)
    sink, hookd, rss = Sink(kind="python"), None, None  # it holds a batch
    try:
        sink.script({"path": "/" + hid, "responses": [{"hold": True}]})
        hookd = Hookd(args.hookd, {hid: src}, sink.port, workdir,
                      args.history_days)
        hookd.wait_running([hid])
        rss = RssSampler(hookd.proc.pid)
        m = measure(args, hookd, sink, bodies)
    finally:
        status = stop_all(sink, hookd, rss)
    expected = {hid: corpus.count(pred, args.events)}
    problems = m["problems"] + check_counts(m["hooks"], expected, m["sink"])
    problems += exit_problems(hookd, status)
    r = make_result(args, m, rss, problems)
    print("backlog: %d messages on disk (%.0f MB), hookd RSS %.1f MB at "
          "the start, %.1f MB at the end, drained at %.0f msg/s" % (
              r["messages"], r["store_mb"], r["rss_mb"]["backlog_10"],
              r["rss_mb"]["backlog_100"], r["drain_messages_per_s"]),
          flush=True)
    return r


def stop_all(sink, hookd, rss):
    """Stops sampling, lets a held batch go so hookd can stop at once, then
    stops both; returns hookd's exit status."""
    if rss:
        rss.stop()
    try:
        sink.release()
    except OSError:
        pass
    status = hookd.stop() if hookd else None
    sink.stop()
    return status


def measure(args, hookd, sink, bodies):
    """Posts everything, checks that it waits, lets the sink answer and
    waits for the drain; returns the raw figures and times."""
    t = {"idle_rss": rss_mb(hookd.proc.pid)}
    answers = []
    cpu0 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    t["start"], t["posted"] = post_all(hookd.port, bodies, args.threads,
                                       answers)
    problems = check_waiting(hookd.hooks(), sink.stats())
    time.sleep(args.backlog_idle)
    store_mb = hookd.store_mb()
    t["release"] = time.monotonic()
    sink.release()
    hooks, tot, st, _ = wait_delivered(hookd, sink, args.timeout)
    t["end"] = time.monotonic()
    cpu1 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    answers.sort()
    for pct in PROGRESS:
        t["backlog_%d" % pct] = answers[max(0, len(answers) * pct // 100 - 1)]
    return {"t": t, "hooks": hooks, "totals": tot, "sink": st,
            "store_mb": store_mb, "problems": problems,
            "events": sum(b.count(b"\n") for b in bodies),
            "cpu": cpu_shares(cpu0, cpu1, t["end"] - t["start"])[0]}


def check_waiting(hooks, sink_stats):
    """Once every request is answered, every message must be queued, none
    sent, and the sink must have seen no more than the batch it holds."""
    c = totals(hooks)
    problems = []
    if c["queued"] != c["matched"] or c["sent"] or c["dead"]:
        problems.append("before the release: matched=%d queued=%d sent=%d "
                        "dead=%d (all should wait)" % (
                            c["matched"], c["queued"], c["sent"], c["dead"]))
    if sink_stats["messages"] > HELD_BATCH:
        problems.append("the sink got %d messages while it held the first "
                        "batch" % sink_stats["messages"])
    return problems


def rss_figures(rss, t):
    """RSS in MB: idle before posting, at points of the backlog's growth,
    its highest, while it sits, and during and after the drain."""
    figs = {"idle": t["idle_rss"]}
    for pct in PROGRESS:
        figs["backlog_%d" % pct] = rss.at(t["backlog_%d" % pct])
    window = rss.window(t["start"], t["release"])
    figs["backlog_peak"] = max(window)
    figs["first_quarter_peak"] = max(
        rss.window(t["start"], t["backlog_25"]) or window)
    figs["second_half_peak"] = max(
        rss.window(t["backlog_50"], t["release"]) or window)
    figs["release"] = rss.at(t["release"])
    figs["drain_peak"] = max(rss.window(t["release"], t["end"]) or [0])
    figs["end"] = rss.at(t["end"])
    return figs


def timeline(rss, t0, step=1.0):
    """One (seconds since t0, MB) sample per step, for the JSON output."""
    out, next_t = [], t0
    for ts, mb in rss.samples:
        if ts >= next_t:
            out.append((round(ts - t0, 2), round(mb, 1)))
            next_t = ts + step
    return out


def make_result(args, m, rss, problems):
    t, st, n = m["t"], m["sink"], m["events"]
    drain = (st["last_t"] or t["end"]) - t["release"]
    figs = rss_figures(rss, t)
    return {
        "scenario": "backlog", "events": n, "messages": st["messages"],
        "request_size": args.request_size, "threads": args.threads,
        "ingest_s": t["posted"] - t["start"],
        "ingest_events_per_s": n / (t["posted"] - t["start"]),
        "store_mb": m["store_mb"], "drain_s": drain,
        "drain_messages_per_s": st["messages"] / drain if drain > 0 else 0,
        "rss_mb": figs,
        "rss_growth_mb": figs["second_half_peak"] - figs["first_quarter_peak"],
        "rss_timeline": timeline(rss, t["start"]),
        "rss_parts_at_release": rss.parts_at(t["release"]),
        "counters": m["totals"], "cpu": m["cpu"],
        "other_cpu_share": m["cpu"]["other"] + m["cpu"]["steal"],
        "problems": problems,
    }


def print_result(r):
    f = r["rss_mb"]
    print("\nbacklog run %s: %d events posted at %.0f/s into a held sink, "
          "%d messages, store %.0f MB on disk" % (
              r["run"], r["events"], r["ingest_events_per_s"],
              r["messages"], r["store_mb"]))
    print("  hookd RSS MB: idle %.1f | backlog at 10%% %.1f, 25%% %.1f, "
          "50%% %.1f, 75%% %.1f, 100%% %.1f, peak %.1f | released %.1f" % (
              f["idle"], f["backlog_10"], f["backlog_25"], f["backlog_50"],
              f["backlog_75"], f["backlog_100"], f["backlog_peak"],
              f["release"]))
    print("  growth (peak of the second half - peak of the first quarter) "
          "%+.1f MB" % r["rss_growth_mb"])
    parts = r["rss_parts_at_release"] or {}
    print("  at the release: " + ", ".join(
        "%s %.1f MB" % (k, parts[k]) for k in sorted(parts)))
    print("  drain: %.1f s, %.0f msg/s, RSS peak %.1f MB, at the end %.1f MB"
          % (r["drain_s"], r["drain_messages_per_s"], f["drain_peak"],
             f["end"]))
    print("  cpu: hookd %.2f  sink %.2f  other %.2f" % (
        r["cpu"]["hookd"], r["cpu"]["sink"], r["other_cpu_share"]))
    for prob in r["problems"]:
        print("PROBLEM backlog run %s: %s" % (r["run"], prob))
    if r["other_cpu_share"] > BUSY_SHARE:
        print("NOTE backlog run %s: other processes used %.2f cores during "
              "the run; its figures are not from a quiet machine" % (
                  r["run"], r["other_cpu_share"]))
