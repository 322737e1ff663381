#!/usr/bin/env python3
"""`cogpipe check` within its bounds, as a user meets them: a file over the
size limit is not read past it; no input of up to 50 MiB, whatever the
length of its lines and however its texts repeat, takes it over 50 MiB of
memory (each shape's counts checked against Python's own on the same file);
what is not a regular file is refused at once, a FIFO nobody writes to
included; and a process out of file descriptors is told so, for the file
or the module it was opening.

Peak memory is measured in a build without sanitizers (scripts/test.sh runs
this file on the plain build as well); the rest runs in both."""
import collections
import io
import json
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata
import unittest

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")
SRC = os.environ.get("COGPIPE_SOURCE_DIR", ".")
SANITIZED = bool(os.environ.get("COGPIPE_SANITIZED"))
MIB = 1 << 20
LIMIT_KB = 50 * 1024           # the bound on peak memory, as ru_maxrss counts it
SIZE = 52_000_000              # each generated file: just under the 50 MiB limit
MAX_TEXT = MIB                 # longer texts are reported, not deduplicated


# A child's peak RSS counts what it inherited at fork until it execs: a
# child of this process, which holds the generated files, would start high.
# So the command is started by a small Python of its own, which measures it.
MEASURE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%d %d" % (os.waitstatus_to_exitcode(status), ru.ru_maxrss))
"""


def run(args, preexec_fn=None, timeout=300, env=None):
    """Exit status, stdout, stderr, peak RSS in KiB and wall seconds of one
    `cogpipe check` run, the peak that of the command alone. With a
    preexec_fn (descriptor limits), unmeasured: Python would not start."""
    if preexec_fn:
        t0 = time.monotonic()
        p = subprocess.run([BIN, "check", *args], capture_output=True, preexec_fn=preexec_fn,
                           timeout=timeout, env=env)
        return (p.returncode, p.stdout, p.stderr.decode(errors="replace"), None,
                time.monotonic() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result")
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-c", MEASURE, result, BIN, "check", *args],
                           capture_output=True, timeout=timeout)
        secs = time.monotonic() - t0
        with open(result) as f:
            code, kb = (int(x) for x in f.read().split())
    return code, p.stdout, p.stderr.decode(errors="replace"), kb, secs


class Bounded(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-limits-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)


class SizeLimit(Bounded):
    def sparse(self, size):
        p = self.path("sparse.txt")
        with open(p, "wb") as f:
            f.truncate(size)
        return p

    def test_max_bytes_stops_reading(self):
        """A 300 MiB file with --max-bytes 1000: reported over the limit with
        its size, read no further (memory and time say so)."""
        p = self.sparse(300 * MIB)
        code, out, err, kb, secs = run(["--json", "--max-bytes", "1000", p])
        self.assertEqual(code, 3, err)
        r = json.loads(out)
        self.assertEqual(r["bytes"], 300 * MIB)
        big = [q for q in r["problem_list"] if q["kind"] == "too_large"]
        self.assertEqual(len(big), 1)
        self.assertEqual(big[0]["offset"], 1000)
        self.assertIn("file is %d bytes; the limit is 1000 bytes" % (300 * MIB), big[0]["reason"])
        # The NULs before the limit are one line that runs past it: cut,
        # not checked, so no control character problems.
        self.assertEqual((r["lines"], r["problems"]), (0, 1))
        self.assertLess(secs, 20)
        if not SANITIZED:
            self.assertLessEqual(kb, LIMIT_KB)

    def test_default_limit(self):
        p = self.sparse(300 * MIB)
        code, out, err, kb, secs = run(["--json", p])
        self.assertEqual(code, 3, err)
        r = json.loads(out)
        big = [q for q in r["problem_list"] if q["kind"] == "too_large"][0]
        self.assertEqual(big["offset"], 52428800)
        if not SANITIZED:
            self.assertLessEqual(kb, LIMIT_KB)

    def test_records_before_the_limit(self):
        p = self.path("a.txt")
        with open(p, "wb") as f:
            f.write(b"one\ntwo\none\n" + b"x" * 5000 + b"\n")
        code, out, err, _, _ = run(["--json", "--max-bytes", "100", p])
        self.assertEqual(code, 3, err)
        r = json.loads(out)
        self.assertEqual((r["lines"], r["unique"], r["duplicates"]), (3, 2, 1))
        self.assertEqual([(q["kind"], q["line"], q["column"]) for q in r["problem_list"]],
                         [("too_large", 4, 89)])


class NotAFile(Bounded):
    def test_fifo_without_writer(self):
        fifo = self.path("pipe.txt")
        os.mkfifo(fifo)
        # The second counts from when the command could first have looked at
        # the file: the same command on a file that is there shows how long
        # starting it takes (seconds under the sanitizers on a busy machine).
        plain = self.path("plain.txt")
        with open(plain, "w") as f:
            f.write("hello\n")
        t0 = time.monotonic()
        run([plain], timeout=30)
        started = time.monotonic() - t0
        t0 = time.monotonic()
        code, _, err, _, _ = run([fifo], timeout=30)
        self.assertLess(time.monotonic() - t0, started + 1.0)
        self.assertEqual(code, 2)
        self.assertIn("%s: not a regular file but a named pipe (FIFO)" % fifo, err)
        # Through the near-duplicate pass too, which reads the files again.
        code, _, err, _, _ = run(["--near", "0.8", fifo], timeout=10)
        self.assertEqual(code, 2)
        self.assertIn("named pipe", err)

    def test_devices_directories_sockets(self):
        sock_path = self.path("s.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(sock_path)
        try:
            for path, what in [("/dev/zero", "a character device"), (self.dir, "a directory"),
                               (sock_path, "a socket")]:
                code, _, err, _, _ = run([path], timeout=10)
                self.assertEqual(code, 2, path)
                self.assertIn("%s: not a regular file but %s" % (path, what), err)
        finally:
            s.close()


def nofile(n):
    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return lower


class OutOfDescriptors(Bounded):
    def least_descriptors(self, args, env=None):
        """The lowest RLIMIT_NOFILE under which `cogpipe check args` works,
        and what it said at each lower limit it got a word out at."""
        said = {}
        for n in range(4, 64):
            code, _, err, _, _ = run(args, preexec_fn=nofile(n), timeout=60, env=env)
            if code == 0:
                return n, said
            said[n] = (code, err)
        self.fail("cogpipe check never ran with under 64 descriptors")

    def test_module_and_input_files(self):
        one = self.path("one.txt")
        with open(one, "w") as f:
            f.write("hello\n")
        n, said = self.least_descriptors([one])
        # One descriptor short: the first file opened after start-up is the
        # input (the command's module is compiled in), and the error says
        # which and why.
        code, err = said[n - 1]
        self.assertEqual(code, 1, err)
        self.assertIn("one.txt: cannot open: too many open files", err)
        self.assertNotIn("unknown command", err)
        # Read from a source tree, the command's module is the first file.
        tree = dict(os.environ, COGPIPE_LUA_DIR=os.path.join(SRC, "lua"))
        n_tree, said = self.least_descriptors([one], env=tree)
        code, err = said[n_tree - 1]
        self.assertEqual(code, 1, err)
        self.assertIn("cannot open module 'cogpipe.cmd.check'", err)
        self.assertIn("too many open files", err)
        self.assertNotIn("no file '", err)
        self.assertNotIn("unknown command", err)
        # Input files are held open: the one that does not fit is named.
        files = []
        for i in range(12):
            files.append(self.path("f%02d.txt" % i))
            with open(files[-1], "w") as f:
                f.write("text %d\n" % i)
        code, _, err, _, _ = run(files, preexec_fn=nofile(n + 4))
        self.assertEqual(code, 1, err)
        self.assertRegex(err, r"f\d\d\.txt: cannot open: too many open files \(this process may have %d;"
                         % (n + 4))

    def test_module_searcher(self):
        """A module file that cannot be opened for want of descriptors is not
        "not found"; cogpipe's own modules, compiled in, need none."""
        with open(self.path("mine.lua"), "w") as f:
            f.write("return {}\n")
        script = self.path("fill.lua")
        with open(script, "w") as f:
            f.write("package.path = '%s/?.lua;' .. package.path\n"
                    "local held = {}\n"
                    "while true do\n"
                    "  local h = io.open('/dev/null', 'r')\n"
                    "  if not h then break end\n"
                    "  held[#held + 1] = h\n"
                    "end\n"
                    "local own_ok, own = pcall(require, 'cogpipe.neardup')\n"
                    "local ok, err = pcall(require, 'mine')\n"
                    "for _, h in ipairs(held) do h:close() end\n"
                    "print(own_ok, type(own))\n"
                    "print(ok, err)\n"
                    "print(pcall(require, 'cogpipe.no_such_module'))\n" % self.dir)
        p = subprocess.run([BIN, "run", script], capture_output=True, text=True, timeout=60,
                           preexec_fn=nofile(64))
        self.assertEqual(p.returncode, 0, p.stderr)
        own, first, second = p.stdout.splitlines()[:3]
        self.assertEqual(own, "true\ttable")
        self.assertTrue(first.startswith("false\t"), first)
        self.assertIn("cannot open module 'mine'", first)
        self.assertIn("mine.lua", first)
        self.assertIn("too many open files", first)
        self.assertNotIn("no file", first)
        # With descriptors to spare, a missing module is still "not found".
        self.assertIn("module 'cogpipe.no_such_module' not found", second)


