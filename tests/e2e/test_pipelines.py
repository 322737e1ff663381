#!/usr/bin/env python3
"""The three ready pipelines end to end against the emulator, checked against
the emulator's state exactly: every accepted example present once, nothing
rejected present, the right intents, training done. Also re-runs (nothing
sent twice), a run killed partway and a run cut by network faults (the
re-run sends exactly what is missing), two tenants where one platform is
broken, config errors, dry runs, and the main-job command."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402

SAMPLE = os.path.join(SRC, "pipelines", "data", "sample_intents.jsonl")
PIPELINES = os.path.join(SRC, "pipelines")


def casefold_key(text):
    text = " ".join(text.split())
    return unicodedata.normalize("NFKC", text).casefold()


def expected_intent_examples(path=SAMPLE):
    """What the intent pipeline must send, computed independently from the
    sample: collapsed text, the platform's rules, no duplicates, no text
    under two intents. Near and semantic paraphrases are left to the
    pipeline and checked as a subset."""
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    valid = []
    for r in rows:
        text = " ".join(r["text"].split())
        if not 1 <= len(text) <= 500 or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text):
            continue
        bad = False
        for a in r.get("annotations") or []:
            if not (0 <= a["start"] < a["end"] <= len(text)):
                bad = True
        if bad:
            continue
        valid.append((text, r["intent"]))
    intents_of = {}
    for text, intent in valid:
        intents_of.setdefault(casefold_key(text), set()).add(intent)
    seen, out = set(), []
    for text, intent in valid:
        k = casefold_key(text)
        if len(intents_of[k]) > 1 or k in seen:
            continue
        seen.add(k)
        out.append((text, intent))
    return out


class PipelineRun:
    def __init__(self, emu, state_dir):
        self.emu = emu
        self.state_dir = state_dir

    def run(self, pipeline, *args, tenants=("sandbox",), env=None, data=None, timeout=300):
        cmd = [BIN, "run", os.path.join(PIPELINES, pipeline)]
        for t in tenants:
            cmd += ["--tenant", t]
        cmd += ["--state-dir", self.state_dir, "--json", *args]
        if data:
            cmd += ["--", data]
        e = dict(os.environ, COGPIPE_EMULATOR_URL=self.emu.base)
        e.update(env or {})
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
        summary = None
        if r.stdout.strip():
            try:
                summary = json.loads(r.stdout)
            except ValueError:
                pass
        return r, summary


class Pipelines(unittest.TestCase):
    def setUp(self):
        self.emu = Emulator()
        self.dir = tempfile.mkdtemp(prefix="cogpipe-pipe-")
        self.runner = PipelineRun(self.emu, os.path.join(self.dir, "state"))

    def tearDown(self):
        self.emu.stop()
        shutil.rmtree(self.dir)

    def state(self):
        return self.emu.control("GET", "state?lines=1")

    def stored_examples(self):
        st = self.state()
        return {iid: [e["text"] for e in v["examples"]] for iid, v in st["intents"].items()}

    def assert_exact(self, stored, summary):
        """Every stored text once, under the right intent, nothing rejected."""
        expected = expected_intent_examples()
        exp_intent = {casefold_key(t): i for t, i in expected}
        all_texts = [(t, i) for i, texts in stored.items() for t in texts]
        keys = [casefold_key(t) for t, _ in all_texts]
        self.assertEqual(len(keys), len(set(keys)), "an example is stored twice")
        for text, intent in all_texts:
            self.assertIn(casefold_key(text), exp_intent, f"{text!r} should have been rejected")
            self.assertEqual(exp_intent[casefold_key(text)], intent, text)
        tenant = summary["tenants"][0]
        self.assertEqual(tenant["uploaded"], len(all_texts))
        # a duplicate's text is also its kept first copy's; invalid and
        # conflicting texts must not be there at all
        rejected_texts = {casefold_key(r["text"]) for r in tenant["rejections"]
                          if r["reason"] in ("invalid", "conflict") and r.get("text")}
        self.assertIn(casefold_key("change my login password"), rejected_texts)
        for t, _ in all_texts:
            self.assertNotIn(casefold_key(t), rejected_texts)
        return all_texts

    def test_intent_examples_end_to_end_and_rerun(self):
        r, summary = self.runner.run("intent_examples.lua")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        tenant = summary["tenants"][0]
        self.assertEqual(tenant["status"], "ok")
        stored = self.stored_examples()
        all_texts = self.assert_exact(stored, summary)
        # every filter had something to do on the sample
        by = tenant["rejected_by_reason"]
        for reason in ("invalid", "duplicate", "conflict"):
            self.assertGreater(by[reason], 0, reason)
        self.assertGreaterEqual(by["near"] + by["semantic"], 1)
        # the one blank record is counted as a blank line, the rest submitted
        self.assertEqual(tenant["submitted"] + summary["source"]["blank_lines"], sum(1 for _ in open(SAMPLE)))
        self.assertEqual(tenant["submitted"], tenant["accepted"] + tenant["rejected"] + tenant["present"])
        # the platform took the retraining jobs; the contract has no way to follow them
        self.assertEqual(tenant["training"]["status"], "triggered")
        self.assertIn(tenant["training"]["retrain_job_id"], self.state()["jobs"])
        self.assertEqual(sorted(stored), sorted({i for _, i in all_texts}))
        # the second run finds everything there and sends nothing
        before = len(self.emu.requests())
        r2, s2 = self.runner.run("intent_examples.lua")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(s2["tenants"][0]["uploaded"], 0)
        self.assertEqual(s2["tenants"][0]["present"], len(all_texts))
        posts = [q for q in self.emu.requests()[before:] if q["method"] == "POST" and "/examples/batch" in q["path"]]
        self.assertEqual(posts, [])
        self.assertEqual(self.stored_examples(), stored)

    def test_dataset_upload_end_to_end(self):
        r, summary = self.runner.run("dataset_upload.lua")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        st = self.state()
        self.assertEqual(len(st["datasets"]), 1)
        ds = list(st["datasets"].values())[0]
        tenant = summary["tenants"][0]
        self.assertEqual(len(ds["lines"]), tenant["uploaded"])
        self.assertEqual(len(set(casefold_key(x) for x in ds["lines"])), len(ds["lines"]))
        expected = {casefold_key(t) for t, _ in expected_intent_examples()}
        for line in ds["lines"]:
            self.assertIn(casefold_key(line), expected)
        self.assertEqual(tenant["training"]["status"], "triggered")
        self.assertEqual(tenant["training"]["retrain_job_id"], ds["retrainJobId"])
        self.assertEqual(st["dataset_uploads"]["sandbox-intents"], 1)
        # re-run: the journal knows this content was committed
        r2, s2 = self.runner.run("dataset_upload.lua")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(s2["tenants"][0]["uploaded"], 0)
        self.assertEqual(self.state()["dataset_uploads"]["sandbox-intents"], 1)

    def test_v2_sentences_end_to_end_with_existing_corpus(self):
        # the flow already holds two of the sample's sentences
        self.emu.control("POST", "seed", {"v2": {"sandbox-flow": {"greeting": ["hello"], "tell_joke": ["tell me a joke"]}}})
        r, summary = self.runner.run("cognigy_v2_sentences.lua")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        st = self.state()
        flow = st["flows"]["sandbox-flow"]["intents"]
        texts = [(s["text"], iid) for iid, v in flow.items() for s in v["sentences"]]
        keys = [casefold_key(t) for t, _ in texts]
        self.assertEqual(len(keys), len(set(keys)), "a sentence is stored twice")
        expected = {casefold_key(t): i for t, i in expected_intent_examples()}
        for t, iid in texts:
            self.assertEqual(expected.get(casefold_key(t)), iid, t)
        tenant = summary["tenants"][0]
        self.assertEqual(tenant["uploaded"] + 2, len(texts))
        self.assertGreaterEqual(tenant["present"], 2)
        self.assertEqual(tenant["training"]["status"], "done")
        for s in (s for v in flow.values() for s in v["sentences"]):
            self.assertEqual(s["slots"], [])
        # every PATCH body stayed under the platform's limit
        for q in self.emu.requests():
            if q["method"] == "PATCH":
                self.assertLessEqual(q.get("body_bytes") or 0, 60 * 1024)

    def slow_tenant(self):
        """The sandbox, one request at a time, so that a run takes a while."""
        path = os.path.join(self.dir, "slow.lua")
        with open(path, "w") as f:
            f.write("return { name = 'sandbox', base_url = env('COGPIPE_EMULATOR_URL'),"
                    " auth = { client_id = 'cogpipe-sandbox', client_secret = 'sandbox-secret' },"
                    " embeddings = { url = env('COGPIPE_EMULATOR_URL') },"
                    " limits = { rate = 100, burst = 100, max_in_flight = 1 } }\n")
        return path

    def test_killed_run_then_rerun_sends_exactly_the_rest(self):
        # slow batch answers, one at a time, so that the kill lands mid-run
        self.emu.control("POST", "faults", {"faults": [
            {"match": {"method": "POST", "path": "/examples/batch"}, "action": "delay", "delay_ms": 300}]})
        cmd = [BIN, "run", os.path.join(PIPELINES, "intent_examples.lua"), "--tenant", self.slow_tenant(),
               "--state-dir", self.runner.state_dir, "--json"]
        env = dict(os.environ, COGPIPE_EMULATOR_URL=self.emu.base)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batches = sum(v.get("batches", 0) for v in self.state()["intents"].values())
            if batches >= 3:
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        partial = sum(v["count"] for v in self.state()["intents"].values())
        self.emu.control("DELETE", "faults")
        r, summary = self.runner.run("intent_examples.lua")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        stored = self.stored_examples()
        total = sum(len(v) for v in stored.values())
        self.assertGreater(partial, 0)
        self.assertLess(partial, total)
        self.assert_exact_totals(stored)

    def assert_exact_totals(self, stored):
        expected = {casefold_key(t): i for t, i in expected_intent_examples()}
        keys = [casefold_key(t) for texts in stored.values() for t in texts]
        self.assertEqual(len(keys), len(set(keys)), "an example is stored twice")
        for iid, texts in stored.items():
            for t in texts:
                self.assertEqual(expected.get(casefold_key(t)), iid, t)

    def test_network_fault_then_rerun(self):
        # every 2nd batch is stored but its answer is lost (reset after body)
        self.emu.control("POST", "faults", {"faults": [
            {"match": {"method": "POST", "path": "/examples/batch"}, "action": "reset_after_body", "every": 2}]})
        r, summary = self.runner.run("intent_examples.lua")
        self.assertEqual(r.returncode, 1, r.stderr)
        tenant = summary["tenants"][0]
        self.assertGreater(tenant["unknown"], 0)
        first = self.stored_examples()
        self.emu.control("DELETE", "faults")
        r2, s2 = self.runner.run("intent_examples.lua")
        self.assertEqual(r2.returncode, 0, r2.stderr + r2.stdout)
        stored = self.stored_examples()
        self.assert_exact_totals(stored)
        # unknown batches were in fact stored: the re-run did not send them again
        self.assertEqual(sum(len(v) for v in stored.values()),
                         sum(len(v) for v in first.values()) + s2["tenants"][0]["uploaded"])

    def test_two_tenants_one_broken(self):
        broken = os.path.join(self.dir, "broken.lua")
        with open(broken, "w") as f:
            f.write("return { name = 'broken', base_url = env('BROKEN_URL'),"
                    " auth = { client_id = 'cogpipe-sandbox', client_secret = 'sandbox-secret' },"
                    " limits = { rate = 100, burst = 100 } }\n")
        # a second emulator answers 500 to everything
        bad = Emulator()
        try:
            bad.control("POST", "faults", {"faults": [{"match": {"path": "^/(api|oauth)"}, "action": "status",
                                                      "status": 500}]})
            r, summary = self.runner.run("intent_examples.lua", tenants=("sandbox", broken),
                                         env={"BROKEN_URL": bad.base})
        finally:
            bad.stop()
        self.assertEqual(r.returncode, 1, r.stderr)
        by = {t["tenant"]: t for t in summary["tenants"]}
        self.assertEqual(by["sandbox"]["status"], "ok")
        self.assertEqual(by["broken"]["status"], "failed")
        self.assertTrue(by["broken"]["errors"])
        self.assertEqual(by["sandbox"]["uploaded"], sum(len(v) for v in self.stored_examples().values()))

    def test_missing_secret_is_a_config_error_naming_the_variable(self):
        prod = os.path.join(PIPELINES, "tenants", "example_production.lua")
        env = {k: "" for k in ("COGNIGY_CLIENT_ID", "COGNIGY_CLIENT_SECRET")}
        env["COGNIGY_CLIENT_ID"] = "someone"
        r, _ = self.runner.run("intent_examples.lua", tenants=(prod,), env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("COGNIGY_CLIENT_SECRET", r.stderr)
        self.assertEqual(self.emu.requests(), [])

    def test_dry_run_sends_nothing_and_shows_the_plan(self):
        r, summary = self.runner.run("intent_examples.lua", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        # reads (tokens, listings, embeddings) are fine; writes to the platform are not
        writes = [q for q in self.emu.requests() if q["method"] in ("POST", "PATCH")
                  and "token" not in q["path"] and q["path"] != "/v1/embeddings"]
        self.assertEqual(writes, [])
        tenant = summary["tenants"][0]
        self.assertTrue(summary["dry_run"])
        self.assertEqual(sum(w["count"] for w in tenant["would_send"]), tenant["accepted"])
        # an intent named like a secret field is still shown (not redacted)
        counts = {w["intent"]: w["count"] for w in tenant["would_send"]}
        self.assertIsInstance(counts["reset_password"], int)
        r2, _ = self.runner.run("intent_examples.lua", "--dry-run", "--json")
        self.assertEqual(r2.returncode, 0)
        self.assertEqual(tenant["uploaded"], 0)


class StepErrors(unittest.TestCase):
    """A step of the user's pipeline that fails or returns something else
    than records is named with the pipeline file and line that defines it."""

    def run_pipeline(self, step_body):
        d = tempfile.mkdtemp(prefix="cogpipe-step-")
        try:
            path = os.path.join(d, "mine.lua")
            with open(path, "w") as f:
                f.write(f"""local pipeline = require "cogpipe.pipeline"
