"""The command line: --version, --help, configuration errors that name
the key, `hookd check` and `hookd try`."""

import json
import os
import re
import sqlite3
import subprocess
import tempfile
import unittest

import harness
from harness import FIXTURES, SOURCE_DIR, wait_for


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

    def test_config_bad_listen_is_refused_before_the_store(self):
        for listen in ("127.0.0.1:99999", "127.0.0.1", "[::1]8765",
                       "127.0.0.1:http", "example.com:8765",
                       " 127.0.0.1:8765"):
            path = config_file({"listen": listen, "data_dir": "data"})
            code, _, err = run("run", "--config", path)
            self.assertEqual(code, 2, listen)
            self.assertIn('listen "%s": invalid address' % listen, err)
            self.assertFalse(os.path.exists(
                os.path.join(os.path.dirname(path), "data")), listen)

    def test_missing_plugins_dir_is_refused_before_the_store(self):
        path = config_file({"plugins_dir": "nowhere", "data_dir": "data"})
        code, _, err = run("run", "--config", path)
        self.assertEqual(code, 2)
        self.assertIn("cannot read plugins_dir", err)
        self.assertIn("nowhere: No such file or directory", err)
        self.assertFalse(os.path.exists(
            os.path.join(os.path.dirname(path), "data")))

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
        self.assertEqual(out.splitlines(), [
            os.path.join(plugins, "bad.lua") + ":1: unknown setting 'acitons'",
            "1 problem in 1 of 2 hook files"])
        self.assertNotIn("load_failed", err)

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

    def test_check_and_try_read_fifos(self):
        # A shell's <(...) hands over a FIFO, which has no size to read by
        # and can be read only once.
        d = tempfile.mkdtemp(prefix="hookd-cli-")
        hook_fifo, events_fifo = (os.path.join(d, "h.lua"),
                                  os.path.join(d, "ev.ndjson"))
        os.mkfifo(hook_fifo)
        os.mkfifo(events_fifo)
        with open(os.path.join(FIXTURES, "click.json")) as f:
            click = f.read().replace("\n", " ")
        src = ('return {database = 111, actions = {"click"}, '
               'send = {type = "http", url = "http://127.0.0.1:1/"}}')

        def feed(path, text):
            return subprocess.Popen(["sh", "-c", 'printf "%s" "$1" > "$2"',
                                     "feed", text, path])

        writer = feed(hook_fifo, src)
        code, out, err = run("check", hook_fifo)
        writer.wait(10)
        self.assertEqual((code, out.strip()), (0, "all hooks ok (1 file)"),
                         err)
        with open(os.path.join(d, "copy.lua"), "w") as f:
            f.write(src)
        writers = [feed(events_fifo, click + "\n")]
        code, out, err = run("try", os.path.join(d, "copy.lua"), events_fifo)
        for w in writers:
            w.wait(10)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["event_data"]["campaign_id"], 973)
        # Nothing to try is said, not taken for success in silence.
        writers = [feed(events_fifo, " \n")]
        code, out, err = run("try", os.path.join(d, "copy.lua"), events_fifo)
        writers[0].wait(10)
        self.assertEqual((code, out), (0, ""))
        self.assertIn(events_fifo + ": no events", err)

    def test_try_prints_the_bytes_the_router_sends(self):
        # Members copied as they came (number and escapes included), the
        # profile left out, custom_data last; an event the router cannot
        # splice (a key given twice) is built, with its last value.
        d = tempfile.mkdtemp()
        events = os.path.join(d, "ev.ndjson")
        head = ('{"event_type":"click","event_date":"2026-11-20T10:00:00Z",'
                '"list_id":111,')
        with open(events, "w") as f:
            f.write(head + '"profile":{"a":1}, "event_data" : {"x":1.50,'
                    '"u":"\\u00e9\\/"},"m":1E2}\n')
            f.write(head + '"m":1,"m":2}\n')
            f.write(head + '"d":{"a":\r\t1}}\n')
        hook = os.path.join(d, "h.lua")
        with open(hook, "w") as f:
            f.write('return {database = 111, actions = {"click"}, '
                    'custom_data = {k = "v"}, '
                    'send = {type = "http", url = "http://127.0.0.1:1/"}}')
        code, out, err = run("try", hook, events)
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0], head + '"event_data" : {"x":1.50,'
                         '"u":"\\u00e9\\/"},"m":1E2,'
                         '"custom_data":{"k":"v"}}')
        self.assertEqual(json.loads(lines[1])["m"], 2)
        self.assertEqual(lines[1].count('"m"'), 1)
        # An event's line breaks are white space: printed as spaces.
        self.assertEqual(lines[2], head + '"d":{"a": \t1},'
                         '"custom_data":{"k":"v"}}')

    def test_try_exits_nonzero_when_an_event_fails(self):
        hook = os.path.join(tempfile.mkdtemp(), "h.lua")
        with open(hook, "w") as f:
            f.write('return {database = "all", actions = {"click"}, '
                    'shape = function(m) error("boom") end, '
                    'send = {type = "http", url = "http://127.0.0.1:1/"}}')
        code, out, err = run("try", hook, os.path.join(FIXTURES, "click.json"))
        self.assertEqual(code, 1)
        self.assertEqual(out, "error: %s:1: boom (in shape())\n" % hook)

    def test_try_reads_a_pretty_printed_event(self):
        hook = os.path.join(tempfile.mkdtemp(), "h.lua")
        with open(hook, "w") as f:
            f.write('return {database = "all", actions = {"click"}, '
                    'send = {type = "http", url = "http://127.0.0.1:1/"}}')
        code, out, err = run("try", hook, os.path.join(FIXTURES, "click.json"))
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["event_type"], "click")
        self.assertEqual(out.count("\n"), 1) # the message on one line



