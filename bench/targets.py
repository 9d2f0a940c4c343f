#!/usr/bin/env python3
"""Every benchmark of hookd in one command, each figure set against the
target of the speed work (two million events by default, a generated
corpus of 200,000 going round ten times; takes two to three minutes on
two cores):

    bench/targets.py                       # scripts/build.sh first
    bench/targets.py --events 200000       # a quicker, rougher look

Runs bench/run.py's one-hook, ten-hooks, latency and backlog scenarios on
one generated corpus, then bench/brokers.py --kafka --rabbitmq (a quorum
queue published to over two connections unless --queue-type classic or
--connections 1), and prints one line per target: the
figure and PASS or MISS. Exit status: 0 when every
target passed, 2 when some missed, 1 when a run failed or reported a
PROBLEM (a lost message, a counter that disagrees, an error logged)."""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from benchlib import BUSY_SHARE, ROOT, generate_events

RUN = os.path.join(ROOT, "bench", "run.py")
BROKERS = os.path.join(ROOT, "bench", "brokers.py")
BROKER_LINE = re.compile(r"^(kafka|rabbitmq)\s+(\d+) messages in\s+"
                         r"([\d.]+) s:\s+([\d.]+) messages/s")
SCENARIOS = ("one-hook", "ten-hooks", "latency", "backlog")
TARGET_EVENTS = 2000000
# "Flat" during the backlog: the highest RSS of its second half at most this
# much above the highest of its first quarter. Messages kept in memory
# would add several hundred bytes each, hundreds of MB over two million.
FLAT_MB = 10.0


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=TARGET_EVENTS,
                    help="events of the throughput and backlog runs")
    ap.add_argument("--hookd", default=os.path.join(ROOT, "build", "hookd"))
    ap.add_argument("--threads", type=int, choices=range(1, 9), default=3,
                    metavar="1..8", help="posting connections of the "
                    "throughput and backlog runs (run.py; default 3)")
    ap.add_argument("--sink", choices=("c", "python"),
                    help="sink of the throughput runs (run.py --sink)")
    ap.add_argument("--no-brokers", action="store_true",
                    help="skip bench/brokers.py")
    ap.add_argument("--queue-type", choices=("classic", "quorum"),
                    default="quorum",
                    help="the RabbitMQ hook's queue_type (brokers.py "
                    "--queue-type; default quorum, the durable queue "
                    "RabbitMQ recommends)")
    ap.add_argument("--connections", type=int, choices=range(1, 5),
                    default=2, metavar="1..4",
                    help="the RabbitMQ hook's connections (brokers.py "
                    "--connections)")
    ap.add_argument("--json", help="write every result and verdict here")
    return ap.parse_args()


def run_scenario(args, name, corpus, workdir):
    """One run.py scenario; returns its result dict, or None when the run
    failed before writing one."""
    out = os.path.join(workdir, name + ".json")
    cmd = [sys.executable, RUN, "--scenario", name, "--hookd", args.hookd,
           "--events", str(args.events), "--corpus", corpus,
           "--threads", str(args.threads), "--json", out]
    if args.sink:
        cmd += ["--sink", args.sink]
    print("\n$ " + " ".join(cmd[1:]), flush=True)
    status = subprocess.run(cmd).returncode
    if not os.path.exists(out):
        print("PROBLEM %s: run.py exited with %d and no results" % (
            name, status))
        return None
    with open(out) as f:
        return json.load(f)["results"][0]


