"""The example hooks of plugins/ on the example events: each hook delivers
exactly the events its settings describe, shaped as documented. Expected
sets are computed here from the events, independently of the router."""

import glob
import json
import os
import re
import shutil
import unittest

import harness
from harness import SOURCE_DIR, Hookd, Sink, wait_for

DELIVERY = {"send", "deliv", "undeliv", "sbounce", "hbounce", "complain",
            "suppress", "send_sms", "deliv_sms", "undeliv_sms", "send_push",
            "deliv_push", "undeliv_push"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                  r"-[0-9a-f]{12}$")


class Examples(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = Sink()
        # Class cleanups run also when setUpClass fails half way: a hookd
        # left running would hold ctest's output pipe open, and ctest would
        # wait for it until its timeout.
        cls.addClassCleanup(cls.sink.stop)
        with open(os.path.join(SOURCE_DIR, "examples", "main.json")) as f:
            cfg = json.load(f)
        dests = cfg["destinations"]
        for name, d in dests.items():
            d["url"] = cls.sink.url("/" + name)
        cls.hookd = Hookd({}, {"destinations": dests,
                               "HOOK_RETRY_PERIOD_SEC": 0.2},
                          env={"CRM_TOKEN": "example-token"})
        cls.addClassCleanup(cls.hookd.stop)
        for src in glob.glob(os.path.join(SOURCE_DIR, "plugins", "*.lua")):
            shutil.copy(src, cls.hookd.plugins)
        for hook_id in ("crm", "warehouse", "utm_clicks"):
            cls.hookd.wait_hook(hook_id, lambda h: h["state"] == "running",
                                hook_id + " running")
        cls.events = harness.example_events()
        cls.hookd.post_events(cls.events)

    @classmethod
    def tearDownClass(cls):
        assert cls.hookd.stop() == 0
        cls.sink.stop()

    def delivered(self, hook_id, path, expected):
        self.hookd.wait_hook(hook_id, lambda h: h["counters"]["sent"] ==
                             expected and h["counters"]["queued"] == 0,
                             "%s sent %d" % (hook_id, expected))
        return self.sink.messages(path)

    def test_example_crm_gets_clicks_of_database_111(self):
        want = [e for e in self.events
                if e["event_type"] in ("click", "uclick") and
                e.get("list_id") == 111]
        got = self.delivered("crm", "/crm", len(want))
        self.assertEqual(len(got), len(want))
        req = self.sink.requests("/crm")[0]
        headers = {k.lower(): v for k, v in req["headers"].items()}
        self.assertEqual(headers["authorization"], "Bearer example-token")
        for ev, msg in zip(want, got):
            self.assertNotIn("profile", msg)
            if ev.get("custom_data"):
                self.assertEqual(msg["custom_data"], ev["custom_data"])
                continue
            cd = msg["custom_data"]
            self.assertRegex(cd["id"], UUID)
            self.assertEqual(cd["eventTime"], ev["event_date"][:10])
            if "email" in ev.get("profile", {}):
                self.assertEqual(cd["email"], ev["profile"]["email"])

    def test_example_documented_click_custom_data_kept(self):
        got = self.sink.messages("/crm") or self.delivered("crm", "/crm", 1)
        first = got[0]
        self.assertEqual(first["event_date"], "2018-03-04T13:13:19.034315796Z")
        self.assertEqual(first["custom_data"],
                         {"email": "subscriber@example.com"})

    def test_example_warehouse_gets_every_delivery_event(self):
        want = [e for e in self.events if e["event_type"] in DELIVERY]
        got = self.delivered("warehouse", "/warehouse", len(want))
        self.assertEqual([m["event_type"] for m in got],
                         [e["event_type"] for e in want])
        self.assertTrue(all("content" not in m for m in got))
        sizes = [len(json.loads(r["body"]))
                 for r in self.sink.requests("/warehouse")]
        self.assertEqual(max(sizes), 500)

    def test_example_utm_hook_filters_and_reshapes(self):
        want = [e for e in self.events
                if e["event_type"] in ("click", "uclick", "click_sms",
                                       "click_push") and
                "utm_" in e.get("event_data", {}).get("link_url", "")]
        got = self.delivered("utm_clicks", "/analytics", len(want))
        for ev, msg in zip(want, got):
            self.assertEqual(set(msg), {"kind", "at", "profile", "campaign",
                                        "url", "utm", "device"})
            self.assertEqual(msg["url"], ev["event_data"]["link_url"])
            self.assertEqual(msg["utm"]["utm_source"], "mail")

    def test_example_no_errors_logged(self):
        self.delivered("warehouse", "/warehouse",
                       sum(e["event_type"] in DELIVERY for e in self.events))
        self.assertEqual(self.hookd.error_lines(), [])


if __name__ == "__main__":
    harness.main()