def write(folder, name, src):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(src)
    return path


def line_of(src, needle):
    """The 1-based line of src where needle first appears."""
    return src[:src.index(needle)].count("\n") + 1


def event(**fields):
    ev = {"event_type": "click", "event_date": "2026-11-01T10:00:00Z",
          "list_id": 111, "profile_id": "p1",
          "event_data": {"campaign_id": 973, "message_id": 17,
                         "segment_id": 41, "pixel_id": 9, "resource_id": 3}}
    ev.update(fields)
    return ev


CATALOG = {"catalog": os.path.join(FIXTURES, "catalog.json")}

# A hook whose examples all hold; FAILING below breaks five of them.
EXAMPLES = """return {
  database = 111,
  actions = {"click"},
  filters = {campaigns = {973}},
  custom_data = {cname = "{{campaign_name}}"},
  send = {type = "http", url = "http://127.0.0.1:1/"},
  filter = function(e) return e.profile_id ~= "skip" end,
  shape = function(m, e)
    if e.profile_id == "boom" then error("boom") end
    if e.profile_id == "none" then return nil end
    m.tags = {"a", "b"}
    return m
  end,
  tests = {
    { -- ex1
      event = {event_type = "click", event_date = "2026-11-01T10:00:00Z", list_id = 111,
               event_data = {campaign_id = 973}},
      expect = {custom_data = {cname = "%(cname)s"}, tags = {"a", "b"}},
    },
    { -- ex2
      event = {event_type = "click", event_date = "2026-11-01T10:00:00Z", list_id = 112},
      expect = %(ex2)s,
    },
    { -- ex3
      event = {event_type = "click", event_date = "2026-11-01T10:00:00Z",
               list_id = 111, profile_id = "%(ex3)s",
               event_data = {campaign_id = 973}},
      expect = false,
    },
    { -- ex4
      event = {event_type = "click", event_date = "2026-11-01T10:00:00Z",
               list_id = 111, profile_id = "none",
               event_data = {campaign_id = 973}},
      expect = false,
    },
    { -- ex5
      event = {event_type = "click", event_date = "2026-11-01T10:00:00Z", list_id = 111,
               event_data = {campaign_id = 973}},
      expect = {tags = %(tags)s, event_data = {campaign_id = 973}},
    },
  },
}
"""
PASSING = EXAMPLES % {"cname": "Black Friday", "ex2": "false",
                      "ex3": "skip", "tags": '{"a", "b"}'}
