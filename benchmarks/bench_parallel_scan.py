"""Parallel from the first byte (issue 17): XML scan, m/z axis and conversion, 1 vs N workers.

Usage::

    nice -n 10 python benchmarks/bench_parallel_scan.py [--size 300 300] [--peaks 100 300]
                                                         [--workers 2] [--repeat 3] [--json OUT]

The input is generated, never committed (``_harness.ensure_processed``: a processed imzML written
with pyimzML's ``ImzMLWriter``, under ``--data-dir``, default ``benchmarks/_data``). In one run,
side by side, each measured as one warm-up call and ``--repeat`` timed calls (median; the input in
the page cache, the cluster started and its workers' imports done: **warm**; the warm-up call of
each row is printed too, the closest to a cold start this run has):

- **scan**: the offset table by the fast scanner, here in one process (``scan_fast``, the serial
  baseline, the code before issue 17's parallel scan) vs its byte ranges on a
  ``LocalCluster(n_workers=N, threads_per_worker=1)`` (``scan_fast(map_ranges=...)``, what
  ``convert_imzml(client=)`` does); the tables are checked equal;
- **axis**: ``build_mz_axis`` here (serial) vs its blocks on the same cluster (the workers open the
  file with the shared offset table); the axes are checked equal to the last bit;
- **convert**: ``convert_imzml`` of the whole file (``cache=False``: the scan is part of it) in
  this process, on a 1-worker cluster and on the N-worker cluster; the stores' ``X`` are checked
  equal; throughput in MB/s of ``.ibd``.

Ratios are serial / parallel medians (above 1: the parallel run is faster). The 1-minute load
average is sampled during each row, and before and after the run a probe measures how many cores
N processes actually get (N × the time of a fixed numpy job alone / the time of N at once): the
development machine has 2 cores shared with other jobs, so 2 workers get 2 cores only while those
jobs are idle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from bench_sections import LoadMonitor  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs=2, default=[300, 300], metavar=("NX", "NY"))
    p.add_argument("--peaks", type=int, nargs=2, default=[100, 300], metavar=("MIN", "MAX"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--convert-repeat", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def _cluster(n: int, cache: Path):
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"SPATIALFUSE_CACHE_DIR": str(cache)},
    )
    return cluster, distributed.Client(cluster)


def _probe_job(_=None) -> float:
    """A fixed CPU-bound numpy job (sorting 4M floats, 3 times); its wall time."""
    rng = np.random.default_rng(0)
    data = rng.random(4_000_000)
    t = time.perf_counter()
    for _ in range(3):
        np.sort(data)
    return time.perf_counter() - t


def cores_available(n: int) -> float:
    """How many cores ``n`` processes get now: ``n × (one job alone) / (n jobs at once)``."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n) as pool:
        list(pool.map(_probe_job, range(n)))  # start the processes
        alone = min(pool.submit(_probe_job).result() for _ in range(2))
        together = time.perf_counter()
        list(pool.map(_probe_job, range(n)))
        together = time.perf_counter() - together
    return n * alone / together


def _row(name, timing_of, repeat) -> dict:
    with LoadMonitor(every=1.0) as load:
        timing = h.time_call(timing_of, repeat)
    return {"name": name, "timing": timing, "load": load.summary()}


