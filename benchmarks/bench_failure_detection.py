"""Failure detection of ``sf.reg.register``: bad image pairs must come back with ``ok=False``.

Builds deliberately bad registration problems from :func:`spatialfuse.datasets.synthetic_trio`
(several seeds) and simple images written as real files, registers each through the readers, and
prints how many of each kind were flagged (``result.ok`` false, with a reason), plus the false
alarms on correct pairs (the controls)::

    python benchmarks/bench_failure_detection.py                 # 6 seeds
    python benchmarks/bench_failure_detection.py --seeds 0 1 2   # chosen seeds
    python benchmarks/bench_failure_detection.py --json out.json # per-case results as JSON

Case kinds (moving → fixed; the H&E is the trio's, MSI the trio's MSI):

``control``            MSI → H&E of the same trio (must stay ok)
``unrelated_trio``     MSI → H&E of a trio with another seed (another tissue)
``unrelated_texture``  MSI → a full-frame natural-looking texture; the texture → H&E
``empty_tissue``       MSI → a blank (white) image; MSI → RGB noise; a pure-noise MSI → H&E
``pixel_size``         MSI or H&E read with ``pixel_size_um=`` 10× or 1/10 of the truth
``partial_crop``       MSI → a crop of the H&E showing part of the tissue (half, a quarter):
                       partial overlap is a normal case, it must be registered right (ok, within
                       :data:`CROP_MAX_TRE_PX` MSI pixels of the truth) and report the overlap

``tests/reg/test_failure_detection.py`` imports :func:`build_cases` and :func:`run_case` and runs a
few cases of each kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Trio options: small and quick (H&E at 2 µm, MSI at 50 µm, no Visium serial section).
TRIO_OPTIONS = {
    "write_he_serial": False,
    "serial_section": False,
    "n_ions": 40,
    "n_genes": 40,
    "he_pixel_size_um": 2.0,
}
KINDS = (
    "control",
    "unrelated_trio",
    "unrelated_texture",
    "empty_tissue",
    "pixel_size",
    "pixel_size_estimated",
    "partial_crop",
)
#: Kinds that must come back ok (the others must be flagged).
MUST_PASS = ("control", "pixel_size_estimated", "partial_crop")
#: A crop's result must land within this many MSI pixels of the truth (median over the MSI pixels
#: the crop shows).
CROP_MAX_TRE_PX = 1.0


@dataclass
class Case:
    """One registration problem: ``load()`` returns ``(moving, fixed)`` read through the readers."""

    kind: str
    name: str
    load: Callable[[], tuple]
    register_kwargs: dict = field(default_factory=dict)
    #: For pixel_size_estimated: the estimated over the given pixel size that is right where the
    #: tissue keeps its size between the sections ...
    expected_ratio: float | None = None
    #: ... divided by the trio's own scale (its MSI → H&E truth scales by ±12 %: shrinkage the
    #: estimate cannot tell from a pixel size).
    true_scale: float = 1.0
    #: Where known: the true moving µm → fixed µm transform and the moving pixel size (µm), so
    #: that the outcome reports the error (``tre_px``) over the moving tissue the fixed shows.
    truth: object = None
    moving_pixel_um: float | None = None


def _write_rgb(path: Path, rgb: np.ndarray, pixel_size_um: float) -> Path:
    from spatialfuse.datasets._writers import write_ome_tiff

    return write_ome_tiff(
        path, rgb, pixel_size_um, uuid_text="00000000-0000-0000-0000-000000000000", name=path.stem
    )


def natural_texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A full-frame RGB texture with 1/f-like structure (clouds, blobs, grain) in stain colours."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    small = (max(shape[0] // 8, 2), max(shape[1] // 8, 2))
    field = sum(
        gaussian_filter(rng.normal(size=small), sigma) * sigma for sigma in (1.0, 3.0, 9.0, 27.0)
    )
    field = zoom(field, (shape[0] / small[0], shape[1] / small[1]), order=1)[: shape[0], : shape[1]]
    field = (field - field.mean()) / field.std()
    grain = gaussian_filter(rng.normal(size=shape), 1.0)
    value = np.clip(0.5 + 0.25 * np.tanh(field) + 0.08 * grain / grain.std(), 0, 1)
    pink, purple = np.array([236, 170, 200]), np.array([110, 60, 150])
    rgb = pink * (1 - value[..., None]) + purple * value[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def noise_msi(path: Path, shape: tuple[int, int], pixel_size_um: float, seed: int) -> Path:
    """A continuous imzML whose every spectrum is independent noise (no tissue)."""
    from spatialfuse.datasets._writers import write_imzml

    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    coords = np.column_stack([cols.ravel() + 1, rows.ravel() + 1])
    mzs = np.linspace(100.0, 1000.0, 40)
    intensities = rng.lognormal(0.0, 1.0, size=(len(coords), len(mzs)))
    write_imzml(
        path,
        coords,
        mzs,
        intensities,
        mode="continuous",
        pixel_size_um=(pixel_size_um, pixel_size_um),
        uuid_bytes=bytes(16),
        version="bench",
    )
    return path


def _trio(folder: Path, seed: int, options: dict):
    import spatialfuse as sf

    return sf.datasets.synthetic_trio(folder / f"trio{seed}", seed=seed, **options)


def build_cases(
    folder: Path,
    seeds: list[int],
    *,
    kinds: tuple[str, ...] = KINDS,
    quick: bool = False,
    trio_options: dict | None = None,
) -> list[Case]:
    """Write the inputs under ``folder`` and return the cases (``quick``: fewer variants).

    The unrelated-trio case of a seed uses the next seed's H&E (the first seed's for the last).
    ``trio_options`` update :data:`TRIO_OPTIONS`.
    """
    import tifffile

    import spatialfuse as sf

    folder = Path(folder)
    ring = seeds if len(seeds) > 1 else [seeds[0], seeds[0] + 1]
    partner = {seed: ring[(i + 1) % len(ring)] for i, seed in enumerate(seeds)}
    needed = set(seeds) | ({partner[s] for s in seeds} if "unrelated_trio" in kinds else set())
    options = {**TRIO_OPTIONS, **(trio_options or {})}
    trios = {seed: _trio(folder, seed, options) for seed in sorted(needed)}
    cases: list[Case] = []
    for seed in seeds:
        trio = trios[seed]
        he_px = float(trio.he_pixel_size_um)
        msi_px = float(trio.msi_pixel_size_um[0])
        he_rgb = tifffile.imread(trio.he)

        def msi(trio=trio, **kw):
            return sf.io.read_imzml(trio.msi, **kw)

        def he(trio=trio, **kw):
            return sf.io.read_histology(trio.he, **kw)

        def add(kind, name, load, seed=seed, **extra):
            if kind in kinds:
                cases.append(Case(kind, f"{name} (seed {seed})", load, **extra))

        add("control", "MSI → H&E", lambda msi=msi, he=he: (msi(), he()))
        if "unrelated_trio" in kinds:
            other = trios[partner[seed]]
            add(
                "unrelated_trio",
                f"MSI → H&E of seed {partner[seed]}",
                lambda msi=msi, other=other: (msi(), sf.io.read_histology(other.he)),
            )
        if "unrelated_texture" in kinds:
            texture = _write_rgb(
                folder / f"texture{seed}.ome.tif", natural_texture(he_rgb.shape[:2], seed), he_px
            )
            add(
                "unrelated_texture",
                "MSI → texture",
                lambda msi=msi, t=texture: (msi(), sf.io.read_histology(t)),
            )
            if not quick:
                add(
                    "unrelated_texture",
                    "texture → H&E",
                    lambda he=he, t=texture: (sf.io.read_histology(t), he()),
                )
        if "empty_tissue" in kinds:
            blank = _write_rgb(folder / f"blank{seed}.ome.tif", np.full_like(he_rgb, 245), he_px)
            rng = np.random.default_rng(seed)
            noise = _write_rgb(
                folder / f"noise{seed}.ome.tif",
                rng.integers(0, 256, he_rgb.shape, dtype=np.uint8),
                he_px,
            )
            grid = (int(he_rgb.shape[0] * he_px / msi_px), int(he_rgb.shape[1] * he_px / msi_px))
            noisy = noise_msi(folder / f"noise{seed}.imzML", grid, msi_px, seed)
            add(
                "empty_tissue",
                "MSI → blank",
                lambda msi=msi, b=blank: (msi(), sf.io.read_histology(b)),
            )
            add(
                "empty_tissue",
                "MSI → noise",
                lambda msi=msi, n=noise: (msi(), sf.io.read_histology(n)),
            )
            add(
                "empty_tissue",
                "noise MSI → H&E",
                lambda he=he, m=noisy: (sf.io.read_imzml(m), he()),
            )
        factors = (10.0, 0.1)
        true_scale = float(np.sqrt(abs(np.linalg.det(trio.msi_to_he.matrix[:2, :2]))))
        # A wrong pixel size is flagged where the pixel sizes are trusted (scale="given") and
        # estimated in the search by default (scale="auto"): the H&E's is estimated, so an MSI
        # pixel 10× too large shows as an H&E pixel 10× too large.
        for factor in factors:
            msi_wrong = lambda msi=msi, he=he, f=msi_px * factor: (msi(pixel_size_um=f), he())  # noqa: E731
            he_wrong = lambda msi=msi, he=he, f=he_px * factor: (msi(), he(pixel_size_um=f))  # noqa: E731
            given = {"register_kwargs": {"scale": "given"}}
            add("pixel_size", f"MSI pixel ×{factor:g}", msi_wrong, **given)
            add(
                "pixel_size_estimated",
                f"MSI pixel ×{factor:g}",
                msi_wrong,
                expected_ratio=factor,
                true_scale=true_scale,
            )
            if not quick or factor == 10.0:
                add("pixel_size", f"H&E pixel ×{factor:g}", he_wrong, **given)
                add(
                    "pixel_size_estimated",
                    f"H&E pixel ×{factor:g}",
                    he_wrong,
                    expected_ratio=1 / factor,
                    true_scale=true_scale,
                )
        if "partial_crop" in kinds:
            rows, cols = np.nonzero(he_rgb.min(axis=2) < 200)
            r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
            crops = {
                "left half": he_rgb[:, : (c0 + c1) // 2],
                "top-left quarter": he_rgb[: (r0 + r1) // 2, : (c0 + c1) // 2],
            }
            for label, crop in crops.items():
                if quick and label != "left half":
                    continue
                path = _write_rgb(
                    folder / f"crop{seed}_{label.replace(' ', '_')}.ome.tif",
                    np.ascontiguousarray(crop),
                    he_px,
                )
                add(
                    "partial_crop",
                    f"MSI → H&E {label}",
                    lambda msi=msi, p=path: (msi(), sf.io.read_histology(p)),
                    truth=trio.msi_to_he,  # the crops keep the H&E's top-left corner
                    moving_pixel_um=msi_px,
                )
    return cases


def run_case(case: Case) -> dict:
    """Register one case; the outcome (``ok``, ``failures``, main metrics, or a crash)."""
    import spatialfuse as sf

    started = time.perf_counter()
    try:
        moving, fixed = case.load()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = sf.reg.register(moving, fixed, **case.register_kwargs)
    except Exception as exc:  # a crash is reported as such: it is neither ok nor a detection
        return {
            "kind": case.kind,
            "name": case.name,
            "ok": None,
            "failures": [],
            "error": f"{type(exc).__name__}: {exc}",
            "seconds": time.perf_counter() - started,
        }
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
    estimate_right = None
    if "estimated_pixel_size" in result.details:
        estimate = result.details["estimated_pixel_size"]
        metrics["estimated_pixel_size"] = estimate
        if case.expected_ratio is not None:
            ratio = estimate["value"][0] / estimate["as_given"][0]
            estimate_right = bool(abs(ratio * case.true_scale / case.expected_ratio - 1) < 0.05)
    tre_px = None
    if case.truth is not None:
        tre_px = _tre_shown_px(case, moving, fixed, result.transform)
    return {
        "tre_px": tre_px,
        "partial_overlap": result.details.get("partial_overlap"),
        "estimate_right": estimate_right,
        "kind": case.kind,
        "name": case.name,
        "ok": bool(result.ok),
        "failures": list(result.failures),
        "what_to_do": [
            c["what_to_do"] for c in result.details.get("checks", []) if c["what_to_do"]
        ],
        "metrics": metrics,
        "transform": repr(result.transform),
        "seconds": time.perf_counter() - started,
    }


def _tre_shown_px(case: Case, moving, fixed, found) -> float:
    """Median error (moving pixels) over the moving pixels the truth puts inside the fixed image."""
    points = np.asarray(moving.obsm["spatial"], dtype=np.float64)
    true = case.truth.apply(points)
    height, width = fixed.shape[:2]
    extent = np.array([width * fixed.pixel_size_um[0], height * fixed.pixel_size_um[1]])
    shown = np.all((true >= 0) & (true <= extent), axis=1)
    errors = np.linalg.norm(found.apply(points[shown]) - true[shown], axis=1)
    return float(np.median(errors)) / float(case.moving_pixel_um)


def summarize(results: list[dict]) -> list[dict]:
    """Per kind: n, flagged (ok false with a reason), rate; controls count false alarms."""
    rows = []
    for kind in KINDS:
        mine = [r for r in results if r["kind"] == kind]
        if not mine:
            continue
        flagged = sum(1 for r in mine if r["ok"] is False and r["failures"])
        crashed = sum(1 for r in mine if r["ok"] is None)
        row = {"kind": kind, "n": len(mine), "flagged": flagged, "crashed": crashed}
        if kind == "pixel_size_estimated":
            row["estimate_right"] = sum(1 for r in mine if r.get("estimate_right"))
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| case kind | n | flagged | detection rate | false alarms (controls) | crashes |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        n, flagged = row["n"], row["flagged"]
        if row["kind"] in MUST_PASS:
            note = ""
            if "estimate_right" in row:
                note = f" (pixel size estimated within 5 %: {row['estimate_right']}/{n})"
            lines.append(
                f"| {row['kind']}{note} | {n} | {flagged} | – | {flagged}/{n} | {row['crashed']} |"
            )
        else:
            lines.append(
                f"| {row['kind']} | {n} | {flagged} | {flagged / n:.0%} | – | {row['crashed']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--data-dir", type=Path, default=None, help="inputs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write per-case results here")
    args = parser.parse_args(argv)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data_dir or Path(tmp)
        cases = build_cases(folder, args.seeds)
        results = []
        for case in cases:
            out = run_case(case)
            results.append(out)
            status = "ok" if out["ok"] else ("CRASH" if out["ok"] is None else "flagged")
            detail = out.get("error") or "; ".join(out["failures"])
            print(f"{case.kind:18s} {case.name:34s} {status:8s} {detail}", flush=True)
    table = format_table(summarize(results))
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    missed = [r for r in results if r["kind"] not in MUST_PASS and r["ok"] is not False]
    alarms = [r for r in results if r["kind"] in MUST_PASS and r["ok"] is not True]
    return 1 if missed or alarms else 0


if __name__ == "__main__":
    sys.exit(main())
