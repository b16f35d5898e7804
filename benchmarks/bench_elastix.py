"""Benchmark sf.reg.register against itk-elastix on MSI → H&E, side by side in one process.

Usage::

    python benchmarks/bench_elastix.py [--quick] [--seeds N] [--json OUT] [--data-dir DIR]

The inputs are the affine sweep of bench_registration.py (the same synthetic trios: random
rotation, mirror, anisotropic scale and shear per seed; cached in DATA_DIR/registration and shared
with it). Each seed's MSI is registered to its H&E by

* ``sf.reg.register(msi, he, model="affine")``;
* itk-elastix as a careful user would run it: the H&E downsampled so that its long side is 1000
  pixels, the MSI TIC as the moving image, both with their µm spacing and origin, elastix's
  default affine parameter map (AdvancedMattesMutualInformation, 4 resolutions); once as is and
  once with moments initialisation (``AutomaticTransformInitialization`` true, centre of gravity).

elastix's result (a fixed → moving map) is converted to a moving µm → fixed µm
:class:`spatialfuse.reg.AffineTransform`; a self-check on a synthetic pair with a known transform
verifies that conversion before the sweep (exit 1 when it fails). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import bench_registration as br

#: Long side of the H&E working image handed to elastix (pixels); never upsampled.
WORKING_LONG_SIDE = 1000
#: register(seed=...) of our side: the first sampling seed of bench_registration.py.
REG_SEED = 1
#: The conversion self-check passes when elastix recovers the known transform this well.
SELF_CHECK_TRE_PX = 0.1
#: ... and our resampling through the converted transform matches elastix's result image.
SELF_CHECK_IMAGE_RTOL = 1e-3

VARIANTS = {
    "elastix_default": {},
    "elastix_moments": {
        "AutomaticTransformInitialization": "true",
        "AutomaticTransformInitializationMethod": "CenterOfGravity",
    },
}
LABELS = {
    "spatialfuse": f"spatialfuse register(model='affine', seed={REG_SEED})",
    "elastix_default": "itk-elastix, default affine map",
    "elastix_moments": "itk-elastix, default affine map + moments init",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, small inputs (smoke run)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of the sweep (default 20)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: DATA_DIR/results-elastix[-quick].json)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"inputs go to DATA_DIR/registration (default: ${h.DATA_DIR_ENV} or benchmarks/_data)",
    )
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


# -------------------------------------------------------------------------------------------------
# images with their µm geometry, and elastix's transform in spatialfuse's frames
# -------------------------------------------------------------------------------------------------


def tic_grid(msi) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """The MSI TIC on its acquisition grid: ``(array, spacing, origin)``, µm, (x, y) order.

    imzML pixel ``(x, y)`` is centred at ``((x − ½)·sx, (y − ½)·sy)`` (docs/coordinates.md).
    """
    sx, sy = (float(v) for v in msi.uns["spatialfuse"]["pixel_size_um"])
    x = np.asarray(msi.obs["imzml_x"], dtype=np.int64)
    y = np.asarray(msi.obs["imzml_y"], dtype=np.int64)
    x0, y0 = int(x.min()), int(y.min())
    tic = np.zeros((int(y.max()) - y0 + 1, int(x.max()) - x0 + 1), np.float32)
    tic[y - y0, x - x0] = np.asarray(msi.obs["tic"], dtype=np.float32)
    return tic, (sx, sy), ((x0 - 0.5) * sx, (y0 - 0.5) * sy)


def he_working_grid(
    he_path: Path, he_px: float, long_side: int = WORKING_LONG_SIDE
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """``1 − mean(RGB)/255`` resized (anti-aliased) so its long side is ``long_side`` pixels.

    skimage's ``resize`` keeps the image's outer edges: output pixel ``j`` of ``n`` covers the
    input span ``[j, j + 1)·N/n``, so its centre lies at ``(j + ½)·s`` µm with ``s = N·he_px/n``.
    """
    import tifffile
    from skimage.transform import resize

    rgb = tifffile.imread(he_path)
    grey = 1.0 - rgb[..., :3].mean(axis=2, dtype=np.float32) / 255.0
    rows, cols = grey.shape
    factor = max(rows, cols) / long_side
    if factor > 1:
        shape = (max(1, round(rows / factor)), max(1, round(cols / factor)))
        grey = resize(grey, shape, order=1, anti_aliasing=True, preserve_range=True)
    spacing = (cols * he_px / grey.shape[1], rows * he_px / grey.shape[0])
    return grey.astype(np.float32), spacing, (spacing[0] / 2, spacing[1] / 2)


def itk_image(array: np.ndarray, spacing, origin):
    import itk

    image = itk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    return image


def parameter_object(overrides: dict[str, str] | None = None, *, final_linear: bool = False):
    """elastix's default affine parameter map, with ``overrides`` applied."""
    import itk

    parameters = itk.ParameterObject.New()
    default = parameters.GetDefaultParameterMap("affine")
    for key, value in (overrides or {}).items():
        default[key] = (value,)
    if final_linear:  # only for the self-check: a result image that is easy to reproduce
        default["ResampleInterpolator"] = ("FinalLinearInterpolator",)
    parameters.AddParameterMap(default)
    return parameters