def main(argv=None) -> int:
    args = parse_args(argv)
    folder = h.data_dir(args.data_dir)
    os.environ.setdefault("SPATIALFUSE_CACHE_DIR", str(folder / "cache"))
    nx, ny = args.size
    t0 = time.perf_counter()
    path = h.ensure_processed(folder, nx, ny, *args.peaks, n_ions=5000, seed=0)
    generated = time.perf_counter() - t0
    ibd = path.with_suffix(".ibd")
    xml_mb, ibd_mb = path.stat().st_size / 1e6, ibd.stat().st_size / 1e6
    print(f"input {path.name}: .imzML {xml_mb:.0f} MB, .ibd {ibd_mb:.0f} MB ({generated:.0f} s)")

    import mmap

    import spatialfuse as sf
    from spatialfuse.io.imzml import _axis
    from spatialfuse.io.imzml._header import parse_header
    from spatialfuse.io.imzml._scan_fast import scan_fast
    from spatialfuse.io.zarr_msi._convert import _axis_on, _map_on
    from spatialfuse.io.zarr_msi._tiles import share_table

    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="bench_parallel_", dir=folder))
    rows, checks = [], []
    started = time.perf_counter()
    cores_before = cores_available(args.workers)
    with open(path, "rb") as handle:
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    header = parse_header(buf, path)
    reader = sf.io.ImzMLReader(path, cache=False)
    t = time.perf_counter()
    cluster, client = _cluster(args.workers, work / "cache")
    cluster_start = time.perf_counter() - t
    client.run(lambda: __import__("spatialfuse.io.zarr_msi._convert"))  # workers' imports
    try:
        n = args.workers
        # --- scan -----------------------------------------------------------------------
        serial = _row("scan, serial (here)", lambda: scan_fast(buf, header), args.repeat)
        ranged = _row(
            f"scan, {n} workers (byte ranges)",
            lambda: scan_fast(buf, header, map_ranges=_map_on(client), path=path),
            args.repeat,
        )
        a = scan_fast(buf, header).to_arrays()
        b = scan_fast(buf, header, map_ranges=_map_on(client), path=path).to_arrays()
        checks.append(("scan tables equal", all(np.array_equal(a[k], b[k]) for k in a)))
        rows += [serial, ranged]
        # --- axis -------------------------------------------------------------------------
        source = share_table(reader, work / "offsets.npz")
        serial = _row("axis, serial (here)", lambda: _axis.build_mz_axis(reader), args.repeat)
        blocks = _row(
            f"axis, {n} workers (blocks of spectra)",
            lambda: _axis.build_mz_axis(reader, map_blocks=_axis_on(client, source, reader)),
            args.repeat,
        )
        x = _axis.build_mz_axis(reader)
        y = _axis.build_mz_axis(reader, map_blocks=_axis_on(client, source, reader))
        checks.append(
            (
                f"axes equal to the bit ({len(x)} features)",
                all(np.array_equal(getattr(x, f), getattr(y, f)) for f in ("mz", "lo", "hi")),
            )
        )
        n_blocks = len(_axis.axis_grid(reader, 5.0).blocks())
        rows += [serial, blocks]
        # --- convert ----------------------------------------------------------------------
        stores = {}

        def convert(label, **kwargs):
            def run():
                out = work / f"{label}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                stores[label] = sf.io.convert_imzml(
                    path, out, cache=False, pixel_size_um=10.0, **kwargs
                )

            return run

        local = _row("convert, this process", convert("local"), args.convert_repeat)
        wide = _row(f"convert, {n} workers", convert("wide", client=client), args.convert_repeat)
        client.close()
        cluster.close()
        cluster, client = _cluster(1, work / "cache")
        client.run(lambda: __import__("spatialfuse.io.zarr_msi._convert"))
        one = _row("convert, 1 worker", convert("one", client=client), args.convert_repeat)
        import zarr

        same = all(
            np.array_equal(
                zarr.open_group(stores["local"], mode="r")["X"][:],
                zarr.open_group(stores[k], mode="r")["X"][:],
            )
            for k in ("one", "wide")
        )
        checks.append(("stores' X equal (local, 1 worker, N workers)", same))
        rows += [local, one, wide]
    finally:
        client.close()
        cluster.close()
        reader.close()
        shutil.rmtree(work, ignore_errors=True)

    cores_after = cores_available(args.workers)

    def ratio(a, b):
        return a["timing"].median / b["timing"].median

    table = []
    for row in rows:
        t = row["timing"]
        extra = ""
        if row["name"].startswith("convert"):
            extra = f"{ibd_mb / t.median:.1f} MB/s"
        table.append(
            [
                row["name"],
                h.fmt_timing(t),
                h.fmt_seconds(t.warmup),
                extra,
                f"{row['load']['mean']:.1f} (max {row['load']['max']:.1f})",
            ]
        )
    print(
        f"\n{n} workers = LocalCluster(n_workers={n}, threads_per_worker=1), started in "
        f"{cluster_start:.1f} s (not timed); axis in {n_blocks} blocks; "
        f"{os.cpu_count()} CPUs; total {time.perf_counter() - started:.0f} s\n"
    )
    print(h.render_table(["row", "warm: median", "first call", "throughput", "load"], table))
    print(
        f"\ncores {n} processes got (a fixed numpy job: {n} × alone / {n} at once): "
        f"{cores_before:.2f} before the run, {cores_after:.2f} after"
    )
    ratios = {
        f"scan serial / {n} workers": ratio(rows[0], rows[1]),
        f"axis serial / {n} workers": ratio(rows[2], rows[3]),
        f"convert 1 worker / {n} workers": ratio(rows[5], rows[6]),
        f"convert this process / {n} workers": ratio(rows[4], rows[6]),
    }
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    for name, ok in checks:
        print(f"check: {name}: {'PASS' if ok else 'FAIL'}")
    payload = {
        "machine": h.machine_info(),
        "input": {"imzml": str(path), "imzml_mb": xml_mb, "ibd_mb": ibd_mb},
        "workers": n,
        "rows": [{"name": r["name"], **r["timing"].as_dict(), "load": r["load"]} for r in rows],
        "ratios": ratios,
        "cores_available": [cores_before, cores_after],
        "checks": dict(checks),
    }
    h.write_json(Path(args.json or folder / "parallel_scan.json"), payload)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
