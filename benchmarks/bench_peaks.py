"""Peak picking: speed per spectrum beside pyOpenMS' PeakPickerHiRes, and memory of a streamed file.

Usage::

    python benchmarks/bench_peaks.py [--quick] [--pixels N] [--points M] [--workdir DIR]

1. One synthetic profile spectrum (Gaussian peaks at resolving power 15,000 on a 10-ppm axis, plus
   noise): ``centroid_peaks`` (spatialfuse) and, where pyOpenMS is installed, ``PeakPickerHiRes``,
   timed in this process on the same arrays (median of repeats), with the centres each finds.
2. A continuous profile imzML of ``N`` pixels × ``M`` points (float32) written with pyimzML;
   ``sf.pp.pick_peaks(path)`` runs in a child process: the peak of its allocations (tracemalloc,
   numpy arrays included) and its peak resident memory (``ru_maxrss``, which also counts the pages
   of the memory-mapped ``.ibd`` that were read) are reported beside the size of the dense table
   it never builds.

Timings are from this machine and this run only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

PEAKS = np.linspace(310.0, 690.0, 40) + 0.0123


def spectrum(n_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    step = np.log(700.0 / 300.0) / (n_points - 1)
    mz = 300.0 * np.exp(np.arange(n_points) * step)
    y = rng.normal(10.0, 1.0, n_points)
    heights = rng.uniform(50, 500, PEAKS.size)
    for c, h in zip(PEAKS, heights, strict=True):
        s = c / 15_000 / 2.3548
        near = np.abs(mz - c) < 8 * s
        y[near] += h * np.exp(-0.5 * ((mz[near] - c) / s) ** 2)
    return mz, y.astype(np.float32)


def _median_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def per_spectrum(n_points: int, repeat: int) -> dict:
    from spatialfuse.pp._peaks import centroid_peaks

    mz, y = spectrum(n_points)
    result = {"points": n_points, "planted": int(PEAKS.size)}
    ours = centroid_peaks(mz, y, snr=10)
    err = np.abs(ours.mz[np.abs(ours.mz[:, None] - PEAKS).argmin(0)] - PEAKS) / PEAKS * 1e6
    result["spatialfuse_s"] = _median_time(lambda: centroid_peaks(mz, y, snr=10), repeat)
    result["spatialfuse_peaks"] = len(ours)
    result["spatialfuse_max_ppm"] = float(err.max())
    try:
        import pyopenms as oms
    except ImportError:
        result["pyopenms"] = "not installed"
        return result

    def openms():
        s = oms.MSSpectrum()
        s.set_peaks((mz.astype(np.float64), y.astype(np.float64)))
        out = oms.MSSpectrum()
        picker = oms.PeakPickerHiRes()
        params = picker.getParameters()
        params.setValue("signal_to_noise", 10.0)
        picker.setParameters(params)
        picker.pick(s, out)
        return out

    picked = openms().get_peaks()[0]
    err = np.abs(picked[np.abs(picked[:, None] - PEAKS).argmin(0)] - PEAKS) / PEAKS * 1e6
    result["pyopenms_version"] = oms.__version__
    result["pyopenms_s"] = _median_time(openms, repeat)
    result["pyopenms_peaks"] = int(picked.size)
    result["pyopenms_max_ppm"] = float(err.max())
    return result


def write_file(path: Path, nx: int, ny: int, n_points: int) -> None:
    from pyimzml.ImzMLWriter import ImzMLWriter

    mz, _ = spectrum(n_points)
    rng = np.random.default_rng(1)
    with ImzMLWriter(str(path), mode="continuous", mz_dtype=np.float64) as writer:
        for yy in range(1, ny + 1):
            for xx in range(1, nx + 1):
                y = spectrum(n_points, seed=0)[1] * rng.uniform(0.5, 1.5)
                writer.addSpectrum(mz, y, (xx, yy, 1))


def streamed(path: Path) -> dict:
    code = textwrap.dedent(
        f"""
        import json, resource, time, tracemalloc, warnings
        warnings.simplefilter("ignore")
        import anndata, pandas, scipy.signal, scipy.sparse
        import spatialfuse as sf
        from spatialfuse.io.imzml import read_imzml
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        t = time.perf_counter()
        peaks = sf.pp.pick_peaks({str(path)!r}, snr=10, pixel_size_um=10)
        t = time.perf_counter() - t
        allocated = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({{"seconds": t, "rss_after_imports_mib": before,
                          "peak_rss_mib": rss, "peak_allocated_mib": allocated,
                          "n_peaks": peaks.n_vars}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--pixels", type=int, default=None, help="pixels of the streamed file")
    parser.add_argument("--points", type=int, default=None, help="m/z points per spectrum")
    parser.add_argument("--workdir", default=None, help="where to write the file (a temp dir)")
    args = parser.parse_args()
    points = args.points or (20_000 if args.quick else 100_000)
    pixels = args.pixels or (400 if args.quick else 4_000)
    # One spectrum at 100,000 points: ~8 points per FWHM, which PeakPickerHiRes needs.
    print(json.dumps({"per_spectrum": per_spectrum(100_000, 5 if args.quick else 20)}, indent=1))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "profile.imzML"
        side = int(np.ceil(np.sqrt(pixels)))
        t = time.perf_counter()
        write_file(path, side, -(-pixels // side), points)
        n = side * -(-pixels // side)
        report = {
            "pixels": n,
            "points": points,
            "write_s": time.perf_counter() - t,
            "dense_table_mib": n * points * 4 / 2**20,
            **streamed(path),
        }
    print(json.dumps({"streamed": report}, indent=1))


if __name__ == "__main__":
    main()
