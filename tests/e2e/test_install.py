#!/usr/bin/env python3
"""An installed cogpipe works from its prefix alone: the command, copied
elsewhere and run with no environment of its own, far from the source tree,
has its Lua half compiled in (nothing of it is installed); and a program
built as the README's Embedding section says -- its prog.c, its hello.lua,
its commands -- runs with no environment, linked to libcogpipe.so or to
libcogpipe.a."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import Emulator  # noqa: E402

BUILD = os.environ.get("COGPIPE_BUILD_DIR", "build")
SRC = os.environ.get("COGPIPE_SOURCE_DIR", ".")
README = os.path.join(SRC, "README.md")
# What a user's shell may hold that would let a broken install pass.
LEAKS = ("COGPIPE_LUA_DIR", "LUA_PATH", "LUA_PATH_5_4", "LUA_INIT", "LUA_INIT_5_4", "LD_LIBRARY_PATH",
         "PKG_CONFIG_PATH")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in LEAKS and not k.startswith("COGNIGY_")}
    env.update(extra)
    return env


def embedding_section():
    """prog.c, hello.lua and the command lines of the README's Embedding
    section, as written."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n## Embedding\n")
    section = text[start:text.index("\n## ", start + 1)]
    prog = re.search(r"```c\n(.*?)```", section, re.S).group(1)
    hello = re.search(r"```lua\n(.*?)```", section, re.S).group(1)
    commands = [ln.strip() for ln in section.splitlines() if ln.startswith("    ") and
                ln.strip().startswith(("cmake --install ", "cc ", "./prog "))]
    return prog, hello, commands


