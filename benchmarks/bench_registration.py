"""Benchmark sf.reg.register on synthetic data with exact ground truth, in one process.

Usage::

    python benchmarks/bench_registration.py [--quick] [--seeds N] [--json OUT] [--data-dir DIR]
                                            [--strict]

Four parts, all against the ground truth of :func:`spatialfuse.datasets.synthetic_trio`:

1. MSI ↔ H&E affine sweep over random rotations, mirrors, anisotropic scales and shears, with a
   plain SimpleITK baseline written as a careful user would;
2. MSI ↔ H&E nonrigid (``model="bspline"``) under a warp of one MSI pixel, affine beside it;
3. H&E ↔ serial-section H&E (``"affine"`` and ``"bspline"``);
4. speed of one MSI ↔ H&E affine registration against a ~2000 px and a ~8000 px wide H&E.

Accuracy is the target registration error (TRE): the median over the MSI pixel centres (parts 1,
2, 4) or the in-tissue Visium spots of the serial section (part 3) of ``|found(p) − truth(p)|``.
Part 2 also gives it over the MSI pixels on tissue alone: about half of an MSI raster is
background, where nothing measures a nonrigid warp and the field is only extrapolated.
Times are only compared within one run (ratios), never across runs or machines. See
benchmarks/README.md for the details.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import textwrap
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

#: Input sizes. "full" is what the targets are about; "quick" exists for the smoke test.
SIZES = {
    "full": {
        "seeds_affine": 20,
        "seeds_nonrigid": 10,
        "seeds_serial": 10,
        "tissue_um": (3000.0, 2400.0),  # the generator's default tissue
        "he_px": 1.0,  # the generator's default H&E pixel
        "msi_px": (50.0, 100.0),  # drawn per seed, uniform, rounded to 0.5 µm
        # The sizes: 150 × 100 MSI pixels of 50 µm (the tissue plus the generator's two
        # pixels of margin), against an H&E of 2000 × 1600 px and one 4× finer, 8000 × 6400 px.
        # The generator's H&E spans 8376 µm (2000 px at 4.19 µm) by 5876 µm; it is padded with
        # background at the bottom (which leaves every transform unchanged) to 1600 rows.
        "speed": {
            "tissue_um": (8325.0, 4990.0),
            "msi_px": 50.0,
            "he_px": 4.77,
            "big": 4,
            "he_shape_xy": (2000, 1600),
        },
        "speed_repeat": 3,
        "reg_seeds": (1, 2),
        "serial_working_um": None,  # register()'s default
    },
    "quick": {
        "seeds_affine": 2,
        "seeds_nonrigid": 2,
        "seeds_serial": 2,
        "tissue_um": (2000.0, 1600.0),
        "he_px": 4.0,
        "msi_px": (60.0, 80.0),
        "speed": {
            "tissue_um": (2000.0, 1600.0),
            "msi_px": 60.0,
            "he_px": 4.0,
            "big": 2,
            "he_shape_xy": None,
        },
        "speed_repeat": 1,
        "reg_seeds": (1,),
        "serial_working_um": 20.0,  # coarser than the default, to stay fast
    },
}

TARGETS = {
    "affine_success_rate": 1.0,  # spatialfuse: every seed TRE < 1 MSI px
    "affine_median_tre_px": 0.2,
    "nonrigid_median_tre_px": 0.3,
    "serial_median_tre_um": 10.0,
    "speed_small_s": 5.0,
    "speed_big_ratio": 1.5,  # big H&E median / small H&E median
}
#: A registration succeeds when its median TRE is below this many MSI pixels.
SUCCESS_PX = 1.0
#: Seeds of each sweep: part 1 and part 3 share trios (seeds 0..), part 2 has its own.
AFFINE_SEED0 = 0
NONRIGID_SEED0 = 100
SPEED_SEED = 1000
#: Affine of the speed inputs (axis-aligned, so the MSI raster is exactly the size asked for).
SPEED_AFFINE = {"rotation_deg": 180.0, "mirror": True, "scale": 1.0, "shear": 0.0}

#: The plain SimpleITK baseline's settings (what the README documents).
BASELINE = {
    "metric": "Mattes MI, 50 bins, random sampling 20 % (seeded)",
    "initializer": "CenteredTransformInitializer(H&E, MSI TIC, AffineTransform(2), MOMENTS)",
    "optimizer": "RegularStepGradientDescent(learningRate=1 MSI px, minStep=0.001 MSI px, "
    "300 iterations, relaxation 0.5), SetOptimizerScalesFromPhysicalShift",
    "pyramid": "shrink [4, 2, 1], smoothing [2, 1, 0] px",
    "interpolator": "linear",
    "images": "MSI TIC (obs['tic']) on its grid (µm spacing and origin); H&E 1 − mean(RGB)/255 "
    "by block means to ~MSI pixel / 2",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, small inputs (smoke run)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of the affine sweep")
    parser.add_argument("--seeds-nonrigid", type=int, default=None, help="seeds of part 2")
    parser.add_argument("--seeds-serial", type=int, default=None, help="seeds of part 3")
    parser.add_argument(
        "--reg-seeds",
        type=lambda text: [int(v) for v in text.split(",")],
        default=None,
        help="register(seed=...) values, comma-separated: part 1 runs each, the other parts the "
        "first (default 1,2; never 0, which SimpleITK reads as 'seed from the wall clock')",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: DATA_DIR/results-registration[-quick].json)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"inputs go to DATA_DIR/registration (default: ${h.DATA_DIR_ENV} or benchmarks/_data)",
    )
    parser.add_argument(
        "--no-qc", action="store_true", help="do not save QC figures of failed registrations"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.reg_seeds is not None and (not args.reg_seeds or min(args.reg_seeds) < 1):
        parser.error("--reg-seeds must be positive integers")
    for name in ("seeds", "seeds_nonrigid", "seeds_serial"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# -------------------------------------------------------------------------------------------------
# inputs: synthetic trios, cached by parameters
# -------------------------------------------------------------------------------------------------


def _generator_fingerprint() -> str:
    """CRC of the generator's sources: an edited generator never reuses stale inputs."""
    import spatialfuse.datasets as datasets

    crc = 0
    for path in sorted(Path(datasets.__file__).parent.glob("*.py")):
        crc = zlib.crc32(path.read_bytes(), crc)
    return f"{crc:08x}"


