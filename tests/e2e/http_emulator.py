"""Shared by the HTTP end-to-end tests (test_http_*.py): starts the Cognigy
emulator on a free loopback port, talks to its control API, and runs Lua
scripts with the built cogpipe command. Not a test itself."""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("COGPIPE_BIN", "build/cogpipe")
SRC = os.environ.get("COGPIPE_SOURCE_DIR", ".")
EMULATOR = os.path.join(SRC, "tests", "emulator", "cognigy_emulator.py")


class Emulator:
    """One emulator process; stop() (or a with block) ends it."""

    def __init__(self, *extra_args, tls=None):
        self.dir = tempfile.mkdtemp(prefix="cogpipe-http-")
        port_file = os.path.join(self.dir, "port")
        args = [sys.executable, EMULATOR, "--port", "0", "--port-file", port_file, "--quiet"]
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        args += list(extra_args)
        self.log = open(os.path.join(self.dir, "emulator.log"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError("emulator did not start: " + self.log.read())
            time.sleep(0.05)
        self.scheme = "https" if tls else "http"
        self.base = f"{self.scheme}://127.0.0.1:{self.port}"

    def control(self, method, path, body=None):
        """Calls /_emulator/<path> over plain HTTP (the HTTPS emulator is
        reached with the test's own context)."""
        import ssl

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/_emulator/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        ctx = None
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            return json.loads(r.read())

    def requests(self):
        return self.control("GET", "requests")["requests"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_lua(code, *args, timeout=300, env=None):
    """Runs code as a script with `cogpipe run`; returns the CompletedProcess."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(code)
        path = f.name
    try:
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run([BIN, "run", path, "--", *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env)
    finally:
        os.unlink(path)


def last_json_line(out):
    """The last line of out that parses as JSON (scripts print their result so)."""
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("no JSON line in output:\n" + out)
