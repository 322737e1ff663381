#!/usr/bin/env python3
"""`cogpipe check` as a user runs it: the report and its JSON, each problem
kind with its place, JSON Lines and CSV input, duplicates and conflicts,
exit codes, and -- when ../shared is there -- the ~50 MiB corpus of
bench/gen_corpus.py, whose own reference counts must come out exactly."""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import unittest

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")
SRC = os.environ.get("COGPIPE_SOURCE_DIR", ".")
SHARED = os.environ.get("COGPIPE_SHARED_DIR", os.path.join(SRC, "..", "shared"))


def run(*args):
    return subprocess.run([BIN, "check", *args], capture_output=True, timeout=600)


def check_json(*args):
    p = run("--json", *args)
    if p.returncode not in (0, 3):
        raise AssertionError("exit %d: %s" % (p.returncode, p.stderr.decode()))
    return p.returncode, json.loads(p.stdout)


class Check(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-check-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def file(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path

    def test_counts_and_duplicates(self):
        path = self.file("u.txt", "hello\nbook a flight\n\n  hello \nHELLO\nbook a flight\n")
        # by default texts are compared as the pipelines compare them: casefolded
        code, r = check_json(path)
        self.assertEqual(code, 0)  # duplicates alone are not fatal
        self.assertEqual(r["normalize"], "casefold")
        self.assertEqual((r["lines"], r["blank"], r["blank_lines"], r["submitted"]), (6, 1, 1, 5))
        self.assertEqual((r["unique"], r["duplicates"], r["conflicts"], r["problems"]), (2, 3, 0, 0))
        self.assertEqual((r["rejected"], r["accepted"]), (3, 2))
        self.assertEqual(r["rejected_by_reason"], {"invalid": 0, "duplicate": 3, "conflict": 0})
        self.assertTrue(r["valid"])
        # DESIGN 4.1's rate: unique texts / all lines; the others beside it
        self.assertEqual(r["parsing_success_rate"], 33.33)
        self.assertEqual(r["rates"], {"valid": 100.0, "unique": 40.0, "accepted": 40.0})
        self.assertEqual([(d["line"], d["first_line"]) for d in r["duplicate_list"]], [(4, 1), (5, 1), (6, 2)])
        self.assertEqual(r["conflict_list"], [])
        code, r = check_json("--normalize", "trim", path)
        self.assertEqual((r["unique"], r["duplicates"]), (3, 2))
        self.assertEqual(r["parsing_success_rate"], 50.0)
        self.assertEqual(r["duplicate_list"][0],
                         {"file": path, "line": 4, "first_file": path, "first_line": 1, "text": "hello"})
        self.assertEqual(r["duplicate_list"][1]["first_line"], 2)
        code, r = check_json("--normalize=none", path)
        self.assertEqual(r["unique"], 4)
        human = run("--normalize", "trim", path)
        self.assertEqual(human.returncode, 0)
        out = human.stdout.decode()
        self.assertIn("6 lines: 1 blank, 5 submitted (5 valid, 0 invalid)", out)
        self.assertIn("rejected 2 (0 invalid, 2 duplicate, 0 conflict); accepted 3", out)
        self.assertIn("duplicates (2)", out)
        self.assertIn('u.txt:4: "hello" repeats line 1', out)
        self.assertIn("valid", out)

    def test_problem_kinds_located(self):
        data = b"".join([b"\xef\xbb\xbfstart\n",    # 1: BOM
                         b"ctl \x07 bell\n",        # 2: control at column 5
                         b"caf\xc3\xa9 \xff\n",      # 3: invalid UTF-8 at column 6
                         b"x" * 12 + b"\n",         # 4: too long at column 11
                         b"windows\r\n",            # 5: CR at column 8
                         b"a\tb\n"])
        path = self.file("p.txt", data)
        code, r = check_json("--max-chars", "10", path)
        self.assertEqual(code, 3)
        self.assertFalse(r["valid"])
        got = [(p["kind"], p["line"], p["column"], p["offset"]) for p in r["problem_list"]]
        self.assertEqual(got, [("bom", 1, 1, 0), ("control", 2, 5, 13), ("utf8", 3, 6, 26),
                               ("too_long", 4, 11, 38), ("control", 5, 8, 48)])
        self.assertEqual(r["problems"], 5)
        self.assertEqual(r["invalid"], 5)
        self.assertEqual(r["unique"], 1)
        human = run("--max-chars=10", path)
        self.assertIn("p.txt:2:5: control character U+0007 [control]", human.stdout.decode())
        # Reading stops at the limit: the lines past it are not checked.
        code, r = check_json("--max-bytes", "20", path)
        self.assertEqual(code, 3)
        self.assertEqual(r["lines"], 2)
        self.assertEqual(r["bytes"], len(data))
        self.assertEqual([p["kind"] for p in r["problem_list"]], ["bom", "control", "too_large"])
        big = r["problem_list"][2]
        self.assertEqual((big["line"], big["column"], big["offset"]), (3, 1, 20))
        self.assertIn("file is %d bytes; the limit is 20 bytes" % len(data), big["reason"])

    def test_jsonl_conflicts_and_problems(self):
        path = self.file("d.jsonl", "\n".join([
            json.dumps({"text": "book a flight", "intent": "travel"}),
            json.dumps({"text": "Book a flight ", "intent": "travel"}),
            json.dumps({"text": "book a flight", "intent": "flights"}),
            json.dumps({"text": "hi", "intent": "greet",
                        "annotations": [{"entity_id": "e", "start": 0, "end": 3}]}),
            '{"text": "broken"',
        ]) + "\n")
        code, r = check_json(path)
        self.assertEqual(code, 3)
        self.assertEqual(r["lines"], 5)
        # casefold: the three are one text under two intents, and every copy
        # is rejected as the pipelines reject it, the first one too
        self.assertEqual((r["conflicts"], r["duplicates"], r["invalid"]), (3, 0, 2))
        got = [(c["line"], c["intent"], c["text"], c["other_line"], c["other_intent"], c["other_text"], c["kind"])
               for c in r["conflict_list"]]
        self.assertEqual(got, [(1, "travel", "book a flight", 3, "flights", "book a flight", "exact"),
                               (2, "travel", "Book a flight ", 3, "flights", "book a flight", "exact"),
                               (3, "flights", "book a flight", 1, "travel", "book a flight", "exact")])
        self.assertEqual({(c["file"], c["other_file"]) for c in r["conflict_list"]}, {(path, path)})
        kinds = [(p["kind"], p["line"]) for p in r["problem_list"]]
        self.assertEqual(kinds, [("annotation", 4), ("syntax", 5)])
        out = run(path).stdout.decode()
        self.assertIn(f'd.jsonl:2: "Book a flight " is intent "travel" here but "flights" at {path}:3: '
                      '"book a flight"', out)
        # trim keeps case: line 2 is a text of its own
        code, r = check_json("--normalize", "trim", path)
        self.assertEqual((r["conflicts"], r["duplicates"]), (2, 0))
        self.assertEqual([c["line"] for c in r["conflict_list"]], [1, 3])

    def test_csv_quoting(self):
        path = self.file("d.csv", 'text,intent\n"hello, ""you""",greet\n"two\nlines",x\n'
                                  'hello,greet\n"hello, ""you""",other\nunclosed "q,x\n')
        code, r = check_json(path)
        self.assertEqual(code, 3)
        self.assertEqual(r["lines"], 5)
        self.assertEqual(r["conflicts"], 2)
        self.assertEqual([(c["line"], c["text"], c["other_line"]) for c in r["conflict_list"]],
                         [(2, 'hello, "you"', 6), (6, 'hello, "you"', 2)])
        probs = [(p["kind"], p["line"], p["column"]) for p in r["problem_list"]]
        self.assertEqual(probs, [("control", 3, 5), ("syntax", 7, 10)])
        # The format can be forced whatever the name.
        with open(path, "rb") as f:
            other = self.file("d.data", f.read())
        self.assertEqual(check_json("--format", "csv", other)[1]["conflicts"], 2)
        self.assertEqual(check_json(other)[1]["lines"], 7)  # as lines

    def test_several_files(self):
        a = self.file("a.txt", "one\ntwo\n")
        b = self.file("b.txt", "two\nthree\n")
        code, r = check_json(a, b)
        self.assertEqual(code, 0)
        self.assertEqual(r["files"], [a, b])
        d = r["duplicate_list"][0]
        self.assertEqual((d["file"], d["line"], d["first_file"], d["first_line"]), (b, 1, a, 2))
        self.assertIn("%s:1: \"two\" repeats %s:2" % (b, a), run(a, b).stdout.decode())

    def test_listing_cap(self):
        path = self.file("r.txt", "a\n" * 50)
        code, r = check_json("--max-listed", "3", path)
        self.assertEqual(r["duplicates"], 49)
        self.assertEqual(len(r["duplicate_list"]), 3)
        out = run(path).stdout.decode()
        self.assertIn("... and 29 more", out)

    def test_usage_errors(self):
        path = self.file("u.txt", "x\n")
        for args, needle in [((), "no file to check"),
                             (("--bogus", path), "unknown option '--bogus'"),
                             (("--normalize", "upper", path), "--normalize must be"),
                             (("--format", "xml", path), "--format must be"),
                             (("--max-chars", "-1", path), "non-negative"),
                             (("--max-bytes",), "non-negative"),
                             ((os.path.join(self.dir, "missing.txt"),), "No such file"),
                             ((self.dir,), "not a regular file but a directory"),
                             (("/dev/null",), "not a regular file but a character device")]:
            p = run(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(needle, p.stderr.decode(), args)
        p = run("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("usage: cogpipe check", p.stdout.decode())

    def test_against_python_reference(self):
        """A few MiB of random lines, counted independently."""
        rnd = random.Random(11)
        words = ["book", "a", "flight", "to", "Paris", "café", "STRASSE", "hello", "there", "cancel"]
        lines, size = [], 0
        while size < 6 << 20:
            k = rnd.random()
            if k < 0.03:
                lines.append("")
            elif k < 0.3 and lines:
                base = rnd.choice(lines[-5000:])
                lines.append(rnd.choice([base, base.upper(), "  " + base, base.replace(" ", "  ", 1)]))
            else:
                lines.append(" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 8)))
                             + " %d" % rnd.randint(0, 60000))
            size += len(lines[-1].encode()) + 1
        path = self.file("r.txt", "\n".join(lines) + "\n")
        trimmed = [x.strip() for x in lines]
        nonblank = [x for x in trimmed if x]
        folded = {unicodedata.normalize("NFKC", " ".join(x.split())).casefold() for x in nonblank}
        _, r = check_json("--normalize", "trim", path)
        self.assertEqual((r["lines"], r["blank_lines"], r["unique"]),
                         (len(lines), len(lines) - len(nonblank), len(set(nonblank))))
        self.assertEqual(r["duplicates"], len(nonblank) - len(set(nonblank)))
        _, r = check_json("--normalize", "casefold", path)
        self.assertEqual(r["unique"], len(folded))

    def test_shared_corpus(self):
        gen = os.path.join(SHARED, "bench", "gen_corpus.py")
        if not os.path.exists(os.path.join(SHARED, "data")) or not os.path.exists(gen):
            self.skipTest("no shared data beside the source (%s): corpus check skipped" % SHARED)
        out = os.path.join(self.dir, "corpus.txt")
        ref = json.loads(subprocess.run([sys.executable, gen, out], capture_output=True,
                                        check=True, timeout=600).stdout)
        code, r = check_json("--normalize", "trim", out)
        self.assertEqual(code, 0)
        self.assertEqual(r["lines"], ref["lines"])
        self.assertEqual(r["blank_lines"], ref["blank_lines"])
        self.assertEqual(r["unique"], ref["unique_trimmed"])
        self.assertEqual(r["bytes"], ref["bytes"])
        code, r = check_json("--normalize", "casefold", out)
        self.assertEqual(r["unique"], ref["unique_normalized"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