@unittest.skipIf(os.environ.get("COGPIPE_SANITIZED"), "installs are checked in a build without sanitizers")
class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.prog, cls.hello, cls.commands = embedding_section()
        cls.root = tempfile.mkdtemp(prefix="cogpipe-install-")
        cls.prefix = os.path.join(cls.root, "prefix")
        # the README's install command, into a prefix of the test's own
        install = [c for c in cls.commands if c.startswith("cmake --install ")]
        assert install == ["cmake --install build --prefix /usr/local"], install
        subprocess.run(["cmake", "--install", BUILD, "--prefix", cls.prefix], check=True,
                       capture_output=True, timeout=120)
        cls.libdir = os.path.join(cls.prefix, [d for d in ("lib", "lib64")
                                               if os.path.isdir(os.path.join(cls.prefix, d))][0])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root)

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="cogpipe-away-")

    def tearDown(self):
        shutil.rmtree(self.work)

    def test_layout(self):
        for rel in ["bin/cogpipe", "include/cogpipe.h"]:
            self.assertTrue(os.path.exists(os.path.join(self.prefix, rel)), rel)
        names = os.listdir(self.libdir)
        self.assertIn("libcogpipe.a", names)
        self.assertIn("libcogpipe.so", names)
        self.assertEqual(sorted(os.listdir(os.path.join(self.libdir, "pkgconfig"))),
                         ["cogpipe-static.pc", "cogpipe.pc"])
        # The Lua half is in the library, not beside it.
        self.assertFalse(os.path.exists(os.path.join(self.prefix, "share", "cogpipe")))
        self.assertEqual([f for _, _, files in os.walk(self.prefix) for f in files if f.endswith(".lua")], [])

    def moved_command(self):
        """The installed tree copied elsewhere: its command cannot reach the
        prefix it was installed to, let alone the source tree."""
        moved = os.path.join(self.work, "elsewhere")
        shutil.copytree(self.prefix, moved, symlinks=True)
        return os.path.join(moved, "bin", "cogpipe")

    def cogpipe(self, exe, *args, **env):
        cwd = os.path.join(self.work, "cwd")
        os.makedirs(cwd, exist_ok=True)
        return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True,
                              env=clean_env(**env), timeout=120)

    def test_the_command_runs_from_its_prefix_alone(self):
        exe = self.moved_command()
        r = self.cogpipe(exe, "--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("cogpipe 0.1.0 "), r.stdout)
        # a script: its modules come from the copy compiled in
        script = os.path.join(self.work, "s.lua")
        with open(script, "w") as f:
            f.write("local cp = require 'cogpipe'\n"
                    "local _, where = require 'cogpipe.pipeline'\n"
                    "print(cp.json.encode({ok = true}), where)\n")
        r = self.cogpipe(exe, "run", script)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ['{"ok":true}', ":embedded:"])
        # a command: check a small file, one problem found with its line
        data = os.path.join(self.work, "utterances.txt")
        with open(data, "w") as f:
            f.write("book a table for two\nbook a table for two\nwhat is the weather\n")
        r = self.cogpipe(exe, "check", data)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('utterances.txt:2: "book a table for two" repeats line 1', r.stdout)

    def test_a_pipeline_runs_from_the_moved_command(self):
        """cogpipe init writes a project; its pipeline uploads to the
        emulator: the commands, the pipeline DSL, the runner and the v2
        target, all from the copy compiled in."""
        exe = self.moved_command()
        r = self.cogpipe(exe, "init", "proj", "--target", "v2")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        emu = Emulator()
        try:
            env = {"COGNIGY_API_BASE": emu.base, "COGNIGY_API_KEY": "sandbox-api-key",
                   "COGNIGY_FLOW_ID": "moved-flow", "COGNIGY_LOCALE_ID": "en-US"}
            r = self.cogpipe(exe, "run", "proj/pipeline.lua", "--tenant", "production", "--json",
                             "--state-dir", os.path.join(self.work, "state"), **env)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            with open(os.path.join(self.work, "cwd", "proj", "data", "examples.jsonl")) as f:
                rows = [json.loads(line) for line in f]
            held = emu.control("GET", "state")["flows"]["moved-flow"]["intents"]
            self.assertEqual(sum(len(v["sentences"]) for v in held.values()), len(rows))
        finally:
            emu.stop()

    def build_as_the_readme_says(self, static):
        """Writes prog.c and hello.lua into a directory of their own and runs
        the README's cc line there (PKG_CONFIG_PATH names the test's prefix
        for the build only); returns the directory."""
        lines = [c for c in self.commands if c.startswith("cc ") and ("cogpipe-static" in c) == static]
        self.assertEqual(len(lines), 1, self.commands)
        here = os.path.join(self.work, "static" if static else "shared")
        os.makedirs(here)
        for name, text in (("prog.c", self.prog), ("hello.lua", self.hello)):
            with open(os.path.join(here, name), "w") as f:
                f.write(text)
        r = subprocess.run(["sh", "-c", lines[0]], cwd=here, capture_output=True, text=True, timeout=120,
                           env=clean_env(PKG_CONFIG_PATH=os.path.join(self.libdir, "pkgconfig")))
        self.assertEqual(r.returncode, 0, lines[0] + "\n" + r.stderr)
        return here

    def run_as_the_readme_says(self, here):
        runs = [c for c in self.commands if c.startswith("./prog ")]
        self.assertEqual(runs, ["./prog hello.lua"])
        return subprocess.run(shlex.split(runs[0]), cwd=here, capture_output=True, text=True,
                              env=clean_env(), timeout=60)

    def test_embedding_as_the_readme_says(self):
        here = self.build_as_the_readme_says(static=False)
        r = self.run_as_the_readme_says(here)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, '{"sum":5}\n')
        # an error in the script fails the program with file:line
        with open(os.path.join(here, "hello.lua"), "w") as f:
            f.write("local cp = require 'cogpipe'\nreturn cp.host_add(1, 'two')\n")
        r = self.run_as_the_readme_says(here)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("hello.lua:2:", r.stderr)

    def test_static_embedding_as_the_readme_says(self):
        here = self.build_as_the_readme_says(static=True)
        # libcogpipe.a is in the program: it runs with the prefix gone
        away = self.prefix + ".away"
        os.rename(self.prefix, away)
        try:
            r = self.run_as_the_readme_says(here)
        finally:
            os.rename(away, self.prefix)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout, '{"sum":5}\n')

    def test_static_link_line_is_complete(self):
        """`pkg-config --static --libs cogpipe` names every library that
        libcogpipe.a needs: the archive links with it in place of
        -lcogpipe."""
        env = clean_env(PKG_CONFIG_PATH=os.path.join(self.libdir, "pkgconfig"))
        flags = subprocess.run(["pkg-config", "--static", "--cflags", "--libs", "cogpipe"], env=env,
                               check=True, capture_output=True, text=True).stdout.split()
        self.assertIn("-lcogpipe", flags)
        flags = [os.path.join(self.libdir, "libcogpipe.a") if f == "-lcogpipe" else f for f in flags]
        exe = os.path.join(self.work, "embed")
        src = os.path.join(SRC, "tests", "embed", "embed_example.c")
        subprocess.run(["cc", src, "-o", exe, *flags], check=True, env=env, timeout=120)
        r = subprocess.run([exe], capture_output=True, text=True, env=clean_env(), cwd=self.work, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("1 passed, 0 failed", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
