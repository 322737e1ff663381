#!/usr/bin/env python3
"""HTTP upload benchmark: cogpipe against curl in the same run.

Starts nginx (Debian nginx-light; scripts/deps.sh bench installs it) on a
free loopback port from a temporary directory, answering every POST with a
canned JSON document; then sends N POSTs of small v2 sentence-create bodies
({"text","localeId","slots":[]}) with 32 in flight, first with
`curl --parallel --parallel-max 32 -K <config>` and then with a cogpipe Lua
script (post.lua), and prints each one's throughput, the ratio
(target: cogpipe >= 0.9 x curl) and CPU time per request. A benchmark, not a
test: it asserts nothing.

usage: bench/http/bench.py [--bin build-release/cogpipe] [-n 20000] [-w 32] [--rounds 3]
"""
import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = "/new/v2.0/flows/bench-flow/intents/bench-intent/sentences"
CANNED = ('{"_id":"5f0c1e2d3a4b5c6d7e8f9012","text":"book a flight","slots":[],'
          '"localeReference":"en-US"}')

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location / {{ return 200 '{canned}'; }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("nginx exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def body(i):
    return json.dumps({"localeId": "en-US", "slots": [],
                       "text": "book a flight to city number %d" % i}, separators=(",", ":"))


def curl_config(path, url, n):
    with open(path, "w") as f:
        for i in range(1, n + 1):
            data = body(i).replace("\\", "\\\\").replace('"', '\\"')
            f.write('url = "%s"\ndata = "%s"\nheader = "Content-Type: application/json"\n'
                    'output = "/dev/null"\n' % (url, data))
            if i < n:
                f.write("next\n")


def timed(cmd, env=None):
    """Runs cmd; returns (wall seconds, child CPU seconds, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (cmd[0], r.returncode, r.stderr[-2000:]))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("COGPIPE_BIN", "build/cogpipe"))
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-w", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each; best counts")
    args = ap.parse_args()
    for tool in ("nginx", "curl"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            sys.exit("bench: %s not found (scripts/deps.sh bench installs it)" % tool)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    tmp = tempfile.mkdtemp(prefix="cogpipe-bench-http-")
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=tmp, port=port, canned=CANNED))
    server = subprocess.Popen([nginx, "-p", tmp, "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port, server)
        url = "http://127.0.0.1:%d%s" % (port, PATH)
        cfg = os.path.join(tmp, "curl.cfg")
        curl_config(cfg, url, args.n)
        curl_cmd = ["curl", "--silent", "--show-error", "--fail", "--parallel",
                    "--parallel-max", str(args.w), "-K", cfg]
        cp_cmd = [args.bin, "run", os.path.join(HERE, "post.lua"), "--", url, str(args.n),
                  str(args.w)]
        # warm both up (page cache, nginx worker), then alternate
        timed(curl_cmd)
        timed(cp_cmd)
        best = {"curl": None, "cogpipe": None}
        for _ in range(args.rounds):
            for name, cmd in (("curl", curl_cmd), ("cogpipe", cp_cmd)):
                wall, cpu, out = timed(cmd)
                if name == "cogpipe":
                    res = json.loads(out.strip().splitlines()[-1])
                    if res["ok"] != args.n:
                        raise RuntimeError("cogpipe: %d of %d ok (%s)" % (
                            res["ok"], args.n, res.get("first_error")))
                if best[name] is None or wall < best[name][0]:
                    best[name] = (wall, cpu)
        cw, cc = best["curl"]
        pw, pc = best["cogpipe"]
        print("requests: %d POSTs, %d in flight, nginx on loopback (best of %d)" % (
            args.n, args.w, args.rounds))
        print("curl    : %8.0f req/s  %6.2f s  CPU %5.1f us/req" % (args.n / cw, cw, cc / args.n * 1e6))
        print("cogpipe : %8.0f req/s  %6.2f s  CPU %5.1f us/req" % (args.n / pw, pw, pc / args.n * 1e6))
        print("ratio   : cogpipe/curl throughput = %.2f (target >= 0.90)" % (cw / pw))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
