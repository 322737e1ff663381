#!/bin/sh
# The main job on the built-in default: installs what is missing (python3
# runs the emulator), builds,
# starts the local Cognigy emulator, runs the intent example pipeline on the
# shipped sample for the sandbox tenant (progress on a terminal, then the
# summary), shows what the emulator holds, and stops the emulator.
#   sh scripts/demo.sh [RUN OPTIONS] [-- FILE]    e.g. --json, or -- data.jsonl
set -eu
cd "$(dirname "$0")/.."

step() { printf '== %s\n' "$*" >&2; }

step "packages (installed once; a few minutes the first time)"
sh scripts/deps.sh build
step "build (about 1 minute on 2 cores the first time, seconds after)"
cmake -S . -B build/plain -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/plain -j "$(nproc 2>/dev/null || echo 2)" >&2
step "starting the local Cognigy emulator"

work=$(mktemp -d)
python3 tests/emulator/cognigy_emulator.py --port 0 --port-file "$work/port" --quiet >"$work/emulator.log" 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null; wait "$emulator" 2>/dev/null; rm -rf "$work"' EXIT INT TERM
tries=0
until [ -s "$work/port" ]; do
	tries=$((tries + 1))
	if [ "$tries" -gt 200 ] || ! kill -0 "$emulator" 2>/dev/null; then
		echo "demo: the emulator did not start" >&2
		exit 1
	fi
	sleep 0.05
done
COGPIPE_EMULATOR_URL="http://127.0.0.1:$(cat "$work/port")"
export COGPIPE_EMULATOR_URL

step "uploading with pipelines/intent_examples.lua for the sandbox tenant (a few seconds)"
status=0
build/plain/cogpipe run pipelines/intent_examples.lua --tenant sandbox \
	--state-dir "$work/state" "$@" || status=$?

# The emulator's own count, to set beside the summary's "uploaded".
python3 - "$COGPIPE_EMULATOR_URL" <<'PY' >&2
import json, sys, urllib.request
state = json.load(urllib.request.urlopen(sys.argv[1] + "/_emulator/state?lines=0"))
intents = state.get("intents", {})
total = sum(len(v) if isinstance(v, list) else len(v.get("examples", [])) for v in intents.values())
print(f"emulator: {total} examples stored over {len(intents)} intents")
PY
exit "$status"
