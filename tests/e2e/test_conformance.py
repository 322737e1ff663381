#!/usr/bin/env python3
"""The platform contract (DESIGN 4.1-4.4) where a platform may behave
otherwise than a lenient emulator: the three pipelines against the
emulator's strict mode, which takes the harsher reading wherever the
contract leaves room (no job endpoint, a second dataset upload stored as a
second dataset, lists in an order of the platform's own, 60,000-byte JSON
bodies, Retry-After kept per client with every early request recorded,
tokens revoked at any time). Every assertion is on what the emulator holds
and saw, not on cogpipe's summary of itself; where a run under faults is
judged, it is judged against what a clean run stores."""
import json
import os
import random
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

PIPELINES = os.path.join(SRC, "pipelines")
SHARED = os.environ.get("COGPIPE_SHARED_DIR", os.path.join(SRC, "..", "shared"))
CLINC = os.path.join(SHARED, "data", "clinc150", "data_full.json")
# A request that reached the server this long after a Retry-After answer was
# written was sent after the client could have read it. The emulator's own
# 50 ms is for a client that runs when its data arrives; a sanitized build
# on a machine running other tests can wait longer than that for a CPU
# between its last look at the answers and its send.
GRACE_S = 0.25 if os.environ.get("COGPIPE_SANITIZED") else 0.05
# Requests a run makes to the platform; embeddings and the webhook sink are
# other services that the emulator happens to serve too.
PLATFORM = ("/api/", "/oauth/", "/datasets/", "/jobs/", "/new/v2.0/", "/auth/")


def key(text):
    return unicodedata.normalize("NFKC", " ".join(text.split())).casefold()


def platform_requests(reqs):
    return [q for q in reqs if q["path"].startswith(PLATFORM)]


def tenant_lua(name, **settings):
    """A tenant file for the emulator at $COGPIPE_EMULATOR_URL; settings
    (Lua expressions) replace or add to the defaults."""
    values = {
        "name": json.dumps(name),
        "base_url": "base",
        "auth": "{ client_id = 'cogpipe-sandbox', client_secret = 'sandbox-secret' }",
        "dataset": "{ reference = 'conformance' }",
        "v2": "{ flow_id = 'sandbox-flow', locale_id = 'en-US', auth = { api_key = 'sandbox-api-key' } }",
        "embeddings": "{ url = base, model = 'emulator-embed-8' }",
        "limits": "{ rate = 50, burst = 100, max_in_flight = 16 }",
        "webhooks": "{ { url = base .. '/_sink/webhooks/" + name + "',"
                    " secret = 'whsec_c2FuZGJveC13ZWJob29rLXNlY3JldC0wMDAx' } }",
    }
    values.update(settings)
    body = "".join(f"  {k} = {v},\n" for k, v in values.items())
    return "local base = env('COGPIPE_EMULATOR_URL')\nreturn {\n" + body + "}\n"


class Strict:
    """A strict emulator and a state directory; runs pipelines against it."""

    def __init__(self, workdir, *args):
        self.emu = Emulator("--strict", "--seed", "7", *args)
        self.dir = tempfile.mkdtemp(prefix="run-", dir=workdir)
        self.state_dir = os.path.join(self.dir, "state")
        self.config(retry_after={"grace_s": GRACE_S})

    def stop(self):
        self.emu.stop()

    def tenant(self, name, **kw):
        path = os.path.join(self.dir, name + ".lua")
        with open(path, "w") as f:
            f.write(tenant_lua(name, **kw))
        return path

    def cmd(self, pipeline, *args, tenants=None, data=None):
        cmd = [BIN, "run", os.path.join(PIPELINES, pipeline)]
        for t in tenants or [self.tenant("t1")]:
            cmd += ["--tenant", t]
        cmd += ["--state-dir", self.state_dir, "--json", "--no-progress", *args]
        if data:
            cmd += ["--", data]
        return cmd

    def env(self):
        return dict(os.environ, COGPIPE_EMULATOR_URL=self.emu.base)

    def run(self, pipeline, *args, tenants=None, data=None, timeout=900):
        r = subprocess.run(self.cmd(pipeline, *args, tenants=tenants, data=data), capture_output=True,
                           text=True, timeout=timeout, env=self.env())
        try:
            summary = json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"no summary (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
        return r, summary

    def state(self):
        return self.emu.control("GET", "state?lines=1")

    def faults(self, *faults):
        self.emu.control("POST", "faults", {"faults": list(faults)})

    def config(self, **cfg):
        self.emu.control("POST", "config", cfg)

    # what the platform holds ----------------------------------------------
    def examples(self):
        """(intent, key) -> count over the intent examples API."""
        out = {}
        for iid, v in self.state()["intents"].items():
            for e in v["examples"]:
                k = (iid, key(e["text"]))
                out[k] = out.get(k, 0) + 1
        return out

    def sentences(self, flow="sandbox-flow"):
        out = {}
        flows = self.state()["flows"]
        for iid, v in flows.get(flow, {"intents": {}})["intents"].items():
            for s in v["sentences"]:
                k = (iid, key(s["text"]))
                out[k] = out.get(k, 0) + 1
        return out

    def datasets(self):
        st = self.state()
        return list(st["datasets"].values()), st["dataset_uploads"]


