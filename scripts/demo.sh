#!/bin/sh
# The main job on the built-in default: installs what is missing, builds, and
# runs the example pipeline end to end.
set -eu
cd "$(dirname "$0")/.."

sh scripts/deps.sh build
cmake -S . -B build/plain -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/plain -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
exec build/plain/cogpipe run examples/first_pipeline.lua "$@"
