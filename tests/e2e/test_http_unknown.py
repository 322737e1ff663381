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


REUSED = r"""
local cp = require "cogpipe"
local auth = require "cogpipe.auth"
local key = auth.api_key{key = "sandbox-api-key"}
local url = arg[1] .. "/new/v2.0/flows/flow-1/intents/intent-1/sentences"
-- the first POST opens a connection; the second reuses it and is reset
local out = {}
for i = 1, 2 do
  local resp, err = cp.http.request{method = "POST", url = url, auth = key,
    json = {text = "sentence " .. i, localeId = "en-US", slots = cp.json.array()}}
  out[i] = resp and {status = resp.status} or {outcome = err.outcome or "", kind = err.kind, message = err.message}
end
print(cp.json.encode({results = out}))
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

    def test_reset_on_a_reused_connection_is_not_resent_by_libcurl(self):
        # libcurl resends on its own when a reused connection dies before any
        # answer; after a whole body that would store the sentence twice
        self.emu.control("POST", "faults", {"faults": [
            {"match": {"method": "POST", "path": "/sentences$"}, "action": "reset_after_body", "every": 2}]})
        r = run_lua(REUSED, self.emu.base)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = last_json_line(r.stdout)["results"]
        self.assertEqual(out[0]["status"], 201)
        self.assertEqual(out[1]["outcome"], "unknown", out[1])
        posts = self.hits("POST")
        self.assertEqual(len(posts), 2, "the reset POST was sent again")
        state = self.emu.control("GET", "state")
        sentences = state["flows"]["flow-1"]["intents"]["intent-1"]["sentences"]
        self.assertEqual(sorted(x["text"] for x in sentences), ["sentence 1", "sentence 2"])

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