# ---- shapes of input ----------------------------------------------------------

def joined(lines):
    """The lines as a file of at most SIZE bytes, cut after a whole line."""
    data = ("\n".join(lines) + "\n").encode()
    return data[:data.rfind(b"\n", 0, SIZE) + 1]


CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def collapse(s):
    return " ".join(s.split())


def casefold(s):
    return unicodedata.normalize("NFKC", collapse(s)).casefold()


def counts(data, max_chars=500, max_text=MAX_TEXT):
    """lines, blank, invalid and the trimmed and case-folded texts of the
    valid ones, computed here, as the contract says."""
    lines = data.decode().split("\n")[:-1]
    blank = invalid = 0
    trim, fold = collections.Counter(), collections.Counter()
    for x in lines:
        t = x.strip()
        if not t:
            blank += 1
        elif CONTROL.search(x) or (max_chars and len(x) > max_chars) \
                or len(x.encode()) > max_text:
            invalid += 1
        else:
            trim[t] += 1
            fold[casefold(x)] += 1
    return {"lines": len(lines), "blank": blank, "invalid": invalid,
            "trim": len(trim), "casefold": len(fold)}


@unittest.skipIf(SANITIZED, "peak memory is measured in a build without sanitizers")
class Shapes(Bounded):
    """Each shape is checked in both modes: counts as computed here, peak
    memory within 50 MiB."""

    def check_shape(self, name, data, ref, extra=()):
        path = self.path(name + ".txt")
        with open(path, "wb") as f:
            f.write(data)
        del data
        for mode in ("trim", "casefold"):
            code, out, err, kb, secs = run(["--json", "--normalize", mode, *extra, path])
            self.assertIn(code, (0, 3), err)
            r = json.loads(out)
            got = (r["lines"], r["blank_lines"], r["invalid"], r["unique"])
            want = (ref["lines"], ref["blank"], ref["invalid"], ref[mode])
            self.assertEqual(got, want, "%s --normalize %s" % (name, mode))
            self.assertEqual(r["duplicates"] + r["conflicts"],
                             r["utterances"] - r["unique"], name)
            note = "%s --normalize %s: peak %.1f MiB in %.1f s" % (name, mode, kb / 1024, secs)
            sys.stderr.write(note + "\n")
            self.assertLessEqual(kb, LIMIT_KB, note)
        os.unlink(path)

    def test_long_lines(self):
        """Lines of 20 KiB to 1 MiB, half of them repeats (some in other
        case), a few longer than a text may be, one of 8 MB."""
        rnd = random.Random(1)
        chunk = "".join(rnd.choice("abcdefgh  ") for _ in range(1 << 16))
        made, lines, size = [], [], 0
        while size < SIZE:
            k = rnd.random()
            if made and k < 0.5:
                x = rnd.choice(made)
                x = x.upper() if rnd.random() < 0.3 else x
            elif k < 0.52:
                x = "z" * rnd.choice([MAX_TEXT + 1, MAX_TEXT + 5000, 8_000_000])
            else:
                n = rnd.randint(20 << 10, MAX_TEXT)
                start = rnd.randrange(len(chunk))
                x = "%d %s" % (len(made), (chunk * (n // len(chunk) + 2))[start:start + n])[:n]
                made.append(x)
            lines.append(x)
            size += len(x) + 1
        data = joined(lines)
        del lines, made
        self.check_shape("long", data, counts(data, max_chars=0), ["--max-chars", "0"])

    def test_unique_short_lines(self):
        """Every line a new text: hexadecimal numbers, the odd one in
        capitals (new for trim, a repeat for casefold), counted here with a
        bit per number rather than a set."""
        rnd = random.Random(2)
        out, size, i = [], 0, 0x1000000
        while size < SIZE:
            if i > 0x1000000 and rnd.random() < 0.05:
                x = ("%x" % rnd.randrange(0x1000000, i)).upper()
            else:
                x = "%x" % i
                i += 1
            out.append(x)
            size += len(x) + 1
        data = joined(out)
        del out
        seen_trim, seen_fold = bytearray(2 * (i - 0x1000000)), bytearray(i - 0x1000000)
        lines = trim = fold = 0
        for x in io.BytesIO(data):
            x = x[:-1]
            lines += 1
            v = int(x, 16) - 0x1000000
            k = 2 * v + (x != x.lower())
            if not seen_trim[k]:
                seen_trim[k] = 1
                trim += 1
            if not seen_fold[v]:
                seen_fold[v] = 1
                fold += 1
        ref = {"lines": lines, "blank": 0, "invalid": 0, "trim": trim, "casefold": fold}
        self.assertGreater(fold, 5_000_000)  # far more than one pass holds
        self.check_shape("unique", data, ref)

    def test_one_line_repeated(self):
        x = b"Book a flight to Paris, please\n"
        data = x * (SIZE // len(x))
        ref = {"lines": data.count(b"\n"), "blank": 0, "invalid": 0, "trim": 1, "casefold": 1}
        self.check_shape("one", data, ref)

    def test_tiny_lines(self):
        rnd = random.Random(4)
        pieces = [b"a", b"b", b"A", b"", b" a", b"ab", b"\t"]
        data = b"\n".join(rnd.choices(pieces, k=SIZE // 3)) + b"\n"
        c = collections.Counter(x[:-1] for x in io.BytesIO(data))
        trim = {k.strip() for k in c if k.strip()}
        ref = {"lines": sum(c.values()), "blank": c[b""] + c[b"\t"], "invalid": 0,
               "trim": len(trim), "casefold": len({k.lower() for k in trim})}
        self.check_shape("tiny", data, ref)

    def test_mixed(self):
        """Utterances with repeats near and far, case, space and Unicode
        variants, blank lines, tabs, control characters and lines over the
        500 character limit."""
        rnd = random.Random(5)
        words = ["book", "a", "flight", "to", "Paris", "café", "Straße", "cafe\u0301", "ﬁle",
                 "ΣΊΣΥΦΟΣ", "hello", "there", "cancel", "my", "order", "please", "now"]
        lines, size = [], 0
        while size < SIZE:
            k = rnd.random()
            if k < 0.03:
                x = ""
            elif k < 0.25 and lines:
                base = rnd.choice(lines[-200:] if rnd.random() < 0.5 else lines)
                x = rnd.choice([base, base.upper(), "  " + base + " ", base.replace(" ", "  ", 1)])
            elif k < 0.26:
                x = "bell \x07 in %d" % rnd.randrange(1000)
            elif k < 0.265:
                x = "long " * 120
            elif k < 0.28:
                x = "tab\there %d" % rnd.randrange(10000)
            else:
                x = " ".join(rnd.choice(words) for _ in range(rnd.randint(2, 9))) \
                    + " %d" % rnd.randrange(200000)
            lines.append(x)
            size += len(x.encode()) + 1
        data = joined(lines)
        del lines
        self.check_shape("mixed", data, counts(data))


if __name__ == "__main__":
    unittest.main(verbosity=2)
