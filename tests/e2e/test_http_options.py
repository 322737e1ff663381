#!/usr/bin/env python3
"""A libcurl that refuses an option cogpipe sets (one older than 7.85 has
no CURLOPT_PROTOCOLS_STR, which keeps requests to http and https) fails
the request with kind "config" and a message naming the option: the
request is never sent without it, and the process goes on. The refusal is
made by a small library preloaded in front of libcurl, which answers for
the named option as such a libcurl does and passes every other call on."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import Emulator, last_json_line, run_lua  # noqa: E402

# Every libcurl option value is a long, a pointer or a curl_off_t, each
# passed in one 64-bit register on the LP64 machines this runs on.
REFUSER = r"""
#define _GNU_SOURCE
#include <curl/curl.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#undef curl_easy_setopt
#undef curl_multi_setopt

static int refused(const char *kind, int opt) {
  const char *want = getenv(kind);
  return want && atoi(want) == opt;
}

CURLcode curl_easy_setopt(CURL *e, CURLoption opt, ...) {
  va_list ap;
  va_start(ap, opt);
  intptr_t v = va_arg(ap, intptr_t);
  va_end(ap);
  if (refused("REFUSE_EASY", (int)opt)) return CURLE_UNKNOWN_OPTION;
  CURLcode (*real)(CURL *, CURLoption, ...);
  void *p = dlsym(RTLD_NEXT, "curl_easy_setopt");
  memcpy(&real, &p, sizeof p);
  return real(e, opt, v);
}

CURLMcode curl_multi_setopt(CURLM *m, CURLMoption opt, ...) {
  va_list ap;
  va_start(ap, opt);
  intptr_t v = va_arg(ap, intptr_t);
  va_end(ap);
  if (refused("REFUSE_MULTI", (int)opt)) return CURLM_UNKNOWN_OPTION;
  CURLMcode (*real)(CURLM *, CURLMoption, ...);
  void *p = dlsym(RTLD_NEXT, "curl_multi_setopt");
  memcpy(&real, &p, sizeof p);
  return real(m, opt, v);
}
"""

# option numbers from curl.h (CURLOPTTYPE_STRINGPOINT + 318, CURLOPTTYPE_LONG + 3)
CURLOPT_PROTOCOLS_STR = 10318
CURLMOPT_PIPELINING = 3

SCRIPT = r"""
local cp = require "cogpipe"
local out = {}
for i = 1, 2 do
  local resp, err = cp.http.request{url = arg[1] .. "/new/v2.0/projects", retry = false}
  out[i] = resp and {status = resp.status} or
    {kind = err.kind, message = err.message, attempts = err.attempts, retryable = err.retryable}
end
print(cp.json.encode({results = out}))
"""


@unittest.skipUnless(shutil.which("cc") and sys.maxsize > 2**32, "needs a C compiler on a 64-bit machine")
class RefusedOptions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="cogpipe-options-")
        src = os.path.join(cls.dir, "refuse.c")
        with open(src, "w") as f:
            f.write(REFUSER)
        cls.lib = os.path.join(cls.dir, "librefuse.so")
        cflags = subprocess.run(["pkg-config", "--cflags", "libcurl"], capture_output=True, text=True,
                                check=True).stdout.split()
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", *cflags, "-o", cls.lib, src, "-ldl"],
                       check=True, timeout=120)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def request_twice(self, **refuse):
        env = {"LD_PRELOAD": self.lib, **{k: str(v) for k, v in refuse.items()}}
        with Emulator() as emu:
            r = run_lua(SCRIPT, emu.base, env=env)
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            return last_json_line(r.stdout)["results"], emu.requests()

    def test_all_options_accepted_sends(self):
        # the preloaded library alone changes nothing
        out, seen = self.request_twice()
        for result in out:  # the emulator's 404 for this path, or its answer
            self.assertNotEqual(result.get("kind"), "config", result)
            self.assertEqual(result.get("attempts", 1), 1, result)
        self.assertEqual(len(seen), 2, seen)

    def test_refused_protocols_option_fails_the_request_unsent(self):
        out, seen = self.request_twice(REFUSE_EASY=CURLOPT_PROTOCOLS_STR)
        for err in out:
            self.assertEqual(err["kind"], "config", err)
            self.assertIn("CURLOPT_PROTOCOLS_STR", err["message"])
            self.assertIn("refused", err["message"])
            self.assertEqual(err["attempts"], 0)
            self.assertFalse(err["retryable"])
        self.assertEqual(seen, [], "a request without its protocol limit must not go out")

    def test_refused_client_option_fails_each_request(self):
        out, seen = self.request_twice(REFUSE_MULTI=CURLMOPT_PIPELINING)
        for err in out:
            self.assertEqual(err["kind"], "config", err)
            self.assertIn("CURLMOPT_PIPELINING", err["message"])
            self.assertEqual(err["attempts"], 0)
        self.assertEqual(seen, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
