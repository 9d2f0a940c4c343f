"""The tutorial of docs/hooks.md: its main.json and each file it shows,
written in turn and checked with `hookd check` (examples included), and
the last version tried on events; so the documentation stays true."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import FIXTURES, SOURCE_DIR

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def tutorial():
    with open(os.path.join(SOURCE_DIR, "docs", "hooks.md")) as f:
        text = f.read()
    start = text.index("## Tutorial")
    end = text.index("\n## ", start + 1)
    return BLOCK.findall(text[start:end])


class Tutorial(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="hookd-docs-")
        os.makedirs(os.path.join(self.dir, "plugins", "lib"))
        shutil.copy(os.path.join(FIXTURES, "catalog.json"), self.dir)
        self.env = dict(os.environ, CRM_URL="http://127.0.0.1:9/crm",
                        CRM_TOKEN="t")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def hookd(self, *args, stdin=None):
        p = subprocess.run([harness.HOOKD, *args], capture_output=True,
                           text=True, timeout=30, cwd=self.dir, env=self.env,
                           input=stdin)
        return p.returncode, p.stdout, p.stderr

    def test_every_step_passes_check_and_the_last_one_works(self):
        blocks = tutorial()
        configs = [body for lang, body in blocks if lang == "json"]
        files = [body for lang, body in blocks if lang == "lua"]
        self.assertEqual(len(configs), 1)
        self.assertGreaterEqual(len(files), 5)
        with open(os.path.join(self.dir, "main.json"), "w") as f:
            f.write(configs[0])
        for body in files:
            path = re.match(r"-- (plugins/\S+\.lua)\n", body).group(1)
            with open(os.path.join(self.dir, path), "w") as f:
                f.write(body)
            if "/lib/" in path:
                continue
            code, out, err = self.hookd("check", "--config", "main.json",
                                        path)
            self.assertEqual(code, 0, out + err)
            self.assertIn("all hooks ok", out)
        events = [
            {"event_type": "click", "list_id": 111,
             "event_date": "2026-11-27T09:30:00Z",
             "profile": {"email": "bo@example.com"},
             "event_data": {"campaign_id": 974,
                            "link_url": "https://x.example.com/?utm_a=1"}},
            {"event_type": "click", "list_id": 111,
             "event_date": "2026-11-27T09:30:00Z",
             "event_data": {"link_url": "https://x.example.com/"}},
            {"event_type": "open", "list_id": 111,
             "event_date": "2026-11-27T09:30:00Z"}]
        code, out, err = self.hookd(
            "try", "--config", "main.json", "plugins/clicks.lua", "-",
            stdin="".join(json.dumps(e) + "\n" for e in events))
        self.assertEqual(code, 0, out + err)
        lines = out.splitlines()
        self.assertEqual(json.loads(lines[0]),
                         {"who": "bo@example.com", "campaign": "Cyber Monday",
                          "day": "2026-11-27",
                          "link": "https://x.example.com/?utm_a=1"})
        self.assertIn("filter() returned false", lines[1])
        self.assertTrue(lines[2].startswith("dropped"), lines[2])

    def test_a_broken_step_would_be_caught(self):
        """The check this test relies on fails on a wrong expectation."""
        files = [body for lang, body in tutorial() if lang == "lua"]
        with open(os.path.join(self.dir, "main.json"), "w") as f:
            f.write([b for l, b in tutorial() if l == "json"][0])
        body = files[3].replace('campaign = "Black Friday"',
                                'campaign = "Cyber Monday"')
        with open(os.path.join(self.dir, "plugins", "clicks.lua"), "w") as f:
            f.write(body)
        code, out, _ = self.hookd("check", "--config", "main.json",
                                  "plugins/clicks.lua")
        self.assertEqual(code, 1, out)
        self.assertIn("tests[1]", out)


if __name__ == "__main__":
    harness.main()
