"""sf.pp.recalibrate(model="piecewise"): msiWarp-style warping of drift that bends across m/z.

Known answers (``drift_data``): 24 planted peaks, 13 of them references and 11 held out between
them, a drift of about +15 ppm at the low end, −10 ppm in the middle and +5 ppm at the high end,
scaled and offset per acquisition line. The piecewise model brings the held-out peaks within a
ppm where the linear one cannot; on a pure shift it is as good as the shift model.
"""

from __future__ import annotations

import numpy as np
import pytest
from drift_data import (
    HELD_OUT,
    MANY_PEAKS,
    REFERENCES,
    fitted_drift,
    pixel_drift,
    profile_bent,
    write_bent_centroid,
)
from test_recalibrate_stream import _write

import spatialfuse as sf
from spatialfuse.errors import DataWarning
from spatialfuse.pp._recalibrate import measure_errors

HELD = np.isin(MANY_PEAKS, HELD_OUT)


@pytest.fixture(scope="module")
def bent():
    """4 lines × 6 pixels of profile spectra with a bent drift (planted ppm per peak)."""
    ppm, line = pixel_drift(4, 6, seed=0)
    table = profile_bent(ppm)
    table.obs["imzml_y"] = line + 1
    return table, ppm


def _held_error(out) -> float:
    """Median |ppm error| of the held-out peaks, measured on the corrected spectra."""
    return float(np.nanmedian(np.abs(measure_errors(out, HELD_OUT))))


def test_piecewise_removes_a_bent_drift_that_linear_cannot(bent):
    table, ppm = bent
    assert _held_error(table) > 3  # measured 3.5 ppm before
    linear = sf.pp.recalibrate(table, reference_mz=REFERENCES, model="linear", copy=True)
    piecewise = sf.pp.recalibrate(table, reference_mz=REFERENCES, model="piecewise", copy=True)
    # measured: piecewise 0.29 ppm, linear 3.9 ppm (a parabola is not a line; 3.5 before)
    assert _held_error(piecewise) <= 1.0
    assert _held_error(linear) > 3.0
    info = piecewise.uns["recalibration"]
    assert info["model"] == "piecewise" and info["n_nodes"] == 5
    assert info["median_abs_ppm_after"] < 0.6 < 3 < info["median_abs_ppm_before"]
    # the nodes sit at quantiles of the references, the outer ones on the outermost
    np.testing.assert_allclose(info["nodes_mz"], np.quantile(REFERENCES, np.linspace(0, 1, 5)))
    assert info["pixels_by_model"] == {"piecewise": 24, "linear": 0, "shift": 0}
    assert info["min_references_piecewise"] == 7
    assert piecewise.obsm["recalibration_nodes_ppm"].shape == (24, 5)
    # the drift the slots describe is the planted one at the held-out peaks
    model_error = np.abs(fitted_drift(piecewise, HELD_OUT) - ppm[:, HELD])
    assert np.median(model_error) < 0.5  # measured 0.24
    centre = REFERENCES.mean()
    planted_centre = np.array([np.interp(centre, MANY_PEAKS, row) for row in ppm])
    np.testing.assert_allclose(piecewise.obs["recalibration_ppm"], planted_centre, atol=1.5)


def test_more_nodes_follow_the_bend_closer(bent):
    table, _ = bent
    errors = [
        _held_error(
            sf.pp.recalibrate(
                table, reference_mz=REFERENCES, model="piecewise", n_nodes=k, copy=True
            )
        )
        for k in (3, 8)
    ]
    # measured: 3 nodes 1.0 ppm, 8 nodes 0.23 ppm
    assert errors[1] < errors[0]
    assert errors[1] <= 0.5


def test_one_piecewise_model_per_line(bent):
    table, _ = bent
    out = sf.pp.recalibrate(
        table, reference_mz=REFERENCES, model="piecewise", group_by="imzml_y", copy=True
    )
    assert _held_error(out) <= 1.0
    nodes = out.obsm["recalibration_nodes_ppm"]
    for line in np.unique(table.obs["imzml_y"]):
        rows = nodes[(table.obs["imzml_y"] == line).to_numpy()]
        assert (rows == rows[0]).all()
    assert out.uns["recalibration"]["pixels_by_model"]["piecewise"] == 24


def test_on_a_pure_shift_piecewise_is_as_good_as_shift():
    drift = np.random.default_rng(5).uniform(-20, 20, 12)
    table = profile_bent(np.repeat(drift[:, None], MANY_PEAKS.size, axis=1), seed=40)
    errors = {
        model: _held_error(
            sf.pp.recalibrate(table, reference_mz=REFERENCES, model=model, copy=True)
        )
        for model in ("shift", "piecewise")
    }
    # measured: 0.19 and 0.22 ppm (the floor of centroiding on a 10-ppm axis)
    assert errors["shift"] < 0.5
    assert errors["piecewise"] <= errors["shift"] + 0.2


