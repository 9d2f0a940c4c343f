#!/usr/bin/env python3
"""Benchmark of hookd on one machine over loopback (stdlib only).
Throughput: events per second from the first ingest request to the last
message received by a loopback sink, and hookd's CPU time per event, for a
one-hook and a ten-hook scenario. Latency: from the 202 to the sink, at a
steady rate. Backlog: hookd's memory while millions of messages wait on
disk for a sink that does not answer, then drain."""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import backlog
import latency
from benchlib import (BUSY_SHARE, ROOT, SINK_KINDS, Corpus, Hookd,
                      RssSampler, Sink, check_counts, cpu_sample, cpu_shares,
                      exit_problems, generate_events, peak_rss_mb, post_all,
                      sink_binary, wait_delivered)

BATCH = "batch_size = 500, timeout_sec = 0.2"

SMS = ["send_sms", "deliv_sms", "undeliv_sms", "click_sms", "uclick_sms",
       "unsub_sms"]
PUSH = ["send_push", "deliv_push", "undeliv_push", "open_push", "uopen_push",
        "click_push", "uclick_push"]
DELIVERY = ["send", "deliv", "undeliv", "sbounce", "hbounce", "complain",
            "suppress", "send_sms", "deliv_sms", "undeliv_sms", "send_push",
            "deliv_push", "undeliv_push"]
BOUNCES = ["undeliv", "sbounce", "hbounce", "complain", "suppress",
           "undeliv_sms", "undeliv_push"]
SUBSCRIPTIONS = ["unsub", "confirm", "confirmsub", "subscription_status",
                 "unsub_sms"]
IMPORTS = ["import_manual", "import_file", "import_api", "profile_merge",
           "profile_split"]
CLICKS = ["click", "uclick", "click_sms", "click_push"]
ENGAGEMENT = ["open", "uopen", "click", "uclick"]


# -- hooks -----------------------------------------------------------------
# Each hook is (id, Lua source with {url} and {actions}, Python predicate).
# The predicate restates the hook's match so the benchmark can check that
# hookd's `matched` counters agree with an independent count.

def lua_list(names):
    return "{" + ", ".join('"%s"' % n for n in names) + "}"


def data(e):
    d = e.get("event_data")
    return d if isinstance(d, dict) else {}


def in_ids(value, ids):
    try:
        return int(value) in ids
    except (TypeError, ValueError):
        return False


def third_by_profile(e):
    """The one-hook filter: the first byte of profile_id divisible by 3."""
    return int(e["profile_id"][:2], 16) % 3 == 0


ONE_HOOK = [("sampled", """-- benchmark: a third of the stream, by profile_id
return {
  database = "all",
  actions = {actions},
  filter = function(event)
    local p = event.profile_id
    return type(p) == "string" and tonumber(p:sub(1, 2), 16) % 3 == 0
  end,
  custom_data = {
    cname = "{{campaign_name}}",
    day = "{{event_date_ymd}}",
    id = "{{uuid}}",
  },
  send = {type = "http", url = "{url}", """ + BATCH + """},
}
""", third_by_profile)]


def hook_src(comment, body):
    """A hook file: the comment line, then `return {...}` with the given
    settings and the benchmark's send settings."""
    return ("-- benchmark: %s\nreturn {\n%s"
            "  send = {type = \"http\", url = \"{url}\", %s},\n}\n"
            % (comment, body, BATCH))