def msi_pixel_for(seed: int, bounds) -> float:
    """The MSI pixel size of a seed: uniform in ``bounds`` µm, rounded to 0.5 µm."""
    lo, hi = bounds
    return round(float(np.random.default_rng([seed, 0x5EED]).uniform(lo, hi)) * 2) / 2


@dataclass
class Case:
    """One generated trio, as far as the benchmark needs it (rebuilt from ``truth.json``)."""

    seed: int
    folder: Path
    msi: Path
    he: Path
    he_serial: Path | None
    visium: Path
    msi_px: tuple[float, float]
    he_px: float
    msi_to_he: object
    he_serial_to_he: object
    params: dict
    generation_s: float

    @property
    def pixel(self) -> float:
        return float(self.msi_px[0])


def ensure_trio(root: Path, **options) -> Case:
    """Generate ``synthetic_trio(**options)`` once; later calls with equal options reuse it.

    The folder name spells the options; the trio is written under a ``.partial`` name and renamed
    when ``truth.json`` (written last) exists, so an interrupted run leaves nothing reusable.
    """
    import spatialfuse as sf

    key = dict(sorted(options.items()))
    tag = zlib.crc32(json.dumps(key, sort_keys=True, default=list).encode())
    folder = root / f"trio_s{options['seed']}_{tag:08x}_g{_generator_fingerprint()}"
    generation_s = 0.0
    if not (folder / "truth.json").is_file() or not (folder / "bench_options.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        sf.datasets.synthetic_trio(partial, **options)
        generation_s = time.perf_counter() - t0
        (partial / "bench_options.json").write_text(json.dumps(key, default=list, indent=1))
        os.replace(partial, folder)
    stored = json.loads((folder / "bench_options.json").read_text())
    if stored != json.loads(json.dumps(key, default=list)):  # pragma: no cover - CRC collision
        raise RuntimeError(f"{folder}: stored options {stored} differ from {key}")
    return load_case(folder, generation_s)


def padded_he(case: Case, shape_xy: tuple[int, int]) -> Case:
    """``case`` with its H&E padded at the bottom and right to ``shape_xy`` pixels.

    The padding is the image's own background colour (the median of its border pixels); the
    origin stays where it was, so every transform of the case still holds. Written once, beside
    the generated H&E.
    """
    from dataclasses import replace

    import tifffile

    from spatialfuse.datasets._writers import write_ome_tiff

    width, height = shape_xy
    path = case.he.with_name(f"he_{width}x{height}.ome.tif")
    if not path.is_file():
        rgb = tifffile.imread(case.he)
        rows, cols = rgb.shape[:2]
        if rows > height or cols > width:
            raise ValueError(f"{case.he}: {cols}×{rows} px is larger than {width}×{height}")
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        padded = np.empty((height, width, rgb.shape[2]), rgb.dtype)
        padded[...] = np.median(border, axis=0).astype(rgb.dtype)
        padded[:rows, :cols] = rgb
        partial = path.with_name(path.name + ".partial.ome.tif")
        write_ome_tiff(
            partial, padded, case.he_px, uuid_text=str(uuid.UUID(int=case.seed)), name=path.stem
        )
        os.replace(partial, path)
    return replace(case, he=path)


def load_case(folder: Path, generation_s: float = 0.0) -> Case:
    from spatialfuse.reg import Transform

    truth = json.loads((folder / "truth.json").read_text())
    files = truth["files"]
    return Case(
        seed=int(truth["seed"]),
        folder=folder,
        msi=folder / files["msi"],
        he=folder / files["he"],
        he_serial=folder / files["he_serial"] if files.get("he_serial") else None,
        visium=folder / files["visium"],
        msi_px=tuple(float(v) for v in truth["pixel_sizes_um"]["msi"]),
        he_px=float(truth["pixel_sizes_um"]["he"]),
        msi_to_he=Transform.from_dict(truth["transforms"]["msi_to_he"]),
        he_serial_to_he=Transform.from_dict(truth["transforms"]["he_serial_to_he"]),
        params=truth["params"],
        generation_s=generation_s,
    )


# -------------------------------------------------------------------------------------------------
# measuring
# -------------------------------------------------------------------------------------------------


def tre_um(found, truth, points) -> float:
    """Median over ``points`` of ``|found(p) − truth(p)|`` (µm); inf when ``found`` is None."""
    if found is None:
        return math.inf
    mapped = found(points)
    if not np.isfinite(mapped).all():
        return math.inf
    return float(np.median(np.linalg.norm(mapped - truth.apply(points), axis=1)))


def on_tissue(case: Case, points: np.ndarray) -> np.ndarray:
    """Which MSI pixel centres ``points`` land on tissue under the true transform.

    Judged on the H&E itself (grey < 220 after 4 × 4 block means; the generator's background is
    near-white), independent of the registration's own tissue masks.
    """
    import spatialfuse as sf

    he = sf.io.read_histology(case.he)
    rgb, size = he.downsampled(factor=4)
    tissue = rgb[..., :3].mean(axis=2) < 220
    q = case.msi_to_he.apply(points)
    rows = np.clip((q[:, 1] / size[1]).astype(int), 0, tissue.shape[0] - 1)
    cols = np.clip((q[:, 0] / size[0]).astype(int), 0, tissue.shape[1] - 1)
    return tissue[rows, cols]


def run_register(moving, fixed, **kwargs):
    """``sf.reg.register`` with its RegistrationWarning captured; (result, seconds, warnings)."""
    import spatialfuse as sf

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        result = sf.reg.register(moving, fixed, **kwargs)
        seconds = time.perf_counter() - t0
    messages = [
        str(w.message) for w in caught if issubclass(w.category, sf.reg.RegistrationWarning)
    ]
    return result, seconds, messages


def save_qc(result, path: Path, title: str) -> str | None:
    """A QC figure of ``result`` (overlay, checkerboard, outlines); None when plotting fails."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        import spatialfuse as sf

        path.parent.mkdir(parents=True, exist_ok=True)
        fig = sf.pl.registration_qc(result, title=title, save=path)
        plt.close(fig)
        return str(path)
    except Exception as exc:  # pragma: no cover - plotting is a diagnostic only
        print(f"  (QC figure not written: {type(exc).__name__}: {exc})", flush=True)
        return None


def sitk_baseline(msi, he_path: Path, he_px: float, seed: int):
    """Plain SimpleITK MSI → H&E affine registration, as a careful user would write it.

    Returns ``(moving → fixed function or None, error message or None)``. ITK optimises the map
    from fixed (H&E) points to moving (MSI) points; it is inverted here for the TRE.
    """
    import SimpleITK as sitk
    import tifffile

    sx, sy = (float(v) for v in msi.uns["spatialfuse"]["pixel_size_um"])
    # MSI: the TIC on the acquisition grid; pixel (x, y) is centred at ((x − ½)·sx, (y − ½)·sy).
    x = np.asarray(msi.obs["imzml_x"], dtype=np.int64)
    y = np.asarray(msi.obs["imzml_y"], dtype=np.int64)
    x0, y0 = int(x.min()), int(y.min())
    tic = np.zeros((int(y.max()) - y0 + 1, int(x.max()) - x0 + 1), np.float32)
    tic[y - y0, x - x0] = np.asarray(msi.obs["tic"], dtype=np.float32)
    moving = sitk.GetImageFromArray(tic)
    moving.SetSpacing((sx, sy))
    moving.SetOrigin(((x0 - 0.5) * sx, (y0 - 0.5) * sy))

    # H&E: 1 − mean(RGB), block means of k × k pixels to about half an MSI pixel.
    rgb = tifffile.imread(he_path)
    grey = 1.0 - rgb[..., :3].mean(axis=2, dtype=np.float32) / 255.0
    k = max(1, round(min(sx, sy) / 2 / he_px))
    rows, cols = grey.shape[0] // k, grey.shape[1] // k
    grey = grey[: rows * k, : cols * k].reshape(rows, k, cols, k).mean(axis=(1, 3))
    fixed = sitk.GetImageFromArray(grey.astype(np.float32))
    fixed.SetSpacing((k * he_px, k * he_px))
    fixed.SetOrigin((0.5 * k * he_px, 0.5 * k * he_px))  # the H&E frame starts at its corner

    step = min(sx, sy)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step,
        minStep=1e-3 * step,
        numberOfIterations=300,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    try:
        out = method.Execute(fixed, moving)
    except RuntimeError as exc:  # e.g. "too many samples map outside moving image buffer"
        return None, str(exc).strip().splitlines()[-1][:200]
    if out.GetName() == "CompositeTransform":
        out = sitk.CompositeTransform(out).GetNthTransform(0)
    affine = sitk.AffineTransform(out)
    a = np.asarray(affine.GetMatrix(), dtype=np.float64).reshape(2, 2)
    c = np.asarray(affine.GetCenter(), dtype=np.float64)
    t = np.asarray(affine.GetTranslation(), dtype=np.float64)
    # ITK: moving = A (fixed − c) + c + t, so fixed = A⁻¹ (moving − c − t) + c.
    inv = np.linalg.inv(a)

    def moving_to_fixed(points):
        p = np.asarray(points, dtype=np.float64)
        return (p - c - t) @ inv.T + c

    return moving_to_fixed, None


def summarise(tres_px, seconds, *, pixel=None, tres_um=None) -> dict:
    """Success rate, median and 90th percentile of TRE (px and µm), median seconds."""
    px = np.asarray(tres_px, dtype=np.float64)
    out = {
        "n": int(px.size),
        "successes": int((px < SUCCESS_PX).sum()),
        "success_rate": float((px < SUCCESS_PX).mean()) if px.size else 0.0,
        "median_tre_px": float(np.median(px)) if px.size else math.nan,
        "p90_tre_px": float(np.percentile(px, 90, method="linear")) if px.size else math.nan,
        "max_tre_px": float(px.max()) if px.size else math.nan,
        "median_s": statistics.median(seconds) if seconds else math.nan,
    }
    if tres_um is not None:
        um = np.asarray(tres_um, dtype=np.float64)
        out["median_tre_um"] = float(np.median(um))
        out["p90_tre_um"] = float(np.percentile(um, 90, method="linear"))
    return out


def fmt(v: float, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf"
    if abs(v) >= 1000:
        return f"{v:.3g}"
    return f"{v:.{digits}f}"


def verdict(passed) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[passed]


# -------------------------------------------------------------------------------------------------
# 1. MSI ↔ H&E affine sweep
# -------------------------------------------------------------------------------------------------


def residual_split(found, truth, points, pixel: float) -> dict:
    """Where a linear registration's error lies, in MSI pixels in the MSI frame.

    ``offset_px``: the mean residual (a translation); ``tre_px_without_offset``: the median
    residual once that is removed (errors of rotation, scale and shear);
    ``linear_error``: ``truth_A⁻¹ · found_A − I`` (relative scale errors on the diagonal).
    """
    a_true = truth.matrix[:2, :2] if hasattr(truth, "matrix") else None
    if a_true is None or not hasattr(found, "matrix"):
        return {}
    inv = np.linalg.inv(a_true)
    res = (found(points) - truth.apply(points)) @ inv.T / pixel
    offset = res.mean(axis=0)
    return {
        "offset_px": offset.tolist(),
        "tre_px_without_offset": float(np.median(np.linalg.norm(res - offset, axis=1))),
        "linear_error": (inv @ found.matrix[:2, :2] - np.eye(2)).ravel().tolist(),
    }


def part_affine(cases: list[Case], reg_seeds, qc_dir: Path | None) -> dict:
    import spatialfuse as sf

    records = []
    for case in cases:
        msi = sf.io.read_imzml(case.msi)
        he = sf.io.read_histology(case.he)
        points = np.asarray(msi.obsm["spatial"], dtype=np.float64)
        affine = case.params["msi_affine"]
        record = {
            "seed": case.seed,
            "msi_pixel_um": case.pixel,
            "msi_grid_shape": case.params["msi_grid_shape"],
            "rotation_deg": affine["rotation_deg"],
            "mirror": affine["mirror"],
            "scale": affine["scale"],
            "shear": affine["shear"],
            "spatialfuse": [],
        }
        for reg_seed in reg_seeds:
            result, seconds, messages = run_register(msi, he, model="affine", seed=reg_seed)
            um = tre_um(result.transform, case.msi_to_he, points)
            run = {
                "reg_seed": reg_seed,
                "tre_um": um,
                "tre_px": um / case.pixel,
                "ok": bool(result.ok),
                "failures": list(result.failures),
                "warnings": messages,
                "mirror_found": bool(result.transform.is_mirror),
                "seconds": seconds,
                "metrics": {k: float(v) for k, v in result.metrics.items()},
                "candidates": [
                    {k: (v.item() if isinstance(v, np.generic) else v) for k, v in c.items()}
                    for c in result.candidates
                ],
                **residual_split(result.transform, case.msi_to_he, points, case.pixel),
            }
            if qc_dir is not None and (not run["tre_px"] < SUCCESS_PX or not result.ok):
                run["qc_png"] = save_qc(
                    result,
                    qc_dir / f"affine_seed{case.seed}_reg{reg_seed}.png",
                    f"seed {case.seed}, sampling seed {reg_seed}: TRE {run['tre_px']:.2f} MSI px, "
                    f"ok={result.ok}",
                )
            record["spatialfuse"].append(run)
        t0 = time.perf_counter()
        base, error = sitk_baseline(msi, case.he, case.he_px, reg_seeds[0])
        base_s = time.perf_counter() - t0
        base_um = tre_um(base, case.msi_to_he, points)
        record["sitk"] = {
            "reg_seed": reg_seeds[0],
            "tre_um": base_um,
            "tre_px": base_um / case.pixel,
            "error": error,
            "seconds": base_s,
        }
        records.append(record)
        ours_text = "  ".join(
            f"{r['tre_px']:6.3f} px{'' if r['ok'] else ' NOT ok'} {r['seconds']:4.1f} s"
            for r in record["spatialfuse"]
        )
        print(
            f"  seed {case.seed:3d}: MSI {case.pixel:5.1f} µm, rot {affine['rotation_deg']:6.1f}°"
            f"{' mirror' if affine['mirror'] else '       '}  spatialfuse TRE {ours_text} | "
            f"SimpleITK TRE {fmt(base_um / case.pixel, 3):>7} px {base_s:4.1f} s"
            + (f" ({error})" if error else ""),
            flush=True,
        )
    out = {"records": records, "reg_seeds": list(reg_seeds)}
    runs_by_seed = {
        str(rs): [r["spatialfuse"][k] for r in records] for k, rs in enumerate(reg_seeds)
    }
    runs_by_seed["all"] = [run for r in records for run in r["spatialfuse"]]
    for key, runs in runs_by_seed.items():
        s = summarise(
            [r["tre_px"] for r in runs],
            [r["seconds"] for r in runs],
            tres_um=[r["tre_um"] for r in runs],
        )
        s["ok_false"] = sum(not r["ok"] for r in runs)
        s["failed_but_ok"] = sum(r["ok"] and not r["tre_px"] < SUCCESS_PX for r in runs)
        s["succeeded_but_not_ok"] = sum((not r["ok"]) and r["tre_px"] < SUCCESS_PX for r in runs)
        s["mirror_wrong"] = sum(
            run["mirror_found"] != rec["mirror"]
            for rec in records
            for run in rec["spatialfuse"]
            if key in ("all", str(run["reg_seed"]))
        )
        s["median_tre_px_without_offset"] = float(
            np.median([r.get("tre_px_without_offset", math.nan) for r in runs])
        )
        out["spatialfuse" if key == "all" else f"spatialfuse_seed{key}"] = s
    base = summarise(
        [r["sitk"]["tre_px"] for r in records],
        [r["sitk"]["seconds"] for r in records],
        tres_um=[r["sitk"]["tre_um"] for r in records],
    )
    base["errors"] = sum(r["sitk"]["error"] is not None for r in records)
    out["sitk"] = base
    return out


def check_determinism(case: Case, reg_seed: int, *, with_zero: bool = True) -> dict:
    """Does ``register`` give the same transform twice, with ``seed=reg_seed`` and ``seed=0``?

    register() documents "the same inputs and seed give the same result"; SimpleITK reads a
    sampling seed of 0 as "seed from the wall clock" (``sitkWallClock == 0``), so ``seed=0`` (the
    default) is checked too, unless ``with_zero`` is false (``--quick``).
    """
    import spatialfuse as sf

    msi = sf.io.read_imzml(case.msi)
    he = sf.io.read_histology(case.he)
    points = np.asarray(msi.obsm["spatial"], dtype=np.float64)
    out = {"case_seed": case.seed}
    for seed in (reg_seed, 0) if with_zero else (reg_seed,):
        first, _, _ = run_register(msi, he, model="affine", seed=seed)
        again, _, _ = run_register(msi, he, model="affine", seed=seed)
        diff = float(np.abs(first.transform(points) - again.transform(points)).max())
        out[f"seed{seed}"] = {"max_difference_um": diff, "identical": diff == 0.0}
    return out


# -------------------------------------------------------------------------------------------------
# 2. nonrigid
# -------------------------------------------------------------------------------------------------


def part_nonrigid(cases: list[Case], reg_seed: int, qc_dir: Path | None) -> dict:
    import spatialfuse as sf

    records = []
    for case in cases:
        msi = sf.io.read_imzml(case.msi)
        he = sf.io.read_histology(case.he)
        points = np.asarray(msi.obsm["spatial"], dtype=np.float64)
        tissue = on_tissue(case, points)
        record = {
            "seed": case.seed,
            "msi_pixel_um": case.pixel,
            "on_tissue_fraction": float(tissue.mean()),
            "warp_um": case.params["msi_warp_um"],
            "rotation_deg": case.params["msi_affine"]["rotation_deg"],
            "mirror": case.params["msi_affine"]["mirror"],
        }
        for model in ("bspline", "affine"):
            result, seconds, messages = run_register(msi, he, model=model, seed=reg_seed)
            um = tre_um(result.transform, case.msi_to_he, points)
            record[model] = {
                "tre_um": um,
                "tre_px": um / case.pixel,
                "tre_px_tissue": tre_um(result.transform, case.msi_to_he, points[tissue])
                / case.pixel,
                "ok": bool(result.ok),
                "failures": list(result.failures),
                "warnings": messages,
                "seconds": seconds,
                "min_jacobian": result.metrics.get("min_jacobian"),
            }
            if qc_dir is not None and (not um / case.pixel < SUCCESS_PX or not result.ok):
                record[model]["qc_png"] = save_qc(
                    result,
                    qc_dir / f"nonrigid_{model}_seed{case.seed}.png",
                    f"seed {case.seed} {model}: TRE {um / case.pixel:.2f} MSI px",
                )
        records.append(record)
        print(
            f"  seed {case.seed:3d}: MSI {case.pixel:5.1f} µm, warp {record['warp_um']:5.1f} µm  "
            f"bspline TRE {record['bspline']['tre_px']:6.3f} px ok={record['bspline']['ok']!s:5} "
            f"{record['bspline']['seconds']:5.1f} s | affine TRE "
            f"{record['affine']['tre_px']:6.3f} px {record['affine']['seconds']:5.1f} s",
            flush=True,
        )
    out = {"records": records}
    for model in ("bspline", "affine"):
        out[model] = summarise(
            [r[model]["tre_px"] for r in records],
            [r[model]["seconds"] for r in records],
            tres_um=[r[model]["tre_um"] for r in records],
        )
        out[model]["median_tre_px_tissue"] = float(
            np.median([r[model]["tre_px_tissue"] for r in records])
        )
        out[model]["ok_false"] = sum(not r[model]["ok"] for r in records)
        out[model]["failed_but_ok"] = sum(
            r[model]["ok"] and not r[model]["tre_px"] < SUCCESS_PX for r in records
        )
    return out


# -------------------------------------------------------------------------------------------------
# 3. H&E ↔ serial-section H&E
# -------------------------------------------------------------------------------------------------


def serial_points(case: Case) -> np.ndarray:
    """The in-tissue Visium spot centres, µm in the serial H&E frame (= the Visium image frame)."""
    import spatialfuse as sf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visium = sf.io.read_visium(case.visium, load_images=False)
    inside = np.asarray(visium.obs["in_tissue"]).astype(bool)
    return np.asarray(visium.obsm["spatial_um"], dtype=np.float64)[inside]


def part_serial(
    cases: list[Case], reg_seed: int, qc_dir: Path | None, *, working_um: float | None
) -> dict:
    import spatialfuse as sf

    records = []
    for case in cases:
        he = sf.io.read_histology(case.he)
        serial = sf.io.read_histology(case.he_serial)
        points = serial_points(case)
        record = {
            "seed": case.seed,
            "n_points": len(points),
            "rotation_deg": case.params["visium_affine"]["rotation_deg"],
            "serial_warp_um": case.params["visium_warp_um"],
        }
        for model in ("affine", "bspline"):
            result, seconds, messages = run_register(
                serial, he, model=model, seed=reg_seed, working_pixel_size_um=working_um
            )
            um = tre_um(result.transform, case.he_serial_to_he, points)
            record[model] = {
                "tre_um": um,
                "ok": bool(result.ok),
                "failures": list(result.failures),
                "warnings": messages,
                "seconds": seconds,
                "working_pixel_size_um": result.metrics.get("working_pixel_size_um"),
                "min_jacobian": result.metrics.get("min_jacobian"),
            }
            if qc_dir is not None and (um > 2 * TARGETS["serial_median_tre_um"] or not result.ok):
                record[model]["qc_png"] = save_qc(
                    result,
                    qc_dir / f"serial_{model}_seed{case.seed}.png",
                    f"seed {case.seed} serial {model}: TRE {um:.1f} µm",
                )
        records.append(record)
        print(
            f"  seed {case.seed:3d}: {len(points)} spots, rot {record['rotation_deg']:6.1f}°  "
            f"affine TRE {record['affine']['tre_um']:7.2f} µm {record['affine']['seconds']:5.1f} s"
            f" | bspline TRE {record['bspline']['tre_um']:7.2f} µm "
            f"ok={record['bspline']['ok']!s:5} {record['bspline']['seconds']:5.1f} s",
            flush=True,
        )
    out = {"records": records}
    for model in ("affine", "bspline"):
        um = np.asarray([r[model]["tre_um"] for r in records])
        out[model] = {
            "n": int(um.size),
            "median_tre_um": float(np.median(um)),
            "p90_tre_um": float(np.percentile(um, 90)),
            "max_tre_um": float(um.max()),
            "ok_false": sum(not r[model]["ok"] for r in records),
            "median_s": statistics.median(r[model]["seconds"] for r in records),
        }
    return out


# -------------------------------------------------------------------------------------------------
# 4. speed
# -------------------------------------------------------------------------------------------------


def part_speed(small: Case, big: Case, repeat: int, reg_seed: int) -> dict:
    import spatialfuse as sf

    out = {}
    for name, case in (("small", small), ("big", big)):
        msi = sf.io.read_imzml(case.msi)
        points = np.asarray(msi.obsm["spatial"], dtype=np.float64)
        last = {}

        def call(case=case, msi=msi, last=last):
            # The whole register call, building both registration images: the H&E is opened
            # lazily (header only) and downsampled from the file inside register().
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                last["result"] = sf.reg.register(
                    msi, sf.io.read_histology(case.he), model="affine", seed=reg_seed
                )
            return None

        he_image = sf.io.read_histology(case.he)
        he_shape, he_levels = he_image.shape, len(he_image.level_shapes)
        print(
            f"  {name}: MSI {case.params['msi_grid_shape'][1]}×{case.params['msi_grid_shape'][0]}"
            f" px of {case.pixel:g} µm vs H&E {he_shape[1]}×{he_shape[0]} px of {case.he_px:g} µm"
            f" ({h.fmt_bytes(case.he.stat().st_size)} {he_image.format}, {he_levels} level(s))",
            flush=True,
        )
        timing = h.time_call(call, repeat)
        result = last["result"]
        um = tre_um(result.transform, case.msi_to_he, points)
        out[name] = {
            "msi_shape_xy": [case.params["msi_grid_shape"][1], case.params["msi_grid_shape"][0]],
            "he_shape_xy": [he_shape[1], he_shape[0]],
            "he_pixel_um": case.he_px,
            "he_bytes": case.he.stat().st_size,
            "he_levels": he_levels,
            "timing": timing.as_dict(),
            "tre_px": um / case.pixel,
            "ok": bool(result.ok),
        }
        print(
            f"    {h.fmt_timing(timing)} (warm-up {h.fmt_seconds(timing.warmup)}), TRE "
            f"{um / case.pixel:.3f} MSI px, ok={result.ok}",
            flush=True,
        )
    out["ratio"] = out["big"]["timing"]["median_s"] / out["small"]["timing"]["median_s"]
    out["ratio_of_mins"] = out["big"]["timing"]["min_s"] / out["small"]["timing"]["min_s"]
    return out


# -------------------------------------------------------------------------------------------------
# tables
# -------------------------------------------------------------------------------------------------


def table_affine(res: dict) -> str:
    rows = []
    entries = [
        (f"spatialfuse affine, sampling seed {rs}", res[f"spatialfuse_seed{rs}"])
        for rs in res["reg_seeds"]
    ]
    if len(res["reg_seeds"]) > 1:
        entries.append(("spatialfuse affine, all runs", res["spatialfuse"]))
    entries.append((f"SimpleITK baseline, seed {res['reg_seeds'][0]}", res["sitk"]))
    for label, s in entries:
        rows.append(
            [
                label,
                f"{s['successes']}/{s['n']} ({100 * s['success_rate']:.0f} %)",
                fmt(s["median_tre_um"], 1),
                fmt(s["median_tre_px"], 3),
                fmt(s["p90_tre_um"], 1),
                fmt(s["p90_tre_px"], 3),
                str(s["ok_false"]) if "ok_false" in s else "-",
                str(s["failed_but_ok"]) if "failed_but_ok" in s else "-",
                h.fmt_seconds(s["median_s"]),
            ]
        )
    return h.render_table(
        [
            "method",
            "success (TRE < 1 px)",
            "median TRE µm",
            "median px",
            "p90 TRE µm",
            "p90 px",
            "ok=False",
            "FAILED but ok",
            "median time",
        ],
        rows,
    )


def table_affine_seeds(res: dict) -> str:
    rows = []
    for r in res["records"]:
        b = r["sitk"]
        ours = []
        for o in r["spatialfuse"]:
            ours += [fmt(o["tre_px"], 3) + ("" if o["ok"] else " (NOT ok)"), f"{o['seconds']:.1f}"]
        rows.append(
            [
                str(r["seed"]),
                f"{r['msi_pixel_um']:g}",
                "×".join(str(v) for v in r["msi_grid_shape"][::-1]),
                f"{r['rotation_deg']:.0f}",
                "yes" if r["mirror"] else "no",
                f"{r['scale'][0]:.2f}/{r['scale'][1]:.2f}",
                f"{r['shear']:+.3f}",
                *ours,
                "error" if b["error"] else fmt(b["tre_px"], 3),
                f"{b['seconds']:.1f}",
            ]
        )
    ours_header = []
    for rs in res["reg_seeds"]:
        ours_header += [f"sf TRE px (seed {rs})", "s"]
    return h.render_table(
        [
            "seed",
            "MSI µm",
            "MSI px",
            "rot °",
            "mirror",
            "scale x/y",
            "shear",
            *ours_header,
            "sitk TRE px",
            "s",
        ],
        rows,
    )


def table_nonrigid(res: dict) -> str:
    rows = []
    for model, target in (("bspline", "median ≤ 0.3 px"), ("affine", "(comparison)")):
        s = res[model]
        rows.append(
            [
                f"spatialfuse register({model})",
                f"{s['successes']}/{s['n']} ({100 * s['success_rate']:.0f} %)",
                fmt(s["median_tre_px"], 3),
                fmt(s["p90_tre_px"], 3),
                fmt(s["median_tre_um"], 1),
                fmt(s["median_tre_px_tissue"], 3),
                f"{s['ok_false']}",
                h.fmt_seconds(s["median_s"]),
                target,
            ]
        )
    return h.render_table(
        [
            "method",
            "success (TRE < 1 px)",
            "median TRE px",
            "p90 px",
            "median µm",
            "on tissue: median px",
            "ok=False",
            "median time",
            "target",
        ],
        rows,
    )


def table_serial(res: dict) -> str:
    rows = []
    for model in ("affine", "bspline"):
        s = res[model]
        rows.append(
            [
                f"spatialfuse register({model})",
                str(s["n"]),
                fmt(s["median_tre_um"], 2),
                fmt(s["p90_tre_um"], 2),
                fmt(s["max_tre_um"], 2),
                str(s["ok_false"]),
                h.fmt_seconds(s["median_s"]),
                "median ≤ 10 µm",
                verdict(s["median_tre_um"] <= TARGETS["serial_median_tre_um"]),
            ]
        )
    return h.render_table(
        [
            "method",
            "seeds",
            "median TRE µm",
            "p90 µm",
            "worst µm",
            "ok=False",
            "median time",
            "target",
            "pass/fail",
        ],
        rows,
    )


def table_speed(res: dict) -> str:
    rows = []
    for name, target in (("small", "≤ 5 s"), ("big", "≤ 1.5× small")):
        s = res[name]
        t = s["timing"]
        if name == "small":
            passed = t["median_s"] <= TARGETS["speed_small_s"]
            ratio = "1"
        else:
            passed = res["ratio"] <= TARGETS["speed_big_ratio"]
            ratio = f"{res['ratio']:.2f}x"
        rows.append(
            [
                f"MSI {s['msi_shape_xy'][0]}×{s['msi_shape_xy'][1]} vs H&E "
                f"{s['he_shape_xy'][0]}×{s['he_shape_xy'][1]}",
                f"{s['he_bytes'] / 2**20:.0f} MiB",
                h.fmt_timing(h.Timing(t["times_s"], t["warmup_s"])),
                ratio,
                fmt(s["tre_px"], 3),
                target,
                verdict(passed),
            ]
        )
    return h.render_table(
        [
            "register(affine), whole call",
            "H&E file",
            "time",
            "vs small",
            "TRE px",
            "target",
            "pass/fail",
        ],
        rows,
    )


# -------------------------------------------------------------------------------------------------
# main
# -------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    size = SIZES["quick" if args.quick else "full"]
    folder = h.data_dir(args.data_dir)
    root = folder / "registration"
    root.mkdir(parents=True, exist_ok=True)
    qc_dir = None if args.no_qc else root / ("qc-quick" if args.quick else "qc")
    if qc_dir is not None:
        shutil.rmtree(qc_dir, ignore_errors=True)
    json_path = args.json or folder / (
        "results-registration-quick.json" if args.quick else "results-registration.json"
    )
    n_affine = args.seeds or size["seeds_affine"]
    n_nonrigid = args.seeds_nonrigid or size["seeds_nonrigid"]
    n_serial = args.seeds_serial or size["seeds_serial"]
    reg_seeds = tuple(args.reg_seeds or size["reg_seeds"])
    common = {"tissue_size_um": tuple(size["tissue_um"]), "he_pixel_size_um": size["he_px"]}

    print("generating / reusing inputs in", root, flush=True)
    generation_s = 0.0
    affine_cases, nonrigid_cases = [], []
    for i in range(max(n_affine, n_serial)):
        seed = AFFINE_SEED0 + i
        case = ensure_trio(
            root,
            seed=seed,
            msi_pixel_size_um=msi_pixel_for(seed, size["msi_px"]),
            serial_section=True,
            write_he_serial=i < n_serial,
            **common,
        )
        generation_s += case.generation_s
        affine_cases.append(case)
    for i in range(n_nonrigid):
        seed = NONRIGID_SEED0 + i
        px = msi_pixel_for(seed, size["msi_px"])
        case = ensure_trio(
            root,
            seed=seed,
            msi_pixel_size_um=px,
            warp_um=px,
            serial_section=False,
            write_he_serial=False,
            **common,
        )
        generation_s += case.generation_s
        nonrigid_cases.append(case)
    sp = size["speed"]
    speed_cases = []
    for factor in (1, sp["big"]):
        he_px = sp["he_px"] / factor
        case = ensure_trio(
            root,
            seed=SPEED_SEED,
            msi_pixel_size_um=sp["msi_px"],
            tissue_size_um=tuple(sp["tissue_um"]),
            he_pixel_size_um=he_px,
            serial_section=False,
            write_he_serial=False,
            **SPEED_AFFINE,
        )
        generation_s += case.generation_s
        if sp["he_shape_xy"] is not None:
            shape = (sp["he_shape_xy"][0] * factor, sp["he_shape_xy"][1] * factor)
            case = padded_he(case, shape)
        speed_cases.append(case)
    print(f"  ({generation_s:.1f} s of generation, not part of any measurement)", flush=True)

    print(
        f"\n1. MSI ↔ H&E affine sweep: {n_affine} seeds (MSI pixel drawn per seed in "
        f"{size['msi_px'][0]:g}–{size['msi_px'][1]:g} µm), sampling seeds "
        f"{', '.join(map(str, reg_seeds))}",
        flush=True,
    )
    affine = part_affine(affine_cases[:n_affine], reg_seeds, qc_dir)
    print("  determinism: the first case registered twice per seed", flush=True)
    determinism = check_determinism(affine_cases[0], reg_seeds[0], with_zero=not args.quick)
    print(
        f"\n2. MSI ↔ H&E nonrigid: {n_nonrigid} seeds, warp of one MSI pixel, sampling seed "
        f"{reg_seeds[0]}",
        flush=True,
    )
    nonrigid = part_nonrigid(nonrigid_cases, reg_seeds[0], qc_dir)
    print(
        f"\n3. H&E ↔ serial-section H&E: {n_serial} seeds, sampling seed {reg_seeds[0]}",
        flush=True,
    )
    serial = part_serial(
        affine_cases[:n_serial], reg_seeds[0], qc_dir, working_um=size["serial_working_um"]
    )
    print(f"\n4. speed: median of {size['speed_repeat']} after one warm-up", flush=True)
    speed = part_speed(speed_cases[0], speed_cases[1], size["speed_repeat"], reg_seeds[0])
    total_s = time.perf_counter() - started

    ours = affine["spatialfuse"]
    targets = {
        "affine_success_rate": ours["success_rate"] >= TARGETS["affine_success_rate"],
        "affine_median_tre_px": ours["median_tre_px"] <= TARGETS["affine_median_tre_px"],
        "nonrigid_median_tre_px": nonrigid["bspline"]["median_tre_px"]
        <= TARGETS["nonrigid_median_tre_px"],
        "serial_median_tre_um": min(
            serial["affine"]["median_tre_um"], serial["bspline"]["median_tre_um"]
        )
        <= TARGETS["serial_median_tre_um"],
        "speed_small_s": speed["small"]["timing"]["median_s"] <= TARGETS["speed_small_s"],
        "speed_big_ratio": speed["ratio"] <= TARGETS["speed_big_ratio"],
    }
    false_ok = ours["failed_but_ok"] + sum(
        nonrigid[m]["failed_but_ok"] for m in ("bspline", "affine")
    )

    print("\n" + "=" * 96)
    print(f"1. MSI ↔ H&E affine sweep, {n_affine} seeds (TRE over every MSI pixel centre)\n")
    print(table_affine(affine))
    print()
    print(table_affine_seeds(affine))
    print(
        f"\nspatialfuse: {ours['ok_false']} of {ours['n']} results ok=False "
        f"({ours['succeeded_but_not_ok']} of them succeeded); mirror wrong on "
        f"{ours['mirror_wrong']}; SimpleITK raised on {affine['sitk']['errors']}.\n"
        f"spatialfuse median TRE once each run's mean offset is removed: "
        f"{ours['median_tre_px_without_offset']:.3f} px (of {ours['median_tre_px']:.3f}): the "
        "rest is rotation/scale/shear error."
    )
    banner = (
        f"FAILED REGISTRATIONS (TRE ≥ {SUCCESS_PX:g} MSI px) REPORTED ok=True: "
        f"{ours['failed_but_ok']} of {ours['n']} (must be 0) -> "
        + ("PASS" if ours["failed_but_ok"] == 0 else "FAIL")
    )
    print("*" * len(banner) + "\n" + banner + "\n" + "*" * len(banner))
    for key, d in determinism.items():
        if key.startswith("seed"):
            note = (
                " (SimpleITK reads sampling seed 0 as 'use the wall clock')"
                if key == "seed0"
                else ""
            )
            print(
                f"determinism, register(seed={key[4:]}) twice on seed {determinism['case_seed']}: "
                + (
                    "identical"
                    if d["identical"]
                    else f"DIFFERENT by up to {d['max_difference_um']:.2f} µm"
                )
                + note
            )
    print(
        f"targets: success on every seed {verdict(targets['affine_success_rate'])}, "
        f"median TRE ≤ 0.2 px {verdict(targets['affine_median_tre_px'])}"
    )

    print(
        f"\n2. MSI ↔ H&E nonrigid, {n_nonrigid} seeds, warp up to one MSI pixel "
        "(TRE over every MSI pixel centre)\n"
    )
    print(table_nonrigid(nonrigid))
    print(
        f"failed registrations reported ok=True: bspline {nonrigid['bspline']['failed_but_ok']}, "
        f"affine {nonrigid['affine']['failed_but_ok']} (must be 0); "
        f"target median ≤ 0.3 px {verdict(targets['nonrigid_median_tre_px'])}"
    )

    print(
        f"\n3. H&E ↔ serial-section H&E, {n_serial} seeds "
        "(TRE over the in-tissue Visium spots of the serial section)\n"
    )
    print(table_serial(serial))

    print("\n4. speed: one MSI ↔ H&E affine registration, the whole register() call\n")
    print(table_speed(speed))
    print()
    for paragraph in (
        "TRE: per registration, the median over the points of |found(p) − truth(p)|; px = MSI "
        f"pixels; success = TRE < {SUCCESS_PX:g} MSI px. Tables give the median and 90th "
        "percentile of the per-seed TREs.",
        "SimpleITK baseline: " + "; ".join(f"{k} {v}" for k, v in BASELINE.items()) + ". Its "
        "time includes building both images (reading the H&E TIFF whole).",
        "spatialfuse time: the whole register() call on the read MSI AnnData and the lazily "
        "opened HistologyImage (images built inside). ITK runs single-threaded inside "
        "spatialfuse, multi-threaded (the default) in the baseline.",
        "speed: the inputs sit in the OS page cache (the warm-up call read them). Only compare "
        "the ratio, never absolute seconds across runs or machines.",
    ):
        print(textwrap.fill(paragraph, width=96))
    if args.quick:
        print("\n--quick: 2 seeds and tiny inputs; these numbers are MEANINGLESS for the targets.")
    missed = [name for name, ok in targets.items() if not ok]
    print(f"\nfailed registrations reported ok=True, all parts: {false_ok} (must be 0)")
    if missed and not args.quick:
        print("targets missed: " + ", ".join(missed))
    elif not args.quick:
        print("all targets met")
    print(f"total run time {total_s:.1f} s (input generation {generation_s:.1f} s)")

    h.write_json(
        json_path,
        {
            "quick": args.quick,
            "numbers_meaningful": not args.quick,
            "reg_seeds": list(reg_seeds),
            "argv": sys.argv[1:] if argv is None else list(argv),
            "machine": h.machine_info(),
            "sizes": size,
            "seeds": {"affine": n_affine, "nonrigid": n_nonrigid, "serial": n_serial},
            "msi_pixel_rule": f"uniform in [{size['msi_px'][0]:g}, {size['msi_px'][1]:g}] µm per "
            "seed, rounded to 0.5 µm",
            "success_px": SUCCESS_PX,
            "targets": TARGETS,
            "targets_passed": targets,
            "targets_missed": missed,
            "failed_but_ok": false_ok,
            "baseline": BASELINE,
            "affine": affine,
            "determinism": determinism,
            "nonrigid": nonrigid,
            "serial": serial,
            "speed": speed,
            "generation_s": generation_s,
            "total_s": total_s,
        },
    )
    print("results written to", json_path)
    deterministic = determinism[f"seed{reg_seeds[0]}"]["identical"]
    if (false_ok or not deterministic) and not args.quick:
        return 1
    if args.strict and missed and not args.quick:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
