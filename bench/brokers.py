#!/usr/bin/env python3
"""Messages per second from hookd to a broker with confirmations on: the
Kafka mock cluster (acks=all, idempotent producer) and a RabbitMQ queue
(publisher confirms), end to end, from the first ingest request to the
last message the broker confirmed (the hook's `sent` counter).

    bench/brokers.py --kafka --rabbitmq --events 200000 --repeat 3
    bench/brokers.py --rabbitmq --queue-type quorum   # a quorum queue

The Kafka mock cluster comes from build/kafka_mock_cluster; RabbitMQ is
started with tests/rabbitmq/broker.sh on a free port in a temp dir. Each
run also shows the CPU, in cores, of hookd, of the broker and of every
other process on the machine over the same window; a run where the
others used more than 0.2 core gets a NOTE (the figure is not clean)."""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROKER_SH = os.path.join(ROOT, "tests", "rabbitmq", "broker.sh")
HZ = os.sysconf("SC_CLK_TCK")
OTHER_MAX = 0.2  # cores used by other processes before a run gets a NOTE


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_cpu():
    """CPU seconds the whole machine used so far (user, nice, system,
    irq, softirq)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ


def proc_cpu(pid):
    """CPU seconds of a process, all its threads; 0 once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ


def cpu_now(hookd_pid, broker_pid):
    own = os.times()
    return (machine_cpu(), proc_cpu(hookd_pid), proc_cpu(broker_pid),
            own.user + own.system)


def get_json(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                timeout=10) as r:
        return json.loads(r.read())


