"""Kafka hooks end to end, against librdkafka's mock cluster
(tests/kafka/mock_cluster.c, built next to hookd): messages keyed and in
order per key, one topic per event type, a retriable broker error, a
message too large for the broker as a dead letter beside delivered
neighbours, a stop in the middle of a burst that loses nothing, rounds
that overlap against slow brokers, and rounds in flight that all fail and
are retried in order."""

import collections
import json
import os
import subprocess
import threading
import time
import unittest

import harness
from harness import Hookd, click, http, wait_for


class MockCluster(harness.LineTool):
    """The mock cluster helper: bootstrap servers on the first line, then
    commands on stdin answered with lines ending in "ok" or "error"."""

    name = "mock cluster"

    def __init__(self):
        binary = os.path.join(os.path.dirname(harness.HOOKD),
                              "kafka_mock_cluster")
        self.proc = subprocess.Popen([binary, "3"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.brokers = self.proc.stdout.readline().strip()
        self.lock = threading.Lock()

    def command(self, line):
        """Sends one command; returns its output lines before "ok"."""
        with self.lock:
            return self.exchange(line)[0]

    def consume(self, topic, n=100000):
        return [json.loads(l) for l in self.command("consume %s %d" %
                                                    (topic, n))]


def kafka_hook(brokers, topic="clicks", key=None, extra_send="",
               actions=("click",)):
    key_src = "" if key is None else "key = %s," % key
    return """return {
  database = "all",
  actions = {%s},
  send = {type = "kafka", brokers = {%s}, topic = %s, %s
          batch_size = 50, timeout_sec = 0.1, %s},
}
""" % (", ".join(json.dumps(a) for a in actions),
       ", ".join(json.dumps(b) for b in brokers.split(",")),
       json.dumps(topic), key_src, extra_send)


def event(n, profile, event_type="click", pad=0):
    ev = click(n, profile_id=profile)
    ev["event_type"] = event_type
    if pad:
        ev["custom_data"]["pad"] = "x" * pad
    return ev


def values(records):
    return [json.loads(r["value"]) for r in records]


class Kafka(unittest.TestCase):
    def setUp(self):
        self.cluster = MockCluster()
        self.hookd = None

    def tearDown(self):
        if self.hookd and self.hookd.proc.returncode is None:
            self.hookd.stop()
        self.cluster.stop()

    def start(self, hooks, workdir=None, **config):
        cfg = {"HOOK_RETRY_PERIOD_SEC": 0.3, "HOOK_RETRY_TIMES": 5}
        cfg.update(config)
        self.hookd = Hookd(hooks, cfg, workdir=workdir)
        for hook_id in hooks or {}:
            self.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                 "hook %s running" % hook_id)
        return self.hookd

    def post(self, events):
        body = "".join(json.dumps(e) + "\n" for e in events)
        status, doc = self.hookd.post_events(body, "application/x-ndjson")
        self.assertEqual((status, doc), (202, {"accepted": len(events)}))

    def wait_sent(self, hook_id, n, timeout=40):
        self.hookd.wait_hook(hook_id, lambda h: h["counters"]["sent"] >= n
                             and h["counters"]["queued"] == 0,
                             "%d sent by %s" % (n, hook_id), timeout)

    def test_messages_are_keyed_and_in_order_per_key(self):
        self.cluster.command("topic clicks 4 3")
        self.start({"k": kafka_hook(self.cluster.brokers)})
        events = [event(n, "p%d" % (n % 5)) for n in range(200)]
        for i in range(0, 200, 40):
            self.post(events[i:i + 40])
        self.wait_sent("k", 200)
        records = self.cluster.consume("clicks")
        got = values(records)
        self.assertEqual(sorted(m["custom_data"]["n"] for m in got),
                         list(range(200)), "each message exactly once")
        by_key = collections.defaultdict(list)
        for r, m in zip(records, got):
            self.assertEqual(r["key"], m["profile_id"], "key = profile_id")
            by_key[(r["key"], r["partition"])].append(m["custom_data"]["n"])
        for key, ns in by_key.items():
            self.assertEqual(ns, sorted(ns), "order within key %s" % (key,))
        self.assertEqual(self.hookd.counters("k")["dead"], 0)

    def test_empty_topic_means_one_topic_per_event_type(self):
        self.start({"t": kafka_hook(self.cluster.brokers, topic="",
                                    key="false",
                                    actions=("click", "open"))})
        self.post([event(0, "a"), event(1, "b", "open"), event(2, "c")])
        self.wait_sent("t", 3)
        clicks, opens = (self.cluster.consume("click"),
                         self.cluster.consume("open"))
        # Without a key the messages may land on any partition: no order.
        self.assertEqual(sorted(m["custom_data"]["n"]
                                for m in values(clicks)), [0, 2])
        self.assertEqual([m["custom_data"]["n"] for m in values(opens)], [1])
        self.assertEqual({r["key"] for r in clicks + opens}, {None},
                         "key = false: no key")

    def test_retriable_broker_errors_are_retried_to_exactly_once(self):
        self.cluster.command("topic clicks 2 3")
        self.start({"k": kafka_hook(self.cluster.brokers)})
        self.cluster.command("errors - Produce 6 NOT_ENOUGH_REPLICAS "
                             "REQUEST_TIMED_OUT NOT_LEADER_FOR_PARTITION")
        self.post([event(n, "p%d" % (n % 3)) for n in range(60)])
        self.wait_sent("k", 60)
        got = values(self.cluster.consume("clicks"))
        self.assertEqual(sorted(m["custom_data"]["n"] for m in got),
                         list(range(60)))

    def test_test_event_is_published_at_once_and_reported(self):
        self.cluster.command("topic clicks 2 3")
        self.start({"k": kafka_hook(self.cluster.brokers)})
        status, doc = http("POST", self.hookd.base + "/v1/hooks/k/test",
                           {"event_type": "click"})
        self.assertEqual(status, 200, doc)
        self.assertTrue(doc["delivered"], doc)
        self.assertEqual(doc["route"], "clicks")
        records = self.cluster.consume("clicks")
        self.assertEqual(len(records), 1)
        self.assertEqual(json.loads(records[0]["value"]), doc["message"])
        self.assertEqual(records[0]["key"], doc["event"]["profile_id"])
        self.assertTrue(doc["message"]["hookd_test"])
        # A broker that refuses it: the reason comes back, nothing is kept.
        self.cluster.command("errors - Produce 1 MSG_SIZE_TOO_LARGE")
        status, doc = http("POST", self.hookd.base + "/v1/hooks/k/test",
                           {"event_type": "click"})
        self.assertEqual(status, 200, doc)
        self.assertFalse(doc["delivered"])
        self.assertIn("MSG_SIZE_TOO_LARGE", doc["reason"])
        c = self.hookd.counters("k")
        self.assertEqual((c["test_sent"], c["test_failed"], c["dead"]),
                         (1, 1, 0))

    def test_test_event_waits_for_the_batch_in_flight(self):
        self.cluster.command("topic clicks 1 3")
        self.start({"k": kafka_hook(self.cluster.brokers)})
        self.cluster.command("rtt -1 300")
        self.post([event(n, "a") for n in range(50)])
        time.sleep(0.15)  # the batch of 50 leaves, and waits for its acks
        status, doc = http("POST", self.hookd.base + "/v1/hooks/k/test",
                           {"event_type": "click"})
        self.assertEqual(status, 200, doc)
        self.assertTrue(doc["delivered"], doc)
        self.wait_sent("k", 50)
        got = values(self.cluster.consume("clicks"))
        self.assertEqual(len(got), 51)
        self.assertTrue(got[-1].get("hookd_test"), "after the batch")
        self.assertEqual(sorted(m["custom_data"]["n"] for m in got[:50]),
                         list(range(50)))

    def test_message_too_large_is_a_dead_letter_and_neighbours_arrive(self):
        self.cluster.command("topic clicks 1 3")
        self.start({"k": kafka_hook(
            self.cluster.brokers,
            extra_send='properties = {["message.max.bytes"] = "3000"}')})
        self.post([event(0, "a"), event(1, "a", pad=5000), event(2, "a")])
        letters = wait_for("a dead letter", lambda: http(
            "GET", self.hookd.base + "/v1/dead-letters?hook=k")[1]["items"])
        self.assertEqual(len(letters), 1)
        self.assertEqual(letters[0]["message"]["custom_data"]["n"], 1)
        self.assertIn("MSG_SIZE_TOO_LARGE", letters[0]["reason"])
        self.assertEqual(letters[0]["attempts"], 1, "no retry loop")
        self.wait_sent("k", 2)
        got = values(self.cluster.consume("clicks"))
        self.assertEqual([m["custom_data"]["n"] for m in got], [0, 2])

    def test_rounds_overlap_while_the_brokers_are_slow(self):
        # 8 rounds of 50 against brokers that answer 300 ms late: one
        # round at a time would take 2.4 s.
        self.cluster.command("topic clicks 1 3")
        self.start({"k": kafka_hook(self.cluster.brokers)})
        self.post([event(0, "a")])
        self.wait_sent("k", 1)  # the producer knows the topic's leader
        self.cluster.command("rtt -1 300")
        start = time.monotonic()
        self.post([event(n, "a") for n in range(1, 401)])
        self.wait_sent("k", 401)
        took = time.monotonic() - start
        print("\n400 messages in rounds of 50 at 300 ms each: %.2f s" % took)
        self.assertLess(took, 1.6, "several rounds in flight")
        got = values(self.cluster.consume("clicks"))
        self.assertEqual([m["custom_data"]["n"] for m in got],
                         list(range(401)), "in order, once each")

    def test_failed_rounds_in_flight_are_retried_in_order(self):
        # Every produce request fails until the messages time out: the
        # rounds in flight all come back RETRY, no later round overtakes
        # them, and they go again together once the brokers recover.
        self.cluster.command("topic clicks 1 3")
        self.start({"k": kafka_hook(
            self.cluster.brokers,
            extra_send='properties = {["message.timeout.ms"] = "1500"}')},
            HOOK_RETRY_TIMES=100)
        self.post([event(0, "a")])
        self.wait_sent("k", 1)
        self.cluster.command("errors - Produce 1000 NOT_ENOUGH_REPLICAS")
        self.post([event(n, "a") for n in range(1, 301)])
        wait_for("failed rounds", lambda: self.hookd.counters("k")
                 ["failed"] >= 100, timeout=20)
        self.cluster.command("clear Produce")
        self.wait_sent("k", 301)
        c = self.hookd.counters("k")
        self.assertEqual(c["dead"], 0)
        # Four rounds of 50 were out when the first failed; the last two
        # waited for their retry.
        self.assertEqual((c["failed"], c["retried"]), (200, 200))
        got = values(self.cluster.consume("clicks"))
        self.assertEqual([m["custom_data"]["n"] for m in got],
                         list(range(301)), "in order, once each")

    def test_stop_during_a_burst_loses_nothing(self):
        self.cluster.command("topic clicks 2 3")
        self.cluster.command("rtt -1 50")  # slow brokers: much in flight
        self.start({"k": kafka_hook(self.cluster.brokers)},
                   shutdown_grace_sec=0.5)
        for i in range(0, 2000, 200):
            self.post([event(n, "p%d" % (n % 7)) for n in range(i, i + 200)])
        self.assertEqual(self.hookd.stop(), 0)
        self.cluster.command("rtt -1 0")
        self.start(None, workdir=self.hookd.dir)
        self.hookd.wait_hook("k", lambda h: h["state"] == "running",
                             "hook k running again")
        wait_for("outbox drained", lambda: self.hookd.counters("k")
                 ["queued"] == 0, timeout=30)
        got = collections.Counter(m["custom_data"]["n"] for m in values(
            self.cluster.consume("clicks")))
        self.assertEqual(sorted(set(range(2000)) - set(got)), [],
                         "every accepted event arrives")
        print("\nduplicates after the restart: %d"
              % sum(1 for c in got.values() if c > 1))


if __name__ == "__main__":
    harness.main()
