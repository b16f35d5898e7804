"""``spatialfuse run`` from the imzML and from its zarr store (issue 17), time and peak RSS.

Usage::

    python benchmarks/bench_run_store.py [--pixels 100000] [--peaks 500] [--data-dir DIR]
                                         [--max-block-bytes N] [--wide N] [--kinds ...]
                                         [--json OUT]

The input is ``bench_scale.py``'s synthetic trio of about ``--pixels`` MSI pixels, its MSI a
processed imzML of ``--peaks`` peaks per spectrum (generated once under ``--data-dir``). The MSI
is converted once with ``convert_imzml`` (default chunks and shards; ``--wide N``: N m/z windows
instead of the default axis, for the store and the imzML run alike); then the same run config
(MSI → H&E → Visium, area mapping, WNN clustering, every export but the report) runs in a fresh
process with the MSI as ``kind: imzml`` and as ``kind: msi_zarr``, each into its own empty output
folder, without the step cache, going on past a registration that fails its checks (said so).
Reported: wall time, the steps' times (``summary.json``), the process's peak RSS (``VmHWM``), the
composed transform's difference between the two runs and the adjusted Rand index between their
joint clusters. The load average is printed: the development
machine is shared, compare within one run.
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
from bench_zarr import status_kib  # noqa: E402

CONFIG = """\
output: {output}
modalities:
  msi: {msi}
  he_msi:
    kind: histology
    path: {he}
  visium:
    kind: visium
    path: {visium}
registrations:
  - moving: msi
    fixed: he_msi
  - moving: he_msi
    fixed: visium
mapping:
  method: area
clustering:
  method: wnn
outputs:
  report: false
limits:
  max_block_bytes: {block}
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixels", type=int, default=100_000)
    p.add_argument("--peaks", type=int, default=500)
    p.add_argument("--max-block-bytes", type=int, default=256 << 20)
    p.add_argument(
        "--wide",
        type=int,
        default=0,
        help="N m/z windows (geometric over 100-1000, ± 50 ppm) instead of the default axis",
    )
    p.add_argument(
        "--kinds", nargs="+", default=["imzml", "msi_zarr"], choices=["imzml", "msi_zarr"]
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(config: str) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    from spatialfuse.workflow import run

    t = time.perf_counter()
    try:
        result = run(config, reuse=False, show_progress=False, accept_failed=True)
    except Exception as exc:  # e.g. too few spots after a flagged registration
        return {
            "seconds": time.perf_counter() - t,
            "peak_rss_mib": status_kib("VmHWM") / 1024,
            "error": f"{type(exc).__name__}: {exc}"[:300],
        }
    return {
        "seconds": time.perf_counter() - t,
        "peak_rss_mib": status_kib("VmHWM") / 1024,
        "timings_s": result.timings,
        "transform": result.msi_to_visium.as_affine().matrix.tolist(),
        "joint": [str(v) for v in result.mdata.obs["joint"]],
        "n_pixels": int(result.modalities["msi"].n_obs),
        "n_features": int(result.modalities["msi"].n_vars),
        "registrations_ok": [bool(r.ok) for r in result.registrations],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    import bench_scale
    import numpy as np

    folder = h.data_dir(args.data_dir)
    info = bench_scale.ensure_input(folder, args.pixels, args.peaks)
    trio = Path(info["he"]).parent
    work = folder / f"run_store_{args.pixels}_p{args.peaks}_w{args.wide}"
    mz = np.geomspace(100.0, 1000.0, args.wide).round(6).tolist() if args.wide else None
    features = {"mz": mz, "ppm": 50.0} if mz else {}
    work.mkdir(exist_ok=True)
    store = work / "msi.zarr"
    if not store.exists():
        import spatialfuse as sf

        t = time.perf_counter()
        sf.io.convert_imzml(info["imzml"], store, pixel_size_um=info["pixel_um"], **features)
        print(f"convert_imzml: {time.perf_counter() - t:.1f} s")
    extra = f", pixel_size_um: {info['pixel_um']}" + (f", mz: {mz}, ppm: 50.0" if mz else "")
    inputs = {
        "imzml": f"{{kind: imzml, path: {info['imzml']}{extra}}}",
        "msi_zarr": f"{{kind: msi_zarr, path: {store}}}",
    }
    runs = {}
    for kind, msi in inputs.items():
        if kind not in args.kinds:
            continue
        output = work / f"results_{kind}"
        shutil.rmtree(output, ignore_errors=True)
        config = work / f"config_{kind}.yaml"
        config.write_text(
            CONFIG.format(
                output=output,
                msi=msi,
                he=trio / "he.ome.tif",
                visium=trio / "visium",
                block=args.max_block_bytes,
            )
        )
        load = os.getloadavg()[0]
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(config)], capture_output=True, text=True
        )
        if done.returncode:
            print(done.stderr[-3000:])
            return 1
        runs[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        runs[kind]["load"] = [load, os.getloadavg()[0]]
        r = runs[kind]
        if "error" in r:
            print(
                f"{kind}: {r['error']} after {r['seconds']:.1f} s, "
                f"peak {r['peak_rss_mib']:,.0f} MiB"
            )
            continue
        r["msi_to_visium_error_um"] = truth_error_um(trio, r["transform"])
        steps = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items())
        print(
            f"{kind}: {r['n_pixels']:,} px × {r['n_features']} features, {r['seconds']:.1f} s, "
            f"peak RSS {r['peak_rss_mib']:,.0f} MiB, load {load:.1f}; registrations ok "
            f"{r['registrations_ok']}; MSI → Visium {r['msi_to_visium_error_um']:.2f} µm from the "
            f"truth (median over MSI pixels); steps (s): {steps}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    if len(runs) < 2 or any("error" in r for r in runs.values()):
        return 0
    from sklearn.metrics import adjusted_rand_score

    a, b = runs["imzml"], runs["msi_zarr"]
    diff = float(np.abs(np.asarray(a["transform"]) - np.asarray(b["transform"])).max())
    ari = adjusted_rand_score(a["joint"], b["joint"])
    print(f"largest difference of the composed transforms: {diff:.2e}; ARI of the clusters: {ari}")
    return 0


def truth_error_um(trio: Path, matrix) -> float:
    """Median distance (µm) between where ``matrix`` and the trio's truth put the MSI pixels."""
    import numpy as np

    truth = json.loads((trio / "truth.json").read_text())
    sizes = truth["pixel_sizes_um"]["msi"]
    known = np.asarray(truth["transforms"]["msi_to_visium"]["matrix"], dtype=float)
    ys, xs = np.mgrid[0:1:41j, 0:1:41j]
    # Pixel centres over the MSI's extent, taken from the landmarks' bounding box.
    marks = np.asarray(truth["landmarks_um"]["msi"], dtype=float)
    lo, hi = marks.min(axis=0) - sizes, marks.max(axis=0) + sizes
    points = np.c_[lo[0] + xs.ravel() * (hi[0] - lo[0]), lo[1] + ys.ravel() * (hi[1] - lo[1])]
    ours = np.asarray(matrix, dtype=float)
    moved = [(m[:2, :2] @ points.T).T + m[:2, 2] for m in (ours, known)]
    return float(np.median(np.linalg.norm(moved[0] - moved[1], axis=1)))


if __name__ == "__main__":
    raise SystemExit(main())
