#!/usr/bin/env python3
"""`cogpipe audit verify` on logs written by cogpipe itself: an intact log
and a rotated series pass (exit 0); an edited, removed, inserted or
reordered line anywhere -- the last one included, which the head file
beside the log anchors -- is reported with its line number (exit 3), as
are a file cut at a line boundary and an emptied file; a line torn by a
crash is a warning, and the next writer recovers from it; a run without
its run_end is listed as interrupted; `--head SEQ:HASH` from a run's
summary checks a log whose head file is gone; usage errors and
unreadable files exit 2."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")

# Writes n "batch" records (syncing every 5) and prints log:head() after
# closing: the anchor a run's summary carries.
WRITER = r"""
local cp = require "cogpipe"
local path, n, max_bytes = arg[1], tonumber(arg[2]), tonumber(arg[3] or "0")
local log = assert(cp.audit.open(path, {tenant = "acme", pipeline = "intents", max_bytes = max_bytes}))
for i = 1, n do
  assert(log:record("batch", {i = i, uploaded = i * 10 + 120, text_hash = cp.audit.sha256("t" .. i)}))
  if i % 5 == 0 then assert(log:sync()) end
end
assert(log:close())
print(cp.json.encode(log:head()))
"""

# Two runs as the runner writes them: the first one stops after its batch
# (killed, or its disk filled up), the second one ends.
RUNS = r"""
local cp = require "cogpipe"
local path = arg[1]
local a = assert(cp.audit.open(path, {run_id = "run-killed", pipeline = "intents"}))
assert(a:record("run_start", {script = "intents.lua"}))
assert(a:record("batch", {uploaded = 10}))
assert(a:close())
local b = assert(cp.audit.open(path, {run_id = "run-whole", pipeline = "intents"}))
assert(b:record("run_start", {script = "intents.lua"}))
assert(b:record("batch", {uploaded = 20}))
assert(b:record("run_end", {status = "ok"}))
assert(b:close())
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
        self.head = json.loads(r.stdout)
        return path

    def verify(self, *paths, json_out=False, head=None):
        args = [BIN, "audit", "verify"] + (["--json"] if json_out else [])
        args += ["--head", head] if head else []
        return subprocess.run(args + list(paths), capture_output=True, text=True, timeout=120)

    def lines(self, path):
        with open(path, "rb") as f:
            return f.read().split(b"\n")[:-1]

    def rewrite(self, path, lines):
        with open(path, "wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))

    def assert_intact(self, path, records):
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"intact: {records} record", r.stdout)
        self.assertNotIn("warning", r.stdout)
        return r

    def assert_broken_at(self, path, line, why, head=None):
        r = self.verify(path, head=head)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn(f"broken: {path}:{line}: ", r.stdout)
        self.assertIn(why, r.stdout)
        self.assertNotIn("intact", r.stdout)
        j = json.loads(self.verify(path, json_out=True, head=head).stdout)
        self.assertFalse(j["ok"])
        self.assertEqual(j["problem"]["line"], line)
        self.assertEqual(j["problem"]["file"], path)
        return r

    def test_intact(self):
        path = self.write_log("a.log", 12)
        r = self.assert_intact(path, 12)
        self.assertIn("intact: 12 records in 1 file", r.stdout)
        self.assertIn(f"the chain ends at record 12, as its head file {path}.head says", r.stdout)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertTrue(j["ok"])
        self.assertTrue(j["end_checked"])
        self.assertEqual(j["records"], 12)
        self.assertEqual(j["last_seq"], 12)
        self.assertEqual(j["warnings"], [])
        self.assertEqual(j["interrupted"], [])
        self.assertEqual(j["head"]["seq"], 12)
        self.assertEqual(j["head"]["hash"], j["last_hash"])
        # the anchor the writer reported is the one in the head file
        self.assertEqual(self.head["seq"], 12)
        self.assertEqual(self.head["hash"], j["last_hash"])
        self.assertEqual(self.head["records"], 12)
        self.assertEqual(self.head["head_path"], path + ".head")
        with open(path + ".head") as f:
            on_disk = json.load(f)
        self.assertEqual((on_disk["seq"], on_disk["hash"], on_disk["records"], on_disk["path"]),
                         (12, j["last_hash"], 12, path))
        # a second run appends to the same chain
        self.write_log("a.log", 3)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertTrue(j["ok"])
        self.assertEqual(j["last_seq"], 15)

    # ---- the end of the chain, which only the head file knows -------------

    def test_tail_last_record_edited(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        self.assertIn(b'"uploaded":220', lines[9])
        lines[9] = lines[9].replace(b'"uploaded":220', b'"uploaded":221')
        self.rewrite(path, lines)
        self.assert_broken_at(path, 10, "this record was changed")

    def test_tail_last_record_removed(self):
        path = self.write_log("a.log", 10)
        self.rewrite(path, self.lines(path)[:9])
        r = self.assert_broken_at(path, 10, "the log ends at record 9, but its head file")
        self.assertIn(f"{path}.head says 10 (hash {self.head['hash']})", r.stdout)
        self.assertIn("records were removed or the file was cut", r.stdout)

    def test_tail_cut_at_a_line_boundary(self):
        path = self.write_log("a.log", 10)
        with open(path, "rb") as f:
            data = f.read()
        cut = data.index(b"\n", len(data) // 2) + 1  # a whole number of lines
        with open(path, "r+b") as f:
            f.truncate(cut)
        kept = data[:cut].count(b"\n")
        self.assertLess(kept, 10)
        self.assert_broken_at(path, kept + 1, f"the log ends at record {kept}, but its head file")

    def test_tail_emptied(self):
        path = self.write_log("a.log", 10)
        with open(path, "r+b") as f:
            f.truncate(0)
        self.assert_broken_at(path, 1, "the log has no records, but its head file")

    # ---- the middle of the chain, which the hashes link --------------------

    def test_middle_record_edited(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        lines[4] = lines[4].replace(b'"uploaded":170', b'"uploaded":17')
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "was changed")

    def test_middle_record_removed(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        del lines[4]
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "missing before this line")

    def test_middle_record_inserted(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        forged = json.loads(lines[4])
        forged["uploaded"] = 999
        lines.insert(4, json.dumps(forged, separators=(",", ":")).encode())
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "inserted")

    def test_middle_records_swapped(self):
        path = self.write_log("a.log", 10)
        lines = self.lines(path)
        lines[4], lines[5] = lines[5], lines[4]
        self.rewrite(path, lines)
        self.assert_broken_at(path, 5, "out of order")

    # ---- crashes, interrupted runs, anchors ---------------------------------

    def test_torn_last_line_is_a_warning_and_recovered(self):
        path = self.write_log("a.log", 6)
        with open(path, "ab") as f:
            f.write(b'{"ts":"2024-01-01T00:00:00.000Z","seq":7,"run_id":"x","ten')
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"warning: {path}:7: incomplete last line", r.stdout)
        self.assertIn("intact: 6 records", r.stdout)
        self.assertIn("the chain ends at record 6", r.stdout)
        # the next run closes the torn line and accounts for it
        self.write_log("a.log", 2)
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"warning: {path}:7: a line cut short by a crash", r.stdout)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertEqual(j["records"], 9)  # 6, the recovery record, 2
        events = [json.loads(l)["event"] for l in self.lines(path)[7:]]
        self.assertEqual(events, ["audit.recovered", "batch", "batch"])

    def test_torn_record_the_head_names_is_broken(self):
        # the head says record 10 was written whole: a cut inside it is
        # damage, not a crash before the record was done
        path = self.write_log("a.log", 10)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "r+b") as f:
            f.truncate(len(data) - 30)
        self.assert_broken_at(path, 10, "the log ends at record 9, but its head file")

    def test_interrupted_run(self):
        script = os.path.join(self.dir, "runs.lua")
        with open(script, "w") as f:
            f.write(RUNS)
        path = os.path.join(self.dir, "runs.log")
        r = subprocess.run([BIN, "run", script, "--", path], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"interrupted: run run-killed started at {path}:1 and has no run_end record", r.stdout)
        self.assertNotIn("run-whole", r.stdout)
        self.assertIn("intact: 5 records", r.stdout)
        j = json.loads(self.verify(path, json_out=True).stdout)
        self.assertTrue(j["ok"])
        self.assertEqual(j["interrupted"], [{"run_id": "run-killed", "file": path, "line": 1}])

    def test_head_from_a_run_summary(self):
        path = self.write_log("a.log", 10)
        anchor = f"{self.head['seq']}:{self.head['hash']}"
        os.remove(path + ".head")
        # without the head file or an anchor the end cannot be checked
        r = self.verify(path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"warning: {path}: the end of the chain was not checked", r.stdout)
        self.assertIn("--head SEQ:HASH", r.stdout)
        self.assertFalse(json.loads(self.verify(path, json_out=True).stdout)["end_checked"])
        # with the anchor it is
        r = self.verify(path, head=anchor)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("warning", r.stdout)
        self.assertIn(f"anchor: record 10 is at {path}:10; 0 records after it", r.stdout)
        j = json.loads(self.verify(path, json_out=True, head=anchor).stdout)
        self.assertEqual(j["anchor"]["line"], 10)
        self.assertTrue(j["end_checked"])
        # later runs append: the anchor is passed, not the end
        self.write_log("a.log", 3)
        r = self.verify(path, head=anchor)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"anchor: record 10 is at {path}:10; 3 records after it", r.stdout)
        # and a cut before it is found
        os.remove(path + ".head")
        self.rewrite(path, self.lines(path)[:8])
        self.assert_broken_at(path, 9, "the log ends at record 8, but the anchor given says 10", head=anchor)
        for bad in ("10", "x:" + self.head["hash"], "0:" + self.head["hash"], "10:abc",
                    "10:" + self.head["hash"].upper()):
            r = self.verify(path, head=bad)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("--head wants SEQ:HASH", r.stderr)

    def test_damaged_head_file(self):
        path = self.write_log("a.log", 4)
        with open(path + ".head", "w") as f:
            f.write('{"seq": 4}\n')
        r = self.verify(path)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn(f"broken: {path}: its head file {path}.head is not valid", r.stdout)

    def test_rotation_keeps_the_chain(self):
        path = self.write_log("r.log", 30, max_bytes=1500)
        rotated = sorted(p for p in os.listdir(self.dir) if p.startswith("r.log.") and p[6:].isdigit())
        self.assertGreaterEqual(len(rotated), 3)
        self.assertTrue(os.path.exists(path + ".head"))
        series = [os.path.join(self.dir, p) for p in rotated] + [path]
        r = self.verify(*series)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("warning", r.stdout)
        j = json.loads(self.verify(*series, json_out=True).stdout)
        self.assertEqual(j["records"], 30 + len(rotated))
        self.assertTrue(j["end_checked"])
        self.assertEqual(self.head["records"], j["files"][-1]["records"])
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
        for args in (["audit"], ["audit", "verify"], ["audit", "frobnicate"], ["audit", "verify", "--bogus", "x"],
                     ["audit", "verify", "x", "--head"]):
            r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn("usage: cogpipe audit verify", r.stderr)
        r = self.verify(os.path.join(self.dir, "missing.log"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read", r.stderr)
        r = subprocess.run([BIN, "audit", "--help"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--head SEQ:HASH", r.stdout)
        # a head file that cannot be read is not a verdict either
        path = self.write_log("a.log", 2)
        os.remove(path + ".head")
        os.mkdir(path + ".head")
        r = self.verify(path)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn(f"cannot read {path}.head", r.stderr)


if __name__ == "__main__":
    unittest.main()
