"""zarr v3 sharding of a converted store (issue 17): files, conversion and read speed, before/after.

Usage::

    python benchmarks/bench_shards.py [--pixels 100000] [--peaks 500] [--wide 2000]
                                      [--chunks default 4096x32] [--repeat 5] [--data-dir DIR]
                                      [--json OUT]

The input is ``bench_scale.py``'s processed imzML of about ``--pixels`` pixels (generated once
under ``--data-dir``, default ``benchmarks/_data``), read through ``--wide`` m/z windows
(geometric over 100-1000, ± 50 ppm; 0: the default axis). For each chunk shape, the store is
converted twice, one file per chunk (``shards=False``: the layout before sharding) and sharded
(the default), each in a fresh process (time, CPU, peak RSS, files, bytes); then, in another fresh
process per store, reads are timed cold (the store's files evicted from the page cache with
``posix_fadvise(DONTNEED)`` before each call) and warm (the call repeated; medians of
``--repeat``): opening it
(``read_msi_zarr``), one ion image (``ion_image_from_zarr``), one spectrum (``X[i]``) and a full
pass (``X.sum(axis=1)``). The load average is printed with every row: the development machine
is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from bench_zarr import evict, status_kib  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixels", type=int, default=100_000)
    p.add_argument("--peaks", type=int, default=500)
    p.add_argument("--wide", type=int, default=2000)
    p.add_argument("--chunks", nargs="+", default=["default", "4096x32"])
    p.add_argument("--repeat", type=int, default=5, help="reads: the median of this many")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _features(wide: int) -> dict:
    import numpy as np

    return {"mz": np.geomspace(100.0, 1000.0, wide), "ppm": 50.0} if wide else {}


def _files(store: Path) -> tuple[int, int]:
    files = [p for p in (store / "X").rglob("*") if p.is_file() and p.name != "zarr.json"]
    return len(files), sum(p.stat().st_size for p in files)


def child_convert(info: dict, store: Path, chunks, shards: bool, wide: int) -> dict:
    import spatialfuse as sf

    shutil.rmtree(store, ignore_errors=True)
    out = {"load": os.getloadavg()[0]}
    t, cpu = time.perf_counter(), time.process_time()
    sf.io.convert_imzml(
        info["imzml"],
        store,
        pixel_size_um=info["pixel_um"],
        chunks=chunks,
        shards=shards,
        **_features(wide),
    )
    out.update(seconds=time.perf_counter() - t, cpu_seconds=time.process_time() - cpu)
    out["peak_rss_mib"] = status_kib("VmHWM") / 1024
    out["x_files"], out["x_bytes"] = _files(store)
    out["all_files"] = sum(1 for p in store.rglob("*") if p.is_file())
    return out


def child_read(store: Path, repeat: int) -> dict:
    import numpy as np

    import spatialfuse as sf

    out = {"load": os.getloadavg()[0]}

    def timed(name, fn):
        for state in ("cold", "warm"):
            times = []
            for _ in range(repeat):
                if state == "cold":
                    evict([store])
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            out[f"{name}_{state}_s"] = float(np.median(times))

    opened = {}
    sf.io.read_msi_zarr(store)  # imports (anndata, zarr, dask) out of the timings
    timed("open", lambda: opened.update(adata=sf.io.read_msi_zarr(store)))
    adata = opened["adata"]
    mz = float(adata.var["mz"].iloc[adata.n_vars // 2])
    row = adata.n_obs // 2
    timed("ion_image", lambda: sf.io.ion_image_from_zarr(store, mz, ppm=50))
    timed("spectrum", lambda: np.asarray(adata.X[row].compute()))
    timed("full_pass", lambda: adata.X.sum(axis=1).compute())
    out["chunks"] = list(adata.X.chunksize)
    return out


def _run_child(kind: str, info_path: Path, store: Path, spec: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(info_path), str(store), spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        import warnings

        warnings.simplefilter("ignore")
        kind, info_path, store, spec = args.child
        info = json.loads(Path(info_path).read_text())
        if kind == "read":
            out = child_read(Path(store), int(spec))
        else:
            chunks_text, shards, wide = spec.split(":")
            chunks = None if chunks_text == "default" else tuple(map(int, chunks_text.split("x")))
            out = child_convert(info, Path(store), chunks, shards == "1", int(wide))
        print(json.dumps(out))
        return 0

    import bench_scale

    folder = h.data_dir(args.data_dir)
    info = bench_scale.ensure_input(folder, args.pixels, args.peaks)
    info_path = next(folder.glob(f"scale_{args.pixels}_p{args.peaks}_s1.json"))
    work = folder / "shards"
    work.mkdir(exist_ok=True)
    rows = []
    print(f"input {info['imzml']} ({Path(info['imzml']).with_suffix('.ibd').stat().st_size:,} B)")
    for chunks in args.chunks:
        for shards in (False, True):
            store = work / f"w{args.wide}_{chunks}_{'sharded' if shards else 'plain'}.zarr"
            spec = f"{chunks}:{int(shards)}:{args.wide}"
            row = {"chunks": chunks, "shards": shards}
            row.update(_run_child("convert", info_path, store, spec))
            read = _run_child("read", info_path, store, str(args.repeat))
            row.update({f"read_{k}": v for k, v in read.items()})
            rows.append(row)
            print(json.dumps(row))
            shutil.rmtree(store, ignore_errors=True)
    print()
    print(
        "| chunks | layout | X files | X MiB | convert s (CPU) | peak RSS MiB | open cold/warm ms "
        "| ion image cold/warm ms | spectrum cold/warm ms | full pass cold/warm s | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = {k: 1000 * v for k, v in r.items() if k.startswith("read_") and k.endswith("_s")}
        print(
            f"| {r['read_chunks'][0]:,} × {r['read_chunks'][1]} | "
            f"{'sharded' if r['shards'] else 'one file per chunk'} | {r['x_files']:,} | "
            f"{r['x_bytes'] / 2**20:,.0f} | {r['seconds']:.1f} ({r['cpu_seconds']:.1f}) | "
            f"{r['peak_rss_mib']:,.0f} | {ms['read_open_cold_s']:.0f}/{ms['read_open_warm_s']:.0f}"
            f" | {ms['read_ion_image_cold_s']:.0f}/{ms['read_ion_image_warm_s']:.0f} | "
            f"{ms['read_spectrum_cold_s']:.0f}/{ms['read_spectrum_warm_s']:.0f} | "
            f"{r['read_full_pass_cold_s']:.1f}/{r['read_full_pass_warm_s']:.1f} | "
            f"{r['load']:.1f}–{r['read_load']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
