#!/usr/bin/env python3
"""OAuth2 client credentials and API keys against the emulator: secrets with
form-special characters authenticate, one token request serves 50 waiting
requests (after server-side and after client-side expiry), a 401 is replayed
once, and no secret or token ever shows in output or error messages."""
import base64
import http.server
import os
import sys
import threading
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import Emulator, last_json_line, run_lua  # noqa: E402

SECRET = "s3cr&t=a+b%20 c%d é"
CLIENT = "pipeline-client"

COMMON = r"""
local cp = require "cogpipe"
local auth = require "cogpipe.auth"
local base = arg[1]
local v2 = base .. "/new/v2.0/flows/flow-1/intents/intent-1/sentences"
local function oauth(secret, extra)
  local o = {token_url = base .. "/auth/oauth2/token", client_id = arg[2], client_secret = secret}
  for k, v in pairs(extra or {}) do o[k] = v end
  return auth.oauth2(o)
end
local function control(path)
  local resp, err = cp.http.request{method = "POST", url = base .. "/_emulator/" .. path, body = ""}
  assert(resp, err)
end
local function burst(a, n)
  local tasks, ok, errs = {}, 0, {}
  for i = 1, n do
    tasks[i] = cp.spawn(function()
      return cp.http.request{url = v2, query = {limit = 1, i = i}, auth = a}
    end)
  end
  for i = 1, n do
    local resp, err = cp.wait(tasks[i])
    if resp and resp.status == 200 then ok = ok + 1 else errs[#errs + 1] = tostring(err) end
  end
  return ok, errs
end
"""


def token_requests(emu):
    return sum(1 for e in emu.requests() if e["path"] == "/auth/oauth2/token")


