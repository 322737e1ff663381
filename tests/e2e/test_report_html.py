#!/usr/bin/env python3
"""The HTML report of a run (run --report) and of a plan (plan --html),
opened in headless Chromium (Debian's chromium) over the DevTools protocol
on a pipe: the page loads with no console message, no script error and no
request other than the file itself (a blocked one counts too), the DOM
holds the per-intent counts of the run's summary, an utterance holding a
<script> (and an <img> that would fetch) is shown as text and runs nothing,
and a screenshot is taken."""
import base64
import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_emulator import BIN, SRC, Emulator  # noqa: E402
import test_conformance as conformance  # noqa: E402  (its tenant files; its tests are not run here)

PIPELINE = os.path.join(SRC, "pipelines", "cognigy_v2_sentences.lua")
SAMPLE = os.path.join(SRC, "pipelines", "data", "sample_intents.jsonl")
SCRIPT = "<script>window.pwned = 1; document.title = 'pwned'</script> hello there"
IMG = '<img src="http://127.0.0.1:9/x.png" onerror="window.pwned = 2"> good morning'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over --remote-debugging-pipe (fds 3 and 4,
    NUL-terminated JSON messages)."""

    def __init__(self, workdir):
        self.profile = tempfile.mkdtemp(prefix="profile-", dir=workdir)
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                "--window-size=1280,1600", f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
                "about:blank"]
        self.log = open(os.path.join(workdir, "chromium.log"), "w")
        # the pipe ends become fds 3 and 4 of the browser
        self.proc = subprocess.Popen(
            ["sh", "-c", "exec " + " ".join(shlex.quote(a) for a in args) + f" 3<&{to_chrome_r} 4>&{from_chrome_w}"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=self.log, stderr=subprocess.STDOUT)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def receive(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from chromium")
            ready, _, _ = select.select([self.from_chrome], [], [], left)
            if ready:
                data = os.read(self.from_chrome, 1 << 20)
                if not data:
                    raise EOFError("chromium closed its pipe")
                self.buf += data
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=60):
        want = self.send(method, params, session)
        while True:
            msg = self.receive(timeout)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def drain(self, quiet=0.5):
        try:
            while True:
                self.events.append(self.receive(quiet))
        except TimeoutError:
            pass

    def open(self, url):
        """A new page on url, with the domains that report requests and
        messages enabled before it loads; returns its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
            self.call(domain, session=session)
        self.events = []
        self.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session
                      for e in self.events):
            self.events.append(self.receive(max(0.1, deadline - time.monotonic())))
        self.drain()
        return session

    def evaluate(self, session, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # already gone: killed below
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)
        self.log.close()


ROWS = """JSON.stringify(Array.prototype.map.call(document.querySelectorAll('tr.intent'), function (tr) {
  var row = {intent: tr.getAttribute('data-intent')};
  tr.querySelectorAll('td[data-k]').forEach(function (td) { row[td.getAttribute('data-k')] = Number(td.textContent); });
  return row;
}))"""


