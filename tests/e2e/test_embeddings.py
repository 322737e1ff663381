#!/usr/bin/env python3
"""The OpenAI-compatible embeddings provider against the emulator's
/v1/embeddings: batching and concurrency, semantic rejections with the
nearest text and score on the fixture vectors, the on-disk cache (a second
run sends no embedding request at all, seen in the emulator's request log),
the optional API key, and retries."""
import json
import math
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import SRC, Emulator, last_json_line, run_lua  # noqa: E402

FIXTURE = os.path.join(SRC, "tests", "emulator", "fixtures", "embeddings.json")

# Embeds texts through the emulator, runs the in-run semantic filter against
# an existing corpus, prints what it found and what the provider did.
SCRIPT = r"""
local cp = require "cogpipe"
local embeddings = require "cogpipe.embeddings"
local semdup = require "cogpipe.semdup"
local base, spec = arg[1], cp.json.decode(arg[2])
local p = embeddings.openai{url = base, model = spec.model, api_key = spec.api_key,
  batch = spec.batch, concurrency = spec.concurrency, tries = spec.tries}
local new, existing = {}, {}
for i, s in ipairs(spec.new) do new[i] = {text = s, line = i} end
for i, s in ipairs(spec.existing or {}) do existing[i] = {text = s, intent = "intent-" .. i} end
local accepted, rejected = semdup.check{new = new, existing = existing, provider = p,
  threshold = spec.threshold}
if not accepted then
  print(cp.json.encode({error = tostring(rejected.message), kind = rejected.kind,
    status = rejected.status or cp.json.null}))
  return
end
local out = {accepted = {}, rejected = {}, requests = p.requests, fetched = p.fetched, cached = p.cached}
for _, r in ipairs(accepted) do out.accepted[#out.accepted + 1] = r.line end
for _, r in ipairs(rejected) do
  out.rejected[#out.rejected + 1] = {line = r.record.line, nearest = r.nearest.text,
    intent = r.nearest.intent or cp.json.null, from = r.from, score = r.score}
end
print(cp.json.encode(out))
"""


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


class Embeddings(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(FIXTURE) as f:
            cls.vectors = json.load(f)["vectors"]
        cls.emu = Emulator("--seed", "3")

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        self.emu.control("POST", "reset")
        self.emu.control("POST", "config", {"embeddings": {"api_key": None}})
        self.state = tempfile.mkdtemp(prefix="cogpipe-emb-state-")

    def tearDown(self):
        shutil.rmtree(self.state, ignore_errors=True)

    def run_script(self, spec):
        r = run_lua(SCRIPT, self.emu.base, json.dumps(spec), env={"COGPIPE_STATE_DIR": self.state})
        self.assertEqual(r.returncode, 0, r.stderr)
        return last_json_line(r.stdout)

    def embedding_requests(self, since=0):
        return [e for e in self.emu.control("GET", f"requests?since={since}")["requests"]
                if e["method"] == "POST" and e["path"] == "/v1/embeddings"]

    def last_seq(self):
        return self.emu.control("GET", "requests")["last_seq"]

    def inputs_sent(self):
        return self.emu.control("GET", "state")["embeddings"]["inputs"]

    def test_rejections_batches_and_the_cache(self):
        card, card2 = "Update my credit card details", "update my credit-card details please"
        bal, bal2 = "What is my account balance", "how much money do I have in my account"
        spec = {
            "model": "emulator-embed-8", "batch": 2, "concurrency": 3, "threshold": 0.85,
            "existing": [card, "tell me a joke", "where is my package"],
            # two paraphrases new in the same run (bal, bal2): only the first passes
            "new": [card2, bal, "book a flight to paris", bal2, "a text the fixture lacks"],
        }
        out = self.run_script(spec)
        self.assertEqual(out["accepted"], [2, 3, 5])
        self.assertEqual(len(out["rejected"]), 2)
        first, second = out["rejected"]
        self.assertEqual((first["line"], first["nearest"], first["intent"], first["from"]),
                         (1, card, "intent-1", "existing"))
        self.assertAlmostEqual(first["score"], cosine(self.vectors[card], self.vectors[card2]), places=5)
        self.assertEqual((second["line"], second["nearest"], second["from"]), (4, bal, "new"))
        self.assertAlmostEqual(second["score"], cosine(self.vectors[bal], self.vectors[bal2]), places=5)

        # 8 distinct texts (new and existing together) in batches of 2: 4 requests
        sent = self.embedding_requests()
        self.assertEqual(len(sent), 4)
        self.assertTrue(all(e["status"] == 200 for e in sent))
        self.assertEqual(self.inputs_sent(), 8)
        self.assertEqual(out["requests"], 4)
        self.assertEqual(out["fetched"], 8)
        cache = os.path.join(self.state, "cache", "embeddings")
        files = os.listdir(cache)
        self.assertEqual(len(files), 1)
        self.assertTrue(files[0].startswith("emulator-embed-8-") and files[0].endswith(".cpvec"), files)

        # the second run asks for nothing: the cache has every vector
        seq = self.last_seq()
        again = self.run_script(spec)
        self.assertEqual(self.embedding_requests(since=seq), [])
        self.assertEqual(again["requests"], 0)
        self.assertEqual(again["cached"], 8)
        self.assertEqual(again["accepted"], out["accepted"])
        self.assertEqual(again["rejected"], out["rejected"])

        # one text it has not seen: one request, with that one input
        spec["new"].append("yet another unseen text")
        seq = self.last_seq()
        third = self.run_script(spec)
        self.assertEqual(len(self.embedding_requests(since=seq)), 1)
        self.assertEqual(self.inputs_sent(), 9)
        self.assertEqual(third["accepted"], [2, 3, 5, 6])

        # another model is another cache
        spec["model"] = "another-model"
        seq = self.last_seq()
        self.run_script(spec)
        self.assertEqual(len(self.embedding_requests(since=seq)), 5)
        self.assertEqual(len(os.listdir(cache)), 2)

    def test_api_key(self):
        self.emu.control("POST", "config", {"embeddings": {"api_key": "emb-secret-1"}})
        spec = {"model": "m", "new": ["reset my password"], "tries": 1}
        out = self.run_script(spec)
        self.assertEqual(out["status"], 401)
        self.assertEqual(out["kind"], "http")
        self.assertIn("embeddings:", out["error"])
        spec["api_key"] = "emb-secret-1"
        r = run_lua(SCRIPT, self.emu.base, json.dumps(spec), env={"COGPIPE_STATE_DIR": self.state})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(last_json_line(r.stdout)["accepted"], [1])
        self.assertNotIn("emb-secret-1", r.stdout + r.stderr)
        sent = self.embedding_requests()
        self.assertEqual([e["headers"]["auth_scheme"] for e in sent], [None, "Bearer"])
        # nothing of the key reaches the cache file either
        cache = os.path.join(self.state, "cache", "embeddings")
        for name in os.listdir(cache):
            with open(os.path.join(cache, name), "rb") as f:
                self.assertNotIn(b"emb-secret-1", f.read())

    def test_server_errors_are_retried(self):
        self.emu.control("POST", "faults", {"faults": [{
            "match": {"method": "POST", "path": "^/v1/embeddings$"},
            "action": "status", "status": 503, "first": 2}]})
        out = self.run_script({"model": "m", "new": ["tell me a joke", "reset my password"]})
        self.assertEqual(out["accepted"], [1, 2])
        statuses = [e["status"] for e in self.embedding_requests()]
        self.assertEqual(statuses, [503, 503, 200])


if __name__ == "__main__":
    unittest.main(verbosity=2)
