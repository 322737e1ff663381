#!/usr/bin/env python3
"""The cogpipe command when memory runs out (the address space capped with
RLIMIT_AS, as `ulimit -v` does): `check` on the shipped sample and on a
49 MiB file, and a run of the intent pipeline against the emulator, end
with their usual outcome or with exit status 1 and a message saying that
memory ran out and what was being done -- never on a signal, and never
with a summary that says ok. ASan cannot run under RLIMIT_AS, so this runs
in a build without sanitizers only.

The command links libcurl, libcrypto and (in most builds) OpenBLAS, with
the libraries they need: below some limit the dynamic loader cannot map
them and the process ends before cogpipe runs (exit 127). That floor is
measured first, and a limit below it is tested at the floor. OpenBLAS
starts a thread pool as it is loaded whose threads retry their buffers for
ever under a limit too small for them (docs/near-and-semantic-dedupe.md);
cogpipe never uses that pool, and the runs here start none
(OPENBLAS_NUM_THREADS=1)."""
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402

SAMPLE = os.path.join(SRC, "pipelines", "data", "sample_intents.jsonl")
PIPELINE = os.path.join(SRC, "pipelines", "intent_examples.lua")
KIB = 1024
# the limits the issue names (ulimit -v takes KiB), and steps between them
LIMITS = (20000, 120000)
SWEEP = tuple(range(20000, 200001, 15000))


def capped(kib):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (kib * KIB, kib * KIB))
    return limit


def environment(env=None):
    return dict(env if env is not None else os.environ, OPENBLAS_NUM_THREADS="1")


def start_floor():
    """The smallest limit (KiB, to 1000) under which the command starts at
    all; below it, the dynamic loader cannot map the libraries."""
    def starts(kib):
        r = subprocess.run([BIN, "--version"], capture_output=True, timeout=60,
                           preexec_fn=capped(kib), env=environment())
        return r.returncode == 0
    lo, hi = 1000, 1000000
    assert starts(hi), "the command does not start even with 1 GB"
    while hi - lo > 1000:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if starts(mid) else (mid, hi)
    return hi


def write_big(path, mib=49):
    """A utterance file of about mib MiB: short texts, repeats, case
    variants and blank lines, as the datasets a user checks look."""
    rng = random.Random(7)
    words = ("book flight hotel paris london cancel order refund reset password account balance card "
             "transfer money weather tomorrow alarm music play pause timer recipe dinner share "
             "translate spanish report lost stolen pin change address delivery status").split()
    target = mib << 20
    size = 0
    earlier = []
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            r = rng.random()
            if r < 0.03:
                line = ""
            elif r < 0.2 and earlier:
                line = rng.choice(earlier)
                if r < 0.08:
                    line = line.upper()
            else:
                line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + " #%d" % rng.randint(1, 10**7)
                if len(earlier) < 50000:
                    earlier.append(line)
            f.write(line + "\n")
            size += len(line) + 1


@unittest.skipIf(os.environ.get("COGPIPE_SANITIZED"), "ASan cannot run under RLIMIT_AS")
class OutOfMemory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.floor = start_floor()
        cls.dir = tempfile.mkdtemp(prefix="cogpipe-oom-")
        cls.big = os.path.join(cls.dir, "big.txt")
        write_big(cls.big)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def limits(self, *kibs):
        """kibs in order, each raised to the floor at least, once each."""
        return sorted({max(kib, self.floor) for kib in kibs})

    def cogpipe(self, kib, *args, env=None):
        return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300,
                              preexec_fn=capped(kib), env=environment(env))

    def assert_outcome(self, r, kib, what, normal):
        """r ended as it does with memory to spare (one of normal), or with
        exit 1 and a message about memory; never on a signal."""
        self.assertGreaterEqual(r.returncode, 0,
                                f"{what} under {kib} KiB died on signal {-r.returncode}: {r.stderr[-1500:]}")
        said_oom = "out of memory" in r.stderr
        if r.returncode in normal and not said_oom:
            return False
        self.assertEqual(r.returncode, 1, f"{what} under {kib} KiB: {r.stderr[-1500:]}")
        self.assertTrue(said_oom, f"{what} under {kib} KiB failed without saying why: {r.stderr[-1500:]}")
        self.assertIn(what.split()[0], r.stderr, "the message names what was being done")
        return True

    def test_check_the_sample(self):
        for kib in self.limits(*LIMITS):
            r = self.cogpipe(kib, "check", SAMPLE)
            self.assert_outcome(r, kib, "check", (3,))

    def test_check_49_mib_runs_out_of_memory_cleanly(self):
        # 20 MB cannot even hold the file, and the floor is what the
        # libraries take: memory must run out, and say so
        low = self.limits(LIMITS[0])[0]
        r = self.cogpipe(low, "check", self.big)
        self.assertTrue(self.assert_outcome(r, low, "check", ()),
                        f"a 49 MiB check under {low} KiB must run out of memory")
        for kib in self.limits(*LIMITS[1:], *SWEEP):
            r = self.cogpipe(kib, "check", self.big)
            self.assert_outcome(r, kib, "check", (0, 3))

    def test_check_json_never_says_valid_when_memory_ran_out(self):
        for kib in self.limits(20000, 120000):
            r = self.cogpipe(kib, "check", "--json", self.big)
            if self.assert_outcome(r, kib, "check", (0, 3)) and r.stdout.strip():
                self.assertIsNot(json.loads(r.stdout).get("valid"), True, r.stdout[-500:])

    def test_run_the_intent_pipeline(self):
        with Emulator() as emu:
            env = dict(os.environ, COGPIPE_EMULATOR_URL=emu.base)
            ran_out = False
            # from the floor up, as the sweep went from 8 MB when nothing
            # but libc, libuv and Lua was mapped at start
            for kib in self.limits(*LIMITS, *range(self.floor, self.floor + 32001, 4000)):
                state = tempfile.mkdtemp(dir=self.dir)
                r = self.cogpipe(kib, "run", PIPELINE, "--tenant", "sandbox", "--state-dir", state,
                                 "--json", env=env)
                oom = self.assert_outcome(r, kib, "run", (0,))
                ran_out = ran_out or oom
                if oom and r.stdout.strip():
                    summary = json.loads(r.stdout)
                    self.assertNotEqual(summary.get("status"), "ok", r.stdout[-1000:])
                    for t in summary.get("tenants", []):
                        self.assertNotEqual(t.get("status"), "ok", r.stdout[-1000:])
            self.assertTrue(ran_out, "no limit made the run run out of memory: the test saw nothing")


if __name__ == "__main__":
    unittest.main(verbosity=2)