def figure(text):
    """What a test measured, on stderr beside unittest's own lines: the
    figures a change to the client is judged by."""
    print("  figure: " + text, file=sys.stderr, flush=True)


def stored(kind, s, **kw):
    return {"intent": s.examples, "v2": s.sentences}[kind](**kw)


class Base(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="cogpipe-conf-")
        self.runs = []

    def tearDown(self):
        for s in self.runs:
            s.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def strict(self, *args):
        s = Strict(self.work, *args)
        self.runs.append(s)
        return s

    def assert_once(self, holdings):
        doubled = {k: n for k, n in holdings.items() if n > 1}
        self.assertEqual(doubled, {}, "stored more than once")


# ---- retraining: no job endpoint in the contract --------------------------------


class Retraining(Base):
    def test_triggered_without_a_job_endpoint(self):
        s = self.strict()
        summaries = []
        for pipeline in ("intent_examples.lua", "dataset_upload.lua"):
            r, summary = s.run(pipeline)
            summaries.append(summary)
            self.assertEqual(r.returncode, 0, r.stderr)
            t = summary["tenants"][0]
            self.assertEqual(t["status"], "ok")
            self.assertEqual(t["training"]["status"], "triggered")
            jobs = s.state()["jobs"]
            self.assertTrue(t["training"]["retrain_job_id"])
            self.assertIn(t["training"]["retrain_job_id"], jobs)
        # nothing asked for an endpoint the contract does not define
        self.assertEqual([q for q in s.emu.requests() if "/jobs/" in q["path"]], [])
        # the webhooks say so too
        sinks = s.state()["webhooks"]["t1"]["deliveries"]
        self.assertEqual(len(sinks), 2)
        for d in sinks:
            self.assertEqual(d["body"]["status"], "ok")
            self.assertEqual(d["body"]["training"]["status"], "triggered")
            self.assertIn(d["body"]["training"]["retrain_job_id"], s.state()["jobs"])
        self.assertIn(sinks[0]["body"]["retrain_job_id"], s.state()["jobs"])
        # the intents that received examples, by their ids on the platform
        body = sinks[0]["body"]
        stored = sorted(s.state()["intents"])
        self.assertTrue(stored)
        self.assertEqual(sorted(body["intent_ids"]), stored)
        self.assertEqual(sorted(summaries[0]["tenants"][0]["intent_ids"]), stored)
        self.assertEqual(body["intent_id"], stored[0] if len(stored) == 1 else None)

    def test_status_url_answering_404_is_not_a_failure(self):
        s = self.strict()
        s.config(jobs={"endpoint": "not_found"})
        t = s.tenant("t1", retrain_status_url="'{tenant_url}/api/v1/jobs/{id}'")
        r, summary = s.run("intent_examples.lua", tenants=[t])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(summary["tenants"][0]["training"]["status"], "unavailable")
        polled = [q for q in s.emu.requests() if q["path"].startswith("/api/v1/jobs/")]
        self.assertTrue(polled)
        self.assertTrue(all(q["status"] == 404 for q in polled))

    def test_status_url_followed_when_the_platform_has_one(self):
        s = self.strict()
        s.config(jobs={"endpoint": "present"})
        t = s.tenant("t1", dataset="{ reference = 'conformance', retrain_status_url = '{api_base}/jobs/{id}' }")
        r, summary = s.run("dataset_upload.lua", tenants=[t])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(summary["tenants"][0]["training"]["status"], "done")
        jobs = s.state()["jobs"]
        self.assertEqual([j["status"] for j in jobs.values()], ["completed"])

    def test_status_url_off_the_platform_is_a_config_error(self):
        s = self.strict()
        t = s.tenant("t1", retrain_status_url="'https://elsewhere.example/jobs/{id}'")
        r, summary = s.run("intent_examples.lua", tenants=[t])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("retrain_status_url", summary["tenants"][0]["errors"][0])
        self.assertEqual(platform_requests(s.emu.requests()), [], "sent before the config was checked")


