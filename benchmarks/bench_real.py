"""Registration on the real pairs of ../shared/data/paired, against hand-placed references.

Usage::

    python benchmarks/bench_real.py [--pairs NAME ...] [--no-calibration] [--json OUT]

For every real pair (``real_pairs.py``) in one run, side by side:

* ``sf.reg.register(moving, fixed)`` with its defaults (pixel sizes as the files give them: the
  bladder's optical image has none, so the search estimates it);
* the same with the optical pixel size given by hand where a pair lacks one;
* the plain SimpleITK baseline (``baseline_sitk.py``), pixel sizes given;
* itk-elastix's default affine map, where ``itk-elastix`` is installed.

Each result's error is measured against the pair's reference over the moving tissue (median and
90th percentile, in moving pixels and µm) and judged against the target: the reference's own
uncertainty (the median leave-one-out error of its landmarks) + 1 moving pixel. Time is wall-clock
of a warm call (the process has imported everything and read the inputs once).

The calibration part puts the quality checks to right and deliberately wrong alignments: the
results started from the reference (right), those results shifted by 2, 3 and 5 pixels or
turned by 3° and 8° (assessed, not refined), registrations started mirrored or turned by 90° and
180° (refined: wrong local optima), and pairs swapped (the moving image of one pair on the fixed
image of another). It counts false alarms (right results flagged) and wrong results reported ok.
Shifted and turned cases are made only on pairs whose reference is sure to
``CALIBRATION_MAX_UNCERTAINTY_PX`` (not the brain fragments, whose references are 7–11 px
unsure); their automatic results are judged against their references like every pair's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baseline_sitk
import real_pairs

#: A result is right when its median error is within the reference's uncertainty + this.
TARGET_MARGIN_PX = 1.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="*", default=None, help="pairs to run (default: all)")
    parser.add_argument("--no-calibration", action="store_true", help="skip the check calibration")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed part")
    parser.add_argument("--no-visium", action="store_true", help="skip the optical → Visium checks")
    parser.add_argument("--data-dir", default=None, help="where the speed inputs are generated")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def load_pairs(names, workdir: Path):
    pairs = []
    for name in names:
        if name == "bladder_spamtp_turned":
            pairs.append(real_pairs.bladder_spamtp(turned_in=workdir))
        elif name == "bladder_spamtp_cropped":
            pairs.append(real_pairs.bladder_spamtp(cropped_in=workdir))
        else:
            pairs.append(real_pairs.LOADERS[name]())
    return pairs


def fixed_pixel_of(pair, result=None):
    """The pixel size (µm) of the frame a transform into ``pair.fixed`` refers to."""
    size = getattr(pair.fixed, "pixel_size_um", None)
    return tuple(size)


def measure(pair, transform, seconds, ok, label, extra=None):
    errors = pair.errors_px(transform, fixed_pixel_of(pair))
    target = pair.reference.uncertainty_moving_px + TARGET_MARGIN_PX
    row = {
        "pair": pair.name,
        "role": pair.role,
        "method": label,
        "median_px": float(np.median(errors)),
        "p90_px": float(np.percentile(errors, 90)),
        "median_um": float(np.median(errors) * pair.moving_pixel_um),
        "p90_um": float(np.percentile(errors, 90) * pair.moving_pixel_um),
        "target_px": target,
        "within_target": bool(np.median(errors) <= target),
        "ok": ok,
        "seconds": seconds,
    }
    row.update(extra or {})
    return row


def run_ours(pair, **kwargs):
    import spatialfuse as sf

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sf.reg.register(pair.moving, pair.fixed, **kwargs)
    seconds = time.perf_counter() - start
    m = result.metrics
    extra = {
        "msi_image": result.details.get("msi_image"),
        "channel": result.details.get("channel"),
        "failures": result.failures,
        "peak_sharpness": m.get("peak_sharpness"),
        "best_neighbour_gain": m.get("best_neighbour_gain"),
        "dice": m.get("dice_final"),
    }
    if "estimated_pixel_size_um" in m:
        extra["estimated_pixel_size_um"] = m["estimated_pixel_size_um"]
    return result, seconds, extra


def baseline_inputs(pair, optical_pixel_um):
    """The baseline's moving and fixed arrays with their spacings (pixel sizes given)."""
    from spatialfuse.reg import RegistrationImage

    if isinstance(pair.moving, RegistrationImage):
        moving = pair.moving.image
        m_spacing, m_origin = pair.moving.pixel_size_um, pair.moving.origin_um
    else:
        moving, m_spacing, m_origin = baseline_sitk.msi_pc1(pair.moving)
    if isinstance(pair.fixed, RegistrationImage):
        fixed, f_spacing = pair.fixed.image, pair.fixed.pixel_size_um
    else:
        rgb = pair.fixed.read()
        fixed, f_spacing = baseline_sitk.optical_density(rgb, optical_pixel_um, min(m_spacing) / 2)
    return moving, m_spacing, m_origin, fixed, f_spacing