TEN_HOOKS = [
    ("crm_clicks", hook_src("clicks of database 111 with templates", """\
  database = 111,
  actions = %s,
  profile_fields = {"email", "_fname"},
  custom_data = {cname = "{{campaign_name}}", day = "{{event_date_ymd}}",
                 id = "{{uuid}}",
                 source = "{{database_name}} / {{message_name}}"},
""" % lua_list(["click", "uclick"])),
     lambda e: e.get("list_id") == 111 and
     e["event_type"] in ("click", "uclick")),
    ("warehouse", hook_src("every delivery event", """\
  database = "all",
  actions = %s,
""" % lua_list(DELIVERY)),
     lambda e: e["event_type"] in DELIVERY),
    ("utm_mobile", hook_src("mobile clicks with UTM tags, reshaped", """\
  database = "all",
  actions = %s,
  filter = function(event)
    local d = event.event_data
    return type(d) == "table" and d.device == "mobile"
      and type(d.link_url) == "string" and d.link_url:find("[?&]utm_") ~= nil
  end,
  shape = function(message, event)
    local d = event.event_data
    local tags = {}
    for k, v in d.link_url:gmatch("[?&](utm_[%%w_]+)=([^&#]*)") do
      tags[k] = v
    end
    return {kind = event.event_type, at = event.event_date,
            profile = event.profile_id or json.null,
            campaign = d.campaign_id, url = d.link_url, utm = tags}
  end,
""" % lua_list(CLICKS)),
     lambda e: e["event_type"] in CLICKS and data(e).get("device") ==
     "mobile" and "utm_" in data(e).get("link_url", "")),
    ("bf_opens", hook_src("opens of two campaigns", """\
  database = "all",
  actions = {"open", "uopen"},
  filters = {campaigns = {973, 974}},
  custom_data = {cname = "{{campaign_name}}", subid = "{{campaign_subid}}",
                 at = "{{event_date_rfc3339}}"},
"""),
     lambda e: e["event_type"] in ("open", "uopen") and
     in_ids(data(e).get("campaign_id"), {973, 974})),
    ("sms", hook_src("SMS events of database 111 with profile fields", """\
  database = 111,
  actions = %s,
  profile_fields = {"email", "city"},
  custom_data = {res = "{{resource_name}}", id = "{{uuid}}"},
""" % lua_list(SMS)),
     lambda e: e.get("list_id") == 111 and e["event_type"] in SMS),
    ("push", hook_src("push events with content", """\
  database = "all",
  actions = %s,
  content = true,
  custom_data = {ts = "{{event_date_unix}}"},
""" % lua_list(PUSH)),
     lambda e: e["event_type"] in PUSH),
    ("bounces", hook_src("bounces of two resources", """\
  database = "all",
  actions = %s,
  filters = {resources = {3, 4}},
  custom_data = {subject = "{{message_subject}}"},
""" % lua_list(BOUNCES)),
     lambda e: e["event_type"] in BOUNCES and (
         in_ids(data(e).get("resource_id"), {3, 4}) or
         any(in_ids(s.get("resource_id"), {3, 4})
             for s in e.get("subscription") or [] if isinstance(s, dict)))),
    ("subscriptions", hook_src("subscription changes of database 50", """\
  database = 50,
  actions = %s,
  profile_fields = {"email"},
""" % lua_list(SUBSCRIPTIONS)),
     lambda e: e.get("list_id") == 50 and
     e["event_type"] in SUBSCRIPTIONS),
    ("imports", hook_src("big imports and profile changes, not tests", """\
  database = "all",
  actions = %s,
  filter = function(event)
    if event.is_test then return false end
    if event.event_type:sub(1, 8) == "profile_" then return true end
    local d = event.event_data
    return type(d) == "table" and (tonumber(d.fields_updated) or 0) >= 4
  end,
""" % lua_list(IMPORTS)),
     lambda e: e["event_type"] in IMPORTS and not e.get("is_test") and (
         e["event_type"].startswith("profile_") or
         (data(e).get("fields_updated") or 0) >= 4)),
    ("segments", hook_src("engagement of two segments in database 111", """\
  database = 111,
  actions = %s,
  filters = {segments = {41, 42}},
  custom_data = {seg = "{{segment_name}}", at = "{{event_date}}",
                 ns = "{{event_date_unixnano}}"},
""" % lua_list(ENGAGEMENT)),
     lambda e: e.get("list_id") == 111 and e["event_type"] in ENGAGEMENT
     and in_ids(data(e).get("segment_id"), {41, 42})),
]

# Not part of "all": one hook whose action never occurs, so every event is
# ingested, validated and routed but nothing is matched or delivered; the
# floor of hookd's cost per event.
INGEST_ONLY = [("nomatch", hook_src("an action that never occurs", """\
  database = "all",
  actions = {"bench_no_such_event"},
"""), lambda e: False)]

