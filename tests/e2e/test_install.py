#!/usr/bin/env python3
"""An installed cogpipe works from its prefix: the command finds its Lua half,
and a program built with `pkg-config cogpipe` embeds the runtime."""
import os
import shutil
import subprocess
import tempfile
import unittest

BUILD = os.environ.get("COGPIPE_BUILD_DIR", "build")
SRC = os.environ.get("COGPIPE_SOURCE_DIR", ".")


@unittest.skipIf(os.environ.get("COGPIPE_SANITIZED"), "installs are checked in a build without sanitizers")
class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.prefix = tempfile.mkdtemp(prefix="cogpipe-prefix-")
        subprocess.run(["cmake", "--install", BUILD, "--prefix", cls.prefix], check=True,
                       capture_output=True, timeout=120)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.prefix)

    def test_layout(self):
        for rel in ["bin/cogpipe", "include/cogpipe.h", "share/cogpipe/lua/cogpipe/init.lua"]:
            self.assertTrue(os.path.exists(os.path.join(self.prefix, rel)), rel)
        libdir = [d for d in ("lib", "lib64") if os.path.isdir(os.path.join(self.prefix, d))][0]
        names = os.listdir(os.path.join(self.prefix, libdir))
        self.assertIn("libcogpipe.a", names)
        self.assertIn("libcogpipe.so", names)
        self.assertTrue(os.path.exists(os.path.join(self.prefix, libdir, "pkgconfig", "cogpipe.pc")))

    def test_installed_command_finds_its_lua_half(self):
        work = tempfile.mkdtemp()
        try:
            script = os.path.join(work, "s.lua")
            with open(script, "w") as f:
                f.write("print(require('cogpipe').json.encode({ok = true}))\n")
            env = {k: v for k, v in os.environ.items() if k not in ("COGPIPE_LUA_DIR", "LUA_PATH")}
            r = subprocess.run([os.path.join(self.prefix, "bin", "cogpipe"), "run", script], cwd=work,
                               capture_output=True, text=True, env=env, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), '{"ok":true}')
        finally:
            shutil.rmtree(work)

    def test_embedding_through_pkg_config(self):
        libdir = [d for d in ("lib", "lib64") if os.path.isdir(os.path.join(self.prefix, d))][0]
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(self.prefix, libdir, "pkgconfig"))
        env.pop("COGPIPE_LUA_DIR", None)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "cogpipe"], env=env, check=True,
                               capture_output=True, text=True).stdout.split()
        work = tempfile.mkdtemp()
        try:
            exe = os.path.join(work, "embed")
            src = os.path.join(SRC, "tests", "embed", "embed_example.c")
            subprocess.run(["cc", src, "-o", exe, *flags,
                            "-Wl,-rpath," + os.path.join(self.prefix, libdir)], check=True, env=env, timeout=120)
            r = subprocess.run([exe], capture_output=True, text=True, env=env, cwd=work, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("1 passed, 0 failed", r.stdout)
        finally:
            shutil.rmtree(work)

    def test_static_embedding_through_pkg_config(self):
        # `pkg-config --static` must name everything libcogpipe.a needs.
        libdir = os.path.join(self.prefix, [d for d in ("lib", "lib64")
                                            if os.path.isdir(os.path.join(self.prefix, d))][0])
        # A static program cannot find the Lua half from where the library
        # lies; an install outside the configured prefix names it.
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"),
                   COGPIPE_LUA_DIR=os.path.join(self.prefix, "share", "cogpipe", "lua"))
        flags = subprocess.run(["pkg-config", "--static", "--cflags", "--libs", "cogpipe"], env=env,
                               check=True, capture_output=True, text=True).stdout.split()
        flags = [os.path.join(libdir, "libcogpipe.a") if f == "-lcogpipe" else f for f in flags]
        work = tempfile.mkdtemp()
        try:
            exe = os.path.join(work, "embed")
            src = os.path.join(SRC, "tests", "embed", "embed_example.c")
            subprocess.run(["cc", src, "-o", exe, *flags], check=True, env=env, timeout=120)
            r = subprocess.run([exe], capture_output=True, text=True, env=env, cwd=work, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("1 passed, 0 failed", r.stdout)
        finally:
            shutil.rmtree(work)


if __name__ == "__main__":
    unittest.main(verbosity=2)
