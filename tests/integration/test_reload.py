"""Hot reload of hook files while the router runs: edit, break, fix and
remove, within a second, without losing queued messages."""

import os
import threading
import time
import unittest

import harness
from harness import Hookd, Sink, bare, click, wait_for

HOOK = """return {
  name = %(name)r,
  database = "all", actions = {"click"},
  custom_data = {tag = %(tag)r},
  send = {type = "http", url = %(url)r, batch_size = 5, timeout_sec = 0.1},
}
"""


def hook(url, tag, name="reloadable"):
    src = HOOK % {"name": name, "tag": tag, "url": url}
    return src.replace("'", '"')


class Reload(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.url = self.sink.url("/r")
        self.hookd = Hookd({"h": hook(self.url, "v1")})
        self.hookd.wait_hook("h", lambda h: h["version"] == 1, "version 1")

    def tearDown(self):
        self.assertEqual(self.hookd.stop(), 0)
        self.sink.stop()

    def tags(self):
        return [m["custom_data"]["tag"] for m in self.sink.messages("/r")]

    def test_reload_edit_takes_effect_within_a_second(self):
        t0 = time.monotonic()
        self.hookd.write_hook("h", hook(self.url, "v2", name="edited"))
        h = self.hookd.wait_hook("h", lambda h: h["version"] == 2,
                                 "version 2", timeout=1.5)
        self.assertLess(time.monotonic() - t0, 1.2)
        self.assertEqual(h["name"], "edited")
        self.hookd.post_events(bare(1))
        wait_for("v2 message", lambda: self.tags() == ["v2"])

    def test_reload_broken_file_keeps_previous_version(self):
        self.hookd.write_hook("h", "return { database = 'all', actions = {")
        h = self.hookd.wait_hook("h", lambda h: h["error"], "error shown")
        self.assertEqual(h["version"], 1)
        self.assertEqual(h["state"], "running")
        self.assertIn("h.lua:1:", h["error"])
        line = self.hookd.wait_log("load_failed=1")
        self.assertIn("hook=h", line)
        self.hookd.post_events(bare(1))
        wait_for("message from v1", lambda: self.tags() == ["v1"])

    def test_reload_invalid_settings_keep_previous_version(self):
        self.hookd.write_hook("h", hook(self.url, "{{campain_name}}"))
        h = self.hookd.wait_hook("h", lambda h: h["error"], "error shown")
        self.assertIn("campain_name", h["error"])
        self.assertIn("h.lua", h["error"])
        self.assertEqual(h["version"], 1)

    def test_reload_fix_after_break(self):
        self.hookd.write_hook("h", "return nil +")
        self.hookd.wait_hook("h", lambda h: h["error"], "error shown")
        self.hookd.write_hook("h", hook(self.url, "v3"))
        h = self.hookd.wait_hook("h", lambda h: h["version"] == 2 and
                                 h["error"] is None, "fixed")
        self.assertEqual(h["settings"]["custom_data"]["tag"], "v3")

    def test_reload_remove_stops_hook_and_delivers_queued(self):
        # A long batch timeout keeps messages queued while the file goes.
        slow = hook(self.url, "v1").replace("timeout_sec = 0.1",
                                            "timeout_sec = 1.5")
        self.hookd.write_hook("h", slow)
        self.hookd.wait_hook("h", lambda h: h["version"] == 2, "version 2")
        self.hookd.post_events([bare(i) for i in range(3)])
        self.assertEqual(self.hookd.counters("h")["queued"], 3)
        os.remove(os.path.join(self.hookd.plugins, "h.lua"))
        self.hookd.wait_log("hook=h removed=1")
        self.sink.wait_messages("/r", 3, timeout=5)
        self.hookd.post_events(bare(9))
        status, _ = self.hookd.post_events(bare(10))
        self.assertEqual(status, 202)
        wait_for("removed hook unlisted", lambda: self.hookd.hook("h") is None)
        self.assertEqual(len(self.sink.messages("/r")), 3)

    def test_reload_half_written_file_is_not_loaded(self):
        path = os.path.join(self.hookd.plugins, "h.lua")
        full = hook(self.url, "v2")
        with open(path, "w") as f:      # an editor writing in two steps
            f.write(full[:40])
            f.flush()
            time.sleep(0.05)
            f.write(full[40:])
        self.hookd.wait_hook("h", lambda h: h["version"] == 2, "version 2")
        self.assertIsNone(self.hookd.hook("h")["error"])
        self.assertNotIn("load_failed=1", "".join(self.hookd.drain_log()))

    def test_reload_save_by_rename_keeps_hook_running(self):
        # vim's way: move the file aside, write a new one, drop the backup.
        path = os.path.join(self.hookd.plugins, "h.lua")
        os.rename(path, path + "~")
        with open(path, "w") as f:
            f.write(hook(self.url, "v2"))
        os.remove(path + "~")
        self.hookd.post_events(bare(1))
        self.hookd.wait_hook("h", lambda h: h["version"] == 2, "version 2")
        self.assertNotIn("removed=1", "".join(self.hookd.drain_log()))
        wait_for("message", lambda: self.tags() in (["v1"], ["v2"]))

    def test_reload_badly_named_file_is_reported_once(self):
        path = os.path.join(self.hookd.plugins, "bad name.lua")
        with open(path, "w") as f:
            f.write(hook(self.url, "v2"))
        line = self.hookd.wait_log('file="bad name.lua" ignored=1')
        self.assertIn("<id>.lua", line)
        # Loading v2 takes a later scan, which sees the bad name again.
        self.hookd.write_hook("h", hook(self.url, "v2"))
        self.hookd.wait_hook("h", lambda h: h["version"] == 2, "version 2")
        log = "".join(self.hookd.drain_log())
        self.assertEqual(log.count("ignored=1"), 1)

    def test_hook_names_that_are_not_files_are_reported_once(self):
        """A directory, a FIFO or a dangling link named like a hook is
        reported once and does not stop the scan (nor block it: opening
        a FIFO would wait for a writer)."""
        plugins = self.hookd.plugins
        os.mkdir(os.path.join(plugins, "d.lua"))
        os.mkfifo(os.path.join(plugins, "f.lua"))
        os.symlink("/nonexistent/x.lua", os.path.join(plugins, "l.lua"))
        for name in ("d.lua", "f.lua", "l.lua"):
            line = self.hookd.wait_log('file="%s" ignored=1' % name)
            self.assertIn("not a regular file", line)
        self.hookd.write_hook("h", hook(self.url, "v2"))
        self.hookd.wait_hook("h", lambda h: h["version"] == 2, "version 2")
        log = "".join(self.hookd.drain_log())
        self.assertEqual(log.count('file="f.lua" ignored=1'), 1)

    def test_reload_under_load_loses_nothing(self):
        stop = threading.Event()
        sent = []

        def produce():
            i = 0
            while not stop.is_set():
                status, _ = self.hookd.post_events(
                    [bare(i + k) for k in range(10)])
                self.assertEqual(status, 202)
                sent.extend(range(i, i + 10))
                i += 10
                time.sleep(0.01)

        t = threading.Thread(target=produce)
        t.start()
        for v in range(2, 7):
            self.hookd.write_hook("h", hook(self.url, "v%d" % v))
            self.hookd.wait_hook("h", lambda h, v=v: h["version"] == v,
                                 "version %d" % v)
        stop.set()
        t.join()
        got = wait_for("all messages", lambda: (lambda m: len(m) >= len(sent)
                       and m)(self.sink.messages("/r")), timeout=10)
        ids = sorted(int(m["profile_id"][1:]) for m in got)
        self.assertEqual(ids, sorted(sent))
        self.assertGreater(len(set(self.tags())), 1, "several versions ran")


if __name__ == "__main__":
    harness.main()
