#!/usr/bin/env python3
"""Self-test of the Cognigy emulator: starts it as a subprocess and exercises
every endpoint, rule and fault. Standard library only.

    python3 tests/emulator/test_emulator.py [-v]
"""

import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import math
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "cognigy_emulator.py")
FIXTURE = os.path.join(HERE, "fixtures", "embeddings.json")

CLIENT, SECRET, API_KEY = "cogpipe-sandbox", "sandbox-secret", "sandbox-api-key"
DATASET_SCOPE = "cognigy:dataset:write cognigy:dataset:read cognigy:admin:retrain"
INTENT_SCOPE = "intent:read intent:write ai:train"

# Restored before every test so tests can change limits freely.
BASELINE = {
    "token_lifetime": 3600,
    "intent_cap": 2000,
    "dataset": {"file_max": 52_428_800},
    "v2": {"json_body_max": 61440, "text_upload_max": 2097152, "page_max": 100, "flow_cap": 10000,
           "intent_cap": 2000, "rate_limit": {"requests": 1000, "window_s": 300}},
    "tasks": {"queued_s": 0.2, "active_s": 0.4},
    "embeddings": {"api_key": None, "dim": 8},
}


def start_emulator(*extra):
    tmp = tempfile.mkdtemp(prefix="cognigy-emu-test-")
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen([sys.executable, EMULATOR, "--port", "0", "--port-file", port_file,
                             "--seed", "7", "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("emulator did not start: " + proc.stderr.read())
    with open(port_file) as fh:
        port_text = fh.read()
    return proc, tmp, port_text, line


def stop_emulator(proc, tmp):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    shutil.rmtree(tmp, ignore_errors=True)


class Client:
    """A keep-alive HTTP client that reconnects after the server dropped it."""

    def __init__(self, port, context=None):
        self.port, self.context = port, context
        self.conn = None

    def _connect(self):
        if self.context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=20, context=self.context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)

    def raw(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = self._connect()
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        ctype = resp.getheader("Content-Type", "")
        parsed = json.loads(data) if "json" in ctype and data else data
        return resp.status, resp, parsed

    def call(self, method, path, json_body=None, form=None, headers=None, body=None):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            body = urlencode(form).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        status, resp, parsed = self.raw(method, path, body, headers)
        return status, parsed, resp

    def close(self):
        if self.conn is not None:
            self.conn.close()


def multipart(fields):
    """fields: list of (name, filename or None, bytes or str)."""
    boundary = "cogpipe-" + uuid.uuid4().hex
    out = []
    for name, filename, data in fields:
        if isinstance(data, str):
            data = data.encode("utf-8")
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode())
        if filename:
            out.append(b"Content-Type: application/octet-stream\r\n")
        out.append(b"\r\n" + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def sign(secret_key, msg_id, stamp, body):
    mac = hmac.new(secret_key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


class EmulatorTest(unittest.TestCase):
    proc = tmp = None

    @classmethod
    def setUpClass(cls):
        cls.proc, cls.tmp, cls.port_text, cls.banner = start_emulator()
        cls.port = int(cls.port_text)

    @classmethod
    def tearDownClass(cls):
        stop_emulator(cls.proc, cls.tmp)

    def setUp(self):
        self.c = Client(self.port)
        self.ctl("POST", "/_emulator/reset")
        self.ctl("POST", "/_emulator/config", BASELINE)

    def tearDown(self):
        self.c.close()

    # helpers ------------------------------------------------------------
    def ctl(self, method, path, body=None):
        status, parsed, _ = self.c.call(method, path, json_body=body if body is not None else None)
        self.assertEqual(status, 200, parsed)
        return parsed

    def configure(self, patch):
        return self.ctl("POST", "/_emulator/config", patch)

    def faults(self, *specs):
        return self.ctl("POST", "/_emulator/faults", list(specs))

    def state(self):
        return self.ctl("GET", "/_emulator/state")

    def token(self, endpoint, scope, client=CLIENT, secret=SECRET):
        status, body, _ = self.c.call("POST", endpoint, form={
            "grant_type": "client_credentials", "client_id": client, "client_secret": secret, "scope": scope})
        self.assertEqual(status, 200, body)
        return body["access_token"]

    def bearer(self, token):
        return {"Authorization": f"Bearer {token}"}

    V2 = {"X-API-Key": API_KEY}


class ProcessTest(EmulatorTest):
    def test_port_file_and_banner(self):
        self.assertRegex(self.port_text, r"^\d+\n$")
        self.assertEqual(self.banner.strip(), f"cognigy-emulator listening on http://127.0.0.1:{self.port}")

    def test_sigterm_exits_cleanly(self):
        proc, tmp, _, _ = start_emulator()
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(10), 0)
        stop_emulator(proc, tmp)

    def test_unknown_route_and_method(self):
        status, body, _ = self.c.call("GET", "/new/v2.0/nothing", headers=self.V2)
        self.assertEqual(status, 404)
        self.assertEqual(body["status"], 404)
        status, _, resp = self.c.call("DELETE", "/datasets/upload")
        self.assertEqual(status, 405)
        self.assertIn("POST", resp.getheader("Allow"))

    def test_concurrent_keepalive_connections(self):
        n, per = 40, 5
        barrier = threading.Barrier(n)
        results, errors = [], []

        def worker(i):
            client = Client(self.port)
            try:
                barrier.wait()
                for j in range(per):
                    status, _, _ = client.call("POST", f"/new/v2.0/flows/cc/intents/i{i % 4}/sentences",
                                               json_body={"text": f"text {i} {j}", "slots": []},
                                               headers=self.V2)
                    results.append(status)
            except Exception as exc:  # collected and reported by the main thread
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(results, [201] * n * per)
        self.assertEqual(self.state()["flows"]["cc"]["sentence_count"], n * per)


class TokenTest(EmulatorTest):
    def test_token_success_and_errors(self):
        status, body, resp = self.c.call("POST", "/oauth/token", form={
            "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET,
            "scope": DATASET_SCOPE})
        self.assertEqual(status, 200)
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(body["expires_in"], 3600)
        self.assertEqual(resp.getheader("Cache-Control"), "no-store")
        bad = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": "nope"}
        self.assertEqual(self.c.call("POST", "/oauth/token", form=bad)[0], 401)
        self.assertEqual(self.c.call("POST", "/oauth/token",
                                     form=dict(bad, client_secret=SECRET, grant_type="password"))[0], 400)
        self.assertEqual(self.c.call("POST", "/oauth/token", form={"grant_type": "client_credentials"})[0], 400)
        self.assertEqual(self.c.call("POST", "/oauth/token", form={"client_id": CLIENT})[0], 400)
        self.assertEqual(self.state()["tokens_issued"], {"/oauth/token": 1})

    def test_secret_with_special_characters(self):
        secret = "p&ss=w+rd% 50 spä€e✓"
        self.configure({"clients": {"odd": secret}})
        self.token("/api/v1/auth/token", INTENT_SCOPE, client="odd", secret=secret)
        # A client that forgets to encode '+' sends a different secret.
        raw = f"grant_type=client_credentials&client_id=odd&client_secret=p%26ss%3Dw+rd%25+50".encode()
        status, _, _ = self.c.call("POST", "/api/v1/auth/token", body=raw,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 401)
        basic = base64.b64encode(b"odd:" + urlencode({"x": secret})[2:].encode()).decode()
        status, body, _ = self.c.call("POST", "/auth/oauth2/token", form={"grant_type": "client_credentials"},
                                      headers={"Authorization": "Basic " + basic})
        self.assertEqual(status, 200, body)

    def test_token_expiry_and_realms(self):
        tok = self.token("/api/v1/auth/token", INTENT_SCOPE)
        path = "/api/v1/intents/i1/examples"
        self.assertEqual(self.c.call("GET", path, headers=self.bearer(tok))[0], 200)
        dataset_tok = self.token("/oauth/token", DATASET_SCOPE)
        self.assertEqual(self.c.call("GET", path, headers=self.bearer(dataset_tok))[0], 401)
        self.assertEqual(self.ctl("POST", "/_emulator/expire_tokens")["expired"], 2)
        status, body, resp = self.c.call("GET", path, headers=self.bearer(tok))
        self.assertEqual((status, body["error"]), (401, "invalid_token"))
        self.assertIn("invalid_token", resp.getheader("WWW-Authenticate"))
        self.assertEqual(self.c.call("GET", path, headers=self.bearer(self.token(
            "/api/v1/auth/token", INTENT_SCOPE)))[0], 200)
        self.configure({"token_lifetime": 1})
        short = self.token("/api/v1/auth/token", INTENT_SCOPE)
        time.sleep(1.1)
        self.assertEqual(self.c.call("GET", path, headers=self.bearer(short))[0], 401)
        self.assertEqual(self.state()["tokens_issued"]["/api/v1/auth/token"], 3)

    def test_request_log_keeps_no_secrets(self):
        tok = self.token("/oauth/token", DATASET_SCOPE)
        self.c.call("GET", "/new/v2.0/tasks/x?api_key=" + API_KEY)
        self.c.call("GET", "/new/v2.0/tasks/x", headers=self.V2)
        self.c.call("GET", "/jobs/x", headers=self.bearer(tok))
        log = self.ctl("GET", "/_emulator/requests")
        text = json.dumps(log)
        for secret in (SECRET, API_KEY, tok):
            self.assertNotIn(secret, text)
        entries = log["requests"]
        self.assertEqual(len(entries), 4)
        self.assertEqual(entries[0]["form"], {"grant_type": "client_credentials", "client_id": CLIENT,
                                              "scope": DATASET_SCOPE, "client_secret": True})
        self.assertTrue(entries[2]["headers"]["x_api_key"])
        self.assertEqual(entries[3]["headers"]["auth_scheme"], "Bearer")
        self.assertEqual([e["status"] for e in entries], [200, 404, 404, 404])
        since = self.ctl("GET", f"/_emulator/requests?since={entries[1]['seq']}")["requests"]
        self.assertEqual([e["seq"] for e in since], [e["seq"] for e in entries[2:]])


def good_payload(ref="ds-1"):
    return {"datasetIdReference": ref, "utteranceCountMatrix": {"greet": 2, "bye": 1},
            "labelTaxonomyDirectives": [{"label": "greet", "type": "intent", "priority": 0}],
            "metadata": {"source": "test"}}


class DatasetTest(EmulatorTest):
    def upload(self, payload, data, token=None, query=""):
        token = token or self.token("/oauth/token", DATASET_SCOPE)
        meta = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        body, ctype = multipart([("metadata", None, meta), ("dataset", "u.txt", data)])
        return self.c.call("POST", "/datasets/upload" + query, body=body,
                           headers={"Content-Type": ctype, **self.bearer(token)})

    def test_upload_replace_and_retrain(self):
        data = "hello\r\nhello\n\n  \nbye\thi\nsee you\n".encode()
        status, body, _ = self.upload(good_payload(), data, query="?autoRetrain=true")
        self.assertEqual(status, 201, body)
        self.assertEqual((body["lineCount"], body["blankLines"], body["utteranceCount"],
                          body["uniqueUtterances"], body["duplicateLines"]), (6, 2, 4, 3, 1))
        self.assertEqual(body["parsingSuccessRate"], 50.0)
        job = body["retrainJobId"]
        tok = self.token("/oauth/token", DATASET_SCOPE)
        seen = set()
        deadline = time.time() + 5
        while time.time() < deadline:
            seen.add(self.c.call("GET", f"/jobs/{job}", headers=self.bearer(tok))[1]["status"])
            if "completed" in seen:
                break
            time.sleep(0.05)
        self.assertEqual(seen, {"queued", "running", "completed"})
        status, body2, _ = self.upload(good_payload(), b"other\n")
        self.assertEqual(status, 200)
        self.assertNotIn("retrainJobId", body2)
        self.assertEqual(body2["datasetId"], body["datasetId"])
        st = self.state()
        self.assertEqual(st["dataset_uploads"], {"ds-1": 2})
        self.assertEqual(st["datasets"][body["datasetId"]]["lines"], ["other"])

    def test_payload_rules(self):
        bad = good_payload()
        bad["datasetIdReference"] = ""
        bad["utteranceCountMatrix"] = {"a": 1.5, "b": True, "c": 150.0, "d": -1, "e": 100001, "f": 100000}
        bad["labelTaxonomyDirectives"] = [{"label": "", "type": "intent", "priority": -1},
                                          {"label": "x", "type": "", "priority": 1.0}]
        bad["metadata"] = {"k": 1}
        status, body, _ = self.upload(bad, b"hi\n")
        self.assertEqual(status, 400)
        paths = sorted(e["path"] for e in body["errors"])
        self.assertEqual(paths, sorted([
            "datasetIdReference", "utteranceCountMatrix.a", "utteranceCountMatrix.b", "utteranceCountMatrix.c",
            "utteranceCountMatrix.d", "utteranceCountMatrix.e", "labelTaxonomyDirectives[0].label",
            "labelTaxonomyDirectives[0].priority", "labelTaxonomyDirectives[1].type",
            "labelTaxonomyDirectives[1].priority", "metadata.k"]))
        empty = dict(good_payload(), labelTaxonomyDirectives=[])
        self.assertEqual(self.upload(empty, b"hi\n")[1]["errors"][0]["path"], "labelTaxonomyDirectives")
        self.assertEqual(self.upload(b"{not json", b"hi\n")[0], 400)
        self.assertEqual(self.state()["datasets"], {})

    def test_file_rules(self):
        cases = {b"\xef\xbb\xbfhi\n": "byte order mark", b"ok\nbad \xff\n": "invalid UTF-8",
                 b"ok\nbell\x07\n": "U+0007", b"a\rb\n": "U+000D", "del\u0085\n".encode(): "U+0085"}
        for data, needle in cases.items():
            status, body, _ = self.upload(good_payload(), data)
            self.assertEqual(status, 400, data)
            self.assertIn(needle, body["errors"][0]["message"])
        status, body, _ = self.upload(good_payload(), b"ok\nbell\x07\n")
        self.assertEqual((body["errors"][0]["line"], body["errors"][0]["column"]), (2, 5))
        self.assertEqual(self.upload(good_payload(), b"tab\tis fine\n")[0], 201)

    def test_size_limits(self):
        self.configure({"dataset": {"file_max": 100}})
        self.assertEqual(self.upload(good_payload(), b"a" * 100)[0], 201)
        self.assertEqual(self.upload(good_payload(), b"a" * 101)[0], 413)
        self.configure({"dataset": {"file_max": 52_428_800}})
        status, body, _ = self.upload(good_payload(), b"a" * 52_428_801)
        self.assertEqual((status, body["error"]), (413, "payload_too_large"))
        # A body far over the limit is refused before it is sent when the client asks first.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"POST /datasets/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
                         b" boundary=b\r\nContent-Length: 200000000\r\nExpect: 100-continue\r\n\r\n")
            head = sock.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head)

    def test_auth_and_scope(self):
        self.assertEqual(self.upload(good_payload(), b"x\n", token="nope")[0], 401)
        self.configure({"clients": {"writer": {"secret": "w", "scopes": ["cognigy:dataset:write"]}}})
        tok = self.token("/oauth/token", DATASET_SCOPE, client="writer", secret="w")
        self.assertEqual(self.upload(good_payload(), b"x\n", token=tok)[0], 201)
        status, body, _ = self.upload(good_payload(), b"x\n", token=tok, query="?autoRetrain=true")
        self.assertEqual((status, body["error"]), (403, "insufficient_scope"))
        self.configure({"clients": {"reader": {"secret": "r", "scopes": ["cognigy:dataset:read"]}}})
        tok = self.token("/oauth/token", DATASET_SCOPE, client="reader", secret="r")
        self.assertEqual(self.upload(good_payload(), b"x\n", token=tok)[0], 403)


