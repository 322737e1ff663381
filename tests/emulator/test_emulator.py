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

# Restored before every test so tests can change limits freely. json_body_max
# is left alone on purpose: the tests check its default.
BASELINE = {
    "strict": False,
    "token_lifetime": 3600,
    "tokens": {"revoke_every": 0},
    "intent_cap": 2000,
    "dataset": {"file_max": 52_428_800},
    "retry_after": {"grace_s": 0.05},
    "client_rate_limit": {"requests": 0, "window_s": 60},
    "v2": {"text_upload_max": 2097152, "page_max": 100, "flow_cap": 10000,
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

    def __init__(self, port, context=None, source=None, timeout=20):
        self.port, self.context = port, context
        # Another loopback address is another client IP to the emulator.
        self.source = (source, 0) if source else None
        self.timeout = timeout
        self.conn = None

    def _connect(self):
        if self.context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=self.timeout,
                                               context=self.context, source_address=self.source)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout,
                                          source_address=self.source)

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

    def log(self):
        return self.ctl("GET", "/_emulator/requests")["requests"]

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
        raw = "grant_type=client_credentials&client_id=odd&client_secret=p%26ss%3Dw+rd%25+50".encode()
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

    def test_same_reference_new_keeps_every_upload(self):
        self.configure({"dataset": {"same_reference": "new"}})
        first = self.upload(good_payload(), b"one\n")
        second = self.upload(good_payload(), b"two\n")
        self.assertEqual((first[0], second[0]), (201, 201))
        self.assertFalse(second[1]["replaced"])
        self.assertNotEqual(first[1]["datasetId"], second[1]["datasetId"])
        st = self.state()
        self.assertEqual(st["dataset_uploads"], {"ds-1": 2})
        self.assertEqual(sorted(d["lines"][0] for d in st["datasets"].values()), ["one", "two"])
        self.assertEqual({d["datasetIdReference"] for d in st["datasets"].values()}, {"ds-1"})

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


