"""Headless Chromium driven over the DevTools protocol on a pipe — no extra Python package.

Chromium's ``--remote-debugging-pipe`` reads DevTools commands on file descriptor 3 and
writes replies and events on descriptor 4, each message one JSON text ended by a NUL byte.
That is all a test needs to load a page, evaluate script in it, move the real mouse
(``Input.dispatchMouseEvent``: the same input path a person's mouse takes, so ``:hover``
styles and ``mouseover`` listeners fire — it is also what Playwright's ``hover`` sends) and
take screenshots. Debian's ``chromium`` package provides the browser (``/usr/bin/chromium``);
nothing is downloaded.

Command line, for the screenshots kept in docs/::

    python tests/browser.py shot REPORT.html OUT.png [--width 1280] [--height 900] [--full]
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    """Chromium is missing, died, timed out or answered a command with an error."""


def chromium_path() -> str | None:
    """The Chromium binary, or None when the ``chromium`` package is not installed."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def _high_fd(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    """One headless Chromium with one page (tab); use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30.0) -> None:
        exe = chromium_path()
        if exe is None:
            raise BrowserError("Chromium is not installed (Debian package `chromium`)")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="emulator-mem-chromium-")
        # pipe ends above 4, so wiring one to fd 3 or 4 never clobbers the other
        to_child_r, self._to_child = (_high_fd(fd) for fd in os.pipe())
        self._from_child, from_child_w = (_high_fd(fd) for fd in os.pipe())

        def wire_fds() -> None:  # runs in the child: the pipe ends become fds 3 and 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self._proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire_fds,  # close_fds runs after preexec_fn
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.page("Page.enable")
            self.page("Runtime.enable")
            self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    # -- protocol --------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited (status {self._proc.poll()})")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply (events that arrive meanwhile are kept)."""
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self._session, **params)

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The first page event named ``method`` not seen yet (consumed)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, message in enumerate(self.events):
                if message.get("method") == method:
                    del self.events[i]
                    return message
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)

    # -- what a test does ------------------------------------------------------------------
    def open(self, path: str | Path) -> None:
        """Load a file and wait until it has loaded (the ``load`` event)."""
        self.events = [m for m in self.events if m.get("method") != "Page.loadEventFired"]
        self.page("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        reply = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise BrowserError(f"script error: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def center_of(self, selector: str) -> tuple[float, float]:
        """Scroll the first element matching ``selector`` into view; its centre in the viewport."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise BrowserError(f"no element matches {selector}")
        return float(box[0]), float(box[1])

    def hover(self, selector: str) -> tuple[float, float]:
        """Move the mouse onto the element's centre, as a person would."""
        x, y = self.center_of(selector)
        self.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        return x, y

    def click(self, selector: str) -> None:
        x, y = self.hover(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def element_at(self, x: float, y: float) -> Any:
        """What the page reports under a point (hit testing, as the mouse sees it)."""
        return self.evaluate(
            f"(() => {{ const e = document.elementFromPoint({x}, {y}); return e && "
            "{tag: e.tagName, name: e.getAttribute('data-name'), cls: e.getAttribute('class')}; })()")

    def screenshot(self, path: str | Path, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.page("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"],
                              "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.page("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                try:
                    self._send("Browser.close", {}, None)
                    self._proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    self._proc.kill()
                    self._proc.wait(5)
        finally:
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    shot = sub.add_parser("shot", help="screenshot an HTML file")
    shot.add_argument("html")
    shot.add_argument("png")
    shot.add_argument("--width", type=int, default=1280)
    shot.add_argument("--height", type=int, default=900)
    shot.add_argument("--full", action="store_true", help="the whole page, not just the viewport")
    shot.add_argument("--hover", help="a CSS selector to hover before the screenshot")
    args = parser.parse_args(argv)
    with Browser(args.width, args.height) as browser:
        browser.open(args.html)
        if args.hover:
            browser.hover(args.hover)
        browser.screenshot(args.png, full_page=args.full)
    print(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
