"""The command line: --version, --help, configuration errors that name
the key, `hookd check` and `hookd try`."""

import json
import os
import subprocess
import tempfile
import unittest

import harness
from harness import FIXTURES, SOURCE_DIR


def run(*args, cwd=None, env=None):
    p = subprocess.run([harness.HOOKD, *args], capture_output=True,
                       text=True, timeout=30, cwd=cwd,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


def config_file(cfg):
    d = tempfile.mkdtemp(prefix="hookd-cli-")
    os.makedirs(os.path.join(d, "plugins"))
    path = os.path.join(d, "main.json")
    with open(path, "w") as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return path


class Cli(unittest.TestCase):
    def test_cli_version(self):
        code, out, _ = run("--version")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"^hookd \d+\.\d+\.\d+")

    def test_cli_help(self):
        code, out, _ = run("--help")
        self.assertEqual(code, 0)
        self.assertIn("run --config", out)

    def test_config_missing_file(self):
        code, _, err = run("run", "--config", "/nonexistent/main.json")
        self.assertEqual(code, 2)
        self.assertIn("/nonexistent/main.json", err)

    def test_config_unknown_key_is_named(self):
        code, _, err = run("run", "--config", config_file({"lisen": "x"}))
        self.assertEqual(code, 2)
        self.assertIn("'lisen'", err)

    def test_config_wrong_type_is_named(self):
        code, _, err = run("run", "--config",
                           config_file({"HOOK_RETRY_TIMES": "four"}))
        self.assertEqual(code, 2)
        self.assertIn("HOOK_RETRY_TIMES", err)

    def test_config_not_json(self):
        code, _, err = run("run", "--config", config_file("{listen: 1"))
        self.assertEqual(code, 2)
        self.assertIn("not valid JSON", err)

    def test_config_missing_env_variable_is_named(self):
        cfg = {"destinations": {"crm": {"type": "http",
                                        "url": "${HOOKD_TEST_UNSET_VAR}"}}}
        code, _, err = run("run", "--config", config_file(cfg))
        self.assertEqual(code, 2)
        self.assertIn("HOOKD_TEST_UNSET_VAR", err)
        self.assertIn("destinations.crm.url", err)

    def test_config_bad_destination_is_named_at_start(self):
        cfg = {"destinations": {"crm": {"type": "http",
                                        "url": "file:///etc/passwd"}}}
        code, _, err = run("run", "--config", config_file(cfg))
        self.assertEqual(code, 2)
        self.assertIn("destinations.crm", err)
        self.assertIn("url", err)

    def test_config_that_is_a_directory(self):
        code, _, err = run("run", "--config", tempfile.mkdtemp())
        self.assertEqual(code, 2)
        self.assertIn("Is a directory", err)

    def test_config_listen_in_use_is_clear(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run("run", "--config",
                           config_file({"listen": "127.0.0.1:%d" % port}))
        s.close()
        self.assertEqual(code, 2)
        self.assertIn(str(port), err)

    def test_non_loopback_listen_without_token_is_refused(self):
        for listen in ("0.0.0.0:0", "[::]:0", "192.0.2.1:8765"):
            code, _, err = run("run", "--config",
                               config_file({"listen": listen}))
            self.assertEqual(code, 2, listen)
            self.assertIn("api_token", err, listen)
            self.assertIn("listen", err, listen)

    def test_non_loopback_listen_with_token_starts(self):
        h = harness.Hookd(config={"listen": "0.0.0.0:0",
                                  "api_token": "t0ken"})
        try:
            status, _ = harness.http("GET", h.base + "/v1/hooks")
            self.assertEqual(status, 401)
        finally:
            h.stop()

    def test_loopback_listen_needs_no_token(self):
        for listen in ("127.0.0.2:0", "[::1]:0", ":0"):
            h = harness.Hookd(config={"listen": listen})
            h.stop()

    def test_check_reports_broken_hook(self):
        path = config_file({})
        plugins = os.path.join(os.path.dirname(path), "plugins")
        with open(os.path.join(plugins, "ok.lua"), "w") as f:
            f.write('return {database = "all", actions = {"click"}, '
                    'send = {type = "http", url = "http://127.0.0.1:1/"}}')
        with open(os.path.join(plugins, "bad.lua"), "w") as f:
            f.write('return {database = "all", actions = {"click"}, '
                    'acitons = 1, send = {type = "http", '
                    'url = "http://127.0.0.1:1/"}}')
        code, out, err = run("check", "--config", path)
        self.assertEqual(code, 1)
        self.assertIn("bad.lua: unknown setting 'acitons'", out)
        self.assertIn("1 hook(s) with problems", out)
        self.assertNotIn("hook=ok load_failed", err)

    def test_check_example_hooks_are_valid(self):
        code, out, err = run("check", "--config",
                             os.path.join(SOURCE_DIR, "examples", "main.json"),
                             env={"CRM_TOKEN": "x"})
        self.assertEqual(code, 0, err)

    def test_try_prints_message_or_reason(self):
        events = os.path.join(tempfile.mkdtemp(), "ev.ndjson")
        with open(os.path.join(FIXTURES, "click.json")) as f:
            click = json.load(f)
        deliv = dict(click, event_type="deliv")
        with open(events, "w") as f:
            f.write(json.dumps(click) + "\n" + json.dumps(deliv) + "\n")
        hook = os.path.join(os.path.dirname(events), "h.lua")
        with open(hook, "w") as f:
            f.write('return {database = 111, actions = {"click"}, '
                    'send = {type = "http", url = "http://127.0.0.1:1/"}}')
        code, out, err = run("try", hook, events)
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(json.loads(lines[0])["event_data"]["campaign_id"],
                         973)
        self.assertTrue(lines[1].startswith("dropped:"))

    def test_try_exits_nonzero_when_an_event_fails(self):
        hook = os.path.join(tempfile.mkdtemp(), "h.lua")
        with open(hook, "w") as f:
            f.write('return {database = "all", actions = {"click"}, '
                    'shape = function(m) error("boom") end, '
                    'send = {type = "http", url = "http://127.0.0.1:1/"}}')
        code, out, err = run("try", hook, os.path.join(FIXTURES, "click.json"))
        self.assertEqual(code, 1)
        self.assertRegex(out, r"^error: shape: .*h\.lua:1: boom")

    def test_try_reads_a_pretty_printed_event(self):
        hook = os.path.join(tempfile.mkdtemp(), "h.lua")
        with open(hook, "w") as f:
            f.write('return {database = "all", actions = {"click"}, '
                    'send = {type = "http", url = "http://127.0.0.1:1/"}}')
        code, out, err = run("try", hook, os.path.join(FIXTURES, "click.json"))
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["event_type"], "click")


if __name__ == "__main__":
    harness.main()
