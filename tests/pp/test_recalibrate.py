"""sf.pp.recalibrate: injected per-pixel drift measured and removed (synthetic and real spectra)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
from spectra_data import PEAKS, profile_table  # tests/pp/spectra_data.py

import spatialfuse as sf
from spatialfuse.pp._recalibrate import measure_errors

LOCK = PEAKS[[0, 2, 4, 6]]
HELD_OUT = [1, 3, 5, 7]


@pytest.fixture(scope="module")
def drifted():
    drift = np.random.default_rng(5).uniform(-20, 20, 16)
    return profile_table(drift_ppm=drift, n_pixels=16), drift


def test_lock_masses_remove_a_known_drift_to_under_a_ppm(drifted):
    table, drift = drifted
    out = sf.pp.recalibrate(table, reference_mz=LOCK, copy=True)
    np.testing.assert_allclose(out.obs["recalibration_ppm"], drift, atol=0.6)
    info = out.uns["recalibration"]
    assert info["median_abs_ppm_before"] > 8  # ±20 ppm uniform: ~10 ppm median
    assert info["median_abs_ppm_after"] < 0.5
    # Peaks that were not references are corrected too.
    held = measure_errors(out, PEAKS[HELD_OUT])
    assert np.nanmedian(np.abs(held)) < 1.0
    before = measure_errors(table, PEAKS[HELD_OUT])
    assert np.nanmedian(np.abs(before)) > 8
    assert table.obs.shape[1] == 0  # copy=True left the input alone
    # Peak picking after recalibration finds each planted peak within 1 ppm on the sharper mean.
    peaks = sf.pp.pick_peaks(out, snr=5, baseline_window=201)
    assert peaks.n_vars == PEAKS.size
    assert np.abs((peaks.var["mz"].to_numpy() - PEAKS) / PEAKS * 1e6).max() < 1.0


def test_own_peaks_align_pixels_to_each_other(drifted):
    table, drift = drifted
    out = sf.pp.recalibrate(table, n_references=5, copy=True)
    estimate = out.obs["recalibration_ppm"].to_numpy()
    # Against the mean spectrum, the drift is known up to the mean's own offset.
    np.testing.assert_allclose(estimate - estimate.mean(), drift - drift.mean(), atol=0.6)
    assert out.uns["recalibration"]["reference_mz"].size == 5
    assert out.uns["recalibration"]["median_abs_ppm_after"] < 0.5


def test_linear_model_follows_drift_that_grows_with_mz():
    n, centre = 12, LOCK.mean()
    offset, slope = np.linspace(-15, 15, n), np.linspace(0.04, -0.04, n)
    rows = [
        profile_table(n_pixels=1, peaks=PEAKS * (1 + (o + s * (PEAKS - centre)) * 1e-6), seed=i)
        for i, (o, s) in enumerate(zip(offset, slope, strict=True))
    ]
    table = ad.AnnData(np.concatenate([r.X for r in rows]), var=rows[0].var)
    shift = sf.pp.recalibrate(table, reference_mz=LOCK, model="shift", copy=True)
    linear = sf.pp.recalibrate(table, reference_mz=LOCK, model="linear", copy=True)
    np.testing.assert_allclose(linear.obs["recalibration_slope"], slope, atol=0.005)
    held_shift = np.nanmedian(np.abs(measure_errors(shift, PEAKS[HELD_OUT])))
    held_linear = np.nanmedian(np.abs(measure_errors(linear, PEAKS[HELD_OUT])))
    assert held_linear < 0.6 < held_shift


def test_in_place_writes_the_named_slots(drifted):
    table = drifted[0].copy()
    assert sf.pp.recalibrate(table, reference_mz=LOCK, key_added="lock") is None
    assert {"lock_ppm", "lock_slope", "lock_n_found"} <= set(table.obs)
    assert (table.obs["lock_n_found"] == LOCK.size).all()
    assert table.X.dtype == np.float32


def test_bad_input_is_named(drifted):
    table = drifted[0]
    with pytest.raises(ValueError, match="outside the m/z axis"):
        sf.pp.recalibrate(table, reference_mz=[50.0], copy=True)
    with pytest.raises(ValueError, match="model"):
        sf.pp.recalibrate(table, reference_mz=LOCK, model="warp", copy=True)
    with pytest.raises(ValueError, match="sorted"):
        sf.pp.recalibrate(table[:, ::-1].copy(), reference_mz=LOCK, copy=True)


def test_real_tof_spectra_injected_drift_is_recovered(shared_data):
    """Real MALDI-TOF peptide spectra (Cardinal's out6, 9 pixels, ~35 ppm per axis point)."""
    path = shared_data / "imzml" / "galaxyp_cardinal" / "out6.imzml"
    if not path.exists():
        pytest.skip(f"{path} not in the shared data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sf.io.read_imzml(path, pixel_size_um=100)
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    mz = table.var["mz"].to_numpy()
    injected = np.array([-20, -10, -5, 0, 5, 10, 15, 20, -15.0])
    moved = table.copy()
    moved.X = np.stack(
        [np.interp(mz * (1 - d * 1e-6), mz, row) for d, row in zip(injected, x, strict=True)]
    ).astype(np.float32)
    native = sf.pp.recalibrate(table, copy=True)
    refs = native.uns["recalibration"]["reference_mz"]
    out = sf.pp.recalibrate(moved, reference_mz=refs, copy=True)
    recovered = out.obs["recalibration_ppm"].to_numpy() - native.obs["recalibration_ppm"].to_numpy()
    assert np.abs(recovered - injected).max() < 10  # noisy real peaks, coarse axis
    assert np.corrcoef(recovered, injected)[0, 1] > 0.95
    info = out.uns["recalibration"]
    assert info["median_abs_ppm_after"] < info["median_abs_ppm_before"]


def test_dask_and_sparse_tables_and_rows_without_data(drifted):
    """A dask X (read_msi_zarr) is measured chunk by chunk and stays lazy; NaN rows stay NaN."""
    import dask.array as da
    from scipy import sparse

    table, drift = drifted
    table = table.copy()
    table.X[3, :] = np.nan  # a spot without MSI data
    dense = sf.pp.recalibrate(table, reference_mz=LOCK, copy=True)
    assert np.isnan(dense.X[3]).all() and np.isfinite(np.delete(dense.X, 3, axis=0)).all()
    assert dense.obs["recalibration_n_found"].iloc[3] == 0
    keep = np.arange(table.n_obs) != 3
    np.testing.assert_allclose(dense.obs["recalibration_ppm"][keep], drift[keep], atol=0.6)

    lazy = table.copy()
    lazy.X = da.from_array(table.X, chunks=(5, 30_000))
    out = sf.pp.recalibrate(lazy, reference_mz=LOCK, copy=True)
    assert isinstance(out.X, da.Array)
    np.testing.assert_allclose(out.X.compute(), dense.X, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(out.obs["recalibration_ppm"], dense.obs["recalibration_ppm"])

    clean = drifted[0]
    sparse_table = clean.copy()
    sparse_table.X = sparse.csr_matrix(np.where(clean.X > 0, clean.X, 0))
    out = sf.pp.recalibrate(sparse_table, reference_mz=LOCK, copy=True)
    assert sparse.issparse(out.X)
    assert out.uns["recalibration"]["median_abs_ppm_after"] < 0.5
    # rebuilt block by block as sparse: the same values as the dense table's recalibration
    dense_in = clean.copy()
    dense_in.X = np.where(clean.X > 0, clean.X, 0).astype(np.float32)
    from_dense = sf.pp.recalibrate(dense_in, reference_mz=LOCK, copy=True)
    np.testing.assert_allclose(out.X.toarray(), from_dense.X, rtol=1e-6, atol=1e-6)


def test_one_model_per_acquisition_line_is_steadier_on_noisy_pixels():
    """Drift that changes from line to line: pooling a line's pixels beats pixel by pixel."""
    n_lines, per_line = 4, 8
    line_drift = np.array([-15.0, -5.0, 5.0, 15.0])
    drift = np.repeat(line_drift, per_line)
    heights = np.full(PEAKS.size, 40.0)  # 40σ peaks: single-pixel centroids scatter
    table = profile_table(
        drift_ppm=drift, n_pixels=n_lines * per_line, heights=heights, noise=1.0, seed=7
    )
    table.obs["imzml_y"] = np.repeat(np.arange(1, n_lines + 1), per_line)
    pixel = sf.pp.recalibrate(table, reference_mz=LOCK, copy=True)
    line = sf.pp.recalibrate(table, reference_mz=LOCK, group_by="imzml_y", copy=True)
    pixel_error = np.abs(pixel.obs["recalibration_ppm"].to_numpy() - drift)
    line_error = np.abs(line.obs["recalibration_ppm"].to_numpy() - drift)
    # Measured: line max 0.66 ppm, mean 0.49; pixel by pixel max 2.4, mean 0.86.
    assert line_error.max() < 1.0
    assert line_error.mean() < pixel_error.mean()
    assert line_error.max() < 0.5 * pixel_error.max()
    assert line.uns["recalibration"]["group_by"] == "imzml_y"
    # One value per line.
    assert line.obs.groupby("imzml_y")["recalibration_ppm"].nunique().eq(1).all()
    with pytest.raises(ValueError, match="group_by"):
        sf.pp.recalibrate(table, reference_mz=LOCK, group_by="line", copy=True)


def test_nothing_found_is_said_not_returned_as_recalibrated(drifted):
    """References where no pixel has a peak: a DataWarning, and the table unchanged."""
    table = drifted[0]
    gaps = (PEAKS[:-1] + PEAKS[1:]) / 2  # halfway between planted peaks: no peak within 5 ppm
    with pytest.warns(sf.errors.DataWarning, match="nothing was measured or corrected") as said:
        out = sf.pp.recalibrate(table, reference_mz=gaps[:3], ppm=5.0, copy=True)
    assert out.uns["recalibration"]["median_abs_ppm_before"] is None
    assert "store of centroid spectra" in str(said[0].message)  # nor from a store: the path
    np.testing.assert_allclose(out.obs["recalibration_ppm"], 0.0)
    np.testing.assert_allclose(np.asarray(out.X), np.asarray(table.X), rtol=1e-6, atol=1e-6)
