#!/usr/bin/env python3
"""What a run must write and cannot: the audit log, the journal, the
webhook outbox and the metrics file on a full (or missing) file system. Each
such run stops sending, exits 1 naming the file and the error, and never
says ok; the next run on a healthy disk leaves the platform holding exactly
what it should (checked on the emulator's state). Small tmpfs mounts play
the full disks (as root, or in a private mount namespace)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402
from test_pipelines import casefold_key, expected_intent_examples  # noqa: E402

PIPELINES = os.path.join(SRC, "pipelines")
SAMPLE_PIPELINE = os.path.join(PIPELINES, "intent_examples.lua")


def can_mount():
    d = tempfile.mkdtemp(prefix="cogpipe-mnt-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True)
        if r.returncode == 0:
            subprocess.run(["umount", d], check=True)
            return True
        return False
    except OSError:
        return False
    finally:
        os.rmdir(d)


MOUNT = can_mount()


def reference():
    """What a clean run stores: {(intent, key)}, from its own emulator."""
    if REFERENCE:
        return REFERENCE[0]
    emu = Emulator()
    d = tempfile.mkdtemp(prefix="cogpipe-ref-")
    try:
        r = subprocess.run([BIN, "run", SAMPLE_PIPELINE, "--tenant", "sandbox", "--no-progress", "--state-dir", d],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, COGPIPE_EMULATOR_URL=emu.base))
        assert r.returncode == 0, r.stderr
        st = emu.control("GET", "state")
        REFERENCE.append({(iid, casefold_key(e["text"])) for iid, v in st["intents"].items()
                          for e in v["examples"]})
    finally:
        emu.stop()
        shutil.rmtree(d, ignore_errors=True)
    return REFERENCE[0]


REFERENCE = []


@unittest.skipUnless(MOUNT, "needs to mount a tmpfs (run as root)")
class DiskFaults(unittest.TestCase):
    def setUp(self):
        self.emu = Emulator()
        self.dir = tempfile.mkdtemp(prefix="cogpipe-disk-")
        self.mounts = []

    def tearDown(self):
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m])
        self.emu.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tmpfs(self, name, size):
        d = os.path.join(self.dir, name)
        os.makedirs(d)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d], check=True)
        self.mounts.append(d)
        return d

    def fill(self, d):
        """Leaves no free block on the file system holding d."""
        fd = os.open(os.path.join(d, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)

    def run_pipeline(self, *args, state=None):
        cmd = [BIN, "run", SAMPLE_PIPELINE, "--tenant", "sandbox", "--json", "--no-progress",
               "--state-dir", state or os.path.join(self.dir, "state"), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, COGPIPE_EMULATOR_URL=self.emu.base))
        summary = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
        return r, summary

    def stored(self):
        st = self.emu.control("GET", "state")
        return [(iid, e["text"]) for iid, v in st["intents"].items() for e in v["examples"]]

    def batch_posts(self):
        return [q for q in self.emu.requests() if q["method"] == "POST" and q["path"].endswith("/batch")]

    def assert_exact(self, complete=True):
        """The platform holds each expected example once, nothing else; and
        when complete, all that a clean run stores."""
        expected = {casefold_key(t): i for t, i in expected_intent_examples()}
        held = self.stored()
        keys = [casefold_key(t) for _, t in held]
        self.assertEqual(len(keys), len(set(keys)), "an example is stored twice")
        for iid, t in held:
            self.assertEqual(expected.get(casefold_key(t)), iid, t)
        if complete:
            self.assertEqual({(iid, casefold_key(t)) for iid, t in held}, reference())
        return len(held)

    def test_audit_log_on_a_full_disk(self):
        d = self.tmpfs("audit", "64k")
        log = os.path.join(d, "audit.jsonl")
        r, summary = self.run_pipeline("--audit", log)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(summary["status"], "failed")
        message = " ".join(summary["errors"])
        self.assertIn(log, message)
        self.assertIn("No space left on device", message)
        for t in summary["tenants"]:
            self.assertEqual(t["status"], "failed")
        # the log ends with whole records only
        with open(log, "rb") as f:
            data = f.read()
        self.assertTrue(data.endswith(b"\n") or data == b"")
        # a second run on the same full disk sends nothing at all
        before = len(self.batch_posts())
        r, _ = self.run_pipeline("--audit", log)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(log, r.stderr)
        self.assertEqual(len(self.batch_posts()), before)
        # on a healthy disk the next run completes what was left, exactly
        r, summary = self.run_pipeline("--audit", os.path.join(self.dir, "audit.jsonl"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_exact()

    def test_journal_on_a_full_disk(self):
        state = self.tmpfs("state", "256k")
        os.makedirs(os.path.join(state, "journal", "sandbox"))
        with open(os.path.join(state, "journal", "sandbox", "intent_examples.jsonl"), "w"):
            pass
        self.fill(state)
        r, summary = self.run_pipeline(state=state)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(summary["status"], "failed")
        t = summary["tenants"][0]
        self.assertNotEqual(t["status"], "ok")
        self.assertEqual(t["uploaded"], 0)
        self.assertTrue(any("journal" in e and "No space left on device" in e for e in t["errors"]), t["errors"])
        self.assertEqual(self.batch_posts(), [], "sent without its journal entry on disk")
        self.assertEqual(self.stored(), [])
        # once there is room, the run goes through
        os.remove(os.path.join(state, "filler"))
        r, summary = self.run_pipeline(state=state)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_exact()

    def test_metrics_file_that_cannot_be_written(self):
        d = self.tmpfs("metrics", "64k")
        self.fill(d)
        path = os.path.join(d, "cogpipe.prom")
        r, summary = self.run_pipeline("--metrics-file", path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(summary["status"], "failed")
        self.assertIn(path, " ".join(summary["errors"]))
        # the upload itself went through; only the record of it is missing
        self.assert_exact()

    def test_webhook_outbox_that_cannot_be_written(self):
        self.emu.control("POST", "config", {"sinks": {"sandbox": {"status": 503}}})
        state = self.tmpfs("state", "1m")
        r, summary = self.run_pipeline(state=state)
        self.assertEqual(r.returncode, 0, r.stderr)  # a delivery kept for later is fine
        self.fill(state)
        r, summary = self.run_pipeline(state=state)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(summary["status"], "failed")
        self.assertIn("outbox", " ".join(summary["errors"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
