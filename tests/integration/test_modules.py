"""Shared modules in plugins_dir/lib while the router runs: a change to a
module (also in a subfolder, also one required through another module)
reloads exactly the hooks that use it; a broken, missing or precompiled
module leaves their previous versions running with the error shown; no
event is lost meanwhile. Also loads the example hooks of plugins/examples
with the library of plugins/lib and checks what they send."""

import glob
import json
import os
import shutil
import tempfile
import threading
import time
import unittest

import harness
from harness import SOURCE_DIR, Hookd, Sink, wait_for

# A hook that puts what its modules say into custom_data.tag.
HOOK = """local m = require %(module)r
return {
  database = "all", actions = {"click"},
  custom_data = {tag = m.tag},
  send = {type = "http", url = %(url)r, batch_size = 5, timeout_sec = 0.1},
}
"""

PLAIN = """return {
  database = "all", actions = {"click"},
  send = {type = "http", url = %(url)r, batch_size = 5, timeout_sec = 0.1},
}
"""


def hook(url, module):
    return (HOOK % {"module": module, "url": url}).replace("'", '"')


def module_src(tag):
    return "return {tag = %s}\n" % json.dumps(tag)


class Modules(harness.SinkTest):
    clean_exit = True

    def lib(self, rel):
        return os.path.join(self.dir, "plugins", "lib", rel)

    def write_module(self, rel, data):
        """Writes lib/<rel> atomically (temp file and rename)."""
        path = self.lib(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), ".tmp-module")
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.rename(tmp, path)

    def start(self, hooks, modules):
        """Starts hookd on hooks and modules already in place; waits until
        every hook that can load is at version 1."""
        self.dir = tempfile.mkdtemp(prefix="hookd-test-")
        for rel, src in modules.items():
            self.write_module(rel, src)
        self.hookd = Hookd(hooks, workdir=self.dir)
        for hook_id in hooks:
            self.hookd.wait_hook(hook_id, lambda h: h["version"] == 1 or
                                 h["error"], hook_id + " loaded")

    def version(self, hook_id):
        return self.hookd.hook(hook_id)["version"]

    def wait_version(self, hook_id, v, timeout=5.0):
        return self.hookd.wait_hook(hook_id, lambda h: h["version"] == v,
                                    "%s version %d" % (hook_id, v), timeout)

    def tags(self, path):
        return [m["custom_data"]["tag"] for m in self.sink.messages(path)]

    def test_module_change_reloads_its_dependents_only(self):
        a, b, c = (self.sink.url(p) for p in ("/a", "/b", "/c"))
        self.start({"a": hook(a, "shared"), "b": hook(b, "shared"),
                    "c": hook(c, "other")},
                   {"shared.lua": module_src("s1"),
                    "other.lua": module_src("o1")})
        t0 = time.monotonic()
        self.write_module("shared.lua", module_src("s2"))
        self.wait_version("a", 2)
        self.wait_version("b", 2)
        self.assertLess(time.monotonic() - t0, 2.0)
        line = self.hookd.wait_log("module=lib/shared.lua")
        self.assertIn("changed=1 dependents=2", line)
        time.sleep(1.0)  # several scans later, c is still untouched
        self.assertEqual(self.version("c"), 1)
        self.assertEqual(self.version("a"), 2)
        self.hookd.post_events(harness.bare(1))
        wait_for("new module in a and b", lambda: self.tags("/a") == ["s2"]
                 and self.tags("/b") == ["s2"])
        wait_for("c as before", lambda: self.tags("/c") == ["o1"])

    def test_nested_dependency_in_subfolder_reloads_hook(self):
        url = self.sink.url("/n")
        self.start({"n": hook(url, "outer"),
                    "u": PLAIN % {"url": self.sink.url("/u")}},
                   {"outer.lua": 'return require("deep.inner.core")\n',
                    "deep/inner/core.lua": module_src("d1")})
        self.write_module("deep/inner/core.lua", module_src("d2"))
        h = self.wait_version("n", 2)
        self.assertIsNone(h["error"])
        self.hookd.wait_log("module=lib/deep/inner/core.lua changed=1 "
                            "dependents=1")
        self.assertEqual(self.version("u"), 1)
        self.hookd.post_events(harness.bare(1))
        wait_for("tag of the inner module",
                 lambda: self.tags("/n") == ["d2"])

    def test_broken_module_keeps_previous_versions_then_fix_recovers(self):
        a, b = self.sink.url("/a"), self.sink.url("/b")
        self.start({"a": hook(a, "shared"), "b": hook(b, "shared")},
                   {"shared.lua": module_src("good")})
        self.write_module("shared.lua", "return {tag = \n")
        for hook_id in ("a", "b"):
            h = self.hookd.wait_hook(hook_id, lambda h: h["error"],
                                     hook_id + " shows the error")
            self.assertIn("lib/shared.lua:", h["error"])
            self.assertIn("%s.lua:1:" % hook_id, h["error"])
            self.assertEqual(h["version"], 1)
            self.assertEqual(h["state"], "running")
        self.hookd.post_events(harness.bare(1))
        wait_for("previous versions deliver",
                 lambda: self.tags("/a") == ["good"] and
                 self.tags("/b") == ["good"])
        self.write_module("shared.lua", module_src("fixed"))
        for hook_id in ("a", "b"):
            h = self.hookd.wait_hook(hook_id, lambda h: h["version"] == 2 and
                                     h["error"] is None, hook_id + " fixed")
            self.assertEqual(h["settings"]["custom_data"]["tag"], "fixed")

    def test_bytecode_module_refused(self):
        url = self.sink.url("/x")
        # A LuaJIT dump starts with ESC "LJ"; the first byte is enough.
        dump = b"\x1bLJ\x02\x0a\x00\x02\x00\x00\x00\x00"
        self.start({"x": hook(url, "shared"), "y": hook(url, "compiled")},
                   {"shared.lua": module_src("v1"), "compiled.lua": dump})
        h = self.hookd.hook("y")
        self.assertEqual(h["state"], "broken")
        self.assertIn("precompiled bytecode is refused", h["error"])
        self.write_module("shared.lua", dump)
        h = self.hookd.wait_hook("x", lambda h: h["error"], "x refuses")
        self.assertIn("lib/shared.lua: precompiled bytecode is refused",
                      h["error"])
        self.assertEqual(h["version"], 1)
        self.assertEqual(h["state"], "running")

    def test_added_and_removed_modules(self):
        url = self.sink.url("/w")
        self.start({"w": hook(url, "later.mod")}, {})
        h = self.hookd.hook("w")
        self.assertEqual(h["state"], "broken")
        self.assertIn("later/mod.lua", h["error"])
        self.write_module("later/mod.lua", module_src("here"))
        h = self.wait_version("w", 1)
        self.assertIsNone(h["error"])
        self.assertEqual(h["state"], "running")
        self.hookd.wait_log("module=lib/later/mod.lua added=1 dependents=1")
        os.remove(self.lib("later/mod.lua"))
        h = self.hookd.wait_hook("w", lambda h: h["error"], "removal seen")
        self.assertIn("No such file", h["error"])
        self.assertEqual((h["version"], h["state"]), (1, "running"))
        self.hookd.wait_log("module=lib/later/mod.lua removed=1")

    def test_module_saved_by_rename_is_not_seen_as_removed(self):
        url = self.sink.url("/r")
        self.start({"r": hook(url, "m")}, {"m.lua": module_src("r1")})
        path = self.lib("m.lua")
        os.rename(path, path + "~")         # vim's way of saving
        with open(path, "w") as f:
            f.write(module_src("r2"))
        os.remove(path + "~")
        h = self.wait_version("r", 2)
        self.assertIsNone(h["error"])
        log = "".join(self.hookd.drain_log())
        self.assertNotIn("removed=1", log)

    def test_events_keep_flowing_during_module_reloads(self):
        url = self.sink.url("/f")
        self.start({"f": hook(url, "shared")},
                   {"shared.lua": module_src("v1")})
        stop = threading.Event()
        sent = []
        statuses = []

        def produce():
            i = 0
            while not stop.is_set():
                status, _ = self.hookd.post_events(
                    [harness.bare(i + k) for k in range(10)])
                statuses.append(status)
                sent.extend(range(i, i + 10))
                i += 10
                time.sleep(0.01)

        t = threading.Thread(target=produce)
        t.start()
        try:
            for v in range(2, 6):
                self.write_module("shared.lua", module_src("v%d" % v))
                self.wait_version("f", v)
        finally:
            stop.set()
            t.join()
        self.assertEqual(set(statuses), {202})
        got = wait_for("all messages", lambda: (lambda m: len(m) >= len(sent)
                       and m)(self.sink.messages("/f")), timeout=15)
        ids = sorted(int(m["profile_id"][1:]) for m in got)
        self.assertEqual(ids, sorted(sent))
        self.assertGreater(len(set(self.tags("/f"))), 1,
                           "several module versions ran")


