#!/usr/bin/env python3
"""A local emulator of NICE Cognigy.AI, the oracle of cogpipe's end-to-end tests.

It speaks the three upload targets cogpipe knows -- the dataset workflow, the
intent example batch workflow and the REST API v2.0 -- with the platform's rules
and limits, plus an OpenAI-compatible embeddings endpoint and a Standard
Webhooks sink. Everything it stores can be read back, reset, seeded and faulted
through a control API under /_emulator/ (see README.md next to this file). A
strict profile takes the harsher reading wherever the contract leaves room, and
the state records what clients did wrong (early requests, revoked tokens).

Python standard library only, so a test machine needs nothing but python3. It
binds to 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import copy
import csv
import email.message
import email.parser
import email.utils
import hashlib
import hmac
import io
import json
import math
import os
import random
import re
import select
import signal
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURE = os.path.join(HERE, "fixtures", "embeddings.json")

KiB = 1024
MiB = 1024 * KiB
# Bodies over a route's limit are still read (up to this much) and thrown away,
# so the 413 reaches the client instead of a reset on a half-sent request.
DRAIN_MAX = 256 * MiB
LOG_MAX = 100_000
EARLY_MAX = 1000

DATASET_SCOPES = ("cognigy:dataset:write", "cognigy:dataset:read", "cognigy:admin:retrain")
INTENT_SCOPES = ("intent:read", "intent:write", "ai:train")

# Token realms: a token is only good on the API that issued it, as on the
# platform, where the three targets are separate services.
REALMS = {
    "dataset": {"endpoint": "/oauth/token", "scopes": DATASET_SCOPES},
    "intent": {"endpoint": "/api/v1/auth/token", "scopes": INTENT_SCOPES},
    "v2": {"endpoint": "/auth/oauth2/token", "scopes": None},
}

# SO_TIMESTAMPNS (SCM_TIMESTAMPNS) on Linux; Python names neither.
SO_TIMESTAMPNS = 35

SECRET_QUERY_KEYS = {"client_secret", "api_key", "apikey", "access_token", "token", "key"}


# --------------------------------------------------------------------------
# configuration


def default_config():
    return {
        "strict": False,
        "clients": {"cogpipe-sandbox": {"secret": "sandbox-secret", "scopes": None}},
        "api_keys": ["sandbox-api-key"],
        "token_lifetime": 3600,
        "tokens": {"revoke_every": 0},
        "dataset": {"file_max": 52_428_800, "body_slack": MiB, "same_reference": "replace"},
        "jobs": {"endpoint": "present"},
        "intent_cap": 2000,
        "lists": {"order": "insertion"},
        "retry_after": {"enforce": False, "grace_s": 0.05},
        "client_rate_limit": {"requests": 0, "window_s": 60},
        "v2": {
            # The contract's "60 kB" is 60,000 bytes, not 60 KiB.
            "json_body_max": 60_000,
            "patch_answer": "ids",
            "patch_form": "any",
            "text_upload_max": 2 * MiB,
            "page_default": 25,
            "page_max": 100,
            "flow_cap": 10_000,
            "intent_cap": 2000,
            "text_max": 500,
            "default_locale": "en-US",
            "rate_limit": {"requests": 1000, "window_s": 300},
        },
        "tasks": {"queued_s": 0.5, "active_s": 1.5},
        "sinks": {},
        "webhook_tolerance_s": 300,
        "embeddings": {"api_key": None, "dim": 384},
    }


# Settings that take one of a few words; the first is the default.
CHOICES = {
    "dataset.same_reference": ("replace", "new"),
    "jobs.endpoint": ("present", "absent", "not_found"),
    "lists.order": ("insertion", "reverse"),
    "v2.patch_answer": ("ids", "counts"),
    "v2.patch_form": ("any", "contract"),
}
INTEGER_SETTINGS = {"tokens.revoke_every", "client_rate_limit.requests"}

# Where the contract leaves room, strict mode takes the harsher reading (see
# README.md, "Strict mode"). Rate limits and revocation are left to the tests.
STRICT_PROFILE = {
    "jobs": {"endpoint": "absent"},
    "dataset": {"same_reference": "new"},
    "v2": {"patch_answer": "counts", "patch_form": "contract"},
    "lists": {"order": "reverse"},
    "retry_after": {"enforce": True},
}


def _profile_defaults(profile, defaults):
    """The default values of the settings a profile touches."""
    return {k: _profile_defaults(v, defaults[k]) if isinstance(v, dict) else defaults[k]
            for k, v in profile.items()}


class ConfigError(ValueError):
    pass


def decode_webhook_secret(secret):
    """Key bytes of a Standard Webhooks secret: whsec_<base64> or a raw string."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except ValueError as exc:
            raise ConfigError(f"webhook secret is not valid whsec_<base64>: {exc}") from None
    return secret.encode("utf-8")


def _normalize_client(name, value, current):
    if isinstance(value, str):
        return {"secret": value, "scopes": None}
    if not isinstance(value, dict):
        raise ConfigError(f"clients.{name} must be a secret string or an object")
    merged = dict(current or {"secret": None, "scopes": None})
    for key, val in value.items():
        if key == "secret":
            if not isinstance(val, str):
                raise ConfigError(f"clients.{name}.secret must be a string")
        elif key == "scopes":
            if val is not None and not (isinstance(val, list) and all(isinstance(s, str) for s in val)):
                raise ConfigError(f"clients.{name}.scopes must be a list of strings or null")
        else:
            raise ConfigError(f"unknown setting clients.{name}.{key}")
        merged[key] = val
    if not isinstance(merged.get("secret"), str):
        raise ConfigError(f"clients.{name} needs a secret")
    return merged


def _normalize_sink(name, value, current):
    if isinstance(value, str):
        value = {"secret": value}
    if not isinstance(value, dict):
        raise ConfigError(f"sinks.{name} must be a secret string or an object")
    merged = dict(current or {"secret": None, "status": None, "retry_after": None})
    for key, val in value.items():
        if key == "secret":
            secrets = val if isinstance(val, list) else [val] if val is not None else []
            for s in secrets:
                if not isinstance(s, str):
                    raise ConfigError(f"sinks.{name}.secret must be a string or a list of strings")
                decode_webhook_secret(s)
        elif key == "status":
            if val is not None and not (isinstance(val, int) and 100 <= val <= 599):
                raise ConfigError(f"sinks.{name}.status must be an HTTP status or null")
        elif key == "retry_after":
            if val is not None and not isinstance(val, str):
                raise ConfigError(f"sinks.{name}.retry_after must be a string or null")
        else:
            raise ConfigError(f"unknown setting sinks.{name}.{key}")
        merged[key] = val
    return merged


