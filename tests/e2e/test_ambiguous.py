#!/usr/bin/env python3
"""Near matches across intents in a run's summary: each reported as
ambiguous with both texts, both intents, both places and the score, and the
intents whose examples overlap most, in the JSON summary, the printed one
and the HTML report -- on a fixture where two intents share paraphrases."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402

SANDBOX = os.path.join(SRC, "pipelines", "tenants", "sandbox.lua")

ROWS = [
    ("how much money is in my checking account", "check_balance"),       # 1
    ("book a table for two", "restaurant"),                              # 2
    ("how much money is in my checking account please", "transfer"),     # 3: ~ line 1
    ("move money from my checking account to savings", "transfer"),      # 4
    ("Move money from my checking account to savings now", "check_balance"),  # 5: ~ line 4
    ("what's the balance of my savings account", "check_balance"),       # 6
    ("what is the balance of my savings account?", "transfer"),          # 7: same near form as 6
    ("book a table for two please", "check_balance"),                    # 8: ~ line 2
    ("play some jazz in the kitchen", "music"),                          # 9
    ("play some jazz in the kitchen now", "music"),                      # 10: same intent: near, not ambiguous
]


class Ambiguous(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-ambiguous-")
        self.data = os.path.join(self.dir, "examples.jsonl")
        with open(self.data, "w") as f:
            for text, intent in ROWS:
                f.write(json.dumps({"text": text, "intent": intent}) + "\n")
        self.pipeline = os.path.join(self.dir, "mine.lua")
        with open(self.pipeline, "w") as f:
            f.write(f"""local pipeline = require "cogpipe.pipeline"
return pipeline.new {{
  name = "mine",
  source = pipeline.source {{ path = {json.dumps(self.data)} }},
  steps = {{
    pipeline.normalize "collapse",
    pipeline.exact {{ key = "casefold" }},
    pipeline.near {{}},
  }},
  sink = pipeline.sink.intent_batches {{}},
}}
""")
        self.emu = Emulator()

    def tearDown(self):
        self.emu.stop()
        shutil.rmtree(self.dir)

    def run_it(self, *args):
        return subprocess.run([BIN, "run", self.pipeline, "--tenant", SANDBOX, "--dry-run", "--state-dir",
                               os.path.join(self.dir, "state"), *args], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, COGPIPE_EMULATOR_URL=self.emu.base))

    def test_pairs_across_intents_and_the_overlap_view(self):
        r = self.run_it("--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        t = json.loads(r.stdout)["tenants"][0]
        self.assertEqual(t["ambiguous"], 4)
        pairs = t["ambiguous_list"]
        self.assertEqual(len(pairs), 4)
        # closest first; the same near form scores 1.0
        self.assertEqual(pairs[0]["score"], 1.0)
        self.assertEqual((pairs[0]["line"], pairs[0]["other_line"]), (7, 6))
        self.assertEqual(pairs[0]["text"], "what is the balance of my savings account?")
        self.assertEqual(pairs[0]["other_text"], "what's the balance of my savings account")
        self.assertEqual((pairs[0]["intent"], pairs[0]["other_intent"]), ("transfer", "check_balance"))
        self.assertEqual((pairs[0]["file"], pairs[0]["other_file"]), (self.data, self.data))
        self.assertEqual(pairs[0]["kind"], "near")
        by_line = {p["line"]: p for p in pairs}
        self.assertEqual(sorted(by_line), [3, 5, 7, 8])
        self.assertEqual(by_line[5]["other_line"], 4)
        self.assertEqual(by_line[5]["text"], "Move money from my checking account to savings now")
        for p in pairs:
            self.assertGreaterEqual(p["score"], 0.65)
            self.assertNotEqual(p["intent"], p["other_intent"])
        # the same-intent pair is a near duplicate, not an ambiguity
        self.assertEqual(t["rejected_by_reason"]["near"], 1)

        overlap = t["intent_overlap"]
        self.assertEqual(len(overlap), 2)
        self.assertEqual(overlap[0]["intents"], ["check_balance", "transfer"])
        self.assertEqual(overlap[0]["pairs"], 3)
        self.assertEqual(overlap[0]["closest"]["score"], 1.0)
        self.assertEqual(overlap[1]["intents"], ["check_balance", "restaurant"])
        self.assertEqual(overlap[1]["pairs"], 1)
        self.assertEqual(overlap[1]["closest"]["other_text"], "book a table for two")

    def test_printed_summary_and_html_report(self):
        report = os.path.join(self.dir, "report.html")
        r = self.run_it("--report", report)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("4 near or semantic match(es) across intents (ambiguous)", r.stdout)
        self.assertIn("check_balance / transfer: 3 pair(s); closest 1.00", r.stdout)
        self.assertIn(f'"what\'s the balance of my savings account" ({self.data}:6)', r.stdout)
        self.assertIn("check_balance / restaurant: 1 pair(s)", r.stdout)
        with open(report, encoding="utf-8") as f:
            html = f.read()
        self.assertIn("Intents that overlap (4 match(es) across intents)", html)
        self.assertIn("check_balance / transfer", html)
        self.assertIn(f"(intent check_balance, {self.data}:6)", html)


if __name__ == "__main__":
    unittest.main(verbosity=2)
