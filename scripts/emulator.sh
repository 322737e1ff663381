#!/bin/sh
# Starts the local Cognigy emulator (tests/emulator) in the foreground on
# 127.0.0.1, for trying pipelines without a Cognigy.AI project: its default
# credentials are the sandbox tenant's. Stop it with Ctrl-C.
#   sh scripts/emulator.sh [PORT] [EMULATOR OPTIONS]   e.g. 8765 --strict
set -eu
cd "$(dirname "$0")/.."
port=${1:-8765}
[ $# -gt 0 ] && shift
command -v python3 >/dev/null || sh scripts/deps.sh build
echo "emulator: export COGPIPE_EMULATOR_URL=http://127.0.0.1:$port  (then: --tenant sandbox)" >&2
exec python3 tests/emulator/cognigy_emulator.py --port "$port" "$@"