def run_baseline(pair, optical_pixel_um):
    from spatialfuse.reg import AffineTransform

    moving, m_spacing, m_origin, fixed, f_spacing = baseline_inputs(pair, optical_pixel_um)
    start = time.perf_counter()
    matrix, _ = baseline_sitk.register(moving, m_spacing, fixed, f_spacing, moving_origin=m_origin)
    return AffineTransform(matrix), time.perf_counter() - start


def run_elastix(pair, optical_pixel_um):
    try:
        import itk
    except ImportError:
        return None
    from spatialfuse.reg import AffineTransform

    moving, m_spacing, m_origin, fixed, f_spacing = baseline_inputs(pair, optical_pixel_um)
    start = time.perf_counter()
    fixed_img = itk.image_view_from_array(np.ascontiguousarray(fixed, dtype=np.float32))
    fixed_img.SetSpacing([float(s) for s in f_spacing])
    fixed_img.SetOrigin([0.5 * float(s) for s in f_spacing])
    moving_img = itk.image_view_from_array(np.ascontiguousarray(moving, dtype=np.float32))
    moving_img.SetSpacing([float(s) for s in m_spacing])
    moving_img.SetOrigin(
        [float(o) + 0.5 * float(s) for o, s in zip(m_origin, m_spacing, strict=True)]
    )
    params = itk.ParameterObject.New()
    affine = params.GetDefaultParameterMap("affine", 4)
    affine["AutomaticTransformInitialization"] = ["true"]
    affine["AutomaticTransformInitializationMethod"] = ["CenterOfGravity"]
    params.AddParameterMap(affine)
    _, result = itk.elastix_registration_method(
        fixed_img, moving_img, parameter_object=params, log_to_console=False
    )
    values = [float(v) for v in result.GetParameter(0, "TransformParameters")]
    centre = [float(v) for v in result.GetParameter(0, "CenterOfRotationPoint")]
    a = np.array(values[:4]).reshape(2, 2)
    t = np.array(values[4:6])
    c = np.array(centre)
    fixed_to_moving = np.eye(3)
    fixed_to_moving[:2, :2] = a
    fixed_to_moving[:2, 2] = t + c - a @ c
    return AffineTransform(np.linalg.inv(fixed_to_moving)), time.perf_counter() - start


def hand_pixel(pair):
    """The optical pixel size a user would give by hand: the reference's (µm)."""
    given = getattr(pair.fixed, "pixel_size_source", "argument")
    if given != "unknown":
        return tuple(pair.fixed.pixel_size_um) if hasattr(pair.fixed, "pixel_size_um") else None
    # the reference maps moving µm → fixed px: its scale gives µm per fixed pixel
    linear = pair.reference.matrix[:2, :2]
    return (1.0 / np.sqrt(abs(np.linalg.det(linear))),) * 2


def with_pixel(pair, pixel):
    """The pair with its optical image at ``pixel`` µm (the reference is in pixels: unchanged)."""
    import dataclasses

    if not hasattr(pair.fixed, "with_pixel_size"):
        return pair
    return dataclasses.replace(pair, fixed=pair.fixed.with_pixel_size(pixel))