class IntentTest(EmulatorTest):
    def setUp(self):
        super().setUp()
        self.tok = self.token("/api/v1/auth/token", INTENT_SCOPE)

    def batch(self, examples, trigger=False, intent="book"):
        status, body, _ = self.c.call("POST", f"/api/v1/intents/{intent}/examples/batch",
                                      json_body={"examples": examples, "trigger_retrain": trigger},
                                      headers=self.bearer(self.tok))
        self.assertEqual(status, 200, body)
        return body

    def test_valid_batch_and_retrain_job(self):
        body = self.batch([{"text": "book a table", "annotations": [{"entity_id": "e", "start": 7, "end": 12}],
                            "is_active": True}, {"text": "reserve for two"}], trigger=True)
        self.assertTrue(body["success"])
        self.assertEqual((body["uploaded_count"], body["rejected_count"]), (2, 0))
        job = body["retrain_job_id"]
        self.assertIsInstance(job, str)
        self.assertIsNone(self.batch([{"text": "another"}])["retrain_job_id"])
        statuses = set()
        deadline = time.time() + 5
        while "completed" not in statuses and time.time() < deadline:
            statuses.add(self.c.call("GET", f"/api/v1/jobs/{job}", headers=self.bearer(self.tok))[1]["status"])
            time.sleep(0.05)
        self.assertEqual(statuses, {"queued", "running", "completed"})
        st = self.state()["intents"]["book"]
        self.assertEqual([e["text"] for e in st["examples"]], ["book a table", "reserve for two", "another"])
        self.assertEqual(st["batches"], 2)

    def test_rules_reject_whole_batch(self):
        cases = [
            ([{"text": ""}], "examples[0].text"),
            ([{"text": "😀" * 501}], "examples[0].text"),
            ([{"text": " padded"}], "examples[0].text"),
            ([{"text": "ok", "annotations": [{"entity_id": "e", "start": -1, "end": 1}]}],
             "examples[0].annotations[0].start"),
            ([{"text": "ok", "annotations": [{"entity_id": "e", "start": 1, "end": 1}]}],
             "examples[0].annotations[0].end"),
            ([{"text": "ok"}, {"text": "😀😀", "annotations": [{"entity_id": "e", "start": 0, "end": 3}]}],
             "examples[1].annotations[0].end"),
            ([{"text": "ok", "annotations": [{"entity_id": "", "start": 0, "end": 1}]}],
             "examples[0].annotations[0].entity_id"),
            ([], "examples"),
            ([{"text": f"t{i}"} for i in range(101)], "examples"),
            ([{"text": "Straße"}, {"text": "STRASSE"}], "examples[1].text"),
        ]
        for examples, path in cases:
            body = self.batch(examples)
            self.assertFalse(body["success"], path)
            self.assertEqual((body["uploaded_count"], body["rejected_count"]), (0, len(examples)))
            self.assertIsNone(body["retrain_job_id"])
            self.assertIn(path, [e["path"] for e in body["errors"]])
        self.assertTrue(self.batch([{"text": "😀" * 500, "annotations": [
            {"entity_id": "e", "start": 0, "end": 500}]}])["success"])
        self.assertEqual(self.state()["intents"]["book"]["count"], 1)

    def test_active_cap_counts_existing(self):
        self.configure({"intent_cap": 4})
        self.ctl("POST", "/_emulator/seed", {"intents": {"book": ["a", "b", {"text": "c", "is_active": False}]}})
        self.assertTrue(self.batch([{"text": "d"}, {"text": "e"}, {"text": "f", "is_active": False}])["success"])
        body = self.batch([{"text": "g"}])
        self.assertFalse(body["success"])
        self.assertIn("limit is 4", body["errors"][0]["message"])

    def test_listing_pages(self):
        self.ctl("POST", "/_emulator/seed", {"intents": {"book": [f"x{i}" for i in range(7)]}})
        texts, offset = [], 0
        while offset is not None:
            status, body, _ = self.c.call("GET", f"/api/v1/intents/book/examples?limit=3&offset={offset}",
                                          headers=self.bearer(self.tok))
            texts += [e["text"] for e in body["examples"]]
            offset = body["next_offset"]
        self.assertEqual(texts, [f"x{i}" for i in range(7)])
        self.assertEqual(self.c.call("GET", "/api/v1/intents/book/examples?limit=0",
                                     headers=self.bearer(self.tok))[0], 400)

    def test_malformed_body_and_scope(self):
        status, _, _ = self.c.call("POST", "/api/v1/intents/b/examples/batch", body=b"{",
                                   headers={"Content-Type": "application/json", **self.bearer(self.tok)})
        self.assertEqual(status, 400)
        self.configure({"clients": {"ro": {"secret": "r", "scopes": ["intent:read", "intent:write"]}}})
        self.tok = self.token("/api/v1/auth/token", INTENT_SCOPE, client="ro", secret="r")
        status, _, _ = self.c.call("POST", "/api/v1/intents/b/examples/batch",
                                   json_body={"examples": [{"text": "x"}], "trigger_retrain": True},
                                   headers=self.bearer(self.tok))
        self.assertEqual(status, 403)