FAILING = EXAMPLES % {"cname": "Cyber Monday", "ex2": "{}",
                      "ex3": "boom", "tags": '{"a"}'}


class Check(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="hookd-check-")
        self.config = config_file(CATALOG)

    def check(self, *files):
        return run("check", "--config", self.config, *files)

    def test_check_passing_examples(self):
        path = write(self.dir, "ok.lua", PASSING)
        code, out, err = self.check(path)
        self.assertEqual((code, out), (0, "all hooks ok (1 file)\n"), err)

    def test_check_failing_examples_with_lines_and_diffs(self):
        path = write(self.dir, "ex.lua", FAILING)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        at = lambda n: "%s:%d: tests[%d]: " % (
            path, line_of(FAILING, "-- ex%d" % n) + 1, n)
        boom = "%s:%d" % (path, line_of(FAILING, 'error("boom")'))
        self.assertEqual(out.splitlines(), [
            at(1) + 'custom_data.cname: expected "Cyber Monday", '
                    'got "Black Friday"',
            at(2) + "expected a message, but the event was dropped: "
                    "database: list_id 112 is not the hook's database 111",
            at(3) + "error: %s: boom (in shape())" % boom,
            at(5) + 'tags: expected ["a"], got ["a","b"]',
            "4 problems in 1 of 1 hook file"])

    def test_check_example_expecting_a_drop(self):
        src = ('return {\n  database = 111,\n  actions = {"click"},\n  ' +
               HTTP_SEND + '\n  tests = {\n'
               '    {event = {event_type = "click", list_id = 111,\n'
               '              event_date = "2026-11-01T10:00:00Z"},\n'
               '     expect = false},\n  },\n}\n')
        path = write(self.dir, "drop.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        head, got = out.splitlines()[0].split(", got ")
        self.assertEqual(head, path + ":6: tests[1]: expected the event to "
                         "be dropped")
        # The message, cut short when long: its start is enough here.
        self.assertRegex(got, r'^\{"[a-z_]+":')

    def test_check_syntax_error(self):
        src = 'return {\n  database = 111,\n  actions = {"click"\n' \
              '  send = "x",\n}\n'
        path = write(self.dir, "syn.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith(path + ":4: '}' expected"), out)

    def test_check_runtime_error_in_the_file(self):
        src = 'local t = nil\nreturn {\n  name = t.x,\n}\n'
        path = write(self.dir, "rt.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith(path + ":3: attempt to index"), out)

    def test_check_unknown_setting_line(self):
        src = ('-- acitons = 1 in a comment does not count\nreturn {\n'
               '  database = 111,\n  actions = {"click"},\n'
               '  acitons = {"open"},\n' + '  ' + HTTP_SEND + '\n}\n')
        path = write(self.dir, "unk.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        self.assertEqual(out.splitlines()[0],
                         path + ":5: unknown setting 'acitons'")

    def test_check_unknown_template_variable_line(self):
        src = ('return {\n  database = 111,\n  actions = {"click"},\n'
               '  custom_data = {\n    a = "{{uuid}}",\n'
               '    b = "{{campain_name}}",\n  },\n  ' + HTTP_SEND + '\n}\n')
        path = write(self.dir, "tmpl.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        self.assertEqual(out.splitlines()[0], path + ":6: custom_data.b: "
                         "unknown template variable {{campain_name}}")

    def test_check_bad_transport_settings(self):
        src = ('return {\n  database = 111,\n  actions = {"click"},\n'
               '  send = {\n    type = "http",\n'
               '    url = "ftp://127.0.0.1/",\n  },\n}\n')
        path = write(self.dir, "tx.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        self.assertEqual(out.splitlines()[0], path + ":6: send.url must be "
                         "an http:// or https:// URL")

    def test_check_transport_settings_only_the_core_refuses(self):
        # librdkafka, not the Lua validation, knows its properties.
        src = ('return {\n  database = 111,\n  actions = {"click"},\n'
               '  send = {type = "kafka", brokers = {"127.0.0.1:1"},\n'
               '    properties = {["no.such.property"] = "1"}},\n}\n')
        path = write(self.dir, "kafka.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        self.assertRegex(out.splitlines()[0], r"^%s:4: send: .*no\.such\."
                         r"property" % re.escape(path))

    def test_check_tests_setting_is_validated(self):
        src = ('return {\n  database = 111,\n  actions = {"click"},\n  ' +
               HTTP_SEND + '\n  tests = {\n    {event = {list_id = 1}},\n'
               '  },\n}\n')
        path = write(self.dir, "t.lua", src)
        code, out, _ = self.check(path)
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith(
            path + ":6: tests[1].expect is required"), out)

    def test_check_several_files_and_exit_codes(self):
        ok = write(self.dir, "ok.lua", PASSING)
        bad = write(self.dir, "bad.lua", FAILING)
        missing = os.path.join(self.dir, "missing.lua")
        code, out, _ = self.check(ok, bad, missing)
        self.assertEqual(code, 1)
        lines = out.splitlines()
        self.assertFalse([l for l in lines if l.startswith(ok)])
        self.assertEqual(len([l for l in lines if l.startswith(bad)]), 4)
        self.assertIn(missing + ": cannot read: No such file or directory",
                      lines)
        self.assertEqual(lines[-1], "5 problems in 2 of 3 hook files")

    def test_check_named_file_of_a_name_not_loaded_gets_a_note(self):
        draft = write(self.dir, "my draft.lua", PASSING)
        code, out, _ = self.check(draft)
        self.assertEqual(code, 0, out)
        self.assertEqual(out.splitlines(), [
            draft + ": note: checked, but the router loads a hook only "
            "from a file named <id>.lua, the id of letters, digits, _ "
            "and -", "all hooks ok (1 file)"])

    def test_check_defaults_to_plugins_dir(self):
        plugins = os.path.join(os.path.dirname(self.config), "plugins")
        write(plugins, "good.lua", PASSING)
        write(plugins, "notes.txt", "not a hook")
        code, out, _ = self.check()
        self.assertEqual((code, out), (0, "all hooks ok (1 file)\n"))
        write(plugins, ".#good.lua", "editor leftover")
        code, out, _ = self.check()
        self.assertEqual((code, out), (0, "all hooks ok (1 file)\n"))
        write(plugins, "broken.lua", "return {")
        write(plugins, "my hook.lua", PASSING)
        code, out, _ = self.check()
        self.assertEqual(code, 1)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith(
            os.path.join(plugins, "broken.lua") + ":1: "), out)
        self.assertEqual(lines[1:], [
            os.path.join(plugins, "my hook.lua") + ": not loaded: a hook "
            "file is named <id>.lua, the id of letters, digits, _ and -",
            "2 problems in 2 of 3 hook files"])

    def test_check_usage_and_config_errors_exit_2(self):
        code, _, err = run("check", "--config", config_file({"lisen": 1}))
        self.assertEqual(code, 2)
        code, _, err = run("check", "--config",
                           config_file({"plugins_dir": "nowhere"}))
        self.assertEqual(code, 2)
        self.assertIn("nowhere", err)
        code, _, _ = run("check", "--since", "2024-01-01")
        self.assertEqual(code, 2)


# An HTTP hook with one example about its custom_data tag.
RELOADED = """return {
  database = "all",
  actions = {"click"},
  custom_data = {tag = "%(tag)s"},
  send = {type = "http", url = "%(url)s", batch_size = 1},
  tests = {
    { -- first
      event = {event_type = "click", event_date = "2026-11-01T10:00:00Z"},
      expect = {custom_data = {tag = "%(want)s"}},
    },
    {
      event = {event_type = "click", event_date = "2026-11-01T10:00:00Z"},
      expect = {custom_data = {tag = "%(want)s"}},
    },
  },
}
"""


class ReloadExamples(harness.SinkTest):
    def test_reloader_refuses_a_file_whose_example_fails(self):
        url = self.sink.url("/x")
        self.hookd = harness.Hookd({"h": RELOADED % {
            "tag": "v1", "want": "v1", "url": url}})
        self.hookd.wait_hook("h", lambda h: h["version"] == 1, "version 1")
        bad = RELOADED % {"tag": "v2", "want": "v1", "url": url}
        self.hookd.write_hook("h", bad)
        h = self.hookd.wait_hook("h", lambda h: h["error"], "error shown")
        self.assertTrue(h["error"].endswith(
            'h.lua:%d: tests[1]: custom_data.tag: expected "v1", got "v2" '
            '(and 1 more failing example)' % (line_of(bad, "-- first") + 1)),
            h["error"])
        self.assertEqual((h["version"], h["state"]), (1, "running"))
        ev = event()
        del ev["event_data"]
        self.assertEqual(self.hookd.post_events(ev)[0], 202)
        msgs = self.sink.wait_messages("/x", 1)
        self.assertEqual(msgs[0]["custom_data"], {"tag": "v1"})
        # Fixing the examples lets the new version in.
        self.hookd.write_hook("h", RELOADED % {
            "tag": "v2", "want": "v2", "url": url})
        h = self.hookd.wait_hook("h", lambda h: h["version"] == 2,
                                 "version 2")
        self.assertIsNone(h["error"])


HTTP_SEND = 'send = {type = "http", url = "http://127.0.0.1:1/"},'

# One stage of the static match or of the hook's code drops each event
# of DROPS; the last one fails in filter().
STAGES = """return {
  database = 111,
  actions = {"click"},
  filters = {campaigns = {973}, templates = {17}, segments = {41},
             pixels = {9}, resources = {3}},
  send = {type = "http", url = "http://127.0.0.1:1/"},
  filter = function(e)
    if e.profile_id == "boom" then error("boom") end
    return e.profile_id ~= "skip"
  end,
  shape = function(m, e)
    if e.profile_id ~= "none" then return m end
  end,
}
"""


def without(ev, *keys):
    ev = json.loads(json.dumps(ev))
    for k in keys:
        del ev["event_data"][k]
    return ev


DROPS = [
    (event(event_type="open"), 'dropped: actions: event_type "open" is not '
     "one of the hook's actions"),
    (event(list_id=112),
     "dropped: database: list_id 112 is not the hook's database 111"),
    (event(event_data=dict(event()["event_data"], campaign_id=974)),
     "dropped: campaigns filter: event_data.campaign_id 974 is not in the "
     "list"),
    (event(event_data=dict(event()["event_data"], message_id=18)),
     "dropped: templates filter: event_data.message_id 18 is not in the "
     "list"),
    (event(event_data=dict(event()["event_data"], segment_id=42)),
     "dropped: segments filter: event_data.segment_id 42 is not in the list"),
    (without(event(), "pixel_id"),
     "dropped: pixels filter: the event has no event_data.pixel_id"),
    (event(event_data=dict(event()["event_data"], resource_id=4)),
     "dropped: resources filter: neither event_data.resource_id nor a "
     "subscription[].resource_id is in the list"),
    (event(profile_id="skip"), "dropped: filter() returned false"),
    (event(profile_id="none"), "dropped: shape() returned nil"),
]


class Try(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="hookd-try-")
        self.hook = write(self.dir, "stages.lua", STAGES)

    def test_try_names_each_stage_that_drops(self):
        events = [event()] + [e for e, _ in DROPS] + [event(profile_id="boom")]
        path = write(self.dir, "ev.ndjson",
                     "".join(json.dumps(e) + "\n" for e in events))
        code, out, err = run("try", self.hook, path)
        self.assertEqual(code, 1, err)
        lines = out.splitlines()
        self.assertEqual(json.loads(lines[0])["profile_id"], "p1")
        self.assertEqual(lines[1:-1], [why for _, why in DROPS])
        self.assertEqual(lines[-1], "error: %s:%d: boom (in filter())" % (
            self.hook, line_of(STAGES, 'error("boom")')))

    def test_try_exit_zero_when_nothing_fails(self):
        path = write(self.dir, "ev.ndjson", "".join(
            json.dumps(e) + "\n" for e, _ in DROPS))
        code, out, err = run("try", self.hook, path)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(out.splitlines()), len(DROPS))

    def test_try_reads_standard_input(self):
        body = json.dumps(event()) + "\n" + json.dumps(event(list_id=7))
        for args in ((self.hook, "-"), (self.hook,)):
            p = subprocess.run([harness.HOOKD, "try", *args], input=body,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.splitlines()
            self.assertEqual(json.loads(lines[0])["event_type"], "click")
            self.assertTrue(lines[1].startswith("dropped: database:"))

    def test_try_hook_that_does_not_load(self):
        hook = write(self.dir, "bad.lua", "return {\n  database = 111,\n"
                     "  nope = 1,\n}\n")
        code, out, err = run("try", hook, os.path.join(FIXTURES,
                                                       "click.json"))
        self.assertEqual((code, out), (1, ""))
        self.assertIn(hook + ":3: unknown setting 'nope'", err)

    def test_try_runs_even_when_examples_fail(self):
        hook = write(self.dir, "ex.lua", FAILING)
        events = write(self.dir, "ev.json", json.dumps(event()))
        code, out, err = run("try", "--config", config_file(CATALOG), hook,
                             events)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["custom_data"],
                         {"cname": "Black Friday"})

    def test_try_usage_errors(self):
        for args in (["try"], ["try", self.hook, "a", "b"],
                     ["try", self.hook, "--since", "2024-01-01"],
                     ["try", self.hook, "--from-store"],
                     ["try", self.hook, "x.ndjson", "--from-store",
                      "--since", "2024-01-01"],
                     ["try", self.hook, "--from-store", "--since",
                      "2024-02-30"],
                     ["try", self.hook, "--from-store", "--since",
                      "2024-03-02", "--until", "2024-03-01"],
                     ["try", self.hook, "--bogus"],
                     ["try", os.path.join(self.dir, "none.lua"), "-"]):
            code, _, err = run(*args)
            self.assertEqual(code, 2, args)
            self.assertTrue(err, args)


