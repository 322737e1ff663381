#!/usr/bin/env python3
"""cp.http.request's timeout as a script author reads it: the limit of the
whole request, its retries and the waits between them included, counted
from when it goes on the wire -- never while it waits in the client's own
limiter or behind its origin's gate. A name that cannot be looked up (the
host's or the proxy's) ends at once, not after eight tries. And the
README's script examples run as written, within their timeout."""
import os
import re
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import SRC, last_json_line, run_lua  # noqa: E402

README = os.path.join(SRC, "README.md")


class Server:
    """A loopback server whose paths behave as the tests need:
      /ok            200 at once
      /slow200       200 after 1.5 s
      /slow503       503 after 0.3 s, every time
      /503-then-hang 503 the first time, then no answer for 10 s
      /flaky         503 after 0.2 s the first time, then 200 at once
      /429-once      429 with Retry-After: 2 the first time, then 200
      /v1/...        201 {"id": 7} to a POST
    and counts the requests each path got (with its query: a test gives
    its own query to a path that answers by count)."""

    def __init__(self):
        self.counts = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body=b"{}", headers=()):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers:
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow answer: its timeout

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                path = self.path.split("?")[0]
                with server.lock:
                    server.counts[self.path] = server.counts.get(self.path, 0) + 1
                    seen = server.counts[self.path]
                if path == "/ok":
                    self.answer(200)
                elif path == "/slow200":
                    time.sleep(1.5)
                    self.answer(200)
                elif path == "/slow503":
                    time.sleep(0.3)
                    self.answer(503)
                elif path == "/503-then-hang":
                    if seen > 1:
                        time.sleep(10)
                    self.answer(503)
                elif path == "/flaky":
                    if seen == 1:
                        time.sleep(0.2)
                    self.answer(503 if seen == 1 else 200)
                elif path == "/429-once":
                    if seen == 1:
                        self.answer(429, headers=[("Retry-After", "2")])
                    else:
                        self.answer(200)
                elif path.startswith("/v1/") and self.command == "POST":
                    self.answer(201, b'{"id": 7}')
                else:
                    self.answer(404)

            do_GET = do_POST = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, path):
        with self.lock:
            return self.counts.get(path, 0)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# Runs one request and prints what came back, and how long it took.
ONE = r"""
local cp = require "cogpipe"
local opts = assert(load("return " .. arg[2]))()
opts.url = arg[1]
local start = cp.now()
local resp, err = cp.http.request(opts)
local r = resp or err
print(cp.json.encode({ok = resp ~= nil, status = r.status, kind = err and err.kind,
  message = err and err.message, attempts = r.attempts, elapsed = r.elapsed,
  took = cp.now() - start}))
"""


