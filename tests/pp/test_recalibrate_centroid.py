"""sf.pp.recalibrate of centroid imzML files: each peak's m/z corrected, then binned.

Known answers: synthetic processed centroid files whose pixels drift by a known −20…+20 ppm
(by acquisition line, plus per-pixel jitter) come back within 1 ppm and with every planted peak
in one feature; a file without drift comes back as read_imzml reads it.
"""

from __future__ import annotations

import numpy as np
import pytest
from centroid_data import PEAKS, line_drift, write_centroid
from spectra_data import profile_table
from test_recalibrate_stream import _write

import spatialfuse as sf
from spatialfuse.errors import FileFormatError

LOCK = PEAKS[[1, 4, 6]]
NX, NY = 8, 6


@pytest.fixture(scope="module")
def drift():
    return line_drift(NX, NY)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory, drift):
    path = tmp_path_factory.mktemp("centroid") / "drifted.imzML"
    return write_centroid(path, nx=NX, ny=NY, drift_ppm=drift, jitter_ppm=0.2)


def _features_near(adata, mz, ppm=40.0):
    """Indices of the features within ± ppm of ``mz`` found in 3 pixels or more.

    (The weak random noise peaks each make a feature of one pixel.)
    """
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    common = (x > 0).sum(axis=0) >= 3
    near = np.abs(adata.var["mz"].to_numpy() - mz) <= mz * ppm * 1e-6
    return np.flatnonzero(near & common)


def test_lock_masses_remove_the_drift_and_each_peak_is_one_feature(drifted, drift):
    out = sf.pp.recalibrate(drifted, reference_mz=LOCK)
    info = out.uns["recalibration"]
    assert info["spectrum_type"] == "centroid"
    assert info["median_abs_ppm_before"] > 8
    assert info["median_abs_ppm_after"] <= 1
    assert (info["ppm_after"] <= 1).all()
    np.testing.assert_allclose(out.obs["recalibration_ppm"], drift, atol=0.6)
    assert (out.obs["recalibration_n_found"] == LOCK.size).all()
    read = sf.io.read_imzml(drifted)
    split = [len(_features_near(read, m)) for m in PEAKS]
    assert min(split) >= 3  # uncorrected: each peak smeared over several 5-ppm features
    x = out.X.toarray() if hasattr(out.X, "toarray") else np.asarray(out.X)
    for m in PEAKS:  # corrected: one feature, at the true m/z, holding the whole peak
        (j,) = _features_near(out, m)
        assert abs(out.var["mz"].iloc[j] - m) / m * 1e6 < 1
        assert (x[:, j] >= 50).all()  # the peak (heights 50-600) in every pixel, none split off
    # the same file, the same pixels and positions as read_imzml writes them
    assert list(out.obs_names) == list(read.obs_names)
    np.testing.assert_array_equal(out.obsm["spatial"], read.obsm["spatial"])
    np.testing.assert_allclose(out.obs["tic"], read.obs["tic"])
    assert out.uns["spatialfuse"]["windows"]["recalibrated"] is True


def test_own_references_align_the_pixels(drifted, drift):
    out = sf.pp.recalibrate(drifted, n_references=5)
    info = out.uns["recalibration"]
    assert info["reference_source"].startswith("data")
    assert info["reference_mz"].size == 5
    # every reference is a planted peak (the weak noise peaks are in too few pixels)
    assert all(np.min(np.abs(PEAKS - r) / r * 1e6) < 25 for r in info["reference_mz"])
    assert info["median_abs_ppm_after"] <= 1
    offsets = out.obs["recalibration_ppm"].to_numpy()
    # aligned to the mean: the drift up to one constant
    np.testing.assert_allclose(offsets - offsets.mean(), drift - drift.mean(), atol=0.6)
    for m in PEAKS:
        assert len(_features_near(out, m)) == 1


def test_one_model_per_line(tmp_path):
    per_line = np.repeat(np.linspace(-20, 20, NY), NX)
    path = write_centroid(tmp_path / "lines.imzML", nx=NX, ny=NY, drift_ppm=per_line, jitter_ppm=1)
    out = sf.pp.recalibrate(path, reference_mz=LOCK, group_by="imzml_y")
    assert out.uns["recalibration"]["group_by"] == "imzml_y"
    np.testing.assert_allclose(out.obs["recalibration_ppm"], per_line, atol=0.5)
    # one value per line
    assert out.obs.groupby("imzml_y")["recalibration_ppm"].nunique().max() == 1


