#!/usr/bin/env python3
"""The cogpipe command as a user meets it: exit codes, arguments, errors
with tracebacks, and (in a build without sanitizers) a valgrind-clean run."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")
SRC = os.environ.get("COGPIPE_SOURCE_DIR", ".")


def run(*args, **kw):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120, **kw)


class Cli(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-cli-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def script(self, text, name="s.lua"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_version_and_help(self):
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^cogpipe \d+\.\d+\.\d+")
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for command in ("run", "check", "audit", "webhook", "help"):
            self.assertRegex(r.stdout, r"\n  " + command + r" +\w")
        self.assertIn("exit status", r.stdout)

    def test_usage_errors_exit_2(self):
        self.assertEqual(run().returncode, 2)
        self.assertEqual(run("--bogus").returncode, 2)
        r = run("nosuchcommand")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'nosuchcommand'", r.stderr)
        self.assertEqual(run("run").returncode, 2)

    def test_no_default_tenant(self):
        """Commands that reach a platform name the tenant or stop: none is
        taken for granted, and the error names the command used."""
        for command in (["export"], ["undo", "run-1"]):
            r = run(*command, "--state-dir", self.dir)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("cogpipe: %s: a pipeline needs --tenant" % command[0], r.stderr)
        for command in ("export", "undo"):
            self.assertNotIn("default: sandbox", run(command, "--help").stdout)

    def test_missing_file_exit_2(self):
        r = run("run", os.path.join(self.dir, "absent.lua"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot open", r.stderr)
        self.assertIn("absent.lua", r.stderr)

    def test_syntax_error_exit_2_with_location(self):
        path = self.script("local x = 1\nx = = 2\n")
        r = run("run", path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("s.lua:2:", r.stderr)

    def test_script_sees_args(self):
        path = self.script("print(arg[0]:match('[^/]+$'), #arg, arg[1], arg[2])\n")
        r = run("run", path, "--", "a b", "--flag")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "s.lua\t2\ta b\t--flag")

    def test_main_error_exit_1_with_traceback_after_cancelling(self):
        path = self.script(
            "local cp = require 'cogpipe'\n"
            "cp.spawn(function() cp.sleep(60) end)\n"
            "cp.sleep(0.01)\n"
            "local function deeper() error('main went wrong') end\n"
            "deeper()\n")
        r = run("run", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("s.lua:4: main went wrong", r.stderr)
        self.assertIn("stack traceback", r.stderr)
        self.assertRegex(r.stderr, r"s\.lua:5: in ")

    def test_task_error_printed_and_others_go_on(self):
        path = self.script(
            "local cp = require 'cogpipe'\n"
            "local bad = cp.spawn(function() cp.sleep(0.01); error('task broke') end)\n"
            "local good = cp.spawn(function() cp.sleep(0.05); return 'fine' end)\n"
            "local r, err = cp.wait(bad)\n"
            "print(r, err.kind, cp.wait(good))\n")
        r = run("run", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "nil\ttask\tfine")
        self.assertIn("s.lua:2: task broke", r.stderr)
        self.assertIn("stack traceback", r.stderr)

    def test_unhandled_task_failure_exit_1(self):
        path = self.script("require('cogpipe').spawn(function() error('nobody waits') end)\n")
        r = run("run", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nobody waits", r.stderr)

    @unittest.skipUnless(os.environ.get("COGPIPE_VALGRIND"), "needs a build without sanitizers and valgrind")
    def test_valgrind_clean(self):
        vg = [os.environ["COGPIPE_VALGRIND"], "--leak-check=full", "--error-exitcode=99", "-q"]
        smoke = os.path.join(SRC, "tests", "valgrind_smoke.lua")
        r = subprocess.run([*vg, BIN, "run", smoke], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ok\t630", r.stdout)
        # the failing-main path closes every handle too
        path = self.script(
            "local cp = require 'cogpipe'\n"
            "for i = 1, 5 do cp.spawn(function() cp.sleep(60) end) end\n"
            "cp.sleep(0.01)\nerror('stop')\n")
        r = subprocess.run([*vg, BIN, "run", path], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 1, r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