def event_seconds(date):
    """Whole seconds of an RFC 3339 date in UTC (the sample uses Z)."""
    import datetime
    day = datetime.datetime.strptime(date[:19], "%Y-%m-%dT%H:%M:%S")
    return (day - datetime.datetime(1970, 1, 1)).total_seconds()


def repeated_clicks(events):
    """The sample has no profile clicking twice: for the first five tagged
    clicks, the same click again (a repeat to drop) and once more two hours
    later (past the window, to keep)."""
    import datetime
    out = []
    tagged = [e for e in events if e["event_type"] == "click" and
              "utm_" in e.get("event_data", {}).get("link_url", "")]
    for e in tagged[:5]:
        later = dict(e)
        day = datetime.datetime.strptime(e["event_date"][:19],
                                         "%Y-%m-%dT%H:%M:%S")
        later["event_date"] = (day + datetime.timedelta(hours=2)).strftime(
            "%Y-%m-%dT%H:%M:%S") + e["event_date"][19:]
        out += [dict(e), later]
    return out


class ExampleHooks(unittest.TestCase):
    """plugins/examples/*.lua with plugins/lib, against the sink, each
    delivering what an independent count of the events says."""

    @classmethod
    def setUpClass(cls):
        cls.sink = Sink()
        # Class cleanups run also when setUpClass fails half way: a hookd
        # left running would hold ctest's output pipe open, and ctest would
        # wait for it until its timeout.
        cls.addClassCleanup(cls.sink.stop)
        with open(os.path.join(SOURCE_DIR, "examples", "main.json")) as f:
            dests = json.load(f)["destinations"]
        for name, d in dests.items():
            d["url"] = cls.sink.url("/" + name)
        cls.hookd = Hookd({}, {"destinations": dests},
                          env={"CRM_TOKEN": "example-token"})
        cls.addClassCleanup(cls.hookd.stop)
        shutil.rmtree(os.path.join(cls.hookd.plugins, "lib"))
        shutil.copytree(os.path.join(SOURCE_DIR, "plugins", "lib"),
                        os.path.join(cls.hookd.plugins, "lib"))
        cls.ids = []
        demo = "http://127.0.0.1:18766"
        for src in sorted(glob.glob(os.path.join(SOURCE_DIR, "plugins",
                                                 "examples", "*.lua"))):
            with open(src) as f:
                text = f.read()
            hook_id = os.path.basename(src)[:-4]
            cls.ids.append(hook_id)
            cls.hookd.write_hook(hook_id, text.replace(demo, cls.sink.base))
        for hook_id in cls.ids:
            # Generous: on a machine busy with other work, loading every
            # example with its examples once took more than ten seconds.
            cls.hookd.wait_hook(hook_id, lambda h: h["version"] == 1 or
                                h["error"], hook_id + " loaded", timeout=30)
        cls.events = harness.example_events() + repeated_clicks(harness.example_events())

    @classmethod
    def tearDownClass(cls):
        assert cls.hookd.stop() == 0
        cls.sink.stop()

    def test_examples_only_point_at_the_demo_sink(self):
        for src in glob.glob(os.path.join(SOURCE_DIR, "plugins", "examples",
                                          "*.lua")):
            with open(src) as f:
                text = f.read()
            for scheme in ("http://", "https://", "amqp://"):
                for rest in text.split(scheme)[1:]:
                    self.assertTrue(rest.startswith("127.0.0.1:18766/"),
                                    "%s: %s%s" % (src, scheme, rest[:30]))

    def run_examples(self):
        """Activates every example once and posts the events once."""
        if getattr(ExampleHooks, "posted", False):
            return
        for hook_id in self.ids:
            h = self.hookd.hook(hook_id)
            self.assertIsNone(h["error"], hook_id)
            self.assertEqual(h["state"], "stopped", hook_id + " starts stopped")
            status, _ = harness.http("POST", self.hookd.base + "/v1/hooks/" +
                                     hook_id + "/activate", b"")
            self.assertEqual(status, 200)
        status, _ = self.hookd.post_events(self.events)
        self.assertEqual(status, 202)
        ExampleHooks.posted = True

    def delivered(self, hook_id, path, n):
        self.run_examples()
        self.hookd.wait_hook(hook_id, lambda h: h["counters"]["sent"] == n and
                             h["counters"]["queued"] == 0,
                             "%s sent %d" % (hook_id, n), timeout=15)
        return [m for m in self.sink.messages(path)]

    def test_example_utm_campaigns_dedupes_by_profile_and_campaign(self):
        want, last = [], {}
        for e in self.events:
            url = e.get("event_data", {}).get("link_url", "")
            if e["event_type"] not in ("click", "uclick", "click_sms",
                                       "click_push") or "?" not in url:
                continue
            query = dict(p.partition("=")[::2] for p in
                         url.split("?", 1)[1].split("#")[0].split("&"))
            if not any(k.startswith("utm_") for k in query):
                continue
            key = (e.get("profile_id"), e["event_type"],
                   query.get("utm_campaign", ""))
            t = event_seconds(e["event_date"])
            if e.get("profile_id") and key in last and \
                    abs(t - last[key]) < 3600:
                continue
            last[key] = t
            want.append(e)
        self.assertEqual(len(want), 78 + 5, "repeats dropped, later kept")
        got = [m for m in self.delivered("utm_campaigns", "/analytics",
                                         len(want)) if "utm_campaign" in m]
        self.assertEqual([(m["profile"], m["at"]) for m in got],
                         [(e.get("profile_id"), e["event_date"])
                          for e in want])
        self.assertEqual(got[0]["source"], "mail")

    def test_example_geo_dach_flattened(self):
        want = [e for e in self.events
                if e["event_type"] in ("open", "uopen", "click", "uclick")
                and e.get("event_data", {}).get("country", "").lower()
                .lstrip(".") in ("de", "at", "ch")]
        got = [m for m in self.delivered("geo_dach", "/warehouse", len(want))
               if "event_data.country" in m]
        self.assertEqual(len(got), len(want))
        self.assertEqual({m["event_data.country"] for m in got}, {".de"})
        self.assertNotIn("event_data", got[0])

    def test_example_warehouse_flat(self):
        types = ("send", "deliv", "undeliv", "sbounce", "hbounce")
        want = [e for e in self.events if e["event_type"] in types]
        self.delivered("warehouse_flat", "/warehouse", len(want))
        flat = [m for m in self.sink.messages("/warehouse")
                if m["event_type"] in types]
        self.assertEqual(len(flat), len(want))
        for m in flat:
            self.assertNotIn("event_data", m)
            self.assertIn("event_data.campaign_id", m)

    def test_example_slack_alerts(self):
        types = ("hbounce", "sbounce", "complain", "unsub", "unsub_sms")
        want = [e for e in self.events if e["event_type"] in types]
        got = self.delivered("slack_alerts", "/slack", len(want))
        self.assertEqual(len(got), len(want))
        bodies = [json.loads(r["body"]) for r in self.sink.requests("/slack")]
        self.assertEqual({len(b) for b in bodies}, {1}, "one per request")
        for m in got:
            self.assertEqual(set(m), {"text", "blocks"})
            self.assertEqual(m["blocks"][0]["text"]["text"], "Deliverability")
            self.assertEqual(m["blocks"][1]["text"]["text"], m["text"])

    def test_example_no_errors_logged(self):
        self.run_examples()
        self.delivered("slack_alerts", "/slack", sum(
            e["event_type"] in ("hbounce", "sbounce", "complain", "unsub",
                                "unsub_sms") for e in self.events))
        self.assertEqual(self.hookd.error_lines(), [])


if __name__ == "__main__":
    harness.main()
