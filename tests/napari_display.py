"""A display napari can draw on, for the tests that open a real napari window.

``napari_display()`` returns the display's name, starting an ``Xvfb`` where there is none (it
dies with the test process), or skips the calling test with the reason: not Linux without a
display, no ``Xvfb``, or napari cannot draw there (no OpenGL). Qt's ``offscreen`` platform is not
enough: napari's vispy canvas needs OpenGL, which it lacks. Call it from a session-scoped autouse
fixture, before pytest-qt's QApplication, which aborts the process where there is no display.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys

import pytest

_PROBE = """
import numpy as np, napari
viewer = napari.Viewer(show=True)
viewer.add_image(np.random.rand(16, 16))
assert viewer.screenshot(canvas_only=True).size
viewer.close()
"""


def _start_xvfb() -> str | None:
    """Start Xvfb on a free display (it dies with this process); its display name, or None."""
    import ctypes
    import socket
    import time

    def die_with_parent():  # prctl(PR_SET_PDEATHSIG, SIGTERM): no Xvfb left behind
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)

    for _ in range(3):
        read, write = os.pipe()
        server = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        os.close(write)
        ready, _, _ = select.select([read], [], [], 20)
        number = os.read(read, 16).decode().strip() if ready else ""
        os.close(read)
        # A server still shutting down on the same display can make the new one quit at once:
        # wait until it answers, and try another where it does not.
        deadline = time.monotonic() + 10
        while number and server.poll() is None and time.monotonic() < deadline:
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(f"/tmp/.X11-unix/X{number}")
                except OSError:
                    time.sleep(0.2)
                    continue
            time.sleep(0.5)
            if server.poll() is None:
                return f":{number}"
        server.kill()
        time.sleep(1.0)  # another Xvfb starting at the same time may have taken the display
    return None


def napari_display() -> str | None:
    """The display napari draws on (``$DISPLAY``, set here when an Xvfb is started), or a skip."""
    if not sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        pytest.skip("the napari window tests run on Linux with a display or Xvfb")
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        os.environ.pop("QT_QPA_PLATFORM")  # offscreen has no OpenGL for vispy
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        if shutil.which("Xvfb") is None:
            pytest.skip(
                "no display and no Xvfb to start one (apt-get install xvfb); Qt's offscreen "
                "platform has no OpenGL for napari's canvas"
            )
        display = _start_xvfb()
        if display is None:
            pytest.skip("Xvfb did not start")
        os.environ["DISPLAY"] = display
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"napari cannot draw on this display: {last}")
    return os.environ.get("DISPLAY")
