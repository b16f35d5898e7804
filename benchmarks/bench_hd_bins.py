"""Benchmark MSI → Visium HD bins: the bin-square path (sf.tl.map_to_bins) vs the per-bin disc path.

Usage::

    python benchmarks/bench_hd_bins.py [--quick] [--bins 1000000 11000000] [--old-bins 1000000]
        [--pixels 1000000] [--features 8] [--json OUT]

Inputs are built in memory, never written: a 1000 × 1000 MSI raster of 6.5 µm pixels (float32,
``--features`` ions), carried into the Visium frame by a 30° rotation with a 3 % stretch, and a
square grid of 2 µm bins (rotated 0.4° against the image, as HD bin grids are) centred on it.
Each case runs in a fresh process (``multiprocessing`` spawn) so its peak RSS is its own.

- new: ``sf.tl.map_to_spots(msi, bins)``, which routes HD bins to ``sf.tl.map_to_bins`` (exact
  bin ∩ pixel areas, chunks under ``max_block_bytes``);
- old: the path ``map_to_spots`` took for HD bins before (each bin a disc, 1,024 quadrature
  samples; here with the disc of the bin's size rather than the 55 µm default, the same cost);
- aggregate: ``sf.tl.aggregate_bins`` 2 µm → 8 µm of the mapped MSI and of sparse counts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue as _queue
import sys
import time
from pathlib import Path

import numpy as np

BIN_UM = 2.0
PIXEL_UM = 6.5
SEED = 0


def make_msi(n_pixels: int, n_features: int):
    import anndata as ad
    import pandas as pd

    side = round(n_pixels**0.5)
    gx, gy = np.meshgrid(np.arange(1, side + 1), np.arange(1, side + 1))
    gx, gy = gx.ravel(), gy.ravel()
    rng = np.random.default_rng(SEED)
    X = rng.random((gx.size, n_features), dtype=np.float32)
    obs = pd.DataFrame({"imzml_x": gx, "imzml_y": gy}, index=pd.RangeIndex(gx.size).astype(str))
    mz = np.linspace(100, 900, n_features)
    var = pd.DataFrame({"mz": mz}, index=[f"mz-{m:.4f}" for m in mz])
    msi = ad.AnnData(X=X, obs=obs, var=var)
    msi.uns["spatialfuse"] = {"modality": "msi", "pixel_size_um": [PIXEL_UM, PIXEL_UM]}
    return msi, side * PIXEL_UM


def transform_for(field_um: float):
    from spatialfuse.reg import AffineTransform

    c = field_um / 2
    return AffineTransform.from_params(
        rotation_deg=30.0, scale=1.03, center=(c, c), translation=(500.0, 400.0)
    )


def make_bins(n_bins: int, centre_um, n_genes: int = 0):
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    side = round(n_bins**0.5)
    col, row = np.meshgrid(np.arange(side), np.arange(side))
    col, row = col.ravel(), row.ravel()
    t = np.deg2rad(0.4)
    lin = BIN_UM * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    xy = np.stack([col, row], axis=1) @ lin.T
    xy += np.asarray(centre_um) - xy.mean(axis=0)
    n = col.size
    if n_genes:
        rng = np.random.default_rng(SEED)
        per = rng.poisson(2.0, n)
        indptr = np.concatenate([[0], np.cumsum(per)])
        X = sparse.csr_matrix(
            (np.ones(indptr[-1], np.float32), rng.integers(0, n_genes, indptr[-1]), indptr),
            shape=(n, n_genes),
        )
        X.sum_duplicates()
    else:
        X = sparse.csr_matrix((n, 0), dtype=np.float32)
    names = pd.RangeIndex(n).astype(str)
    bins = ad.AnnData(X=X, obs=pd.DataFrame({"array_row": row, "array_col": col}, index=names))
    bins.obsm["spatial_um"] = xy
    bins.obsm["spatial"] = xy / 0.25 - 0.5
    bins.uns["spatial"] = {"lib": {"images": {}, "scalefactors": {"bin_size_um": BIN_UM}}}
    bins.uns["spatialfuse"] = {
        "um_per_px": 0.25,
        "positions_format": "visium_hd_parquet",
        "grid_pitch_um": BIN_UM,
    }
    return bins


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def run_case(kind: str, n_pixels: int, n_bins: int, n_features: int, block: int | None, out):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import warnings

    import spatialfuse as sf
    from spatialfuse._limits import limits

    warnings.simplefilter("ignore")
    msi, field = make_msi(n_pixels, n_features)
    transform = transform_for(field)
    centre = transform.apply(np.array([[field / 2, field / 2]]))[0]
    bins = make_bins(n_bins, centre, n_genes=50 if kind == "aggregate" else 0)
    load0 = os.getloadavg()[0]
    before = _rss_mib()
    _reset_peak()
    cpu0, t0 = time.process_time(), time.perf_counter()
    with limits(max_block_bytes=block):
        if kind == "new":
            result = sf.tl.map_to_spots(msi, bins, transform=transform)
        elif kind == "old":
            # the bins' centres given as plain spots: each bin a disc, the path HD bins took
            import anndata as ad

            as_spots = ad.AnnData(obs=bins.obs, obsm={"spatial_um": bins.obsm["spatial_um"]})
            result = sf.tl.map_to_spots(msi, as_spots, transform=transform, spot_diameter_um=BIN_UM)
        else:
            mapped = sf.tl.map_to_spots(msi, bins, transform=transform)
            t_map = time.perf_counter() - t0
            t1 = time.perf_counter()
            coarse_msi = sf.tl.aggregate_bins(mapped, 4 * BIN_UM)
            t_msi = time.perf_counter() - t1
            t2 = time.perf_counter()
            coarse_rna = sf.tl.aggregate_bins(bins, 4 * BIN_UM)
            t_rna = time.perf_counter() - t2
            result = coarse_msi
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    row = {
        "kind": kind,
        "n_pixels": int(msi.n_obs),
        "n_bins": int(bins.n_obs),
        "n_features": n_features,
        "max_block_bytes": block,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_us_per_bin": cpu / bins.n_obs * 1e6,
        "rss_before_mib": before,
        "peak_rss_mib": _peak_mib(),
        "peak_above_inputs_mib": _peak_mib() - before,
        "result_mib": np.asarray(result.X).nbytes / 2**20 if kind != "aggregate" else None,
        "load_before": load0,
        "load_after": os.getloadavg()[0],
        "bins_with_msi": int(np.asarray(result.obs["has_msi"]).sum()),
    }
    if kind == "aggregate":
        row.update(
            map_s=t_map,
            aggregate_msi_s=t_msi,
            aggregate_rna_s=t_rna,
            n_coarse=int(coarse_rna.n_obs),
        )
    out.put(row)


def spawn(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_case, args=(*args, queue))
    proc.start()
    # A case that dies (an import error, the OOM killer) must end the run, not hang it.
    while True:
        try:
            row = queue.get(timeout=1.0)
            break
        except _queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"case {args} died with exit code {proc.exitcode}") from None
    proc.join()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs; ratios meaningless")
    parser.add_argument("--pixels", type=int, default=1_000_000)
    parser.add_argument("--bins", type=int, nargs="*", default=[1_000_000, 11_000_000])
    parser.add_argument("--old-bins", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--block-mib", type=int, nargs="*", default=[256, 64])
    parser.add_argument("--aggregate-bins", type=int, default=11_000_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.pixels, args.bins, args.old_bins = 10_000, [10_000], [10_000]
        args.block_mib, args.aggregate_bins = [256], 10_000
    rows = []
    for n in args.old_bins:
        rows.append(spawn("old", args.pixels, n, args.features, None))
        print(json.dumps(rows[-1]), flush=True)
    for n in args.bins:
        for mib in args.block_mib:
            rows.append(spawn("new", args.pixels, n, args.features, mib << 20))
            print(json.dumps(rows[-1]), flush=True)
    if args.aggregate_bins:
        rows.append(spawn("aggregate", args.pixels, args.aggregate_bins, args.features, None))
        print(json.dumps(rows[-1]), flush=True)
    print()
    old = {r["n_bins"]: r for r in rows if r["kind"] == "old"}
    header = (
        f"{'path':<10} {'bins':>11} {'block':>8} {'wall s':>8} {'cpu s':>8} {'µs/bin':>8} "
        f"{'vs old':>8} {'peak RSS':>9} {'above in':>9} {'load':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        per = r["cpu_us_per_bin"]
        ref = old.get(r["n_bins"]) or (next(iter(old.values())) if old else None)
        ratio = f"{ref['cpu_us_per_bin'] / per:.0f}x" if ref and r["kind"] == "new" else "-"
        block = "-" if r["max_block_bytes"] is None else f"{r['max_block_bytes'] >> 20} MiB"
        print(
            f"{r['kind']:<10} {r['n_bins']:>11,} {block:>8} {r['wall_s']:>8.1f} "
            f"{r['cpu_s']:>8.1f} {per:>8.2f} {ratio:>8} {r['peak_rss_mib']:>7.0f} M "
            f"{r['peak_above_inputs_mib']:>7.0f} M {r['load_before']:>4.1f}-{r['load_after']:<4.1f}"
        )
        if r["kind"] == "aggregate":
            print(
                f"{'':<10} map {r['map_s']:.1f} s, aggregate 2 → 8 µm: MSI "
                f"{r['aggregate_msi_s']:.1f} s, counts {r['aggregate_rna_s']:.1f} s "
                f"({r['n_coarse']:,} coarse bins)"
            )
    print(
        "\nvs old: CPU µs per bin of the old per-bin disc path (at the same bin count, else the "
        "one measured) / the new path's. peak RSS: VmHWM of the case's own process; above in: "
        "peak minus RSS once the inputs were built. load: 1-min load average before-after."
    )
    if args.quick:
        print("\n--quick: tiny inputs; these ratios are MEANINGLESS (fixed overheads dominate).")
    if args.json:
        payload = {"quick": args.quick, "argv": sys.argv[1:], "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