class V2Test(EmulatorTest):
    base = "/new/v2.0/flows/f1/intents/i1/sentences"

    def test_auth(self):
        self.assertEqual(self.c.call("GET", self.base)[0], 401)
        status, body, _ = self.c.call("GET", self.base, headers={"X-API-Key": "wrong"})
        self.assertEqual(status, 401)
        for key in ("type", "title", "status", "detail", "code", "traceId", "details"):
            self.assertIn(key, body)
        self.assertEqual(self.c.call("GET", self.base, headers=self.V2)[0], 200)
        tok = self.token("/auth/oauth2/token", "")
        self.assertEqual(self.c.call("GET", self.base, headers=self.bearer(tok))[0], 200)

    def test_create_and_rules(self):
        status, body, _ = self.c.call("POST", self.base, json_body={"text": "hi there", "localeId": "de-DE",
                                                                    "slots": []}, headers=self.V2)
        self.assertEqual(status, 201)
        self.assertEqual((body["text"], body["slots"], body["localeReference"]), ("hi there", [], "de-DE"))
        self.assertRegex(body["_id"], r"^[0-9a-f]{24}$")
        status, body, _ = self.c.call("POST", self.base, json_body={"text": "x", "slots": {}}, headers=self.V2)
        self.assertEqual(status, 400)
        self.assertIn("slots must be an array", body["detail"])
        for text in ("", "   ", "a" * 501, 5):
            self.assertEqual(self.c.call("POST", self.base, json_body={"text": text, "slots": []},
                                         headers=self.V2)[0], 400, text)
        self.assertEqual(self.c.call("POST", self.base, json_body={"text": "é" * 500, "slots": []},
                                     headers=self.V2)[0], 201)
        status, _, _ = self.c.call("POST", self.base, body=b'{"text": "x"}',
                                   headers={"Content-Type": "text/plain", **self.V2})
        self.assertEqual(status, 415)

    def test_json_body_limit(self):
        status, body, _ = self.c.call("POST", self.base, json_body={"text": "x", "slots": [], "pad": "a" * 61440},
                                      headers=self.V2)
        self.assertEqual((status, body["status"]), (413, 413))
        ops = [{"op": "create", "value": {"text": f"sentence {i:05d}", "slots": []}} for i in range(900)]
        payload = json.dumps({"operations": ops}).encode()
        self.assertLessEqual(len(payload), 61440)
        self.assertEqual(self.c.call("PATCH", self.base, body=payload,
                                     headers={"Content-Type": "application/json", **self.V2})[0], 200)

    def test_cursor_pagination(self):
        texts = [f"s{i}" for i in range(250)]
        self.ctl("POST", "/_emulator/seed", {"v2": {"f1": {"i1": texts}}})
        got, cursor, pages = [], None, []
        while True:
            path = self.base + "?limit=100" + (f"&next={cursor}" if cursor else "")
            status, body, _ = self.c.call("GET", path, headers=self.V2)
            self.assertEqual((status, body["total"]), (200, 250))
            pages.append(body)
            got += [s["text"] for s in body["items"]]
            cursor = body["nextCursor"]
            if cursor is None:
                break
        self.assertEqual(got, texts)
        self.assertEqual([len(p["items"]) for p in pages], [100, 100, 50])
        self.assertIsNone(pages[0]["previousCursor"])
        status, back, _ = self.c.call("GET", self.base + f"?limit=100&previous={pages[2]['previousCursor']}",
                                      headers=self.V2)
        self.assertEqual([s["text"] for s in back["items"]], texts[100:200])
        self.assertEqual(len(self.c.call("GET", self.base, headers=self.V2)[1]["items"]), 25)
        for query in ("?limit=101", "?limit=0", "?limit=x", "?next=garbage"):
            self.assertEqual(self.c.call("GET", self.base + query, headers=self.V2)[0], 400, query)

    def test_patch_operations_are_atomic(self):
        self.ctl("POST", "/_emulator/seed", {"v2": {"f1": {"i1": ["a", "b", "c"]}}})
        items = self.c.call("GET", self.base, headers=self.V2)[1]["items"]
        ids = [s["_id"] for s in items]
        bad = {"operations": [{"op": "create", "value": {"text": "d", "slots": []}},
                              {"op": "delete", "id": ids[0]}, {"op": "delete", "id": "missing"}]}
        status, body, _ = self.c.call("PATCH", self.base, json_body=bad, headers=self.V2)
        self.assertEqual(status, 400)
        self.assertEqual(body["details"][0]["path"], "operations[2].id")
        self.assertEqual(self.state()["flows"]["f1"]["sentence_count"], 3)
        good = {"operations": [{"op": "create", "value": {"text": "d", "slots": []}},
                               {"op": "update", "id": ids[1], "value": {"text": "B"}},
                               {"op": "delete", "id": ids[0]}]}
        status, body, _ = self.c.call("PATCH", self.base, json_body=good, headers=self.V2)
        self.assertEqual((status, body["created"], body["updated"], body["deleted"]), (200, 1, 1, 1))
        texts = [s["text"] for s in self.state()["flows"]["f1"]["intents"]["i1"]["sentences"]]
        self.assertEqual(texts, ["B", "c", "d"])
        bad_slots = {"operations": [{"op": "create", "value": {"text": "e", "slots": {}}}]}
        status, body, _ = self.c.call("PATCH", self.base, json_body=bad_slots, headers=self.V2)
        self.assertEqual(status, 400)
        self.assertIn("slots must be an array", body["detail"])

    def test_caps(self):
        self.configure({"v2": {"intent_cap": 3, "flow_cap": 4}})
        self.ctl("POST", "/_emulator/seed", {"v2": {"f1": {"i1": ["a", "b"], "i2": ["c"]}}})
        self.assertEqual(self.c.call("POST", self.base, json_body={"text": "x", "slots": []},
                                     headers=self.V2)[0], 201)
        status, body, _ = self.c.call("POST", self.base, json_body={"text": "y", "slots": []}, headers=self.V2)
        self.assertEqual((status, body["code"]), (400, "intent_sentence_limit"))
        status, body, _ = self.c.call("POST", "/new/v2.0/flows/f1/intents/i3/sentences",
                                      json_body={"text": "y", "slots": []}, headers=self.V2)
        self.assertEqual((status, body["code"]), (400, "flow_sentence_limit"))

    def test_rate_limit(self):
        self.configure({"v2": {"rate_limit": {"requests": 5, "window_s": 2}}})
        statuses = [self.c.call("GET", self.base, headers=self.V2) for _ in range(6)]
        self.assertEqual([s[0] for s in statuses], [200] * 5 + [429])
        self.assertIn(statuses[-1][2].getheader("Retry-After"), ("1", "2"))
        self.assertEqual(statuses[-1][1]["code"], "rate_limited")

    def import_file(self, name, content, mode, flow="f2"):
        body, ctype = multipart([("file", name, content), ("localeId", None, "en-US"), ("mode", None, mode)])
        return self.c.call("POST", f"/new/v2.0/flows/{flow}/intents/import", body=body,
                           headers={"Content-Type": ctype, **self.V2})

    def sentences(self, flow="f2"):
        intents = self.state()["flows"][flow]["intents"]
        return {name: [s["text"] for s in v["sentences"]] for name, v in intents.items()}

    def test_import_modes(self):
        self.ctl("POST", "/_emulator/seed", {"v2": {"f2": {"greet": ["hi", "hello"]}}})
        doc = json.dumps([{"intent": "greet", "sentences": ["hello", "hey"]},
                          {"name": "bye", "sentences": ["bye", {"text": "ciao", "slots": []}]}])
        status, task, _ = self.import_file("i.json", doc, "skip")
        self.assertEqual((status, task["status"], task["type"]), (202, "queued", "importIntents"))
        self.assertEqual(self.sentences(), {"greet": ["hi", "hello"], "bye": ["bye", "ciao"]})
        csv_doc = "intent,sentence\ngreet,hey\ngreet,\"hi, you\"\nbye,bye\n"
        self.assertEqual(self.import_file("i.csv", csv_doc, "merge")[0], 202)
        self.assertEqual(self.sentences(), {"greet": ["hi", "hello", "hey", "hi, you"], "bye": ["bye", "ciao"]})
        self.assertEqual(self.import_file("i.csv", "greet,yo\n", "overwrite")[0], 202)
        self.assertEqual(self.sentences(), {"greet": ["yo"], "bye": ["bye", "ciao"]})
        self.assertEqual(self.import_file("i.csv", "greet,yo\n", "replace")[0], 400)
        self.assertEqual(self.import_file("i.json", "[{\"sentences\": []}]", "skip")[0], 400)
        self.assertEqual(self.import_file("i.csv", "greet,yo,extra\n", "skip")[0], 400)
        status, body, _ = self.import_file("big.csv", "greet,x\n" * 300_000, "merge")
        self.assertEqual((status, body["code"]), (413, "payload_too_large"))

    def task_statuses(self, task_id, until=("done", "error", "cancelled")):
        seen = []
        deadline = time.time() + 5
        while time.time() < deadline:
            body = self.c.call("GET", f"/new/v2.0/tasks/{task_id}", headers=self.V2)[1]
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] in until:
                return seen, body
            time.sleep(0.03)
        self.fail(f"task {task_id} did not finish: {seen}")

    def test_train_task_progression(self):
        status, task, _ = self.c.call("POST", "/new/v2.0/flows/f1/intents/train",
                                      json_body={"localeId": "en-US", "mode": "full"}, headers=self.V2)
        self.assertEqual(status, 202)
        self.assertEqual((task["status"], task["type"], task["currentStep"], task["totalStep"]),
                         ("queued", "trainNlu", 0, 5))
        seen, final = self.task_statuses(task["_id"])
        self.assertEqual(seen, ["queued", "active", "done"])
        self.assertEqual((final["currentStep"], final["failReason"]), (5, None))
        self.assertEqual(self.c.call("POST", "/new/v2.0/flows/f1/intents/train",
                                     json_body={"mode": "slow"}, headers=self.V2)[0], 400)
        self.assertEqual(self.c.call("GET", "/new/v2.0/tasks/nope", headers=self.V2)[0], 404)

    def test_task_failure_and_cancel(self):
        self.faults({"match": {"method": "POST", "path": "/intents/train$"}, "action": "fail_task",
                     "fail_reason": "NLU model could not be built"})
        task = self.c.call("POST", "/new/v2.0/flows/f1/intents/train", json_body={"mode": "quick"},
                           headers=self.V2)[1]
        seen, final = self.task_statuses(task["_id"])
        self.assertEqual((seen[-1], final["failReason"]), ("error", "NLU model could not be built"))
        self.ctl("DELETE", "/_emulator/faults")
        task = self.c.call("POST", "/new/v2.0/flows/f1/intents/train", json_body={}, headers=self.V2)[1]
        cancelled = self.c.call("POST", f"/new/v2.0/tasks/{task['_id']}/cancel", headers=self.V2)[1]
        self.assertEqual(cancelled["status"], "cancelled")