def elastix_to_affine(transform_map) -> object:
    """elastix's 2-D affine (fixed µm → moving µm) as a moving µm → fixed µm AffineTransform.

    elastix: ``moving = A (fixed − c) + c + t`` with ``TransformParameters = a00 a01 a10 a11 tx
    ty`` (row-major A) and ``c = CenterOfRotationPoint``, in the images' physical coordinates.
    """
    from spatialfuse.reg import AffineTransform

    name = transform_map["Transform"][0]
    if name != "AffineTransform":
        raise ValueError(f"expected an elastix AffineTransform, got {name!r}")
    initial = transform_map.get("InitialTransformParameterFileName", ("NoInitialTransform",))[0]
    if initial != "NoInitialTransform":
        raise ValueError(f"elastix returned a chained initial transform ({initial!r})")
    p = np.asarray([float(v) for v in transform_map["TransformParameters"]], dtype=np.float64)
    c = np.asarray([float(v) for v in transform_map["CenterOfRotationPoint"]], dtype=np.float64)
    if p.size != 6 or c.size != 2:
        raise ValueError(f"not a 2-D affine: {p.size} parameters, centre {c}")
    a = p[:4].reshape(2, 2)
    fixed_to_moving = np.eye(3)
    fixed_to_moving[:2, :2] = a
    fixed_to_moving[:2, 2] = c + p[4:] - a @ c
    return AffineTransform(np.linalg.inv(fixed_to_moving))


def run_elastix(fixed, moving, overrides=None, *, final_linear: bool = False):
    """``(moving → fixed AffineTransform or None, error or None, result image or None)``."""
    import itk

    try:
        result_image, result = itk.elastix_registration_method(
            fixed,
            moving,
            parameter_object=parameter_object(overrides, final_linear=final_linear),
            log_to_console=False,
        )
    except RuntimeError as exc:  # e.g. "Too many samples map outside moving image buffer"
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return None, (lines[-1] if lines else type(exc).__name__)[:200], None
    return elastix_to_affine(result.GetParameterMap(0)), None, result_image


def elastix_baseline(msi, he_path: Path, he_px: float, overrides=None):
    """The whole baseline: build both images (reading the H&E TIFF), register, convert."""
    tic, sp, origin = tic_grid(msi)
    grey, he_sp, he_origin = he_working_grid(he_path, he_px)
    transform, error, _ = run_elastix(
        itk_image(grey, he_sp, he_origin), itk_image(tic, sp, origin), overrides
    )
    return transform, error, {"working_shape": list(grey.shape), "working_spacing_um": he_sp}


# -------------------------------------------------------------------------------------------------
# the conversion self-check: a synthetic pair with a known transform
# -------------------------------------------------------------------------------------------------


def _blobs(points: np.ndarray, rng_seed: int = 7) -> np.ndarray:
    """A smooth test pattern: 40 Gaussian blobs (σ 40-90 µm) over 1600 × 1200 µm."""
    rng = np.random.default_rng(rng_seed)
    centres = rng.uniform((200, 200), (1400, 1000), (40, 2))
    sigmas = rng.uniform(40, 90, 40)
    weights = rng.uniform(0.3, 1.0, 40)
    d2 = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    return (weights * np.exp(-d2 / (2 * sigmas**2))).sum(axis=1)