def env_without_proxies(**extra):
    env = {k: "" for k in ("http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                           "no_proxy", "NO_PROXY")}
    env.update(extra)
    return env


class Timeout(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def one(self, path, opts, env=None):
        r = run_lua(ONE, self.server.base + path, opts, timeout=60, env=env or env_without_proxies())
        self.assertEqual(r.returncode, 0, r.stderr)
        return last_json_line(r.stdout)

    def test_the_timeout_bounds_every_retry_of_a_slow_503(self):
        before = self.server.count("/slow503")
        out = self.one("/slow503", "{timeout = 2, retry = {tries = 50, base = 0.05, cap = 0.1}}")
        self.assertFalse(out["ok"])
        # fifty tries of 0.3 s would take 15 s; the limit is 2 s for all
        self.assertLess(out["took"], 2.4, out)
        self.assertGreaterEqual(out["attempts"], 3, out)
        self.assertLess(out["attempts"], 50, out)
        # the error says the limit: a 503 with no time left for another, or
        # the last attempt cut by it
        self.assertIn(out["kind"], ("http", "timeout"), out)
        self.assertRegex(out["message"], r"(no time left to retry within the timeout of 2 s|"
                                         r"timed out after 2 s)", out)
        self.assertIn("%d attempts" % out["attempts"], out["message"])
        self.assertEqual(self.server.count("/slow503") - before, out["attempts"])

    def test_the_last_attempt_is_cut_at_the_limit(self):
        out = self.one("/503-then-hang?cut", "{timeout = 1.5, retry = {base = 0.05, cap = 0.1}}")
        self.assertFalse(out["ok"])
        self.assertEqual(out["kind"], "timeout", out)
        self.assertTrue(out["message"].endswith("timed out after 1.5 s (2 attempts)"), out["message"])
        self.assertGreaterEqual(out["elapsed"], 1.45, out)
        self.assertLess(out["took"], 2.0, out)

    def test_a_readme_style_request_ends_within_its_timeout(self):
        # the default retry policy (8 tries, backoff up to 30 s)
        out = self.one("/slow503", "{timeout = 3}")
        self.assertFalse(out["ok"])
        self.assertLess(out["took"], 3.4, out)
        self.assertIn("3 s", out["message"])

    def test_a_retry_after_past_the_timeout_ends_the_request(self):
        before = self.server.count("/429-once")
        out = self.one("/429-once", "{timeout = 1}")
        self.assertFalse(out["ok"])
        self.assertEqual(out["status"], 429)
        self.assertIn("the server asks to retry after 2 s, past the timeout of 1 s", out["message"])
        self.assertEqual(self.server.count("/429-once") - before, 1)
        self.assertLess(out["took"], 0.9, out)

    def test_an_attempt_timeout_limits_each_attempt(self):
        out = self.one("/503-then-hang?each", "{timeout = 10, attempt_timeout = 0.5, retry = {tries = 3, base = 0.05}}")
        self.assertFalse(out["ok"])
        self.assertEqual(out["kind"], "timeout", out)
        self.assertEqual(out["attempts"], 3, out)
        self.assertIn("the attempt timed out after 0.5 s (3 attempts)", out["message"])
        self.assertLess(out["took"], 2.5, out)

    def test_an_unresolvable_proxy_is_a_resolve_error_at_once(self):
        env = env_without_proxies(http_proxy="http://cogpipe-proxy.invalid:3128")
        out = self.one("/ok", "{timeout = 3}", env=env)
        self.assertFalse(out["ok"])
        self.assertEqual(out["kind"], "resolve", out)
        self.assertIn("cogpipe-proxy.invalid", out["message"])
        self.assertLessEqual(out["attempts"], 2)
        self.assertLess(out["took"], 3.5, out)


# A request that waits in the limiter's queue (or behind its origin's gate)
# longer than its timeout still goes out, and succeeds: its time starts on
# the wire. The same holds for a retry that queues.
QUEUED = r"""
local cp = require "cogpipe"
local base = arg[1]
local lim = cp.http.limiter{max_in_flight = 1}
local function req(path, opts)
  opts.url = base .. path
  opts.limiter = lim
  local resp, err = cp.http.request(opts)
  local r = resp or err
  return {ok = resp ~= nil, status = r.status, attempts = r.attempts, elapsed = r.elapsed,
          message = err and err.message}
end
local out = {}
-- the slot is held 1.5 s by a slow request; the next waits for it
local slow = cp.spawn(req, "/slow200", {timeout = 5})
cp.sleep(0.1)
local queued = cp.spawn(req, "/ok", {timeout = 0.5})
out.slow, out.queued = cp.wait(slow), cp.wait(queued)
-- a retry that queues: the slow request waits for /flaky's first attempt
-- (a 503 after 0.2 s), takes the slot, and the retry waits 1.5 s for it
-- with 1 s of time
local flaky = cp.spawn(req, "/flaky", {timeout = 1, retry = {base = 0.2, cap = 0.2}})
cp.sleep(0.05)
slow = cp.spawn(req, "/slow200", {timeout = 5})
out.flaky, out.slow2 = cp.wait(flaky), cp.wait(slow)
-- behind the origin's gate: a 429 with Retry-After: 2 holds every request
-- to the origin, one with a timeout of 0.5 s included
local first = cp.spawn(function()
  local resp, err = cp.http.request{url = base .. "/429-once", timeout = 10}
  return {ok = resp ~= nil, attempts = (resp or err).attempts, message = err and err.message}
end)
cp.sleep(0.3)
local gated = cp.spawn(function()
  local resp, err = cp.http.request{url = base .. "/ok", timeout = 0.5}
  return {ok = resp ~= nil, elapsed = (resp or err).elapsed, message = err and err.message}
end)
out.first, out.gated = cp.wait(first), cp.wait(gated)
print(cp.json.encode(out))
"""


class Queued(unittest.TestCase):
    def test_time_in_the_queue_is_not_the_requests_time(self):
        server = Server()
        try:
            r = run_lua(QUEUED, server.base, timeout=60, env=env_without_proxies())
        finally:
            server.stop()
        self.assertEqual(r.returncode, 0, r.stderr)
        out = last_json_line(r.stdout)
        self.assertTrue(out["slow"]["ok"], out)
        self.assertTrue(out["queued"]["ok"], out)
        self.assertGreater(out["queued"]["elapsed"], 1.2, out)  # queued past its 0.5 s
        self.assertTrue(out["flaky"]["ok"], out)
        self.assertEqual(out["flaky"]["attempts"], 2, out)
        self.assertGreater(out["flaky"]["elapsed"], 1.2, out)  # past its 1 s
        self.assertTrue(out["slow2"]["ok"], out)
        self.assertTrue(out["first"]["ok"], out)
        self.assertEqual(out["first"]["attempts"], 2, out)
        self.assertTrue(out["gated"]["ok"], out)
        self.assertGreater(out["gated"]["elapsed"], 1.2, out)  # held by the gate past its 0.5 s


def readme_blocks():
    """The lua code blocks of the README, each with the heading it is under."""
    blocks, heading, fence, code = [], None, None, []
    with open(README, encoding="utf-8") as f:
        for line in f:
            if fence is None and line.startswith("```"):
                fence, code = line.strip()[3:], []
            elif fence is not None and line.startswith("```"):
                if fence == "lua":
                    blocks.append((heading, "".join(code)))
                fence = None
            elif fence is not None:
                code.append(line)
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
    return blocks


class Readme(unittest.TestCase):
    def block(self, heading):
        found = [code for h, code in readme_blocks() if h == heading]
        self.assertEqual(len(found), 1, "one lua block under '%s'" % heading)
        return found[0]

    def test_the_script_example_runs_as_written_within_its_timeout(self):
        code = self.block("Writing scripts")
        m = re.search(r'cp\.http\.request \{ url = "(https://([^/"]+)/)", timeout = (\d+) \}', code)
        self.assertIsNotNone(m, "the example makes one request with a timeout")
        host, limit = m.group(2), int(m.group(3))
        start = time.monotonic()
        # online it is answered, offline it fails: either way within its timeout
        r = run_lua(code, timeout=120)
        took = time.monotonic() - start
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "10\t20\t30")
        self.assertTrue(re.fullmatch(r"\d{3}", lines[1]) or host in lines[1], lines[1])
        self.assertEqual(lines[2], '{"slots":[],"text":"book a flight"}')
        self.assertLess(took, limit + 2.5, r.stdout)

    def test_the_http_example_against_a_local_server(self):
        code = self.block("HTTP requests from a script")
        m = re.search(r'url = "(https://[^/"]+)/', code)
        self.assertIsNotNone(m)
        server = Server()
        try:
            r = run_lua(code.replace(m.group(1), server.base), timeout=60, env=env_without_proxies())
            self.assertEqual(server.count("/v1/things"), 1)
        finally:
            server.stop()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "201\t7")
        # and as written, with its timeout
        start = time.monotonic()
        r = run_lua(code, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(time.monotonic() - start, 12.5, r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
