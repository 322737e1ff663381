#!/usr/bin/env python3
"""No secret leaves the process: a full run against the emulator with OAuth2
client credentials, a v2 API key and a webhook secret, all read from the
environment, with an audit log, a metrics file and a journal; then every
output (stdout, stderr, audit log, journal and state files, metrics, webhook
bodies the sink received) is scanned for the secrets, raw and encoded."""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402

CLIENT_SECRET = "cl1ent&sec=ret+100% sure é"
API_KEY = "v2-key-7d1c0a9e55f34b0c"
WEBHOOK_KEY = b"webhook-signing-key-of-32-bytes!"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()

TENANT = """
local base = env("SCAN_BASE_URL")
return {
  name = "scan",
  base_url = base,
  auth = { client_id = "scan-client", client_secret = env("SCAN_CLIENT_SECRET") },
  v2 = { flow_id = "scan-flow", locale_id = "en-US", auth = { api_key = env("SCAN_API_KEY") } },
  embeddings = { url = base },
  webhooks = { { url = base .. "/_sink/webhooks/scan", secret = env("SCAN_WEBHOOK_SECRET") } },
}
"""


def forms(secret):
    out = {secret, urllib.parse.quote(secret), urllib.parse.quote_plus(secret),
           json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {f for f in out if len(f) >= 6}


class SecretsScan(unittest.TestCase):
    def test_no_secret_in_any_output(self):
        emu = Emulator()
        work = tempfile.mkdtemp(prefix="cogpipe-scan-")
        try:
            emu.control("POST", "config", {
                "clients": {"scan-client": CLIENT_SECRET},
                "api_keys": [API_KEY],
                "sinks": {"scan": {"secret": WEBHOOK_SECRET}},
            })
            tenant = os.path.join(work, "scan.lua")
            with open(tenant, "w") as f:
                f.write(TENANT)
            env = dict(os.environ, SCAN_BASE_URL=emu.base, SCAN_CLIENT_SECRET=CLIENT_SECRET,
                       SCAN_API_KEY=API_KEY, SCAN_WEBHOOK_SECRET=WEBHOOK_SECRET)
            state = os.path.join(work, "state")
            outputs = []
            for pipeline in ("intent_examples.lua", "cognigy_v2_sentences.lua", "dataset_upload.lua"):
                audit = os.path.join(work, pipeline + ".audit.jsonl")
                metrics = os.path.join(work, pipeline + ".prom")
                for extra in ([], ["--json"]):
                    r = subprocess.run([BIN, "run", os.path.join(SRC, "pipelines", pipeline), "--tenant", tenant,
                                        "--state-dir", state, "--audit", audit, "--metrics-file", metrics, *extra],
                                       capture_output=True, text=True, env=env, timeout=300)
                    self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
                    outputs += [r.stdout, r.stderr]
                v = subprocess.run([BIN, "audit", "verify", audit], capture_output=True, text=True, timeout=60)
                self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
                outputs += [v.stdout, v.stderr]
            # a failing run too: wrong secret, errors printed
            bad = dict(env, SCAN_CLIENT_SECRET=CLIENT_SECRET + "x")
            r = subprocess.run([BIN, "run", os.path.join(SRC, "pipelines", "intent_examples.lua"), "--tenant", tenant,
                                "--state-dir", state], capture_output=True, text=True, env=bad, timeout=300)
            self.assertEqual(r.returncode, 1)
            outputs += [r.stdout, r.stderr]
            for root, _, files in os.walk(work):
                for name in files:
                    if name == "scan.lua":
                        continue
                    with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                        outputs.append(f.read())
            st = emu.control("GET", "state?lines=0")
            received = st["webhooks"]["scan"]
            valid = [d for d in received["deliveries"] if d["valid"] is True]
            self.assertGreaterEqual(len(valid), 3, received.get("rejected"))
            outputs.append(json.dumps(received, ensure_ascii=False))
            text = "\n".join(outputs)
            for secret in (CLIENT_SECRET, CLIENT_SECRET + "x", API_KEY, WEBHOOK_SECRET,
                           base64.b64encode(WEBHOOK_KEY).decode()):
                for form in forms(secret):
                    self.assertNotIn(form, text, f"a secret ({len(secret)} chars) appears in the output")
            self.assertIn("uploaded", text)  # the scan did read real output
        finally:
            emu.stop()
            shutil.rmtree(work)


if __name__ == "__main__":
    unittest.main(verbosity=2)