# The backlog scenario: every event becomes a message (with the one-hook's
# templates), so N events put N messages in the outbox; the sink holds the
# first batch unanswered, and a request timeout of an hour keeps hookd
# waiting for it rather than retrying.
BACKLOG = ("backlog", """-- benchmark: every event, to a sink that holds
return {
  database = "all",
  actions = {actions},
  custom_data = {
    cname = "{{campaign_name}}",
    day = "{{event_date_ymd}}",
    id = "{{uuid}}",
  },
  send = {type = "http", url = "{url}", batch_size = 500, timeout_sec = 0.2,
          request_timeout_sec = 3600},
}
""", lambda e: True)

SCENARIOS = {"one-hook": ONE_HOOK, "ten-hooks": TEN_HOOKS,
             "ingest-only": INGEST_ONLY}
OTHER_SCENARIOS = ["latency", "backlog"]
DEFAULT_SCENARIOS = ["one-hook", "ten-hooks"]


# -- one run ---------------------------------------------------------------

def expected_matches(hook_specs, corpus, n):
    return {hid: corpus.count(pred, n) for hid, _, pred in hook_specs}


def run_once(args, name, hooks, bodies, expected, workdir):
    """One scenario (hooks: id -> Lua source) in a fresh sink (--sink, by
    default the C one when built) and hookd; returns the result dict."""
    sink = Sink(kind=args.sink, binary=sink_binary(args.hookd))
    hookd = None
    try:
        hookd = Hookd(args.hookd, hooks, sink.port, workdir,
                      args.history_days)
        hookd.wait_running(list(hooks))
        m = measure(args, hookd, sink, bodies)
    finally:
        status = hookd.stop() if hookd else None
        sink.stop()
    problems = check_counts(m["hooks"], expected, m["sink"])
    if m["matched"] != m["totals"]["matched"]:
        problems.append("matched grew after the last post was answered: "
                        "%d then %d" % (m["matched"], m["totals"]["matched"]))
    problems += exit_problems(hookd, status)
    r = make_result(name, len(hooks), m, problems)
    r["sink"] = sink.kind
    return r


def measure(args, hookd, sink, bodies):
    """Posts the bodies and waits for delivery; returns the raw figures."""
    rss = RssSampler(hookd.proc.pid)
    cpu0 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    t0, t_ingested = post_all(hookd.port, bodies, args.threads)
    hooks, tot, st, matched = wait_delivered(hookd, sink, args.timeout)
    cpu1 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    rss.stop()
    # Nothing delivered (ingest-only): the run ends with the last answer.
    wall = (st["last_t"] if st["messages"] else t_ingested) - t0
    return {"events": sum(b.count(b"\n") for b in bodies), "t0": t0,
            "ingest_s": t_ingested - t0, "wall_s": wall, "hooks": hooks,
            "totals": tot, "sink": st, "matched": matched,
            "cpu": cpu_shares(cpu0, cpu1, wall),
            "threads": len(os.listdir("/proc/%d/task" % hookd.proc.pid)),
            "rss": peak_rss_mb(hookd.proc.pid),
            "rss_steady": steady_rss(rss, t0, time.monotonic())}


def steady_rss(rss, t0, t1):
    """(median, highest) RSS sampled over the second half of the run, when
    the queues and caches have had time to reach their working size."""
    half = rss.window((t0 + t1) / 2, t1) or [mb for _, mb in rss.samples]
    return statistics.median(half), max(half)


def make_result(name, n_hooks, m, problems):
    n, msgs, wall = m["events"], m["sink"]["messages"], m["wall_s"]
    shares, secs = m["cpu"]
    return {
        "scenario": name, "hooks": n_hooks, "events": n, "messages": msgs,
        "matched": m["matched"], "counters": m["totals"], "wall_s": wall,
        "ingest_s": m["ingest_s"], "events_per_s": n / wall,
        "messages_per_s": msgs / wall,
        "ingest_events_per_s": n / m["ingest_s"],
        "hookd_cpu_us_per_event": secs["hookd"] / n * 1e6,
        "sink_cpu_us_per_message": secs["sink"] / msgs * 1e6 if msgs else None,
        "cpu_s": secs,
        "hookd_cpu_share": shares["hookd"], "sink_cpu_share": shares["sink"],
        "store_cpu_share": shares["store"],
        "loop_cpu_share": shares["loop"],
        "loop_cpu_us_per_event": secs["loop"] / n * 1e6,
        "store_share_of_hookd": (secs["store"] / secs["hookd"]
                                 if secs["hookd"] else 0.0),
        "poster_cpu_share": shares["poster"],
        "other_cpu_share": shares["other"], "irq_cpu_share": shares["irq"],
        "steal_share": shares["steal"],
        "hookd_peak_rss_mb": m["rss"], "hookd_threads": m["threads"],
        "hookd_steady_rss_mb": m["rss_steady"][0],
        "hookd_late_max_rss_mb": m["rss_steady"][1],
        "requests_to_sink": m["sink"]["requests"],
        "per_hook": {h["id"]: h["counters"] for h in m["hooks"]},
        "problems": problems,
    }