def _centres(shape, spacing, origin) -> np.ndarray:
    rows, cols = shape
    xx, yy = np.meshgrid(
        origin[0] + spacing[0] * np.arange(cols), origin[1] + spacing[1] * np.arange(rows)
    )
    return np.column_stack([xx.ravel(), yy.ravel()])


def self_check() -> dict:
    """elastix recovers a known moving → fixed affine through :func:`elastix_to_affine`.

    Fixed: the pattern at 4 × 3.5 µm pixels centred at ``(j + ½)·s`` (an H&E working image);
    moving: ``pattern(truth(q))`` on a 20 × 25 µm grid whose first pixel is imzML ``(3, 2)``, so
    a half-pixel or spacing mistake costs ≥ 10 µm = 0.5 moving pixel. Checks (1) the TRE over
    the moving pixel centres < 0.1 moving pixel; (2) elastix's (linear) result image equals the
    moving image resampled here through the converted transform.
    """
    from scipy.ndimage import map_coordinates

    from spatialfuse.reg import AffineTransform

    truth = AffineTransform.from_params(
        rotation_deg=3.0, scale=(1.02, 0.97), translation=(37.3, -21.7), center=(800.0, 600.0)
    )
    f_sp, f_origin = (4.0, 3.5), (2.0, 1.75)
    f_shape = (round(1200 / f_sp[1]), round(1600 / f_sp[0]))
    fixed = _blobs(_centres(f_shape, f_sp, f_origin)).reshape(f_shape)
    m_sp = (20.0, 25.0)
    m_origin = ((3 - 0.5) * m_sp[0], (2 - 0.5) * m_sp[1])
    m_shape = (46, 78)
    q = _centres(m_shape, m_sp, m_origin)
    moving = _blobs(truth(q)).reshape(m_shape)
    found, error, result_image = run_elastix(
        itk_image(fixed, f_sp, f_origin), itk_image(moving, m_sp, m_origin), final_linear=True
    )
    if found is None:
        return {"passed": False, "detail": f"elastix failed: {error}"}
    inside = _blobs(q, 7) > 0.05  # where the pattern has signal
    tre_px = float(np.median(np.linalg.norm(found(q[inside]) - truth(q[inside]), axis=1)) / 20.0)
    # Our resampling: fixed pixel centre p ↦ moving index (found⁻¹(p) − origin) / spacing.
    p = found.inverse()(_centres(f_shape, f_sp, f_origin))
    index = (p - np.asarray(m_origin)) / np.asarray(m_sp)
    ours = map_coordinates(moving, [index[:, 1], index[:, 0]], order=1, cval=0.0)
    theirs = np.asarray(result_image, dtype=np.float64).ravel()
    valid = (
        (index[:, 0] >= 0)
        & (index[:, 0] <= m_shape[1] - 1)
        & (index[:, 1] >= 0)
        & (index[:, 1] <= m_shape[0] - 1)
    )
    image_err = float(np.abs(ours[valid] - theirs[valid]).max() / np.ptp(moving))
    passed = tre_px < SELF_CHECK_TRE_PX and image_err < SELF_CHECK_IMAGE_RTOL
    return {
        "passed": bool(passed),
        "tre_moving_px": tre_px,
        "result_image_max_rel_difference": image_err,
        "detail": f"known affine recovered to {tre_px:.4f} moving px (< {SELF_CHECK_TRE_PX:g}); "
        f"elastix's result image vs ours through the converted transform: max difference "
        f"{image_err:.2e} of the range (< {SELF_CHECK_IMAGE_RTOL:g})",
    }


# -------------------------------------------------------------------------------------------------
# the sweep
# -------------------------------------------------------------------------------------------------


