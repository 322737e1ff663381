#!/usr/bin/env python3
"""The platform contract over CLINC150 (15,000 utterances) through each
pipeline on the emulator's strict mode: a fifth of all requests answered 429
with Retry-After: 1 (no early request, nothing lost or doubled, the same
rejection reasons as a clean run), the flow cap shared round-robin across
150 intents, and tokens revoked every 50 requests. A clean run on one strict
emulator is the reference for a faulted run on another. Kept apart from
test_conformance.py so that the two run side by side."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_conformance import CLINC, Base, figure, stored  # noqa: E402


STORM = {"match": {"path": "^/(?!_emulator)"}, "action": "status", "status": 429, "retry_after": "1",
         "share": 0.2}


@unittest.skipUnless(os.path.exists(CLINC), f"needs CLINC150 at {CLINC}")
class Clinc(Base):
    """CLINC150 (15,000 utterances) through each pipeline: a clean run on one
    strict emulator is the reference for a faulted run on another."""

    reference = {}

    def clean(self, pipeline, kind):
        if pipeline not in Clinc.reference:
            s = self.strict()
            r, summary = s.run(pipeline, data=CLINC)
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            held = s.datasets()[0][0]["lines"] if kind == "dataset" else stored(kind, s)
            Clinc.reference[pipeline] = (held, summary["tenants"][0])
        return Clinc.reference[pipeline]

    def reasons(self, t):
        return t["rejected_by_reason"], [(r["reason"], r.get("line")) for r in t["rejections"]]

    def storm(self, pipeline, kind):
        ref, ref_t = self.clean(pipeline, kind)
        s = self.strict()
        # a fifth of all requests, and the first of each kind of write, so
        # that a run of few requests (one upload) meets a 429 too
        first = {"match": {"method": "POST", "path": "/(upload|batch|sentences)$"}, "action": "status",
                 "status": 429, "retry_after": "1", "first": 1}
        s.faults(first, STORM)
        r, summary = s.run(pipeline, data=CLINC)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        st = s.state()
        self.assertEqual(st["early_requests"]["count"], 0, st["early_requests"]["items"][:5])
        by_status = st["requests"]["by_status"]
        self.assertGreater(by_status.get("429", 0), 0)
        if kind == "dataset":
            datasets, uploads = s.datasets()
            self.assertEqual(uploads, {"conformance": 1})
            self.assertEqual(datasets[0]["lines"], ref)
        else:
            held = stored(kind, s)
            self.assert_once(held)
            self.assertEqual(held, ref, "lost or added under faults")
        # the same input, the same reasons, whatever the timing
        self.assertEqual(self.reasons(summary["tenants"][0]), self.reasons(ref_t))
        figure(f"{pipeline}: {by_status.get('429', 0)} of {sum(by_status.values())} requests answered 429, "
               f"{st['early_requests']['count']} early; as the clean run holds; rejected "
               f"{summary['tenants'][0]['rejected_by_reason']}")
        return s, summary

    def test_429_storm_intent_examples(self):
        self.storm("intent_examples.lua", "intent")

    def test_429_storm_dataset_upload(self):
        self.storm("dataset_upload.lua", "dataset")

    def test_429_storm_v2_and_the_flow_cap_shared_round_robin(self):
        s, summary = self.storm("cognigy_v2_sentences.lua", "v2")
        held = s.sentences()
        per = {}
        for (iid, _), n in held.items():
            per[iid] = per.get(iid, 0) + n
        self.assertEqual(sum(per.values()), 10000)
        left = {x["intent"]: x["left_out"] for x in summary["tenants"][0]["left_out"]}
        # every intent got sentences; those cut by the cap got an equal share
        self.assertEqual(len(per), 150)
        cut = [per[i] for i in left]
        self.assertTrue(cut)
        self.assertLessEqual(max(cut) - min(cut), 1)
        self.assertTrue(all(per[i] <= max(cut) for i in per))
        for i, n in left.items():
            self.assertGreater(n, 0)
        figure(f"flow cap: {sum(per.values())} sentences over {len(per)} intents ({min(per.values())} to "
               f"{max(per.values())} each), {sum(left.values())} left out of {len(left)} intents")

    def test_tokens_revoked_every_50_requests(self):
        ref, _ = self.clean("intent_examples.lua", "intent")
        s = self.strict()
        s.config(tokens={"revoke_every": 50})
        r, summary = s.run("intent_examples.lua", data=CLINC)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        held = s.examples()
        self.assertEqual(held, ref)
        st = s.state()
        issued = st["tokens_issued"].get("/api/v1/auth/token", 0)
        self.assertGreater(st["tokens_revoked"], 3)
        self.assertLessEqual(issued, st["tokens_revoked"] + 1, "more than one token request per revocation")
        figure(f"tokens revoked every 50 requests: {sum(held.values())} examples stored, "
               f"{st['tokens_revoked']} revocations, {issued} token requests")



if __name__ == "__main__":
    unittest.main(verbosity=2)
