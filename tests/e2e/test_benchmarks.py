#!/usr/bin/env python3
"""The benchmarks under bench/ still run against this build, on small
inputs: a benchmark nothing runs breaks unseen (the export one stopped at
its first run when the tenant schema came to bound limits.rate). Where a
benchmark checks its own answer (its counts against the corpus generator's,
the export against what was seeded, cogpipe's nearest vectors against
numpy's) that check must hold. No timing is judged. A benchmark whose peer is
not installed (nginx and numpy come with `scripts/deps.sh bench`) is
skipped; a sanitized build is not what the figures are for, so this runs on
the plain build."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC  # noqa: E402

BENCH = os.path.join(SRC, "bench")
SHARED = os.environ.get("COGPIPE_SHARED_DIR", os.path.join(SRC, "..", "shared"))
CLINC = os.path.join(SHARED, "data", "clinc150", "data_full.json")
GENERATOR = os.path.join(SHARED, "bench", "gen_corpus.py")


def has_numpy():
    return subprocess.run([sys.executable, "-c", "import numpy"], capture_output=True).returncode == 0


@unittest.skipIf(os.environ.get("COGPIPE_SANITIZED"), "the benchmarks time a build without sanitizers")
class Benchmarks(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-bench-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def bench(self, name, *args, timeout=600):
        r = subprocess.run([sys.executable, os.path.join(BENCH, name, "bench.py"), "--bin", BIN, *args],
                           capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, COGPIPE_SOURCE_DIR=SRC))
        self.assertEqual(r.returncode, 0, f"bench/{name}: {r.stdout[-1500:]}\n{r.stderr[-1500:]}")
        return r.stdout

    def last_json(self, out):
        return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])

    @unittest.skipUnless(os.path.exists(GENERATOR), f"needs the corpus generator at {GENERATOR}")
    def test_check(self):
        out = self.bench("check", "--rounds", "1", "--shared", SHARED, "--json")
        self.assertIn("cogpipe counts match the generator: yes", out)
        self.assertTrue(self.last_json(out)["counts_match"])

    @unittest.skipUnless(os.path.exists(CLINC), f"needs CLINC150 at {CLINC}")
    def test_export(self):
        out = self.bench("export", "--rounds", "1", "--shared", SHARED)
        self.assertIn("every export holds exactly what was seeded: yes", out)
        # one request per page, under the tenant's limits and without them
        self.assertEqual(out.count("(1.00 x minimum)"), 2, out)

    @unittest.skipUnless(os.path.exists(CLINC), f"needs CLINC150 at {CLINC}")
    def test_neardup(self):
        corpus = os.path.join(self.dir, "clinc.txt")
        with open(CLINC, encoding="utf-8") as f:
            texts = [text for text, _ in json.load(f)["train"]]
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        out = self.bench("neardup", "--corpus", corpus, "--rounds", "1")
        self.assertEqual(self.last_json(out)["lines"], len(texts))

    @unittest.skipUnless(has_numpy(), "numpy is the peer (scripts/deps.sh bench)")
    def test_semantic(self):
        out = self.bench("semantic", "--new", "200", "--existing", "2000", "--rounds", "1")
        figures = self.last_json(out)
        self.assertEqual(figures["agree"], figures["n"], out)

    @unittest.skipUnless((shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")) and shutil.which("curl"),
                         "nginx is the server and curl the peer (scripts/deps.sh bench)")
    def test_http(self):
        out = self.bench("http", "-n", "500", "--rounds", "1")
        self.assertIn("cogpipe/curl throughput", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