class OAuth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def setUp(self):
        self.emu.control("POST", "reset")
        self.emu.control("POST", "config", {"clients": {CLIENT: {"secret": SECRET}},
                                            "token_lifetime": 3600})

    def run_script(self, body, secret=SECRET):
        r = run_lua(COMMON + body, self.emu.base, CLIENT, env={"TEST_SECRET": secret})
        for stream in (r.stdout, r.stderr):
            self.assertNotIn(SECRET, stream)
            self.assertNotIn("emu_", stream, "a token was printed")
        self.assertEqual(r.returncode, 0, r.stderr)
        return last_json_line(r.stdout)

    def test_secret_with_form_characters_authenticates(self):
        out = self.run_script(r"""
local secret = os.getenv("TEST_SECRET")
local results = {}
for _, basic in ipairs({false, true}) do
  local a = oauth(secret, {basic = basic})
  local resp, err = cp.http.request{method = "POST", url = v2, auth = a,
    json = {text = "book a table " .. tostring(basic), localeId = "en-US", slots = cp.json.array()}}
  results[#results + 1] = resp and resp.status or tostring(err)
  results[#results + 1] = tostring(a)
end
print(cp.json.encode({results = results}))
""")
        self.assertEqual(out["results"][0], 201)
        self.assertEqual(out["results"][2], 201)
        self.assertIn("cogpipe.auth.oauth2(client_id=pipeline-client", out["results"][1])

    def test_wrong_secret_fails_without_showing_it(self):
        out = self.run_script(r"""
local a = oauth(os.getenv("TEST_SECRET") .. "x")
local resp, err = cp.http.request{url = v2, auth = a}
print(cp.json.encode({resp = resp ~= nil, kind = err.kind, status = err.status, message = err.message,
  excerpt = err.body_excerpt, shown = tostring(a)}))
""")
        self.assertFalse(out["resp"])
        self.assertEqual(out["kind"], "auth")
        self.assertEqual(out["status"], 401)
        self.assertIn("token request failed", out["message"])
        for v in out.values():
            if isinstance(v, str):
                self.assertNotIn(SECRET, v)
                self.assertNotIn("s3cr", v)

    def test_50_requests_after_server_side_expiry_one_token_request(self):
        out = self.run_script(r"""
local a = oauth(os.getenv("TEST_SECRET"))
local first = burst(a, 1)
control("expire_tokens")
local ok, errs = burst(a, 50)
print(cp.json.encode({first = first, ok = ok, err = errs[1] or ""}))
""")
        self.assertEqual(out["first"], 1)
        self.assertEqual(out["ok"], 50, out["err"])
        # one token for the first request, exactly one more for all 50
        self.assertEqual(token_requests(self.emu), 2)
        # A request takes the token when it goes on the wire: those sent
        # before the new one came saw a 401 and were replayed once, those
        # sent after it went through at once.
        api = [e for e in self.emu.requests() if e["path"] != "/auth/oauth2/token"][1:]
        unauthorized = [e for e in api if e["status"] == 401]
        self.assertGreaterEqual(len(unauthorized), 1)
        self.assertEqual(len(api), 50 + len(unauthorized), "each 401 was replayed once, and only once")
        self.assertEqual(sum(1 for e in api if e["status"] == 200), 50)

    def test_50_requests_after_client_side_expiry_one_token_request(self):
        self.emu.control("POST", "config", {"token_lifetime": 2})
        out = self.run_script(r"""
local a = oauth(os.getenv("TEST_SECRET"), {skew = 0.5})
local first = burst(a, 1)
local left = a:expires_in()
cp.sleep(left + 0.1)
local ok, errs = burst(a, 50)
print(cp.json.encode({first = first, ok = ok, err = errs[1] or "", left = left}))
""")
        self.assertEqual(out["ok"], 50, out["err"])
        self.assertLess(out["left"], 1.6)
        self.assertEqual(token_requests(self.emu), 2)
        self.assertEqual([e for e in self.emu.requests() if e["status"] == 401], [],
                         "the token was refreshed before it expired, so no request saw a 401")

    def test_api_key_and_bad_key(self):
        out = self.run_script(r"""
local good = auth.api_key{key = "sandbox-api-key"}
local bad = auth.api_key{key = "not-the-key"}
local r1 = cp.http.request{url = v2, auth = good}
local r2, err = cp.http.request{url = v2, auth = bad}
print(cp.json.encode({good = r1.status, bad = err.status, msg = err.message, shown = tostring(bad)}))
""")
        self.assertEqual(out["good"], 200)
        self.assertEqual(out["bad"], 401)
        self.assertNotIn("not-the-key", out["msg"])
        self.assertNotIn("not-the-key", out["shown"])
        keyed = [e for e in self.emu.requests() if e["headers"]["x_api_key"]]
        self.assertEqual(len(keyed), 2)



class EchoingTokenServer(http.server.BaseHTTPRequestHandler):
    """A token endpoint that refuses every request and quotes its
    Authorization header back, as some gateways do in their error pages."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = ("invalid_client: credentials [%s] refused" %
                self.headers.get("Authorization", "")).encode()
        self.send_response(400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class BasicCredentials(unittest.TestCase):
    def test_echoed_basic_credentials_are_redacted(self):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoingTokenServer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = "http://127.0.0.1:%d" % server.server_address[1]
            r = run_lua(COMMON + r"""
local a = oauth(os.getenv("TEST_SECRET"), {basic = true, retry = false})
local resp, err = cp.http.request{url = v2, auth = a}
print(cp.json.encode({resp = resp ~= nil, kind = err.kind, message = err.message,
  excerpt = err.body_excerpt}))
""", base, CLIENT, env={"TEST_SECRET": SECRET})
        finally:
            server.shutdown()
            server.server_close()
        self.assertEqual(r.returncode, 0, r.stderr)
        out = last_json_line(r.stdout)
        self.assertFalse(out["resp"])
        self.assertEqual(out["kind"], "auth")
        self.assertIn("refused", out["excerpt"] or out["message"])
        # what the header carried: base64 of the form-encoded id:secret
        form = urllib.parse.quote_plus(SECRET)
        creds = base64.b64encode((CLIENT + ":" + form).encode()).decode()
        for stream in (r.stdout, r.stderr):
            self.assertNotIn(creds, stream)
            self.assertNotIn(SECRET, stream)


if __name__ == "__main__":
    unittest.main()
