"""Would a longer probe pin down the brain set's right results without passing wrong ones?

Usage::

    python benchmarks/_brain_probe_study.py ID [ID ...] [--json OUT]

On the public brain set (``bench_brain_set.py``) the "alignment pinned down" check flags results
whose outline lies on the H&E's tissue as well as anyone could place it by eye: the MALDI images
are near featureless inside their hand-drawn regions, so a move of the probe distance (2 MALDI
pixels, 100 µm) changes few pixels' pairing. This study registers each given pair as
``bench_brain_set.py`` does, and each MALDI on the next given pair's H&E (wrong by construction),
and measures the checks' peak sharpness (``reg._checks.peak_profile``) at 1, 2 and 3 times the
probe distance, with the other checks' verdicts, so that a rule on a longer probe can be judged
against both before anything changes. It changes nothing in the library.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_brain_set

#: Probe distances tried, in multiples of ``reg._checks.probe_step_um``.
FACTORS = (1.0, 2.0, 3.0)


def sharpness_at(moving, fixed, transform, factor: float) -> float:
    from spatialfuse.reg import _checks

    original = _checks.PROBE_STEP_PX, _checks.PROBE_STEP_EXTENT
    try:
        _checks.PROBE_STEP_PX = original[0] * factor
        _checks.PROBE_STEP_EXTENT = original[1] * factor
        return float(_checks.peak_profile(moving, fixed, transform)["peak_sharpness"])
    finally:
        _checks.PROBE_STEP_PX, _checks.PROBE_STEP_EXTENT = original


def study(moving, fixed) -> dict:
    import spatialfuse as sf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sf.reg.register(moving, fixed)
    checks = result.checks
    failed = list(checks.loc[~checks["passed"].astype(bool), "name"])
    row = {"ok": bool(result.ok), "failed_checks": failed}
    if result.moving_image is None or "could not register" in failed:
        return row
    mov, fix, transform = search_frame(result, fixed)
    row["sharpness_reported"] = result.metrics.get("peak_sharpness")
    for factor in FACTORS:
        row[f"sharpness_x{factor:g}"] = sharpness_at(mov, fix, transform, factor)
    return row


def search_frame(result, fixed):
    """The result's images and transform in the frames the checks measured them in.

    With the H&E's pixel size estimated, ``register`` returns them in the frames as given (the
    H&E at its nominal 1 µm); the checks ran where the H&E has the estimated pixel size.
    """
    from spatialfuse.core.transforms import AffineTransform, compose
    from spatialfuse.reg import _scale

    if result.details.get("scale") != "estimated":
        return result.moving_image, result.fixed_image, result.transform
    factor = result.metrics["estimated_pixel_size_um"] / float(fixed.pixel_size_um[0])
    scaling = AffineTransform.from_params(scale=factor)
    return (
        result.moving_image,
        _scale.rescaled_image(result.fixed_image, factor),
        compose(scaling, result.transform),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="+")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    pairs = bench_brain_set.pair_ids()
    rows = []
    for n, pid in enumerate(args.ids):
        moving, fixed = bench_brain_set.load(*pairs[pid])
        other = args.ids[(n + 1) % len(args.ids)]
        _, other_fixed = bench_brain_set.load(*pairs[other])
        for case, fix in (("automatic", fixed), (f"on {other}", other_fixed)):
            row = {"id": pid, "case": case, **study(moving, fix)}
            rows.append(row)
            sharp = " ".join(
                f"x{f:g} {row[f'sharpness_x{f:g}']:.3f}"
                for f in FACTORS
                if f"sharpness_x{f:g}" in row
            )
            fails = ", ".join(row["failed_checks"]) or "-"
            print(f"{pid} {case}: ok={row['ok']} sharpness {sharp}; failed: {fails}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
