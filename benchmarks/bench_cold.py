"""What a user meets on the first open: a fresh Python process per call, ours vs pyimzML and m2aia.

Usage::

    python benchmarks/bench_cold.py [--rounds N] [--quick] [--json OUT] [--data-dir DIR]
                                    [--baseline-src DIR]

Each round starts one fresh process per reader, in turn (ours, pyimzML, m2aia where installed),
on the processed file of ``bench_imzml.py`` (300 × 300 pixels, 500–1,500 peaks per spectrum). A
process imports the reader, opens the file (ours with ``cache=False``: the XML is scanned, as on
a file never opened before) and reads one ion image. Times are taken inside the child from its
first line (``import`` included) and, from the parent, the whole process (interpreter start
included); the file is in the page cache for every reader (it cannot be evicted without
privileges). ``bench_imzml.py`` times repeated calls in one process ("warm"); this script times
the calls a user makes once ("cold").

``--baseline-src DIR`` adds a reader "spatialfuse-base": ours imported from another source tree
(``src/`` of a ``git worktree`` of an older commit, put first on ``PYTHONPATH``), in the same
rounds, so that a change is measured against its baseline under the same load.

Targets (issue 17): the cold open ≥ 15× pyimzML's, and the first ion image after the open no
slower than m2aia's. The medians over the rounds and their ratios are printed, with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import bench_imzml as bi

#: The child: imports the reader, opens, reads one ion image; prints its times as JSON.
CHILD = r"""
import json, sys, time, warnings
start = time.perf_counter()
which, path, mz, tol = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
warnings.simplefilter("ignore")
if which == "spatialfuse":
    from spatialfuse.io.imzml import ImzMLReader
    imported = time.perf_counter()
    reader = ImzMLReader(path, cache=False)
    opened = time.perf_counter()
    image = reader.ion_image(mz, tol=tol, fill=0.0)
elif which == "pyimzML":
    from pyimzml.ImzMLParser import ImzMLParser, getionimage
    imported = time.perf_counter()
    reader = ImzMLParser(path)
    opened = time.perf_counter()
    image = getionimage(reader, mz, tol)
else:
    import m2aia
    imported = time.perf_counter()
    reader = m2aia.ImzMLReader(path, pooling=m2aia.m2PoolingSum)
    opened = time.perf_counter()
    image = reader.GetArray(mz, tol)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "open": opened - imported,
                  "image": done - opened, "total": done - start, "sum": float(image.sum())}))
"""

TARGET_OPEN = 15.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per reader")
    parser.add_argument("--quick", action="store_true", help="tiny input (smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--data-dir", default=None, help="generated inputs (bench_imzml's)")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also time spatialfuse imported from this src/ folder (an older commit's worktree)",
    )
    return parser.parse_args(argv)


def readers() -> list[str]:
    import importlib.util

    found = ["spatialfuse", "pyimzML"]
    if importlib.util.find_spec("m2aia") is not None:
        found.append("m2aia")
    return found


def run_child(which: str, path: Path, mz: float, tol: float, src: Path | None = None) -> dict:
    env = None
    if which == "spatialfuse-base":
        env = {**os.environ, "PYTHONPATH": str(src)}
        which = "spatialfuse"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(path), repr(mz), repr(tol)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{which} failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    return {**json.loads(lines[-1]), "process": wall}


def summarise(runs: dict[str, list[dict]]) -> dict:
    return {
        which: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for which, rows in runs.items()
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    size = bi.SIZES["quick" if args.quick else "full"]["processed"]
    path = h.ensure_processed(h.data_dir(args.data_dir), **size, seed=bi.SEED)
    mz = h.benchmark_ion(size["n_ions"], bi.SEED)
    tol = bi.TOL_PROCESSED
    names = readers()
    if args.baseline_src is not None:
        names.insert(0, "spatialfuse-base")
    if args.quick:
        print("--quick: a tiny file; the times and ratios are MEANINGLESS", flush=True)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for k in range(args.rounds):
        for name in names:
            runs[name].append(run_child(name, path, mz, tol, args.baseline_src))
        print(
            f"round {k + 1}/{args.rounds}: "
            + ", ".join(f"{n} {runs[n][-1]['process']:.2f} s" for n in names),
            flush=True,
        )
    load_after = os.getloadavg()[0]
    med = summarise(runs)
    sums = {name: med[name]["sum"] for name in names}
    agree = all(
        abs(s - sums["pyimzML"]) <= 1e-4 * max(1.0, abs(sums["pyimzML"])) for s in sums.values()
    )
    ours = med["spatialfuse"]
    print(
        f"\n{path.name}, ion m/z {mz:.4f} ± {tol}; medians of {args.rounds} fresh processes each; "
        f"load {load_before:.1f} → {load_after:.1f}"
    )
    print(
        f"{'reader':<16} {'import':>8} {'open':>8} {'import+open':>12} {'1st image':>10} "
        f"{'process':>9}"
    )
    for name in names:
        m = med[name]
        print(
            f"{name:<16} {m['import']:8.3f} {m['open']:8.3f} {m['import'] + m['open']:12.3f} "
            f"{m['image']:10.3f} {m['process']:9.3f}"
        )
    ratios = {}
    base = med["pyimzML"]
    ratios["open_vs_pyimzml"] = base["open"] / ours["open"]
    ratios["import_open_vs_pyimzml"] = (base["import"] + base["open"]) / (
        ours["import"] + ours["open"]
    )
    ratios["process_vs_pyimzml"] = base["process"] / ours["process"]
    if "m2aia" in med:
        ratios["first_image_vs_m2aia"] = med["m2aia"]["image"] / ours["image"]
        ratios["process_vs_m2aia"] = med["m2aia"]["process"] / ours["process"]
    if "spatialfuse-base" in med:
        old = med["spatialfuse-base"]
        ratios["base_import_open_vs_pyimzml"] = (base["import"] + base["open"]) / (
            old["import"] + old["open"]
        )
        ratios["base_open_vs_pyimzml"] = base["open"] / old["open"]
    for key, value in ratios.items():
        print(f"   {key:<26} {value:6.2f}x")
    met_open = ratios["import_open_vs_pyimzml"] >= TARGET_OPEN
    print(
        f"cold open (import + open) vs pyimzML: {ratios['import_open_vs_pyimzml']:.1f}x, "
        f"target ≥ {TARGET_OPEN:g}x {'met' if met_open else 'missed'}"
    )
    if "first_image_vs_m2aia" in ratios:
        met = ratios["first_image_vs_m2aia"] >= 1.0
        print(
            f"first ion image after the open vs m2aia: {ratios['first_image_vs_m2aia']:.2f}x "
            f"(≥ 1 = no slower), target {'met' if met else 'missed'}"
        )
    print(f"ion image sums agree: {agree} ({', '.join(f'{n} {s:.6g}' for n, s in sums.items())})")
    if args.json:
        h.write_json(
            args.json,
            {
                "quick": args.quick,
                "agree": agree,
                "file": str(path),
                "mz": mz,
                "tol": tol,
                "runs": runs,
                "medians": med,
                "ratios": ratios,
                "load": [load_before, load_after],
                "machine": h.machine_info(),
            },
        )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
