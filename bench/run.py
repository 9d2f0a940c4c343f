#!/usr/bin/env python3
"""Throughput benchmark of hookd: events per second from the first ingest
request to the last message received by a loopback sink, and hookd's CPU
time per event, for a one-hook and a ten-hook scenario (stdlib only)."""

import argparse
import http.client
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = os.path.join(ROOT, "bench", "gen_events.py")
SINK = os.path.join(ROOT, "tests", "sink", "sink.py")
CATALOG = os.path.join(ROOT, "examples", "catalog.json")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BATCH = "batch_size = 500, timeout_sec = 0.2"
BUSY_SHARE = 0.2  # other processes' cores above which a run is flagged

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

SCENARIOS = {"one-hook": ONE_HOOK, "ten-hooks": TEN_HOOKS,
             "ingest-only": INGEST_ONLY}
DEFAULT_SCENARIOS = ["one-hook", "ten-hooks"]


# -- events ----------------------------------------------------------------

def generate_events(count, seed, workdir):
    """Writes COUNT events to a file in workdir; returns its path."""
    path = os.path.join(workdir, "events.ndjson")
    with open(path, "wb") as out:
        subprocess.run([sys.executable, GEN, str(count), str(seed)],
                       stdout=out, check=True)
    return path


def load_bodies(path, size):
    """Returns (request bodies of `size` NDJSON lines each, event count,
    sorted event types, the parsed events)."""
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    bodies = [b"".join(lines[i:i + size]) for i in range(0, len(lines), size)]
    events = [json.loads(line) for line in lines]
    types = sorted({e["event_type"] for e in events})
    return bodies, len(lines), types, events


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
            "poster": time.process_time(), "machine": task, "irq": irq,
            "steal": steal}


def cpu_shares(before, after, wall):
    """Per source: CPU seconds in the window divided by wall seconds (1.0 =
    one core busy). "other" is the user and system time of every other
    process on the machine."""
    d = {k: after[k] - before[k] for k in before}
    d["other"] = d.pop("machine") - d["hookd"] - d["sink"] - d["poster"]
    # The store's writer thread is part of hookd: its share is reported
    # apart but not subtracted from anything.
    return {k: max(v, 0.0) / wall for k, v in d.items()}, d


