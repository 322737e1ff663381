#!/usr/bin/env python3
"""Export benchmark: `cogpipe export` of CLINC150 (the 15,000 training
utterances, 150 intents) from the Cognigy emulator's v2 API.

Starts the emulator on a free loopback port, seeds one flow with CLINC150's
train split (one intent per label, 100 sentences each), then exports it with
cogpipe under the tenant's limits (--rate, --burst, --in-flight) and, as the
peer, with a sequential reader (Python's urllib, one page after the other,
as a script without a concurrent client would). Prints for each the requests
made against the minimum (one per page: the pages of the flow's intent list
plus each intent's pages of 100) and the time, the ratio of the times, and
whether the export holds exactly what was seeded; cogpipe runs twice, under
the tenant's limits and with no rate limit. A benchmark, not a test: it
asserts nothing. Build cogpipe without sanitizers for the numbers. The
emulator is one Python process that answers one request at a time, so on
loopback it, not the client, sets the time: the figures to read are the
requests against the minimum, and the time kept within the limits.

usage: bench/export/bench.py [--bin build/plain/cogpipe] [--shared DIR] [--rounds 3]
       [--rate 50] [--burst 100] [--in-flight 16]
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("COGPIPE_SOURCE_DIR", os.path.join(HERE, "..", ".."))
EMULATOR = os.path.join(SRC, "tests", "emulator", "cognigy_emulator.py")
FLOW, KEY, PAGE = "bench-flow", "sandbox-api-key", 100
# the largest limits.rate a tenant file may give (lua/cogpipe/tenant_schema.lua)
UNLIMITED_RATE = 10000

TENANT = """return {{
  name = "bench",
  base_url = "{base}",
  v2 = {{ flow_id = "{flow}", locale_id = "en-US", auth = {{ api_key = "{key}" }} }},
  limits = {{ rate = {rate}, burst = {burst}, max_in_flight = {in_flight} }},
}}
"""


class Emulator:
    def __init__(self, tmp):
        port_file = os.path.join(tmp, "port")
        self.log = open(os.path.join(tmp, "emulator.log"), "w")
        self.proc = subprocess.Popen([sys.executable, EMULATOR, "--port", "0", "--port-file", port_file, "--quiet"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("bench: the emulator did not start (see its log in " + tmp + ")")
            time.sleep(0.05)
        self.base = "http://127.0.0.1:" + open(port_file).read().strip()

    def control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/_emulator/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def reads(self, since):
        log = self.control("GET", f"requests?since={since}")["requests"]
        return [q for q in log if q["method"] == "GET" and q["path"].startswith("/new/v2.0/")]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def get(base, path, query):
    url = base + path + "?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, headers={"X-API-Key": KEY})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def sequential(base):
    """The peer: every page, one after the other; returns (intent, text) pairs."""
    flow = "/new/v2.0/flows/" + FLOW
    intents, cursor = [], None
    while True:
        body = get(base, flow + "/intents", {"limit": PAGE, **({"next": cursor} if cursor else {})})
        intents += [i["_id"] for i in body["items"]]
        cursor = body["nextCursor"]
        if not cursor:
            break
    out = []
    for intent in intents:
        cursor = None
        while True:
            body = get(base, f"{flow}/intents/{urllib.parse.quote(intent, safe='')}/sentences",
                       {"limit": PAGE, **({"next": cursor} if cursor else {})})
            out += [(intent, s["text"]) for s in body["items"]]
            cursor = body["nextCursor"]
            if not cursor:
                break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("COGPIPE_BIN", "build/plain/cogpipe"))
    ap.add_argument("--shared", default=os.environ.get("COGPIPE_SHARED_DIR", os.path.join(SRC, "..", "shared")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--in-flight", type=int, default=16)
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"bench: no cogpipe binary at {a.bin}")
    clinc = os.path.join(a.shared, "data", "clinc150", "data_full.json")
    if not os.path.exists(clinc):
        sys.exit(f"bench: CLINC150 not found at {clinc} (--shared DIR)")
    with open(clinc, encoding="utf-8") as f:
        train = json.load(f)["train"]
    by_intent = {}
    for text, intent in train:
        by_intent.setdefault(intent, []).append(text)
    seeded = sorted((i, t) for i, ts in by_intent.items() for t in ts)
    minimum = math.ceil(len(by_intent) / PAGE) + sum(max(1, math.ceil(len(ts) / PAGE)) for ts in by_intent.values())

    tmp = tempfile.mkdtemp(prefix="cogpipe-bench-export-")
    emu = Emulator(tmp)
    try:
        emu.control("POST", "seed", {"v2": {FLOW: by_intent}})
        # the platform's own 1,000 requests in 5 minutes per client would
        # stop the rounds after the sixth export for minutes: the figures
        # are of the client, so the emulator lets every request through
        emu.control("POST", "config", {"v2": {"rate_limit": {"requests": 0, "window_s": 300}}})
        out = os.path.join(tmp, "export.jsonl")
        matches, results = True, []
        # the tenant's limits, then the highest the tenant schema takes, which
        # the emulator never reaches: the first shows the limits kept, the
        # second what concurrency alone gives
        for rate, burst in ((a.rate, a.burst), (UNLIMITED_RATE, UNLIMITED_RATE)):
            tenant = os.path.join(tmp, "bench.lua")
            with open(tenant, "w") as f:
                f.write(TENANT.format(base=emu.base, flow=FLOW, key=KEY, rate=rate, burst=burst,
                                      in_flight=a.in_flight))
            times, requests = [], []
            for _ in range(a.rounds):
                since = emu.control("GET", "state?lines=0")["requests"]["last_seq"]
                start = time.monotonic()
                r = subprocess.run([a.bin, "export", "--tenant", tenant, "-o", out, "--json", "--no-progress",
                                    "--state-dir", os.path.join(tmp, "state")], capture_output=True, text=True)
                times.append(time.monotonic() - start)
                if r.returncode != 0:
                    sys.exit(f"bench: export failed ({r.returncode}): {r.stderr}")
                requests.append(len(emu.reads(since)))
                with open(out, encoding="utf-8") as f:
                    got = sorted((d["intent"], d["text"]) for d in map(json.loads, f))
                matches = matches and got == seeded
            results.append((rate, burst, statistics.median(times), statistics.median(requests)))
        peer_times, peer_requests = [], []
        for _ in range(a.rounds):
            since = emu.control("GET", "state?lines=0")["requests"]["last_seq"]
            start = time.monotonic()
            got = sorted(sequential(emu.base))
            peer_times.append(time.monotonic() - start)
            peer_requests.append(len(emu.reads(since)))
            matches = matches and got == seeded
    finally:
        emu.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    p = statistics.median(peer_times)
    print(f"CLINC150 train: {len(seeded)} sentences, {len(by_intent)} intents; "
          f"minimum requests (one per page): {minimum}; medians of {a.rounds} rounds")
    for rate, burst, t, n in results:
        limits = f"rate {rate:g}/s, burst {burst}" if rate < UNLIMITED_RATE else "no rate limit"
        print(f"  cogpipe export ({limits}, {a.in_flight} in flight): {n:.0f} requests ({n / minimum:.2f} x minimum), "
              f"{t:.2f} s, {len(seeded) / t:,.0f} sentences/s, {t / p:.2f} x the sequential time")
    print(f"  sequential pages (urllib, no limit): {statistics.median(peer_requests):.0f} requests, {p:.2f} s, "
          f"{len(seeded) / p:,.0f} sentences/s")
    print(f"  every export holds exactly what was seeded: {'yes' if matches else 'NO'}")


if __name__ == "__main__":
    main()
