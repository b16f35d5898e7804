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


def test_a_failed_check_without_its_own_remedy_still_says_what_to_do():
    failed = QualityCheck.judged(
        "could not register",
        "",
        None,
        "",
        "the fixed image is uniform: no tissue to register",
        "",  # as register() records it: no remedy of its own
    )
    section = content._registration(_record([failed], ok=False))
    note = section.notes[0]
    assert note.startswith("could not register — the fixed image is uniform")
    assert "What to do:" in note and "`spatialfuse pick-landmarks CONFIG msi:he`" in note
    assert "`accept_failed: true`" in note and "`--accept-failed`" in note


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


def _visium_with_picture(tmp_path, kind: str):
    """A small Visium folder read back, its hires image replaced by a bright-field or
    fluorescence picture: a disc of tissue on glass (white) or on a dark background."""
    import sys
    import warnings

    import numpy as np

    import spatialfuse as sf

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    from test_visium import make_visium

    make_visium(tmp_path / "outs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visium = sf.io.read_visium(tmp_path / "outs")
    entry = next(iter(visium.uns["spatial"].values()))
    rows, cols = entry["images"]["hires"].shape[:2]
    yy, xx = np.mgrid[0:rows, 0:cols]
    disc = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 < (0.35 * min(rows, cols)) ** 2
    if kind == "brightfield":  # pink tissue on white glass
        picture = np.where(disc[..., None], [0.85, 0.45, 0.7], [1.0, 1.0, 1.0])
    else:  # emitting tissue (one channel) on a dark background
        picture = np.where(disc, 0.8, 0.02)
    # texture, as every real picture has (glass is smooth, tissue less so: how the background is
    # told apart, spatialfuse.reg's tissue mask)
    grain = np.random.default_rng(0).normal(0, 1, picture.shape[:2])
    grain = np.where(disc, 0.05, 0.005) * grain
    picture = np.clip(picture + (grain[..., None] if picture.ndim == 3 else grain), 0, 1)
    entry["images"]["hires"] = picture.astype(np.float32)
    return visium


def _msi_over(visium):
    """An MSI AnnData whose pixels sit on the left half of the Visium spots (Visium µm)."""
    import anndata as ad
    import numpy as np

    from spatialfuse.reg import AffineTransform

    spots_um = np.asarray(visium.obsm["spatial"], float) * visium.uns["spatialfuse"]["um_per_px"]
    low, high = spots_um.min(axis=0), spots_um.max(axis=0)
    xs = np.arange(low[0], (low[0] + high[0]) / 2, 25.0)
    ys = np.arange(low[1], high[1], 25.0)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    msi = ad.AnnData(np.linspace(1.0, 2.0, len(points) * 2).reshape(-1, 2).astype(np.float32))
    msi.obsm["spatial"] = points
    msi.uns["spatialfuse"] = {"pixel_size_um": [25.0, 25.0]}
    return msi, AffineTransform(np.eye(3))


def test_composed_figure_draws_a_brightfield_stain_grey_under_viridis(tmp_path):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    visium = _visium_with_picture(tmp_path, "brightfield")
    msi, identity = _msi_over(visium)
    fig = content._msi_on_visium(msi, visium, identity)
    ax = fig.axes[0]
    stain, tic = ax.images
    picture = stain.get_array()
    assert np.all(np.ptp(picture, axis=2) < 1e-12)  # grey: the pink disc lost its colour
    assert tic.get_cmap().name == "viridis"
    assert np.allclose(
        ax.collections[0].get_edgecolor()[0][:3], matplotlib.colors.to_rgb("#d62728")
    )
    assert "(grey)" in ax.get_title() and "red" in ax.get_title()
    # rendered: glass is white where no MSI pixel is, the MSI in viridis blended over the grey
    fig.set_dpi(200)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba(), float)[..., :3] / 255
    values = np.ma.filled(tic.get_array().astype(float), np.nan)
    left, right, bottom, top = tic.get_extent()

    def at(x, y):
        dx, dy = ax.transData.transform((x, y))
        return pixels[round(pixels.shape[0] - dy), round(dx)]

    rows, cols = values.shape
    row = rows // 2
    col = next(c for c in range(cols - 3, 0, -1) if np.isnan(values[row, c]))  # right: no MSI
    x = left + (col + 0.5) * (right - left) / cols
    y = top + (row + 0.5) * (bottom - top) / rows
    colour = at(x, y)
    assert np.ptp(colour) <= 3 / 255  # grey (the disc's luminance or the white glass)
    col = next(c for c in range(2, cols) if np.isfinite(values[row, c : c + 3]).all())
    x = left + (col + 1.5) * (right - left) / cols
    value = values[row, col + 1]
    grey = np.ma.getdata(stain.get_array())
    s_left, s_right, s_bottom, s_top = stain.get_extent()
    under = grey[
        int((y - s_top) / (s_bottom - s_top) * grey.shape[0]),
        int((x - s_left) / (s_right - s_left) * grey.shape[1]),
    ]
    viridis = np.array(matplotlib.colormaps["viridis"](tic.norm(value))[:3])
    assert tic.get_alpha() == 0.6
    np.testing.assert_allclose(at(x, y), 0.6 * viridis + 0.4 * under, atol=3 / 255)