def calibration_cases(pair, right_transform):
    """(label, kind, transform-or-None, start) for the checks' calibration on one pair."""
    from spatialfuse.reg import AffineTransform, compose

    centre = right_transform.apply(pair.tissue_um).mean(axis=0)

    def turn(angle):
        t = AffineTransform.from_params(rotation_deg=angle)
        back = AffineTransform.from_params(translation=centre - t.apply(centre[None])[0])
        return compose(back, t)

    px = pair.moving_pixel_um * float(np.sqrt(abs(np.linalg.det(right_transform.matrix[:2, :2]))))
    cases = []
    for k in (2, 3, 5):
        for dx, dy in ((1, 0), (0, 1)):
            shift = AffineTransform.from_params(translation=(dx * k * px, dy * k * px))
            cases.append(
                (f"shift {k} px {'x' if dx else 'y'}", "assess", compose(shift, right_transform))
            )
    # turned about the tissue centre so that the tissue moves by 3 and 5 pixels (median)
    moved = right_transform.apply(pair.tissue_um) - centre
    radius = float(np.median(np.linalg.norm(moved, axis=1)))
    for k in (3, 5):
        angle = float(np.degrees(k * px / radius))
        label = f"turned {angle:.1f}° ({k} px)"
        cases.append((label, "assess", compose(turn(angle), right_transform)))
    mirror = AffineTransform([[-1, 0, 2 * centre[0]], [0, 1, 0], [0, 0, 1]])
    cases.append(("start mirrored", "register", compose(mirror, right_transform)))
    cases.append(("start turned 90°", "register", compose(turn(90), right_transform)))
    cases.append(("start turned 180°", "register", compose(turn(180), right_transform)))
    return cases


#: Pairs whose reference is less sure than this (moving pixels) get no shifted / turned cases.
CALIBRATION_MAX_UNCERTAINTY_PX = 4.0


def run_calibration(pairs_hand, automatic):
    """Right and wrong cases for the checks; ``automatic``: (pair, label, result) already run."""
    import spatialfuse as sf

    rows = [case_row(pair, label, result) for pair, label, result in automatic]
    for pair in pairs_hand:
        if pair.reference.uncertainty_moving_px > CALIBRATION_MAX_UNCERTAINTY_PX:
            # a shift of 2–5 px is not wrong against a reference that is itself 7–11 px unsure
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            right = sf.reg.register(pair.moving, pair.fixed, initial=reference_transform(pair))
        rows.append(case_row(pair, "started at the reference", right))
        for label, kind, transform in calibration_cases(pair, right.transform):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind == "assess":
                    result = sf.reg.assess(pair.moving, pair.fixed, transform)
                else:
                    result = sf.reg.register(pair.moving, pair.fixed, initial=transform)
            # moved off the right result on purpose: wrong by construction
            rows.append(case_row(pair, label, result, wrong=True if kind == "assess" else None))
    for a in pairs_hand:
        for b in pairs_hand:
            if a.name.split("_")[0] == b.name.split("_")[0]:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = sf.reg.register(a.moving, b.fixed)
            rows.append(
                {
                    "pair": f"{a.name} on {b.name}",
                    "case": "swapped pairs",
                    "wrong": True,
                    "flagged": not result.ok,
                    **_check_numbers(result),
                }
            )
    return rows


def reference_transform(pair):
    """The reference as a moving µm → fixed µm transform in the pair's fixed frame."""
    from spatialfuse.reg import AffineTransform

    size = np.asarray(fixed_pixel_of(pair), dtype=np.float64)
    to_um = np.array([[size[0], 0, 0.5 * size[0]], [0, size[1], 0.5 * size[1]], [0, 0, 1]])
    return AffineTransform(to_um @ pair.reference.matrix)


def case_row(pair, label, result, *, wrong=None):
    """One calibration row; ``wrong`` None: judged by the error against the reference."""
    errors = pair.errors_px(result.transform, fixed_pixel_of(pair))
    if wrong is None:
        wrong = bool(np.median(errors) > pair.reference.uncertainty_moving_px + TARGET_MARGIN_PX)
    return {
        "pair": pair.name,
        "case": label,
        "median_px": float(np.median(errors)),
        "wrong": wrong,
        "flagged": not result.ok,
        **_check_numbers(result),
    }


