"""``spatialfuse demo``: the whole pipeline on a synthetic trio, scored against its known truth."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialfuse._io_utils import atomic_path

if TYPE_CHECKING:
    from spatialfuse.datasets import SyntheticTrio
    from spatialfuse.workflow._pipeline import RunResult

DEMO_CONFIG = """\
# The demo's run configuration: the same file format as your own runs (spatialfuse run).
output: results
modalities:
  msi:
    kind: imzml
    path: data/msi.imzML
  he_msi:
    kind: histology
    path: data/he.ome.tif
  visium:
    kind: visium
    path: data/visium
registrations:
  - moving: msi
    fixed: he_msi
    model: affine
    seed: {seed}
  - moving: he_msi
    fixed: visium
    model: affine
    seed: {seed}
mapping:
  method: area
clustering:
  method: wnn
  seed: {seed}
correlation:
  seed: {seed}
"""


@dataclass
class DemoResult:
    """The demo's run, the synthetic truth it was scored against, and the scores."""

    run: RunResult
    trio: SyntheticTrio
    evaluation: dict[str, Any]
    config_file: Path
    seconds: float


def run_demo(
    out: str | os.PathLike, *, seed: int = 0, show_progress: bool = True, reuse: bool = True
) -> DemoResult:
    """Generate a synthetic trio in ``out/data``, run the pipeline into ``out/results``, score it.

    The demo never overwrites a file it did not write: ``out/config.yaml`` and ``out/data/*``
    already there are left untouched when they hold what the demo would write, replaced when the
    folder's journal lists them as the demo's own, and otherwise refused
    (:class:`~spatialfuse.errors.OutputFolderError`, before anything is written). Other files in
    ``out`` are left alone.

    Returns
    -------
    DemoResult
        ``evaluation`` holds the truth-based scores (also in ``summary.json["evaluation"]`` and
        the report): TRE of each registration and of the composed MSI → Visium transform in µm and
        MSI pixels, spot coverage, and the adjusted Rand index of the joint clusters against the
        true regions.
    """
    from spatialfuse.datasets import synthetic_trio
    from spatialfuse.workflow._config import load_config
    from spatialfuse.workflow._lock import output_lock
    from spatialfuse.workflow._pipeline import run_pipeline

    start = time.perf_counter()
    out = Path(out)
    config_file = out / "config.yaml"
    with output_lock(out):
        trio = _load_or_make(
            out / "data",
            seed,
            synthetic_trio,
            extra={config_file: DEMO_CONFIG.format(seed=seed).encode("utf-8")},
        )
        config = load_config(config_file)
        result = run_pipeline(
            config,
            reuse=reuse,
            show_progress=show_progress,
            evaluate=lambda run: evaluate_against_truth(run, trio),
        )
    return DemoResult(
        result, trio, result.summary["evaluation"], config_file, time.perf_counter() - start
    )


def _load_or_make(
    data: Path, seed: int, make, *, extra: dict[Path, bytes] | None = None
) -> SyntheticTrio:
    """Generate the trio into ``data`` (and ``extra`` files), never overwriting a user's file.

    The files are generated in a temporary folder first. A file already at one of the target
    paths is left untouched when identical (generation is seeded and byte-identical, so keeping
    unchanged files keeps their identity, mtime and inode, and a re-run of the demo reuses its
    cached steps), replaced when the journal of ``data.parent`` lists it as the demo's, and
    otherwise refused before anything is written.

    Raises
    ------
    OutputFolderError
        A differing file the demo did not write is at one of its paths.
    """
    import contextlib
    import dataclasses
    import filecmp
    import shutil

    from spatialfuse._io_utils import temporary_dir
    from spatialfuse.errors import OutputFolderError
    from spatialfuse.workflow._journal import Journal

    folder = data.parent
    folder.mkdir(parents=True, exist_ok=True)
    journal = Journal(folder)
    with journal.active(), contextlib.ExitStack() as stack:
        journal.remove_temporaries()
        stack.callback(journal.remove_temporaries)  # also compacts what this call recorded
        with temporary_dir(folder, "demo-data") as fresh:
            trio = make(fresh, seed=seed, write_he_serial=False)
            planned: dict[Path, Path | bytes] = {
                data / p.relative_to(fresh): p for p in sorted(fresh.rglob("*")) if p.is_file()
            }
            planned.update(extra or {})
            own = journal.outputs()
            write, conflicts = [], []
            for target, source in planned.items():
                if _same(target, source, filecmp):
                    continue
                if os.path.lexists(target) and journal.relative(target) not in own:
                    conflicts.append(target)
                write.append((target, source))
            if conflicts:
                shown = ", ".join(str(p) for p in conflicts[:3]) + (
                    ", …" if len(conflicts) > 3 else ""
                )
                raise OutputFolderError(
                    folder,
                    f"the demo would overwrite files it did not write: {shown}. Move them away "
                    "or choose another --out folder",
                    conflicts[:3],
                )
            for target, source in write:
                with atomic_path(target) as part:
                    if isinstance(source, bytes):
                        part.write_bytes(source)
                    else:
                        shutil.copyfile(source, part)
    moved = {
        f.name: data / getattr(trio, f.name).relative_to(fresh)
        for f in dataclasses.fields(trio)
        if isinstance(getattr(trio, f.name), Path) and f.name != "folder"
    }
    return dataclasses.replace(trio, folder=data, **moved)


