#!/usr/bin/env python3
"""The unknown-outcome rule: a POST whose connection is reset after its body
was sent, or that is answered 5xx, is reported with outcome "unknown" and is
not resent; a GET in the same situation is retried and succeeds."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import Emulator, last_json_line, run_lua  # noqa: E402

SCRIPT = r"""
local cp = require "cogpipe"
local auth = require "cogpipe.auth"
local key = auth.api_key{key = "sandbox-api-key"}
local url = arg[1] .. "/new/v2.0/flows/flow-1/intents/intent-1/sentences"
local method = arg[2]
local req = {method = method, url = url, auth = key, retry = {tries = 4, base = 0.05}}
if method == "POST" then
  req.json = {text = "transfer money", localeId = "en-US", slots = cp.json.array()}
end
local resp, err = cp.http.request(req)
if resp then
  print(cp.json.encode({status = resp.status, attempts = resp.attempts}))
else
  print(cp.json.encode({kind = err.kind, outcome = err.outcome or "", retryable = err.retryable,
    attempts = err.attempts, status = err.status or 0, message = err.message}))
end
"""


class Unknown(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        self.emu.control("POST", "reset")

    def fault(self, method, action, **kw):
        spec = {"match": {"method": method, "path": "/sentences$"}, "action": action, "first": 1}
        spec.update(kw)
        self.emu.control("POST", "faults", {"faults": [spec]})

    def hits(self, method):
        return [e for e in self.emu.requests() if e["method"] == method and e["path"].endswith("/sentences")]

    def test_post_reset_after_body_is_unknown_and_not_resent(self):
        self.fault("POST", "reset_after_body")
        r = run_lua(SCRIPT, self.emu.base, "POST")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = last_json_line(r.stdout)
        self.assertNotEqual(out["status"], 201)
        self.assertEqual(out["outcome"], "unknown")
        self.assertEqual(out["kind"], "network")
        self.assertEqual(out["attempts"], 1)
        self.assertFalse(out["retryable"])
        self.assertIn("may have been applied", out["message"])
        hits = self.hits("POST")
        self.assertEqual(len(hits), 1, "the POST was resent")
        self.assertEqual(hits[0]["body_bytes"], len(
            '{"localeId":"en-US","slots":[],"text":"transfer money"}'))

    def test_post_5xx_is_unknown_and_not_resent(self):
        self.fault("POST", "status", status=503)
        r = run_lua(SCRIPT, self.emu.base, "POST")
        out = last_json_line(r.stdout)
        self.assertEqual(out["outcome"], "unknown")
        self.assertEqual(out["status"], 503)
        self.assertEqual(len(self.hits("POST")), 1)

    def test_get_reset_after_body_is_retried(self):
        self.fault("GET", "reset_after_body")
        r = run_lua(SCRIPT, self.emu.base, "GET")
        out = last_json_line(r.stdout)
        self.assertEqual(out.get("status"), 200, out)
        self.assertEqual(out["attempts"], 2)
        self.assertEqual(len(self.hits("GET")), 2)


if __name__ == "__main__":
    unittest.main()
