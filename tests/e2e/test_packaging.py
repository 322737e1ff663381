#!/usr/bin/env python3
"""What a distribution's tools see of cogpipe's dependencies: the command
and libcogpipe.so name libcurl and libcrypto (and the BLAS, when the build
has one) as libraries they need; the installed cogpipe.pc names them for
pkg-config; and a Debian package made from the build tree with
`cpack -G DEB` gets them in its Depends from dpkg-shlibdeps."""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

BUILD = os.environ.get("COGPIPE_BUILD_DIR", "build")
BIN = os.environ.get("COGPIPE_BIN", os.path.join(BUILD, "cogpipe"))
ON_DEBIAN = os.path.exists("/etc/debian_version")


def cache_value(name):
    """A variable of the build tree's CMakeCache.txt, or None."""
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(re.escape(name) + r":\w+=(.*)$", line.rstrip("\n"))
            if m:
                return m.group(1)
    return None


def needed(path):
    """The DT_NEEDED entries of an ELF file."""
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def blas_linked():
    return (cache_value("COGPIPE_BLAS") or "").upper() in ("ON", "TRUE", "1", "YES")


@unittest.skipUnless(shutil.which("readelf"), "needs readelf (binutils)")
class Needed(unittest.TestCase):
    def check(self, path):
        names = needed(path)
        self.assertTrue(any(n.startswith("libcurl") for n in names), f"{path}: {names}")
        self.assertTrue(any(n.startswith("libcrypto") for n in names), f"{path}: {names}")
        if blas_linked():
            self.assertTrue(any("blas" in n for n in names), f"{path}: {names}")

    def test_command(self):
        self.check(BIN)

    def test_shared_library(self):
        self.check(os.path.realpath(os.path.join(BUILD, "libcogpipe.so")))


class PkgConfig(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.prefix = tempfile.mkdtemp(prefix="cogpipe-pc-")
        subprocess.run(["cmake", "--install", BUILD, "--prefix", cls.prefix], check=True,
                       capture_output=True, timeout=120)
        cls.env = dict(os.environ, PKG_CONFIG_PATH=":".join(
            glob.glob(os.path.join(cls.prefix, "lib*", "pkgconfig"))))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.prefix)

    def pkg_config(self, *args):
        return subprocess.run(["pkg-config", *args, "cogpipe"], env=self.env, capture_output=True,
                              text=True, check=True, timeout=60).stdout

    def test_requires_private_names_libcurl_and_libcrypto(self):
        names = [line.split()[0] for line in self.pkg_config("--print-requires-private").splitlines()]
        self.assertIn("libcurl", names)
        self.assertIn("libcrypto", names)

    def test_static_libs_are_complete(self):
        flags = self.pkg_config("--static", "--libs").split()
        for lib in ("-lcogpipe", "-lcurl", "-lcrypto", "-luv", "-lm"):
            self.assertIn(lib, flags)
        if blas_linked():
            self.assertTrue(any("blas" in f for f in flags), flags)


class MultiarchPrefix(unittest.TestCase):
    def test_pc_finds_its_prefix_under_a_multiarch_libdir(self):
        """Debian installs libraries in lib/<triplet>: the .pc files there are
        one level deeper than in lib, and still name the prefix they are in."""
        src = os.environ.get("COGPIPE_SOURCE_DIR", ".")
        build = tempfile.mkdtemp(prefix="cogpipe-multiarch-")
        try:
            subprocess.run(["cmake", "-S", src, "-B", build, "-DCOGPIPE_TESTS=OFF",
                            "-DCMAKE_INSTALL_LIBDIR=lib/x86_64-linux-gnu"],
                           check=True, capture_output=True, timeout=300)
            for name in ("cogpipe", "cogpipe-static"):
                prefix = tempfile.mkdtemp(prefix="cogpipe-prefix-")
                pcdir = os.path.join(prefix, "lib", "x86_64-linux-gnu", "pkgconfig")
                os.makedirs(pcdir)
                shutil.copy(os.path.join(build, name + ".pc"), pcdir)
                out = subprocess.run(["pkg-config", "--variable=libdir", name],
                                     env=dict(os.environ, PKG_CONFIG_PATH=pcdir),
                                     capture_output=True, text=True, check=True, timeout=60).stdout
                self.assertEqual(os.path.realpath(out.strip()),
                                 os.path.realpath(os.path.join(prefix, "lib", "x86_64-linux-gnu")))
                shutil.rmtree(prefix)
        finally:
            shutil.rmtree(build)


def shlibdeps_reason():
    """Why the Debian package cannot be made here, or None."""
    if not shutil.which("cpack"):
        return "needs cpack"
    if not shutil.which("dpkg-shlibdeps") or not shutil.which("dpkg-deb"):
        if ON_DEBIAN:
            return None  # the test then fails: scripts/deps.sh installs dpkg-dev
        return "dpkg-shlibdeps is absent and this is not a Debian machine"
    return None


@unittest.skipIf(shlibdeps_reason(), shlibdeps_reason())
class DebianPackage(unittest.TestCase):
    def test_depends_names_libcurl_and_libssl(self):
        self.assertTrue(shutil.which("dpkg-shlibdeps"),
                        "dpkg-shlibdeps is missing on a Debian machine: sh scripts/deps.sh test installs dpkg-dev")
        out = tempfile.mkdtemp(prefix="cogpipe-deb-")
        try:
            r = subprocess.run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"),
                                "-B", out, "-D", "CPACK_DEBIAN_COMPRESSION_TYPE=gzip"],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
            debs = glob.glob(os.path.join(out, "*.deb"))
            self.assertEqual(len(debs), 1, debs)
            depends = subprocess.run(["dpkg-deb", "-f", debs[0], "Depends"], capture_output=True, text=True,
                                     check=True, timeout=60).stdout
            packages = {}
            for alternative in depends.split(","):
                m = re.match(r"\s*([a-z0-9.+-]+)(?:\s*\(>=\s*([^)]+)\))?", alternative)
                if m:
                    packages.setdefault(m.group(1), []).append(m.group(2))
            curl = [p for p in packages if p.startswith("libcurl")]
            self.assertTrue(curl, depends)
            self.assertTrue(any(p.startswith("libssl") or p.startswith("libcrypto") for p in packages), depends)
            # the libcurl that has CURLOPT_PROTOCOLS_STR, not just the functions called
            versions = [v for p in curl for v in packages[p] if v]
            self.assertTrue(any(version_at_least(v, (7, 85)) for v in versions), depends)
            if blas_linked():
                self.assertTrue(any("blas" in p for p in packages), depends)
        finally:
            shutil.rmtree(out)


def version_at_least(text, want):
    parts = tuple(int(x) for x in re.findall(r"\d+", text.split("-")[0])[:len(want)])
    return parts >= want


if __name__ == "__main__":
    unittest.main(verbosity=2)