class HtmlReport(unittest.TestCase):
    def setUp(self):
        self.assertTrue(CHROMIUM, "chromium not found: sh scripts/deps.sh test installs it")
        self.work = tempfile.mkdtemp(prefix="cogpipe-html-")
        self.emu = Emulator("--strict", "--seed", "5")
        self.browser = None

    def tearDown(self):
        if self.browser:
            self.browser.close()
        self.emu.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def cogpipe(self, *args):
        env = dict(os.environ, COGPIPE_EMULATOR_URL=self.emu.base)
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600, env=env)
        try:
            return r, json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"no summary (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")

    def problems(self, url):
        """Console messages, script errors, and requests other than the page."""
        out = []
        for e in self.browser.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Network.requestWillBeSent" and params["request"]["url"] != url:
                out.append(("request", params["request"]["url"]))
            elif method == "Runtime.consoleAPICalled":
                out.append(("console", params["type"], [a.get("value") for a in params["args"]]))
            elif method == "Runtime.exceptionThrown":
                out.append(("exception", params["exceptionDetails"].get("text")))
            elif method == "Log.entryAdded":
                out.append(("log", params["entry"]["level"], params["entry"]["text"]))
        return out

    def test_run_and_plan_reports_in_chromium(self):
        data = os.path.join(self.work, "data.jsonl")
        with open(SAMPLE, encoding="utf-8") as f:
            sample = f.read()
        with open(data, "w", encoding="utf-8") as f:
            f.write(sample)
            # each twice: the second copy is a rejected duplicate, shown in the table
            for text in (SCRIPT, IMG, SCRIPT, IMG):
                f.write(json.dumps({"intent": "greeting", "text": text}) + "\n")
        tenant = os.path.join(self.work, "t1.lua")
        with open(tenant, "w") as f:
            f.write(conformance.tenant_lua("t1"))
        state = os.path.join(self.work, "state")
        report = os.path.join(self.work, "run.html")
        audit = os.path.join(self.work, "audit.jsonl")
        r, summary = self.cogpipe("run", PIPELINE, "--tenant", tenant, "--state-dir", state, "--json",
                                  "--no-progress", "--audit", audit, "--report", report, "--", data)
        self.assertEqual(r.returncode, 0, r.stderr)
        plan = os.path.join(self.work, "plan.html")
        r, plan_summary = self.cogpipe("plan", PIPELINE, "--tenant", tenant, "--state-dir", state, "--json",
                                       "--no-progress", "--html", plan, "--", data)
        self.assertEqual(r.returncode, 0, r.stderr)

        self.browser = Browser(self.work)
        url = "file://" + report
        page = self.browser.open(url)
        self.assertEqual(self.problems(url), [])
        tenant_summary = summary["tenants"][0]
        rows = json.loads(self.browser.evaluate(page, ROWS))
        want = [{"intent": x["intent"], "existing": x["existing"], "add": x["add"], "added": x["added"],
                 "present": x["present"], "rejected": x["rejected"], "over_cap": x["over_cap"],
                 "pruned": x["pruned"]} for x in tenant_summary["intents"]]
        self.assertEqual(rows, want)
        self.assertEqual(sum(x["added"] for x in rows), tenant_summary["uploaded"])
        text = self.browser.evaluate(page, "document.body.innerText")
        self.assertIn(SCRIPT, text)
        self.assertIn(IMG, text)
        self.assertIsNone(self.browser.evaluate(page, "window.pwned === undefined ? null : window.pwned"))
        self.assertEqual(self.browser.evaluate(page, "document.title"), f"cogpipe run {summary['run_id']}")
        self.assertEqual(self.browser.evaluate(page, "document.getElementById('audit-head').textContent"),
                         summary["audit"]["hash"])
        totals = json.loads(self.browser.evaluate(page, """JSON.stringify(Object.fromEntries(Array.prototype.map.call(
            document.querySelectorAll('[data-total]'), function (d) {
              return [d.getAttribute('data-total'), Number(d.querySelector('b').textContent)]; })))"""))
        self.assertEqual((totals["uploaded"], totals["rejected"]), (tenant_summary["uploaded"],
                                                                    tenant_summary["rejected"]))
        # the table sorts, in the page's own script
        self.browser.evaluate(page, "document.querySelector('table.rejections th:nth-child(5)').click()")
        self.assertEqual(self.problems(url), [])
        shot = self.browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False},
                                 session=page)
        png = base64.b64decode(shot["data"])
        path = os.path.join(self.work, "report.png")
        with open(path, "wb") as f:
            f.write(png)
        self.assertTrue(png.startswith(b"\x89PNG\r\n\x1a\n"))
        self.assertGreater(os.path.getsize(path), 1000)

        with open(report, encoding="utf-8") as f:
            html = f.read()
        self.assertFalse("<script>window.pwned" in html or '<img src="http' in html, "not escaped")

        url = "file://" + plan
        page = self.browser.open(url)
        self.assertEqual(self.problems(url), [])
        rows = json.loads(self.browser.evaluate(page, ROWS))
        self.assertEqual(rows, [{"intent": x["intent"], "existing": x["existing"], "add": x["add"],
                                 "present": x["present"], "rejected": x["rejected"], "over_cap": x["over_cap"],
                                 "prune": x["prune"]} for x in plan_summary["tenants"][0]["intents"]])
        self.assertIn(SCRIPT, self.browser.evaluate(page, "document.body.innerText"))
        self.assertIsNone(self.browser.evaluate(page, "window.pwned === undefined ? null : window.pwned"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
