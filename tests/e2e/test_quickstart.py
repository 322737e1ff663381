#!/usr/bin/env python3
"""The path a new user walks alone: the README's quickstart run as written
(cogpipe init, the variables, tenant check, a dry run, an upload, a re-run
that sends nothing) against the emulator; the tenant schema's errors (an
unknown key with the key probably meant, wrong types and ranges, every
missing variable at once and only those the pipeline reads); no silent
default tenant; help for every command; and the README's command block and
settings table kept equal to what the program says."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402

PIPELINES = os.path.join(SRC, "pipelines")
README = os.path.join(SRC, "README.md")
# nothing listens there: a run that got as far as the network would fail
# differently (exit 1), and fast
DEAD = "http://127.0.0.1:9"


def cogpipe(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("COGNIGY_", "COGPIPE_WEBHOOK"))}
    e.update(env or {})
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120, env=e, cwd=cwd)


class Schema(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-tenant-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def tenant(self, body, name="acme"):
        path = os.path.join(self.dir, name + ".lua")
        with open(path, "w") as f:
            f.write(body)
        return path

    def refused(self, body, *expected):
        """The file is refused by tenant check and by a run alike (exit 2,
        nothing sent), with every expected message."""
        path = self.tenant(body)
        r = cogpipe("tenant", "check", path, "--pipeline", os.path.join(PIPELINES, "intent_examples.lua"))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        for e in expected:
            self.assertIn(e.replace("FILE", path), r.stderr)
        run = cogpipe("run", os.path.join(PIPELINES, "intent_examples.lua"), "--tenant", path, "--json",
                      "--state-dir", os.path.join(self.dir, "state"))
        self.assertEqual(run.returncode, 2, run.stdout + run.stderr)
        self.assertEqual(run.stdout, "")
        for e in expected:
            self.assertIn(e.replace("FILE", path), run.stderr)
        return r.stderr

    def test_unknown_key_names_the_key_meant(self):
        self.refused(f"return {{\n  base_url = '{DEAD}',\n  auth = {{ client_id = 'a', client_secret = 'b' }},\n"
                     "  limts = { rate = 3 },\n}\n",
                     "FILE:4: limts is not a tenant setting (did you mean 'limits'?)")
        self.refused(f"return {{ base_url = '{DEAD}', auth = {{ client_id = 'a', client_secret = 'b' }},\n"
                     "  webhooks = { { url = 'https://h.example', secret = 'whsec_c2FuZGJveC13ZWJob29rLXNlY3JldC0wMDAx',"
                     " tires = 3 } } }\n",
                     "FILE:2: webhooks[1].tires is not a tenant setting (did you mean 'tries'?)")

    def test_wrong_types_and_ranges(self):
        cases = [
            ("limits = { rate = -1 }", "limits.rate must be a number from 0.001 to 10000, not -1"),
            ("limits = { rate = 0/0 }", "limits.rate must be a number from 0.001 to 10000, not NaN"),
            ("limits = { max_in_flight = 2.5 }", "limits.max_in_flight must be a whole number from 1 to 1000"),
            ("intent_cap = -5", "intent_cap must be a whole number from 1 to 100000, not -5"),
            ("dedupe = { near = 'high' }", 'dedupe.near must be a number from 0.01 to 1, not "high"'),
            ("webhooks = { { url = 'https://h.example', secret = {} } }",
             "webhooks[1].secret must be a string or a list of strings"),
            ("webhooks = { { url = 'https://h.example', secret = 'too-short' } }",
             "webhooks[1] is not usable: webhook secret is too short"),
            ("base_url = 'ftp://x'", "base_url must be an http(s) URL"),
        ]
        for setting, message in cases:
            with self.subTest(setting=setting):
                self.refused("return {\n  name = 'acme', auth = { client_id = 'a', client_secret = 'b' },\n  "
                             + setting + ",\n}\n", "FILE:3: " + message)
        # several problems: all of them, each at its line
        err = self.refused("return {\n  base_url = 'x',\n  intent_cap = 0,\n  limits = { burst = 0 },\n}\n",
                           "FILE:2: base_url", "FILE:3: intent_cap", "FILE:4: limits.burst")
        self.assertEqual(len(err.strip().splitlines()), 3)

    def test_every_missing_variable_at_once_and_only_those_read(self):
        prod = os.path.join(PIPELINES, "tenants", "example_production.lua")
        wanted = {
            "intent_examples.lua": ({"COGNIGY_CLIENT_ID", "COGNIGY_CLIENT_SECRET"},
                                    {"COGNIGY_API_KEY", "COGNIGY_FLOW_ID", "COGNIGY_LOCALE_ID"}),
            "cognigy_v2_sentences.lua": ({"COGNIGY_API_KEY", "COGNIGY_FLOW_ID", "COGNIGY_LOCALE_ID"},
                                         {"COGNIGY_CLIENT_ID", "COGNIGY_CLIENT_SECRET"}),
            "dataset_upload.lua": ({"COGNIGY_CLIENT_ID", "COGNIGY_CLIENT_SECRET"}, {"COGNIGY_API_KEY"}),
        }
        for pipeline, (named, not_named) in wanted.items():
            with self.subTest(pipeline=pipeline):
                r = cogpipe("run", os.path.join(PIPELINES, pipeline), "--tenant", prod, "--state-dir",
                            os.path.join(self.dir, "state"), env={"COGNIGY_API_BASE": DEAD})
                self.assertEqual(r.returncode, 2, r.stderr)
                lines = [ln for ln in r.stderr.splitlines() if "environment variable" in ln]
                self.assertEqual(len(lines), 1, r.stderr)  # one message, every name in it
                for var in named:
                    self.assertIn(var, lines[0])
                for var in not_named:
                    self.assertNotIn(var, r.stderr)
                self.assertNotIn("COGPIPE_WEBHOOK", r.stderr)  # optional in the example
        # with them set, the same tenant is good for the intent pipeline
        r = cogpipe("tenant", "check", prod, "--pipeline", os.path.join(PIPELINES, "intent_examples.lua"),
                    env={"COGNIGY_CLIENT_ID": "client-1", "COGNIGY_CLIENT_SECRET": "a-secret-value-1"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("a-secret-value-1", r.stdout)

    def test_no_silent_default_tenant(self):
        r = cogpipe("run", os.path.join(PIPELINES, "intent_examples.lua"), "--state-dir",
                    os.path.join(self.dir, "state"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("needs --tenant", r.stderr)


class Help(unittest.TestCase):
    def commands(self):
        r = cogpipe("help")
        self.assertEqual(r.returncode, 0)
        return re.findall(r"^  (\w+)\s{2,}", r.stdout, re.M)

    def test_help_and_dash_dash_help_for_every_command(self):
        names = self.commands()
        for name in ("run", "check", "audit", "webhook", "init", "tenant", "help"):
            self.assertIn(name, names)
        for name in names:
            with self.subTest(command=name):
                a = cogpipe("help", name)
                b = cogpipe(name, "--help")
                self.assertEqual(a.returncode, 0, a.stderr)
                self.assertEqual(b.returncode, 0, b.stderr)
                self.assertEqual(a.stdout, b.stdout)
                self.assertTrue(a.stdout.startswith("usage: cogpipe " + name), a.stdout[:80])
        self.assertEqual(cogpipe("--help").stdout, cogpipe("help").stdout)
        self.assertEqual(cogpipe("help", "nope").returncode, 2)
        self.assertEqual(cogpipe("nope").returncode, 2)
        bare = cogpipe()
        self.assertEqual(bare.returncode, 2)
        self.assertIn("usage: cogpipe COMMAND", bare.stderr)

    def test_readme_says_what_the_program_says(self):
        with open(README, encoding="utf-8") as f:
            text = f.read()
        synopsis = cogpipe("help", "--synopsis").stdout
        block = re.search(r"<!-- the output of `cogpipe help --synopsis`[^\n]*\n```\n(.*?)```", text, re.S)
        self.assertIsNotNone(block)
        self.assertEqual(block.group(1), synopsis)
        keys = cogpipe("tenant", "keys", "--markdown").stdout
        table = re.search(r"<!-- the output of `cogpipe tenant keys --markdown`[^\n]*\n(.*?\n)\n", text, re.S)
        self.assertIsNotNone(table)
        self.assertEqual(table.group(1), keys)


class Quickstart(unittest.TestCase):
    """The README's quickstart, its commands as written, against the
    emulator standing in for the project."""

    def setUp(self):
        self.emu = Emulator()
        self.dir = tempfile.mkdtemp(prefix="cogpipe-quick-")

    def tearDown(self):
        self.emu.stop()
        shutil.rmtree(self.dir)

    def readme_commands(self):
        with open(README, encoding="utf-8") as f:
            text = f.read()
        section = text[text.index("## Your own Cognigy.AI project"):text.index("## The command")]
        return [ln.strip() for ln in section.splitlines() if ln.strip().startswith("build/plain/cogpipe ")]

    def test_the_quickstart_as_written(self):
        cmds = self.readme_commands()
        self.assertEqual([c.split()[1] for c in cmds], ["init", "tenant", "run", "run"])
        env = {"COGNIGY_API_BASE": self.emu.base, "COGNIGY_API_KEY": "sandbox-api-key",
               "COGNIGY_FLOW_ID": "quick-flow", "COGNIGY_LOCALE_ID": "en-US"}

        def run(cmd):
            args = cmd.split()[1:]
            r = cogpipe(*args, "--state-dir", os.path.join(self.dir, "state"), env=env, cwd=self.dir) \
                if args[0] == "run" else cogpipe(*args, env=env, cwd=self.dir)
            self.assertEqual(r.returncode, 0, f"{cmd}\n{r.stdout}\n{r.stderr}")
            return r

        init, check, dry, upload = cmds
        run(init)
        self.assertIn("good for examples (v2)", run(check).stdout)
        run(dry)
        writes = [q for q in self.emu.requests() if q["method"] in ("POST", "PATCH")]
        self.assertEqual(writes, [], "the dry run wrote to the platform")
        run(upload)
        st = self.emu.control("GET", "state")
        held = {iid: [s["text"] for s in v["sentences"]] for iid, v in st["flows"]["quick-flow"]["intents"].items()}
        with open(os.path.join(self.dir, "myproject", "data", "examples.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        self.assertEqual(sorted(held), sorted({r["intent"] for r in rows}))
        self.assertEqual(sum(len(v) for v in held.values()), len(rows))
        self.assertTrue(os.path.exists(os.path.join(self.dir, "audit.jsonl")))
        # again: nothing is sent, the platform holds it all
        before = len(self.emu.requests())
        run(upload)
        again = [q for q in self.emu.requests()[before:] if q["method"] in ("POST", "PATCH")
                 and "/sentences" in q["path"]]
        self.assertEqual(again, [])
        self.assertEqual(cogpipe("audit", "verify", "audit.jsonl", cwd=self.dir).returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
