"""Debian's Chromium, headless, driven through the Chrome DevTools Protocol (CDP) over its
websocket (`websocket-client` from PyPI): open a page, read its DOM, click, read the clipboard,
take screenshots. No driver to download, no Selenium: the protocol's few commands we need.

The browser resolves the names it is given (`hosts`) to test addresses (`--host-resolver-rules`)
and accepts the test certificate (`--ignore-certificate-errors`), so the page is fetched with
the Host and SNI a user's browser sends.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

from tests.polling import eventually

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 30.0  # seconds for one protocol answer: a safety net


@dataclass
class Session:
    """One websocket to one target (the browser, or a page), with numbered commands."""

    socket: websocket.WebSocket
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def send(self, method: str, **params: object) -> dict[str, Any]:
        """The command's result; raises AssertionError with the browser's error."""
        number = next(self._ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                assert "error" not in message, (method, message["error"])
                return dict(message.get("result", {}))
            # Anything else is an event: the page is asked for its state instead (`open`).

    def evaluate(self, expression: str, gesture: bool = False) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True, userGesture=gesture)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

@dataclass
class Browser:
    process: subprocess.Popen[bytes]
    port: int
    browser: Session
    page: Session

    def grant_clipboard(self, origin: str) -> None:
        self.browser.send("Browser.grantPermissions", origin=origin,
                          permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])

    def open(self, url: str) -> None:
        """Navigate and wait until the page at `url` has loaded. A load event alone may be an
        earlier page's (the first blank one, or the last `open`'s) that came late: a clean-clone
        CI run read an empty page after it; so the document itself is asked."""
        self.page.send("Page.enable")
        self.page.send("Page.navigate", url=url)
        loaded = "document.readyState === 'complete' ? location.href : ''"
        eventually(lambda: self.page.evaluate(loaded) == url, 60, f"{url} to load",
                   interval=0.2)

    def screenshot(self, path: Path, width: int, height: int, mobile: bool) -> None:
        """The whole page at this window width, as a PNG."""
        self.page.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                       deviceScaleFactor=1, mobile=mobile)
        metrics = self.page.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": width,
                                    "height": max(height, metrics["height"]), "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


def _json(port: int, what: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/{what}", timeout=5) as answer:
        return json.loads(answer.read())


@contextlib.contextmanager
def chromium(profile: Path, hosts: Mapping[str, str]) -> Iterator[Browser]:
    """A headless Chromium with an empty profile in `profile`, resolving `hosts` (name ->
    address); ended (and its profile removed) on leaving."""
    assert shutil.which(CHROMIUM), "install Debian's chromium (scripts/prepare-machine)"
    profile.mkdir(parents=True, exist_ok=True)
    rules = ", ".join(f"MAP {name} {address}" for name, address in hosts.items())
    process = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
         f"--host-resolver-rules={rules}", "--ignore-certificate-errors",
         "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"

        def devtools_port() -> int | None:  # its first line, once Chromium has written it
            lines = port_file.read_text().split() if port_file.exists() else []
            return int(lines[0]) if lines else None

        port = eventually(devtools_port, TIMEOUT, "Chromium to open its DevTools port",
                          interval=0.2)
        pages = eventually(lambda: [t for t in _json(port, "list") if t["type"] == "page"],
                           TIMEOUT, lambda: "Chromium's first page", interval=0.2,
                           ignoring=(OSError,))
        browser = Session(websocket.create_connection(
            _json(port, "version")["webSocketDebuggerUrl"], timeout=TIMEOUT))
        page = Session(websocket.create_connection(pages[0]["webSocketDebuggerUrl"],
                                                   timeout=TIMEOUT))
        try:
            yield Browser(process, port, browser, page)
        finally:
            page.socket.close()
            browser.socket.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
