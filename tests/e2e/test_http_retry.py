#!/usr/bin/env python3
"""Retries against the emulator: with 30% of POSTs answered 429 and
Retry-After: 1, 200 sentence creates all succeed, none is stored twice, and
no retry reaches the server sooner than its Retry-After."""
import collections
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import Emulator, last_json_line, run_lua  # noqa: E402

SCRIPT = r"""
local cp = require "cogpipe"
local auth = require "cogpipe.auth"
local base, n, width = arg[1], tonumber(arg[2]), tonumber(arg[3])
local key = auth.api_key{key = "sandbox-api-key"}
local url = base .. "/new/v2.0/flows/flow-1/intents/intent-1/sentences"
local ok, failed, attempts, next_i = 0, {}, 0, 1
local workers = {}
for w = 1, width do
  workers[w] = cp.spawn(function()
    while next_i <= n do
      local i = next_i
      next_i = next_i + 1
      local resp, err = cp.http.request{
        method = "POST", url = url, query = {n = i}, auth = key,
        json = {text = "example sentence " .. i, localeId = "en-US", slots = cp.json.array()},
        retry = {tries = 12},
      }
      if resp and resp.status == 201 then
        ok = ok + 1
        attempts = attempts + resp.attempts
      else
        failed[#failed + 1] = tostring(err)
      end
    end
  end)
end
for w = 1, width do cp.wait(workers[w]) end
print(cp.json.encode({ok = ok, failed = #failed, first_error = failed[1], attempts = attempts}))
"""


class Retry(unittest.TestCase):
    def test_429_share_all_succeed_and_retry_after_is_honoured(self):
        with Emulator("--seed", "7") as emu:
            emu.control("POST", "faults", {"faults": [{
                "match": {"method": "POST", "path": "/sentences$"},
                "action": "status", "status": 429, "retry_after": 1, "share": 0.3}]})
            r = run_lua(SCRIPT, emu.base, "200", "32")
            self.assertEqual(r.returncode, 0, r.stderr)
            out = last_json_line(r.stdout)
            self.assertEqual(out["ok"], 200, out.get("first_error"))
            self.assertEqual(out["failed"], 0)

            log = [e for e in emu.requests() if e["path"].endswith("/sentences")]
            by_n = collections.defaultdict(list)
            for e in log:
                by_n[e["query"]["n"][0]].append(e)
            self.assertEqual(len(by_n), 200)
            limited = sum(1 for e in log if e["status"] == 429)
            self.assertGreater(limited, 20, "the fault should have fired about 30% of the time")
            self.assertEqual(out["attempts"], len(log))
            retries = 0
            for n, entries in by_n.items():
                entries.sort(key=lambda e: e["t"])
                # exactly one success per request, and it is the last attempt
                self.assertEqual([e["status"] for e in entries][-1], 201, n)
                self.assertTrue(all(e["status"] == 429 for e in entries[:-1]), n)
                for prev, nxt in zip(entries, entries[1:]):
                    retries += 1
                    gap = nxt["t"] - prev["t"]
                    self.assertGreaterEqual(gap, 1.0, f"request {n} retried after {gap:.3f} s")
            self.assertEqual(retries, limited)
            state = emu.control("GET", "state")
            sents = state["flows"]["flow-1"]["intents"]["intent-1"]["sentences"]
            texts = collections.Counter(s["text"] for s in sents)
            self.assertEqual(len(texts), 200)
            self.assertTrue(all(c == 1 for c in texts.values()), "a sentence was stored twice")


if __name__ == "__main__":
    unittest.main()
