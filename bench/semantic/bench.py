#!/usr/bin/env python3
"""Semantic-similarity benchmark: cogpipe against numpy in the same run.

Writes N_NEW new and N_EXISTING existing random unit vectors (seeded,
float32, DIM dimensions) to two binary vectors files (the format of
src/embedio.h), which both sides read. numpy (Debian's python3-numpy) times
`S = X @ Y.T` then the argmax of each row and its score; cogpipe times
cp.semantic.search{query = new, corpus = existing, k = 1} (search.lua). Both
use the BLAS the system provides (OpenBLAS from libopenblas-dev, for numpy
through libblas.so.3); the script prints which library numpy loaded. Rounds
alternate between the two, each side's median is compared, and the ratio
numpy / cogpipe is printed (target: cogpipe >= 1.0 x numpy). It also checks
that both found the same nearest vectors. A benchmark, not a test.

Build cogpipe for it without sanitizers, with the BLAS:

  sh scripts/deps.sh bench
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOGPIPE_BLAS=ON  # OpenBLAS (cmake/blas.cmake)
  cmake --build build-release -j2

usage: bench/semantic/bench.py [--bin build-release/cogpipe] [--new 2000]
       [--existing 20000] [--dim 384] [--rounds 5] [--seed 1]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

try:
    import numpy as np
except ImportError:
    # a Python without numpy first on PATH: use the system one (python3-numpy)
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != "/usr/bin/python3" \
            and not os.environ.get("COGPIPE_BENCH_REEXEC"):
        os.environ["COGPIPE_BENCH_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    sys.exit("bench: numpy is missing (sh scripts/deps.sh bench installs python3-numpy)")

MAGIC = b"CPVEC01\n"


def write_vectors(path, X, prefix):
    """X (n x dim float32, unit rows) as a binary vectors file."""
    n, dim = X.shape
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<IIQ", dim, 0, n))
        le = X.astype("<f4", copy=False)
        for i in range(n):
            text = f"{prefix} {i}".encode()
            f.write(struct.pack("<I", len(text)) + text + le[i].tobytes())


def read_vectors(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == MAGIC, path
    dim, flags, n = struct.unpack_from("<IIQ", data, 8)
    assert flags == 0
    X = np.empty((n, dim), dtype=np.float32)
    at = 24
    for i in range(n):
        (tl,) = struct.unpack_from("<I", data, at)
        at += 4 + tl
        X[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=at)
        at += 4 * dim
    return X


def blas_of_this_process():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if "blas" in os.path.basename(path) or "lapack" in os.path.basename(path):
                libs.add(os.path.realpath(path))
    return sorted(libs)


def numpy_round(X, Y, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        S = X @ Y.T
        idx = S.argmax(axis=1)
        best = S[np.arange(S.shape[0]), idx]
        times.append(time.perf_counter() - t)
        del S
    return times, idx, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("COGPIPE_BIN", "build-release/cogpipe"))
    ap.add_argument("--new", type=int, default=2000)
    ap.add_argument("--existing", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"bench: no cogpipe binary at {a.bin} (see the build steps in this file)")

    tmp = tempfile.mkdtemp(prefix="cogpipe-bench-sem-")
    try:
        rng = np.random.default_rng(a.seed)
        X = rng.standard_normal((a.new, a.dim), dtype=np.float32)
        Y = rng.standard_normal((a.existing, a.dim), dtype=np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        Y /= np.linalg.norm(Y, axis=1, keepdims=True)
        new_path, old_path = os.path.join(tmp, "new.cpvec"), os.path.join(tmp, "existing.cpvec")
        write_vectors(new_path, X, "new")
        write_vectors(old_path, Y, "existing")
        # numpy works on what it reads back, as cogpipe does
        X, Y = read_vectors(new_path), read_vectors(old_path)
        numpy_round(X, Y, 1)  # warm up (page faults of the first product)

        np_times, cp_times, cp_info = [], [], None
        out = os.path.join(tmp, "cogpipe.txt")
        for _ in range(3):  # alternate, so that both see the same machine
            t, idx, best = numpy_round(X, Y, a.rounds)
            np_times += t
            r = subprocess.run([a.bin, "run", os.path.join(HERE, "search.lua"), "--", new_path, old_path,
                                str(a.rounds + 1), out], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                sys.exit("cogpipe failed:\n" + r.stderr)
            cp_info = json.loads(r.stdout.strip().splitlines()[-1])
            cp_times += cp_info["times"][1:]  # its first round is its warm-up

        rows, scores = [], []
        with open(out) as f:
            for line in f:
                i, s = line.split()
                rows.append(int(i))
                scores.append(float(s))
        rows, scores = np.array(rows), np.array(scores)
        same = int((rows == idx).sum())
        score_gap = float(np.abs(scores - best).max())

        np_med, cp_med = float(np.median(np_times)), float(np.median(cp_times))
        flops = 2.0 * a.new * a.existing * a.dim
        print(f"top-1 cosine, {a.new} new x {a.existing} existing, {a.dim} dimensions "
              f"({flops / 1e9:.1f} GFLOP a round), {len(np_times)} rounds each")
        print(f"  numpy {np.__version__:8s} median {np_med * 1000:7.1f} ms  best {min(np_times) * 1000:7.1f} ms"
              f"  ({flops / np_med / 1e9:5.1f} GFLOP/s)")
        print(f"  cogpipe ({cp_info['backend']:8s}) median {cp_med * 1000:7.1f} ms  best {min(cp_times) * 1000:7.1f} ms"
              f"  ({flops / cp_med / 1e9:5.1f} GFLOP/s)")
        print(f"  numpy's BLAS: {', '.join(blas_of_this_process()) or 'unknown'}")
        print(f"  same nearest vector for {same} of {a.new} (largest score difference {score_gap:.1e})")
        print(f"  cogpipe in-run filter (new vs existing and earlier new): {cp_info['filter_s'] * 1000:.1f} ms, "
              f"{cp_info['filter_accepted']} accepted")
        print(f"ratio cogpipe/numpy speed: {np_med / cp_med:.2f}x on medians, "
              f"{min(np_times) / min(cp_times):.2f}x on best rounds (target >= 1.0)")
        print(json.dumps({"numpy_median_s": np_med, "cogpipe_median_s": cp_med, "ratio": np_med / cp_med,
                          "agree": same, "n": a.new, "backend": cp_info["backend"]}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
