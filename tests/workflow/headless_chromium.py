"""Drive a system Chromium headless over the DevTools protocol, with the standard library only.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol commands from file
descriptor 3 and writes replies and events to descriptor 4, each message a JSON object ended by a
NUL byte. No port, no websocket, no third-party client, nothing downloaded.

:meth:`Chromium.load` opens a page and records what a QC check needs: console messages, uncaught
exceptions, browser log entries, every request the page made, and the state of every ``<img>``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The page must not reach anything; should it try, the name lookup fails at once instead of waiting.
_FLAGS = (
    "--headless",
    "--remote-debugging-pipe",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
_TRAMPOLINE = (
    "import os, sys; r, w = map(int, sys.argv[1:3]); os.dup2(r, 3); os.dup2(w, 4); os.close(r); "
    "os.close(w); os.execv(sys.argv[3], sys.argv[3:])"
)
_IMAGES_JS = """
(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map((img) => img.decode().catch(() => null)));
  return images.map((img) => ({
    complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
    alt: img.alt, src: img.currentSrc.slice(0, 40),
  }));
})()
"""


def find_chromium() -> str | None:
    """Path of a Chromium-family browser: ``$SPATIALFUSE_CHROMIUM``, else the first one on PATH."""
    env = os.environ.get("SPATIALFUSE_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium(timeout: float = 900) -> tuple[str | None, str]:
    """Install Debian's ``chromium`` with apt if we are root: ``(path, "")`` or ``(None, why)``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "chromium is not installed and we are not root to apt-get install it"
    if shutil.which("apt-get") is None:
        return None, "chromium is not installed and apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    why = ""
    for command in (install, ["apt-get", "update", "-q"], install):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"{' '.join(command)} failed: {error}"
        why = f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-400:]}"
        if command is install and done.returncode == 0 and find_chromium():
            return find_chromium(), ""
    return None, why


@dataclass
class PageLoad:
    """What happened while a page loaded."""

    url: str
    console: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, browser log errors, failed loads."""
        out = [f"console.{level}: {text}" for level, text in self.console if level in _BAD_CONSOLE]
        out += [f"exception: {text}" for text in self.exceptions]
        out += [
            f"log {source} {level}: {text}" for source, level, text in self.log if level in _BAD
        ]
        out += [f"request failed: {text}" for text in self.failed_requests]
        return out

    @property
    def foreign_requests(self) -> list[str]:
        """Requests for anything other than the page itself (``data:`` URIs are not requests)."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


_BAD = ("error", "warning")
_BAD_CONSOLE = ("error", "warning", "assert")


class Chromium:
    """A headless Chromium process and a minimal DevTools-protocol client over its pipe.

    Use as a context manager; :meth:`load` opens a page in a fresh tab.
    """

    # 30 s was too short on the 2-core machine under a load of 3.5 (a page with 10 figures).
    def __init__(self, executable: str, *, timeout: float = 120.0):
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="sf-chromium-")
        # Chromium's ends of the two pipes, moved above fd 9 so that wiring them to 3 and 4 in the
        # child cannot overwrite one with the other.
        command_in_r, self._command_out = os.pipe()
        self._reply_in, reply_out_w = os.pipe()
        child_ends = [
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (command_in_r, reply_out_w)
        ]
        for fd in (command_in_r, reply_out_w):
            os.close(fd)

        flags = [*_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.insert(0, "--no-sandbox")  # the sandbox refuses to run as root
        self._stderr = tempfile.TemporaryFile()
        # A tiny Python trampoline puts the pipes on fds 3 and 4 and execs Chromium (a preexec_fn
        # would do the same but can deadlock when the test process runs threads).
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", _TRAMPOLINE, *map(str, child_ends), executable, *flags],
            pass_fds=child_ends,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        for fd in child_ends:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        try:
            self.version = self.call("Browser.getVersion")["product"]
        except BaseException:
            self.close()
            raise

    # -- protocol ---------------------------------------------------------------------------------

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-1500:]

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._reply_in], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(
                    f"no reply from Chromium in time; its stderr:\n{self._stderr_tail()}"
                )
            chunk = os.read(self._reply_in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe; its stderr:\n{self._stderr_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._command_out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        """Wait for an event (or take it from those already received)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._receive(deadline))

    # -- pages ------------------------------------------------------------------------------------

    def load(self, url: str, *, width: int = 1280, height: int = 900) -> tuple[PageLoad, str]:
        """Open ``url`` in a new tab, wait for its load event and for every image to decode.

        Returns the :class:`PageLoad` record and the tab's session id (for :meth:`screenshot`).
        """
        start = time.perf_counter()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self._events = [e for e in self._events if e.get("sessionId") != session]
        navigated = self.call("Page.navigate", {"url": url}, session=session)
        if navigated.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {navigated['errorText']}")
        self.wait_for("Page.loadEventFired", session)
        images = self.call(
            "Runtime.evaluate",
            {"expression": _IMAGES_JS, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        record = PageLoad(url=url, images=images["result"]["value"])
        self.call("Runtime.evaluate", {"expression": "0"}, session=session)  # flush events
        for event in [e for e in self._events if e.get("sessionId") == session]:
            _record(record, event)
        record.seconds = time.perf_counter() - start
        return record, session

    def evaluate(self, expression: str, session: str):
        """Value of a JavaScript expression in the tab (DevTools is not bound by the page's CSP)."""
        reply = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} raised: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def screenshot(self, session: str, path: str | os.PathLike, *, full_page: bool = True) -> Path:
        """Save a PNG of the tab; with ``full_page`` the viewport is stretched to the whole page."""
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": int(size["width"]),
                    "height": int(size["height"]),
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
                session=session,
            )
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": full_page},
            session=session,
        )
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Ask Chromium to quit, kill it if it will not, and remove its temporary profile."""
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.timeout = 5.0
                self.call("Browser.close")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self._command_out, self._reply_in):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stderr.close()
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _record(record: PageLoad, event: dict) -> None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        record.console.append((params["type"], text))
    elif method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        record.exceptions.append(details.get("exception", {}).get("description", details["text"]))
    elif method == "Log.entryAdded":
        entry = params["entry"]
        record.log.append((entry["source"], entry["level"], entry["text"]))
    elif method == "Network.requestWillBeSent":
        record.requests.append(params["request"]["url"])
    elif method == "Network.loadingFailed":
        record.failed_requests.append(f"{params.get('errorText')} ({params.get('blockedReason')})")
