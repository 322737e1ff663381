#!/usr/bin/env python3
"""TLS: a server with a self-signed certificate is refused by default with
a clear TLS error, accepted when that certificate is given as the CA file,
and reached with insecure = true only with a warning on stderr."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import Emulator, last_json_line, run_lua  # noqa: E402

SCRIPT = r"""
local cp = require "cogpipe"
local url, ca = arg[1] .. "/_emulator/health", arg[2]
local out = {}
local resp, err = cp.http.request{url = url}
out.default = resp and resp.status or {kind = err.kind, message = err.message,
  retryable = err.retryable, attempts = err.attempts}
resp, err = cp.http.request{url = url, ca_file = ca}
out.with_ca = resp and resp.status or tostring(err)
resp, err = cp.http.request{url = url, ca_file = arg[3]}
out.other_ca = resp and resp.status or {kind = err.kind, message = err.message}
if arg[4] == "insecure" then
  resp, err = cp.http.request{url = url, insecure = true}
  out.insecure = resp and resp.status or tostring(err)
end
print(cp.json.encode(out))
"""


def make_cert(directory, name):
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
class Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="cogpipe-tls-")
        cls.cert, cls.key = make_cert(cls.dir, "server")
        cls.other, _ = make_cert(cls.dir, "other")
        cls.emu = Emulator(tls=(cls.cert, cls.key))

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        shutil.rmtree(cls.dir)

    def test_verification_on_by_default_and_ca_file(self):
        r = run_lua(SCRIPT, self.emu.base, self.cert, self.other)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = last_json_line(r.stdout)
        self.assertIsInstance(out["default"], dict, "a self-signed server must be refused")
        self.assertEqual(out["default"]["kind"], "tls")
        self.assertIn("certificate", out["default"]["message"].lower())
        self.assertFalse(out["default"]["retryable"])
        self.assertEqual(out["default"]["attempts"], 1, "a certificate failure is not retried")
        self.assertEqual(out["with_ca"], 200)
        self.assertEqual(out["other_ca"]["kind"], "tls")
        self.assertNotIn("warning", r.stderr.lower())

    def test_insecure_warns(self):
        r = run_lua(SCRIPT, self.emu.base, self.cert, self.other, "insecure")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = last_json_line(r.stdout)
        self.assertEqual(out["insecure"], 200)
        self.assertIn("warning", r.stderr.lower())
        self.assertIn("verification is off", r.stderr)


if __name__ == "__main__":
    unittest.main()
