"""The brain pairs with the MALDI region given as ``valid=`` rather than as intensities.

Usage::

    python benchmarks/_brain_valid_study.py {old|new} A13 A12 A2

The brain MALDI images of ``real_pairs.brain_fragments`` are filled with 255 outside the
hand-drawn MALDI region, and ``bench_real.py`` feeds them as they ship (the filler is an
intensity). ``new`` builds the moving image with ``valid = image < 255`` instead (the filler is
no data, as an MSI's unmeasured pixels are); ``old`` as ``bench_real.py`` does. Each pair is
registered without and with the optical pixel size given (``bench_real.hand_pixel``), and the
error against the reference, ``ok`` and the peak checks are printed. Findings:
``docs/failure_detection.md`` (session 14).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_real
import real_pairs


def main(mode: str, ids: list[str]) -> int:
    import tifffile

    import spatialfuse as sf
    from spatialfuse.reg import RegistrationImage

    warnings.simplefilter("ignore")
    folder = real_pairs.data_root() / "paired" / "brain_he_maldi_pairs"
    for pid in ids:
        pair = real_pairs.LOADERS["brain_" + pid]()
        raw = tifffile.imread(folder / real_pairs.BRAIN_MALDI[pid]).astype(np.float32)
        if mode == "new":
            moving = RegistrationImage.from_array(
                raw, 50.0, modality="msi", description="MALDI image (one channel)", valid=raw < 255
            )
            pair = dataclasses.replace(pair, moving=moving)
        given = bench_real.with_pixel(pair, bench_real.hand_pixel(pair))
        for label, case in (("no pixel size", pair), ("pixel size given", given)):
            start = time.perf_counter()
            result = sf.reg.register(case.moving, case.fixed)
            seconds = time.perf_counter() - start
            errors = case.errors_px(result.transform, case.fixed.pixel_size_um)
            m = result.metrics
            bound = case.reference.uncertainty_moving_px + 1
            print(
                f"{pid} {mode}, {label}: {np.median(errors):.2f} px (p90 "
                f"{np.percentile(errors, 90):.2f}, bound {bound:.1f}), ok={result.ok}, sharpness "
                f"{m.get('peak_sharpness'):.3f}, gain {m.get('best_neighbour_gain'):+.3f}, Dice "
                f"{m.get('dice_final'):.3f}, {seconds:.1f} s; {'; '.join(result.failures)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("old", "new"):
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
