#!/usr/bin/env python3
"""Training data as code, against the emulator's strict mode: export what
the platform holds, edit the file, plan (online and from the export with no
network), run, export again; prune with its refusals; undo of a run that
created and pruned, and undo refused after an edit on the platform; the
read-back that catches a platform which answers 200 but drops 1 sentence in
100. Every assertion on what the platform holds is on the emulator's state,
not on cogpipe's summary of itself."""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402
import test_conformance as conformance  # noqa: E402  (its tenant files; its tests are not run here)

PIPELINES = os.path.join(SRC, "pipelines")
V2 = os.path.join(PIPELINES, "cognigy_v2_sentences.lua")
INTENTS = os.path.join(PIPELINES, "intent_examples.lua")
FLOW = "sandbox-flow"
# a port nothing listens on: a plan from a snapshot must not need one
NOWHERE = "http://127.0.0.1:9"

WORDS = ("account balance transfer card flight hotel weather music alarm timer recipe order package refund "
         "invoice meeting calendar reminder taxi train ticket movie song news score game password login email "
         "phone address payment loan insurance doctor garden coffee window river mountain yellow purple quiet "
         "storm winter summer autumn spring bicycle ladder pencil castle violin rocket island forest desert "
         "lantern marble harbor canyon").split()


def sentences(rng, n, tag):
    """n distinct sentences that no filter takes for one another."""
    return [" ".join(rng.sample(WORDS, 6)) + f" {tag}{i}" for i in range(n)]


def without_ids(lines):
    return [{k: v for k, v in line.items() if k != "id"} for line in lines]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def export_order(lines):
    """The order cogpipe export writes: intent, then text (code points, as
    UTF-8 bytes sort), then id."""
    return sorted(lines, key=lambda d: (d["intent"], d["text"], d.get("id", "")))


class Platform:
    """A strict emulator, a working directory and the cogpipe commands."""

    def __init__(self, work):
        self.emu = Emulator("--strict", "--seed", "16")
        self.dir = tempfile.mkdtemp(prefix="data-", dir=work)
        self.state_dir = os.path.join(self.dir, "state")

    def stop(self):
        self.emu.stop()

    def path(self, name):
        return os.path.join(self.dir, name)

    def tenant(self, name="t1", **kw):
        path = self.path(name + ".lua")
        with open(path, "w") as f:
            f.write(conformance.tenant_lua(name, **kw))
        return path

    def cogpipe(self, *args, url=None, timeout=600):
        env = dict(os.environ, COGPIPE_EMULATOR_URL=url or self.emu.base)
        return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, env=env)

    def json_of(self, r):
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"no JSON summary (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")

    def run(self, pipeline, tenant, data, *args, command="run", url=None):
        r = self.cogpipe(command, pipeline, "--tenant", tenant, "--state-dir", self.state_dir, "--json",
                         "--no-progress", *args, "--", data, url=url)
        return r, self.json_of(r)

    def export(self, tenant, out, *args):
        r = self.cogpipe("export", "--tenant", tenant, "-o", out, "--json", "--state-dir", self.state_dir,
                         "--no-progress", *args)
        return r, self.json_of(r)

    def undo(self, run_id, tenant, *args):
        r = self.cogpipe("undo", run_id, "--tenant", tenant, "--state-dir", self.state_dir, "--json",
                         "--no-progress", *args)
        return r, self.json_of(r)

    def seed(self, spec):
        self.emu.control("POST", "seed", spec)

    def state(self):
        return self.emu.control("GET", "state?lines=0")

    def held(self, flow=FLOW):
        """What the flow holds: sorted (intent, text, slots, locale)."""
        out = []
        for iid, v in self.state()["flows"].get(flow, {"intents": {}})["intents"].items():
            for s in v["sentences"]:
                out.append((iid, s["text"], json.dumps(s["slots"], sort_keys=True), s["localeReference"]))
        return sorted(out)

    def sentence_docs(self, flow=FLOW):
        return {s["_id"]: (iid, s) for iid, v in self.state()["flows"][flow]["intents"].items()
                for s in v["sentences"]}

    def examples(self):
        out = []
        for iid, v in self.state()["intents"].items():
            for e in v["examples"]:
                out.append((iid, e["text"], json.dumps(e["annotations"], sort_keys=True)))
        return sorted(out)