class FaultTest(EmulatorTest):
    path = "/new/v2.0/flows/ff/intents/i/sentences"

    def get(self):
        return self.c.call("GET", self.path, headers=EmulatorTest.V2)

    def test_share(self):
        self.faults({"match": {"path": "/sentences$"}, "status": 429, "retry_after": "1", "share": 0.3})
        results = [self.get() for _ in range(200)]
        hits = [r for r in results if r[0] == 429]
        self.assertTrue(30 <= len(hits) <= 90, len(hits))
        self.assertEqual({r[0] for r in results}, {200, 429})
        self.assertTrue(all(r[2].getheader("Retry-After") == "1" for r in hits))
        view = self.ctl("GET", "/_emulator/faults")["faults"][0]
        self.assertEqual((view["matched"], view["fired"]), (200, len(hits)))
        self.assertEqual(self.state()["requests"]["by_status"]["429"], len(hits))

    def test_every_and_first(self):
        self.faults({"match": {"method": "GET", "path": "sentences"}, "status": 500, "every": 3})
        self.assertEqual([self.get()[0] for _ in range(9)], [200, 200, 500] * 3)
        self.faults({"match": {"path": "sentences"}, "status": 503, "first": 2,
                     "retry_after_date_s": 2, "body": {"custom": True}})
        first = self.get()
        self.assertEqual((first[0], first[1]), (503, {"custom": True}))
        self.assertIsNotNone(email.utils.parsedate_to_datetime(first[2].getheader("Retry-After")))
        self.assertEqual([self.get()[0] for _ in range(3)], [503, 200, 200])
        self.ctl("DELETE", "/_emulator/faults")
        self.assertEqual(self.ctl("GET", "/_emulator/faults")["faults"], [])

    def test_reset_after_body_applies_the_request(self):
        self.faults({"match": {"method": "POST", "path": "sentences$"}, "action": "reset_after_body", "first": 1})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            self.c.call("POST", self.path, json_body={"text": "lost answer", "slots": []}, headers=self.V2)
        self.assertEqual(self.c.call("POST", self.path, json_body={"text": "second", "slots": []},
                                     headers=self.V2)[0], 201)
        st = self.state()
        self.assertEqual([s["text"] for s in st["flows"]["ff"]["intents"]["i"]["sentences"]],
                         ["lost answer", "second"])
        log = self.ctl("GET", "/_emulator/requests")["requests"]
        self.assertEqual([(e["status"], (e["fault"] or {}).get("action")) for e in log],
                         [(None, "reset_after_body"), (201, None)])

    def test_reset_before_body_applies_nothing(self):
        self.faults({"match": {"method": "POST"}, "action": "reset_before_body", "first": 1})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            self.c.call("POST", self.path, json_body={"text": "never", "slots": []}, headers=self.V2)
        self.assertNotIn("ff", self.state()["flows"])

    def test_delay(self):
        self.faults({"match": {"path": "sentences"}, "action": "delay", "delay_ms": 300})
        start = time.monotonic()
        self.assertEqual(self.get()[0], 200)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)

    def test_control_api_is_never_faulted(self):
        self.faults({"match": {"path": ""}, "status": 500})
        self.assertEqual(self.c.call("GET", "/_emulator/state")[0], 200)
        self.assertEqual(self.c.call("POST", "/_emulator/faults", json_body=[{"action": "explode"}])[0], 400)

    def test_reset_clears_state_and_faults(self):
        self.faults({"match": {"path": "nothing"}, "status": 500})
        self.ctl("POST", "/_emulator/seed", {"v2": {"f": {"i": ["x"]}}})
        self.ctl("POST", "/_emulator/reset")
        st = self.state()
        self.assertEqual((st["flows"], st["faults"]), ({}, []))