def sweep(cases: list[br.Case]) -> dict:
    import spatialfuse as sf

    records = []
    for case in cases:
        msi = sf.io.read_imzml(case.msi)
        points = np.asarray(msi.obsm["spatial"], dtype=np.float64)
        affine = case.params["msi_affine"]
        record = {
            "seed": case.seed,
            "msi_pixel_um": case.pixel,
            "rotation_deg": affine["rotation_deg"],
            "mirror": affine["mirror"],
            "scale": affine["scale"],
            "shear": affine["shear"],
        }
        result, seconds, _ = br.run_register(
            msi, sf.io.read_histology(case.he), model="affine", seed=REG_SEED
        )
        um = br.tre_um(result.transform, case.msi_to_he, points)
        record["spatialfuse"] = {"tre_um": um, "tre_px": um / case.pixel, "seconds": seconds}
        for name, overrides in VARIANTS.items():
            t0 = time.perf_counter()
            found, error, info = elastix_baseline(msi, case.he, case.he_px, overrides)
            seconds = time.perf_counter() - t0
            um = br.tre_um(found, case.msi_to_he, points)
            record[name] = {
                "tre_um": um,
                "tre_px": um / case.pixel,
                "seconds": seconds,
                "error": error,
                **info,
            }
        records.append(record)
        print(
            f"  seed {case.seed:3d}: MSI {case.pixel:5.1f} µm, rot {affine['rotation_deg']:6.1f}°"
            f"{' mirror' if affine['mirror'] else '       '}  "
            + " | ".join(
                f"{key.replace('elastix_', 'elastix ')} {br.fmt(record[key]['tre_px'], 3):>7} px "
                f"{record[key]['seconds']:4.1f} s"
                + (f" ({record[key]['error']})" if record[key].get("error") else "")
                for key in ("spatialfuse", *VARIANTS)
            ),
            flush=True,
        )
    out = {"records": records}
    for key in ("spatialfuse", *VARIANTS):
        s = br.summarise(
            [r[key]["tre_px"] for r in records],
            [r[key]["seconds"] for r in records],
            tres_um=[r[key]["tre_um"] for r in records],
        )
        if key != "spatialfuse":
            s["errors"] = sum(r[key]["error"] is not None for r in records)
            s["successes_on_mirrored"] = sum(
                r["mirror"] and r[key]["tre_px"] < br.SUCCESS_PX for r in records
            )
        out[key] = s
    ours = out["spatialfuse"]["median_s"]
    for key in ("spatialfuse", *VARIANTS):
        out[key]["time_ratio"] = out[key]["median_s"] / ours
    out["n_mirrored"] = sum(r["mirror"] for r in records)
    return out


def table(res: dict) -> str:
    rows = []
    for key in ("spatialfuse", *VARIANTS):
        s = res[key]
        rows.append(
            [
                LABELS[key],
                f"{s['successes']}/{s['n']} ({100 * s['success_rate']:.0f} %)",
                br.fmt(s["median_tre_px"], 3),
                br.fmt(s["p90_tre_px"], 3),
                br.fmt(s["median_tre_um"], 1),
                h.fmt_seconds(s["median_s"]),
                f"{s['time_ratio']:.2f}x",
            ]
        )
    return h.render_table(
        [
            "method",
            f"success (TRE < {br.SUCCESS_PX:g} px)",
            "median TRE px",
            "p90 TRE px",
            "median TRE µm",
            "median time",
            "time / spatialfuse",
        ],
        rows,
    )


