#!/usr/bin/env python3
"""cogpipe check --near and --semantic: the pairs found, with their scores,
in the JSON report and the human one; usage errors exit 2."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")


class CheckSimilar(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-checksim-")
        self.data = os.path.join(self.dir, "examples.jsonl")
        rows = [("Update my credit card details", "update_payment"),
                ("book a flight to paris", "book_flight"),
                ("update my credit-card details please", "update_payment"),
                ("What is my account balance", "balance"),
                ("how much money do I have in my account", "balance")]
        with open(self.data, "w") as f:
            for text, intent in rows:
                f.write(json.dumps({"text": text, "intent": intent}) + "\n")
        # vectors: the two balance questions point almost the same way
        self.vectors = os.path.join(self.dir, "vectors.jsonl")
        vecs = {"Update my credit card details": [1, 0, 0, 0], "book a flight to paris": [0, 1, 0, 0],
                "update my credit-card details please": [0.6, 0, 0.8, 0],
                "What is my account balance": [0, 0, 0, 1], "how much money do I have in my account": [0, 0, 0.3, 0.95]}
        with open(self.vectors, "w") as f:
            for text, v in vecs.items():
                f.write(json.dumps({"text": text, "vector": v}) + "\n")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def run_check(self, *args):
        env = dict(os.environ, COGPIPE_STATE_DIR=os.path.join(self.dir, "state"))
        return subprocess.run([BIN, "check", self.data, *args], capture_output=True, text=True, env=env, timeout=60)

    def test_near_pairs_with_jaccard(self):
        r = self.run_check("--near", "0.8", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["near"], 1)
        p = doc["near_list"][0]
        self.assertEqual((p["line"], p["first_line"]), (3, 1))
        self.assertAlmostEqual(p["score"], 34 / 42, places=3)

    def test_semantic_pairs_from_a_vectors_file(self):
        r = self.run_check("--semantic", "0.85", "--embeddings", self.vectors, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["semantic"], 1)
        p = doc["semantic_list"][0]
        self.assertEqual(p["text"], "how much money do I have in my account")
        self.assertEqual(p["first_text"], "What is my account balance")
        self.assertAlmostEqual(p["score"], 0.95 / (0.3 ** 2 + 0.95 ** 2) ** 0.5, places=3)

    def test_human_report_lists_pairs(self):
        r = self.run_check("--near", "0.8")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("near duplicates (1):", r.stdout)
        self.assertIn("is 0.810 like", r.stdout)

    def test_usage_errors(self):
        self.assertEqual(self.run_check("--near", "2").returncode, 2)
        r = self.run_check("--semantic", "0.9")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--embeddings", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
