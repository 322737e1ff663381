#!/usr/bin/env python3
"""Near-duplicate benchmark: MinHash near-dup over the ~50 MiB utterance
corpus of ../shared/bench/gen_corpus.py (766,046 lines built from CLINC150,
with repeats, case and spacing variants and blank lines).

Runs neardup.lua with the cogpipe binary: reads every line, adds the
non-blank ones to a cp.near index (threshold 0.8, 3-character shingles, 128
permutations, 18 bands x 7 rows), then finds each line's nearest earlier
near-duplicate (true Jaccard >= 0.8). Prints lines per second end to end
(reading included) and the counts, median of --rounds runs. A benchmark, not
a test. Build cogpipe without sanitizers (see bench/semantic/bench.py).

usage: bench/neardup/bench.py [--bin build-release/cogpipe] [--corpus FILE]
       [--shared DIR] [--rounds 3] [--threshold 0.8]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("COGPIPE_BIN", "build-release/cogpipe"))
    ap.add_argument("--corpus", help="an utterance file (default: generate the 50 MiB corpus)")
    src = os.environ.get("COGPIPE_SOURCE_DIR", os.path.join(HERE, "..", ".."))
    ap.add_argument("--shared", default=os.environ.get("COGPIPE_SHARED_DIR", os.path.join(src, "..", "shared")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.8)
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"bench: no cogpipe binary at {a.bin}")

    tmp = tempfile.mkdtemp(prefix="cogpipe-bench-near-")
    try:
        corpus = a.corpus
        if not corpus:
            gen = os.path.join(a.shared, "bench", "gen_corpus.py")
            if not os.path.exists(gen):
                sys.exit(f"bench: {gen} not found (give --corpus or --shared)")
            corpus = os.path.join(tmp, "corpus.txt")
            r = subprocess.run([sys.executable, gen, corpus], capture_output=True, text=True, check=True)
            print("corpus:", r.stdout.strip())
        runs = []
        for _ in range(a.rounds):
            r = subprocess.run([a.bin, "run", os.path.join(HERE, "neardup.lua"), "--", corpus, str(a.threshold)],
                               capture_output=True, text=True, timeout=1800)
            if r.returncode != 0:
                sys.exit("cogpipe failed:\n" + r.stderr)
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        med = statistics.median(x["total_s"] for x in runs)
        last = runs[-1]
        size = os.path.getsize(corpus)
        print(f"near-duplicates over {last['lines']} lines ({size / 2**20:.1f} MiB), threshold {a.threshold}:")
        print(f"  {last['texts']} non-blank lines, {last['distinct_forms']} distinct shingle forms")
        print(f"  {last['with_earlier_near_duplicate']} lines have an earlier near-duplicate "
              f"({last['of_which_same_form']} with the same form, {last['of_which_below_1']} below 1.0)")
        print(f"  median of {a.rounds}: {med:.2f} s = {last['lines'] / med:,.0f} lines/s, "
              f"{size / med / 2**20:.1f} MiB/s (read+add {last['read_and_add_s']:.2f} s, "
              f"find {last['find_s']:.2f} s in the last run)")
        print(json.dumps({"lines": last["lines"], "median_s": med, "lines_per_s": last["lines"] / med}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
