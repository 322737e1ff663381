#!/usr/bin/env python3
"""`cogpipe check` against the usual shell answers to "how many unique
lines", on the same ~50 MiB corpus in the same run:

    cogpipe check --normalize trim     vs  LC_ALL=C sort -u  and  awk '!seen[$0]++'
    cogpipe check --normalize casefold vs  the trim mode

The corpus comes from the shared generator (gen_corpus.py), which also gives
the reference counts; cogpipe's counts are checked against them first, since
the figures are only worth comparing if it counted right. Each command then
runs ROUNDS times timed, on a warm page cache, in turns: a turn runs one
command TURN times back to back after one untimed run (what a user
re-running it sees), and the commands take turns until each has its
ROUNDS. Taking turns spreads a slow spell of the machine (a busy
neighbour on a shared host) over every command rather than over
whichever ran then, which would skew the ratios. Wall time is taken
around the child alone (fork to wait4) and the peak RSS from its own
rusage. The medians and the ratios against the targets are printed:
cogpipe >= 5x faster than sort -u, peak RSS <= 50 MiB, casefold <= 2x
trim. A benchmark, not a test: it asserts nothing and exits 0 unless
something could not run.

usage: bench/check/bench.py [--bin build/plain/cogpipe] [--rounds 11]
                            [--shared ../shared] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TURN = 1  # timed runs of a command in one turn
SRC = os.path.dirname(os.path.dirname(HERE))


def run_once(cmd, env):
    """Wall seconds and peak RSS (MiB) of one run of cmd, output discarded."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    # cogpipe check exits 3 when it finds a problem in the input, which is
    # a finding, not a failure of the run.
    if code not in ((0, 3) if "check" in cmd else (0,)):
        sys.exit("%s failed (%d): %s" % (" ".join(cmd), code, err))
    return wall, ru.ru_maxrss / 1024.0


def counts(bin_, corpus, mode):
    p = subprocess.run([bin_, "check", "--normalize", mode, "--json", corpus],
                       capture_output=True, text=True)
    if p.returncode not in (0, 3):
        sys.exit("cogpipe check failed (%d): %s" % (p.returncode, p.stderr))
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "cogpipe"),
                    help="the cogpipe to time (a release build, not a sanitizer one)")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--shared", default=os.path.join(SRC, "..", "shared"),
                    help="where bench/gen_corpus.py and data/ are")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    a = ap.parse_args()
    gen = os.path.join(a.shared, "bench", "gen_corpus.py")
    if not os.access(a.bin, os.X_OK):
        sys.exit("no cogpipe at %s (use --bin)" % a.bin)
    if not os.path.exists(gen):
        sys.exit("no corpus generator at %s (use --shared)" % gen)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        ref = json.loads(subprocess.run([sys.executable, gen, corpus], check=True,
                                        capture_output=True, text=True).stdout)
        with open(corpus, "rb") as f:  # warm the page cache for everyone alike
            while f.read(1 << 20):
                pass
        trim = counts(a.bin, corpus, "trim")
        fold = counts(a.bin, corpus, "casefold")
        got = (trim["lines"], trim["blank_lines"], trim["unique"], fold["unique"])
        want = (ref["lines"], ref["blank_lines"], ref["unique_trimmed"], ref["unique_normalized"])
        print("corpus: %d bytes, %d lines, %d blank, %d unique trimmed, %d unique casefolded"
              % ((ref["bytes"],) + want))
        print("cogpipe counts match the generator: %s" % ("yes" if got == want else "NO %r" % (got,)))

        env = dict(os.environ, LC_ALL="C")
        cmds = {
            "sort": ["sort", "-u", corpus],
            "awk": ["awk", "!seen[$0]++", corpus],
            "trim": [a.bin, "check", "--normalize", "trim", corpus],
            "casefold": [a.bin, "check", "--normalize", "casefold", corpus],
        }
        runs = {k: [] for k in cmds}
        while any(len(v) < a.rounds for v in runs.values()):
            for k, cmd in cmds.items():
                run_once(cmd, env)
                for _ in range(min(TURN, a.rounds - len(runs[k]))):
                    runs[k].append(run_once(cmd, env))

    fig = {k: (statistics.median(w for w, _ in v), max(r for _, r in v)) for k, v in runs.items()}
    labels = [("sort", "LC_ALL=C sort -u"), ("awk", "awk '!seen[$0]++'"),
              ("trim", "cogpipe check --normalize trim"),
              ("casefold", "cogpipe check --normalize casefold")]
    print("\n%-36s %10s %12s   (median of %d rounds)" % ("command", "wall s", "peak RSS MiB", a.rounds))
    for k, label in labels:
        print("%-36s %10.3f %12.1f" % (label, fig[k][0], fig[k][1]))

    def verdict(ok):
        return "met" if ok else "MISSED"
    sort_x = fig["sort"][0] / fig["trim"][0]
    awk_x = fig["awk"][0] / fig["trim"][0]
    fold_x = fig["casefold"][0] / fig["trim"][0]
    rss = max(fig["trim"][1], fig["casefold"][1])
    print("\nratios")
    print("  sort -u / cogpipe trim      %6.2fx   target >= 5x     %s" % (sort_x, verdict(sort_x >= 5)))
    print("  awk / cogpipe trim          %6.2fx" % awk_x)
    print("  cogpipe casefold / trim     %6.2fx   target <= 2x     %s" % (fold_x, verdict(fold_x <= 2)))
    print("  cogpipe peak RSS            %6.1f MiB target <= 50 MiB %s" % (rss, verdict(rss <= 50)))
    if a.json:
        print(json.dumps({"sort_over_trim": sort_x, "awk_over_trim": awk_x,
                          "casefold_over_trim": fold_x, "peak_rss_mib": rss,
                          "counts_match": got == want,
                          "seconds": {k: v[0] for k, v in fig.items()}}))


if __name__ == "__main__":
    main()