# -- report ----------------------------------------------------------------

COLUMNS = [("scenario", "%-10s", "scenario"), ("run", "%3s", "run"),
           ("events", "%7d", "events"), ("messages", "%8d", "msgs"),
           ("wall_s", "%6.2f", "wall s"),
           ("events_per_s", "%8.0f", "ev/s"),
           ("messages_per_s", "%8.0f", "msg/s"),
           ("ingest_events_per_s", "%8.0f", "ingest/s"),
           ("hookd_cpu_us_per_event", "%6.1f", "us/ev"),
           ("hookd_cpu_share", "%5.2f", "hk cpu"),
           ("loop_cpu_us_per_event", "%5.1f", "loop us"),
           ("store_cpu_share", "%5.2f", "store"),
           ("sink_cpu_share", "%5.2f", "sk cpu"),
           ("poster_cpu_share", "%5.2f", "post cpu"),
           ("irq_cpu_share", "%5.2f", "irq"),
           ("other_cpu_share", "%5.2f", "other"),
           ("steal_share", "%5.2f", "steal"),
           ("hookd_steady_rss_mb", "%5.1f", "rss MB"),
           ("hookd_peak_rss_mb", "%5.1f", "peak")]


def print_table(results):
    rows = [[h for _, _, h in COLUMNS]]
    rows += [[fmt % r[k] for k, fmt, _ in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    for r in results:
        for p in r["problems"]:
            print("PROBLEM %s run %s: %s" % (r["scenario"], r["run"], p))
        if r["other_cpu_share"] + r["steal_share"] > BUSY_SHARE:
            print("NOTE %s run %s: other processes used %.2f cores during "
                  "the run; its figures are not from a quiet machine" % (
                      r["scenario"], r["run"],
                      r["other_cpu_share"] + r["steal_share"]))


def summarize(results):
    """Median and min..max of the main figures per scenario."""
    out = {}
    for name in sorted({r["scenario"] for r in results}):
        rs = [r for r in results if r["scenario"] == name]
        out[name] = {k: {"median": statistics.median(r[k] for r in rs),
                         "min": min(r[k] for r in rs),
                         "max": max(r[k] for r in rs)}
                     for k in ("events_per_s", "messages_per_s", "wall_s",
                               "hookd_cpu_us_per_event", "sink_cpu_share",
                               "hookd_cpu_share", "ingest_events_per_s",
                               "poster_cpu_share", "store_cpu_share",
                               "store_share_of_hookd")}
        out[name]["runs"] = len(rs)
    return out


def print_summary(summary):
    print("\nmedian (min..max) per scenario:")
    for name, s in summary.items():
        ev, msg = s["events_per_s"], s["messages_per_s"]
        us = s["hookd_cpu_us_per_event"]
        print("  %-10s runs=%d  ev/s %.0f (%.0f..%.0f)  msg/s %.0f "
              "(%.0f..%.0f)  hookd us/ev %.1f (%.1f..%.1f)" % (
                  name, s["runs"], ev["median"], ev["min"], ev["max"],
                  msg["median"], msg["min"], msg["max"],
                  us["median"], us["min"], us["max"]))


# -- main ------------------------------------------------------------------

def scenario_list(text):
    """--scenario: one name, `all`, or names separated by commas."""
    known = ["all", *SCENARIOS, *OTHER_SCENARIOS]
    names = []
    for name in text.split(","):
        if name not in known:
            raise argparse.ArgumentTypeError(
                "unknown scenario %r (known: %s)" % (name, ", ".join(known)))
        names += DEFAULT_SCENARIOS if name == "all" else [name]
    return names


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200000,
                    help="events of a throughput or backlog run")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--corpus", help="an NDJSON file of gen_events.py to "
                    "use instead of generating one")
    ap.add_argument("--corpus-events", type=int, default=200000,
                    help="events generated at most; runs with more go "
                    "round them again")
    ap.add_argument("--request-size", type=int, default=1000,
                    help="events per ingest request")
    ap.add_argument("--threads", type=int, choices=range(1, 9), default=1,
                    metavar="1..8", help="concurrent posting connections")
    ap.add_argument("--scenario", type=scenario_list, default="all",
                    help="all (= %s), %s, or several joined by commas" % (
                        ", ".join(DEFAULT_SCENARIOS),
                        ", ".join([*SCENARIOS, *OTHER_SCENARIOS])))
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each scenario")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--history-days", type=float, default=30,
                    help="main.json history_days (0: events not kept)")
    ap.add_argument("--hookd", default=os.path.join(ROOT, "build", "hookd"))
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds to wait for delivery")
    ap.add_argument("--sink", choices=SINK_KINDS,
                    help="sink of the throughput scenarios: c (bench/sink.c,"
                    " the default when built beside --hookd) or python "
                    "(tests/sink/sink.py); latency and backlog always use "
                    "the Python one")
    latency.add_options(ap)
    backlog.add_options(ap)
    return ap.parse_args()


