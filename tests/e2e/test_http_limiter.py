#!/usr/bin/env python3
"""The per-tenant limiter against the emulator: 5 requests/s with a burst of
5 spreads 30 requests over about 5 s, never more than the bucket allows in
any window; answers 429 slow it down and successes bring it back."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import Emulator, last_json_line, run_lua  # noqa: E402

RATE_SCRIPT = r"""
local cp = require "cogpipe"
local url = arg[1] .. "/new/v2.0/flows/f/intents/i/sentences"
local lim = cp.http.limiter{rate = 5, burst = 5}
local key = require("cogpipe.auth").api_key{key = "sandbox-api-key"}
local start = cp.now()
local tasks = {}
for i = 1, 30 do
  tasks[i] = cp.spawn(function()
    return cp.http.request{url = url, query = {i = i}, limiter = lim, auth = key}
  end)
end
local ok = 0
for i = 1, 30 do
  local resp = cp.wait(tasks[i])
  if resp and resp.status == 200 then ok = ok + 1 end
end
print(cp.json.encode({ok = ok, took = cp.now() - start, stats = lim:stats(), shown = tostring(lim)}))
"""

ADAPT_SCRIPT = r"""
local cp = require "cogpipe"
local url = arg[1] .. "/new/v2.0/flows/f/intents/i/sentences"
local key = require("cogpipe.auth").api_key{key = "sandbox-api-key"}
local lim = cp.http.limiter{rate = 40, burst = 4}
local function go(n)
  local tasks = {}
  for i = 1, n do
    tasks[i] = cp.spawn(function()
      return cp.http.request{url = url, limiter = lim, auth = key, retry = {tries = 5}}
    end)
  end
  for i = 1, n do assert(cp.wait(tasks[i])) end
end
go(4)
local slowed = lim:stats().rate
go(60)
print(cp.json.encode({slowed = slowed, recovered = lim:stats().rate}))
"""


class Limiter(unittest.TestCase):
    def test_5_per_second_burst_5_takes_about_5_s(self):
        with Emulator() as emu:
            r = run_lua(RATE_SCRIPT, emu.base)
            self.assertEqual(r.returncode, 0, r.stderr)
            out = last_json_line(r.stdout)
            self.assertEqual(out["ok"], 30)
            # 5 at once, then 25 at 5/s
            self.assertGreater(out["took"], 4.7)
            self.assertLess(out["took"], 7.0)
            self.assertEqual(out["stats"]["in_flight"], 0)
            self.assertEqual(out["stats"]["waiting"], 0)
            self.assertIn("cogpipe.http.limiter(rate=5", out["shown"])
            times = sorted(e["t"] for e in emu.requests() if e["path"].endswith("/sentences"))
            self.assertEqual(len(times), 30)
            # a token bucket lets at most burst + rate * w requests through
            # in any window of w seconds (one extra for clock granularity)
            for i in range(len(times)):
                for j in range(i + 1, len(times)):
                    self.assertLessEqual(j - i + 1, 5 + 5 * (times[j] - times[i]) + 1)

    def test_429_slows_down_and_successes_recover(self):
        with Emulator() as emu:
            emu.control("POST", "faults", {"faults": [{
                "match": {"path": "/sentences$"}, "action": "status", "status": 429,
                "retry_after": 0, "first": 4}]})
            r = run_lua(ADAPT_SCRIPT, emu.base)
            self.assertEqual(r.returncode, 0, r.stderr)
            out = last_json_line(r.stdout)
            # halved once for the burst of 429s (one episode), then partly
            # recovered by the retries that succeeded
            self.assertLess(out["slowed"], 30)
            self.assertGreaterEqual(out["slowed"], 20)
            self.assertEqual(out["recovered"], 40)


if __name__ == "__main__":
    unittest.main()
