"""A browser follows a topic of the built-in log with EventSource (headless Chromium from
Debian's packages, installed by `.ci/setup --all`), across a restart of `cdc serve`: it
reconnects by itself with Last-Event-ID and gets every event once, in order."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cdc.config import ServeConfig
from cdc.serve import LogServer
from cdc.sinks.log import open_log
from tests.conftest import wait_until
from tests.servetools import TOKEN, write_log

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

TOPIC = "shop.public.orders"
# docs/log.md's EventSource snippet runs as written (its host swapped for the server's), with a
# console.log that reports what it prints back to the test
PAGE = """<!doctype html>
<html><body><script>
const token = %(token)s;
const printed = [];
console.log = (...args) => {
  printed.push(args);
  // everything so far, each time: the test keeps the longest (reports may overtake each other)
  fetch("/report", {method: "POST", body: JSON.stringify(printed)});
};
</script><script>
%(snippet)s
</script></body></html>
"""


def documented_snippet() -> str:
    doc = (ROOT / "docs" / "log.md").read_text()
    section = doc.split("## Over HTTP (`cdc serve`)", 1)[1]
    found = re.search(r"```javascript\n(.*?)```", section, re.S)
    assert found is not None, "docs/log.md lost its EventSource example"
    return found.group(1)


class _Page:
    """Serves the page, and collects what it reports it received."""

    def __init__(self) -> None:
        self.script = ""  # the page's script: set before a browser opens it
        self.reports: list[list[Any]] = []
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (PAGE % {"token": json.dumps(TOKEN), "snippet": page.script}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                page.reports.append(json.loads(raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.origin + "/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> list[Any]:
        """What the page printed with console.log, in its order."""
        return max(self.reports, key=len, default=[])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    """``open(url)``: a headless Chromium showing ``url`` until the test ends."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run .ci/setup --all (Debian's chromium package)")
    procs: list[subprocess.Popen[bytes]] = []

    def open_page(url: str) -> None:
        procs.append(
            subprocess.Popen(
                [
                    *(binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
                    f"--user-data-dir={tmp_path / 'chromium'}",
                    url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    yield open_page
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_a_browser_follows_a_topic_with_eventsource_across_a_server_restart(
    tmp_path: Path, chromium: Any
) -> None:
    log_dir = tmp_path / "log"
    write_log(log_dir, 20, per_batch=7)  # offsets 0..19; the even ones are orders
    page = _Page()
    # a page of another origin: cdc serve must allow it (CORS), and the token comes in the query
    config = ServeConfig(port=0, allow_origins=[page.origin], keepalive=1)
    server = LogServer(config, {"shop": log_dir}, token=TOKEN)
    config.port = server.port  # restarted on the same address, as a browser expects
    snippet = documented_snippet()
    assert f"?topic={TOPIC}&access_token=" in snippet.replace('"\n  + "', "")
    page.script = snippet.replace("https://cdc.example.com:8081", server.url)
    try:
        chromium(page.url)
        wait_until(lambda: len(page.received()) >= 10, 60, "the browser to get the first 10 orders")
        # cdc serve restarts; the browser reconnects by itself, after the last id it got
        server.close()
        write_log(log_dir, 10, first=20)  # offsets 20..29 while it is down
        server = LogServer(config, {"shop": log_dir}, token=TOKEN)
        wait_until(lambda: len(page.received()) >= 15, 60, "the browser to get the 5 new orders")
    finally:
        server.close()
        page.close()
    expected = [[ev.offset, "c", ev.value["after"]] for ev in open_log(log_dir).events(topic=TOPIC)]
    got = page.received()
    assert [p[0] for p in got] == list(range(0, 30, 2))  # once each, in order
    assert got == expected