class WebhookTest(EmulatorTest):
    key = b"0123456789abcdef0123456789abcdef"

    def setUp(self):
        super().setUp()
        self.configure({"sinks": {"ci": {"secret": "whsec_" + base64.b64encode(self.key).decode(), "status": None},
                                  "raw": "plain secret"}})

    def send(self, sink, body, msg_id="msg_1", stamp=None, signature=None, key=None):
        stamp = str(int(time.time())) if stamp is None else str(stamp)
        data = json.dumps(body).encode()
        signature = signature or sign(key or self.key, msg_id, stamp, data)
        return self.c.call("POST", f"/_sink/webhooks/{sink}", body=data, headers={
            "Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": stamp,
            "webhook-signature": signature})

    def test_signatures(self):
        self.assertEqual(self.send("ci", {"status": "ok"})[0], 200)
        self.assertEqual(self.send("ci", {"status": "ok"}, msg_id="m2", key=b"wrong")[0], 401)
        self.assertEqual(self.send("ci", {"a": 1}, msg_id="m3", stamp=int(time.time()) - 301)[0], 400)
        self.assertEqual(self.send("ci", {"a": 1}, msg_id="m4", stamp=int(time.time()) + 301)[0], 400)
        stamp = str(int(time.time()))
        data = json.dumps({"rotated": True}).encode()
        rotated = " ".join([sign(b"old key", "m5", stamp, data), "v2,ignored",
                            sign(self.key, "m5", stamp, data)])
        status, _, _ = self.c.call("POST", "/_sink/webhooks/ci", body=data, headers={
            "webhook-id": "m5", "webhook-timestamp": stamp, "webhook-signature": rotated})
        self.assertEqual(status, 200)
        self.assertEqual(self.send("raw", {"r": 1}, key=b"plain secret")[0], 200)
        sink = self.state()["webhooks"]["ci"]
        self.assertEqual([(d["id"], d["valid"]) for d in sink["deliveries"]], [("msg_1", True), ("m5", True)])
        self.assertEqual(sink["deliveries"][1]["body"], {"rotated": True})
        self.assertEqual([r["reason"] for r in sink["rejected"]],
                         ["bad_signature", "timestamp_too_old", "timestamp_in_future"])

    def test_duplicates_and_configured_status(self):
        self.assertEqual(self.send("ci", {"n": 1})[0], 200)
        status, body, _ = self.send("ci", {"n": 1})
        self.assertEqual((status, body["duplicate"]), (200, True))
        self.configure({"sinks": {"ci": {"status": 410}, "busy": {"status": 503, "retry_after": "3"}}})
        self.assertEqual(self.send("ci", {"n": 2}, msg_id="m9")[0], 410)
        status, _, resp = self.send("busy", {"n": 3})
        self.assertEqual((status, resp.getheader("Retry-After")), (503, "3"))
        sink = self.state()["webhooks"]["ci"]
        self.assertEqual((len(sink["deliveries"]), sink["duplicates"], sink["answered"]["410"]), (1, 1, 1))


