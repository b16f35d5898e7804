"""Many sections through ``spatialfuse run`` on a LocalCluster vs one at a time (issue 17).

Usage::

    python benchmarks/bench_sections.py [--n 50] [--workers N] [--data-dir DIR] [--out DIR]
                                        [--json OUT]
    python benchmarks/bench_sections.py --batch [--shift-seeds 3] [--data-dir DIR] [--json OUT]

``--n`` synthetic sections (``sf.datasets.synthetic_trio`` at the test suite's small size:
1.2 × 1.0 mm of tissue, 50 µm MSI pixels, 4 µm H&E, 40 ions and 40 genes; one tissue, each
section's MSI acquired at its own rotation, generated once under ``--data-dir``) go through one
config with ``samples:`` (MSI → H&E → Visium, area mapping, joint clustering, correlation, the
h5mu/h5ad exports; no report or SpatialData store) twice, without the step cache:

* **together**: ``spatialfuse.workflow.run_samples`` on a LocalCluster of ``--workers`` processes
  (default: the CPU cores), the combined table and its clustering across sections included;
* **alone**: each sample's own config through ``run_pipeline``, one after the other, in this
  process (imports already warm: the fairest case for one at a time).

Checked: every sample's transforms (largest difference at the tissue's corners), joint clusters
(identical labels) and mapping numbers are the same both ways. Reported: wall times, their
ratio, the cluster's start, the combined step, and the load average before and during the runs
(the development machine is shared: compare within one run).

``--batch`` measures the combined table's batch correction instead (``combined.batch_correction``:
none, combat, harmony where harmonypy is installed), on three synthetic sections of one tissue
design (one seed: it draws the ions' m/z and the regions' profiles) with their own outline, spots,
MSI pixels and rotation, each mapped with its true MSI → Visium transform (no registration), in
five cases: no shift; section ``s1``'s MSI shifted as a whole (each ion scaled by a lognormal
factor, σ 1, and the mean intensity added); its counts shifted (each gene scaled, σ 1); and both
of those with ``s1`` lacking the two tumour regions the others have. Per case and method: the
ARI of the combined clusters with the true regions (vascular and adipose as one: RNA and MSI do
not tell them apart) and with the sections, and whether the shifted section's spots sit in
clusters of their own (ARI of "is s1" with "the cluster's majority is s1"); ``--shift-seeds``
draws of the shift (default 3), mean and range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

TISSUE_UM = (1200.0, 1000.0)
SHARED = {
    "modalities": {
        "msi": {"kind": "imzml"},
        "he_msi": {"kind": "histology"},
        "visium": {"kind": "visium"},
    },
    "registrations": [
        {"moving": "msi", "fixed": "he_msi", "seed": 1},
        {"moving": "he_msi", "fixed": "visium", "seed": 1},
    ],
    "outputs": {"spatialdata": False, "report": False},
}


class LoadMonitor:
    """The 1-minute load average, sampled every ``every`` seconds in a thread."""

    def __init__(self, every: float = 2.0):
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = self.samples or [os.getloadavg()[0]]
        return {"mean": sum(values) / len(values), "max": max(values)}


def make_sections(n: int, folder: Path) -> dict[str, object]:
    """``n`` trios of one tissue, each MSI at its own rotation (generated once)."""
    import spatialfuse as sf

    trios = {}
    for i in range(n):
        name = f"s{i:03d}"
        trios[name] = sf.datasets.synthetic_trio(
            folder / name,
            seed=1,
            rotation_deg=(i * 137.508) % 360.0,
            tissue_size_um=TISSUE_UM,
            he_pixel_size_um=4.0,
            n_ions=40,
            n_genes=40,
            write_he_serial=False,
        )
    return trios


def write_config(trios: dict, output: Path, path: Path, workers: int) -> Path:
    import yaml

    samples = [
        {
            "name": name,
            "modalities": {
                "msi": {"path": str(t.msi)},
                "he_msi": {"path": str(t.he)},
                "visium": {"path": str(t.visium)},
            },
        }
        for name, t in trios.items()
    ]
    data = {"output": str(output), **SHARED, "parallel": {"n_workers": workers}}
    data["samples"] = samples
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def compare(together: Path, alone: Path, names: list[str]) -> dict[str, object]:
    """Largest transform difference (µm) and the samples whose clusters or numbers differ."""
    import warnings

    import mudata
    import numpy as np

    from spatialfuse.reg import Transform

    warnings.filterwarnings("ignore", category=FutureWarning, module="mudata")

    corners = np.array([[0.0, 0.0], [TISSUE_UM[0], 0.0], [0.0, TISSUE_UM[1]], list(TISSUE_UM)])
    worst = 0.0
    clusters, numbers = [], []
    for name in names:
        for file in sorted((alone / name / "transforms").glob("*.json")):
            a = Transform.load(together / name / "transforms" / file.name).apply(corners)
            b = Transform.load(file).apply(corners)
            worst = max(worst, float(np.abs(a - b).max()))
        a = mudata.read_h5mu(together / name / "joint.h5mu").obs["joint"].astype(str)
        b = mudata.read_h5mu(alone / name / "joint.h5mu").obs["joint"].astype(str)
        if not a.equals(b):
            clusters.append(name)
        sa = json.loads((together / name / "summary.json").read_text(encoding="utf-8"))
        sb = json.loads((alone / name / "summary.json").read_text(encoding="utf-8"))
        if sa.get("mapping") != sb.get("mapping") or sa.get("clustering") != sb.get("clustering"):
            numbers.append(name)
    return {
        "max_transform_difference_um": worst,
        "samples_with_other_clusters": clusters,
        "samples_with_other_numbers": numbers,
    }


#: name → (tissue size µm, MSI rotation °) of the batch study's sections.
BATCH_SECTIONS = {
    "s0": ((1200.0, 1000.0), 0.0),
    "s1": ((1100.0, 1000.0), 40.0),
    "s2": ((1200.0, 900.0), 200.0),
}
BATCH_CASES = ("equal", "msi_shift", "rna_shift", "msi_shift_missing", "missing")
MISSING = ("tumor_a", "tumor_b")


def batch_sections(folder: Path) -> tuple[dict, dict]:
    """Each section's (Visium, MSI on its spots) with the true transform; every spot's region."""
    import spatialfuse as sf
    from spatialfuse.workflow._config import Mapping
    from spatialfuse.workflow._steps import map_spots

    parts, truth = {}, {}
    for name, (size, rotation) in BATCH_SECTIONS.items():
        trio = sf.datasets.synthetic_trio(
            folder / name,
            seed=1,
            rotation_deg=rotation,
            tissue_size_um=size,
            he_pixel_size_um=4.0,
            n_ions=40,
            n_genes=40,
            write_he_serial=False,
        )
        visium = sf.io.read_visium(trio.visium)
        spots = map_spots(sf.io.read_imzml(trio.msi), visium, trio.msi_to_visium, Mapping())
        parts[name] = (visium, spots)
        for barcode, i in zip(visium.obs_names, trio.spot_labels, strict=True):
            region = trio.region_names[i] if i >= 0 else "background"
            truth[f"{barcode}-{name}"] = "vasc" if region in ("vascular", "adipose") else region
    return parts, truth


def batch_case(parts: dict, truth: dict, case: str, seed: int) -> dict:
    """The sections of ``case``: ``s1`` shifted (by ``seed``) and/or without the tumour."""
    import numpy as np
    import scipy.sparse

    out = dict(parts)
    visium, spots = parts["s1"]
    rng = np.random.default_rng(seed)
    if case.startswith("msi_shift"):
        x = np.asarray(spots.X, dtype=np.float64)
        spots = spots.copy()
        spots.X = (x * np.exp(rng.normal(0.0, 1.0, x.shape[1])) + np.nanmean(x)).astype("float32")
    if case.startswith("rna_shift"):
        x = visium.X.toarray() if scipy.sparse.issparse(visium.X) else np.asarray(visium.X)
        visium = visium.copy()
        visium.X = scipy.sparse.csr_matrix(
            np.round(x * np.exp(rng.normal(0.0, 1.0, x.shape[1]))).astype("float32")
        )
    if case.endswith("missing"):
        keep = np.array([truth[f"{b}-s1"] not in MISSING for b in visium.obs_names])
        visium, spots = visium[keep].copy(), spots[keep].copy()
    out["s1"] = (visium, spots)
    return out


def batch_scores(mdata, truth: dict) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    labels = mdata.obs["joint"].astype(str).to_numpy()
    samples = mdata.obs["sample"].astype(str).to_numpy()
    regions = np.array([truth[n] for n in mdata.obs_names])
    majority = pd.crosstab(labels, samples).idxmax(axis=1).reindex(labels).to_numpy()
    return {
        "ari_regions": adjusted_rand_score(regions, labels),
        "ari_sample": adjusted_rand_score(samples, labels),
        "shifted_apart": adjusted_rand_score(samples == "s1", majority == "s1"),
        "n_clusters": len(set(labels)),
    }


def batch_study(args) -> dict:
    """The batch correction's cases × methods × shift draws (see the module's description)."""
    import importlib.util
    import warnings

    from spatialfuse.workflow._config import Clustering, Preprocessing
    from spatialfuse.workflow._samples import combined_table

    warnings.filterwarnings("ignore")
    parts, truth = batch_sections(h.data_dir(args.data_dir) / "batch_sections")
    methods = ["none", "combat"]
    if importlib.util.find_spec("harmonypy") is not None:
        methods.append("harmony")
    rows = []
    for case in BATCH_CASES:
        seeds = range(args.shift_seeds) if "shift" in case else [0]
        for seed in seeds:
            sections = batch_case(parts, truth, case, seed)
            for method in methods:
                tic = time.perf_counter()
                mdata = combined_table(
                    dict(sections),
                    preprocessing=Preprocessing(),
                    clustering=Clustering(),
                    batch_correction=method,
                )
                row = {"case": case, "seed": seed, "method": method}
                row.update(batch_scores(mdata, truth), seconds=time.perf_counter() - tic)
                rows.append(row)
                print(
                    f"{case} seed {seed} {method}: ARI regions {row['ari_regions']:.3f}, "
                    f"sample {row['ari_sample']:.3f}, s1 apart {row['shifted_apart']:.2f}, "
                    f"{row['n_clusters']} clusters, {row['seconds']:.1f} s",
                    flush=True,
                )
    print()
    print("| case | method | ARI with the regions | ARI with the sections | s1 apart |")
    print("|---|---|---|---|---|")
    for case in BATCH_CASES:
        for method in methods:
            got = [r for r in rows if r["case"] == case and r["method"] == method]

            def cell(key, got=got):
                values = [r[key] for r in got]
                mean = sum(values) / len(values)
                if len(values) == 1:
                    return f"{mean:.2f}"
                return f"{mean:.2f} ({min(values):.2f}–{max(values):.2f})"

            print(
                f"| {case} | {method} | {cell('ari_regions')} | {cell('ari_sample')} | "
                f"{cell('shifted_apart')} |"
            )
    result = {"rows": rows, "spots": {n: t[0].n_obs for n, t in parts.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", action="store_true", help="the batch correction study")
    parser.add_argument("--shift-seeds", type=int, default=3, help="--batch: shift draws")
    parser.add_argument("--n", type=int, default=50, help="sections (default 50)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", help="where the sections are generated (kept)")
    parser.add_argument("--out", help="where the runs write (default: a temporary folder)")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args(argv)
    if args.batch:
        return batch_study(args)

    from spatialfuse.workflow import load_samples_config, run_pipeline, run_samples

    data = h.data_dir(args.data_dir) / "sections"
    tic = time.perf_counter()
    trios = make_sections(args.n, data)
    generate_s = time.perf_counter() - tic
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-sections-"))
    for sub in ("together", "alone"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    config = load_samples_config(
        write_config(trios, out / "together", out / "samples.yaml", args.workers)
    )
    names = [s.name for s in config.samples]
    load_before = os.getloadavg()
    print(
        f"{args.n} sections ({TISSUE_UM[0]:g} × {TISSUE_UM[1]:g} µm, generated in "
        f"{generate_s:.0f} s), {args.workers} workers, {os.cpu_count()} cores; load average "
        f"before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )

    with LoadMonitor() as load_together:
        tic = time.perf_counter()
        together = run_samples(config, reuse=False, show_progress=True)
        together_s = time.perf_counter() - tic
    with LoadMonitor() as load_alone:
        tic, cpu = time.perf_counter(), time.process_time()
        for sample in config.samples:
            single = sample.config.model_copy(update={"output": out / "alone" / sample.name})
            run_pipeline(single, reuse=False, show_progress=False)
        alone_s = time.perf_counter() - tic
        alone_cpu_s = time.process_time() - cpu
    check = compare(out / "together", out / "alone", names)
    same = not check["samples_with_other_clusters"] and not check["samples_with_other_numbers"]
    same = same and check["max_transform_difference_um"] < 1e-6
    combined = together.summary.get("combined", {})
    result = {
        "n_sections": args.n,
        "workers": together.n_workers,
        "cores": os.cpu_count(),
        "together_s": together_s,
        "together_samples_s": together.timings.get("samples"),
        "together_combined_s": together.timings.get("combined"),
        "alone_s": alone_s,
        "speedup": alone_s / together_s,
        "per_section_alone_s": alone_s / args.n,
        "mean_section_in_worker_s": sum(o.seconds for o in together.samples.values()) / args.n,
        "cpu_per_section_in_worker_s": sum(o.cpu_seconds for o in together.samples.values())
        / args.n,
        "cpu_per_section_alone_s": alone_cpu_s / args.n,
        "failed": list(together.failed),
        "combined_spots": combined.get("n_spots"),
        "combined_clusters": combined.get("clustering", {}).get("n_clusters"),
        "same_results": same,
        **check,
        "load_before": list(load_before),
        "load_together": load_together.summary(),
        "load_alone": load_alone.summary(),
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
    print()
    print("| run | wall s | per section s | load (mean / max) |")
    print("|---|---:|---:|---|")
    for label, seconds, load in (
        (f"together: LocalCluster, {together.n_workers} workers", together_s, load_together),
        ("alone: one at a time, one process", alone_s, load_alone),
    ):
        s = load.summary()
        print(
            f"| {label} | {seconds:.1f} | {seconds / args.n:.2f} | "
            f"{s['mean']:.2f} / {s['max']:.2f} |"
        )
    print()
    print(
        f"a section took {result['mean_section_in_worker_s']:.1f} s in a worker on average, "
        f"{result['per_section_alone_s']:.1f} s alone (CPU time "
        f"{result['cpu_per_section_in_worker_s']:.1f} s and "
        f"{result['cpu_per_section_alone_s']:.1f} s); the samples' part of the run "
        f"(cluster start included) {result['together_samples_s']:.1f} s"
    )
    print(
        f"speed-up {result['speedup']:.2f}× (of which the combined table of "
        f"{result['combined_spots']} spots, clustered across sections into "
        f"{result['combined_clusters']} clusters: {result['together_combined_s']:.1f} s); "
        f"same results: {same} (largest transform difference "
        f"{check['max_transform_difference_um']:.2g} µm, clusters differ in "
        f"{len(check['samples_with_other_clusters'])}, numbers in "
        f"{len(check['samples_with_other_numbers'])} of {args.n}); failed: {result['failed']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
