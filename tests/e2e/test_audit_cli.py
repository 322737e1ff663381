#!/usr/bin/env python3
"""`cogpipe audit verify` on logs written by cogpipe itself: an intact log
and a rotated series pass (exit 0); an edited, removed, inserted or
reordered line is reported with its line number (exit 3); a line torn by a
crash is a warning, and the next writer recovers from it; usage errors and
unreadable files exit 2."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")

WRITER = r"""
local cp = require "cogpipe"
local path, n, max_bytes = arg[1], tonumber(arg[2]), tonumber(arg[3] or "0")
local log = assert(cp.audit.open(path, {tenant = "acme", pipeline = "intents", max_bytes = max_bytes}))
for i = 1, n do
  assert(log:record("batch", {i = i, uploaded = i * 10, text_hash = cp.audit.sha256("t" .. i)}))
  if i % 5 == 0 then assert(log:sync()) end
end
assert(log:close())
"""


class AuditVerify(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-audit-")
        self.script = os.path.join(self.dir, "writer.lua")
        with open(self.script, "w") as f:
            f.write(WRITER)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write_log(self, name, n, max_bytes=0):
        path = os.path.join(self.dir, name)
        r = subprocess.run([BIN, "run", self.script, "--", path, str(n), str(max_bytes)],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return path

    def verify(self, *paths, json_out=False):
        args = [BIN, "audit", "verify"] + (["--json"] if json_out else []) + list(paths)
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    def lines(self, path):
        with open(path, "rb") as f:
            return f.read().split(b"\n")[:-1]

    def rewrite(self, path, lines):
        with open(path, "wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))

    def assert_broken_at(self, path, line, why):
        r = self.verify(path)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn(f"broken: {path}:{line}: ", r.stdout)
        self.assertIn(why, r.stdout)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertFalse(j["ok"])
        self.assertEqual(j["problem"]["line"], line)

    def test_intact(self):
        path = self.write_log("a.log", 12)
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("intact: 12 records in 1 file", r.stdout)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertTrue(j["ok"])
        self.assertEqual(j["records"], 12)
        self.assertEqual(j["last_seq"], 12)
        self.assertEqual(j["warnings"], [])
        # a second run appends to the same chain
        self.write_log("a.log", 3)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertTrue(j["ok"])
        self.assertEqual(j["last_seq"], 15)

    def test_edited_line(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        lines[4] = lines[4].replace(b'"uploaded":50', b'"uploaded":5')
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "was changed")

    def test_removed_line(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        del lines[4]
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "missing before this line")

    def test_inserted_line(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        forged = json.loads(lines[4])
        forged["uploaded"] = 999
        lines.insert(4, json.dumps(forged, separators=(",", ":")).encode())
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "inserted")

    def test_reordered_lines(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        lines[4], lines[5] = lines[5], lines[4]
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "out of order")

    def test_torn_last_line_is_a_warning_and_recovered(self):
        path = self.write_log("a.log", 6)
        with open(path, "ab") as f:
            f.write(b'{"ts":"2024-01-01T00:00:00.000Z","seq":7,"run_id":"x","ten')
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"warning: {path}:7: incomplete last line", r.stdout)
        self.assertIn("intact: 6 records", r.stdout)
        # the next run closes the torn line and accounts for it
        self.write_log("a.log", 2)
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"warning: {path}:7: a line cut short by a crash", r.stdout)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertEqual(j["records"], 9)  # 6, the recovery record, 2
        events = [json.loads(l)["event"] for l in self.lines(path)[7:]]
        self.assertEqual(events, ["audit.recovered", "batch", "batch"])

    def test_rotation_keeps_the_chain(self):
        path = self.write_log("r.log", 30, max_bytes=1500)
        rotated = sorted(p for p in os.listdir(self.dir) if p.startswith("r.log."))
        self.assertGreaterEqual(len(rotated), 3)
        series = [os.path.join(self.dir, p) for p in rotated] + [path]
        r = self.verify(*series)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("warning", r.stdout)
        j = json.loads(self.verify(*series, json_out=True).stdout)
        self.assertEqual(j["records"], 30 + len(rotated))
        # each new file starts by naming the one before it
        for prev, cur in zip(series, series[1:]):
            first = json.loads(self.lines(cur)[0])
            self.assertEqual(first["event"], "audit.continued")
            self.assertEqual(first["previous_file"], os.path.basename(prev))
        # a file left out, or the order changed: broken
        r = self.verify(series[0], *series[2:])
        self.assertEqual(r.returncode, 3, r.stdout)
        self.assertIn("does not continue", r.stdout)
        r = self.verify(series[1], series[0], *series[2:])
        self.assertEqual(r.returncode, 3, r.stdout)

    def test_usage_and_unreadable(self):
        for args in (["audit"], ["audit", "verify"], ["audit", "frobnicate"], ["audit", "verify", "--bogus", "x"]):
            r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn("usage: cogpipe audit verify", r.stderr)
        r = self.verify(os.path.join(self.dir, "missing.log"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read", r.stderr)
        r = subprocess.run([BIN, "audit", "--help"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0)


if __name__ == "__main__":
    unittest.main()
