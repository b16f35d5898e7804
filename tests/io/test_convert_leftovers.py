"""Partial stores of killed conversions are removed by the next one; nothing else ever is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from imzml_factory import grid_coords, write_simple

from spatialfuse.io.zarr_msi import convert_imzml, read_msi_zarr

#: Convert, but stop (and wait to be killed) once the partial store exists.
_STALL = """
import sys, time
from spatialfuse.io.zarr_msi import _convert
original = _convert._run_local
def stall(*args, **kwargs):
    print("stalled", flush=True)
    time.sleep(3600)
_convert._run_local = stall
_convert.convert_imzml(sys.argv[1], sys.argv[2], show_progress=False)
"""


def _stalled_conversion(imzml, out):
    proc = subprocess.Popen(
        [sys.executable, "-c", _STALL, str(imzml), str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "stalled"
    return proc


def _partials(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def test_killed_conversion_leftover_is_removed_by_the_next(tmp_path):
    truth = write_simple(tmp_path / "in", "msi", coords=grid_coords(6, 5))
    out = tmp_path / "out" / "msi.zarr"
    killed = _stalled_conversion(truth.imzml, out)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (left,) = _partials(out.parent)

    # Look-alikes that are not provably a killed conversion's: all must survive.
    keep = out.parent
    (keep / ".msi.zarr.partial-0000000a").mkdir()  # no marker
    (keep / ".msi.zarr.partial-0000000b").mkdir()
    (keep / ".msi.zarr.partial-0000000b" / ".spatialfuse-convert-partial").write_text("{}")
    (keep / ".msi.zarr.partial-0000000c").write_text("a file")
    os.symlink(keep / left, keep / ".msi.zarr.partial-0000000d")  # a link to a real leftover
    (keep / "mine.partial-0000000e").mkdir()  # not hidden

    live = _stalled_conversion(truth.imzml, tmp_path / "out" / "other.zarr")
    try:
        (live_partial,) = [p for p in _partials(out.parent) if p.startswith(".other")]
        convert_imzml(truth.imzml, out, show_progress=False)
        assert read_msi_zarr(out).n_obs == 30
        remaining = _partials(out.parent)
        assert left not in remaining  # the killed conversion's leftover is gone
        assert live_partial in remaining  # a running conversion's is kept
        assert {
            ".msi.zarr.partial-0000000a",
            ".msi.zarr.partial-0000000b",
            ".msi.zarr.partial-0000000c",
            ".msi.zarr.partial-0000000d",
            "mine.partial-0000000e",
        } <= set(remaining)
        assert not any((out / n).exists() for n in (".spatialfuse-convert-partial",))
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    time.sleep(0.1)
    convert_imzml(truth.imzml, tmp_path / "out" / "third.zarr", show_progress=False)
    assert live_partial not in _partials(out.parent)  # abandoned now: removed
    assert ".msi.zarr.partial-0000000b" in _partials(out.parent)  # a marker of other content
