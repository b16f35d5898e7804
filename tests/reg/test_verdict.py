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


def test_checks_are_rows_with_value_threshold_and_what_to_do():
    profile = {
        "nmi_excess": 0.05,
        "peak_sharpness": 0.95,
        "best_neighbour_gain": -0.1,
        "probe_step_um": 50.0,
        "gain_step_um": 50.0,
    }
    rows = _verdict.checks(MSI, GOOD, {"dice": 0.9}, profile, GIVEN, 0.75, None)
    by_name = {row.name: row for row in rows}
    dice = by_name["tissue overlap"]
    assert (dice.value, dice.threshold, dice.passed, dice.failure) == (0.9, "≥ 0.75", True, "")
    pinned = by_name["alignment pinned down"]
    assert not pinned.passed and pinned.value == 0.95 and pinned.threshold == "≤ 0.9"
    assert "moved by 50 µm" in pinned.failure
    assert "landmarks=" in pinned.what_to_do()
    # the failures are exactly the failing rows' sentences, in order
    failed = [row.failure for row in rows if not row.passed]
    assert _verdict.failures(MSI, GOOD, {"dice": 0.9}, profile, GIVEN, 0.75, None) == failed
    # checks that do not apply are not rows: no landmarks, no nonrigid map, no spectra
    assert {"landmark error", "no folding", "spectra pin the alignment down"}.isdisjoint(by_name)
    assert "even stretch" not in by_name and "scale about 1" in by_name
    as_dict = pinned.as_dict()
    assert as_dict["remedy"] == "landmarks" and as_dict["what_to_do"] == pinned.what_to_do()


def test_scale_checks_point_to_the_pixel_size():
    huge = {**GOOD, "tissue_area_scale": 10.0, "scale_min": 10.0, "scale_max": 10.0}
    profile = {"nmi_excess": 0.0}
    rows = _verdict.checks(MSI, huge, {"dice": 0.9}, profile, GIVEN, 0.75, 20.0)
    by_name = {row.name: row for row in rows}
    size = by_name["plausible tissue size"]
    assert not size.passed and size.value == 10.0 and size.remedy == "pixel_size"
    assert "pixel_size_um=" in size.what_to_do() and "scale='estimate'" in size.what_to_do()
    # said once: the scale row is left out where the tissue size already failed
    assert "scale about 1" not in by_name
    # without mutual information only that peak check is a row
    assert "shared information" in by_name and "at the optimum" not in by_name
    stretched = {**GOOD, "scale_min": 0.7, "scale_max": 1.1}
    rows = _verdict.checks(MSI, stretched, {"dice": 0.9}, profile, ESTIMATING, 0.75, None)
    stretch = {row.name: row for row in rows}["even stretch"]
    assert not stretch.passed and np.isclose(stretch.value, 1.1 / 0.7)
