"""Memory and time of recalibrating a continuous profile imzML straight from its path.

Writes synthetic continuous profile files (tests/pp/spectra_data.py: 8 Gaussian peaks,
84,731 points per spectrum, each pixel drifted by −10…+10 ppm) of the given numbers of pixels,
then runs ``sf.pp.recalibrate(path)`` and ``sf.pp.pick_peaks`` on the lazy table it returns,
with the numpy allocations traced (tracemalloc). The numbers are in docs/spectra.md.

Usage::

    python benchmarks/bench_spectra_stream.py --pixels 400 1200
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, nargs="+", default=[400, 1200])
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "tests" / "pp"))
    from spectra_data import profile_table
    from test_recalibrate_stream import _write

    import spatialfuse as sf

    for n in args.pixels:
        table = profile_table(n_pixels=n, drift_ppm=np.linspace(-10, 10, n), seed=1)
        folder = Path(tempfile.mkdtemp())
        try:
            path = _write(folder / "profile.imzML", table, 20)
            dense, points = table.X.nbytes, table.n_vars
            del table
            tracemalloc.start()
            t = time.perf_counter()
            streamed = sf.pp.recalibrate(path, n_references=6)
            _, recalibrate_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            peaks = sf.pp.pick_peaks(streamed)
            _, pick_peak = tracemalloc.get_traced_memory()
            t = time.perf_counter() - t
            tracemalloc.stop()
        finally:
            shutil.rmtree(folder)
        after = streamed.uns["recalibration"]["median_abs_ppm_after"]
        print(
            f"{n} px × {points} points: dense {dense / 2**20:.0f} MiB; peak allocations "
            f"recalibrate {recalibrate_peak / 2**20:.0f} MiB, pick_peaks {pick_peak / 2**20:.0f} "
            f"MiB; {t:.1f} s; {peaks.n_vars} peaks, {after:.2f} ppm after",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