def test_composed_figure_draws_fluorescence_on_black_under_plasma(tmp_path):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    visium = _visium_with_picture(tmp_path, "fluorescence")
    msi, identity = _msi_over(visium)
    fig = content._msi_on_visium(msi, visium, identity)
    ax = fig.axes[0]
    stain, tic = ax.images
    assert tic.get_cmap().name == "plasma"
    picture = np.ma.getdata(stain.get_array())
    assert np.all(np.ptp(picture, axis=2) < 1e-12)  # one channel: grey levels
    assert np.median(picture[..., 0]) < 0.05  # on black (stretched: the background is dark)
    assert np.allclose(ax.collections[0].get_edgecolor()[0][:3], 1.0)  # white spot outlines
    assert "(black)" in ax.get_title() and "white" in ax.get_title()


def test_tables_name_their_columns_in_words_and_leave_out_empty_ones():
    table = pd.DataFrame(
        {"gene": ["A"], "ion": ["mz-1"], "mz": [1.0], "ion_name": [None], "p_adjusted": [0.01]}
    )
    worded = content._worded(table, content.PAIR_WORDS)
    assert list(worded.columns) == ["gene", "ion", "m/z", "adjusted p"]  # no empty ion name
    summary = content._worded_keys({"n_spots_with_msi": 3, "method": "area"})
    assert summary == {"spots with MSI data": 3, "method": "area"}


def test_coverage_is_drawn_on_a_0_to_1_scale_over_the_grey_stain_with_a_scale_bar(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np

    matplotlib.use("Agg")
    visium = _visium_with_picture(tmp_path, "brightfield")
    visium.obs["msi_coverage"] = 1.0  # every spot fully covered
    fig, ax = plt.subplots()
    content._spot_values(visium, "msi_coverage", "coverage", ax, vmin=0.0, vmax=1.0)
    spots = next(c for c in ax.collections if c.get_array() is not None)
    assert spots.norm.vmin == 0.0 and spots.norm.vmax == 1.0  # full coverage reads as full
    assert spots.get_cmap().name == "viridis"
    drawn = np.asarray(ax.images[0].get_array())
    assert drawn.ndim == 3 and np.ptp(drawn[..., :3], axis=2).max() < 1e-6  # the H&E in grey
    bars = [a for a in ax.artists if type(a).__name__ == "ScaleBar"]
    assert len(bars) == 1 and bars[0].units == "um"
    plt.close(fig)
    assert np.isfinite(visium.uns["spatialfuse"]["um_per_px"])


def test_every_clustering_method_is_named_in_words():
    from typing import get_args

    from spatialfuse.workflow._config import Clustering

    methods = get_args(Clustering.model_fields["method"].annotation)
    assert methods and set(methods) <= set(content.CLUSTER_METHODS)
    assert content.WEIGHT_ROWS["50%"] == "median"