def run_brokers(args):
    """bench/brokers.py as it is; returns {broker: messages/s} of the
    lines it printed, and its exit status."""
    cmd = [sys.executable, BROKERS, "--kafka", "--rabbitmq",
           "--queue-type", args.queue_type,
           "--connections", str(args.connections), "--hookd", args.hookd]
    print("\n$ " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    rates = {}
    for line in proc.stdout.splitlines():
        m = BROKER_LINE.match(line)
        if m:
            rates[m.group(1)] = float(m.group(4))
    return rates, proc.returncode


# -- verdicts --------------------------------------------------------------
# Each is (target, figure text, PASS/MISS/ERROR, other processes' cores).

def busy(r):
    return r.get("other_cpu_share", 0.0) + r.get("steal_share", 0.0)


def throughput(r, floor, label):
    if r is None:
        return (label, "no result", "ERROR", None)
    ok = r["events_per_s"] >= floor and not r["problems"]
    fig = "{:,.0f} ev/s over {:,} events".format(r["events_per_s"],
                                                 r["events"])
    if r["problems"]:
        fig += ", %d PROBLEM lines" % len(r["problems"])
    return (label, fig, "PASS" if ok else "MISS", busy(r))


def latency(r):
    label = "latency at 20,000 ev/s: p99 beyond timeout_sec < 50 ms"
    if r is None:
        return (label, "no result", "ERROR", None)
    p99 = r["beyond_timeout_ms"]["p99"]
    # The figure holds for the rate only if the requests left on time: when
    # hookd answers too slowly the poster falls behind, then catches up in
    # a burst.
    late = r["late_ms"]["p99"]
    paced = (r["rate_achieved"] or 0) >= 0.95 * r["rate"] and late <= 50
    fig = "p99 %.1f ms beyond %g s (%.1f ms after the 202)" % (
        p99, r["timeout_sec"], r["sink_after_202_ms"]["p99"])
    if not paced:
        fig += "; not paced: %.0f ev/s, p99 %.0f ms late" % (
            r["rate_achieved"] or 0, late)
    ok = p99 < 50 and paced and r["rate"] >= 20000 and not r["problems"]
    return (label, fig, "PASS" if ok else "MISS", busy(r))


def steady_rss(r):
    label = "RSS < 100 MB at steady state, ten hooks"
    if r is None:
        return (label, "no result", "ERROR", None)
    fig = "%.1f MB (peak %.1f MB)" % (r["hookd_steady_rss_mb"],
                                      r["hookd_peak_rss_mb"])
    ok = r["hookd_steady_rss_mb"] < 100
    return (label, fig, "PASS" if ok else "MISS", busy(r))


def backlog_rss(r, flat_mb):
    label = "RSS flat during a backlog on disk, nothing lost"
    if r is None:
        return (label, "no result", "ERROR", None)
    f = r["rss_mb"]
    fig = ("peak {:.1f} MB in the first quarter, {:.1f} in the second half "
           "of {:,} queued messages ({:+.1f} MB)").format(
        f["first_quarter_peak"], f["second_half_peak"], r["messages"],
        r["rss_growth_mb"])
    if r["problems"]:
        fig += ", %d PROBLEM lines" % len(r["problems"])
    ok = r["rss_growth_mb"] <= flat_mb and not r["problems"]
    return (label, fig, "PASS" if ok else "MISS", busy(r))


def broker(rates, status, name, what=""):
    label = "%s%s >= 50,000 msg/s" % (name, what)
    if name.lower() not in rates:
        return (label, "no figure (brokers.py exit %s)" % status, "ERROR",
                None)
    rate = rates[name.lower()]
    return (label, "{:,.0f} msg/s".format(rate),
            "PASS" if rate >= 50000 else "MISS", None)


def verdicts(res, brokers, args):
    rows = [
        throughput(res["one-hook"], 200000, "one hook >= 200,000 ev/s"),
        throughput(res["ten-hooks"], 50000,
                   "ten hooks >= 50,000 ev/s, each delivers all"),
        latency(res["latency"]),
        steady_rss(res["ten-hooks"]),
        backlog_rss(res["backlog"], FLAT_MB),
    ]
    if brokers is not None:
        rates, status = brokers
        rows += [broker(rates, status, "Kafka"),
                 broker(rates, status, "RabbitMQ",
                       " (%s queue, %d connection%s)"
                       % (args.queue_type, args.connections,
                          "s" if args.connections > 1 else ""))]
    return rows


def print_verdicts(args, rows):
    print("\nTARGETS ({:,} events{})".format(
        args.events, "" if args.events >= TARGET_EVENTS else
        "; the targets are over {:,}".format(TARGET_EVENTS)))
    width = max(len(r[0]) for r in rows)
    for label, fig, verdict, other in rows:
        note = ""
        if other is not None and other > BUSY_SHARE:
            note = "  (other processes used %.2f cores)" % other
        print("%-5s  %-*s  %s%s" % (verdict, width, label, fig, note))


def main():
    args = parse_args()
    workdir = tempfile.mkdtemp(prefix="hookd-targets-")
    try:
        corpus = generate_events(min(args.events, 200000), 7,
                                 os.path.join(workdir, "events.ndjson"))
        res = {name: run_scenario(args, name, corpus, workdir)
               for name in SCENARIOS}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    brokers = None if args.no_brokers else run_brokers(args)
    rows = verdicts(res, brokers, args)
    print_verdicts(args, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": res, "verdicts": rows,
                       "brokers": brokers}, f, indent=2)
    if any(v == "ERROR" for _, _, v, _ in rows) or any(
            r and r["problems"] for r in res.values()):
        return 1
    return 0 if all(v == "PASS" for _, _, v, _ in rows) else 2


if __name__ == "__main__":
    sys.exit(main())
