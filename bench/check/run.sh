#!/bin/sh
# bench/check/run.sh -- `cogpipe check` against the usual shell answers to
# "how many unique lines", on the same ~50 MiB corpus in the same run:
#   cogpipe check --normalize trim    vs  LC_ALL=C sort -u  and  awk '!seen[$0]++'
#   cogpipe check --normalize casefold vs the trim mode
# Each command runs RUNS times (default 5) on a warm page cache; the median
# wall time (a nanosecond clock) and the peak RSS (/usr/bin/time %M) are
# reported, then the ratios against the targets: cogpipe >= 5x faster than
# sort -u, peak RSS <= 50 MiB, casefold <= 2x trim. A benchmark, not a test:
# it prints figures and exits 0 unless something could not run.
#
# usage: bench/check/run.sh [RUNS]
#   COGPIPE_BIN         the command to time (default: build/cogpipe; use a
#                       release build, not a sanitizer one)
#   COGPIPE_SHARED_DIR  where bench/gen_corpus.py and data/ are
#                       (default: ../shared beside the source tree)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
runs=${1:-5}
bin=${COGPIPE_BIN:-$src/build/cogpipe}
shared=${COGPIPE_SHARED_DIR:-$src/../shared}
gen=$shared/bench/gen_corpus.py

[ -x "$bin" ] || { echo "no cogpipe at $bin (set COGPIPE_BIN)" >&2; exit 2; }
[ -f "$gen" ] || { echo "no corpus generator at $gen (set COGPIPE_SHARED_DIR)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian package: time)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
corpus=$tmp/corpus.txt
python3 "$gen" "$corpus" > "$tmp/ref.json"
cat "$corpus" > /dev/null # warm the page cache for everyone alike

now_ns() { date +%s%N; }

# measure NAME CMD...: RUNS runs; leaves "median_seconds max_rss_kib" in $tmp/NAME
measure() {
  name=$1
  shift
  : > "$tmp/$name.runs"
  i=0
  while [ "$i" -lt "$runs" ]; do
    t0=$(now_ns)
    /usr/bin/time -f '%e %M' -o "$tmp/$name.time" "$@" > /dev/null 2> "$tmp/$name.err" || {
      st=$?
      # cogpipe check exits 3 on an invalid corpus; anything else is a failure
      [ "$st" -eq 3 ] || { echo "$name failed ($st):" >&2; cat "$tmp/$name.err" >&2; exit 1; }
    }
    t1=$(now_ns)
    echo "$(( (t1 - t0) / 1000 )) $(cut -d' ' -f2 "$tmp/$name.time")" >> "$tmp/$name.runs"
    i=$((i + 1))
  done
  sort -n "$tmp/$name.runs" | awk -v n="$runs" '
    { us[NR] = $1; if ($2 > rss) rss = $2 }
    END { printf "%.4f %d\n", us[int((n + 1) / 2)] / 1e6, rss }' > "$tmp/$name"
}

measure sort env LC_ALL=C sort -u "$corpus"
measure awk awk '!seen[$0]++' "$corpus"
measure trim "$bin" check --normalize trim "$corpus"
measure casefold "$bin" check --normalize casefold "$corpus"

# The figures are only worth comparing if cogpipe counted right.
"$bin" check --normalize trim --json "$corpus" > "$tmp/trim.json" || [ $? -eq 3 ]
"$bin" check --normalize casefold --json "$corpus" > "$tmp/casefold.json" || [ $? -eq 3 ]
python3 - "$tmp" "$runs" <<'PY'
import json, os, sys
tmp, runs = sys.argv[1], sys.argv[2]
ref = json.load(open(os.path.join(tmp, "ref.json")))
trim = json.load(open(os.path.join(tmp, "trim.json")))
fold = json.load(open(os.path.join(tmp, "casefold.json")))
def fig(name):
    s, rss = open(os.path.join(tmp, name)).read().split()
    return float(s), int(rss) / 1024.0
rows = [("LC_ALL=C sort -u", "sort"), ("awk '!seen[$0]++'", "awk"),
        ("cogpipe check --normalize trim", "trim"), ("cogpipe check --normalize casefold", "casefold")]
print("corpus: %d bytes, %d lines, %d blank, %d unique trimmed, %d unique casefolded"
      % (ref["bytes"], ref["lines"], ref["blank_lines"], ref["unique_trimmed"], ref["unique_normalized"]))
counts_ok = (trim["lines"], trim["blank_lines"], trim["unique"], fold["unique"]) == \
            (ref["lines"], ref["blank_lines"], ref["unique_trimmed"], ref["unique_normalized"])
print("cogpipe counts match the generator: %s" % ("yes" if counts_ok else "NO"))
print("\n%-36s %10s %12s   (median of %s runs)" % ("command", "wall s", "peak RSS MiB", runs))
f = {}
for label, key in rows:
    f[key] = fig(key)
    print("%-36s %10.3f %12.1f" % (label, f[key][0], f[key][1]))
def verdict(ok):
    return "met" if ok else "MISSED"
sort_x = f["sort"][0] / f["trim"][0]
awk_x = f["awk"][0] / f["trim"][0]
fold_x = f["casefold"][0] / f["trim"][0]
rss = max(f["trim"][1], f["casefold"][1])
print("\nratios")
print("  sort -u / cogpipe trim      %6.2fx   target >= 5x     %s" % (sort_x, verdict(sort_x >= 5)))
print("  awk / cogpipe trim          %6.2fx" % awk_x)
print("  cogpipe casefold / trim     %6.2fx   target <= 2x     %s" % (fold_x, verdict(fold_x <= 2)))
print("  cogpipe peak RSS            %6.1f MiB target <= 50 MiB %s" % (rss, verdict(rss <= 50)))
PY
