"""The verdict's checks one by one: each catches its failure, names it, and passes a good result."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from spatialfuse.reg import _verdict

GOOD = {
    "scale_min": 0.98,
    "scale_max": 1.02,
    "tissue_area_scale": 1.01,
    "moving_tissue_inside": 1.0,
    "fixed_tissue_covered": 0.97,
    "nmi_excess": 0.05,
}
GIVEN = SimpleNamespace(estimating=False)
ESTIMATING = SimpleNamespace(estimating=True)
MSI = SimpleNamespace(pixel_size_um=(10.0, 10.0))


def test_a_good_result_passes_every_check():
    profile = {"nmi_excess": 0.05, "peak_sharpness": 0.8, "best_neighbour_gain": -0.1}
    assert _verdict.failures(MSI, GOOD, {"dice": 0.9}, profile, GIVEN, 0.75, None) == []


def test_each_check_names_what_it_caught():
    assert "Dice 0.60" in _verdict.poor_tissue_overlap({"dice": 0.6}, 0.75)
    stretched = {**GOOD, "scale_min": 0.7, "scale_max": 1.1}
    assert "stretches" in _verdict.uneven_stretch(stretched, ESTIMATING)
    assert _verdict.uneven_stretch(stretched, GIVEN) is None  # trusted sizes: wrong_scale's job
    assert "scales the moving image by 0.70–1.10" in _verdict.wrong_scale(stretched, GIVEN)
    huge = {**GOOD, "tissue_area_scale": 10.0, "scale_min": 10.0, "scale_max": 10.0}
    assert "10× larger" in _verdict.implausible_tissue_size(huge, GIVEN)
    assert _verdict.wrong_scale(huge, GIVEN) is None  # said once, by the tissue-size check
    assert "only 10 %" in _verdict.too_little_overlap({**GOOD, "moving_tissue_inside": 0.1})
    crop = {**GOOD, "moving_tissue_inside": 0.5, "nmi_excess": 0.005}
    assert "share little information" in _verdict.partial_overlap_without_information(crop)
    assert _verdict.partial_overlap_without_information({**crop, "nmi_excess": 0.05}) is None
    assert "folds" in _verdict.folding({"min_jacobian": -0.1})
    assert "median 30.0 µm > 20" in _verdict.landmark_error({"tre_um_median": 30.0}, 20)
    assert _verdict.landmark_error({"tre_um_median": 30.0}, None) is None
    flat = {**GOOD, "localisation": 1.01, "footprint_cost": 0.2}
    assert "spectra do not pin" in _verdict.spectra_do_not_localise(MSI, flat)
    assert _verdict.spectra_do_not_localise(MSI, {**flat, "localisation": np.inf}) is None
    # the collector keeps the order and drops the passes
    bad = _verdict.failures(MSI, crop, {"dice": 0.6}, {"nmi_excess": 0.0}, GIVEN, 0.75, None)
    assert bad[0].startswith("tissue masks overlap poorly")
    assert bad[1] == "no mutual information between the aligned images"
    assert "share little information" in bad[-1] and len(bad) == 3