def post(port, body):
    req = urllib.request.Request(
        "http://127.0.0.1:%d/v1/events" % port, data=body, method="POST",
        headers={"Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=60) as r:
        if r.status != 202:
            raise RuntimeError("ingest answered %d" % r.status)


def bodies(n, per_request):
    """NDJSON requests of per_request click events, 10 profiles."""
    out = []
    for start in range(0, n, per_request):
        lines = []
        for i in range(start, min(n, start + per_request)):
            lines.append(json.dumps({
                "event_type": "click", "list_id": 111,
                "event_date": "2026-11-01T10:00:00Z",
                "profile_id": "p%d" % (i % 10),
                "event_data": {"campaign_id": 973, "link_url":
                               "https://example.com/a?utm_source=x"},
                "custom_data": {"n": i}}))
        out.append(("\n".join(lines) + "\n").encode())
    return out


class Hookd:
    def __init__(self, binary, send, workdir):
        self.dir = tempfile.mkdtemp(prefix="hookd-", dir=workdir)
        os.makedirs(os.path.join(self.dir, "plugins", "lib"))
        with open(os.path.join(self.dir, "plugins", "b.lua"), "w") as f:
            f.write('return {database = "all", actions = {"click"}, '
                    'send = %s}\n' % send)
        with open(os.path.join(self.dir, "main.json"), "w") as f:
            json.dump({"listen": "127.0.0.1:0", "data_dir": "data",
                       "plugins_dir": "plugins", "log_level": "info",
                       "history_days": 0, "HOOK_RETRY_PERIOD_SEC": 1}, f)
        self.log = open(os.path.join(self.dir, "hookd.log"), "w+")
        self.proc = subprocess.Popen(
            [binary, "run", "--config", os.path.join(self.dir, "main.json")],
            stdout=subprocess.DEVNULL, stderr=self.log)
        try:
            self.port = self.wait_port()
        except RuntimeError:
            self.proc.kill()
            raise

    def wait_port(self):
        for _ in range(200):
            time.sleep(0.05)
            self.log.seek(0)
            for line in self.log:
                if " port=" in line:
                    return int(line.split(" port=")[1].split()[0])
        raise RuntimeError("hookd did not start")

    def counters(self):
        return get_json(self.port, "/v1/hooks/b")["counters"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def run(binary, send, n, per_request, workdir, broker_pid):
    hookd = Hookd(binary, send, workdir)
    try:
        for _ in range(100):
            if get_json(hookd.port, "/v1/hooks/b")["state"] == "running":
                break
            time.sleep(0.05)
        reqs = bodies(n, per_request)
        cpu0 = cpu_now(hookd.proc.pid, broker_pid)
        t0 = time.monotonic()
        for body in reqs:
            post(hookd.port, body)
        while True:
            c = hookd.counters()
            if c["sent"] + c["dead"] >= n:
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError("not delivered: %s" % c)
            time.sleep(0.01)
        wall = time.monotonic() - t0
        used = [b - a for a, b in
                zip(cpu0, cpu_now(hookd.proc.pid, broker_pid))]
        # The benchmark's own CPU counts as other: it shares the cores.
        return {"messages": n, "wall_s": wall, "per_s": n / wall,
                "counters": c, "hookd": used[1] / wall,
                "broker": used[2] / wall,
                "other": (used[0] - used[1] - used[2]) / wall,
                "bench": used[3] / wall}
    finally:
        hookd.stop()


def kafka(args, workdir):
    binary = os.path.join(os.path.dirname(args.hookd), "kafka_mock_cluster")
    mock = subprocess.Popen([binary, "3"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        brokers = mock.stdout.readline().strip()
        send = ('{type = "kafka", brokers = {%s}, topic = "clicks", '
                'batch_size = %d, timeout_sec = 0.05}' % (
                    ", ".join(json.dumps(b) for b in brokers.split(",")),
                    args.batch))
        return run(args.hookd, send, args.events, args.request_size, workdir,
                   mock.pid)
    finally:
        mock.stdin.close()
        mock.wait(10)


def rabbitmq(args, workdir):
    port = free_port()
    base = os.path.join(workdir, "rabbit")
    subprocess.run([BROKER_SH, "start", base, str(port)], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        send = ('{type = "rabbitmq_queue", host = "127.0.0.1", port = %d, '
                'queue = "bench", queue_type = "%s", connections = %d, '
                'batch_size = %d, timeout_sec = 0.05}'
                % (port, args.queue_type, args.connections, args.batch))
        with open(os.path.join(base, "node.pid")) as f:
            beam = int(f.read().strip() or 0)
        return run(args.hookd, send, args.events, args.request_size, workdir,
                   beam)
    finally:
        subprocess.run([BROKER_SH, "stop", base, str(port)],
                       stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--request-size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1000,
                    help="the hook's batch_size (messages per round of "
                    "confirmations)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per broker; the median is printed")
    ap.add_argument("--kafka", action="store_true")
    ap.add_argument("--rabbitmq", action="store_true")
    ap.add_argument("--queue-type", choices=("classic", "quorum"),
                    default="classic",
                    help="the RabbitMQ hook's queue_type (the queue it "
                    "declares)")
    ap.add_argument("--connections", type=int, default=1,
                    help="the RabbitMQ hook's connections (1 to 4)")
    ap.add_argument("--hookd", default=os.path.join(ROOT, "build", "hookd"))
    args = ap.parse_args()
    if not (args.kafka or args.rabbitmq):
        args.kafka = args.rabbitmq = True
    if args.rabbitmq:
        print("rabbitmq queue_type %s, connections %d"
              % (args.queue_type, args.connections), flush=True)
    for name, fn in (("kafka", kafka), ("rabbitmq", rabbitmq)):
        if getattr(args, name):
            rates = [measure(name, fn, args) for _ in range(args.repeat)]
            if args.repeat > 1:
                print("%-8s median %8.0f messages/s (%.0f-%.0f) of %d runs"
                      % (name, statistics.median(rates), min(rates),
                         max(rates), len(rates)), flush=True)
    return 0


def measure(name, fn, args):
    """One run in a fresh temp dir; prints it and returns messages/s."""
    workdir = tempfile.mkdtemp(prefix="hookd-brokers-")
    try:
        r = fn(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("%-8s %7d messages in %6.2f s: %8.0f messages/s  %s"
          % (name, r["messages"], r["wall_s"], r["per_s"], r["counters"]))
    print("         cores: hookd %.2f, broker %.2f, other %.2f (of which "
          "this benchmark %.2f)" % (r["hookd"], r["broker"], r["other"],
                                    r["bench"]), flush=True)
    if r["other"] - r["bench"] > OTHER_MAX:
        print("NOTE     other processes used %.2f core: not a clean run"
              % (r["other"] - r["bench"]), flush=True)
    return r["per_s"]


if __name__ == "__main__":
    sys.exit(main())
