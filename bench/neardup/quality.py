#!/usr/bin/env python3
"""Near-duplicate quality: precision and recall of cp.near on rewrites of
real utterances (the CLINC150-derived set of tests/e2e/rewrite_set.py,
generated afresh from ../shared, never stored), per threshold, for single
and stacked rewrites -- the table of docs/near-and-semantic-dedupe.md.

A pair the index reports is true when it is a (source, rewrite) pair of the
set; every other pair it reports is a false positive (the set's texts are
otherwise different examples: see rewrite_set.distinct). Recall is the part
of the set's true pairs reported. With --base, a second cogpipe (a build of
an older commit) is measured in the same run, for a before/after table.

usage: bench/neardup/quality.py [--bin build/plain/cogpipe] [--base OTHER]
       [--shared DIR] [--seed 18] [--thresholds 0.5,0.55,...] [--misses]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("COGPIPE_SOURCE_DIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
import rewrite_set  # noqa: E402

THRESHOLDS = "0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9"


def found_pairs(binary, path, thresholds):
    """{threshold: {frozenset((id, id)): score}} as cogpipe finds them, and the
    build's default threshold ("default" comes last among thresholds)."""
    r = subprocess.run([binary, "run", os.path.join(HERE, "quality.lua"), "--", path, *thresholds],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        sys.exit("cogpipe failed:\n" + r.stderr)
    out, default = {}, None
    for line in r.stdout.splitlines():
        doc = json.loads(line)
        out[doc["threshold"]] = {frozenset(p[:2]): p[2] for p in doc["pairs"]}
        default = doc["threshold"]
    return out, default


def score(found, truth):
    """(precision, recall, true positives, false positives) of found pairs."""
    true = {frozenset(p[:2]) for p in truth["pairs"]}
    tp = len(true & set(found))
    fp = len(found) - tp
    return (tp / len(found) if found else 1.0), tp / len(true), tp, fp


def misses(found, truth):
    """True pairs not found, counted by rewrite kind (a stacked pair counts
    for each of its kinds)."""
    out = {}
    for a, b, kinds in truth["pairs"]:
        if frozenset((a, b)) not in found:
            for kind in kinds.split("+"):
                out[kind] = out.get(kind, 0) + 1
    return out


def measure(binary, tmp, sets, thresholds):
    rows, default = {}, None
    for name, (_, truth) in sets.items():
        got, default = found_pairs(binary, os.path.join(tmp, name + ".jsonl"), thresholds)
        rows[name] = {t: (score(f, truth), f) for t, f in got.items()}
    return rows, default


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("COGPIPE_BIN", "build/plain/cogpipe"))
    ap.add_argument("--base", help="another cogpipe to measure in the same run (before)")
    ap.add_argument("--shared", default=os.environ.get("COGPIPE_SHARED_DIR", os.path.join(SRC, "..", "shared")))
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--thresholds", default=THRESHOLDS)
    ap.add_argument("--misses", action="store_true", help="also count the missed pairs by rewrite kind")
    a = ap.parse_args()
    thresholds = a.thresholds.split(",") + ["default"]
    sets = rewrite_set.build(a.shared, a.seed)
    with tempfile.TemporaryDirectory(prefix="cogpipe-near-quality-") as tmp:
        rewrite_set.write(tmp, sets)
        builds = [("after", a.bin)] + ([("before", a.base)] if a.base else [])
        results = {label: measure(binary, tmp, sets, thresholds) for label, binary in builds}
    n = {name: len(t["pairs"]) for name, (_, t) in sets.items()}
    print(f"seed {a.seed}: {n['single']} single and {n['stacked']} stacked rewrite pairs, "
          f"{len(sets['single'][1]['negatives'])} same-intent negative pairs in each set")
    for label, (rows, default) in results.items():
        print(f"\n{label} ({dict(builds)[label]}, default threshold {default:g}):\n")
        print("| threshold | precision / recall, single | precision / recall, stacked |")
        print("|---|---|---|")
        for t in sorted(rows["single"]):
            cells = []
            for name in ("single", "stacked"):
                (p, r, tp, fp), _ = rows[name][t]
                cells.append(f"{p * 100:.1f}% / {r * 100:.1f}% ({fp} false)")
            mark = " (default)" if t == default else ""
            print(f"| {t:g}{mark} | {cells[0]} | {cells[1]} |")
        if a.misses:
            for name in ("single", "stacked"):
                m = misses(rows[name][default][1], sets[name][1])
                print(f"\nmissed {name} pairs at {default:g}, by kind: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(m.items(), key=lambda x: -x[1])))


if __name__ == "__main__":
    main()