class Base(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="cogpipe-data-")
        self.p = Platform(self.work)
        self.rng = random.Random(self.id())

    def tearDown(self):
        self.p.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def ok(self, r, summary=None):
        detail = json.dumps((summary or {}).get("tenants", [{}])[0].get("errors", []) if summary else "")
        self.assertEqual(r.returncode, 0, r.stderr[-3000:] + detail)

    def seed_flow(self, per_intent, intents, tag="s"):
        spec, n = {}, 0
        for intent in intents:
            spec[intent] = [{"text": t, "slots": []} for t in sentences(self.rng, per_intent, f"{tag}{n}-")]
            n += 1
        self.p.seed({"v2": {FLOW: spec}})
        return spec


# ---- export -> edit -> plan -> run -> export --------------------------------------


def comparable_plan(summary):
    t = summary["tenants"][0]
    keep = ("status", "errors", "submitted", "accepted", "present", "rejected_by_reason", "intents", "changes",
            "rejections", "left_out", "prune", "would_send")
    return {k: t.get(k) for k in keep}


class RoundTrip(Base):
    def test_v2_export_edit_plan_offline_run_export(self):
        p = self.p
        seeded = self.seed_flow(20, ["billing", "greeting", "travel", "weather"])
        # a sentence with slots survives the round trip
        p.seed({"v2": {FLOW: {"travel": [{"text": "book 2 seats to lima", "slots": [
            {"start": 5, "end": 6, "name": "count"}]}]}}})
        t = p.tenant()
        exported = p.path("export.jsonl")
        r, info = p.export(t, exported)
        self.ok(r)
        lines = read_jsonl(exported)
        self.assertEqual((info["sentences"], info["intents"]), (81, 4))
        self.assertEqual(lines, export_order(lines), "not in the stable order")
        with open(exported, encoding="utf-8") as f:
            first = f.readline()
        self.assertTrue(first.startswith('{"intent":"billing","text":'), first)
        self.assertEqual(list(json.loads(first)), ["intent", "text", "id", "slots", "locale"])
        self.assertEqual(sorted((d["intent"], d["text"]) for d in lines),
                         sorted([(i, s["text"]) for i, ss in seeded.items() for s in ss] +
                                [("travel", "book 2 seats to lima")]))
        self.assertEqual(next(d for d in lines if d["text"] == "book 2 seats to lima")["slots"],
                         [{"start": 5, "end": 6, "name": "count"}])

        # the edit: one sentence less in three intents, one changed, four new (one with slots)
        edited = [d for d in lines if d["text"] not in
                  (seeded["billing"][3]["text"], seeded["greeting"][7]["text"], seeded["weather"][0]["text"])]
        changed = next(d for d in edited if d["text"] == seeded["travel"][5]["text"])
        changed["text"] = "reroute my trip through the harbor at dawn please"
        added = sentences(self.rng, 4, "new")
        for intent, text in zip(["billing", "greeting", "weather", "weather"], added):
            edited.append({"intent": intent, "text": text, "slots": [], "locale": "en-US"})
        edited.append({"intent": "travel", "text": "fly 3 people to oslo", "slots": [
            {"end": 5, "name": "count", "start": 4}], "locale": "en-US"})
        edited = export_order(edited)
        edit_path = p.path("edited.jsonl")
        write_jsonl(edit_path, edited)

        before = p.held()
        seen = len(p.emu.requests())
        r, online = p.run(V2, t, edit_path, "--prune", command="plan")
        self.ok(r, online)
        # offline: the export as the platform, and no platform at all
        r, offline = p.run(V2, t, edit_path, "--prune", "--snapshot", exported, command="plan", url=NOWHERE)
        self.ok(r, offline)
        self.assertEqual(offline["tenants"][0]["requests"], 0)
        self.assertEqual(comparable_plan(offline), comparable_plan(online))
        plan = online["tenants"][0]
        self.assertEqual(sum(len(c["add"]) for c in plan["changes"]), 6)
        self.assertEqual(sum(len(c["prune"]) for c in plan["changes"]), 4)
        writes = [q for q in p.emu.requests()[seen:] if q["method"] in ("PATCH", "POST")
                  and q["path"].startswith("/new/v2.0/")]
        self.assertEqual(writes, [], "a plan wrote to the platform")
        self.assertEqual(p.held(), before)

        # the run does exactly what the plan said
        r, summary = p.run(V2, t, edit_path, "--prune")
        self.ok(r, summary)
        want = {(i, txt) for i, txt, _, _ in before}
        for c in plan["changes"]:
            want -= {(c["intent"], x["text"]) for x in c["prune"]}
            want |= {(c["intent"], x) for x in c["add"]}
        got = [(i, txt) for i, txt, _, _ in p.held()]
        self.assertEqual(len(got), len(set(got)), "stored twice")
        self.assertEqual(set(got), want)

        # and the platform now holds the edited file
        again = p.path("again.jsonl")
        r, _ = p.export(t, again)
        self.ok(r)
        self.assertEqual(without_ids(read_jsonl(again)), without_ids(edited))

    def test_intent_api_export_edit_run_export(self):
        p = self.p
        names = ["alpha", "beta", "gamma"]
        spec = {n: [{"text": txt} for txt in sentences(self.rng, 12, n)] for n in names}
        spec["beta"].append({"text": "call mom at 5", "annotations": [{"entity_id": "time", "start": 12, "end": 13}]})
        p.seed({"intents": spec})
        t = p.tenant("t1", v2="nil", intent_ids="{ alpha = 'alpha', beta = 'beta', gamma = 'gamma' }")
        exported = p.path("export.jsonl")
        r, info = p.export(t, exported)
        self.ok(r)
        self.assertEqual((info["sentences"], info["intents"]), (37, 3))
        lines = read_jsonl(exported)
        self.assertEqual(lines, export_order(lines))
        self.assertEqual(list(lines[0]), ["intent", "text", "id", "annotations"])
        edited = list(lines)
        for intent, text in zip(names, sentences(self.rng, 3, "more")):
            edited.append({"intent": intent, "text": text, "annotations": []})
        edited.append({"intent": "gamma", "text": "wake me at 7", "annotations": [
            {"end": 12, "entity_id": "time", "start": 11}]})
        edited = export_order(edited)
        edit_path = p.path("edited.jsonl")
        write_jsonl(edit_path, edited)
        r, online = p.run(INTENTS, t, edit_path, command="plan")
        self.ok(r, online)
        r, offline = p.run(INTENTS, t, edit_path, "--snapshot", exported, command="plan", url=NOWHERE)
        self.ok(r, offline)
        self.assertEqual(offline["tenants"][0]["requests"], 0)
        self.assertEqual(comparable_plan(offline), comparable_plan(online))
        r, summary = p.run(INTENTS, t, edit_path)
        self.ok(r, summary)
        self.assertEqual(summary["tenants"][0]["uploaded"], 4)
        self.assertEqual(sorted((c["intent"], x) for c in online["tenants"][0]["changes"] for x in c["add"]),
                         sorted((d["intent"], d["text"]) for d in edited if "id" not in d))
        again = p.path("again.jsonl")
        r, _ = p.export(t, again)
        self.ok(r)
        self.assertEqual(without_ids(read_jsonl(again)), without_ids(edited))
        self.assertEqual(len(p.examples()), 41)

        # this API has no delete: a prune is refused before anything is sent
        seen = len(p.emu.requests())
        r, summary = p.run(INTENTS, t, exported, "--prune")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("intent example batch API has no delete", summary["tenants"][0]["errors"][0])
        self.assertEqual([q for q in p.emu.requests()[seen:] if q["method"] == "POST" and "batch" in q["path"]], [])
        self.assertEqual(len(p.examples()), 41)


    def test_bad_snapshots_and_options_name_where_and_why(self):
        p = self.p
        t = p.tenant()
        data = p.path("source.jsonl")
        write_jsonl(data, [{"intent": "alpha", "text": "one two three"}])
        snap = p.path("snap.jsonl")
        with open(snap, "w") as f:
            f.write('{"intent":"alpha","text":"fine","id":"1","slots":[]}\n\n{"intent":"alpha","slots":[]}\n')
        cases = [
            (["plan", V2, "--tenant", t, "--snapshot", snap, "--", data], f"{snap}:3: \"text\" must be a string"),
            (["plan", V2, "--tenant", t, "--snapshot", p.path("none.jsonl"), "--", data], "none.jsonl"),
            (["run", V2, "--tenant", t, "--snapshot", snap, "--", data], "--snapshot plans from an export"),
            (["run", V2, "--tenant", t, "--prune-max", "150", "--prune", "--", data], "'150' is not a percentage"),
            (["run", V2, "--tenant", t, "--prune-allow", "alpha", "--", data], "go with --prune"),
            (["undo", "--tenant", t], "the id of the run to undo is required"),
            (["export", "--tenant", t, "--json"], "--json goes with -o FILE"),
        ]
        for args, message in cases:
            r = p.cogpipe(*args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertIn(message, r.stderr, args)
        self.assertEqual([q for q in p.emu.requests() if q["path"].startswith("/new/v2.0/")], [])


# ---- prune ---------------------------------------------------------------------------


class Prune(Base):
    def test_deletes_exactly_the_missing_and_refuses_above_the_threshold(self):
        p = self.p
        seeded = self.seed_flow(20, ["alpha", "beta"])
        p.seed({"v2": {FLOW: {"gamma": [{"text": t, "slots": [{"name": "n"}]} for t in sentences(
            self.rng, 3, "g")]}}})
        t = p.tenant()
        gone = {("alpha", s["text"]) for s in seeded["alpha"][:5]}
        source = [{"intent": i, "text": s["text"]} for i, ss in seeded.items() for s in ss if (i, s["text"]) not in gone]
        data = p.path("source.jsonl")
        write_jsonl(data, source)
        before = p.held()

        # alpha would lose 25 %, gamma (not in the source) would be emptied
        for args in ([], ["--prune-max", "30"], ["--prune-allow", "gamma"]):
            seen = len(p.emu.requests())
            r, summary = p.run(V2, t, data, "--prune", *args)
            self.assertEqual(r.returncode, 2, r.stderr)
            errors = " ".join(summary["tenants"][0]["errors"])
            self.assertIn("prune refused", errors)
            if "--prune-allow" not in args:
                self.assertIn("intent gamma would be emptied", errors)
            if "--prune-max" not in args:
                self.assertIn("intent alpha would lose 5 of 20 sentences (25.0%)", errors)
            self.assertEqual([q for q in p.emu.requests()[seen:] if q["method"] == "PATCH"], [])
            self.assertEqual(p.held(), before)

        audit = p.path("audit.jsonl")
        r, summary = p.run(V2, t, data, "--prune", "--prune-max", "30", "--prune-allow", "gamma", "--audit", audit)
        self.ok(r, summary)
        deleted = {(i, txt) for i, txt, _, _ in before} - {(i, txt) for i, txt, _, _ in p.held()}
        self.assertEqual(deleted, gone | {("gamma", txt) for i, txt, _, _ in before if i == "gamma"})
        self.assertEqual(len(p.held()), len(before) - 8)
        self.assertEqual(summary["tenants"][0]["prune"]["pruned"], 8)

        # every deleted sentence, text and slots, in the audit log and the
        # journal, the audit record written before its request arrived
        records = read_jsonl(audit)
        pruned = {(e["intent"], s["text"], json.dumps(s["slots"], sort_keys=True)): e["ts"]
                  for e in records if e["event"] == "prune" for s in e["sentences"]}
        self.assertEqual({(i, txt, sl) for i, txt, sl, _ in before if (i, txt) in deleted}, set(pruned))
        deletes = [q for q in p.emu.requests() if q["method"] == "PATCH" and q["status"] == 200]
        first_delete = min(q["wall"] for q in deletes)
        for ts in pruned.values():
            self.assertLessEqual(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp(), first_delete + 0.001)
        journal = os.path.join(p.state_dir, "journal", "t1", "cognigy_v2_sentences.jsonl")
        changes = [rec for rec in read_jsonl(journal) if rec.get("op") == "change" and rec["kind"] == "delete"]
        self.assertEqual({(c["intent"], s["text"]) for c in changes for s in c["sentences"]}, deleted)
        self.assertTrue(all("id" in s and "slots" in s for c in changes for s in c["sentences"]))
        r = p.cogpipe("audit", "verify", audit)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


# ---- undo ----------------------------------------------------------------------------------


class Undo(Base):
    def test_undo_of_500_created_and_50_pruned_restores_the_previous_state(self):
        p = self.p
        intents = [f"topic_{i}" for i in range(10)]
        seeded = self.seed_flow(60, intents)
        p.seed({"v2": {FLOW: {"topic_0": [{"text": "send 4 roses to ana", "slots": [
            {"start": 5, "end": 6, "name": "count"}]}]}}})
        t = p.tenant()
        previous = p.held()
        source = []
        new = sentences(self.rng, 500, "n")
        for n, intent in enumerate(intents):
            source += [{"intent": intent, "text": s["text"]} for s in seeded[intent][5:]]
            source += [{"intent": intent, "text": txt} for txt in new[n * 50:(n + 1) * 50]]
        source.append({"intent": "topic_0", "text": "send 4 roses to ana"})
        data = p.path("source.jsonl")
        write_jsonl(data, source)
        # some requests take effect and lose their answer: the journal says
        # so, and the run reconciles them by reading
        p.emu.control("POST", "faults", {"faults": [{"match": {"method": "PATCH"}, "action": "reset_after_body",
                                                     "every": 4}]})
        r, summary = p.run(V2, t, data, "--prune")
        self.ok(r, summary)
        self.assertGreater(p.emu.control("GET", "faults")["faults"][0]["fired"], 0)
        p.emu.control("DELETE", "faults")
        run_id = summary["run_id"]
        after = p.held()
        self.assertEqual(len(after), len(previous) + 500 - 50)
        self.assertEqual(len({(i, txt) for i, txt, _, _ in after} - {(i, txt) for i, txt, _, _ in previous}), 500)

        r, undo = p.undo(run_id, t)
        self.ok(r)
        self.assertEqual((undo["status"], undo["deleted"], undo["recreated"]), ("ok", 500, 50))
        self.assertEqual(p.held(), previous, "not the state before the run")
        # done once: a second undo of the same run is refused
        r = p.cogpipe("undo", run_id, "--tenant", t, "--state-dir", p.state_dir)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("undone already", r.stderr)

    def test_undo_after_an_edit_on_the_platform_refuses_and_names_the_sentence(self):
        p = self.p
        seeded = self.seed_flow(20, ["alpha"])
        t = p.tenant()
        new = sentences(self.rng, 3, "n")
        data = p.path("source.jsonl")
        write_jsonl(data, [{"intent": "alpha", "text": s["text"]} for s in seeded["alpha"]] +
                    [{"intent": "alpha", "text": txt} for txt in new])
        r, summary = p.run(V2, t, data)
        self.ok(r, summary)
        docs = p.sentence_docs()
        target = next(sid for sid, (_, s) in docs.items() if s["text"] == new[1])
        # someone edits a sentence the run created
        req = urllib.request.Request(
            p.emu.base + f"/new/v2.0/flows/{FLOW}/intents/alpha/sentences", method="PATCH",
            data=json.dumps({"operations": [{"op": "update", "value": {"_id": target, "text": "edited by hand"}}]})
            .encode(), headers={"Content-Type": "application/json", "X-API-Key": "sandbox-api-key"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.assertEqual(resp.status, 200)
        before = p.held()
        seen = len(p.emu.requests())
        r, undo = p.undo(summary["run_id"], t)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(undo["status"], "refused")
        message = " ".join(undo["errors"])
        self.assertIn(f'"{new[1]}" (id {target})', message)
        self.assertIn('edited on the platform since: it is now "edited by hand"', message)
        self.assertEqual(p.held(), before, "changed the platform although refused")
        self.assertEqual([q for q in p.emu.requests()[seen:] if q["method"] == "PATCH"], [])

    def test_runs_of_apis_without_delete_are_refused(self):
        p = self.p
        t = p.tenant("t1")
        r, summary = p.run(INTENTS, t, os.path.join(PIPELINES, "data", "sample_intents.jsonl"))
        self.ok(r, summary)
        r = p.cogpipe("undo", summary["run_id"], "--tenant", t, "--state-dir", p.state_dir)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("intent example batch API", r.stderr)
        self.assertIn("no delete", r.stderr)
        r = p.cogpipe("undo", "01234567-89ab-7def-8123-456789abcdef", "--tenant", t, "--state-dir", p.state_dir)
        self.assertEqual(r.returncode, 2)
        self.assertIn("records run 01234567-89ab-7def-8123-456789abcdef", r.stderr)


# ---- read-back ----------------------------------------------------------------------------------


class ReadBack(Base):
    def check_lossy(self, pipeline, t, held_texts, write_path):
        p = self.p
        data = p.path("source.jsonl")
        texts = {f"intent_{i}": sentences(self.rng, 100, f"r{i}-") for i in range(3)}
        write_jsonl(data, [{"intent": i, "text": txt} for i, ts in texts.items() for txt in ts])
        p.emu.control("POST", "faults", {"faults": [{"match": {"path": write_path}, "action": "drop_creates"}]})
        r, summary = p.run(pipeline, t, data)
        self.assertEqual(r.returncode, 1, r.stderr)
        tenant = summary["tenants"][0]
        self.assertEqual(tenant["status"], "failed")
        dropped = p.emu.control("GET", "faults")["faults"][0]["dropped"]
        self.assertEqual(dropped, 3)
        held = held_texts()
        missing = {(i, txt) for i, ts in texts.items() for txt in ts} - held
        self.assertEqual(len(missing), 3)
        reported = {(rb["intent"], txt) for rb in tenant["read_back"] for txt in rb["missing"]}
        self.assertEqual(reported, missing)
        for rb in tenant["read_back"]:
            self.assertEqual(rb["held"], rb["sent"] - len(rb["missing"]))
        errors = " ".join(tenant["errors"])
        for intent, txt in missing:
            self.assertIn(txt, errors)
        self.assertRegex(errors, r"platform holds 9\d of 100 sent")
        # the next run, on a platform that keeps everything, sends what was lost
        p.emu.control("DELETE", "faults")
        r, summary = p.run(pipeline, t, data)
        self.ok(r, summary)
        self.assertEqual(summary["tenants"][0]["uploaded"], 3)
        self.assertEqual(held_texts(), {(i, txt) for i, ts in texts.items() for txt in ts})
        return tenant

    def test_v2_platform_that_drops_1_sentence_in_100(self):
        p = self.p
        t = p.tenant()
        tenant = self.check_lossy(V2, t, lambda: {(i, txt) for i, txt, _, _ in p.held()}, "/sentences$")
        self.assertEqual(tenant["training"]["status"], "skipped")

    def test_intent_api_platform_that_drops_1_example_in_100(self):
        p = self.p
        t = p.tenant()
        self.check_lossy(INTENTS, t, lambda: {(i, txt) for i, txt, _ in p.examples()}, "/examples/batch$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
