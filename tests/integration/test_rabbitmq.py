"""RabbitMQ hooks end to end, against a private rabbitmq-server started by
tests/rabbitmq/broker.sh and read through tests/rabbitmq/amqp_tool.c
(built next to hookd): what a queue hook publishes, one queue per event
type, direct and topic exchanges, an unroutable message and a declaration
conflict as dead letters, queue_type "quorum" (the queues it declares, a
classic queue of the same name refusing it, the setting's checks), a hook
publishing over several connections, and a broker restart in the middle of a stream that loses nothing. Skipped when
rabbitmq-server is not installed."""

import collections
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import Hookd, click, http, wait_for

BROKER_SH = os.path.join(harness.SOURCE_DIR, "tests", "rabbitmq", "broker.sh")
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"  # where broker.sh finds it


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One rabbitmq-server node in a temp dir; stopped when this test
    process dies, whatever way (BROKER_OWNER_PID)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hookd-rabbit-")
        self.port = free_port()
        self.env = dict(os.environ, BROKER_OWNER_PID=str(os.getpid()))

    def run(self, action):
        return subprocess.run([BROKER_SH, action, self.dir, str(self.port)],
                              env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=180)

    def start(self):
        r = self.run("start")
        if r.returncode == 2:
            raise unittest.SkipTest("rabbitmq-server is not installed")
        if r.returncode != 0:
            raise AssertionError("broker.sh start failed:\n" + r.stdout)

    def stop(self):
        r = self.run("stop")
        if r.returncode != 0:
            raise AssertionError("broker.sh stop failed:\n" + r.stdout)

    def queue_types(self):
        """{queue name: type} as the node reports them: rabbitmqctl with
        the node's own settings from broker.sh's env file (node name,
        epmd port, HOME with its cookie)."""
        script = ('. "$1/env" && exec "$2" -n "$RABBITMQ_NODENAME" -q '
                  'list_queues name type --formatter json')
        r = subprocess.run(["bash", "-c", script, "_", self.dir, RABBITMQCTL],
                           env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError("rabbitmqctl list_queues failed:\n" +
                                 r.stdout)
        return {q["name"]: q["type"] for q in json.loads(r.stdout)}

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class AmqpTool(harness.LineTool):
    """The amqp_tool helper: "ok" once connected, then commands on stdin
    answered with lines ending in "ok" (or "ok N") or "error"."""

    name = "amqp_tool"

    def __init__(self, port):
        binary = os.path.join(os.path.dirname(harness.HOOKD), "amqp_tool")
        self.proc = subprocess.Popen([binary, str(port)],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline().strip()
        if first != "ok":
            self.stop()
            raise AssertionError("amqp_tool did not connect: " + first)

    def command(self, line):
        """Sends one command; returns (its lines before "ok", the rest of
        the "ok" line). Raises AssertionError on "error"."""
        return self.exchange(line)

    def try_command(self, line):
        """Like command, but returns None instead of raising on "error"."""
        try:
            return self.command(line)
        except AssertionError as e:
            if "amqp_tool exited" in str(e):
                raise
            return None

    def consume(self, queue, n, wait_ms=3000):
        """Up to n messages, each a dict whose "body" is parsed JSON."""
        lines, _ = self.command("consume %s %d %d" % (queue, n, wait_ms))
        msgs = [json.loads(l) for l in lines]
        for m in msgs:
            m["body"] = json.loads(m["body"])
        return msgs

    def count(self, queue):
        return int(self.command("count " + queue)[1])


def rabbit_hook(port, send, actions=("click",), extra=""):
    """A hook publishing to the test broker; send: the type and its own
    settings as Lua table fields."""
    return """return {
  database = "all",
  actions = {%s},
  send = {host = "127.0.0.1", port = %d, batch_size = 50, timeout_sec = 0.1,
          %s},
  %s
}
""" % (", ".join(json.dumps(a) for a in actions), port, send, extra)


def queue_send(queue):
    return 'type = "rabbitmq_queue", queue = %s' % json.dumps(queue)


def quorum_send(queue):
    return queue_send(queue) + ', queue_type = "quorum"'


def exchange_send(exchange, kind):
    return ('type = "rabbitmq_exchange", exchange = %s, exchange_type = %s'
            % (json.dumps(exchange), json.dumps(kind)))


def event(n, event_type="click", list_id=111):
    return click(n, event_type=event_type, list_id=list_id)


def marks(msgs):
    return [m["body"]["custom_data"]["n"] for m in msgs]


class RabbitMQ(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker()
        # A class cleanup runs even when setUpClass fails half way.
        cls.addClassCleanup(cls.broker.remove)
        cls.broker.start()

    def setUp(self):
        self.hookd = None
        self.tool = AmqpTool(self.broker.port)
        self.queues = []

    def tearDown(self):
        status = None
        if self.hookd and self.hookd.proc.returncode is None:
            status = self.hookd.stop()
        # The broker outlives the test: leave no queue for the next one.
        for q in self.queues:
            self.tool.try_command("delete " + q)
        self.tool.stop()
        if status is not None:
            self.assertEqual(status, 0, "hookd exit status")

    def start(self, hooks, **config):
        cfg = {"HOOK_RETRY_PERIOD_SEC": 0.3, "HOOK_RETRY_TIMES": 5}
        cfg.update(config)
        self.hookd = Hookd(hooks, cfg)
        for hook_id in hooks:
            self.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                 "hook %s running" % hook_id)
        return self.hookd

    def declare(self, queue, durable=1):
        self.queues.append(queue)
        self.tool.command("queue %s %d" % (queue, durable))

    def bind(self, queue, exchange, key):
        """Binds once hookd has declared the exchange (on connecting)."""
        wait_for("exchange %s declared" % exchange, lambda: self.tool.
                 try_command("bind %s %s %s" % (queue, exchange, key)))

    def post(self, events):
        body = "".join(json.dumps(e) + "\n" for e in events)
        status, doc = self.hookd.post_events(body, "application/x-ndjson")
        self.assertEqual((status, doc), (202, {"accepted": len(events)}))

    def wait_counters(self, hook_id, sent, dead=0, timeout=20):
        return self.hookd.wait_hook(
            hook_id, lambda h: h["counters"]["sent"] >= sent and
            h["counters"]["dead"] >= dead and h["counters"]["queued"] == 0,
            "%s: sent %d, dead %d" % (hook_id, sent, dead), timeout)

    def dead_letters(self, hook_id, n):
        return wait_for("%d dead letters of %s" % (n, hook_id), lambda: (
            lambda items: len(items) >= n and items)(http(
                "GET", self.hookd.base + "/v1/dead-letters?hook=" +
                hook_id)[1]["items"]))

    def test_queue_hook_publishes_each_message_as_persistent_json(self):
        self.declare("e2e")
        self.start({"q": rabbit_hook(
            self.broker.port, queue_send("e2e"), extra="""
  profile_fields = {"email"},
  custom_data = {campaign = "{{campaign_name}}", day = "{{event_date_ymd}}"},
""")})
        built = []
        for i in range(3):
            ev = event(i)
            del ev["custom_data"]
            ev["profile"] = {"email": "u%d@example.com" % i}
            ev["content"] = {"subject": "not sent"}
            built.append(ev)
        kept = event(3)  # its own custom_data leaves as it came
        self.post(built + [kept])
        self.wait_counters("q", 4)
        msgs = self.tool.consume("e2e", 10, wait_ms=500)
        self.assertEqual(len(msgs), 4, "one message per event")
        want = []
        for i, ev in enumerate(built):
            ev = dict(ev)
            del ev["profile"], ev["content"]
            ev["custom_data"] = {"email": "u%d@example.com" % i,
                                 "campaign": "Black Friday",
                                 "day": "2026-11-01"}
            want.append(ev)
        want.append(kept)
        got = sorted((m["body"] for m in msgs), key=lambda b: b["profile_id"])
        self.assertEqual(got, want)
        for m in msgs:
            self.assertEqual((m["exchange"], m["routing_key"]), ("", "e2e"))
            self.assertEqual(m["content_type"], "application/json")
            self.assertEqual(m["delivery_mode"], 2, "persistent")
        self.assertEqual(self.tool.count("e2e"), 0, "nothing more")

    def test_empty_queue_name_means_one_queue_per_event_type(self):
        self.queues += ["click", "open"]
        self.start({"t": rabbit_hook(self.broker.port, queue_send(""),
                                     actions=("click", "open"))})
        self.post([event(0), event(1, "open"), event(2)])
        self.wait_counters("t", 3)
        clicks = self.tool.consume("click", 10, wait_ms=300)
        opens = self.tool.consume("open", 10, wait_ms=300)
        self.assertEqual(sorted(marks(clicks)), [0, 2])
        self.assertEqual(marks(opens), [1])
        self.assertEqual({m["routing_key"] for m in clicks}, {"click"})
        self.assertEqual({m["routing_key"] for m in opens}, {"open"})

    def test_direct_exchange_routes_by_list_and_event_type(self):
        self.declare("dq")
        self.start({"d": rabbit_hook(self.broker.port,
                                     exchange_send("ex_direct", "direct"))})
        self.bind("dq", "ex_direct", "111.click")
        self.post([event(n) for n in range(3)])
        self.wait_counters("d", 3)
        msgs = self.tool.consume("dq", 10, wait_ms=300)
        self.assertEqual(sorted(marks(msgs)), [0, 1, 2])
        for m in msgs:
            self.assertEqual((m["exchange"], m["routing_key"]),
                             ("ex_direct", "111.click"))
            self.assertEqual(m["delivery_mode"], 2)

    def test_topic_exchange_binding_takes_one_list_only(self):
        self.declare("tq")
        self.start({"t": rabbit_hook(self.broker.port,
                                     exchange_send("ex_topic", "topic"),
                                     actions=("click", "open"))})
        self.bind("tq", "ex_topic", "111.*")
        self.post([event(0), event(1, "open"), event(2, list_id=222)])
        # 222.click reaches no queue at all: a dead letter.
        self.wait_counters("t", 2, dead=1)
        msgs = self.tool.consume("tq", 10, wait_ms=300)
        self.assertEqual(sorted((m["routing_key"], m["body"]["custom_data"]
                                 ["n"]) for m in msgs),
                         [("111.click", 0), ("111.open", 1)])

    def test_unroutable_message_is_a_dead_letter_at_once(self):
        self.start({"u": rabbit_hook(self.broker.port,
                                     exchange_send("ex_lonely", "direct"))})
        self.post([event(7)])
        letters = self.dead_letters("u", 1)
        self.assertEqual(len(letters), 1)
        self.assertEqual(letters[0]["message"]["custom_data"]["n"], 7)
        self.assertRegex(letters[0]["reason"], "unroutable|NO_ROUTE")
        self.assertIn("NO_ROUTE", letters[0]["reason"])
        self.assertEqual(letters[0]["attempts"], 1, "no retry loop")
        self.assertEqual(self.hookd.counters("u")["sent"], 0)

    def test_test_event_gets_the_broker_ack_or_its_refusal(self):
        self.declare("tq")
        self.start({"q": rabbit_hook(self.broker.port, queue_send("tq")),
                    "u": rabbit_hook(self.broker.port,
                                     exchange_send("ex_test_lonely",
                                                   "direct"))})
        status, doc = http("POST", self.hookd.base + "/v1/hooks/q/test",
                           {"event_type": "open"})
        self.assertEqual(status, 200, doc)
        self.assertTrue(doc["delivered"], doc)
        self.assertEqual(doc["route"], "tq")
        msgs = self.tool.consume("tq", 10, wait_ms=500)
        self.assertEqual([m["body"] for m in msgs], [doc["message"]])
        status, doc = http("POST", self.hookd.base + "/v1/hooks/u/test",
                           {"event_type": "open"})
        self.assertEqual(status, 200, doc)
        self.assertFalse(doc["delivered"])
        self.assertEqual(doc["outcome"], "failed")
        self.assertIn("NO_ROUTE", doc["reason"])
        self.assertEqual(self.hookd.counters("u")["dead"], 0)

    def test_declare_conflict_is_a_dead_letter_and_others_deliver(self):
        self.declare("conf", durable=0)  # the hook declares it durable
        self.declare("fine")
        self.start({"c": rabbit_hook(self.broker.port, queue_send("conf")),
                    "f": rabbit_hook(self.broker.port, queue_send("fine"))})
        self.post([event(n) for n in range(3)])
        letters = self.dead_letters("c", 3)
        self.assertEqual(sorted(l["message"]["custom_data"]["n"]
                                for l in letters), [0, 1, 2])
        for letter in letters:
            self.assertIn("PRECONDITION_FAILED", letter["reason"])
            self.assertIn("inequivalent arg 'durable'", letter["reason"])
            self.assertEqual(letter["attempts"], 1, "no retry loop")
        self.wait_counters("f", 3)
        self.assertEqual(sorted(marks(self.tool.consume("fine", 10, 300))),
                         [0, 1, 2])
        self.assertEqual(self.tool.count("conf"), 0)
        # Later messages of the other hook are not held up either.
        self.post([event(3)])
        self.wait_counters("f", 4, timeout=10)
        self.assertEqual(marks(self.tool.consume("fine", 1, 2000)), [3])

    def test_quorum_hook_delivers_every_message_into_a_quorum_queue(self):
        self.queues += ["qq", "click", "open"]
        both = ("click", "open")
        self.start({
            "q": rabbit_hook(self.broker.port, quorum_send("qq"), both),
            "t": rabbit_hook(self.broker.port, quorum_send(""), both)})
        self.assertEqual(self.hookd.hook("q")["settings"]["send"]
                         ["queue_type"], "quorum")
        self.hookd.wait_log("queue=qq queue_type=quorum msg=connected")
        n = 300
        self.post([event(i, "open" if i % 3 == 0 else "click")
                   for i in range(n)])
        for hook_id in ("q", "t"):
            c = self.wait_counters(hook_id, n)["counters"]
            self.assertEqual((c["sent"], c["dead"], c["retried"]), (n, 0, 0),
                             hook_id)
        types = self.broker.queue_types()
        self.assertEqual({q: types.get(q) for q in self.queues},
                         {"qq": "quorum", "click": "quorum",
                          "open": "quorum"})
        got = marks(self.tool.consume("qq", n + 1, wait_ms=300))
        self.assertEqual(sorted(got), list(range(n)), "each message once")
        clicks = marks(self.tool.consume("click", n, wait_ms=300))
        opens = marks(self.tool.consume("open", n, wait_ms=300))
        self.assertEqual(sorted(opens), list(range(0, n, 3)))
        self.assertEqual(sorted(clicks + opens), list(range(n)))

    def test_connections_spread_a_hook_over_several_connections(self):
        self.queues.append("qc")
        send = quorum_send("qc") + ", connections = 3"
        self.start({"c": rabbit_hook(self.broker.port, send)})
        self.assertEqual(self.hookd.hook("c")["settings"]["send"]
                         ["connections"], 3)
        n = 400  # eight rounds of 50: every connection gets some
        self.post([event(i) for i in range(n)])
        c = self.wait_counters("c", n)["counters"]
        self.assertEqual((c["sent"], c["dead"], c["retried"]), (n, 0, 0))
        # Each connection says which it is in its own lines.
        connected = sorted(
            l.split("queue=qc queue_type=quorum connection=")[1].split()[0]
            for l in self.hookd.drain_log()
            if "queue=qc queue_type=quorum connection=" in l
            and "msg=connected" in l)
        self.assertEqual(connected, ["1/3", "2/3", "3/3"])
        got = marks(self.tool.consume("qc", n + 1, wait_ms=300))
        self.assertEqual(sorted(got), list(range(n)), "each message once")

    def test_quorum_on_a_classic_queue_is_refused_and_keeps_the_messages(
            self):
        self.declare("clash")  # classic, durable: only the type differs
        self.start({"c": rabbit_hook(self.broker.port, quorum_send("clash"))})
        self.post([event(n) for n in range(3)])
        letters = self.dead_letters("c", 3)
        for letter in letters:
            self.assertIn("queue=clash queue_type=quorum",
                          letter["destination"])
            self.assertIn("PRECONDITION_FAILED", letter["reason"])
            self.assertIn("inequivalent arg 'x-queue-type' for queue "
                          "'clash'", letter["reason"])
            self.assertIn("received the value 'quorum'", letter["reason"])
        self.assertEqual(sorted(l["message"]["custom_data"]["n"]
                                for l in letters), [0, 1, 2])
        refused = self.hookd.wait_log('msg="declare refused"')
        self.assertIn("queue=clash queue_type=quorum", refused)
        self.assertIn("inequivalent arg 'x-queue-type'", refused)
        dead = self.hookd.wait_log("dead_letter=1")
        self.assertIn("hook=c ", dead)
        self.assertIn("inequivalent arg 'x-queue-type'", dead)
        self.assertEqual(self.broker.queue_types().get("clash"), "classic")
        self.assertEqual(self.tool.count("clash"), 0)
        # Nothing is lost: once the classic queue is gone, the letters go
        # out again into the quorum queue the hook declares.
        self.tool.command("delete clash")
        status, doc = http("POST", self.hookd.base +
                           "/v1/dead-letters/retry?hook=c")
        self.assertEqual((status, doc), (200, {"resent": 3}))
        self.wait_counters("c", 3, dead=3)
        self.assertEqual(self.broker.queue_types().get("clash"), "quorum")
        self.assertEqual(sorted(marks(self.tool.consume("clash", 4, 300))),
                         [0, 1, 2])

    def test_queue_type_is_checked_when_the_hook_loads(self):
        port = self.broker.port
        self.hookd = Hookd({
            "fast": rabbit_hook(port, queue_send("qt") +
                                ', queue_type = "fast"'),
            "ex": rabbit_hook(port, exchange_send("ex_qt", "direct") +
                              ', queue_type = "quorum"')}, {})
        for hook_id, want in (
                ("fast", 'send.queue_type must be "classic" or "quorum"'),
                ("ex", "unknown setting 'send.queue_type' for type "
                 "rabbitmq_exchange")):
            h = self.hookd.wait_hook(hook_id, lambda h: h["error"],
                                     "%s: load error" % hook_id)
            self.assertEqual(h["state"], "broken")
            self.assertIn("%s.lua:" % hook_id, h["error"])
            self.assertIn(want, h["error"])

    def test_broker_restart_mid_stream_loses_nothing(self):
        self.declare("restart")
        self.start({"r": rabbit_hook(self.broker.port, queue_send("restart"))},
                   HOOK_RETRY_TIMES=100, HOOK_RETRY_PERIOD_SEC=0.3)
        accepted, unknown, stop = [], set(), threading.Event()

        def client():
            n = 0
            while not stop.is_set():
                events = [event(i) for i in range(n, n + 10)]
                body = "".join(json.dumps(e) + "\n" for e in events)
                try:
                    status, doc = self.hookd.post_events(
                        body, "application/x-ndjson")
                except OSError:  # no answer: hookd may or may not have it
                    status, doc = None, None
                    unknown.update(range(n, n + 10))
                if status == 202 and doc == {"accepted": 10}:
                    accepted.extend(range(n, n + 10))
                n += 10
                time.sleep(0.05)

        poster = threading.Thread(target=client, daemon=True)
        poster.start()
        try:
            time.sleep(1)
            self.broker.stop()
            time.sleep(2)
            self.broker.start()
            time.sleep(1)
        finally:
            stop.set()
            poster.join(10)
        self.assertGreater(len(accepted), 0)
        h = self.wait_counters("r", len(accepted), timeout=30)
        self.assertEqual(h["counters"]["dead"], 0, "nothing given up")
        self.assertGreater(h["counters"]["retried"], 0,
                           "the outage hit the stream")
        # The old connection died with the broker.
        self.tool.stop()
        self.tool = AmqpTool(self.broker.port)
        ready = self.tool.count("restart")
        got = collections.Counter(marks(self.tool.consume(
            "restart", ready, wait_ms=2000)))
        self.assertEqual(sorted(set(accepted) - set(got)), [],
                         "every accepted event arrives")
        self.assertEqual(sorted(set(got) - set(accepted) - unknown), [],
                         "nothing that was refused")
        print("\n%d events accepted (%d unanswered), %d retried, "
              "%d duplicates after the restart"
              % (len(accepted), len(unknown), h["counters"]["retried"],
                 sum(c - 1 for c in got.values())))


if __name__ == "__main__":
    harness.main()
