#!/usr/bin/env python3
"""Webhook delivery against the emulator's Standard Webhooks sink: a
receiver down for a whole run leaves the delivery in the outbox; the next
run (or `cogpipe webhook flush`) sends it first, and the sink gets it
exactly once with a valid signature. Also: 410 stops without queueing,
Retry-After is honoured, several secrets sign for key rotation, and no
secret reaches any output."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")
SRC = os.environ.get("COGPIPE_SOURCE_DIR", ".")
EMULATOR = os.path.join(SRC, "tests", "emulator", "cognigy_emulator.py")

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "an-older-raw-secret-for-rotation-0001"

# One "run": flush the outbox first, then send this run's metrics.
RUN = r"""
local cp = require "cogpipe"
local webhook = require "cogpipe.webhook"
local metrics = require "cogpipe.metrics"
local url, state, audit_path, tries = arg[1], arg[2], arg[3], tonumber(arg[4])
local secrets = {}
for var in (os.getenv("WH_SECRET_VARS") or "WH_SECRET"):gmatch("[^,]+") do
  secrets[#secrets + 1] = os.getenv(var)
  cp.secrets.add(os.getenv(var))
end
if os.getenv("WH_URL_IS_SECRET") then cp.secrets.add(url) end
local log = assert(cp.audit.open(audit_path, {pipeline = "intents", tenant = "acme"}))
local targets = {{url = url, secret = #secrets == 1 and secrets[1] or secrets, tries = tries,
                  base = 0.05, cap = 0.2, timeout = 5, max_wait = 10}}
local flushed = webhook.flush_outbox{state_dir = state, targets = targets, audit = log}
-- a run's summary as report.summary makes it, cut to what the body reads
local summary = {pipeline = "intents", run_id = log:info().run_id, workflow = "intent", status = "ok",
  duration_s = 0.2, tenants = {{tenant = "acme", status = "ok", submitted = 3, accepted = 3, rejected = 0,
  rejected_by_reason = {}, present = 0, uploaded = 3, failed = 0, unknown = 0, requests = 1,
  latency_ms = {p50 = 200, p95 = 200, max = 200, count = 1, sum = 200}}}}
local started = cp.now()
local ev, results = webhook.send(targets, metrics.webhook_body(summary, "acme"),
  {state_dir = state, audit = log, tenant = "acme", pipeline = "intents"})
log:close()
print(cp.json.encode({flushed = flushed, id = ev.id, results = results, elapsed = cp.now() - started}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self, workdir, port=0):
        self.port_file = os.path.join(workdir, f"port-{time.monotonic_ns()}")
        self.log = open(os.path.join(workdir, "emulator.log"), "a")
        self.proc = subprocess.Popen([sys.executable, EMULATOR, "--port", str(port), "--port-file",
                                      self.port_file, "--quiet"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self._read_port():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.05)
        self.port = int(self._read_port())
        self.base = f"http://127.0.0.1:{self.port}"

    def _read_port(self):
        try:
            with open(self.port_file) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/_emulator/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def sink(self, name="ci"):
        return self.control("GET", "state?lines=0")["webhooks"].get(name, {})

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class WebhookOutbox(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-webhook-")
        self.state = os.path.join(self.dir, "state")
        self.audit = os.path.join(self.dir, "audit.log")
        self.script = os.path.join(self.dir, "run.lua")
        with open(self.script, "w") as f:
            f.write(RUN)
        self.outputs = []
        self.emulators = []

    def tearDown(self):
        for e in self.emulators:
            e.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def emulator(self, port=0, **sink):
        e = Emulator(self.dir, port)
        self.emulators.append(e)
        e.control("POST", "config", {"sinks": {"ci": dict({"secret": SECRET}, **sink)}})
        return e

    def run_once(self, url, tries=2, secret_vars="WH_SECRET", **extra_env):
        env = dict(os.environ, WH_SECRET=SECRET, WH_OLD=OLD_SECRET, WH_SECRET_VARS=secret_vars, **extra_env)
        r = subprocess.run([BIN, "run", self.script, "--", url, self.state, self.audit, str(tries)],
                           capture_output=True, text=True, env=env, timeout=300)
        self.outputs += [r.stdout, r.stderr]
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def cli(self, *args):
        env = dict(os.environ, WH_SECRET=SECRET)
        r = subprocess.run([BIN, "webhook"] + list(args) + ["--state-dir", self.state],
                           capture_output=True, text=True, env=env, timeout=300)
        self.outputs += [r.stdout, r.stderr]
        return r

    def outbox(self):
        d = os.path.join(self.state, "webhooks", "outbox")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def assert_no_secret_anywhere(self):
        texts = list(self.outputs)
        for root, _, files in os.walk(self.dir):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    texts.append(f.read().decode("utf-8", "replace"))
        for text in texts:
            for secret in (SECRET, SECRET[len("whsec_"):], OLD_SECRET):
                self.assertNotIn(secret, text)

    def assert_audit_intact(self):
        r = subprocess.run([BIN, "audit", "verify", self.audit], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_receiver_down_for_a_whole_run_then_delivered_first_exactly_once(self):
        port = free_port()
        url = f"http://127.0.0.1:{port}/_sink/webhooks/ci"
        # run 1: nothing listens on the port
        first = self.run_once(url)
        self.assertEqual(first["results"][0]["outcome"], "retry", first)
        self.assertTrue(first["results"][0]["queued"])
        queued = self.outbox()
        self.assertEqual(len(queued), 1)
        with open(os.path.join(self.state, "webhooks", "outbox", queued[0])) as f:
            entry = json.load(f)
        self.assertEqual(entry["id"], first["id"])
        self.assertEqual(json.loads(entry["body"])["submitted_count"], 3)

        # the receiver comes up on the same address; run 2 sends the old one first
        emu = self.emulator(port)
        second = self.run_once(url)
        self.assertEqual(second["flushed"]["delivered"], 1, second)
        self.assertEqual(second["results"][0]["outcome"], "delivered")
        self.assertEqual(self.outbox(), [])
        sink = emu.sink()
        ids = [d["id"] for d in sink["deliveries"]]
        self.assertEqual(ids, [first["id"], second["id"]])
        self.assertTrue(all(d["valid"] is True for d in sink["deliveries"]))
        self.assertEqual(sink["duplicates"], 0)
        self.assertEqual(sink["rejected"], [])
        body = sink["deliveries"][0]["body"]
        for legacy in ("intent_id", "submitted_count", "accepted_count", "rejected_count",
                       "upload_latency_ms", "retrain_job_id", "status", "timestamp"):
            self.assertIn(legacy, body)

        # run 3: nothing left to flush; the first delivery arrived once only
        third = self.run_once(url)
        self.assertEqual(third["flushed"]["delivered"], 0)
        sink = emu.sink()
        self.assertEqual([d["id"] for d in sink["deliveries"]].count(first["id"]), 1)
        self.assertEqual(sink["duplicates"], 0)
        self.assert_audit_intact()
        self.assert_no_secret_anywhere()

    def test_sink_answering_503_then_cli_flush(self):
        emu = self.emulator(status=503)
        url = emu.base + "/_sink/webhooks/ci"
        first = self.run_once(url)
        self.assertEqual(first["results"][0]["status"], 503)
        self.assertTrue(first["results"][0]["queued"])
        r = self.cli("list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1 pending", r.stdout)
        self.assertIn(first["id"], r.stdout)
        # still down: flush keeps it (exit 1)
        r = self.cli("flush", "--secret-env", "WH_SECRET")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(len(self.outbox()), 1)
        emu.control("POST", "config", {"sinks": {"ci": {"status": None}}})
        r = self.cli("flush", "--secret-env", "WH_SECRET", "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(json.loads(r.stdout)["delivered"], 1)
        self.assertEqual(self.outbox(), [])
        sink = emu.sink()
        self.assertEqual([d["id"] for d in sink["deliveries"]], [first["id"]])
        self.assertIs(sink["deliveries"][0]["valid"], True)
        r = self.cli("flush", "--secret-env", "WH_SECRET")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(len(emu.sink()["deliveries"]), 1)
        self.assert_no_secret_anywhere()

    def test_secret_url_is_flushed_through_its_tenant(self):
        emu = self.emulator(status=503)
        url = emu.base + "/_sink/webhooks/ci?token=in-the-url-0123456789"
        first = self.run_once(url, WH_URL_IS_SECRET="1")
        self.assertTrue(first["results"][0]["queued"])
        self.assertEqual(first["results"][0]["url"], "[redacted]")
        emu.control("POST", "config", {"sinks": {"ci": {"status": None}}})
        # the entry keeps no URL: --secret-env alone cannot send it
        r = self.cli("flush", "--secret-env", "WH_SECRET")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("its URL is a secret", r.stdout)
        tenant = os.path.join(self.dir, "acme.lua")
        with open(tenant, "w") as f:
            f.write('return { name = "acme", webhooks = { { url = env("WH_URL"), secret = env("WH_SECRET") } } }\n')
        env = dict(os.environ, WH_SECRET=SECRET, WH_URL=url)
        r = subprocess.run([BIN, "webhook", "flush", "--tenant", tenant, "--state-dir", self.state],
                           capture_output=True, text=True, env=env, timeout=120)
        self.outputs += [r.stdout, r.stderr]
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        sink = emu.sink()
        self.assertEqual([d["id"] for d in sink["deliveries"]], [first["id"]])
        self.assertIs(sink["deliveries"][0]["valid"], True)
        self.assertEqual(self.outbox(), [])
        for text in self.outputs:
            self.assertNotIn("in-the-url-0123456789", text)
        with open(self.audit) as f:
            self.assertNotIn("in-the-url-0123456789", f.read())
        self.assert_no_secret_anywhere()

    def test_flush_without_a_secret_keeps_the_entry(self):
        url = f"http://127.0.0.1:{free_port()}/_sink/webhooks/ci"
        self.run_once(url)
        env = {k: v for k, v in os.environ.items() if k != "COGPIPE_WEBHOOK_SECRET"}
        r = subprocess.run([BIN, "webhook", "flush", "--state-dir", self.state], capture_output=True,
                           text=True, env=env, timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("no secret configured", r.stdout)
        self.assertEqual(len(self.outbox()), 1)
        r = subprocess.run([BIN, "webhook", "flush", "--secret-env", "NOT_SET_ANYWHERE", "--state-dir",
                            self.state], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 2)

    def test_gone_is_not_queued(self):
        emu = self.emulator(status=410)
        res = self.run_once(emu.base + "/_sink/webhooks/ci", tries=3)
        self.assertEqual(res["results"][0]["outcome"], "gone")
        self.assertEqual(res["results"][0]["attempts"], 1)
        self.assertFalse(res["results"][0].get("queued", False))
        self.assertEqual(self.outbox(), [])

    def test_retry_after_is_honoured(self):
        emu = self.emulator(status=429, retry_after="1")
        res = self.run_once(emu.base + "/_sink/webhooks/ci", tries=2)
        self.assertEqual(res["results"][0]["outcome"], "retry")
        self.assertEqual(res["results"][0]["attempts"], 2)
        self.assertGreaterEqual(res["elapsed"], 1.0)
        self.assertEqual(emu.sink()["attempts"], 2)
        self.assertEqual(len(self.outbox()), 1)

    def test_key_rotation_signs_with_every_secret(self):
        # the receiver knows only the old key, then only the new one
        for sink_secret in (OLD_SECRET, SECRET):
            emu = self.emulator()
            emu.control("POST", "config", {"sinks": {"ci": {"secret": sink_secret}}})
            res = self.run_once(emu.base + "/_sink/webhooks/ci", secret_vars="WH_OLD,WH_SECRET")
            self.assertEqual(res["results"][0]["outcome"], "delivered", res)
            self.assertIs(emu.sink()["deliveries"][0]["valid"], True)
        # a wrong key is refused by the receiver and is not queued
        emu = self.emulator()
        emu.control("POST", "config", {"sinks": {"ci": {"secret": "whsec_" + "QUJD" * 8}}})
        res = self.run_once(emu.base + "/_sink/webhooks/ci")
        self.assertEqual(res["results"][0]["status"], 401)
        self.assertEqual(res["results"][0]["outcome"], "failed")
        self.assertEqual(self.outbox(), [])
        self.assert_no_secret_anywhere()


if __name__ == "__main__":
    unittest.main()
