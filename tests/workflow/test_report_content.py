"""What the run report says: checks in words with thresholds, what to do in config terms,
skipped steps, pairs ranked by significance (the renderer itself: ``test_report.py``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from spatialfuse.reg._quality import QualityCheck
from spatialfuse.workflow import _report_content as content
from spatialfuse.workflow._config import Registration
from spatialfuse.workflow._pipeline import RegistrationRecord


def _record(checks: list[QualityCheck], *, ok: bool) -> RegistrationRecord:
    reg = Registration(moving="msi", fixed="he")
    failures = [c.failure for c in checks if not c.passed]
    details = {"checks": [c.as_dict() for c in checks]}
    return RegistrationRecord(
        reg, None, {"dice_final": 0.6}, ok, failures, False, Path("t.json"), None, details
    )


DICE_FAILS = QualityCheck.judged(
    "tissue overlap", "Dice of the two tissue masks", 0.6, "≥ 0.75", "tissue masks overlap poorly"
)
SIZE_FAILS = QualityCheck.judged(
    "plausible tissue size",
    "tissue size ratio",
    10.0,
    "between 0.33 and 3",
    "too big",
    "pixel_size",
)
SHARP_PASSES = QualityCheck.judged("alignment pinned down", "kept", 0.8, "≤ 0.9", None)


def test_failed_checks_say_what_to_do_in_config_terms():
    section = content._registration(_record([DICE_FAILS, SIZE_FAILS, SHARP_PASSES], ok=False))
    assert section.status == "failed"
    dice, size = section.notes[0], section.notes[1]
    assert dice.startswith("tissue overlap — tissue masks overlap poorly. What to do:")
    assert "`landmarks: points.csv`" in dice
    assert "`spatialfuse pick-landmarks CONFIG msi:he`" in dice
    assert "`pixel_size_um:`" in size and "`scale: estimate`" in size
    # no Python argument is offered to a config user
    assert not any("sf.reg" in note or "=..." in note for note in section.notes)


def test_checks_table_has_value_threshold_and_result_and_raw_numbers_fold_away():
    section = content._registration(_record([DICE_FAILS, SHARP_PASSES], ok=False))
    checks, numbers = section.tables
    assert checks.caption == "Quality checks"
    table = checks.data
    assert list(table.columns) == ["check", "what it measures", "value", "pass when", "result"]
    assert table.iloc[0].tolist() == [
        "tissue overlap",
        "Dice of the two tissue masks",
        "0.6",
        "≥ 0.75",
        "FAIL",
    ]
    assert table.iloc[1]["result"] == "pass"
    assert numbers.collapsed and numbers.data == {"dice_final": 0.6}


def test_a_record_from_an_older_cache_without_checks_still_lists_its_failures():
    reg = Registration(moving="msi", fixed="he")
    record = RegistrationRecord(reg, None, {}, False, ["went wrong"], True, Path("t"), None, {})
    section = content._registration(record)
    assert section.notes[0] == "failed: went wrong"
    assert [t.caption for t in section.tables] == ["All numbers (RegistrationResult.metrics)"]


def _config(registrations, msi="msi", visium="visium"):
    return SimpleNamespace(registrations=registrations, msi_name=msi, visium_name=visium)


def test_skipped_steps_are_listed_with_why():
    first, second = Registration(moving="msi", fixed="he"), Registration(moving="he", fixed="v")
    failed = _record([DICE_FAILS], ok=False)
    result = SimpleNamespace(
        config=_config([first, second]),
        timings={"read": 1.0, "register msi → he": 2.0},
        failed=failed,
        no_overlap=None,
    )
    assert content._skipped_steps(result) == [
        "skipped: register he → v (registration msi → he failed before it)",
        "skipped: map (registration msi → he failed)",
        "skipped: cluster (registration msi → he failed)",
        "skipped: correlate (registration msi → he failed)",
    ]
    done = {"read": 1, "register msi → he": 1, "register he → v": 1, "map": 1}
    short = SimpleNamespace(
        config=_config([first, second]), timings=done, failed=None, no_overlap="few spots"
    )
    assert content._skipped_steps(short) == [
        "skipped: cluster (too few spots have MSI data)",
        "skipped: correlate (too few spots have MSI data)",
    ]
    alone = SimpleNamespace(
        config=_config([first], visium=None), timings=done, failed=None, no_overlap=None
    )
    assert "no MSI → Visium path" in content._skipped_steps(alone)[0]
    everything = {**done, "cluster": 1, "correlate": 1}
    complete = SimpleNamespace(
        config=_config([first, second]), timings=everything, failed=None, no_overlap=None
    )
    assert content._skipped_steps(complete) == []


def test_pairs_are_ranked_by_significance_then_strength():
    table = pd.DataFrame(
        {
            "gene": ["A", "B", "C", "D"],
            "ion": ["x", "y", "z", "w"],
            "r": [0.9, -0.95, 0.5, 0.7],
            "p_value": [1e-3, 1e-3, 1e-6, 1e-3],
            "p_adjusted": [0.01, 0.01, 0.001, 0.01],
        }
    )
    assert content._by_significance(table)["gene"].tolist() == ["C", "B", "A", "D"]
    assert list(content._by_significance(table).columns) == list(table.columns)


def test_scale_bar_lengths_are_round():
    assert [content._round_length(v) for v in (750, 1999, 0.3, 5)] == [500, 1000, 0.2, 5]


def test_msi_values_are_drawn_on_a_grid_by_nearest_pixel_and_blank_elsewhere():
    import numpy as np

    points = np.array([[10.0, 10.0], [30.0, 10.0]])
    raster = content._nearest_raster(points, [1.0, 2.0], np.array([0.0, 0.0]), [60.0, 20.0], 20.0)
    assert raster.shape == (2, 6)  # cells of 10 µm over 60 × 20 µm
    assert raster[0].tolist()[:4] == [1.0, 1.0, 2.0, 2.0]
    assert np.isnan(raster[:, 5]).all()  # 35 µm from the nearest pixel: more than 0.75 pitch
