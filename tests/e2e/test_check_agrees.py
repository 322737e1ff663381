#!/usr/bin/env python3
"""`cogpipe check` says what a pipeline run rejects: on the same file, with
the same options, check and the run (a dry run, and an upload to the
emulator) give the same counts, the same rejected records for the same
reasons, the same rates -- and so do the progress bar and the webhook body.
Texts that differ only in case, width or spacing under two intents are
conflicts by default, shown as written with file:line on both sides; near
matches across intents are ambiguous, with the intents that overlap most;
an empty file has no rate; an unreachable embeddings server is a failure
(exit 1)."""
import json
import os
import pty
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402

SAMPLE = os.path.join(SRC, "pipelines", "data", "sample_intents.jsonl")
PIPELINES = os.path.join(SRC, "pipelines")
SANDBOX = os.path.join(PIPELINES, "tenants", "sandbox.lua")
MODEL = "emulator-embed-8"  # the sandbox tenant's embeddings, served by the emulator


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for text, intent in rows:
            f.write(json.dumps({"text": text, "intent": intent}, ensure_ascii=False) + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rejected_by_check(doc):
    """{(line, reason)} of every record check says a run rejects."""
    out = {(p["line"], "invalid") for p in doc["problem_list"]}
    for key, reason in (("duplicate_list", "duplicate"), ("conflict_list", "conflict"),
                        ("near_list", "near"), ("semantic_list", "semantic")):
        out |= {(x["line"], reason) for x in doc.get(key, [])}
    return out


class Agree(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-agree-")
        self.emu = Emulator()
        self.env = dict(os.environ, COGPIPE_EMULATOR_URL=self.emu.base, NO_COLOR="1",
                        COGPIPE_STATE_DIR=os.path.join(self.dir, "check-state"))

    def tearDown(self):
        self.emu.stop()
        shutil.rmtree(self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def check(self, *args, code=None):
        r = subprocess.run([BIN, "check", *args], capture_output=True, text=True, env=self.env, timeout=300)
        if code is not None:
            self.assertEqual(r.returncode, code, r.stderr + r.stdout[-2000:])
        return r

    def check_json(self, *args, code=None):
        r = self.check("--json", *args, code=code)
        return r.returncode, json.loads(r.stdout)

    def pipeline(self, data, steps):
        path = self.path("mine.lua")
        with open(path, "w") as f:
            f.write(f"""local pipeline = require "cogpipe.pipeline"
return pipeline.new {{
  name = "mine",
  source = pipeline.source {{ path = {json.dumps(data)} }},
  steps = {{ {steps} }},
  sink = pipeline.sink.intent_batches {{}},
}}
""")
        return path

    def dry_run(self, pipeline, *args):
        r = subprocess.run([BIN, "run", pipeline, "--tenant", SANDBOX, "--dry-run", "--json", "--no-progress",
                            "--state-dir", self.path("state"), *args], capture_output=True, text=True,
                           env=self.env, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["tenants"][0]

    def assert_same_counts(self, doc, t):
        for k in ("lines", "blank", "submitted", "accepted", "rejected", "unique", "parsing_success_rate",
                  "rates"):
            self.assertEqual(doc[k], t[k], k)
        for reason, n in doc["rejected_by_reason"].items():
            self.assertEqual(n, t["rejected_by_reason"][reason], reason)
        self.assertEqual(t["present"], 0)
        self.assertEqual(sum(doc["rejected_by_reason"].values()), t["rejected"])

    def test_check_and_runs_agree_on_the_sample(self):
        code, doc = self.check_json(SAMPLE, "--near", "--semantic", "--embeddings", self.emu.base,
                                    "--model", MODEL)
        self.assertEqual(code, 3)  # the sample has invalid records and a conflict
        self.assertEqual(doc["near_threshold"], 0.65)  # the pipelines' own
        with open(SAMPLE, "rb") as f:
            self.assertEqual(doc["lines"], sum(1 for _ in f))
        self.assertEqual(doc["lines"], doc["blank"] + doc["submitted"])
        self.assertEqual(doc["submitted"], doc["accepted"] + doc["rejected"])
        by = doc["rejected_by_reason"]
        for reason in ("invalid", "duplicate", "conflict", "near", "semantic"):
            self.assertGreater(by[reason], 0, reason)

        # the same file through the intent pipeline, sending nothing
        t = self.dry_run(os.path.join(PIPELINES, "intent_examples.lua"))
        self.assert_same_counts(doc, t)
        self.assertEqual(rejected_by_check(doc), {(r["line"], r["reason"]) for r in t["rejections"]})
        self.assertEqual(len(t["rejections"]), doc["rejected"])  # each record once, however many problems

        # the printed reports use the same words for the same numbers
        human = self.check(SAMPLE, "--near", "--semantic", "--embeddings", self.emu.base, "--model", MODEL).stdout
        self.assertIn(f"{doc['lines']} lines: {doc['blank']} blank, {doc['submitted']} submitted", human)
        self.assertIn(f"accepted {doc['accepted']}\n", human)
        printed = subprocess.run([BIN, "run", os.path.join(PIPELINES, "intent_examples.lua"), "--tenant", SANDBOX,
                                  "--dry-run", "--no-progress", "--state-dir", self.path("state")],
                                 capture_output=True, text=True, env=self.env, timeout=300).stdout
        self.assertIn(f"{doc['lines']} line(s): {doc['blank']} blank, {doc['submitted']} submitted; "
                      f"{doc['accepted']} accepted", printed)
        rates = re.search(r"valid [^\n]*", human).group(0)
        self.assertIn(rates, printed)

        # and uploading it: the progress bar, the summary and the webhook
        # body say the same
        cmd = [BIN, "run", os.path.join(PIPELINES, "intent_examples.lua"), "--tenant", SANDBOX, "--json",
               "--state-dir", self.path("state-up")]
        master, slave = pty.openpty()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=self.env)
        os.close(slave)
        bar = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            bar += chunk
        out = p.stdout.read()
        p.stdout.close()
        self.assertEqual(p.wait(timeout=300), 0, bar.decode(errors="replace")[-2000:])
        os.close(master)
        up = json.loads(out)["tenants"][0]
        self.assert_same_counts(doc, up)
        self.assertEqual(up["uploaded"], doc["accepted"])
        frames = re.findall(r"(\d+)/(\d+)\s+(submitted|accepted)", bar.decode(errors="replace"))
        self.assertTrue(frames, bar[-500:])
        self.assertEqual(frames[0], ("0", str(doc["submitted"]), "submitted"))
        self.assertEqual(frames[-1], (str(doc["accepted"]), str(doc["accepted"]), "accepted"))
        deliveries = self.emu.control("GET", "state?lines=0")["webhooks"]["sandbox"]["deliveries"]
        self.assertEqual(len(deliveries), 1)
        body = deliveries[0]["body"]
        for k in ("lines", "blank", "submitted", "accepted", "rejected", "rates"):
            self.assertEqual(body[k], doc[k], k)
        self.assertEqual(body["rejected_by_reason"], up["rejected_by_reason"])
        self.assertEqual(body["parsing_success_rate"], doc["parsing_success_rate"])
        # the dataset workflow's name for DESIGN 4.1's rate
        self.assertEqual(body["parsingSuccessRate"], doc["parsing_success_rate"])

    def test_case_width_and_space_variants_under_two_intents_are_conflicts(self):
        data = self.path("pin.jsonl")
        write_jsonl(data, [("PIN blocked", "card_blocked"),                   # 1
                           ("my card was swallowed", "card_blocked"),         # 2
                           ("pin  blocked", "account_locked"),                # 3: inner space
                           ("ＰＩＮ blocked", "security"),                     # 4: full width
                           (" Pin Blocked ", "card_blocked")])                # 5: case and ends
        code, doc = self.check_json(data, code=3)
        self.assertEqual((doc["conflicts"], doc["duplicates"], doc["accepted"]), (4, 0, 1))
        got = [(c["line"], c["text"], c["intent"], c["other_file"], c["other_line"], c["other_text"],
                c["other_intent"]) for c in doc["conflict_list"]]
        self.assertEqual(got, [
            (1, "PIN blocked", "card_blocked", data, 3, "pin  blocked", "account_locked"),
            (3, "pin  blocked", "account_locked", data, 1, "PIN blocked", "card_blocked"),
            (4, "ＰＩＮ blocked", "security", data, 1, "PIN blocked", "card_blocked"),
            (5, " Pin Blocked ", "card_blocked", data, 3, "pin  blocked", "account_locked"),
        ])
        for c in doc["conflict_list"]:
            self.assertEqual(c["file"], data)
        human = self.check(data, code=3).stdout
        self.assertIn(f'pin.jsonl:4: "ＰＩＮ blocked" is intent "security" here but "card_blocked" at {data}:1: '
                      '"PIN blocked"', human)
        self.assertNotIn('"pin blocked"', human)  # never the normalised key
        # a pipeline rejects the same four
        t = self.dry_run(self.pipeline(data, 'pipeline.normalize "collapse", pipeline.validate {}, '
                                             'pipeline.exact { key = "casefold" }'))
        self.assertEqual(sorted(r["line"] for r in t["rejections"] if r["reason"] == "conflict"), [1, 3, 4, 5])
        self.assert_same_counts(doc, t)
        # compared only after trim, they are four texts of their own
        code, doc = self.check_json("--normalize", "trim", data, code=0)
        self.assertEqual(doc["conflicts"], 0)

    def test_near_matches_across_intents_are_ambiguous(self):
        data = self.path("overlap.jsonl")
        write_jsonl(data, [
            ("how much money is in my checking account", "check_balance"),          # 1
            ("book a table for two", "restaurant"),                                 # 2
            ("how much money is in my checking account please", "transfer"),        # 3: ~ line 1
            ("move money from my checking account to savings", "transfer"),         # 4
            ("Move money from my checking account to savings now", "check_balance"),  # 5: ~ line 4
            ("what's the balance of my savings account", "check_balance"),          # 6
            ("what is the balance of my savings account?", "transfer"),             # 7: same near form as 6
            ("book a table for two please", "check_balance"),                       # 8: ~ line 2
            ("play some jazz in the kitchen", "music"),                             # 9
            ("play some jazz in the kitchen now", "music"),                         # 10: same intent
        ])
        code, doc = self.check_json(data, "--near", code=3)
        self.assertEqual(doc["ambiguous"], 4)
        pairs = doc["ambiguous_list"]
        self.assertEqual((pairs[0]["line"], pairs[0]["other_line"], pairs[0]["score"]), (7, 6, 1.0))
        self.assertEqual((pairs[0]["text"], pairs[0]["other_text"]),
                         ("what is the balance of my savings account?", "what's the balance of my savings account"))
        self.assertEqual((pairs[0]["intent"], pairs[0]["other_intent"]), ("transfer", "check_balance"))
        self.assertEqual((pairs[0]["file"], pairs[0]["other_file"]), (data, data))
        self.assertEqual(sorted(p["line"] for p in pairs), [3, 5, 7, 8])
        # the pipelines reject them as conflicts: so does check, with both lines
        near_conflicts = {c["line"]: c for c in doc["conflict_list"] if c["kind"] == "near"}
        self.assertEqual(sorted(near_conflicts), [3, 5, 7, 8])
        self.assertEqual((near_conflicts[5]["other_line"], near_conflicts[5]["other_text"]),
                         (4, "move money from my checking account to savings"))
        self.assertEqual([(x["line"], x["first_line"]) for x in doc["near_list"]], [(10, 9)])
        # the intent-level view: the pairs of intents whose examples overlap most
        overlap = doc["intent_overlap"]
        self.assertEqual([(o["intents"], o["pairs"]) for o in overlap],
                         [(["check_balance", "transfer"], 3), (["check_balance", "restaurant"], 1)])
        self.assertEqual(overlap[0]["closest"]["score"], 1.0)
        self.assertEqual(overlap[1]["closest"]["other_text"], "book a table for two")
        human = self.check(data, "--near", code=3).stdout
        self.assertIn("4 near or semantic match(es) across intents (ambiguous)", human)
        self.assertIn("check_balance / transfer: 3 pair(s); closest 1.00", human)
        self.assertIn(f'"what\'s the balance of my savings account" ({data}:6)', human)
        # computed one way: a run lists the same pairs and the same view
        t = self.dry_run(self.pipeline(data, 'pipeline.normalize "collapse", pipeline.exact { key = "casefold" }, '
                                             'pipeline.near {}'))
        self.assertEqual(t["ambiguous_list"], doc["ambiguous_list"])
        self.assertEqual(t["intent_overlap"], doc["intent_overlap"])
        self.assertEqual({(r["line"], r["reason"]) for r in t["rejections"]}, rejected_by_check(doc))

    def test_a_record_with_several_problems_is_one_invalid_record(self):
        data = self.path("bad.jsonl")
        with open(data, "w") as f:
            f.write(json.dumps({"text": "ok", "intent": "a",
                                "annotations": [{"entity_id": "", "start": 5, "end": 2}]}) + "\n")
            f.write(json.dumps({"text": "fine", "intent": "a"}) + "\n")
        code, doc = self.check_json(data, code=3)
        self.assertEqual((doc["problems"], doc["invalid"], doc["submitted"], doc["accepted"]), (3, 1, 2, 1))
        t = self.dry_run(self.pipeline(data, 'pipeline.normalize "collapse", pipeline.validate {}, '
                                             'pipeline.exact { key = "casefold" }'))
        self.assert_same_counts(doc, t)
        [bad] = t["rejections"]
        self.assertEqual((bad["line"], bad["reason"], len(bad["problems"])), (1, "invalid", 3))

    def test_empty_file_has_no_rate(self):
        data = self.path("empty.jsonl")
        open(data, "w").close()
        code, doc = self.check_json(data, code=0)
        self.assertEqual((doc["lines"], doc["submitted"], doc["accepted"]), (0, 0, 0))
        self.assertIsNone(doc["parsing_success_rate"])
        self.assertEqual(doc["rates"], {"valid": None, "unique": None, "accepted": None})
        self.assertIn("parsing success rate n/a", self.check(data, code=0).stdout)

    def test_only_duplicates_parse_in_full(self):
        data = self.path("same.txt")
        with open(data, "w") as f:
            f.write("book a flight\nBook a flight\nbook  a flight\nbook a flight\n")
        code, doc = self.check_json(data, code=0)
        self.assertEqual((doc["invalid"], doc["duplicates"], doc["unique"]), (0, 3, 1))
        # every line parsed: the rate a person reads as "parsed" is 100%
        self.assertEqual(doc["rates"]["valid"], 100.0)
        self.assertEqual(doc["rates"]["unique"], 25.0)
        self.assertEqual(doc["rates"]["accepted"], 25.0)
        # DESIGN 4.1's parsing success rate, as the dataset workflow reads it:
        # unique texts over all lines
        self.assertEqual(doc["parsing_success_rate"], 25.0)
        self.assertIn("valid 100.00% of submitted", self.check(data, code=0).stdout)

    def test_embeddings_failures(self):
        data = self.path("x.jsonl")
        write_jsonl(data, [("hello there", "greet"), ("good morning", "greet")])
        r = self.check(data, "--semantic", "--embeddings", f"http://127.0.0.1:{free_port()}", code=1)
        self.assertIn("embeddings", r.stderr)
        self.assertEqual(r.stdout, "")
        # a vectors file that is not there is the user's to fix
        r = self.check(data, "--semantic", "--embeddings", self.path("missing.jsonl"), code=2)
        self.assertIn("missing.jsonl", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
