#!/usr/bin/env python3
"""cogpipe check --near and --semantic: the pairs found, with their scores,
in the JSON report and the human one; each record compared only with the
records kept before it, as the pipelines' steps compare; usage errors exit
2."""
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

    def write(self, name, rows):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        return path

    def test_near_compares_with_the_records_kept_only(self):
        """As the pipelines' near step: a record is compared with the
        records kept before it, never with one rejected itself."""
        rows = [{"text": "set an alarm for the morning", "intent": "alarm"},                        # 1
                {"text": "set an alarm for the morning please thanks", "intent": "alarm"},          # 2: 0.69 ~ 1
                {"text": "set an alarm for the morning please thanks a lot buddy", "intent": "alarm"}]  # 3: 0.78 ~ 2
        path = self.write("chain.jsonl", rows)
        env = dict(os.environ, COGPIPE_STATE_DIR=os.path.join(self.dir, "state"))
        r = subprocess.run([BIN, "check", path, "--near", "--json"], capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["near_threshold"], 0.65)  # the pipelines' threshold when none is given
        self.assertEqual([(p["line"], p["first_line"]) for p in doc["near_list"]], [(2, 1)])
        self.assertEqual((doc["near"], doc["accepted"]), (1, 2))

    def test_semantic_compares_with_the_records_kept_only(self):
        cos25, sin25, cos50, sin50 = 0.9063078, 0.4226183, 0.6427876, 0.7660444
        path = self.write("chain.jsonl", [{"text": t, "intent": "x"} for t in ("one", "two", "three")])
        vectors = self.write("chain-vectors.jsonl", [{"text": "one", "vector": [1, 0]},
                                                     {"text": "two", "vector": [cos25, sin25]},
                                                     {"text": "three", "vector": [cos50, sin50]}])
        env = dict(os.environ, COGPIPE_STATE_DIR=os.path.join(self.dir, "state"))
        r = subprocess.run([BIN, "check", path, "--semantic", "--embeddings", vectors, "--json"],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["semantic_threshold"], 0.85)
        # "three" is 0.906 like "two", which was rejected, and 0.643 like "one"
        self.assertEqual([(p["line"], p["first_line"]) for p in doc["semantic_list"]], [(2, 1)])

    def test_help_says_which_pairs(self):
        r = subprocess.run([BIN, "check", "--help"], capture_output=True, text=True, timeout=60)
        text = " ".join(r.stdout.split())
        self.assertIn("A record is compared only with the records kept before it", text)
        self.assertIn("default 0.65, the pipelines' threshold", text)
        self.assertIn("casefold (collapse + Unicode NFKC case folding; the default, as the pipelines", text)

    def test_usage_errors(self):
        self.assertEqual(self.run_check("--near", "2").returncode, 2)
        r = self.run_check("--semantic", "0.9")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--embeddings", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
