#!/bin/sh
# The test command: installs what is missing, lints the Lua, runs the
# valgrind checks and the peak memory ones on a plain build, then builds
# with AddressSanitizer and UndefinedBehaviorSanitizer (clang, so the fuzz
# targets build too) and runs the whole suite through ctest.
set -eu
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "packages (installed once; a few minutes the first time)"
sh scripts/deps.sh test

jobs=$(nproc 2>/dev/null || echo 2)

step "luacheck"
# shellcheck disable=SC2046
luacheck -q lua tests/lua $(ls -d pipelines bench examples 2>/dev/null)

step "plain build (about 1 minute on 2 cores the first time)"
cmake -S . -B build/plain -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/plain -j "$jobs"
step "tests on the plain build: the command, install, packaging, out of memory, the benchmarks (about 2 minutes)"
ctest --test-dir build/plain --output-on-failure -R 'e2e/test_(cli|install|packaging|oom|check_limits|benchmarks)'

step "sanitizer build (about 2 minutes on 2 cores the first time)"
# This build links OpenBLAS (-DCOGPIPE_BLAS=ON), so that the similarity
# kernel's BLAS path is tested too; the plain build is what users get.
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	-DCOGPIPE_SANITIZE=ON -DCOGPIPE_FUZZ=ON -DCOGPIPE_BLAS=ON >/dev/null
cmake --build build/asan -j "$jobs"
step "the whole suite under AddressSanitizer and UndefinedBehaviorSanitizer (about 10 minutes on 2 cores)"
ASAN_OPTIONS=detect_leaks=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build/asan --output-on-failure -j "$jobs"

# The threads (check's scanner and prober, the parallel kernels, the pool
# jobs) under ThreadSanitizer. The BLAS is left out: it is not instrumented,
# so TSan could not see into it. The tenant sandbox's tests are left out:
# they time a single thread against a wall clock TSan slows tenfold.
step "ThreadSanitizer build and the threaded tests (about 4 minutes on 2 cores)"
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	-DCOGPIPE_TSAN=ON -DCOGPIPE_BLAS=OFF >/dev/null
cmake --build build/tsan -j "$jobs"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	ctest --test-dir build/tsan --output-on-failure -j "$jobs" -R 'unit/|lua/|e2e/test_check' -E 'lua/test_tenant'