return pipeline.new {{
  name = "mine",
  source = pipeline.source {{ path = {json.dumps(SAMPLE)} }},
  steps = {{
    pipeline.normalize "collapse",
    {{ name = "mine", run = function(ctx, records)
{step_body}
    end }},
  }},
  sink = pipeline.sink.intent_batches {{}},
}}
""")
            emu = Emulator()
            try:
                sandbox = os.path.join(PIPELINES, "tenants", "sandbox.lua")
                r = subprocess.run([BIN, "run", path, "--tenant", sandbox, "--json", "--state-dir",
                                    os.path.join(d, "state")], capture_output=True, text=True, timeout=120,
                                   env=dict(os.environ, COGPIPE_EMULATOR_URL=emu.base))
                posts = [q for q in emu.requests() if q["method"] == "POST" and "/batch" in q["path"]]
            finally:
                emu.stop()
            self.assertTrue(r.stdout.startswith("{"), r.stderr)
            return path, r, json.loads(r.stdout), posts
        finally:
            shutil.rmtree(d)

    def test_a_step_returning_a_number(self):
        path, r, summary, posts = self.run_pipeline("      return #records")
        self.assertEqual(r.returncode, 1, r.stderr)
        err = summary["tenants"][0]["errors"][0]
        self.assertIn(f"step 'mine' ({path}:7) returned number", err)
        self.assertEqual(posts, [])

    def test_a_step_that_raises(self):
        path, r, summary, posts = self.run_pipeline("      local n = nil\n      return n.field")
        self.assertEqual(r.returncode, 1, r.stderr)
        err = summary["tenants"][0]["errors"][0]
        self.assertIn(f"step 'mine' ({path}:7) failed", err)
        self.assertIn(f"{path}:9: attempt to index a nil value", err)
        self.assertEqual(posts, [])


@unittest.skipUnless(shutil.which("sh"), "needs sh")
class MainJob(unittest.TestCase):
    def test_demo_summary_matches_the_emulator(self):
        r = subprocess.run(["sh", os.path.join(SRC, "scripts", "demo.sh"), "--json"], capture_output=True,
                           text=True, timeout=600, cwd=SRC)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        summary = json.loads(r.stdout)
        uploaded = summary["tenants"][0]["uploaded"]
        self.assertGreater(uploaded, 0)
        self.assertIn(f"emulator: {uploaded} examples stored", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
