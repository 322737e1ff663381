#!/bin/sh
# The test command: installs what is missing, builds with AddressSanitizer and
# UndefinedBehaviorSanitizer (clang, so the fuzz targets build too), runs the
# whole suite through ctest, then runs the valgrind checks on a plain build.
set -eu
cd "$(dirname "$0")/.."

sh scripts/deps.sh test

jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	-DCOGPIPE_SANITIZE=ON -DCOGPIPE_FUZZ=ON >/dev/null
cmake --build build/asan -j "$jobs"
# Leaks fail the run; libuv's and OpenSSL's one-time allocations are not ours.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build/asan --output-on-failure -j "$jobs"

cmake -S . -B build/plain -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/plain -j "$jobs"
ctest --test-dir build/plain --output-on-failure -R 'e2e/test_cli'

if command -v luacheck >/dev/null; then
	# shellcheck disable=SC2046
	luacheck -q lua tests/lua $(ls -d pipelines bench examples 2>/dev/null)
fi