def test_a_linear_drift_needs_the_linear_model(tmp_path):
    rng = np.random.default_rng(4)
    offset, slope = rng.uniform(-10, 10, NX * NY), rng.uniform(-0.05, 0.05, NX * NY)
    path = write_centroid(
        tmp_path / "linear.imzML",
        nx=NX,
        ny=NY,
        drift_ppm=offset,
        slope_ppm_per_mz=slope,
        n_noise=0,  # (a noise peak near a lock mass moves its weighted m/z a little)
    )
    lock = PEAKS[[0, 2, 4, 6, 7]]
    shift = sf.pp.recalibrate(path, reference_mz=lock, model="shift")
    linear = sf.pp.recalibrate(path, reference_mz=lock, model="linear")
    assert linear.uns["recalibration"]["median_abs_ppm_after"] < 0.1
    assert shift.uns["recalibration"]["median_abs_ppm_after"] > 1
    # lock masses centred on their mean: the fitted offset is the offset there
    centre_shift = offset + slope * (lock.mean() - PEAKS.mean())
    np.testing.assert_allclose(linear.obs["recalibration_ppm"], centre_shift, atol=1e-3)
    np.testing.assert_allclose(linear.obs["recalibration_slope"], slope, atol=1e-4)


def test_no_drift_comes_back_unchanged(tmp_path):
    path = write_centroid(tmp_path / "still.imzML", nx=4, ny=3)
    out = sf.pp.recalibrate(path)
    read = sf.io.read_imzml(path)
    assert out.uns["recalibration"]["median_abs_ppm_before"] < 1e-6
    assert np.abs(out.obs["recalibration_ppm"]).max() < 1e-6
    np.testing.assert_allclose(out.var["mz"], read.var["mz"], rtol=1e-12)
    np.testing.assert_array_equal(out.var_names, read.var_names)
    dense = [a.toarray() if hasattr(a, "toarray") else np.asarray(a) for a in (out.X, read.X)]
    np.testing.assert_array_equal(*dense)


def test_given_features_are_the_table_windows(drifted):
    features = sf.io.FeatureOptions(mz=PEAKS, ppm=3)
    out = sf.pp.recalibrate(drifted, reference_mz=LOCK, features=features)
    read = sf.io.read_imzml(drifted, features=features)
    np.testing.assert_allclose(out.var["mz"], PEAKS)
    got = out.X.toarray() if hasattr(out.X, "toarray") else np.asarray(out.X)
    was = read.X.toarray() if hasattr(read.X, "toarray") else np.asarray(read.X)
    assert (got > 0).all()  # ± 3 ppm catches every corrected peak ...
    assert (was == 0).mean() > 0.5  # ... and misses most of the drifted ones


def test_a_continuous_centroid_file_is_recalibrated_as_centroids(tmp_path):
    path = write_centroid(tmp_path / "cc.imzML", nx=4, ny=3, mode="continuous")
    out = sf.pp.recalibrate(path, reference_mz=LOCK)
    info = out.uns["recalibration"]
    assert info["spectrum_type"] == "centroid"
    assert info["median_abs_ppm_before"] == pytest.approx(0.0, abs=1e-9)
    for m in PEAKS:
        assert len(_features_near(out, m)) == 1


def _profile_file(tmp_path, mode):
    """Four profile spectra (the stream tests' writer: processed ones declared centroid)."""
    return _write(
        tmp_path / f"{mode}_profile.imzML", profile_table(n_pixels=4, seed=2), 4, mode=mode
    )


def test_a_profile_file_is_refused_as_centroids(tmp_path):
    path = _profile_file(tmp_path, "continuous")
    with pytest.raises(FileFormatError, match=r"continuous_profile\.imzML.*profile spectra"):
        sf.pp.recalibrate(path, spectrum_type="centroid", reference_mz=LOCK)
    # auto: the profile path, and uns says so
    out = sf.pp.recalibrate(path, reference_mz=LOCK)
    assert out.uns["recalibration"]["spectrum_type"] == "profile"