def _check_numbers(result):
    m = result.metrics
    return {
        "dice": m.get("dice_final"),
        "nmi_excess": m.get("nmi_excess"),
        "peak_sharpness": m.get("peak_sharpness"),
        "best_neighbour_gain": m.get("best_neighbour_gain"),
        "failures": result.failures,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if not real_pairs.available():
        print(f"no real pairs at {real_pairs.data_root() / 'paired'}: nothing to run")
        return 0
    names = args.pairs or [*real_pairs.LOADERS, "bladder_spamtp_turned", "bladder_spamtp_cropped"]
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    workdir = Path(tempfile.mkdtemp(prefix="spatialfuse-bench-real-"))
    pairs = load_pairs(names, workdir)
    rows = []
    hand_pairs = []
    automatic = []
    for pair in pairs:
        print(f"\n== {pair.name} ({pair.role}); reference: {pair.reference.how}")
        loo = pair.reference.loo_moving_px
        if loo.size:
            median, worst = np.median(loo), loo.max()
            print(f"   reference leave-one-out error median {median:.2f} px, max {worst:.2f}")
        spread = pair.reference.spread_moving_px
        print(
            f"   reference uncertainty {pair.reference.uncertainty_moving_px:.2f} px "
            f"(bootstrap spread of the fitted reference {spread:.2f} px)"
        )
        result, seconds, extra = run_ours(pair)
        automatic.append((pair, "automatic (defaults)", result))
        rows.append(
            measure(pair, result.transform, seconds, result.ok, "spatialfuse (defaults)", extra)
        )
        pixel = hand_pixel(pair)
        hand = with_pixel(pair, pixel)
        hand_pairs.append(hand)
        if hand is not pair:
            result, seconds, extra = run_ours(hand)
            automatic.append((hand, "automatic (pixel size given)", result))
            rows.append(
                measure(
                    hand,
                    result.transform,
                    seconds,
                    result.ok,
                    "spatialfuse (pixel size given)",
                    extra,
                )
            )
        transform, seconds = run_baseline(hand, pixel)
        rows.append(measure(hand, transform, seconds, None, "plain SimpleITK baseline"))
        found = run_elastix(hand, pixel)
        if found is not None:
            rows.append(measure(hand, found[0], found[1], None, "itk-elastix (default affine)"))
        for row in rows:
            if row["pair"] == pair.name and "printed" not in row:
                row["printed"] = True
                print(format_row(row))
    calibration = [] if args.no_calibration else run_calibration(hand_pairs, automatic)
    if calibration:
        print("\n== quality checks on right and wrong alignments")
        for row in calibration:
            print(format_case(row))
        right = [r for r in calibration if not r["wrong"]]
        wrong = [r for r in calibration if r["wrong"]]
        print(
            f"false alarms {sum(r['flagged'] for r in right)}/{len(right)}; "
            f"wrong results reported ok {sum(not r['flagged'] for r in wrong)}/{len(wrong)}"
        )
    ours = [r for r in rows if r["method"] == "spatialfuse (defaults)"]
    print(
        f"\nspatialfuse (defaults): {sum(r['within_target'] for r in ours)}/{len(ours)} pairs "
        f"within target, {sum(r['ok'] and not r['within_target'] for r in ours)} wrong results "
        f"reported ok, {sum((not r['ok']) and r['within_target'] for r in ours)} false alarms"
    )
    visium = None if args.no_visium else run_visium(workdir)
    speed = None if args.no_speed else run_speed(args.data_dir)
    if args.json:
        for row in rows:
            row.pop("printed", None)
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "calibration": calibration,
                    "visium": visium,
                    "speed": speed,
                    "load": load,
                },
                indent=1,
                default=str,
            )
        )
    return 0


#: The issue's size: a 300 × 300-pixel MSI against a 4000 × 3000 optical image in ≤ 10 s.
#: Synthetic inputs (no real pair is that large here): the generator's tissue at 25 µm MSI
#: pixels gives a 300 × 300 MSI; its H&E at 2.26 µm is about 4000 × 3830 pixels (the tissue is
#: nearly square, so the image is larger than 4000 × 3000, not smaller).
SPEED_TRIO = {
    "seed": 3000,
    "msi_pixel_size_um": 25.0,
    "tissue_size_um": (7900.0, 7570.0),
    "he_pixel_size_um": 2.26,
    "serial_section": False,
    "write_he_serial": False,
    "rotation_deg": 180.0,
    "mirror": True,
    "scale": 1.0,
    "shear": 0.0,
}
SPEED_TARGET_S = 10.0


