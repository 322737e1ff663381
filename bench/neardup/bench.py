#!/usr/bin/env python3
"""Near-duplicate benchmark: the near-duplicate pass over the ~50 MiB
utterance corpus of ../shared/bench/gen_corpus.py (766,046 lines built from
CLINC150, with repeats, case and spacing variants and blank lines), this
build against another one (--base: a build of an older commit) in the same
run.

Runs neardup.lua with each cogpipe binary: reads every line, adds the
non-blank ones to a cp.near index with that build's defaults (threshold,
features, permutations, bands), then finds each line's nearest earlier
near-duplicate (true Jaccard >= the threshold). Rounds alternate between the
builds; each side's median time end to end (reading included) is compared,
and the ratio base time / this time is printed (>= 1.0: no slower). A
benchmark, not a test. Build cogpipe without sanitizers, e.g.

  cmake -S . -B build/plain -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build/plain -j2
  git worktree add /tmp/base <commit> && cmake -S /tmp/base -B /tmp/base/build ... (the same)

usage: bench/neardup/bench.py [--bin build/plain/cogpipe] [--base OTHER]
       [--corpus FILE] [--shared DIR] [--rounds 3] [--threshold T]
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


def run(binary, corpus, threshold):
    args = [binary, "run", os.path.join(HERE, "neardup.lua"), "--", corpus]
    if threshold is not None:
        args.append(str(threshold))
    r = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"{binary} failed:\n" + r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def report(label, binary, runs, size):
    med = statistics.median(x["total_s"] for x in runs)
    last = runs[-1]
    print(f"{label} ({binary}): threshold {last.get('threshold', 0.8):g}, "
          f"{last.get('perms', 128)} permutations")
    print(f"  {last['texts']} non-blank lines, {last['distinct_forms']} distinct forms; "
          f"{last['with_earlier_near_duplicate']} have an earlier near-duplicate "
          f"({last['of_which_same_form']} with the same form, {last['of_which_below_1']} below 1.0)")
    print(f"  median of {len(runs)}: {med:.2f} s = {last['lines'] / med:,.0f} lines/s, "
          f"{size / med / 2**20:.1f} MiB/s (read+add {last['read_and_add_s']:.2f} s, "
          f"find {last['find_s']:.2f} s in the last run)")
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("COGPIPE_BIN", "build/plain/cogpipe"))
    ap.add_argument("--base", help="another cogpipe (an older build) to compare with in the same run")
    ap.add_argument("--corpus", help="an utterance file (default: generate the 50 MiB corpus)")
    src = os.environ.get("COGPIPE_SOURCE_DIR", os.path.join(HERE, "..", ".."))
    ap.add_argument("--shared", default=os.environ.get("COGPIPE_SHARED_DIR", os.path.join(src, "..", "shared")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threshold", type=float, help="the same threshold for both (default: each build's own)")
    a = ap.parse_args()
    for b in [a.bin] + ([a.base] if a.base else []):
        if not os.path.exists(b):
            sys.exit(f"bench: no cogpipe binary at {b}")

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
        size = os.path.getsize(corpus)
        runs, base_runs = [], []
        for _ in range(a.rounds):
            runs.append(run(a.bin, corpus, a.threshold))
            if a.base:
                base_runs.append(run(a.base, corpus, a.threshold))
        print(f"near-duplicates over {runs[-1]['lines']} lines ({size / 2**20:.1f} MiB):")
        med = report("this build", a.bin, runs, size)
        out = {"lines": runs[-1]["lines"], "median_s": med, "lines_per_s": runs[-1]["lines"] / med}
        if a.base:
            base_med = report("base", a.base, base_runs, size)
            out["base_median_s"] = base_med
            out["ratio"] = base_med / med
            print(f"ratio base time / this time: {base_med / med:.2f} (>= 1.0: no slower)")
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