# Stored events: profile_id marks each; event dates around 2024-03-01..02.
HISTORY = [
    ("before", "click", "2024-02-29T23:59:59.999Z"),
    ("a", "click", "2024-03-01T00:00:00Z"),
    ("b", "click", "2024-03-02T23:59:59.5+00:00"),
    ("launch", "campaign_launch", "2024-03-02T12:00:00Z"),
    ("after", "click", "2024-03-03T00:00:00Z"),
    ("x", "open", "2024-03-01T12:00:00Z"),
]

STORE_HOOK = """return {
  database = 111,
  actions = {"click", "campaign_launch"},
  profile_fields = {"email"},
  custom_data = {cname = "{{campaign_name}}"},
  send = {type = "http", url = "http://127.0.0.1:1/"},
}
"""


class TryFromStore(unittest.TestCase):
    def setUp(self):
        self.hookd = harness.Hookd(config={"history_days": 3650})
        self.hook = write(tempfile.mkdtemp(prefix="hookd-try-"), "s.lua",
                          STORE_HOOK)

    def tearDown(self):
        self.assertEqual(self.hookd.stop(), 0)

    def try_store(self, *days):
        code, out, err = run("try", "--config", self.hookd.config_path,
                             self.hook, "--from-store", *days)
        self.assertEqual(code, 0, err)
        return [json.loads(l) for l in out.splitlines()
                if not l.startswith("dropped:")], out.splitlines()

    def test_try_from_store_while_the_router_runs(self):
        evs = [event(profile_id=p, event_type=t, event_date=d)
               for p, t, d in HISTORY]
        self.assertEqual(self.hookd.post_events(evs)[0], 202)
        status, _ = harness.http(
            "PUT", self.hookd.base + "/v1/profiles/111/a",
            {"email": "a@example.com"})
        self.assertEqual(status, 200)
        wait_for("stored history", lambda: harness.sqlite_rows(
            self.hookd.db_path(), "SELECT sum(n) FROM history")[0][0] == 6)
        msgs, lines = self.try_store("--since", "2024-03-01",
                                     "--until", "2024-03-02")
        # In the order received; campaign_launch too, which exports skip.
        self.assertEqual([m["profile_id"] for m in msgs],
                         ["a", "b", "launch"])
        self.assertEqual(lines[3], 'dropped: actions: event_type "open" is '
                         "not one of the hook's actions")
        self.assertEqual(msgs[0]["custom_data"],
                         {"email": "a@example.com", "cname": "Black Friday"})
        self.assertEqual(msgs[2]["custom_data"], {"cname": "Black Friday"})
        msgs, _ = self.try_store("--since", "2024-03-02")
        self.assertEqual([m["profile_id"] for m in msgs],
                         ["b", "launch", "after"])
        # The router did not notice: it still takes events and answers.
        self.assertEqual(self.hookd.post_events(event())[0], 202)
        self.assertEqual(harness.http("GET", self.hookd.base +
                                      "/v1/hooks")[0], 200)
        self.assertEqual(self.hookd.error_lines(), [])
        # Once it has stopped, the store reads the same and is left as it
        # was: SQLite may add its empty -wal and -shm files, which the
        # router starts with as usual.
        self.assertEqual(self.hookd.stop(), 0)
        db = self.hookd.db_path()
        with open(db, "rb") as f:
            before = f.read()
        msgs, _ = self.try_store("--since", "2024-03-01",
                                 "--until", "2024-03-02")
        self.assertEqual(len(msgs), 3)
        with open(db, "rb") as f:
            self.assertEqual(f.read(), before)
        self.hookd = harness.Hookd(config={"history_days": 3650},
                                   workdir=self.hookd.dir)
        # An answer means its loop runs, signal handlers set, so tearDown's
        # SIGTERM is a clean stop (the port is logged a little earlier).
        self.assertEqual(harness.http("GET", self.hookd.base +
                                      "/v1/hooks")[0], 200)
        self.assertEqual(harness.sqlite_rows(
            db, "SELECT sum(n) FROM history")[0][0], 7)

    def test_try_from_store_with_no_events_in_range(self):
        code, out, err = run("try", "--config", self.hookd.config_path,
                             self.hook, "--from-store", "--since",
                             "2001-01-01", "--until", "2001-01-31")
        self.assertEqual((code, out), (0, ""))
        self.assertIn("no stored events", err)


class TryStoreSchema(unittest.TestCase):
    def store(self, version):
        d = tempfile.mkdtemp(prefix="hookd-try-")
        os.makedirs(os.path.join(d, "data"))
        if version is not None:
            con = sqlite3.connect(os.path.join(d, "data", "hookd.db"))
            con.execute("PRAGMA application_id = %d" % 0x686f6f6b)
            con.execute("PRAGMA user_version = %d" % version)
            con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
            con.commit()
            con.close()
        return write(d, "main.json", json.dumps({"data_dir": "data"}))

    def try_store(self, config):
        hook = write(tempfile.mkdtemp(), "s.lua", STORE_HOOK)
        return run("try", "--config", config, hook, "--from-store",
                   "--since", "2024-01-01")

    def test_try_refuses_a_store_of_another_schema(self):
        code, _, err = self.try_store(self.store(1))
        self.assertEqual(code, 2)
        self.assertIn("older hookd", err)
        code, _, err = self.try_store(self.store(99))
        self.assertEqual(code, 2)
        self.assertIn("newer hookd", err)
        code, _, err = self.try_store(self.store(None))
        self.assertEqual(code, 2)
        self.assertIn("No such file", err)

if __name__ == "__main__":
    harness.main()