def _same(target: Path, source: Path | bytes, filecmp) -> bool:
    """Whether ``target`` is a regular file holding exactly ``source``."""
    if not target.is_file():
        return False
    if isinstance(source, bytes):
        return target.stat().st_size == len(source) and target.read_bytes() == source
    return filecmp.cmp(source, target, shallow=False)


def evaluate_against_truth(run: RunResult, trio: SyntheticTrio) -> dict[str, Any]:
    """Score a run on a synthetic trio against the generator's truth."""
    import numpy as np

    evaluation: dict[str, Any] = {}
    pixel = float(trio.msi_pixel_size_um[0])
    msi = run.modalities.get("msi")
    msi_points = np.asarray(msi.obsm["spatial"]) if msi is not None else trio.landmarks_msi_um
    on_tissue = trio.msi_labels >= 0
    if on_tissue.any() and len(on_tissue) == len(msi_points):
        msi_points = msi_points[on_tissue]
    truths = {
        ("msi", "he_msi"): (trio.msi_to_he, msi_points),
        ("he_msi", "visium"): (trio.visium_to_he.inverse(), trio.landmarks_he_um),
    }
    registrations = {}
    for record in run.registrations:
        reg = record.registration
        truth = truths.get((reg.moving, reg.fixed))
        if truth is None:
            continue
        transform, points = truth
        errors = np.linalg.norm(record.transform.apply(points) - transform.apply(points), axis=1)
        registrations[reg.name] = _errors(errors, pixel)
    evaluation["registration_tre"] = registrations
    if run.msi_to_visium is not None:
        errors = np.linalg.norm(
            run.msi_to_visium.apply(msi_points) - trio.msi_to_visium.apply(msi_points), axis=1
        )
        evaluation["msi_to_visium_tre"] = _errors(errors, pixel)
    if run.msi_spots is not None:
        obs = run.msi_spots.obs
        evaluation["spots_with_msi"] = int(obs["has_msi"].sum())
        evaluation["spots"] = int(obs.shape[0])
    if run.mdata is not None and "joint" in run.mdata.obs:
        evaluation["clustering"] = _cluster_agreement(run, trio)
    evaluation["msi_pixel_size_um"] = pixel
    return evaluation


def _errors(errors, pixel: float) -> dict[str, float]:
    import numpy as np

    return {
        "median_um": float(np.median(errors)),
        "p90_um": float(np.percentile(errors, 90)),
        "median_msi_px": float(np.median(errors) / pixel),
        "p90_msi_px": float(np.percentile(errors, 90) / pixel),
    }


def _cluster_agreement(run: RunResult, trio: SyntheticTrio) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    obs = run.mdata.obs
    truth = dict(zip(trio.spot_barcodes, trio.spot_labels, strict=True))
    labels = obs["joint"]
    keep = labels.notna().to_numpy() & np.array([truth.get(b, -1) >= 0 for b in obs.index])
    true = np.array([truth[b] for b in obs.index[keep]])
    return {
        "adjusted_rand_index": float(adjusted_rand_score(true, labels[keep].astype(str))),
        "n_spots_scored": int(keep.sum()),
        "n_true_regions": len(np.unique(true)),
        "n_clusters": int(labels[keep].nunique()),
    }


def format_summary(demo: DemoResult) -> str:
    """The few lines ``spatialfuse demo`` prints at the end."""
    ev = demo.evaluation
    lines = [f"spatialfuse demo finished in {demo.seconds:.0f} s (seed {demo.trio.seed})."]
    for name, tre in ev.get("registration_tre", {}).items():
        lines.append(
            f"  registration {name}: median TRE {tre['median_um']:.1f} µm "
            f"({tre['median_msi_px']:.2f} MSI px), 90th percentile {tre['p90_um']:.1f} µm"
        )
    if "msi_to_visium_tre" in ev:
        tre = ev["msi_to_visium_tre"]
        lines.append(
            f"  MSI → Visium (composed): median TRE {tre['median_um']:.1f} µm "
            f"({tre['median_msi_px']:.2f} MSI px of {ev['msi_pixel_size_um']:g} µm)"
        )
    if "spots" in ev:
        lines.append(f"  spots with MSI data: {ev['spots_with_msi']} of {ev['spots']}")
    if "clustering" in ev:
        c = ev["clustering"]
        lines.append(
            f"  joint clusters vs true regions: ARI {c['adjusted_rand_index']:.2f} "
            f"({c['n_clusters']} clusters, {c['n_true_regions']} regions, "
            f"{c['n_spots_scored']} spots)"
        )
    files = demo.run.files
    if "report" in files:
        lines.append(f"  report: {files['report']}")
    lines.append(f"  outputs: {demo.run.output}")
    return "\n".join(lines)