def run_visium(workdir: Path) -> list[dict]:
    """The H&E → Visium step's checks on real Visium folders: right and wrong optical images."""
    import spatialfuse as sf

    print("\n== optical → Visium (the H&E → Visium step of a chain): right and wrong cases")
    rows = []
    for case in real_pairs.visium_cases(workdir / "visium"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = sf.reg.register(case.optical, case.visium)
        seconds = time.perf_counter() - start
        row = {
            "case": case.name,
            "wrong": case.truth is None,
            "flagged": not result.ok,
            "seconds": seconds,
            **_check_numbers(result),
        }
        if case.truth is not None:
            points = result.moving_image.centres_um(mask_only=True)
            found, true = result.transform.apply(points), case.truth.apply(points)
            errors = np.linalg.norm(found - true, axis=1)
            row["median_um"] = float(np.median(errors))
            row["median_px"] = row["median_um"] / case.optical.pixel_size_um[0]
        rows.append(row)
        error = (
            f", error {row['median_um']:.1f} µm ({row['median_px']:.2f} px)"
            if "median_um" in row
            else ""
        )
        print(
            f"   {case.name:<34} {'wrong' if row['wrong'] else 'right'}: "
            f"{'FLAGGED' if row['flagged'] else 'ok'}{error}, Dice {row['dice']:.2f}, "
            f"sharpness {row['peak_sharpness']:.3f}, gain {row['best_neighbour_gain']:.3f}, "
            f"{seconds:.1f} s"
        )
    right = [r for r in rows if not r["wrong"]]
    wrong = [r for r in rows if r["wrong"]]
    print(
        f"   false alarms {sum(r['flagged'] for r in right)}/{len(right)}; wrong results "
        f"reported ok {sum(not r['flagged'] for r in wrong)}/{len(wrong)}"
    )
    return rows


def run_speed(data_dir) -> dict:
    """One registration at the issue's size, right and flagged (against an unrelated texture)."""
    import _harness as h
    import bench_failure_detection as bfd
    import bench_registration as breg

    import spatialfuse as sf

    root = h.data_dir(data_dir) / "real_speed"
    root.mkdir(parents=True, exist_ok=True)
    print("\n== speed at the issue's size (synthetic inputs; generated once, not timed)")
    case = breg.ensure_trio(root, **SPEED_TRIO)
    texture = root / f"texture_{SPEED_TRIO['seed']}.ome.tif"
    he_image = sf.io.read_histology(case.he)
    if not texture.exists():
        bfd._write_rgb(texture, bfd.natural_texture(he_image.shape, 7), case.he_px)
    msi = sf.io.read_imzml(case.msi)
    grid = (int(msi.obs["imzml_x"].max()), int(msi.obs["imzml_y"].max()))
    out = {"msi_shape_xy": grid, "optical_shape_xy": he_image.shape[::-1], "n_features": msi.n_vars}
    for label, optical in (("right", case.he), ("flagged (unrelated texture)", texture)):
        times = []
        for _ in range(2):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = sf.reg.register(msi, sf.io.read_histology(optical))
            times.append(time.perf_counter() - start)
        points = np.asarray(msi.obsm["spatial"])
        tre = float(breg.tre_um(result.transform, case.msi_to_he, points)) / case.pixel
        out[label] = {"seconds": times, "ok": result.ok, "tre_px": tre}
        print(
            f"   {label:<28} MSI {grid[0]}×{grid[1]} ({msi.n_vars} m/z) vs optical "
            f"{he_image.shape[1]}×{he_image.shape[0]}: {min(times):.1f} s (best of 2; "
            f"{', '.join(f'{t:.1f}' for t in times)}), ok={result.ok}, TRE {tre:.2f} px; "
            f"target ≤ {SPEED_TARGET_S:g} s {'✓' if min(times) <= SPEED_TARGET_S else '✗'}"
        )
    return out


def format_row(row):
    flag = "" if row["ok"] is None else ("ok" if row["ok"] else "FLAGGED")
    note = ""
    if row.get("estimated_pixel_size_um"):
        note = f" est. pixel {row['estimated_pixel_size_um']:.3f} µm"
    if row.get("channel"):
        note += f" [{row.get('msi_image')} × {row.get('channel')}]"
    return (
        f"   {row['method']:<32} median {row['median_px']:6.2f} px ({row['median_um']:7.1f} µm)  "
        f"p90 {row['p90_px']:6.2f} px  target ≤ {row['target_px']:.2f}  "
        f"{'✓' if row['within_target'] else '✗'}  {flag:<8} {row['seconds']:6.1f} s{note}"
    )


def format_case(row):
    err = f"{row['median_px']:6.2f} px" if "median_px" in row else "      —  "
    verdict = "wrong" if row["wrong"] else "right"
    flagged = "flagged" if row["flagged"] else "ok"
    nan = float("nan")
    numbers = {k: nan if row[k] is None else row[k] for k in ("dice", "nmi_excess")}
    numbers.update({k: nan if row[k] is None else row[k] for k in ("peak_sharpness",)})
    gain = nan if row["best_neighbour_gain"] is None else row["best_neighbour_gain"]
    return (
        f"   {row['pair']:<40} {row['case']:<28} {err} {verdict:<5} {flagged:<7} "
        f"Dice {numbers['dice']:.3f} excess {numbers['nmi_excess']:.4f} "
        f"sharp {numbers['peak_sharpness']:.3f} gain {gain:+.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