_NAMED = {"clients": _normalize_client, "sinks": _normalize_sink}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_config(config, patch, defaults=None, where=""):
    """Merge patch into config in place; reject unknown keys and wrong types early.

    Entries of "clients" and "sinks" are merged field by field; setting one to
    null removes it.
    """
    if not isinstance(patch, dict):
        raise ConfigError(f"{where or 'config'} must be an object")
    if defaults is None:
        defaults = default_config()
    if not where and "strict" in patch:
        # The profile goes first, so the patch's own settings override it.
        strict = patch["strict"]
        if not isinstance(strict, bool):
            raise ConfigError("strict must be true or false")
        merge_config(config, STRICT_PROFILE if strict else _profile_defaults(STRICT_PROFILE, defaults),
                     defaults)
        config["strict"] = strict
        patch = {k: v for k, v in patch.items() if k != "strict"}
    for key, value in patch.items():
        name = f"{where}.{key}" if where else key
        if key not in defaults:
            raise ConfigError(f"unknown setting {name}")
        if not where and key in _NAMED:
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be an object")
            for entry, entry_value in value.items():
                if entry_value is None:
                    config[key].pop(entry, None)
                else:
                    config[key][entry] = _NAMED[key](entry, entry_value, config[key].get(entry))
            continue
        default = defaults[key]
        if isinstance(default, dict):
            merge_config(config[key], value, default, name)
        elif isinstance(default, list):
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{name} must be a list of strings")
            config[key] = list(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false")
            config[key] = value
        elif _is_number(default):
            if not _is_number(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number")
            if name in INTEGER_SETTINGS and not is_int(value):
                raise ConfigError(f"{name} must be a non-negative integer")
            config[key] = value
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string")
            if name in CHOICES and value not in CHOICES[name]:
                raise ConfigError(f"{name} must be one of {', '.join(CHOICES[name])}, not {value!r}")
            config[key] = value
        else:
            config[key] = value
    return config


def redacted_config(config):
    out = copy.deepcopy(config)
    for client in out["clients"].values():
        client["secret"] = "<redacted>"
    for sink in out["sinks"].values():
        if sink.get("secret"):
            sink["secret"] = "<redacted>"
    out["api_keys"] = ["<redacted>"] * len(out["api_keys"])
    if out["embeddings"].get("api_key"):
        out["embeddings"]["api_key"] = "<redacted>"
    return out


# --------------------------------------------------------------------------
# small helpers


def utc_iso(ts=None):
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def retry_after_seconds(value, wall_now):
    """Seconds a Retry-After value asks for (delta seconds or an HTTP date), or None."""
    value = (value or "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - wall_now)


def header_value(headers, name):
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def token_realm_for_path(path):
    """The realm whose Bearer tokens a path takes; None where no OAuth token is used."""
    if path.startswith("/new/v2.0/"):
        return "v2"
    if path.startswith("/api/v1/") and path != "/api/v1/auth/token":
        return "intent"
    if path.startswith(("/datasets/", "/jobs/")):
        return "dataset"
    return None


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def loads_json(data):
    """Strict JSON: UTF-8 only and no NaN/Infinity, like the platform's parser."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(data, parse_constant=_reject_constant)


def dumps_json(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Response:
    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, status, body=b"", headers=None, content_type="application/json"):
        self.status = status
        if isinstance(body, (dict, list)):
            body = dumps_json(body)
        elif isinstance(body, str):
            body = body.encode("utf-8")
            if content_type == "application/json":
                content_type = "text/plain; charset=utf-8"
        self.body = body
        self.headers = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        self.content_type = content_type


class HttpError(Exception):
    """Ends a handler early with a ready response."""

    def __init__(self, response):
        super().__init__(response.status)
        self.response = response


class Part:
    __slots__ = ("name", "filename", "content_type", "data")

    def __init__(self, name, filename, content_type, data):
        self.name, self.filename, self.content_type, self.data = name, filename, content_type, data


class MultipartError(ValueError):
    pass


def parse_multipart(body, content_type):
    """Split a multipart/form-data body (RFC 7578) into a dict name -> Part.

    Done by hand because the cgi module is gone from recent Pythons and email's
    MIME parser would hold several copies of a 50 MiB upload.
    """
    header = email.message.Message()
    header["content-type"] = content_type or ""
    if header.get_content_type() != "multipart/form-data":
        raise MultipartError("Content-Type must be multipart/form-data")
    boundary = header.get_param("boundary")
    if not boundary or len(boundary) > 200:
        raise MultipartError("multipart boundary missing")
    delim = b"--" + str(boundary).encode("latin-1")
    sep = b"\r\n" + delim
    if body.startswith(delim):
        pos = len(delim)
    else:
        first = body.find(sep)
        if first < 0:
            raise MultipartError("multipart body has no boundary line")
        pos = first + len(sep)
    parts = {}
    parser = email.parser.BytesHeaderParser()
    while True:
        if body.startswith(b"--", pos):
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("malformed multipart boundary line")
        start = eol + 2
        end = body.find(sep, start)
        if end < 0:
            raise MultipartError("multipart body is missing its closing boundary")
        if body.startswith(b"\r\n", start):
            headers, content_start = parser.parsebytes(b""), start + 2
        else:
            head_end = body.find(b"\r\n\r\n", start, end)
            if head_end < 0:
                raise MultipartError("multipart part without a header block")
            headers, content_start = parser.parsebytes(body[start:head_end + 4]), head_end + 4
        name = headers.get_param("name", header="content-disposition")
        if name is None:
            raise MultipartError("multipart part without a name")
        name = email.utils.collapse_rfc2231_value(name)
        if name in parts:
            raise MultipartError(f"multipart field {name!r} given more than once")
        parts[name] = Part(name, headers.get_filename(), headers.get_content_type(),
                           body[content_start:end])
        pos = end + len(sep)


def pseudo_unit_vector(text, dim):
    """A deterministic unit vector for text: Box-Muller over SHA-256 in counter mode.

    Independent of Python's random module so other languages can reproduce it.
    """
    seed = hashlib.sha256(text.encode("utf-8")).digest()
    values = []
    counter = 0
    while len(values) < dim:
        block = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
        for off in (0, 16):
            u1 = (int.from_bytes(block[off:off + 8], "big") + 0.5) / 2.0 ** 64
            u2 = int.from_bytes(block[off + 8:off + 16], "big") / 2.0 ** 64
            radius = math.sqrt(-2.0 * math.log(u1))
            values.extend((radius * math.cos(2 * math.pi * u2), radius * math.sin(2 * math.pi * u2)))
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def unit(vector):
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else list(vector)


# --------------------------------------------------------------------------
# requests as the targets see them


class Request:
    def __init__(self, method, target, headers, client_ip):
        parts = urlsplit(target)
        self.method = method
        self.path = parts.path
        self.raw_query = parts.query
        try:
            self.query = parse_qs(parts.query, keep_blank_values=True)
        except ValueError:
            self.query = {}
        self.headers = headers
        self.client_ip = client_ip
        self.body = b""
        self.params = {}
        self.fault = None
        self.log_entry = None

    def arg(self, name):
        values = self.query.get(name)
        return values[-1] if values else None

    def header(self, name):
        return self.headers.get(name)

    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    def failing_tasks(self):
        """Tasks and jobs created by this request end in error (a fail_task fault)."""
        if self.fault is not None and self.fault.action == "fail_task":
            return self.fault.fail_reason
        return None

    def drops(self):
        """True when the next sentence or example this request creates is to be
        left out although the answer says it was stored (a drop_creates fault)."""
        if self.fault is not None and self.fault.action == "drop_creates":
            return self.fault.drop_next()
        return False


# --------------------------------------------------------------------------
# state


class Sentence:
    __slots__ = ("seq", "doc")

    def __init__(self, seq, doc):
        self.seq, self.doc = seq, doc


class State:
    """Everything the emulator knows. One lock guards all of it."""

    def __init__(self, config, seed):
        self.lock = threading.RLock()
        self.config = config
        self.rng = random.Random(seed)
        self.request_seq = 0  # never reset, so a reader's ?since= stays valid across resets
        self.clear()

    def clear(self):
        self.datasets = {}
        self.dataset_by_ref = {}
        self.dataset_uploads = collections.Counter()
        self.intents = {}
        self.intent_batches = collections.Counter()
        self.flows = {}
        self.sentence_index = {}
        self.sentence_seq = 0
        self.tasks = {}
        self.jobs = {}
        self.sinks = {}
        self.tokens = {}
        self.tokens_issued = collections.Counter()
        self.log = collections.deque(maxlen=LOG_MAX)
        self.requests_total = 0
        self.by_status = collections.Counter()
        self.by_route = collections.Counter()
        self.faults_applied = collections.Counter()
        self.rate_windows = {}
        self.client_hits = {}  # client IP -> monotonic times of admitted requests
        self.retry_windows = {}  # client IP -> [{"start", "end", "seconds"}], see open_window
        self.retry_windows_opened = 0
        self.early_count = 0
        self.early_items = []
        self.tokens_revoked = collections.Counter()  # by token endpoint
        self.revoked_token_requests = 0
        self.example_anchors = {}  # (client IP, intent) -> examples listed when offset 0 was read
        self.embedding_requests = 0
        self.embedding_inputs = 0

    # ids --------------------------------------------------------------
    def hex_id(self, bits=96):
        with self.lock:
            return "%0*x" % (bits // 4, self.rng.getrandbits(bits))

    def trace_id(self):
        return self.hex_id(128)

    # request log --------------------------------------------------------
    def log_start(self, req, arrival=None):
        """Logs a request; arrival is when it reached the host (kernel time,
        on time.monotonic()'s clock) where known, else now."""
        headers = req.headers
        auth = headers.get("Authorization")
        query = {k: (["<redacted>"] * len(v) if k.lower() in SECRET_QUERY_KEYS else v)
                 for k, v in req.query.items()}
        entry = {
            "method": req.method,
            "path": req.path,
            "query": query,
            "headers": {
                "content_type": headers.get("Content-Type"),
                "content_length": headers.get("Content-Length"),
                "transfer_encoding": headers.get("Transfer-Encoding"),
                "user_agent": headers.get("User-Agent"),
                "expect": headers.get("Expect"),
                "idempotency_key": headers.get("Idempotency-Key"),
                "webhook_id": headers.get("webhook-id"),
                "authorization": auth is not None,
                "auth_scheme": auth.split(" ", 1)[0] if auth else None,
                "x_api_key": headers.get("X-API-Key") is not None,
            },
            "client_ip": req.client_ip,
            "t": min(arrival, time.monotonic()) if arrival else time.monotonic(),
            "t_end": None,
            "wall": time.time(),
            "status": None,
            "fault": None,
            "body_bytes": None,
            "early": False,
            "token_state": None,
            "client_gone": False,
        }
        with self.lock:
            self.request_seq += 1
            entry["seq"] = self.request_seq
            entry["token_state"] = self._arriving_token_state(req, entry["t"])
            if entry["token_state"] in ("revoked", "expired"):
                self.revoked_token_requests += 1
            self.log.append(entry)
            self.requests_total += 1
        return entry

    def _arriving_token_state(self, req, now):
        """What the request's Bearer token was worth when the request arrived.

        Judged at arrival, not when the handler checks it: a client is only to
        blame for sending a token that was already dead when it went out.
        """
        realm = token_realm_for_path(req.path)
        auth = req.headers.get("Authorization") or ""
        scheme, _, value = auth.strip().partition(" ")
        if realm is None or scheme.lower() != "bearer":
            return None
        if realm == "v2" and (req.headers.get("X-API-Key") is not None or req.arg("api_key") is not None):
            return None
        record = self.tokens.get(value.strip())
        if record is None or record["realm"] != realm:
            return "unknown"
        if record["revoked"]:
            return "revoked"
        if now >= record["expires_at"]:
            return "expired"
        return "valid"

    def annotate(self, entry, **fields):
        with self.lock:
            entry.update(fields)

    def log_finish(self, entry, status, route_name):
        with self.lock:
            entry["status"] = status
            self.by_status[str(status) if status is not None else "no_response"] += 1
            self.by_route[route_name] += 1
            if entry["fault"]:
                self.faults_applied[entry["fault"]["action"]] += 1

    # per-client gate: Retry-After windows and the client rate limit ----------
    def admit(self, entry):
        """None when the request may go on, else (message, retry_after_s) for a 429.

        Records early requests (sent inside a Retry-After window the client was
        given) whether or not they are refused.
        """
        ip, arrival = entry["client_ip"], entry["t"]
        with self.lock:
            ra_cfg = self.config["retry_after"]
            windows = [w for w in self.retry_windows.get(ip, []) if w["end"] > arrival]
            self.retry_windows[ip] = windows
            # A request that arrived within grace_s of the answer was already on
            # the wire when the answer left; it is not the client's fault.
            broken = [w for w in windows if w.get("written", w["start"]) + float(ra_cfg["grace_s"]) < arrival]
            if broken:
                window = max(broken, key=lambda w: w["end"])
                entry["early"] = True
                self.early_count += 1
                if len(self.early_items) < EARLY_MAX:
                    self.early_items.append({
                        "seq": entry["seq"], "method": entry["method"], "path": entry["path"],
                        "client_ip": ip, "t": arrival, "window_start": window["start"],
                        "answer_written": window.get("written", window["start"]),
                        "window_end": window["end"], "early_s": round(window["end"] - arrival, 6),
                        "enforced": bool(ra_cfg["enforce"]),
                    })
                if ra_cfg["enforce"]:
                    remaining = max(w["end"] for w in windows) - time.monotonic()
                    return (f"{ip} is inside a Retry-After window for {remaining:.3f} s more",
                            max(1, math.ceil(remaining)))
            limit = self.config["client_rate_limit"]
            allowed, span = limit["requests"], float(limit["window_s"])
            if allowed and span > 0:
                now = time.monotonic()
                hits = self.client_hits.setdefault(ip, collections.deque())
                while hits and hits[0] <= now - span:
                    hits.popleft()
                if len(hits) >= allowed:
                    return (f"more than {allowed} requests in {span:g} s from {ip}",
                            max(1, math.ceil(hits[0] + span - now)))
                hits.append(now)
            return None

    def open_window(self, ip, resp):
        """Open a Retry-After window for the client an answer is about to go to.

        Called just before the bytes leave, so the client's next request, however
        fast, already finds it. The window ends Retry-After seconds after this
        moment, the earliest the client can have read the answer, so a client
        that waits the whole time from when it read it is never early.
        answer_written marks when the write was done: a request arriving within
        grace_s of that was already on the wire (the interpreter lock can hold
        a write back for tens of milliseconds, so the two can be far apart).
        """
        if not (resp.status == 429 or resp.status == 503):
            return None
        seconds = retry_after_seconds(header_value(resp.headers, "Retry-After"), time.time())
        if seconds is None:
            return None
        now = time.monotonic()
        window = {"start": now, "written": now, "end": now + seconds, "seconds": seconds}
        with self.lock:
            self.retry_windows.setdefault(ip, []).append(window)
            self.retry_windows_opened += 1
        return window

    def answer_written(self, entry, window):
        now = time.monotonic()
        with self.lock:
            entry["t_end"] = now
            if window is not None:
                window["written"] = now

    def answer_lost(self, entry, window):
        """The answer never reached the client: no window, and the log says so."""
        with self.lock:
            entry["client_gone"] = True
            if window is not None:
                windows = self.retry_windows.get(entry["client_ip"], [])
                if window in windows:
                    windows.remove(window)
                    self.retry_windows_opened -= 1

    # tokens -------------------------------------------------------------
    def issue_token(self, realm, client_id, scopes, lifetime):
        with self.lock:
            token = "emu_" + self.hex_id(192)
            self.tokens[token] = {
                "realm": realm,
                "client_id": client_id,
                "scopes": list(scopes),
                "expires_at": time.monotonic() + lifetime,
                "revoked": False,
                "uses": 0,
            }
            self.tokens_issued[REALMS[realm]["endpoint"]] += 1
            return token

    def use_token(self, value, realm):
        """Check a Bearer token and count the use: (record copy or None, why not)."""
        with self.lock:
            record = self.tokens.get(value)
            if record is None or record["realm"] != realm:
                return None, "unknown access token"
            every = self.config["tokens"]["revoke_every"]
            if every and record["uses"] >= every:
                self._revoke(record)  # revoke_every was lowered after the token was used
            if record["revoked"]:
                return None, "access token revoked"
            if time.monotonic() >= record["expires_at"]:
                return None, "access token expired"
            record["uses"] += 1
            if every and record["uses"] >= every:
                # The platform revokes when it likes; here the Nth use is the last.
                self._revoke(record)
            return dict(record), None

    def _revoke(self, record):
        if not record["revoked"]:
            record["revoked"] = True
            self.tokens_revoked[REALMS[record["realm"]]["endpoint"]] += 1

    def expire_tokens(self):
        with self.lock:
            now = time.monotonic()
            for record in self.tokens.values():
                record["expires_at"] = min(record["expires_at"], now)
            return len(self.tokens)

    # tasks and jobs -----------------------------------------------------
    def _timing(self):
        cfg = self.config["tasks"]
        return float(cfg["queued_s"]), float(cfg["active_s"])

    def new_task(self, kind, total_steps, parameters, fail_reason=None, result=None):
        queued, active = self._timing()
        with self.lock:
            task_id = self.hex_id()
            self.tasks[task_id] = {
                "_id": task_id,
                "type": kind,
                "totalStep": total_steps,
                "parameters": parameters,
                "created": time.monotonic(),
                "createdAt": utc_iso(),
                "queued_s": queued,
                "active_s": active,
                "fail_reason": fail_reason,
                "cancelled_at": None,
                "result": result,
            }
            return self.task_view(task_id)

    def task_view(self, task_id):
        task = self.tasks[task_id]
        now = time.monotonic()
        elapsed = now - task["created"]
        if task["cancelled_at"] is not None:
            elapsed = min(elapsed, task["cancelled_at"] - task["created"])
        queued, active, total = task["queued_s"], task["active_s"], task["totalStep"]
        finished = elapsed >= queued + active
        if elapsed < queued:
            status, step = "queued", 0
        elif not finished:
            step = min(total - 1, int((elapsed - queued) / active * total)) if active > 0 else 0
            status = "active"
        elif task["fail_reason"]:
            status, step = "error", max(0, total - 1)
        else:
            status, step = "done", total
        if task["cancelled_at"] is not None and status in ("queued", "active"):
            status = "cancelled"
        view = {
            "_id": task["_id"],
            "type": task["type"],
            "status": status,
            "currentStep": step,
            "totalStep": total,
            "progress": int(100 * step / total) if total else 100,
            "failReason": task["fail_reason"] if status == "error" else None,
            "parameters": task["parameters"],
            "createdAt": task["createdAt"],
            "lastChanged": utc_iso(),
        }
        if task["result"] is not None and status == "done":
            view["result"] = task["result"]
        return view

    def new_job(self, kind, subject, fail_reason=None):
        queued, active = self._timing()
        with self.lock:
            job_id = "job_" + self.hex_id()
            self.jobs[job_id] = {
                "job_id": job_id,
                "kind": kind,
                "subject": subject,
                "created": time.monotonic(),
                "created_at": utc_iso(),
                "queued_s": queued,
                "active_s": active,
                "fail_reason": fail_reason,
            }
            return job_id

    def job_view(self, job_id):
        job = self.jobs[job_id]
        elapsed = time.monotonic() - job["created"]
        queued, active = job["queued_s"], job["active_s"]
        if elapsed < queued:
            status, progress = "queued", 0
        elif elapsed < queued + active:
            status, progress = "running", int(100 * (elapsed - queued) / active) if active else 0
        elif job["fail_reason"]:
            status, progress = "failed", 100
        else:
            status, progress = "completed", 100
        view = {"job_id": job_id, "id": job_id, "type": job["kind"], "status": status,
                "progress": progress, "created_at": job["created_at"],
                "error": job["fail_reason"] if status == "failed" else None}
        view["intent_id" if job["kind"] == "intent_retrain" else "dataset_id"] = job["subject"]
        return view

    # v2 sentences -------------------------------------------------------
    def v2_intent(self, flow_id, intent_id, create=False):
        flow = self.flows.get(flow_id)
        if flow is None:
            if not create:
                return None
            flow = self.flows[flow_id] = {}
        sentences = flow.get(intent_id)
        if sentences is None and create:
            sentences = flow[intent_id] = []
        return sentences

    def v2_flow_count(self, flow_id):
        return sum(len(s) for s in self.flows.get(flow_id, {}).values())

    def v2_new_sentence(self, flow_id, intent_id, text, slots, locale):
        self.sentence_seq += 1
        now = utc_iso()
        sentence_id = self.hex_id()
        doc = {"_id": sentence_id, "text": text, "slots": slots, "localeReference": locale,
               "intentId": intent_id, "flowId": flow_id, "referenceId": self.hex_id(128),
               "createdAt": now, "lastChanged": now, "createdBy": "emulator",
               "lastChangedBy": "emulator"}
        sentence = Sentence(self.sentence_seq, doc)
        self.sentence_index[sentence_id] = (flow_id, intent_id)
        return sentence

    # sinks --------------------------------------------------------------
    def sink(self, name):
        record = self.sinks.get(name)
        if record is None:
            record = self.sinks[name] = {"deliveries": [], "duplicates": 0, "duplicate_ids": [],
                                         "rejected": [], "attempts": 0,
                                         "answered": collections.Counter(), "seen": set()}
        return record

    # snapshot -----------------------------------------------------------
    def snapshot(self, include_lines=True, faults=None):
        with self.lock:
            datasets = {}
            for ds_id, ds in self.datasets.items():
                view = {k: v for k, v in ds.items() if k != "lines"}
                if include_lines:
                    view["lines"] = list(ds["lines"])
                datasets[ds_id] = view
            intents = {}
            for intent_id, examples in self.intents.items():
                intents[intent_id] = {
                    "examples": [dict(e) for e in examples],
                    "count": len(examples),
                    "active_count": sum(1 for e in examples if e["is_active"]),
                    "batches": self.intent_batches[intent_id],
                }
            flows = {}
            for flow_id, flow in self.flows.items():
                flows[flow_id] = {
                    "intents": {iid: {"sentences": [dict(s.doc) for s in sents], "count": len(sents)}
                                for iid, sents in flow.items()},
                    "sentence_count": sum(len(s) for s in flow.values()),
                }
            webhooks = {}
            for name, sink in self.sinks.items():
                webhooks[name] = {k: (dict(v) if isinstance(v, collections.Counter) else v)
                                  for k, v in sink.items() if k != "seen"}
            return {
                "datasets": datasets,
                "dataset_refs": dict(self.dataset_by_ref),
                "dataset_uploads": dict(self.dataset_uploads),
                "intents": intents,
                "flows": flows,
                "tasks": {tid: self.task_view(tid) for tid in self.tasks},
                "jobs": {jid: self.job_view(jid) for jid in self.jobs},
                "webhooks": webhooks,
                "tokens_issued": dict(self.tokens_issued),
                "tokens_active": sum(1 for t in self.tokens.values()
                                     if not t["revoked"] and t["expires_at"] > time.monotonic()),
                "tokens_revoked": sum(self.tokens_revoked.values()),
                "tokens_revoked_by_endpoint": dict(self.tokens_revoked),
                "requests_with_revoked_token": self.revoked_token_requests,
                "retry_after_windows": self.retry_windows_opened,
                "early_requests": {"count": self.early_count, "items": [dict(e) for e in self.early_items]},
                "requests": {
                    "total": self.requests_total,
                    "last_seq": self.request_seq,
                    "by_status": dict(self.by_status),
                    "by_route": dict(self.by_route),
                    "faults_applied": dict(self.faults_applied),
                },
                "embeddings": {"requests": self.embedding_requests, "inputs": self.embedding_inputs},
                "faults": faults or [],
            }


# --------------------------------------------------------------------------
# fault injection


class Fault:
    ACTIONS = ("status", "reset_after_body", "reset_before_body", "delay", "hold_answer", "fail_task",
               "drop_creates")

    def __init__(self, spec, index):
        if not isinstance(spec, dict):
            raise ConfigError(f"faults[{index}] must be an object")
        known = {"match", "action", "status", "retry_after", "retry_after_date_s", "body",
                 "headers", "share", "every", "first", "delay_ms", "fail_reason", "drop_every"}
        unknown = set(spec) - known
        if unknown:
            raise ConfigError(f"faults[{index}]: unknown field(s) {sorted(unknown)}")
        match = spec.get("match") or {}
        if not isinstance(match, dict) or set(match) - {"method", "path"}:
            raise ConfigError(f"faults[{index}].match takes method and path")
        self.method = match.get("method")
        try:
            self.path = re.compile(match.get("path") or "")
        except re.error as exc:
            raise ConfigError(f"faults[{index}].match.path: {exc}") from None
        self.action = spec.get("action", "status")
        if self.action not in self.ACTIONS:
            raise ConfigError(f"faults[{index}].action must be one of {', '.join(self.ACTIONS)}")
        self.status = spec.get("status")
        if self.action == "status" and not (is_int(self.status) and 100 <= self.status <= 599):
            raise ConfigError(f"faults[{index}].status must be an HTTP status")
        self.retry_after = spec.get("retry_after")
        if self.retry_after is not None:
            self.retry_after = str(self.retry_after)
        self.retry_after_date_s = spec.get("retry_after_date_s")
        self.body = spec.get("body")
        self.headers = spec.get("headers") or {}
        self.delay_ms = spec.get("delay_ms") or 0
        if not (_is_number(self.delay_ms) and self.delay_ms >= 0):
            raise ConfigError(f"faults[{index}].delay_ms must be a non-negative number")
        if self.action in ("delay", "hold_answer") and not self.delay_ms:
            raise ConfigError(f"faults[{index}]: {self.action} needs delay_ms")
        self.fail_reason = spec.get("fail_reason") or "training failed (injected fault)"
        self.drop_every = spec.get("drop_every", 100)
        if not (is_int(self.drop_every) and self.drop_every >= 1):
            raise ConfigError(f"faults[{index}].drop_every must be a positive integer")
        self.creates_seen = 0
        self.dropped = 0
        selectors = [k for k in ("share", "every", "first") if spec.get(k) is not None]
        if len(selectors) > 1:
            raise ConfigError(f"faults[{index}]: give at most one of share, every, first")
        self.share = spec.get("share")
        self.every = spec.get("every")
        self.first = spec.get("first")
        if self.share is not None and not (_is_number(self.share) and 0 <= self.share <= 1):
            raise ConfigError(f"faults[{index}].share must be between 0 and 1")
        for name in ("every", "first"):
            value = getattr(self, name)
            if value is not None and not (is_int(value) and value >= 1):
                raise ConfigError(f"faults[{index}].{name} must be a positive integer")
        self.spec = spec
        self.index = index
        self.matched = 0
        self.fired = 0

    def matches(self, method, path):
        if self.method and self.method.upper() != method:
            return False
        return self.path.search(path) is not None

    def decide(self, rng):
        self.matched += 1
        if self.first is not None:
            fire = self.matched <= self.first
        elif self.every is not None:
            fire = self.matched % self.every == 0
        elif self.share is not None:
            fire = rng.random() < self.share
        else:
            fire = True
        if fire:
            self.fired += 1
        return fire

    def drop_next(self):
        """Counts one create the fault's requests make; True for every
        drop_every-th, counted across all of them (the caller holds the lock)."""
        self.creates_seen += 1
        if self.creates_seen % self.drop_every == 0:
            self.dropped += 1
            return True
        return False

    def response_headers(self):
        headers = [(str(k), str(v)) for k, v in self.headers.items()]
        if self.retry_after is not None:
            headers.append(("Retry-After", self.retry_after))
        elif self.retry_after_date_s is not None:
            # An HTTP date computed when the answer goes out, so it is never stale.
            headers.append(("Retry-After", email.utils.formatdate(
                time.time() + float(self.retry_after_date_s), usegmt=True)))
        return headers

    def describe(self):
        return {"index": self.index, "action": self.action, "status": self.status}

    def view(self):
        view = dict(self.spec, matched=self.matched, fired=self.fired)
        if self.action == "drop_creates":
            view["dropped"] = self.dropped
        return view


class Faults:
    """The active fault list. Every matching fault counts each request; the first
    one that fires is applied."""

    def __init__(self, state, seed):
        self.state = state
        self.seed = seed
        self.rng = random.Random(f"faults:{seed}" if seed is not None else None)
        self.faults = []

    def replace(self, specs):
        if not isinstance(specs, list):
            raise ConfigError("faults must be a list")
        faults = [Fault(spec, i) for i, spec in enumerate(specs)]
        with self.state.lock:
            self.faults = faults

    def clear(self):
        with self.state.lock:
            self.faults = []

    def pick(self, method, path):
        with self.state.lock:
            chosen = None
            for fault in self.faults:
                if fault.matches(method, path) and fault.decide(self.rng) and chosen is None:
                    chosen = fault
            return chosen

    def view(self):
        with self.state.lock:
            return [f.view() for f in self.faults]


# --------------------------------------------------------------------------
# targets


class Target:
    """Common plumbing; subclasses choose the error shape of their API."""

    kind = "legacy"

    def __init__(self, emulator):
        self.emu = emulator
        self.state = emulator.state

    @property
    def config(self):
        return self.state.config

    def error(self, status, code, message, details=None, headers=None):
        body = {"error": code, "message": message}
        if details is not None:
            body["errors"] = details
        return Response(status, body, headers)

    def fail(self, status, code, message, details=None, headers=None):
        raise HttpError(self.error(status, code, message, details, headers))

    def json_body(self, req, want_object=True):
        if req.content_type() != "application/json":
            self.fail(415, "unsupported_media_type", "Content-Type must be application/json")
        try:
            data = loads_json(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            self.fail(400, "invalid_json", f"request body is not valid JSON: {exc}")
        if want_object and not isinstance(data, dict):
            self.fail(400, "invalid_json", "request body must be a JSON object")
        return data

    def multipart(self, req):
        try:
            return parse_multipart(req.body, req.header("Content-Type"))
        except MultipartError as exc:
            self.fail(400, "invalid_multipart", str(exc))

    def bearer(self, req, realm, scope=None):
        """The token record behind the request's Bearer token, or an HttpError."""
        auth = req.header("Authorization")
        challenge = 'Bearer realm="cognigy-emulator"'
        if not auth:
            self.fail(401, "invalid_token", "missing bearer token",
                      headers={"WWW-Authenticate": challenge})
        scheme, _, value = auth.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            self.fail(401, "invalid_request", "Authorization must be 'Bearer <token>'",
                      headers={"WWW-Authenticate": challenge})
        record, why = self.state.use_token(value, realm)
        if record is None:
            self.fail(401, "invalid_token", why,
                      headers={"WWW-Authenticate": challenge + ', error="invalid_token"'})
        if scope is not None:
            self.require_scope(record, scope)
        return record

    def require_scope(self, record, scope):
        if scope not in record["scopes"]:
            self.fail(403, "insufficient_scope", f"token lacks scope {scope}",
                      headers={"WWW-Authenticate":
                               f'Bearer error="insufficient_scope", scope="{scope}"'})

    def too_large(self, limit):
        return self.error(413, "payload_too_large", f"request body exceeds {limit} bytes")

    def job(self, req, realm):
        """A retrain job's status, where jobs.endpoint lets it be asked for at all."""
        if self.config["jobs"]["endpoint"] == "not_found":
            self.fail(404, "not_found", "no such job")
        self.bearer(req, realm, "cognigy:dataset:read" if realm == "dataset" else "intent:read")
        with self.state.lock:
            if req.params["jobId"] not in self.state.jobs:
                self.fail(404, "not_found", "no such job")
            return Response(200, self.state.job_view(req.params["jobId"]))

    def not_found(self, req):
        return self.error(404, "not_found", f"no route for {req.method} {req.path}")


class TokenEndpoint(Target):
    """OAuth2 client credentials (RFC 6749 §4.4) for all three realms."""

    kind = "oauth"

    def error(self, status, code, message, details=None, headers=None):
        headers = dict(headers or {})
        headers.setdefault("Cache-Control", "no-store")
        return Response(status, {"error": code, "error_description": message}, headers)

    def token(self, req, realm):
        if realm == "v2":
            self.emu.v2.rate_limit(req)
        if req.content_type() != "application/x-www-form-urlencoded":
            self.fail(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        try:
            form = parse_qs(req.body.decode("ascii"), keep_blank_values=True,
                            strict_parsing=True, encoding="utf-8", errors="strict")
        except (UnicodeDecodeError, ValueError) as exc:
            self.fail(400, "invalid_request", f"malformed form body: {exc}")
        repeated = sorted(k for k, v in form.items() if len(v) > 1)
        if repeated:
            self.fail(400, "invalid_request", f"parameter(s) given more than once: {', '.join(repeated)}")
        fields = {k: v[0] for k, v in form.items()}
        if req.log_entry is not None:
            self.state.annotate(req.log_entry, form={
                "grant_type": fields.get("grant_type"), "client_id": fields.get("client_id"),
                "scope": fields.get("scope"), "client_secret": "client_secret" in fields})
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        basic = req.header("Authorization")
        if basic and basic.split(" ", 1)[0].lower() == "basic":
            # client_secret_basic: each half is form-encoded before base64 (RFC 6749 §2.3.1).
            try:
                raw = base64.b64decode(basic.split(" ", 1)[1].strip(), validate=True).decode("utf-8")
                user, _, password = raw.partition(":")
                client_id, secret = unquote_plus(user), unquote_plus(password)
            except (ValueError, UnicodeDecodeError, IndexError):
                self.fail(401, "invalid_client", "malformed Basic credentials")
        grant = fields.get("grant_type")
        if not grant:
            self.fail(400, "invalid_request", "grant_type is required")
        if grant != "client_credentials":
            self.fail(400, "unsupported_grant_type", "only client_credentials is supported")
        if not client_id or secret is None:
            self.fail(400, "invalid_request", "client_id and client_secret are required")
        with self.state.lock:
            client = self.config["clients"].get(client_id)
            lifetime = self.config["token_lifetime"]
        if client is None or not hmac.compare_digest(client["secret"].encode("utf-8"),
                                                     secret.encode("utf-8")):
            self.fail(401, "invalid_client", "client authentication failed",
                      headers={"WWW-Authenticate": 'Basic realm="cognigy-emulator"'})
        realm_scopes = REALMS[realm]["scopes"]
        requested = fields.get("scope")
        requested = requested.split() if requested else list(realm_scopes or [])
        if realm_scopes is not None:
            unknown = [s for s in requested if s not in realm_scopes]
            if unknown:
                self.fail(400, "invalid_scope", f"unknown scope(s): {' '.join(unknown)}")
        # A restricted client gets the allowed subset; using the token for the
        # rest then gives 403, which is what scope tests want to see.
        allowed = client["scopes"]
        granted = [s for s in requested if allowed is None or s in allowed]
        token = self.state.issue_token(realm, client_id, granted, lifetime)
        return Response(200, {"access_token": token, "token_type": "Bearer",
                              "expires_in": int(lifetime), "scope": " ".join(granted)},
                        {"Cache-Control": "no-store", "Pragma": "no-cache"})


CONTROL_CHAR_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


def inspect_dataset_file(data, max_errors=100):
    """Validate an utterance file; returns (errors, lines) with lines=None when invalid."""
    errors = []
    if data.startswith(b"\xef\xbb\xbf"):
        errors.append({"path": "dataset", "line": 1, "column": 1, "offset": 0,
                       "message": "file starts with a UTF-8 byte order mark"})
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        errors.append({"path": "dataset", "line": line, "offset": exc.start,
                       "message": f"invalid UTF-8 at byte offset {exc.start}"})
        return errors, None
    for match in CONTROL_CHAR_RE.finditer(text):
        if len(errors) >= max_errors:
            break
        line_start = text.rfind("\n", 0, match.start()) + 1
        line = text.count("\n", 0, match.start()) + 1
        errors.append({"path": "dataset", "line": line, "column": match.start() - line_start + 1,
                       "message": f"control character U+{ord(match.group()[0]):04X} is not allowed"})
    if errors:
        return errors, None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [], [line[:-1] if line.endswith("\r") else line for line in lines]


def validate_dataset_payload(payload):
    errors = []

    def err(path, message):
        errors.append({"path": path, "message": message})

    if not isinstance(payload, dict):
        err("metadata", "payload must be a JSON object")
        return errors
    ref = payload.get("datasetIdReference")
    if not isinstance(ref, str) or not ref.strip():
        err("datasetIdReference", "must be a non-empty string")
    matrix = payload.get("utteranceCountMatrix")
    if not isinstance(matrix, dict):
        err("utteranceCountMatrix", "must be an object of label -> integer")
    else:
        for label, count in matrix.items():
            if not is_int(count):
                err(f"utteranceCountMatrix.{label}", f"must be an integer, got {json.dumps(count)}")
            elif not 0 <= count <= 100_000:
                err(f"utteranceCountMatrix.{label}", "must be between 0 and 100000")
    directives = payload.get("labelTaxonomyDirectives")
    if not isinstance(directives, list) or not directives:
        err("labelTaxonomyDirectives", "must be a non-empty array")
    else:
        for i, item in enumerate(directives):
            path = f"labelTaxonomyDirectives[{i}]"
            if not isinstance(item, dict):
                err(path, "must be an object with label, type and priority")
                continue
            for key in ("label", "type"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    err(f"{path}.{key}", "must be a non-empty string")
            priority = item.get("priority")
            if not is_int(priority) or priority < 0:
                err(f"{path}.priority", f"must be an integer >= 0, got {json.dumps(priority)}")
    meta = payload.get("metadata")
    if not isinstance(meta, dict):
        err("metadata.metadata", "must be an object of string -> string")
    else:
        for key, value in meta.items():
            if not isinstance(value, str):
                err(f"metadata.{key}", "must be a string")
    return errors


class DatasetTarget(Target):
    """The dataset workflow (POST /datasets/upload)."""

    def upload(self, req):
        record = self.bearer(req, "dataset", "cognigy:dataset:write")
        auto = (req.arg("autoRetrain") or "false").lower()
        if auto not in ("true", "false", "1", "0"):
            self.fail(400, "validation_error", "autoRetrain must be true or false",
                      [{"path": "autoRetrain", "message": "must be true or false"}])
        auto = auto in ("true", "1")
        if auto:
            self.require_scope(record, "cognigy:admin:retrain")
        parts = self.multipart(req)
        file_max = self.config["dataset"]["file_max"]
        dataset = parts.get("dataset")
        if dataset is not None and len(dataset.data) > file_max:
            self.fail(413, "payload_too_large",
                      f"dataset file is {len(dataset.data)} bytes; the limit is {file_max}")
        errors = []
        payload = None
        meta = parts.get("metadata")
        if meta is None:
            errors.append({"path": "metadata", "message": "multipart field 'metadata' is required"})
        else:
            try:
                payload = loads_json(meta.data)
            except (ValueError, UnicodeDecodeError) as exc:
                errors.append({"path": "metadata", "message": f"not valid JSON: {exc}"})
            else:
                errors.extend(validate_dataset_payload(payload))
        lines = None
        if dataset is None:
            errors.append({"path": "dataset", "message": "multipart file field 'dataset' is required"})
        else:
            file_errors, lines = inspect_dataset_file(dataset.data)
            errors.extend(file_errors)
        if errors:
            self.fail(400, "validation_error", f"{len(errors)} validation error(s)", errors)

        utterances = [line for line in lines if line.strip()]
        unique = len(set(utterances))
        ref = payload["datasetIdReference"]
        with self.state.lock:
            # "new": the platform may keep a second upload of a reference as a
            # second dataset (DESIGN 4.1), so a resend shows up as a double.
            ds_id = self.state.dataset_by_ref.get(ref)
            replaced = ds_id is not None and self.config["dataset"]["same_reference"] == "replace"
            if not replaced:
                ds_id = "ds_" + self.state.hex_id()
                self.state.dataset_by_ref[ref] = ds_id
            self.state.dataset_uploads[ref] += 1
            job_id = self.state.new_job("dataset_retrain", ds_id, req.failing_tasks()) if auto else None
            self.state.datasets[ds_id] = {
                "id": ds_id,
                "datasetIdReference": ref,
                "payload": payload,
                "metadata": payload.get("metadata", {}),
                "filename": dataset.filename,
                "lines": utterances,
                "line_count": len(lines),
                "blank_lines": len(lines) - len(utterances),
                "utterance_count": len(utterances),
                "unique_utterances": unique,
                "lines_sha256": hashlib.sha256("\n".join(utterances).encode("utf-8")).hexdigest(),
                "version": self.state.dataset_uploads[ref],
                "retrainJobId": job_id,
                "uploadedAt": utc_iso(),
            }
        body = {
            "datasetId": ds_id,
            "datasetIdReference": ref,
            "status": "ingested",
            "replaced": replaced,
            "lineCount": len(lines),
            "blankLines": len(lines) - len(utterances),
            "utteranceCount": len(utterances),
            "uniqueUtterances": unique,
            "duplicateLines": len(utterances) - unique,
            "parsingSuccessRate": round(unique / len(lines) * 100, 4) if lines else 0.0,
        }
        if auto:
            body["retrainJobId"] = job_id
        return Response(200 if replaced else 201, body)

    def get_dataset(self, req):
        self.bearer(req, "dataset", "cognigy:dataset:read")
        with self.state.lock:
            ds = self.state.datasets.get(req.params["datasetId"])
            if ds is None:
                self.fail(404, "not_found", "no such dataset")
            return Response(200, {k: v for k, v in ds.items() if k != "lines"})

    def get_job(self, req):
        return self.job(req, "dataset")


class IntentTarget(Target):
    """The intent example batch workflow (/api/v1/...)."""

    def _reject(self, intent_id, count, errors):
        invalid = len({e["index"] for e in errors if e.get("index") is not None})
        return Response(200, {
            "success": False,
            "intent_id": intent_id,
            "uploaded_count": 0,
            "rejected_count": count,
            "invalid_count": invalid,
            "retrain_job_id": None,
            "message": f"batch rejected: {len(errors)} problem(s); nothing was stored",
            "errors": errors,
        })

    def batch(self, req):
        record = self.bearer(req, "intent", "intent:write")
        intent_id = req.params["intentId"]
        body = self.json_body(req)
        examples = body.get("examples")
        if not isinstance(examples, list):
            self.fail(400, "validation_error", "examples must be an array",
                      [{"path": "examples", "message": "must be an array"}])
        trigger = body.get("trigger_retrain", False)
        if not isinstance(trigger, bool):
            self.fail(400, "validation_error", "trigger_retrain must be a boolean",
                      [{"path": "trigger_retrain", "message": "must be a boolean"}])
        if trigger:
            self.require_scope(record, "ai:train")

        errors = []

        def err(index, path, message):
            errors.append({"index": index, "path": path, "message": message})

        if not 1 <= len(examples) <= 100:
            err(None, "examples", f"a batch holds 1 to 100 examples, got {len(examples)}")
        seen = {}
        new_active = 0
        for i, ex in enumerate(examples):
            base = f"examples[{i}]"
            if not isinstance(ex, dict):
                err(i, base, "must be an object")
                continue
            text = ex.get("text")
            if not isinstance(text, str):
                err(i, f"{base}.text", "must be a string")
                text = None
            elif not 1 <= len(text) <= 500:
                err(i, f"{base}.text", f"must be 1 to 500 characters, got {len(text)}")
            elif text != text.strip():
                err(i, f"{base}.text", "must not start or end with white space")
            active = ex.get("is_active", True)
            if not isinstance(active, bool):
                err(i, f"{base}.is_active", "must be a boolean")
            elif active:
                new_active += 1
            annotations = ex.get("annotations", [])
            if not isinstance(annotations, list):
                err(i, f"{base}.annotations", "must be an array")
                annotations = []
            for j, ann in enumerate(annotations):
                apath = f"{base}.annotations[{j}]"
                if not isinstance(ann, dict):
                    err(i, apath, "must be an object")
                    continue
                entity = ann.get("entity_id")
                if not isinstance(entity, str) or not entity:
                    err(i, f"{apath}.entity_id", "must be a non-empty string")
                start, end = ann.get("start"), ann.get("end")
                if not is_int(start) or start < 0:
                    err(i, f"{apath}.start", "must be an integer >= 0")
                    start = None
                if not is_int(end):
                    err(i, f"{apath}.end", "must be an integer")
                elif start is not None and end <= start:
                    err(i, f"{apath}.end", f"must be greater than start ({start})")
                elif text is not None and end > len(text):
                    err(i, f"{apath}.end", f"must be at most the text length ({len(text)})")
            if text is not None:
                key = text.casefold()
                if key in seen:
                    err(i, f"{base}.text", f"duplicate of examples[{seen[key]}] after case folding")
                else:
                    seen[key] = i

        with self.state.lock:
            stored = self.state.intents.get(intent_id, [])
            existing_active = sum(1 for e in stored if e["is_active"])
            cap = self.config["intent_cap"]
            if existing_active + new_active > cap:
                err(None, "examples", f"intent would hold {existing_active + new_active} active "
                                      f"examples; the limit is {cap} ({existing_active} already there)")
            if errors:
                return self._reject(intent_id, len(examples), errors)
            stored = self.state.intents.setdefault(intent_id, [])
            self.state.intent_batches[intent_id] += 1
            batch_no = self.state.intent_batches[intent_id]
            for ex in examples:
                if req.drops():
                    continue
                stored.append({
                    "id": "ex_" + self.state.hex_id(),
                    "text": ex["text"],
                    "annotations": ex.get("annotations", []),
                    "is_active": ex.get("is_active", True),
                    "batch": batch_no,
                    "created_at": utc_iso(),
                })
            job_id = self.state.new_job("intent_retrain", intent_id, req.failing_tasks()) if trigger else None
        return Response(200, {
            "success": True,
            "intent_id": intent_id,
            "uploaded_count": len(examples),
            "rejected_count": 0,
            "retrain_job_id": job_id,
            "message": f"{len(examples)} example(s) added to intent {intent_id}",
        })

    def list_examples(self, req):
        self.bearer(req, "intent", "intent:read")
        limit = self._int_arg(req, "limit", 100, 1, 1000)
        offset = self._int_arg(req, "offset", 0, 0, None)
        intent_id = req.params["intentId"]
        with self.state.lock:
            stored = self.state.intents.get(intent_id, [])
            listed = len(stored)
            if self.config["lists"]["order"] == "reverse":
                # Newest first. Examples are only ever appended, so a listing is
                # anchored at the count its first page saw: later pages leave out
                # what was added since, and offsets neither repeat nor skip.
                key = (req.client_ip, intent_id)
                if offset == 0:
                    self.state.example_anchors[key] = listed
                listed = min(self.state.example_anchors.get(key, listed), listed)
                ordered = stored[:listed][::-1]
            else:
                ordered = stored
            page = [dict(e) for e in ordered[offset:offset + limit]]
            total = len(stored)
            active = sum(1 for e in stored if e["is_active"])
        return Response(200, {
            "intent_id": intent_id,
            "examples": page,
            "total": total,
            "active_count": active,
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if offset + limit < listed else None,
        })

    def _int_arg(self, req, name, default, low, high):
        raw = req.arg(name)
        if raw is None:
            return default
        if not re.fullmatch(r"\d+", raw) or int(raw) < low or (high is not None and int(raw) > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            self.fail(400, "validation_error", f"{name} must be an integer {bound}",
                      [{"path": name, "message": f"must be an integer {bound}"}])
        return int(raw)

    def get_job(self, req):
        return self.job(req, "intent")


class V2Target(Target):
    """The Cognigy.AI REST API v2.0 (/new/v2.0/...)."""

    kind = "v2"

    def error(self, status, code, message, details=None, headers=None):
        title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        return Response(status, {
            "type": f"urn:cognigy-emulator:error:{code}",
            "title": title,
            "status": status,
            "detail": message,
            "code": code,
            "traceId": self.state.trace_id(),
            "details": details or [],
        }, headers)

    def not_found(self, req):
        return self.error(404, "not_found", f"no route for {req.method} {req.path}")

    @property
    def limits(self):
        return self.config["v2"]

    def rate_limit(self, req):
        rl = self.limits.get("rate_limit") or {}
        allowed, window = rl.get("requests", 0), float(rl.get("window_s", 0))
        if not allowed or window <= 0:
            return
        now = time.monotonic()
        with self.state.lock:
            hits = self.state.rate_windows.setdefault(req.client_ip, collections.deque())
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= allowed:
                wait = max(1, math.ceil(hits[0] + window - now))
                self.fail(429, "rate_limited",
                          f"more than {allowed} requests in {window:g} s from {req.client_ip}",
                          headers={"Retry-After": str(wait)})
            hits.append(now)

    def authenticate(self, req):
        self.rate_limit(req)
        key = req.header("X-API-Key") or req.arg("api_key")
        if key is not None:
            with self.state.lock:
                keys = list(self.config["api_keys"])
            if not any(hmac.compare_digest(key.encode("utf-8"), k.encode("utf-8")) for k in keys):
                self.fail(401, "invalid_api_key", "API key not recognised")
            return
        if not req.header("Authorization"):
            self.fail(401, "unauthorized", "send X-API-Key or Authorization: Bearer <token>",
                      headers={"WWW-Authenticate": 'Bearer realm="cognigy-emulator"'})
        self.bearer(req, "v2")

    # sentence validation -------------------------------------------------
    def _check_text(self, text, path, errors):
        limit = self.limits["text_max"]
        if not isinstance(text, str):
            errors.append({"path": path, "message": "text must be a string"})
            return None
        if not text.strip():
            errors.append({"path": path, "message": "text must not be empty"})
            return None
        if len(text) > limit:
            errors.append({"path": path, "message": f"text must be at most {limit} characters, got {len(text)}"})
            return None
        return text

    def _check_slots(self, slots, text, path, errors):
        if not isinstance(slots, list):
            errors.append({"path": path, "message": "slots must be an array"})
            return None
        for i, slot in enumerate(slots):
            if not isinstance(slot, dict):
                errors.append({"path": f"{path}[{i}]", "message": "a slot must be an object"})
                continue
            start, end = slot.get("start"), slot.get("end")
            if start is None and end is None:
                continue
            if not (is_int(start) and is_int(end) and 0 <= start < end):
                errors.append({"path": f"{path}[{i}]", "message": "slot needs integers 0 <= start < end"})
            elif text is not None and end > len(text):
                errors.append({"path": f"{path}[{i}].end", "message": f"slot ends past the text ({len(text)})"})
        return slots

    def _check_value(self, value, path, errors, partial=False, current=None):
        """Validate a sentence value; returns (text, slots, locale) or None."""
        if not isinstance(value, dict):
            errors.append({"path": path, "message": "must be an object"})
            return None
        before = len(errors)
        if "text" in value or not partial:
            text = self._check_text(value.get("text"), f"{path}.text", errors)
        else:
            text = current["text"]
        if "slots" in value:
            slots = self._check_slots(value["slots"], text, f"{path}.slots", errors)
        else:
            slots = current["slots"] if current else []
        locale = value.get("localeId")
        if locale is not None and (not isinstance(locale, str) or not locale):
            errors.append({"path": f"{path}.localeId", "message": "localeId must be a non-empty string"})
        if locale is None:
            locale = current["localeReference"] if current else self.limits["default_locale"]
        return None if len(errors) > before else (text, slots, locale)

    def _check_caps(self, flow_id, intent_id, intent_count, flow_count):
        flow_cap, intent_cap = self.limits["flow_cap"], self.limits["intent_cap"]
        if intent_count > intent_cap:
            self.fail(400, "intent_sentence_limit",
                      f"intent {intent_id} would hold {intent_count} sentences; the limit is {intent_cap}")
        if flow_count > flow_cap:
            self.fail(400, "flow_sentence_limit",
                      f"flow {flow_id} would hold {flow_count} sentences; the limit is {flow_cap}")

    def _validation_failed(self, errors):
        self.fail(400, "validation_error", "; ".join(e["message"] for e in errors[:3]), errors)

    # cursors -----------------------------------------------------------
    @staticmethod
    def _cursor(direction, seq):
        return base64.urlsafe_b64encode(f"{direction}|{seq}".encode()).decode().rstrip("=")

    def _decode_cursor(self, raw, direction):
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            kind, seq = text.split("|")
            seq = int(seq)
        except (ValueError, UnicodeDecodeError):
            self.fail(400, "invalid_cursor", "cursor is not valid for this list")
        if kind != direction:
            why = ("it was made for the list in its other order (lists.order changed)"
                   if kind.lstrip("r") == direction.lstrip("r") else "it points the other way")
            self.fail(400, "invalid_cursor", f"cursor is not valid here: {why}")
        return seq

    # handlers ------------------------------------------------------------
    def list_sentences(self, req):
        self.authenticate(req)
        raw = req.arg("limit")
        page_max = self.limits["page_max"]
        limit = self.limits["page_default"]
        if raw is not None:
            if not re.fullmatch(r"\d+", raw) or not 1 <= int(raw) <= page_max:
                self.fail(400, "validation_error", f"limit must be an integer from 1 to {page_max}",
                          [{"path": "limit", "message": f"must be 1..{page_max}"}])
            limit = int(raw)
        nxt, prev = req.arg("next"), req.arg("previous")
        with self.state.lock:
            reverse = self.config["lists"]["order"] == "reverse"
            sentences = self.state.v2_intent(req.params["flowId"], req.params["intentId"]) or []
            # Stored oldest first (ascending seq); a cursor names the seq of the
            # item it continues from, so it survives additions and deletions.
            seqs = [s.seq for s in sentences]
            count = len(seqs)
            if not reverse:
                if nxt:
                    start = bisect.bisect_right(seqs, self._decode_cursor(nxt, "a"))
                    stop = start + limit
                elif prev:
                    stop = bisect.bisect_left(seqs, self._decode_cursor(prev, "b"))
                    start = max(0, stop - limit)
                else:
                    start, stop = 0, limit
                page = sentences[start:stop]
                more_after, more_before = stop < count, start > 0
            else:
                # Newest first: "next" goes to older items, "previous" to newer.
                if nxt:
                    stop = bisect.bisect_left(seqs, self._decode_cursor(nxt, "ra"))
                    start = max(0, stop - limit)
                elif prev:
                    start = bisect.bisect_right(seqs, self._decode_cursor(prev, "rb"))
                    stop = min(count, start + limit)
                else:
                    start, stop = max(0, count - limit), count
                page = sentences[start:stop][::-1]
                more_after, more_before = start > 0, stop < count
            after, before = ("ra", "rb") if reverse else ("a", "b")
            body = {
                "items": [dict(s.doc) for s in page],
                "total": count,
                "nextCursor": self._cursor(after, page[-1].seq) if page and more_after else None,
                "previousCursor": self._cursor(before, page[0].seq) if page and more_before else None,
            }
        return Response(200, body)

    def list_intents(self, req):
        """The intents of a flow in name order, with cursor pages like the
        sentences'; an intent exists once something was written to it."""
        self.authenticate(req)
        raw = req.arg("limit")
        page_max = self.limits["page_max"]
        limit = self.limits["page_default"]
        if raw is not None:
            if not re.fullmatch(r"\d+", raw) or not 1 <= int(raw) <= page_max:
                self.fail(400, "validation_error", f"limit must be an integer from 1 to {page_max}",
                          [{"path": "limit", "message": f"must be 1..{page_max}"}])
            limit = int(raw)
        nxt = req.arg("next")
        after = None
        if nxt:
            try:
                text = base64.urlsafe_b64decode(nxt + "=" * (-len(nxt) % 4)).decode()
            except (ValueError, UnicodeDecodeError):
                text = ""
            if not text.startswith("i|"):
                self.fail(400, "invalid_cursor", "cursor is not valid for this list")
            after = text[2:]
        flow_id = req.params["flowId"]
        with self.state.lock:
            flow = self.state.flows.get(flow_id, {})
            names = sorted(flow)
            start = bisect.bisect_right(names, after) if after is not None else 0
            page = names[start:start + limit]
            items = [{"_id": n, "name": n, "flowId": flow_id, "sentenceCount": len(flow[n])} for n in page]
            more = start + limit < len(names)
        cursor = base64.urlsafe_b64encode(f"i|{page[-1]}".encode()).decode().rstrip("=") if page and more else None
        return Response(200, {"items": items, "total": len(names), "nextCursor": cursor,
                              "previousCursor": None})

    def create_sentence(self, req):
        self.authenticate(req)
        body = self.json_body(req)
        errors = []
        checked = self._check_value(body, "body", errors)
        if errors:
            for e in errors:
                e["path"] = e["path"].replace("body.", "", 1)
            self._validation_failed(errors)
        text, slots, locale = checked
        flow_id, intent_id = req.params["flowId"], req.params["intentId"]
        with self.state.lock:
            current = self.state.v2_intent(flow_id, intent_id) or []
            self._check_caps(flow_id, intent_id, len(current) + 1, self.state.v2_flow_count(flow_id) + 1)
            sentence = self.state.v2_new_sentence(flow_id, intent_id, text, slots, locale)
            self.state.v2_intent(flow_id, intent_id, create=True).append(sentence)
            return Response(201, dict(sentence.doc))

    def patch_sentences(self, req):
        self.authenticate(req)
        body = self.json_body(req)
        ops = body.get("operations")
        if not isinstance(ops, list) or not ops:
            self._validation_failed([{"path": "operations", "message": "operations must be a non-empty array"}])
        flow_id, intent_id = req.params["flowId"], req.params["intentId"]
        errors = []
        with self.state.lock:
            contract_only = self.limits["patch_form"] == "contract"
            counts_only = self.limits["patch_answer"] == "counts"
            current = self.state.v2_intent(flow_id, intent_id) or []
            by_id = {s.doc["_id"]: s for s in current}
            deleted, updates, creates = set(), {}, []
            for i, op in enumerate(ops):
                path = f"operations[{i}]"
                if not isinstance(op, dict) or op.get("op") not in ("create", "update", "delete"):
                    errors.append({"path": f"{path}.op", "message": "op must be create, update or delete"})
                    continue
                kind = op["op"]
                if kind == "create":
                    checked = self._check_value(op.get("value"), f"{path}.value", errors)
                    if checked:
                        creates.append(checked)
                    continue
                target_id, id_path = self._op_target(op, path, contract_only, errors)
                if id_path is None:
                    continue
                if not isinstance(target_id, str) or target_id not in by_id:
                    errors.append({"path": id_path, "message": f"no sentence {target_id!r} in this intent"})
                    continue
                if target_id in deleted or target_id in updates:
                    errors.append({"path": id_path,
                                   "message": f"sentence {target_id} is already changed by this request"})
                    continue
                if kind == "delete":
                    deleted.add(target_id)
                else:
                    checked = self._check_value(op.get("value"), f"{path}.value", errors,
                                                partial=True, current=by_id[target_id].doc)
                    if checked:
                        updates[target_id] = checked
            if errors:
                self._validation_failed(errors)
            new_count = len(current) - len(deleted) + len(creates)
            self._check_caps(flow_id, intent_id, new_count,
                             self.state.v2_flow_count(flow_id) - len(deleted) + len(creates))
            sentences = self.state.v2_intent(flow_id, intent_id, create=True)
            now = utc_iso()
            for sid, (text, slots, locale) in updates.items():
                by_id[sid].doc.update(text=text, slots=slots, localeReference=locale, lastChanged=now)
            if deleted:
                sentences[:] = [s for s in sentences if s.doc["_id"] not in deleted]
                for sid in deleted:
                    self.state.sentence_index.pop(sid, None)
            created_ids = []
            for text, slots, locale in creates:
                sentence = self.state.v2_new_sentence(flow_id, intent_id, text, slots, locale)
                created_ids.append(sentence.doc["_id"])
                if req.drops():
                    # answered as stored, kept nowhere
                    self.state.sentence_index.pop(sentence.doc["_id"], None)
                    continue
                sentences.append(sentence)
        answer = {"created": len(creates), "updated": len(updates), "deleted": len(deleted)}
        if not counts_only:
            answer["createdIds"] = created_ids
        return Response(200, answer)

    @staticmethod
    def _op_target(op, path, contract_only, errors):
        """(sentence id, path to blame) of an update or delete; path None after an error.

        The contract's form is value._id; an op-level "id" is accepted unless
        v2.patch_form is "contract".
        """
        value = op.get("value")
        value_id = value.get("_id") if isinstance(value, dict) else None
        if "id" in op:
            if contract_only:
                errors.append({"path": f"{path}.id",
                               "message": "the sentence id goes in value._id, not in the operation"})
                return None, None
            if value_id is not None and value_id != op["id"]:
                errors.append({"path": f"{path}.value._id",
                               "message": f"value._id {value_id!r} differs from id {op['id']!r}"})
                return None, None
        if value_id is not None or contract_only or "id" not in op:
            return value_id, f"{path}.value._id"
        return op["id"], f"{path}.id"

    def _parse_import(self, data, filename):
        """Intent -> sentence values from an import file (JSON or CSV)."""
        errors = []
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self._validation_failed([{"path": "file", "message": f"invalid UTF-8 at byte {exc.start}"}])
        intents = collections.OrderedDict()
        stripped = text.lstrip()
        as_json = stripped.startswith(("[", "{")) or (filename or "").lower().endswith(".json")
        if as_json:
            try:
                doc = loads_json(text)
            except ValueError as exc:
                self._validation_failed([{"path": "file", "message": f"not valid JSON: {exc}"}])
            if isinstance(doc, dict):
                doc = doc.get("intents")
            if not isinstance(doc, list):
                self._validation_failed([{"path": "file", "message": "expected an array of intents"}])
            for i, item in enumerate(doc):
                path = f"file[{i}]"
                name = item.get("intent", item.get("name")) if isinstance(item, dict) else None
                if not isinstance(name, str) or not name.strip():
                    errors.append({"path": path, "message": "each intent needs a non-empty 'intent' or 'name'"})
                    continue
                sentences = item.get("sentences", [])
                if not isinstance(sentences, list):
                    errors.append({"path": f"{path}.sentences", "message": "sentences must be an array"})
                    continue
                bucket = intents.setdefault(name, [])
                for j, s in enumerate(sentences):
                    value = {"text": s} if isinstance(s, str) else s
                    checked = self._check_value(value, f"{path}.sentences[{j}]", errors)
                    if checked:
                        bucket.append(checked)
        else:
            rows = csv.reader(io.StringIO(text))
            for line_no, row in enumerate(rows, 1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if line_no == 1 and [c.strip().lower() for c in row] == ["intent", "sentence"]:
                    continue
                path = f"file:{line_no}"
                if len(row) != 2 or not row[0].strip():
                    errors.append({"path": path, "message": "a CSV row is intent,sentence"})
                    continue
                checked = self._check_value({"text": row[1]}, path, errors)
                if checked:
                    intents.setdefault(row[0].strip(), []).append(checked)
        if errors:
            self._validation_failed(errors)
        return intents

    def import_intents(self, req):
        self.authenticate(req)
        parts = self.multipart(req)
        upload_max = self.limits["text_upload_max"]
        file_part = parts.get("file")
        if file_part is None:
            self._validation_failed([{"path": "file", "message": "multipart field 'file' is required"}])
        if len(file_part.data) > upload_max:
            self.fail(413, "payload_too_large",
                      f"import file is {len(file_part.data)} bytes; the limit is {upload_max}")
        mode = parts["mode"].data.decode("utf-8", "replace").strip() if "mode" in parts else None
        if mode not in ("skip", "overwrite", "merge"):
            self._validation_failed([{"path": "mode", "message": "mode must be skip, overwrite or merge"}])
        locale = (parts["localeId"].data.decode("utf-8", "replace").strip()
                  if "localeId" in parts else "") or self.limits["default_locale"]
        imported = self._parse_import(file_part.data, file_part.filename)
        flow_id = req.params["flowId"]
        fail = req.failing_tasks()
        result = {"mode": mode, "intentsCreated": 0, "intentsSkipped": 0, "intentsOverwritten": 0,
                  "intentsMerged": 0, "sentencesCreated": 0, "sentencesDeleted": 0, "sentencesSkipped": 0}
        with self.state.lock:
            flow = self.state.flows.get(flow_id, {})
            plan = []  # (intent, replace_existing, values)
            for name, values in imported.items():
                values = [(t, s, loc if loc != self.limits["default_locale"] else locale) for t, s, loc in values]
                existing = flow.get(name)
                if existing is None:
                    result["intentsCreated"] += 1
                    plan.append((name, False, values))
                elif mode == "skip":
                    result["intentsSkipped"] += 1
                    result["sentencesSkipped"] += len(values)
                elif mode == "overwrite":
                    result["intentsOverwritten"] += 1
                    result["sentencesDeleted"] += len(existing)
                    plan.append((name, True, values))
                else:
                    result["intentsMerged"] += 1
                    have = {s.doc["text"] for s in existing}
                    fresh = []
                    for value in values:
                        if value[0] in have:
                            result["sentencesSkipped"] += 1
                        else:
                            have.add(value[0])
                            fresh.append(value)
                    plan.append((name, False, fresh))
            flow_total = self.state.v2_flow_count(flow_id)
            for name, replace, values in plan:
                before = 0 if replace else len(flow.get(name, []))
                if replace:
                    flow_total -= len(flow[name])
                flow_total += len(values)
                self._check_caps(flow_id, name, before + len(values), 0)
            self._check_caps(flow_id, "(import)", 0, flow_total)
            if not fail:
                for name, replace, values in plan:
                    sentences = self.state.v2_intent(flow_id, name, create=True)
                    if replace:
                        for s in sentences:
                            self.state.sentence_index.pop(s.doc["_id"], None)
                        sentences.clear()
                    for text, slots, loc in values:
                        sentences.append(self.state.v2_new_sentence(flow_id, name, text, slots, loc))
                        result["sentencesCreated"] += 1
            task = self.state.new_task("importIntents", 3,
                                       {"flowId": flow_id, "localeId": locale, "mode": mode},
                                       fail_reason=fail, result=result)
        return Response(202, task)

    def train(self, req):
        self.authenticate(req)
        body = self.json_body(req)
        mode = body.get("mode", "full")
        locale = body.get("localeId", self.limits["default_locale"])
        errors = []
        if mode not in ("full", "quick"):
            errors.append({"path": "mode", "message": "mode must be full or quick"})
        if not isinstance(locale, str) or not locale:
            errors.append({"path": "localeId", "message": "localeId must be a non-empty string"})
        if errors:
            self._validation_failed(errors)
        task = self.state.new_task("trainNlu", 5 if mode == "full" else 2,
                                   {"flowId": req.params["flowId"], "localeId": locale, "mode": mode},
                                   fail_reason=req.failing_tasks())
        return Response(202, task)

    def get_task(self, req):
        self.authenticate(req)
        with self.state.lock:
            if req.params["taskId"] not in self.state.tasks:
                self.fail(404, "not_found", f"no task {req.params['taskId']}")
            return Response(200, self.state.task_view(req.params["taskId"]))

    def cancel_task(self, req):
        self.authenticate(req)
        with self.state.lock:
            task = self.state.tasks.get(req.params["taskId"])
            if task is None:
                self.fail(404, "not_found", f"no task {req.params['taskId']}")
            if self.state.task_view(task["_id"])["status"] in ("queued", "active"):
                task["cancelled_at"] = time.monotonic()
            return Response(200, self.state.task_view(task["_id"]))


class EmbeddingsTarget(Target):
    """An OpenAI-compatible POST /v1/embeddings serving fixture vectors."""

    kind = "openai"

    def __init__(self, emulator, fixture):
        super().__init__(emulator)
        self.fixture_dim = int(fixture.get("dim", 8))
        self.model = fixture.get("model", "emulator-embed")
        self.vectors = {}
        for text, vec in (fixture.get("vectors") or {}).items():
            if len(vec) != self.fixture_dim:
                raise ConfigError(f"fixture vector for {text!r} has {len(vec)} values, not {self.fixture_dim}")
            self.vectors[text] = unit([float(v) for v in vec])

    def error(self, status, code, message, details=None, headers=None):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return Response(status, {"error": {"message": message, "type": kind, "param": None,
                                           "code": code}}, headers)

    def dim(self):
        configured = self.config["embeddings"].get("dim")
        return max(int(configured), self.fixture_dim) if configured else self.fixture_dim

    def vector(self, text, dim):
        known = self.vectors.get(text)
        if known is not None:
            # Zero padding keeps the fixture's cosines when a larger dim is configured.
            return known + [0.0] * (dim - len(known))
        return pseudo_unit_vector(text, dim)

    def embeddings(self, req):
        key = self.config["embeddings"].get("api_key")
        if key:
            auth = req.header("Authorization") or ""
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), key.encode()):
                self.fail(401, "invalid_api_key", "Incorrect API key provided")
        body = self.json_body(req)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or len(inputs) > 2048:
            self.fail(400, "invalid_input", "input must be a string or an array of 1 to 2048 strings")
        if not all(isinstance(t, str) for t in inputs):
            self.fail(400, "invalid_input", "input items must be strings (token arrays are not supported)")
        model = body.get("model", self.model)
        if not isinstance(model, str) or not model:
            self.fail(400, "invalid_model", "model must be a non-empty string")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            self.fail(400, "invalid_encoding_format", "encoding_format must be float or base64")
        dim = self.dim()
        data = []
        for i, text in enumerate(inputs):
            vec = self.vector(text, dim)
            if fmt == "base64":
                vec = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(max(1, len(t.split())) for t in inputs)
        with self.state.lock:
            self.state.embedding_requests += 1
            self.state.embedding_inputs += len(inputs)
        return Response(200, {"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class WebhookSink(Target):
    """A Standard Webhooks receiver that verifies and keeps what it is sent."""

    def receive(self, req):
        name = req.params["name"]
        with self.state.lock:
            cfg = dict(self.config["sinks"].get(name) or {})
            tolerance = float(self.config["webhook_tolerance_s"])
            record = self.state.sink(name)
            record["attempts"] += 1
        status = cfg.get("status")
        if status and not 200 <= status < 300:
            headers = {"Retry-After": cfg["retry_after"]} if cfg.get("retry_after") else None
            with self.state.lock:
                record["answered"][str(status)] += 1
            return self.error(status, "configured_status", f"sink {name} is set to answer {status}",
                              headers=headers)
        msg_id = req.header("webhook-id")
        stamp = req.header("webhook-timestamp")
        signature = req.header("webhook-signature")
        secrets = cfg.get("secret")
        secrets = secrets if isinstance(secrets, list) else [secrets] if secrets else []
        valid = None
        if secrets:
            valid = self._verify(record, msg_id, stamp, signature, req.body, secrets, tolerance)
        try:
            body = loads_json(req.body)
        except (ValueError, UnicodeDecodeError):
            body = None
        with self.state.lock:
            if msg_id is not None and msg_id in record["seen"]:
                record["duplicates"] += 1
                record["duplicate_ids"].append(msg_id)
                record["answered"]["200"] += 1
                return Response(200, {"ok": True, "duplicate": True})
            if msg_id is not None:
                record["seen"].add(msg_id)
            record["deliveries"].append({
                "id": msg_id,
                "timestamp": int(stamp) if stamp and stamp.isdigit() else stamp,
                "body": body,
                "raw": req.body.decode("utf-8", "replace") if body is None else None,
                "valid": valid,
                "received_at": utc_iso(),
            })
            record["answered"]["200"] += 1
        return Response(200, {"ok": True, "duplicate": False})

    def _verify(self, record, msg_id, stamp, signature, body, secrets, tolerance):
        def reject(status, code, message):
            with self.state.lock:
                record["rejected"].append({"id": msg_id, "reason": code, "at": utc_iso()})
                record["answered"][str(status)] += 1
            self.fail(status, code, message)

        if not msg_id or not stamp or not signature:
            reject(400, "missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required")
        if not re.fullmatch(r"\d{1,12}", stamp):
            reject(400, "bad_timestamp", "webhook-timestamp must be Unix seconds")
        skew = time.time() - int(stamp)
        if skew > tolerance:
            reject(400, "timestamp_too_old", "webhook-timestamp is too old")
        if skew < -tolerance:
            reject(400, "timestamp_in_future", "webhook-timestamp is too far in the future")
        signed = f"{msg_id}.{stamp}.".encode("utf-8") + body
        expected = [base64.b64encode(hmac.new(decode_webhook_secret(s), signed, hashlib.sha256).digest())
                    for s in secrets]
        given = [item.split(",", 1)[1].encode("ascii", "replace")
                 for item in signature.split() if item.startswith("v1,")]
        # Compare every pair so the time taken does not depend on which one matched.
        matched = False
        for g in given:
            for e in expected:
                matched |= hmac.compare_digest(g, e)
        if not matched:
            reject(401, "bad_signature", "no webhook-signature matches")
        return True


class Control(Target):
    """The /_emulator/ control API: read state, reset, configure, seed, inject faults."""

    def health(self, req):
        return Response(200, {"ok": True})

    def get_state(self, req):
        include_lines = req.arg("lines") not in ("0", "false")
        return Response(200, self.state.snapshot(include_lines, self.emu.faults.view()))

    def requests(self, req):
        since = req.arg("since")
        since = int(since) if since and since.isdigit() else 0
        with self.emu.state.lock:
            entries = [dict(e) for e in self.emu.state.log if e["seq"] > since]
            last = self.emu.state.request_seq
        return Response(200, {"requests": entries, "last_seq": last})

    def reset(self, req):
        with self.emu.state.lock:
            self.emu.state.clear()
            self.emu.faults.clear()
        return Response(200, {"ok": True})

    def _json(self, req):
        try:
            return loads_json(req.body) if req.body else {}
        except (ValueError, UnicodeDecodeError) as exc:
            self.fail(400, "invalid_json", str(exc))

    def get_config(self, req):
        with self.emu.state.lock:
            return Response(200, redacted_config(self.emu.state.config))

    def set_config(self, req):
        patch = self._json(req)
        with self.emu.state.lock:
            trial = copy.deepcopy(self.emu.state.config)
            try:
                merge_config(trial, patch)
                self.emu.check_config(trial)
            except ConfigError as exc:
                self.fail(400, "invalid_config", str(exc))
            # Swapped whole so a request never sees a half-merged configuration.
            self.emu.state.config = trial
            return Response(200, redacted_config(trial))

    def get_faults(self, req):
        return Response(200, {"faults": self.emu.faults.view()})

    def set_faults(self, req):
        spec = self._json(req)
        if isinstance(spec, dict):
            spec = spec.get("faults", [])
        try:
            self.emu.faults.replace(spec)
        except ConfigError as exc:
            self.fail(400, "invalid_faults", str(exc))
        return Response(200, {"faults": self.emu.faults.view()})

    def clear_faults(self, req):
        self.emu.faults.clear()
        return Response(200, {"faults": []})

    def expire_tokens(self, req):
        return Response(200, {"expired": self.emu.state.expire_tokens()})

    def seed(self, req):
        spec = self._json(req)
        if not isinstance(spec, dict) or set(spec) - {"v2", "intents"}:
            self.fail(400, "invalid_seed", "seed takes {'v2': {flow: {intent: [...]}}, 'intents': {intent: [...]}}")
        state = self.emu.state
        counts = {"sentences": 0, "examples": 0}
        try:
            with state.lock:
                locale = state.config["v2"]["default_locale"]
                for flow_id, intents in (spec.get("v2") or {}).items():
                    for intent_id, items in intents.items():
                        sentences = state.v2_intent(flow_id, intent_id, create=True)
                        for item in items:
                            item = {"text": item} if isinstance(item, str) else item
                            sentences.append(state.v2_new_sentence(
                                flow_id, intent_id, str(item["text"]), list(item.get("slots", [])),
                                item.get("localeId", locale)))
                            counts["sentences"] += 1
                for intent_id, items in (spec.get("intents") or {}).items():
                    stored = state.intents.setdefault(intent_id, [])
                    for item in items:
                        item = {"text": item} if isinstance(item, str) else item
                        stored.append({"id": "ex_" + state.hex_id(), "text": str(item["text"]),
                                       "annotations": list(item.get("annotations", [])),
                                       "is_active": bool(item.get("is_active", True)),
                                       "batch": 0, "created_at": utc_iso()})
                        counts["examples"] += 1
        except (AttributeError, KeyError, TypeError) as exc:
            self.fail(400, "invalid_seed", f"malformed seed: {exc!r}")
        return Response(200, counts)


# --------------------------------------------------------------------------
# routing


class Route:
    def __init__(self, method, pattern, target, handler, body_max, name=None, present=None):
        self.method = method
        self.regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.target = target
        self.handler = handler
        self.body_max = body_max
        self.name = name or f"{method} {pattern}"
        # A callable saying whether the route exists under the live config.
        self.present = present or (lambda: True)


class Emulator:
    def __init__(self, config, fixture, seed=None, quiet=False):
        self.quiet = quiet
        self.state = State(config, seed)
        self.faults = Faults(self.state, seed)
        self.oauth = TokenEndpoint(self)
        self.dataset = DatasetTarget(self)
        self.intent = IntentTarget(self)
        self.v2 = V2Target(self)
        self.embed = EmbeddingsTarget(self, fixture)
        self.sink = WebhookSink(self)
        self.control = Control(self)
        self.check_config(config)
        cfg = lambda: self.state.config  # noqa: E731 - limits follow live config changes
        small = lambda: 64 * KiB  # noqa: E731
        v2_json = lambda: cfg()["v2"]["json_body_max"]  # noqa: E731
        v2_text = lambda: cfg()["v2"]["text_upload_max"] + 64 * KiB  # noqa: E731
        dataset = lambda: cfg()["dataset"]["file_max"] + cfg()["dataset"]["body_slack"]  # noqa: E731
        medium = lambda: 4 * MiB  # noqa: E731
        big = lambda: 64 * MiB  # noqa: E731
        # The contract defines no job endpoint; "absent" takes it at its word.
        jobs = lambda: cfg()["jobs"]["endpoint"] != "absent"  # noqa: E731
        flow = "/new/v2.0/flows/{flowId}"
        sentences = flow + "/intents/{intentId}/sentences"
        self.routes = [
            Route("POST", "/oauth/token", self.oauth, lambda r: self.oauth.token(r, "dataset"), small),
            Route("POST", "/datasets/upload", self.dataset, self.dataset.upload, dataset),
            Route("GET", "/datasets/{datasetId}", self.dataset, self.dataset.get_dataset, small),
            Route("GET", "/jobs/{jobId}", self.dataset, self.dataset.get_job, small, present=jobs),
            Route("POST", "/api/v1/auth/token", self.oauth, lambda r: self.oauth.token(r, "intent"), small),
            Route("POST", "/api/v1/intents/{intentId}/examples/batch", self.intent, self.intent.batch, medium),
            Route("GET", "/api/v1/intents/{intentId}/examples", self.intent, self.intent.list_examples, small),
            Route("GET", "/api/v1/jobs/{jobId}", self.intent, self.intent.get_job, small, present=jobs),
            Route("POST", "/auth/oauth2/token", self.oauth, lambda r: self.oauth.token(r, "v2"), small),
            Route("GET", flow + "/intents", self.v2, self.v2.list_intents, v2_json),
            Route("GET", sentences, self.v2, self.v2.list_sentences, v2_json),
            Route("POST", sentences, self.v2, self.v2.create_sentence, v2_json),
            Route("PATCH", sentences, self.v2, self.v2.patch_sentences, v2_json),
            Route("POST", flow + "/intents/import", self.v2, self.v2.import_intents, v2_text),
            Route("POST", flow + "/intents/train", self.v2, self.v2.train, v2_json),
            Route("GET", "/new/v2.0/tasks/{taskId}", self.v2, self.v2.get_task, v2_json),
            Route("POST", "/new/v2.0/tasks/{taskId}/cancel", self.v2, self.v2.cancel_task, v2_json),
            Route("POST", "/v1/embeddings", self.embed, self.embed.embeddings, big),
            Route("POST", "/_sink/webhooks/{name}", self.sink, self.sink.receive, medium),
        ]
        c = self.control
        self.control_routes = [
            Route("GET", "/_emulator/health", c, c.health, small),
            Route("GET", "/_emulator/state", c, c.get_state, small),
            Route("GET", "/_emulator/requests", c, c.requests, small),
            Route("POST", "/_emulator/reset", c, c.reset, small),
            Route("GET", "/_emulator/config", c, c.get_config, small),
            Route("POST", "/_emulator/config", c, c.set_config, medium),
            Route("GET", "/_emulator/faults", c, c.get_faults, small),
            Route("POST", "/_emulator/faults", c, c.set_faults, medium),
            Route("DELETE", "/_emulator/faults", c, c.clear_faults, small),
            Route("POST", "/_emulator/expire_tokens", c, c.expire_tokens, small),
            Route("POST", "/_emulator/seed", c, c.seed, big),
        ]

    def check_config(self, config):
        dim = config["embeddings"].get("dim")
        if dim is not None and (not is_int(dim) or dim < self.embed.fixture_dim):
            raise ConfigError(f"embeddings.dim must be an integer >= the fixture's dim ({self.embed.fixture_dim})")

    def target_for_path(self, path):
        if path.startswith("/new/v2.0/") or path == "/auth/oauth2/token":
            return self.v2
        if path.startswith("/v1/"):
            return self.embed
        if path.startswith("/_emulator/"):
            return self.control
        return self.dataset

    def match(self, method, path):
        """(route, params, allowed_methods)."""
        routes = self.control_routes if path.startswith("/_emulator/") else self.routes
        allowed = []
        for route in routes:
            m = route.regex.match(path)
            if m and route.present():
                if route.method == method:
                    return route, {k: unquote(v) for k, v in m.groupdict().items()}, None
                allowed.append(route.method)
        return None, None, allowed


# --------------------------------------------------------------------------
# HTTP plumbing


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cognigy-emulator/1.0"
    sys_version = ""
    # Idle keep-alive connections are dropped after this long, as a gateway would.
    timeout = 120

    def parse_request(self):
        self._expect_pending = False
        return super().parse_request()

    def handle_expect_100(self):
        # Defer "100 Continue" until the body is wanted, so an oversized upload
        # can be refused before the client sends it.
        self._expect_pending = True
        return True

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, fmt, *args):
        if not self.server.emulator.quiet:
            sys.stderr.write("%s - - [%s] %s\n" % (self.address_string(), self.log_date_time_string(), fmt % args))

    # body -----------------------------------------------------------------
    def _continue(self):
        if self._expect_pending:
            self._expect_pending = False
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _read_exact(self, n):
        data = self.rfile.read(n)
        if len(data) < n:
            raise ClientGone()
        return data

    def _drain(self, n):
        while n > 0:
            chunk = self.rfile.read(min(n, MiB))
            if not chunk:
                raise ClientGone()
            n -= len(chunk)

    def _read_body(self, limit):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            self.close_connection = True
            raise ClientGone()
        length = int(raw)
        if length > limit:
            if self._expect_pending or length > DRAIN_MAX:
                self.close_connection = True
                self._expect_pending = False
            else:
                self._drain(length)
            raise BodyTooLarge()
        self._continue()
        return self._read_exact(length)

    def _read_chunked(self, limit):
        self._continue()
        chunks, total, too_large = [], 0, False
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ClientGone()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise ClientGone() from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            total += size
            if total > limit:
                too_large = True
                if total > DRAIN_MAX:
                    self.close_connection = True
                    raise BodyTooLarge()
                self._drain(size)
            else:
                chunks.append(self._read_exact(size))
            self._read_exact(2)
        if too_large:
            raise BodyTooLarge()
        return b"".join(chunks)

    # answers ------------------------------------------------------------
    def setup(self):
        super().setup()
        self._arrival = None
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        # The kernel stamps each packet when it arrives. A request's arrival
        # is read from there rather than from the moment a handler thread got
        # round to it, which under load (the interpreter lock) can be tens of
        # milliseconds later and would make a punctual client look early.
        self._stamped = False
        if isinstance(self.connection, socket.socket) and not hasattr(self.connection, "getpeercert"):
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self._stamped = True
            except OSError:
                pass

    def handle_one_request(self):
        self._arrival = self._kernel_arrival() if self._stamped else None
        super().handle_one_request()

    def _kernel_arrival(self):
        """time.monotonic() of the first byte of the next request, as the
        kernel stamped it; None when it cannot tell (the caller then uses the
        time the request is handled). Waits for that byte as readline would."""
        try:
            data, ancdata, _, _ = self.connection.recvmsg(1, socket.CMSG_SPACE(16), socket.MSG_PEEK)
        except (OSError, ValueError):
            return None
        if not data:
            return None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = struct.unpack("qq", payload[:16])
                # realtime to monotonic: both read back to back, microseconds apart
                return sec + nsec / 1e9 - (time.time() - time.monotonic())
        return None

    def _send(self, resp):
        # Head and body leave in one write: two small writes meet Nagle and the
        # client's delayed ACK and cost ~40 ms a request.
        phrase = HTTPStatus(resp.status).phrase if resp.status in HTTPStatus._value2member_map_ else "Status"
        head = [f"HTTP/1.1 {resp.status} {phrase}", f"Server: {self.version_string()}",
                f"Date: {self.date_time_string()}"]
        head += [f"{name}: {value}" for name, value in resp.headers]
        if resp.body or resp.status not in (204, 304):
            head.append(f"Content-Type: {resp.content_type}")
        head.append(f"Content-Length: {len(resp.body)}")
        if self.close_connection:
            head.append("Connection: close")
        self.log_request(resp.status, len(resp.body))
        self.wfile.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + resp.body)

    def _abort(self):
        """Drop the connection with a TCP RST and no answer at all."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    # dispatch -------------------------------------------------------------
    def _dispatch(self):
        emu = self.server.emulator
        req = Request(self.command, self.path, self.headers, self.client_address[0])
        route, params, allowed = emu.match(req.method, req.path)
        target = route.target if route else emu.target_for_path(req.path)
        if req.path.startswith("/_emulator/"):
            # Control calls are neither logged nor faulted: they are the test's own.
            try:
                req.body = self._read_body(route.body_max() if route else 64 * KiB)
                resp = self._run(route, params, allowed, target, req)
            except BodyTooLarge:
                resp = target.too_large(route.body_max() if route else 64 * KiB)
            except ClientGone:
                self.close_connection = True
                return
            self._send(resp)
            return

        entry = emu.state.log_start(req, self._arrival)
        req.log_entry = entry
        route_name = route.name if route else "unmatched"
        limit = route.body_max() if route else 64 * KiB
        refusal = emu.state.admit(entry)
        if refusal is not None:
            # Refused in front of the platform, as a per-IP limiter would: no
            # fault and no handler sees the request.
            message, wait = refusal
            try:
                self._discard_body(limit)
            except ClientGone:
                self.close_connection = True
                emu.state.log_finish(entry, None, route_name)
                return
            self._answer(entry, target.error(429, "rate_limited", message,
                                             headers={"Retry-After": str(wait)}), route_name)
            return
        fault = emu.faults.pick(req.method, req.path)
        req.fault = fault
        if fault is not None:
            emu.state.annotate(entry, fault=fault.describe())
            if fault.delay_ms and fault.action != "hold_answer":
                time.sleep(fault.delay_ms / 1000.0)
            if fault.action == "reset_before_body":
                self._abort()
                emu.state.log_finish(entry, None, route_name)
                return
        try:
            req.body = self._read_body(limit)
            emu.state.annotate(entry, body_bytes=len(req.body))
        except BodyTooLarge:
            resp = target.too_large(limit)
        except ClientGone:
            self.close_connection = True
            emu.state.log_finish(entry, None, route_name)
            return
        else:
            if fault is not None and fault.action == "status":
                resp = self._fault_response(fault, target)
            else:
                resp = self._run(route, params, allowed, target, req)
        if fault is not None and fault.action == "reset_after_body":
            self._abort()
            emu.state.log_finish(entry, None, route_name)
            return
        if fault is not None and fault.action == "hold_answer":
            # Applied already; only the answer is late (past a client's timeout,
            # or for a client killed meanwhile).
            time.sleep(fault.delay_ms / 1000.0)
            if self._peer_gone():
                emu.state.log_finish(entry, resp.status, route_name)
                emu.state.answer_lost(entry, None)
                self.close_connection = True
                return
        self._answer(entry, resp, route_name)

    def _answer(self, entry, resp, route_name):
        state = self.server.emulator.state
        state.log_finish(entry, resp.status, route_name)
        window = state.open_window(entry["client_ip"], resp)
        try:
            self._send(resp)
        except OSError:
            state.answer_lost(entry, window)
            self.close_connection = True
            return
        state.answer_written(entry, window)

    def _discard_body(self, limit):
        """Get rid of the body of a request that is refused unread."""
        if self._expect_pending:
            # Never invited, so the client does not send it; the connection ends
            # after the answer, as for an oversized body.
            self._expect_pending = False
            self.close_connection = True
            return
        try:
            self._read_body(limit)
        except BodyTooLarge:
            pass

    def _peer_gone(self):
        """True when the client has closed its end (or reset it) while it waited."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            # Peek under any TLS layer: an orderly close shows as end of stream.
            return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _run(self, route, params, allowed, target, req):
        if route is None:
            if allowed:
                resp = target.error(405, "method_not_allowed", f"{req.method} is not allowed here")
                resp.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
                return resp
            return target.not_found(req)
        req.params = params
        try:
            return route.handler(req)
        except HttpError as exc:
            return exc.response
        except Exception:  # a bug here must not kill the connection thread silently
            traceback.print_exc()
            return target.error(500, "internal_error", "emulator error (see its stderr)")

    def _fault_response(self, fault, target):
        if fault.body is not None:
            resp = Response(fault.status, fault.body)
        else:
            phrase = HTTPStatus(fault.status).phrase if fault.status in HTTPStatus._value2member_map_ else "Error"
            resp = target.error(fault.status, "injected_fault", f"{phrase} (injected fault)")
        resp.headers.extend(fault.response_headers())
        return resp


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, emulator, ssl_context=None):
        self.emulator = emulator
        self.ssl_context = ssl_context
        super().__init__(address, Handler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup of the address; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs on the connection's own thread, so a slow or
        # failing client never blocks accept().
        try:
            request.settimeout(30)
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            if not self.emulator.quiet:
                sys.stderr.write(f"TLS handshake with {client_address[0]} failed: {exc}\n")
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        if not self.emulator.quiet:
            super().handle_error(request, client_address)


# --------------------------------------------------------------------------
# command line


def load_fixture(path, explicit):
    if not os.path.exists(path):
        if explicit:
            raise ConfigError(f"embeddings fixture not found: {path}")
        return {"dim": 8, "model": "emulator-embed", "vectors": {}}
    with open(path, encoding="utf-8") as fh:
        fixture = json.load(fh)
    if not isinstance(fixture, dict) or not is_int(fixture.get("dim")) or fixture["dim"] < 1:
        raise ConfigError(f"{path}: expected {{\"dim\": N, \"model\": ..., \"vectors\": {{text: [...]}}}}")
    return fixture


def write_port_file(path, port):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".port-", dir=directory)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Local NICE Cognigy.AI emulator for cogpipe's tests.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--port-file", help="write the chosen port here (atomically)")
    parser.add_argument("--config", help="JSON file merged over the default configuration")
    parser.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--embeddings", help="embeddings fixture (default: fixtures/embeddings.json)")
    parser.add_argument("--seed", type=int, help="seed ids, tokens and fault draws for repeatable runs")
    parser.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    parser.add_argument("--strict", action="store_true",
                        help="take the harsher reading wherever the contract leaves room (see README.md)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")

    try:
        config = default_config()
        if args.strict:
            merge_config(config, {"strict": True})  # before --config, which may override it
        if args.config:
            with open(args.config, encoding="utf-8") as fh:
                merge_config(config, json.load(fh))
        fixture = load_fixture(args.embeddings or DEFAULT_FIXTURE, bool(args.embeddings))
        emulator = Emulator(config, fixture, seed=args.seed, quiet=args.quiet)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"cognigy-emulator: {exc}", file=sys.stderr)
        return 2

    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        context.set_alpn_protocols(["http/1.1"])

    server = EmulatorServer(("127.0.0.1", args.port), emulator, context)
    port = server.server_address[1]

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    # Before the port is announced: whoever reads it may signal at once.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        write_port_file(args.port_file, port)
    scheme = "https" if context else "http"
    print(f"cognigy-emulator listening on {scheme}://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