def peak_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def get_json(port, path, timeout=10):
    url = "http://127.0.0.1:%d%s" % (port, path)
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Sink:
    """tests/sink/sink.py in count-only mode on a free loopback port."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, SINK, "--port", "0", "--count-only", "--quiet"],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError("sink did not start: %r" % line)
        self.port = int(line.split()[1])

    def stats(self):
        return get_json(self.port, "/_sink/stats")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stdout.close()


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

def post_bodies(port, bodies, sizes, starts, errors, barrier):
    """Posts bodies in order over one keep-alive connection; records the
    monotonic time of the first send in starts and any non-202 in errors."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/x-ndjson"}
    barrier.wait()
    starts.append(time.monotonic())
    for body, n in zip(bodies, sizes):
        conn.request("POST", "/v1/events", body, headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 202 or json.loads(raw).get("accepted") != n:
            errors.append((resp.status, raw[:200]))
    conn.close()


def post_all(port, bodies, threads):
    """Posts every body from `threads` concurrent connections; returns
    (monotonic time of the first send, of the last answer)."""
    sizes = [body.count(b"\n") for body in bodies]
    starts, errors = [], []
    barrier = threading.Barrier(threads)
    workers = [threading.Thread(target=post_bodies, args=(
        port, bodies[i::threads], sizes[i::threads], starts, errors, barrier))
        for i in range(threads)]
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
    """Polls until every hook's queue is empty and the sink has exactly the
    messages hookd counts as sent, at least the matched total read once all
    posts were answered. Returns (hooks, totals, sink stats, matched at the
    end of posting); raises on timeout or when delivery stalls."""
    matched = totals(hookd.hooks())["matched"]
    deadline = time.monotonic() + timeout
    progress, seen = time.monotonic(), None
    while True:
        hooks = hookd.hooks()
        tot, st = totals(hooks), sink.stats()
        if (tot["queued"] == 0 and st["messages"] == tot["sent"]
                and tot["sent"] >= matched):
            return hooks, tot, st, matched
        now = time.monotonic()
        if (st["messages"], tot["sent"]) != seen:
            seen, progress = (st["messages"], tot["sent"]), now
        if now > deadline or now - progress > 15:
            raise RuntimeError(
                "delivery incomplete: matched at end of posts=%d now=%s "
                "sink=%d" % (matched, tot, st["messages"]))
        time.sleep(0.02)


# -- one run ---------------------------------------------------------------

def expected_matches(hook_specs, events):
    return {hid: sum(1 for e in events if pred(e))
            for hid, _, pred in hook_specs}


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


def run_once(args, name, hooks, bodies, expected, workdir):
    """One scenario (hooks: id -> Lua source) in a fresh sink and hookd;
    returns the result dict."""
    sink = Sink()
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
    if status != 0:
        problems.append("hookd exited with status %s" % status)
    problems += [line.strip() for line in hookd.log
                 if line.startswith(("warn ", "error "))][:10]
    return make_result(name, len(hooks), m, problems)


def measure(args, hookd, sink, bodies):
    """Posts the bodies and waits for delivery; returns the raw figures."""
    cpu0 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    t0, t_ingested = post_all(hookd.port, bodies, args.threads)
    hooks, tot, st, matched = wait_delivered(hookd, sink, args.timeout)
    cpu1 = cpu_sample(hookd.proc.pid, sink.proc.pid)
    # Nothing delivered (ingest-only): the run ends with the last answer.
    wall = (st["last_t"] if st["messages"] else t_ingested) - t0
    return {"events": sum(b.count(b"\n") for b in bodies), "t0": t0,
            "ingest_s": t_ingested - t0, "wall_s": wall, "hooks": hooks,
            "totals": tot, "sink": st, "matched": matched,
            "cpu": cpu_shares(cpu0, cpu1, wall),
            "threads": len(os.listdir("/proc/%d/task" % hookd.proc.pid)),
            "rss": peak_rss_mb(hookd.proc.pid)}


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
        "store_share_of_hookd": (secs["store"] / secs["hookd"]
                                 if secs["hookd"] else 0.0),
        "poster_cpu_share": shares["poster"],
        "other_cpu_share": shares["other"], "irq_cpu_share": shares["irq"],
        "steal_share": shares["steal"],
        "hookd_peak_rss_mb": m["rss"], "hookd_threads": m["threads"],
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
           ("store_cpu_share", "%5.2f", "store"),
           ("sink_cpu_share", "%5.2f", "sk cpu"),
           ("poster_cpu_share", "%5.2f", "post cpu"),
           ("irq_cpu_share", "%5.2f", "irq"),
           ("other_cpu_share", "%5.2f", "other"),
           ("steal_share", "%5.2f", "steal")]


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

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--request-size", type=int, default=1000,
                    help="events per ingest request")
    ap.add_argument("--threads", type=int, choices=(1, 2), default=1,
                    help="concurrent posting connections")
    ap.add_argument("--scenario", choices=("all", *SCENARIOS), default="all",
                    help="all: %s" % ", ".join(DEFAULT_SCENARIOS))
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each scenario")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--history-days", type=float, default=30,
                    help="main.json history_days (0: events not kept)")
    ap.add_argument("--hookd", default=os.path.join(ROOT, "build", "hookd"))
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds to wait for delivery")
    return ap.parse_args()


def describe_data(n_events, types, events):
    kept = sum(1 for e in events if third_by_profile(e))
    print("events=%d types=%d one-hook filter keeps %d (%.1f%%)" %
          (n_events, len(types), kept, 100.0 * kept / n_events), flush=True)


def run_all(args, workdir):
    path = generate_events(args.events, args.seed, workdir)
    bodies, n_events, types, events = load_bodies(path, args.request_size)
    describe_data(n_events, types, events)
    names = DEFAULT_SCENARIOS if args.scenario == "all" else [args.scenario]
    results = []
    for name in names:
        expected = expected_matches(SCENARIOS[name], events)
        hooks = {hid: src.replace("{actions}", lua_list(types))
                 for hid, src, _ in SCENARIOS[name]}
        for i in range(args.repeat):
            r = run_once(args, name, hooks, bodies, expected, workdir)
            r.update(run=i + 1, threads=args.threads,
                     request_size=args.request_size, seed=args.seed)
            results.append(r)
            print("%s run %d: %.0f events/s, %d messages in %.2f s" % (
                name, i + 1, r["events_per_s"], r["messages"], r["wall_s"]),
                flush=True)
    return results


def main():
    args = parse_args()
    workdir = tempfile.mkdtemp(prefix="hookd-bench-")
    try:
        results = run_all(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(results)
    summary = summarize(results)
    print_summary(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=2)
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