def load_corpus(args, workdir):
    """The corpus to draw events from: --corpus, or generated once for the
    largest run asked for (at most --corpus-events)."""
    path = args.corpus
    if not path:
        others = [n for n in args.scenario if n != "latency"]
        want = max(args.events if others else 0, latency.events_wanted(args))
        path = generate_events(min(want, args.corpus_events), args.seed,
                               os.path.join(workdir, "events.ndjson"))
    corpus = Corpus(path)
    kept = corpus.count(third_by_profile, len(corpus))
    print("corpus: events=%d types=%d one-hook filter keeps %d (%.1f%%)" % (
        len(corpus), len(corpus.types), kept, 100.0 * kept / len(corpus)),
        flush=True)
    return corpus


def with_actions(spec, corpus):
    hid, src, pred = spec
    return hid, src.replace("{actions}", lua_list(corpus.types)), pred


def run_throughput(args, name, corpus, workdir):
    expected = expected_matches(SCENARIOS[name], corpus, args.events)
    bodies = corpus.bodies(args.events, args.request_size)
    hooks = {hid: src for hid, src, _ in
             (with_actions(spec, corpus) for spec in SCENARIOS[name])}
    r = run_once(args, name, hooks, bodies, expected, workdir)
    r.update(threads=args.threads, request_size=args.request_size,
             seed=args.seed)
    print("%s: %.0f events/s, %d messages in %.2f s, hookd RSS %.1f MB, "
          "%s sink" % (name, r["events_per_s"], r["messages"], r["wall_s"],
                       r["hookd_steady_rss_mb"], r["sink"]), flush=True)
    return r


def run_scenario(args, name, corpus, workdir):
    if name == "latency":
        return latency.run(args, with_actions(ONE_HOOK[0], corpus), corpus,
                           workdir)
    if name == "backlog":
        return backlog.run(args, with_actions(BACKLOG, corpus), corpus,
                           workdir)
    return run_throughput(args, name, corpus, workdir)


def run_all(args, workdir):
    corpus = load_corpus(args, workdir)
    results = []
    for name in args.scenario:
        for i in range(args.repeat):
            r = run_scenario(args, name, corpus, workdir)
            r["run"] = i + 1
            results.append(r)
    return results


def report(results):
    """Prints every result by kind; returns the throughput summary."""
    throughput = [r for r in results if r["scenario"] in SCENARIOS]
    if throughput:
        print()
        print_table(throughput)
    for r in results:
        if r["scenario"] == "latency":
            latency.print_result(r)
        elif r["scenario"] == "backlog":
            backlog.print_result(r)
    summary = summarize(throughput)
    if summary:
        print_summary(summary)
    return summary


def main():
    args = parse_args()
    workdir = tempfile.mkdtemp(prefix="hookd-bench-")
    try:
        results = run_all(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=2)
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