# ---- which intents the summary and the webhook name --------------------------------


class IntentIds(Base):
    def test_an_intent_whose_examples_were_refused_is_not_named(self):
        s = self.strict()
        s.faults({"match": {"method": "POST", "path": "^/api/v1/intents/weather/examples/batch$"},
                  "status": 400})
        r, summary = s.run("intent_examples.lua")
        self.assertEqual(r.returncode, 1, r.stderr)
        stored = sorted(s.state()["intents"])
        self.assertNotIn("weather", stored)
        self.assertGreater(len(stored), 1)
        t = summary["tenants"][0]
        self.assertEqual(t["status"], "failed")
        self.assertEqual(sorted(t["intent_ids"]), stored)
        body = s.state()["webhooks"]["t1"]["deliveries"][0]["body"]
        self.assertEqual(body["status"], "failed")
        self.assertEqual(sorted(body["intent_ids"]), stored)
        self.assertIsNone(body["intent_id"])


# ---- the dataset upload is not idempotent -----------------------------------------


class DatasetUnknown(Base):
    def test_killed_while_the_upload_was_pending_then_rerun(self):
        s = self.strict()
        # the platform stores the upload but answers late; the client dies
        s.faults({"match": {"method": "POST", "path": "^/datasets/upload$"}, "action": "hold_answer",
                  "delay_ms": 60000})
        p = subprocess.Popen(s.cmd("dataset_upload.lua"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=s.env())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not s.state()["datasets"]:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        datasets, uploads = s.datasets()
        self.assertEqual(len(datasets), 1)
        s.emu.control("DELETE", "faults")
        # the re-run cannot know: it sends nothing and says how to
        r, summary = s.run("dataset_upload.lua")
        self.assertEqual(r.returncode, 1, r.stderr)
        t = summary["tenants"][0]
        self.assertEqual(t["status"], "failed")
        self.assertGreater(t["unknown"], 0)
        self.assertEqual(t["uploaded"], 0)
        self.assertTrue(t["unknown_entries"])
        self.assertIn("--resend-unknown", " ".join(t["errors"]))
        datasets, uploads = s.datasets()
        self.assertEqual(len(datasets), 1, "sent again by itself")
        self.assertEqual(uploads, {"conformance": 1})
        # on purpose: sent once more, and only once
        r, summary = s.run("dataset_upload.lua", "--resend-unknown")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(s.datasets()[1], {"conformance": 2})
        r, summary = s.run("dataset_upload.lua")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(summary["tenants"][0]["uploaded"], 0)
        datasets, uploads = s.datasets()
        self.assertEqual(uploads, {"conformance": 2})
        self.assertEqual(len(datasets), 2)
        self.assertEqual(datasets[0]["lines_sha256"], datasets[1]["lines_sha256"])

    def test_stored_then_reset_is_not_sent_again(self):
        s = self.strict()
        s.faults({"match": {"method": "POST", "path": "^/datasets/upload$"}, "action": "reset_after_body"})
        r, summary = s.run("dataset_upload.lua")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertGreater(summary["tenants"][0]["unknown"], 0)
        self.assertEqual(summary["tenants"][0]["uploaded"], 0)
        s.emu.control("DELETE", "faults")
        for _ in range(2):
            r, summary = s.run("dataset_upload.lua")
            self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(s.datasets()[1], {"conformance": 1})


# ---- 60,000-byte bodies --------------------------------------------------------------


def long_sentences(path, n=1500, intent="long_reads"):
    """n distinct sentences of 300-500 characters, one intent, from a seeded
    draw of words (CLINC150's when available)."""
    words = []
    if os.path.exists(CLINC):
        with open(CLINC, encoding="utf-8") as f:
            for text, _ in json.load(f)["train"]:
                words.extend(text.split())
    if len(words) < 1000:
        words = [f"word{i}" for i in range(5000)]
    rng = random.Random(1500)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            target = rng.randint(300, 500)
            parts = [f"note {i}:"]
            while len(" ".join(parts)) < target:
                parts.append(rng.choice(words))
            text = " ".join(parts)[:target].strip()
            f.write(json.dumps({"text": text, "intent": intent}) + "\n")
    return path


class BodyLimit(Base):
    def check_long(self, s):
        data = long_sentences(os.path.join(self.work, "long.jsonl"))
        # the shipped sandbox tenant: the default settings, no json_body_max
        r, summary = s.run("cognigy_v2_sentences.lua", tenants=["sandbox"], data=data)
        self.assertEqual(r.returncode, 0, r.stderr + json.dumps((summary or {}).get("tenants", [{}])[0].get(
            "errors", [])))
        held = s.sentences()
        self.assert_once(held)
        self.assertEqual(sum(held.values()), 1500)
        patches = [q for q in s.emu.requests() if q["method"] == "PATCH"]
        return patches

    def test_1500_long_sentences_all_stored_within_60000_bytes(self):
        s = self.strict()
        patches = self.check_long(s)
        largest = max(q["body_bytes"] for q in patches)
        self.assertLessEqual(largest, 60000)
        self.assertEqual([q for q in patches if q["status"] == 413], [])
        # close to the limit, not far under it: about 40 sentences a request
        self.assertLess(len(patches), 1500 * 420 // 60000 + 8)
        figure(f"1,500 long sentences: {len(patches)} PATCH requests, the largest {largest} bytes")

    def test_a_lower_limit_than_the_tenant_thinks_splits_on_413(self):
        s = self.strict()
        s.config(v2={"json_body_max": 25000})
        patches = self.check_long(s)
        self.assertTrue([q for q in patches if q["status"] == 413])
        self.assertLessEqual(max(q["body_bytes"] for q in patches if q["status"] == 200), 25000)


# ---- no training on a locale whose upload failed ------------------------------------------


class NoTrainingAfterFailure(Base):
    def run_refused_once(self, **v2):
        """A v2 run over many intents whose first sentences request the
        platform refuses for good (422): what the emulator saw of training."""
        s = self.strict()
        s.faults({"match": {"method": "PATCH", "path": "/sentences$"}, "action": "status", "status": 422,
                  "first": 1})
        settings = {"flow_id": "'sandbox-flow'", "locale_id": "'en-US'",
                    "auth": "{ api_key = 'sandbox-api-key' }", **v2}
        t = s.tenant("t1", v2="{ " + ", ".join(f"{k} = {v}" for k, v in settings.items()) + " }")
        data = many_intents(os.path.join(self.work, "topics.jsonl"))
        r, summary = s.run("cognigy_v2_sentences.lua", tenants=[t], data=data)
        self.assertEqual(r.returncode, 1, r.stderr[-2000:])
        self.assertEqual(len([q for q in s.emu.requests() if q["status"] == 422]), 1)
        held = sum(s.sentences().values())
        self.assertGreater(held, 0, "the other intents' sentences were stored")
        self.assertLess(held, 100, "the refused request's sentences were not")
        trains = [q for q in s.emu.requests() if q["path"].endswith("/intents/train")]
        return trains, summary["tenants"][0]

    def test_a_refused_upload_leaves_the_locale_untrained(self):
        trains, tenant = self.run_refused_once()
        self.assertEqual(trains, [], "the flow was trained after an upload failed")
        self.assertIn("train_after_failure", " ".join(tenant.get("notes", [])))

    def test_the_tenant_may_ask_for_training_anyway(self):
        trains, _ = self.run_refused_once(train_after_failure="true")
        self.assertEqual(len(trains), 1)


# ---- Retry-After per client, shared by tenants ------------------------------------------


def many_intents(path, intents=20, per=5):
    """A small corpus over many intents (so that a run makes many requests):
    seeded draws of words, distinct enough to pass every filter."""
    rng = random.Random(20)
    words = ("account balance transfer card flight hotel weather music alarm timer recipe order "
             "package refund invoice meeting calendar reminder taxi train ticket movie song news "
             "score game password login email phone address payment loan insurance doctor").split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(intents):
            for j in range(per):
                text = " ".join(rng.sample(words, 6)) + f" {i * per + j}"
                f.write(json.dumps({"text": text, "intent": f"topic_{i:02d}"}) + "\n")
    return path


class SharedOrigin(Base):
    def test_three_tenants_one_client_limit_no_early_request(self):
        s = self.strict()
        # the platform's own figure: 100 requests a minute per client IP
        s.config(client_rate_limit={"requests": 100, "window_s": 60})
        tenants = [s.tenant(f"t{i}", v2=f"{{ flow_id = 'flow-{i}', locale_id = 'en-US', "
                            "auth = { api_key = 'sandbox-api-key' } }") for i in range(3)]
        data = many_intents(os.path.join(self.work, "topics.jsonl"))
        r, summary = s.run("cognigy_v2_sentences.lua", tenants=tenants, data=data)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        st = s.state()
        self.assertGreater(st["requests"]["by_status"].get("429", 0), 0, "the limit was never reached")
        self.assertEqual(st["early_requests"]["count"], 0, st["early_requests"]["items"][:5])
        counts = [sum(s.sentences(flow=f"flow-{i}").values()) for i in range(3)]
        self.assertEqual(counts, [100, 100, 100])
        for i in range(3):
            self.assert_once(s.sentences(flow=f"flow-{i}"))


# ---- timeouts count from the wire; auth stops once ----------------------------------------


class Timeouts(Base):
    def test_every_upload_answered_after_the_timeout(self):
        s = self.strict()
        s.faults({"match": {"method": "POST", "path": "/examples/batch$"}, "action": "hold_answer",
                  "delay_ms": 2500})
        t = s.tenant("t1", limits="{ rate = 50, burst = 100, max_in_flight = 4, timeout = 1 }")
        r, summary = s.run("intent_examples.lua", tenants=[t])
        self.assertEqual(r.returncode, 1, r.stderr)
        tenant = summary["tenants"][0]
        seen = platform_requests(s.emu.requests())
        self.assertEqual(tenant["requests"], len(seen), "a request reported that the platform never saw")
        batches = [q for q in seen if q["path"].endswith("/examples/batch")]
        self.assertEqual(tenant["unknown"] + tenant["uploaded"], tenant["accepted"])
        self.assertGreater(len(batches), 0)
        for e in tenant["errors"]:
            self.assertNotIn("resolve", e)
        # the answers were late, not lost: the next run finds every batch
        # stored and sends nothing twice
        first = s.examples()
        s.emu.control("DELETE", "faults")
        r, summary = s.run("intent_examples.lua", tenants=[t])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_once(s.examples())
        self.assertEqual(s.examples(), first)

    def test_a_wrong_api_key_stops_the_tenant_with_one_error(self):
        s = self.strict()
        t = s.tenant("t1", v2="{ flow_id = 'f', locale_id = 'en-US', auth = { api_key = 'wrong-key' } }")
        r, summary = s.run("cognigy_v2_sentences.lua", tenants=[t])
        self.assertEqual(r.returncode, 1, r.stderr)
        tenant = summary["tenants"][0]
        self.assertEqual(len(tenant["errors"]), 1, tenant["errors"])
        self.assertIn("API key", tenant["errors"][0])
        self.assertNotIn("wrong-key", r.stdout + r.stderr)
        refused = [q for q in s.emu.requests() if q["status"] == 401]
        # those already on the wire (16 at most) and one let through as the
        # first answer came back; nothing after
        self.assertLessEqual(len(refused), 17, "requests went on after the key was refused")
        self.assertEqual(tenant["requests"], len(platform_requests(s.emu.requests())))
        self.assertEqual([q for q in s.emu.requests() if q["method"] == "PATCH"], [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