def test_pixels_with_few_references_fall_back_and_uns_says_which(bent):
    table, _ = bent
    table = table.copy()
    mz = table.var["mz"].to_numpy()
    x = np.asarray(table.X)
    for row, erased in ((0, REFERENCES[:8]), (1, REFERENCES[:11])):
        for r in erased:  # the peak replaced by the spectrum's baseline there
            near = np.abs(mz - r) < r * 300e-6
            x[row, near] = np.median(x[row, near][:5])
    table.X = x
    out = sf.pp.recalibrate(table, reference_mz=REFERENCES, model="piecewise", copy=True)
    n_found = out.obs["recalibration_n_found"].to_numpy()
    assert n_found[0] == 5 and n_found[1] == 2  # below 7: not enough for 5 nodes
    info = out.uns["recalibration"]
    assert info["pixels_by_model"] == {"piecewise": 22, "linear": 1, "shift": 1}
    linear = sf.pp.recalibrate(table, reference_mz=REFERENCES, model="linear", copy=True)
    for column in ("recalibration_ppm", "recalibration_slope"):
        np.testing.assert_array_equal(out.obs[column][:2], linear.obs[column][:2])
    assert out.obs["recalibration_slope"].iloc[1] == 0  # the shift: no slope
    # too few references for any pixel: every pixel falls back, and a warning says so
    with pytest.warns(DataWarning, match="fell back for every pixel"):
        few = sf.pp.recalibrate(
            table, reference_mz=REFERENCES[::3], model="piecewise", n_nodes=5, copy=True
        )
    assert few.uns["recalibration"]["pixels_by_model"]["piecewise"] == 0


def test_centroid_file_warped_peak_by_peak(tmp_path):
    """A processed centroid file with the bent drift: each peak's m/z corrected, then binned."""
    ppm, _ = pixel_drift(6, 8, seed=2)
    path = write_bent_centroid(tmp_path / "bent.imzML", ppm, 8)
    out = {
        model: sf.pp.recalibrate(path, reference_mz=REFERENCES, model=model)
        for model in ("linear", "piecewise")
    }
    held = {m: np.median(np.abs(fitted_drift(a, HELD_OUT) - ppm[:, HELD])) for m, a in out.items()}
    # measured: piecewise 0.23 ppm, linear 5.0 ppm at the held-out peaks
    assert held["piecewise"] <= 1.0
    assert held["linear"] > 3.0
    info = out["piecewise"].uns["recalibration"]
    assert info["spectrum_type"] == "centroid" and info["model"] == "piecewise"
    assert info["median_abs_ppm_after"] < 1 < 5 < info["median_abs_ppm_before"]
    assert info["pixels_by_model"]["piecewise"] == 48
    # every held-out peak is one feature, within a ppm of its true m/z
    table = out["piecewise"]
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    common = (x > 0).sum(axis=0) >= 3
    centres = table.var["mz"].to_numpy()
    for m in HELD_OUT:
        near = np.flatnonzero(common & (np.abs(centres - m) <= m * 30e-6))
        assert near.size == 1
        assert abs(centres[near[0]] - m) / m * 1e6 < 1


def test_streamed_and_lazy_tables_warp_as_in_memory(bent, tmp_path):
    import dask.array as da

    table = bent[0][:8].copy()
    dense = sf.pp.recalibrate(table, reference_mz=REFERENCES, model="piecewise", copy=True)
    lazy = table.copy()
    lazy.X = da.from_array(np.asarray(table.X), chunks=(3, 30_000))
    out = sf.pp.recalibrate(lazy, reference_mz=REFERENCES, model="piecewise", copy=True)
    np.testing.assert_allclose(out.X.compute(), dense.X, rtol=1e-6)
    path = _write(tmp_path / "bent.imzML", table, 4)
    streamed = sf.pp.recalibrate(path, reference_mz=REFERENCES, model="piecewise")
    np.testing.assert_allclose(
        streamed.obsm["recalibration_nodes_ppm"], dense.obsm["recalibration_nodes_ppm"], atol=1e-3
    )
    np.testing.assert_allclose(np.asarray(streamed.X.compute()), dense.X, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("n_nodes", "error", "message"),
    [
        (2.5, TypeError, "n_nodes must be an integer >= 2, got float"),
        ("5", TypeError, "n_nodes must be an integer >= 2, got str"),
        (True, TypeError, "n_nodes must be an integer >= 2, got bool"),
        (1, ValueError, r"n_nodes must be an integer >= 2 \(nodes of the piecewise model\), got 1"),
        (-3, ValueError, "got -3"),
    ],
)
def test_a_bad_n_nodes_is_named(bent, n_nodes, error, message):
    with pytest.raises(error, match=message):
        sf.pp.recalibrate(
            bent[0], reference_mz=REFERENCES, model="piecewise", n_nodes=n_nodes, copy=True
        )


def test_the_run_config_takes_the_piecewise_model():
    import pydantic

    from spatialfuse.workflow import _config

    section = _config.Recalibration(enabled=True, model="piecewise", n_nodes=7)
    assert section.n_nodes == 7
    with pytest.raises(pydantic.ValidationError, match="n_nodes"):
        _config.Recalibration(model="piecewise", n_nodes=1)
