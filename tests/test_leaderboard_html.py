"""The static HTML leaderboard in headless Chromium (Debian's chromium + chromium-driver): it loads from
file:// with no console errors and no network request, shows every result, and sorts by column.

The browser is driven through chromedriver's W3C WebDriver HTTP API directly (no selenium needed).
Skipped, with the reason, where Chromium or chromedriver is not installed (CI installs them: .ci/run).
"""
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks import leaderboard, reported, results
from test_benchmarks import record, some_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium is not installed (apt-get install -y chromium chromium-driver)")


class Browser:
    """The few WebDriver commands the test needs."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([DRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                if self._call("GET", "/status")["value"].get("ready"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                self.proc.kill()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.2)
        caps = {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": {"binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox",
                                                                    "--disable-gpu", "--disable-dev-shm-usage"]}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["value"]["sessionId"]

    def _call(self, method: str, path: str, body=None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def cmd(self, method: str, path: str, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)["value"]

    def open(self, path: Path) -> None:
        self.cmd("POST", "/url", {"url": path.resolve().as_uri()})

    def js(self, script: str):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": []})

    def console(self) -> list[dict]:
        return self.cmd("POST", "/se/log", {"type": "browser"})

    def close(self) -> None:
        try:
            self.cmd("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def errors(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e.get("level") == "SEVERE"]


def test_the_harness_sees_console_errors(browser, tmp_path):
    """A page that logs an error must be caught, or the real check below could never fail."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><body><script>console.error('boom'); undefinedFn();</script></body></html>")
    browser.open(bad)
    found = errors(browser.console())
    assert any("boom" in e["message"] for e in found) and any("undefinedFn" in e["message"] for e in found)


def test_leaderboard_page_shows_every_result_without_errors_or_network(browser, tmp_path):
    recs = some_records() + [results.validate(record(entry__suite="other", entry__id="x-1", entry__label="<b>x</b>"))]
    page = leaderboard.render(recs, tmp_path, {"toy": "a toy suite"}, "python -m benchmarks.run suite=toy")["html"]
    browser.console()                                   # drain earlier messages
    browser.open(page)
    assert browser.js("return document.body.getAttribute('data-ready')") == "true"   # the script ran to its end
    assert errors(browser.console()) == []
    shown = browser.js("return Array.from(document.querySelectorAll('tr[data-entry]')).map(r => r.dataset.entry)")
    assert sorted(shown) == sorted(f"{r.entry.suite}/{r.entry.id}" for r in recs)
    assert browser.js("return document.querySelectorAll('tr[data-reported]').length") == len(reported.table2())
    # reported rows live only in their own table
    assert browser.js("return document.querySelectorAll('#reported tr[data-entry]').length") == 0
    assert browser.js("return performance.getEntriesByType('resource').length") == 0   # no network at all
    assert "<b>x</b>" in browser.js("return document.body.innerText")                 # escaped, not markup


def test_columns_sort_on_click(browser, tmp_path):
    page = leaderboard.render(some_records(), tmp_path, {}, "regen")["html"]
    browser.open(page)
    fd_values = """
      const t = document.querySelector('#suite-toy table');
      const col = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent.startsWith('FD'));
      t.tHead.rows[0].cells[col].click();
      const asc = Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[col].dataset.v));
      t.tHead.rows[0].cells[col].click();
      const desc = Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[col].dataset.v));
      return [asc, desc];"""
    asc, desc = browser.js(fd_values)
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and len(asc) == 4
    assert errors(browser.console()) == []
