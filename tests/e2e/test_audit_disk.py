#!/usr/bin/env python3
"""The audit log on a disk that fills up or is read-only: the record that
does not fit fails (nil, err of kind "io" naming the file and "No space
left on device"), and so does everything after it -- records, sync,
close -- instead of a log that stops with a torn line while the run goes
on; what is on disk is whole records, and `audit verify` calls it intact
only when its head file agrees. A read-only file system fails the open.

Needs a small tmpfs: mounted directly when running as root, else inside a
private mount namespace (unshare -rm); skipped when neither is allowed."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")

# Writes records of a given size until one fails, then tries once more,
# syncs and closes, and prints what each step answered.
FILL = r"""
local cp = require "cogpipe"
local json = cp.json
local path, fsync, text_bytes = arg[1], arg[2], tonumber(arg[3])
local log = assert(cp.audit.open(path, {run_id = "run-full", pipeline = "intents", fsync = fsync}))
assert(log:record("run_start", {script = "intents.lua"}))
local written, failure = 1, nil
for i = 1, 100000 do
  local ok, err = log:record("batch", {i = i, text = string.rep("x", text_bytes)})
  if not ok then
    failure = err
    break
  end
  written = written + 1
  if i % 5 == 0 then
    local sok, serr = log:sync()
    if not sok then
      failure = serr
      break
    end
  end
end
local function answer(ok, err)
  return {ok = ok or json.null, err = err or json.null}
end
local out = {written = written, failure = failure or json.null}
out.after = answer(log:record("batch", {i = -1}))
out.sync = answer(log:sync())
out.close = answer(log:close())
out.head = log:head()
print(json.encode(out))
"""

SMALL = r"""
local cp = require "cogpipe"
local log, err = cp.audit.open(arg[1], {run_id = arg[2]})
if not log then
  print(cp.json.encode({open = err}))
  return