class JobsTest(EmulatorTest):
    upload = DatasetTest.upload

    def jobs(self):
        """(dataset job path, intent job path, dataset token, intent token)."""
        dtok = self.token("/oauth/token", DATASET_SCOPE)
        itok = self.token("/api/v1/auth/token", INTENT_SCOPE)
        djob = self.upload(good_payload(), b"hi\n", token=dtok, query="?autoRetrain=true")[1]["retrainJobId"]
        ijob = self.c.call("POST", "/api/v1/intents/i/examples/batch", headers=self.bearer(itok),
                           json_body={"examples": [{"text": "x"}], "trigger_retrain": True})[1]["retrain_job_id"]
        self.assertTrue(djob and ijob)
        return f"/jobs/{djob}", f"/api/v1/jobs/{ijob}", dtok, itok

    def test_job_endpoint_modes(self):
        dpath, ipath, dtok, itok = self.jobs()
        self.assertEqual(self.c.call("GET", dpath, headers=self.bearer(dtok))[0], 200)
        self.assertEqual(self.c.call("GET", ipath, headers=self.bearer(itok))[0], 200)
        # "absent": no route at all, for any method, as the contract defines none.
        self.configure({"jobs": {"endpoint": "absent"}})
        for path, tok in ((dpath, dtok), (ipath, itok)):
            status, body, _ = self.c.call("GET", path, headers=self.bearer(tok))
            self.assertEqual(status, 404)
            self.assertIn("no route", body["message"])
            self.assertEqual(self.c.call("DELETE", path, headers=self.bearer(tok))[0], 404)
        # Jobs are still started and reported; only asking about them fails.
        self.assertEqual(len(self.state()["jobs"]), 2)
        self.assertIn("retrainJobId", self.upload(good_payload("ds-2"), b"x\n", query="?autoRetrain=true")[1])
        # "not_found": the route exists, and never knows the job.
        self.configure({"jobs": {"endpoint": "not_found"}})
        for path, tok in ((dpath, dtok), (ipath, itok)):
            status, body, _ = self.c.call("GET", path, headers=self.bearer(tok))
            self.assertEqual((status, body["message"]), (404, "no such job"))
            self.assertEqual(self.c.call("DELETE", path)[0], 405)


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

    def test_reverse_order_offset_pages(self):
        self.configure({"lists": {"order": "reverse"}})
        self.ctl("POST", "/_emulator/seed", {"intents": {"book": [f"x{i}" for i in range(7)]}})
        texts, offset, pages = [], 0, 0
        while offset is not None:
            status, body, _ = self.c.call("GET", f"/api/v1/intents/book/examples?limit=3&offset={offset}",
                                          headers=self.bearer(self.tok))
            self.assertEqual(status, 200, body)
            texts += [e["text"] for e in body["examples"]]
            offset, pages = body["next_offset"], pages + 1
            if pages == 1:  # examples added while paging neither repeat nor push others out
                self.batch([{"text": "late one"}, {"text": "late two"}])
        self.assertEqual(texts, [f"x{i}" for i in range(6, -1, -1)])
        self.assertEqual(body["total"], 9)
        status, body, _ = self.c.call("GET", "/api/v1/intents/book/examples?limit=3",
                                      headers=self.bearer(self.tok))
        self.assertEqual([e["text"] for e in body["examples"]], ["late two", "late one", "x6"])

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

    def post_raw(self, body, method="POST"):
        return self.c.call(method, self.base, body=body, headers={"Content-Type": "application/json", **self.V2})

    def sized(self, size, fill="a"):
        """A valid sentence body of exactly size bytes (fill is 1 or 2 bytes of UTF-8)."""
        head = b'{"text":"x","slots":[],"pad":"'
        room = size - len(head) - 2
        pad = fill * (room // len(fill.encode()))
        body = head + pad.encode() + b"a" * (room - len(pad.encode())) + b'"}'
        self.assertEqual(len(body), size)
        return body

    def test_json_body_limit(self):
        # "60 kB" is 60,000 bytes (DESIGN 4.3), in every mode.
        self.assertEqual(self.ctl("GET", "/_emulator/config")["v2"]["json_body_max"], 60000)
        self.assertEqual(self.post_raw(self.sized(60000))[0], 201)
        status, body, _ = self.post_raw(self.sized(60001))
        self.assertEqual((status, body["status"], body["code"]), (413, 413, "payload_too_large"))
        for key in ("type", "title", "detail", "traceId", "details"):
            self.assertIn(key, body)
        # Bytes count, not characters: 30,000-odd two-byte characters are too many.
        wide = self.sized(60002, fill="é")
        self.assertLess(len(wide.decode()), 60000)
        self.assertEqual(self.post_raw(wide)[0], 413)
        # A chunked body is measured as it arrives.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            data = self.sized(60001)
            conn.request("POST", self.base, body=iter([data[:30000], data[30000:]]), encode_chunked=True,
                         headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked", **self.V2})
            self.assertEqual(conn.getresponse().status, 413)
        finally:
            conn.close()
        ops = [{"op": "create", "value": {"text": f"sentence {i:05d}", "slots": []}} for i in range(880)]
        payload = json.dumps({"operations": ops}).encode()
        self.assertLessEqual(len(payload), 60000)
        self.assertEqual(self.post_raw(payload, "PATCH")[0], 200)
        self.assertEqual(self.state()["flows"]["f1"]["sentence_count"], 881)

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

    def patch(self, *ops):
        return self.c.call("PATCH", self.base, json_body={"operations": list(ops)}, headers=self.V2)

    def test_list_intents_of_a_flow(self):
        names = [f"intent_{i:03d}" for i in range(130)]
        self.ctl("POST", "/_emulator/seed", {"v2": {"f1": {n: [f"{n} says hi"] * (i % 3) for i, n in
                                                            enumerate(reversed(names))}}})
        got, cursor, pages = [], None, 0
        while True:
            path = "/new/v2.0/flows/f1/intents?limit=100" + (f"&next={cursor}" if cursor else "")
            status, body, _ = self.c.call("GET", path, headers=self.V2)
            self.assertEqual((status, body["total"]), (200, 130))
            pages += 1
            got += body["items"]
            cursor = body["nextCursor"]
            if cursor is None:
                break
        self.assertEqual(pages, 2)
        self.assertEqual([i["_id"] for i in got], names)
        self.assertTrue(all(i["name"] == i["_id"] for i in got))
        by = {i["_id"]: i["sentenceCount"] for i in got}
        self.assertEqual(by["intent_129"], 0)
        self.assertEqual(by["intent_128"], 1)
        self.assertEqual(self.c.call("GET", "/new/v2.0/flows/none/intents", headers=self.V2)[1]["items"], [])
        self.assertEqual(self.c.call("GET", "/new/v2.0/flows/f1/intents")[0], 401)
        for query in ("?limit=101", "?limit=0", "?next=garbage"):
            self.assertEqual(self.c.call("GET", "/new/v2.0/flows/f1/intents" + query, headers=self.V2)[0], 400,
                             query)


    def test_patch_contract_form_and_counts(self):
        self.ctl("POST", "/_emulator/seed", {"v2": {"f1": {"i1": ["a", "b", "c", "d"]}}})
        ids = [s["_id"] for s in self.c.call("GET", self.base, headers=self.V2)[1]["items"]]
        # The contract's form works in the default mode, beside the op-level id.
        status, body, _ = self.patch({"op": "update", "value": {"_id": ids[0], "text": "A"}},
                                     {"op": "delete", "value": {"_id": ids[1]}},
                                     {"op": "create", "value": {"text": "e", "slots": []}})
        self.assertEqual((status, body["created"], body["updated"], body["deleted"]), (200, 1, 1, 1))
        self.assertEqual(len(body["createdIds"]), 1)
        status, body, _ = self.patch({"op": "delete", "id": ids[2], "value": {"_id": ids[3]}})
        self.assertEqual((status, body["details"][0]["path"]), (400, "operations[0].value._id"))
        status, body, _ = self.patch({"op": "delete", "value": {"_id": "missing"}})
        self.assertEqual((status, body["details"][0]["path"]), (400, "operations[0].value._id"))
        # Counts only, as the contract says: ids are learned by reading the list.
        self.configure({"v2": {"patch_answer": "counts"}})
        status, body, _ = self.patch({"op": "create", "value": {"text": "f", "slots": []}})
        self.assertEqual((status, body), (200, {"created": 1, "updated": 0, "deleted": 0}))
        self.configure({"v2": {"patch_form": "contract"}})
        status, body, _ = self.patch({"op": "create", "value": {"text": "g", "slots": []}},
                                     {"op": "delete", "id": ids[2]})
        self.assertEqual((status, body["details"][0]["path"]), (400, "operations[1].id"))
        self.assertEqual(self.patch({"op": "update", "value": {"text": "no id"}})[0], 400)
        self.assertEqual(self.patch({"op": "update", "value": {"_id": ids[2], "text": "C"}})[0], 200)
        texts = [s["text"] for s in self.state()["flows"]["f1"]["intents"]["i1"]["sentences"]]
        self.assertEqual(texts, ["A", "C", "d", "e", "f"])

    def page(self, query):
        status, body, _ = self.c.call("GET", self.base + query, headers=self.V2)
        self.assertEqual(status, 200, body)
        return body

    def test_reverse_order_cursor_pages(self):
        self.configure({"lists": {"order": "reverse"}})
        self.ctl("POST", "/_emulator/seed", {"v2": {"f1": {"i1": [f"s{i}" for i in range(250)]}}})
        first = self.page("?limit=100")
        self.assertEqual([s["text"] for s in first["items"]], [f"s{i}" for i in range(249, 149, -1)])
        self.assertIsNone(first["previousCursor"])
        # Sentences added while paging do not disturb the pages still to come.
        for i in range(3):
            self.c.call("POST", self.base, json_body={"text": f"new{i}", "slots": []}, headers=self.V2)
        second = self.page(f"?limit=100&next={first['nextCursor']}")
        third = self.page(f"?limit=100&next={second['nextCursor']}")
        got = [s["text"] for p in (first, second, third) for s in p["items"]]
        self.assertEqual(got, [f"s{i}" for i in range(249, -1, -1)])
        self.assertIsNone(third["nextCursor"])
        self.assertEqual(third["total"], 253)
        back = self.page(f"?limit=100&previous={third['previousCursor']}")
        self.assertEqual([s["text"] for s in back["items"]], [f"s{i}" for i in range(149, 49, -1)])
        newer = self.page(f"?limit=100&previous={second['previousCursor']}")
        self.assertEqual([s["text"] for s in newer["items"]], [f"s{i}" for i in range(249, 149, -1)])
        self.assertIsNotNone(newer["previousCursor"])  # the three added since are newer still
        self.assertEqual([s["text"] for s in self.page("?limit=2")["items"]], ["new2", "new1"])
        # A cursor made for the other order is refused, not silently misread.
        self.configure({"lists": {"order": "insertion"}})
        status, body, _ = self.c.call("GET", self.base + f"?next={first['nextCursor']}", headers=self.V2)
        self.assertEqual((status, body["code"]), (400, "invalid_cursor"))

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

    def test_hold_answer_applies_then_answers_late(self):
        self.faults({"match": {"method": "POST"}, "action": "hold_answer", "delay_ms": 300})
        start = time.monotonic()
        self.assertEqual(self.c.call("POST", self.path, json_body={"text": "late", "slots": []},
                                     headers=self.V2)[0], 201)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        # A client that gives up before the answer: the upload is stored anyway.
        impatient = Client(self.port, timeout=0.1)
        with self.assertRaises((TimeoutError, socket.timeout)):
            impatient.call("POST", self.path, json_body={"text": "stored, never answered", "slots": []},
                           headers=self.V2)
        impatient.close()
        time.sleep(0.5)
        self.ctl("DELETE", "/_emulator/faults")
        st = self.state()
        self.assertEqual([s["text"] for s in st["flows"]["ff"]["intents"]["i"]["sentences"]],
                         ["late", "stored, never answered"])
        log = self.log()
        self.assertEqual([(e["status"], e["client_gone"], e["fault"]["action"]) for e in log],
                         [(201, False, "hold_answer"), (201, True, "hold_answer")])
        self.assertGreaterEqual(log[0]["t_end"] - log[0]["t"], 0.3)
        self.assertIsNone(log[1]["t_end"])
        status, body, _ = self.c.call("POST", "/_emulator/faults", json_body=[{"action": "hold_answer"}])
        self.assertEqual(status, 400)

    def test_t_end_marks_the_answer(self):
        self.faults({"match": {"method": "POST"}, "action": "reset_before_body", "first": 1})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            self.c.call("POST", self.path, json_body={"text": "never", "slots": []}, headers=self.V2)
        self.get()
        dropped, answered = self.log()
        self.assertIsNone(dropped["t_end"])
        self.assertLessEqual(answered["t"], answered["t_end"])
        self.assertLessEqual(answered["t_end"], time.monotonic())

    def test_control_api_is_never_faulted(self):
        self.faults({"match": {"path": ""}, "status": 500})
        self.assertEqual(self.c.call("GET", "/_emulator/state")[0], 200)
        self.assertEqual(self.c.call("POST", "/_emulator/faults", json_body=[{"action": "explode"}])[0], 400)

    def test_drop_creates_answers_as_stored_and_keeps_one_in_n_out(self):
        # 1 in 100 creates is lost, counted across requests; every answer says all were stored
        self.faults({"match": {"method": "PATCH", "path": "sentences$"}, "action": "drop_creates"})
        answers = []
        for chunk in range(3):
            ops = [{"op": "create", "value": {"text": f"s{chunk * 90 + i:03d}", "slots": []}} for i in range(90)]
            status, body, _ = self.c.call("PATCH", self.path, json_body={"operations": ops}, headers=self.V2)
            self.assertEqual(status, 200)
            answers.append(body["created"])
        self.assertEqual(answers, [90, 90, 90])
        held = [s["text"] for s in self.state()["flows"]["ff"]["intents"]["i"]["sentences"]]
        self.assertEqual(len(held), 268)
        self.assertEqual(sorted({f"s{i:03d}" for i in range(270)} - set(held)), ["s099", "s199"])
        # listing agrees with the state: the lost ones are not there
        status, body, _ = self.c.call("GET", self.path + "?limit=100", headers=self.V2)
        self.assertEqual(body["total"], 268)
        self.assertEqual(self.ctl("GET", "/_emulator/faults")["faults"][0]["dropped"], 2)
        # the intent batch API loses examples the same way, with drop_every
        self.faults({"match": {"path": "/examples/batch$"}, "action": "drop_creates", "drop_every": 3})
        tok = self.token("/api/v1/auth/token", INTENT_SCOPE)
        examples = [{"text": f"example {i}", "annotations": [], "is_active": True} for i in range(9)]
        status, body, _ = self.c.call("POST", "/api/v1/intents/lossy/examples/batch",
                                      json_body={"examples": examples}, headers=self.bearer(tok))
        self.assertEqual((status, body["success"], body["uploaded_count"]), (200, True, 9))
        kept = [e["text"] for e in self.state()["intents"]["lossy"]["examples"]]
        self.assertEqual(kept, [f"example {i}" for i in range(9) if i % 3 != 2])
        for bad in (0, "2", 1.5):
            status, _, _ = self.c.call("POST", "/_emulator/faults",
                                       json_body=[{"action": "drop_creates", "drop_every": bad}])
            self.assertEqual(status, 400, bad)

    def test_reset_clears_state_and_faults(self):
        self.faults({"match": {"path": "nothing"}, "status": 500})
        self.ctl("POST", "/_emulator/seed", {"v2": {"f": {"i": ["x"]}}})
        self.ctl("POST", "/_emulator/reset")
        st = self.state()
        self.assertEqual((st["flows"], st["faults"]), ({}, []))


class StrictTest(EmulatorTest):
    STRICT = {"jobs": {"endpoint": "absent"}, "dataset": "new", "patch_answer": "counts",
              "patch_form": "contract", "lists": {"order": "reverse"}, "enforce": True}
    DEFAULT = {"jobs": {"endpoint": "present"}, "dataset": "replace", "patch_answer": "ids",
               "patch_form": "any", "lists": {"order": "insertion"}, "enforce": False}

    def profile(self, config):
        return {"jobs": config["jobs"], "dataset": config["dataset"]["same_reference"],
                "patch_answer": config["v2"]["patch_answer"], "patch_form": config["v2"]["patch_form"],
                "lists": config["lists"], "enforce": config["retry_after"]["enforce"]}

    def test_profile_through_config(self):
        self.assertEqual(self.profile(self.ctl("GET", "/_emulator/config")), self.DEFAULT)
        config = self.configure({"strict": True})
        self.assertEqual((config["strict"], self.profile(config)), (True, self.STRICT))
        # Rate limits and revocation are the tests' choice, never the profile's.
        self.assertEqual((config["client_rate_limit"]["requests"], config["tokens"]["revoke_every"]), (0, 0))
        # A later explicit setting overrides the profile, one setting at a time.
        config = self.configure({"lists": {"order": "insertion"}})
        self.assertEqual(self.profile(config), dict(self.STRICT, lists={"order": "insertion"}))
        # In one patch, the profile applies first and the patch's settings win.
        config = self.configure({"jobs": {"endpoint": "not_found"}, "strict": True})
        self.assertEqual(self.profile(config), dict(self.STRICT, jobs={"endpoint": "not_found"}))
        self.assertEqual(self.profile(self.configure({"strict": False})), self.DEFAULT)
        for bad, needle in (({"strict": "yes"}, "strict"), ({"lists": {"order": "random"}}, "lists.order"),
                            ({"jobs": {"endpoint": "gone"}}, "jobs.endpoint"),
                            ({"tokens": {"revoke_every": 1.5}}, "tokens.revoke_every"),
                            ({"retry_after": {"enforce": 1}}, "retry_after.enforce")):
            status, body, _ = self.c.call("POST", "/_emulator/config", json_body=bad)
            self.assertEqual(status, 400, bad)
            self.assertIn(needle, body["message"])
        self.assertEqual(self.profile(self.ctl("GET", "/_emulator/config")), self.DEFAULT)

    def test_strict_command_line(self):
        config_file = os.path.join(self.tmp, "override.json")
        with open(config_file, "w") as fh:
            json.dump({"lists": {"order": "insertion"}}, fh)
        proc, tmp, port_text, _ = start_emulator("--strict", "--config", config_file)
        try:
            client = Client(int(port_text))
            config = client.call("GET", "/_emulator/config")[1]
            client.close()
        finally:
            stop_emulator(proc, tmp)
        self.assertEqual(self.profile(config), dict(self.STRICT, lists={"order": "insertion"}))
        self.assertEqual((config["strict"], config["v2"]["json_body_max"]), (True, 60000))


class ClientGateTest(EmulatorTest):
    path = "/new/v2.0/flows/g/intents/i/sentences"

    def get(self, client=None):
        return (client or self.c).call("GET", self.path, headers=self.V2)

    def early(self):
        return self.state()["early_requests"]

    def test_early_requests_are_recorded(self):
        self.configure({"retry_after": {"grace_s": 0.3}})
        self.faults({"match": {"path": "sentences$"}, "status": 429, "retry_after": "1", "first": 1})
        self.assertEqual(self.get()[0], 429)
        answered = time.monotonic()
        self.assertEqual(self.get()[0], 200)  # already on the wire, as far as anyone can tell
        time.sleep(max(0.0, answered + 0.5 - time.monotonic()))
        self.assertEqual(self.get()[0], 200)  # recorded, not refused: enforce is off
        other = Client(self.port, source="127.0.0.2")
        self.assertEqual(self.get(other)[0], 200)  # the window is per client IP
        other.close()
        time.sleep(max(0.0, answered + 1.1 - time.monotonic()))
        self.assertEqual(self.get()[0], 200)
        log = self.log()
        self.assertEqual([e["early"] for e in log], [False, False, True, False, False])
        st = self.state()
        self.assertEqual((st["retry_after_windows"], st["early_requests"]["count"]), (1, 1))
        item = st["early_requests"]["items"][0]
        self.assertEqual((item["seq"], item["method"], item["path"], item["enforced"]),
                         (log[2]["seq"], "GET", self.path, False))
        self.assertAlmostEqual(item["window_end"] - item["window_start"], 1.0, places=3)
        self.assertAlmostEqual(item["early_s"], item["window_end"] - log[2]["t"], places=4)
        self.assertTrue(0 < item["early_s"] < 0.7, item)
        # the window runs from just before the answer left; its grace from
        # when the write was done
        self.assertAlmostEqual(item["answer_written"], log[0]["t_end"], places=6)
        self.assertLessEqual(item["window_start"], item["answer_written"])

    def test_enforced_windows(self):
        self.configure({"retry_after": {"enforce": True}})
        self.faults({"match": {"path": "sentences$"}, "status": 503, "first": 1})
        self.assertEqual(self.get()[0], 503)
        self.assertEqual(self.get()[0], 200)  # a 503 without Retry-After opens no window
        self.faults({"match": {"path": "sentences$"}, "status": 503, "retry_after": "1", "first": 1})
        self.assertEqual(self.get()[0], 503)
        time.sleep(0.2)
        # Every non-control request of the client waits, not only the one refused.
        status, body, resp = self.c.call("POST", "/api/v1/auth/token", form={
            "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET})
        self.assertEqual((status, body["error"], resp.getheader("Retry-After")), (429, "rate_limited", "1"))
        refused = time.monotonic()
        other = Client(self.port, source="127.0.0.2")
        self.assertEqual(self.get(other)[0], 200)
        other.close()
        # The refusal opened its own window, so the client waits a full second again.
        time.sleep(max(0.0, refused + 0.5 - time.monotonic()))
        self.assertEqual(self.get()[0], 429)
        time.sleep(1.1)
        self.assertEqual(self.get()[0], 200)
        st = self.state()
        self.assertEqual((st["retry_after_windows"], st["early_requests"]["count"]), (3, 2))
        self.assertEqual(st["tokens_issued"], {})
        self.assertTrue(all(item["enforced"] for item in st["early_requests"]["items"]))

    def test_http_date_window(self):
        self.faults({"match": {"path": "sentences$"}, "status": 429, "retry_after_date_s": 3, "first": 1})
        self.assertEqual(self.get()[0], 429)
        time.sleep(0.2)
        self.get()
        item = self.early()["items"][0]
        self.assertTrue(1.5 < item["window_end"] - item["window_start"] <= 3.0, item)

    def test_client_rate_limit(self):
        self.configure({"client_rate_limit": {"requests": 4, "window_s": 1}})
        key = b"k" * 24
        self.configure({"sinks": {"ci": "whsec_" + base64.b64encode(key).decode()}})
        started = time.monotonic()
        self.token("/api/v1/auth/token", INTENT_SCOPE)
        self.assertEqual(self.c.call("POST", "/v1/embeddings", json_body={"input": "x"})[0], 200)
        stamp = str(int(time.time()))
        self.assertEqual(self.c.call("POST", "/_sink/webhooks/ci", body=b"{}", headers={
            "webhook-id": "m1", "webhook-timestamp": stamp, "webhook-signature": sign(key, "m1", stamp, b"{}")})[0],
            200)
        self.state()  # control calls are not counted
        self.assertEqual(self.get()[0], 200)
        status, body, resp = self.c.call("POST", self.path, json_body={"text": "refused", "slots": []},
                                         headers=self.V2)
        self.assertEqual((status, body["code"], resp.getheader("Retry-After")), (429, "rate_limited", "1"))
        other = Client(self.port, source="127.0.0.2")
        self.assertEqual(self.get(other)[0], 200)
        other.close()
        time.sleep(max(0.0, started + 1.1 - time.monotonic()))
        # Same keep-alive connection: the refused request's body was read off it.
        self.assertEqual(self.c.call("POST", self.path, json_body={"text": "later", "slots": []},
                                     headers=self.V2)[0], 201)
        st = self.state()
        self.assertEqual([s["text"] for s in st["flows"]["g"]["intents"]["i"]["sentences"]], ["later"])
        self.assertEqual(st["retry_after_windows"], 1)


class TokenRevocationTest(EmulatorTest):
    path = "/api/v1/intents/i/examples"

    def test_revoke_every(self):
        self.configure({"tokens": {"revoke_every": 2}})
        tok = self.token("/api/v1/auth/token", INTENT_SCOPE)
        self.assertEqual([self.c.call("GET", self.path, headers=self.bearer(tok))[0] for _ in range(2)], [200, 200])
        status, body, _ = self.c.call("GET", self.path, headers=self.bearer(tok))
        self.assertEqual((status, body["error"]), (401, "invalid_token"))
        fresh = self.token("/api/v1/auth/token", INTENT_SCOPE)
        self.assertEqual(self.c.call("GET", self.path, headers=self.bearer(fresh))[0], 200)
        self.ctl("POST", "/_emulator/expire_tokens")
        self.assertEqual(self.c.call("GET", self.path, headers=self.bearer(fresh))[0], 401)
        self.assertEqual(self.c.call("GET", self.path, headers=self.bearer("emu_nothing"))[0], 401)
        self.c.call("GET", "/new/v2.0/tasks/x", headers=self.V2)
        states = [e["token_state"] for e in self.log()]
        self.assertEqual(states, [None, "valid", "valid", "revoked", None, "valid", "expired", "unknown", None])
        st = self.state()
        self.assertEqual((st["tokens_revoked"], st["tokens_revoked_by_endpoint"], st["tokens_issued"]),
                         (1, {"/api/v1/auth/token": 1}, {"/api/v1/auth/token": 2}))
        self.assertEqual(st["requests_with_revoked_token"], 2)


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