def test_processed_profile_declared_as_centroid_is_told_by_its_data(tmp_path):
    """Processed profile spectra on one grid (every pixel the same m/z, as a TOF export with
    zeros left out writes them) are recalibrated on that grid: the continuous file's result."""
    # the writer declares processed spectra as centroids; these are profiles
    path = _profile_file(tmp_path, "processed")
    assert sf.io.ImzMLReader(path).spectrum_type == "centroid"
    out = sf.pp.recalibrate(path, reference_mz=LOCK)
    assert out.uns["recalibration"]["spectrum_type"] == "profile"
    same = sf.pp.recalibrate(_profile_file(tmp_path, "continuous"), reference_mz=LOCK)
    np.testing.assert_allclose(
        out.obs["recalibration_ppm"], same.obs["recalibration_ppm"], atol=1e-9
    )
    x = out.X.toarray() if hasattr(out.X, "toarray") else np.asarray(out.X)
    np.testing.assert_allclose(x, np.asarray(same.X), rtol=1e-5, atol=1e-4)


def test_processed_profile_whose_mz_move_from_pixel_to_pixel_is_refused(tmp_path):
    """Each pixel's axis 0.3 ppm further than the last: no shared grid, refused by name."""
    from spatialfuse.datasets._writers import write_imzml

    table = profile_table(n_pixels=4, seed=2)
    mz = table.var["mz"].to_numpy()
    path = tmp_path / "moving_profile.imzML"
    write_imzml(
        path,
        np.array([(i + 1, 1) for i in range(4)]),
        [mz * (1 + 0.3e-6 * i) for i in range(4)],
        list(np.asarray(table.X)),
        mode="processed",
        pixel_size_um=(20.0, 20.0),
        uuid_bytes=bytes(range(16)),
        version="1.1.0",
    )
    with pytest.raises(FileFormatError, match=r"moving_profile\.imzML.*differ from pixel to"):
        sf.pp.recalibrate(path, reference_mz=LOCK)


def test_bad_references_are_named(drifted):
    with pytest.raises(FileFormatError, match=r"drifted\.imzML.*outside the file's m/z range"):
        sf.pp.recalibrate(drifted, reference_mz=[150.0, 401.0552])
    with pytest.raises(FileFormatError, match=r"drifted\.imzML.*no peak within"):
        sf.pp.recalibrate(drifted, reference_mz=[333.3333], ppm=1)
    with pytest.raises(ValueError, match="give the imzML path"):
        sf.pp.recalibrate(sf.io.read_imzml(drifted), spectrum_type="centroid")
    with pytest.raises(ValueError, match="spectrum_type must be one of"):
        sf.pp.recalibrate(drifted, spectrum_type="peaks")


def test_chunks_of_a_few_pixels_give_the_same_table(drifted, monkeypatch):
    from spatialfuse.pp import _recalibrate_centroid

    whole = sf.pp.recalibrate(drifted, n_references=5)
    monkeypatch.setattr(_recalibrate_centroid, "_CHUNK_PEAKS", 60)  # 2 spectra a chunk
    chunked = sf.pp.recalibrate(drifted, n_references=5, show_progress=True)
    np.testing.assert_array_equal(
        chunked.uns["recalibration"]["reference_mz"], whole.uns["recalibration"]["reference_mz"]
    )
    np.testing.assert_allclose(chunked.obs["recalibration_ppm"], whole.obs["recalibration_ppm"])
    np.testing.assert_allclose(chunked.var["mz"], whole.var["mz"])
    dense = [a.toarray() if hasattr(a, "toarray") else np.asarray(a) for a in (chunked.X, whole.X)]
    np.testing.assert_allclose(*dense, rtol=1e-6)


def test_the_real_bladder_has_no_per_pixel_drift_to_remove(shared_data):
    """Real data: SpaMTP's 79 bladder peaks, stored as a continuous centroid file.

    Every pixel's peaks sit on one shared m/z axis (the peaks were binned upstream), so there
    is no per-pixel m/z spread to measure: 0 ppm before and after (float rounding), and the
    table comes back as read_imzml reads it.
    """
    path = shared_data / "paired" / "bladder_spamtp" / "mouse_bladder_79peaks.imzML"
    if not path.exists():
        pytest.skip(f"{path} absent")
    out = sf.pp.recalibrate(path, n_references=10)
    info = out.uns["recalibration"]
    assert info["spectrum_type"] == "centroid"
    assert info["reference_mz"].size == 10
    assert info["median_abs_ppm_before"] < 1e-6 and info["median_abs_ppm_after"] < 1e-6
    assert np.abs(out.obs["recalibration_ppm"]).max() < 1e-6
    read = sf.io.read_imzml(path)
    np.testing.assert_allclose(out.var["mz"], read.var["mz"], rtol=1e-9)
    dense = [a.toarray() if hasattr(a, "toarray") else np.asarray(a) for a in (out.X, read.X)]
    np.testing.assert_allclose(*dense, rtol=1e-6)