end
assert(log:record("run_start"))
assert(log:record("batch", {uploaded = 3}))
assert(log:record("run_end", {status = "ok"}))
assert(log:close())
print(cp.json.encode({head = log:head()}))
"""


def try_mount(prefix, where):
    cmd = prefix + ["sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1" && umount "$1"', "sh", where]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class AuditDisk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        probe = tempfile.mkdtemp(prefix="cogpipe-mnt-")
        try:
            if os.geteuid() == 0 and try_mount([], probe):
                cls.prefix = []
            elif shutil.which("unshare") and try_mount(["unshare", "-rm"], probe):
                cls.prefix = ["unshare", "-rm"]
            else:
                raise unittest.SkipTest("cannot mount a small tmpfs: not root, and unshare -rm (a private mount "
                                        "namespace) is not allowed here")
        finally:
            os.rmdir(probe)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-disk-")
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt)
        self.out = os.path.join(self.dir, "out")
        os.mkdir(self.out)
        for name, text in (("fill.lua", FILL), ("small.lua", SMALL)):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)

    def tearDown(self):
        if not self.prefix:
            subprocess.run(["umount", self.mnt], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def on_tmpfs(self, steps):
        """Runs the shell steps with a 64 KiB tmpfs at $M (cogpipe is $B,
        the scripts are in $S, outputs go to $O); copies what is on the
        tmpfs to $O/disk afterwards."""
        script = ('set -e; mount -t tmpfs -o size=64k tmpfs "$M"; ' + steps +
                  '; mkdir "$O/disk"; cp -p "$M"/* "$O/disk/" 2>/dev/null || true')
        if not self.prefix:
            script += '; umount "$M"'
        env = dict(os.environ, M=self.mnt, B=BIN, S=self.dir, O=self.out)
        r = subprocess.run(self.prefix + ["sh", "-c", script], capture_output=True, text=True, env=env, timeout=600)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def output(self, name):
        with open(os.path.join(self.out, name)) as f:
            return f.read()

    def check_full_disk(self, fsync, text_bytes):
        self.on_tmpfs(f'"$B" run "$S/fill.lua" -- "$M/audit.log" {fsync} {text_bytes} > "$O/fill.json" 2> "$O/fill.err"; '
                      '"$B" audit verify --json "$M/audit.log" > "$O/verify.json" 2> "$O/verify.err" '
                      '|| echo $? > "$O/verify.rc"')
        res = json.loads(self.output("fill.json"))
        log = os.path.join(self.mnt, "audit.log")
        # the record that did not fit failed, naming the file and the reason
        failure = res["failure"]
        self.assertIsInstance(failure, dict, res)
        self.assertEqual(failure["kind"], "io")
        self.assertIn(log, failure["message"])  # the log, or its head file beside it
        self.assertIn("No space left on device", failure["message"])
        self.assertGreater(res["written"], 5)
        # nothing after it claims success
        for step in ("after", "sync", "close"):
            self.assertIsNone(res[step]["ok"], step)
            self.assertEqual(res[step]["err"]["kind"], "io", step)
            self.assertIn("No space left on device", res[step]["err"]["message"], step)
            self.assertIn(log, res[step]["err"]["message"], step)
        self.assertEqual(res["head"]["seq"], res["written"])
        # on disk: whole records only, every one that was reported written,
        # and a head file that names the last of them
        with open(os.path.join(self.out, "disk", "audit.log"), "rb") as f:
            data = f.read()
        self.assertTrue(data.endswith(b"\n"), "a torn last line was left")
        self.assertEqual(data.count(b"\n"), res["written"])
        with open(os.path.join(self.out, "disk", "audit.log.head")) as f:
            head = json.load(f)
        verify = json.loads(self.output("verify.json"))
        if verify["ok"]:
            self.assertEqual((head["seq"], head["hash"]), (verify["last_seq"], verify["last_hash"]),
                             "intact although the head file does not agree")
        self.assertTrue(verify["ok"], verify)
        self.assertEqual(verify["last_seq"], res["written"])
        self.assertEqual(verify["warnings"], [])
        # the run that filled the disk never wrote its run_end
        self.assertEqual([r["run_id"] for r in verify["interrupted"]], ["run-full"])
        return failure["message"]

    def test_full_disk_fsync_batch(self):
        # small records: the page a record needs is there, and the head
        # file's replacement is what finds the disk full
        self.check_full_disk("batch", 200)

    def test_full_disk_fsync_always(self):
        self.check_full_disk("always", 200)

    def test_full_disk_torn_write(self):
        # records of two pages and more: the disk fills in the middle of
        # one, whose first part reached the file before the write failed
        msg = self.check_full_disk("batch", 9000)
        log = os.path.join(self.mnt, "audit.log")
        self.assertRegex(msg, rf"^cannot write audit log {log}: No space left on device "
                              rf"\(after \d+ of the record's \d+ bytes\)")

    def test_read_only_file_system(self):
        self.on_tmpfs('"$B" run "$S/small.lua" -- "$M/audit.log" first > "$O/first.json"; '
                      'mount -t tmpfs -o remount,ro tmpfs "$M"; '
                      '"$B" run "$S/small.lua" -- "$M/audit.log" second > "$O/second.json"; '
                      '"$B" run "$S/small.lua" -- "$M/other.log" third > "$O/third.json"; '
                      '"$B" audit verify "$M/audit.log" > "$O/verify.txt" || echo $? > "$O/verify.rc"')
        first = json.loads(self.output("first.json"))
        self.assertEqual(first["head"]["seq"], 3)
        log = os.path.join(self.mnt, "audit.log")
        for name, path in (("second.json", log), ("third.json", os.path.join(self.mnt, "other.log"))):
            err = json.loads(self.output(name))["open"]
            self.assertEqual(err["kind"], "io")
            self.assertIn(f"cannot open audit log {path}: Read-only file system", err["message"])
        self.assertFalse(os.path.exists(os.path.join(self.out, "verify.rc")))
        verify = self.output("verify.txt")
        self.assertIn("intact: 3 records", verify)
        self.assertIn("the chain ends at record 3", verify)


if __name__ == "__main__":
    unittest.main()