def table_seeds(res: dict) -> str:
    rows = [
        [
            str(r["seed"]),
            f"{r['msi_pixel_um']:g}",
            f"{r['rotation_deg']:.1f}",
            "yes" if r["mirror"] else "no",
            *(br.fmt(r[key]["tre_px"], 3) for key in ("spatialfuse", *VARIANTS)),
        ]
        for r in res["records"]
    ]
    return h.render_table(
        ["seed", "MSI px µm", "rotation °", "mirror", "spatialfuse px", *VARIANTS], rows
    )


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("itk-elastix", "itk", "spatialfuse"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import itk  # noqa: F401
    except ImportError:
        print("itk-elastix is not installed (pip install 'spatialfuse[bench]'): nothing to do")
        return 2
    started = time.perf_counter()
    size = br.SIZES["quick" if args.quick else "full"]
    folder = h.data_dir(args.data_dir)
    root = folder / "registration"
    root.mkdir(parents=True, exist_ok=True)
    json_path = args.json or folder / (
        "results-elastix-quick.json" if args.quick else "results-elastix.json"
    )
    n_seeds = args.seeds or size["seeds_affine"]
    common = {"tissue_size_um": tuple(size["tissue_um"]), "he_pixel_size_um": size["he_px"]}

    print("generating / reusing inputs in", root, flush=True)
    generation_s = 0.0
    cases = []
    for i in range(n_seeds):
        seed = br.AFFINE_SEED0 + i
        # The options of bench_registration.py's sweep, so both benchmarks share the trios.
        case = br.ensure_trio(
            root,
            seed=seed,
            msi_pixel_size_um=br.msi_pixel_for(seed, size["msi_px"]),
            serial_section=True,
            write_he_serial=i < size["seeds_serial"],
            **common,
        )
        generation_s += case.generation_s
        cases.append(case)
    print(f"  ({generation_s:.1f} s of generation, not part of any measurement)", flush=True)

    print("loading itk-elastix and checking the transform conversion", flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check = self_check()
    print(
        f"  conversion self-check {'PASSED' if check['passed'] else 'FAILED'}: "
        f"{check['detail']} ({time.perf_counter() - t0:.1f} s incl. loading itk)",
        flush=True,
    )
    if not check["passed"]:
        h.write_json(json_path, {"quick": args.quick, "self_check": check})
        return 1

    print(f"\nMSI → H&E affine sweep: {n_seeds} seeds", flush=True)
    res = sweep(cases)
    total_s = time.perf_counter() - started

    print("\n" + "=" * 96)
    print(f"MSI → H&E affine, {n_seeds} seeds (TRE over every MSI pixel centre)\n")
    print(table(res))
    print()
    print(table_seeds(res))
    print()
    elastix_errors = ", ".join(f"{k}: {res[k]['errors']}" for k in VARIANTS)
    for paragraph in (
        f"TRE: per registration, the median over the MSI pixel centres of |found(p) − truth(p)|; "
        f"px = MSI pixels; success = TRE < {br.SUCCESS_PX:g} MSI px. The table gives the median "
        "and 90th percentile over the seeds; time ratio = method median / spatialfuse median.",
        f"{res['n_mirrored']} of {n_seeds} seeds are mirrored; an affine elastix run starts from "
        "the identity (or a shift) and can reach a mirror only through a scale sign change: "
        "successes on mirrored seeds "
        + ", ".join(f"{k}: {res[k]['successes_on_mirrored']}" for k in VARIANTS)
        + f". elastix raised on {elastix_errors}.",
        "itk-elastix: H&E 1 − mean(RGB)/255 resized (anti-aliased) to a long side of "
        f"{WORKING_LONG_SIDE} px (never upsampled), MSI TIC on its grid, both with µm spacing "
        "and origin; elastix's default affine parameter map; its time includes reading the H&E "
        "TIFF and building both images. elastix runs multi-threaded (its default), spatialfuse's "
        "ITK single-threaded.",
        "spatialfuse time: the whole register() call on the read MSI AnnData and the lazily "
        "opened HistologyImage. Only compare ratios from one run.",
    ):
        print(textwrap.fill(paragraph, width=96))
    if args.quick:
        print("\n--quick: 2 seeds and tiny inputs; these numbers are MEANINGLESS.")
    print(f"versions: {versions()}")
    print(f"total run time {total_s:.1f} s (input generation {generation_s:.1f} s)")
    h.write_json(
        json_path,
        {
            "quick": args.quick,
            "numbers_meaningful": not args.quick,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "machine": h.machine_info(),
            "versions": versions(),
            "sizes": size,
            "n_seeds": n_seeds,
            "reg_seed": REG_SEED,
            "working_long_side_px": WORKING_LONG_SIDE,
            "variants": VARIANTS,
            "success_px": br.SUCCESS_PX,
            "self_check": check,
            "sweep": res,
            "generation_s": generation_s,
            "total_s": total_s,
        },
    )
    print("results written to", json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