class EmbeddingsTest(EmulatorTest):
    def embed(self, inputs, **extra):
        status, body, _ = self.c.call("POST", "/v1/embeddings", json_body={"model": "m", "input": inputs}, **extra)
        self.assertEqual(status, 200, body)
        return [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]

    def test_fixture_cosines(self):
        with open(FIXTURE, encoding="utf-8") as fh:
            texts = list(json.load(fh)["vectors"])
        vectors = self.embed(texts)
        self.assertEqual({len(v) for v in vectors}, {8})
        pairs = {(0, 1): 0.95, (2, 3): 0.92}
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                c = cosine(vectors[i], vectors[j])
                if (i, j) in pairs:
                    self.assertAlmostEqual(c, pairs[(i, j)], places=3)
                else:
                    self.assertLess(abs(c), 0.5, (texts[i], texts[j]))

    def test_unknown_texts_and_options(self):
        a1, b = self.embed(["unknown text one", "unknown text two"])
        (a2,) = self.embed("unknown text one")
        self.assertEqual(a1, a2)
        self.assertAlmostEqual(sum(x * x for x in a1), 1.0, places=9)
        self.assertNotEqual(a1, b)
        status, body, _ = self.c.call("POST", "/v1/embeddings", json_body={
            "input": ["reset my password"], "encoding_format": "base64"})
        self.assertEqual(body["model"], "emulator-embed-8")
        packed = struct.unpack("<8f", base64.b64decode(body["data"][0]["embedding"]))
        self.assertAlmostEqual(sum(x * x for x in packed), 1.0, places=5)
        self.assertEqual(self.c.call("POST", "/v1/embeddings", json_body={"input": []})[0], 400)
        self.assertEqual(self.c.call("POST", "/v1/embeddings", json_body={"input": [[1, 2]]})[0], 400)
        self.configure({"embeddings": {"dim": 64}})
        big = self.embed(["tell me a joke", "where is my package"])
        self.assertEqual(len(big[0]), 64)
        self.assertLess(abs(cosine(*big)), 0.5)

    def test_api_key(self):
        self.configure({"embeddings": {"api_key": "emb-key"}})
        status, body, _ = self.c.call("POST", "/v1/embeddings", json_body={"input": "x"})
        self.assertEqual((status, body["error"]["code"]), (401, "invalid_api_key"))
        self.embed("x", headers={"Authorization": "Bearer emb-key"})
        self.assertEqual(self.state()["embeddings"], {"requests": 1, "inputs": 1})


class TLSTest(unittest.TestCase):
    def test_https_with_self_signed_certificate(self):
        if shutil.which("openssl") is None:
            self.skipTest("openssl command not available")
        tmp = tempfile.mkdtemp(prefix="cognigy-emu-tls-")
        try:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", key, "-out", cert], check=True, capture_output=True)
            proc, ptmp, port_text, banner = start_emulator("--tls-cert", cert, "--tls-key", key)
            try:
                port = int(port_text)
                self.assertTrue(banner.startswith("cognigy-emulator listening on https://"))
                with self.assertRaises(ssl.SSLCertVerificationError):
                    Client(port, ssl.create_default_context()).call("GET", "/_emulator/health")
                client = Client(port, ssl.create_default_context(cafile=cert))
                self.assertEqual(client.call("GET", "/_emulator/health")[0], 200)
                client.close()
            finally:
                stop_emulator(proc, ptmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
