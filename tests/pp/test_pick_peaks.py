"""sf.pp.pick_peaks: known peaks in synthetic profile spectra, and real imzML files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from spectra_data import PEAKS, ppm_error, profile_table  # tests/pp/spectra_data.py

import spatialfuse as sf
from spatialfuse.pp._peaks import centroid_peaks, mad_noise, tophat_baseline


@pytest.fixture(scope="module")
def profile():
    return profile_table(n_pixels=12)


def test_recovers_planted_centres_within_half_a_ppm(profile):
    peaks = sf.pp.pick_peaks(profile, snr=5, baseline_window=201)
    # Every planted peak and nothing else: noise (σ=1 on a baseline of 20) is not a peak.
    assert peaks.n_vars == PEAKS.size
    errors = ppm_error(peaks.var["mz"].to_numpy(), PEAKS)
    assert np.abs(errors).max() < 0.5, errors  # FWHM is ~67 ppm, the axis step 10 ppm
    assert (peaks.var["frequency"] == 1.0).all()
    var = peaks.var
    assert ((var["mz_lo"] < var["mz"]) & (var["mz"] < var["mz_hi"])).all()
    # The extracted intensity is the pixel's sum over the window, read back independently.
    mz = profile.var["mz"].to_numpy()
    j = 3
    inside = (mz >= peaks.var["mz_lo"].iloc[j]) & (mz <= peaks.var["mz_hi"].iloc[j])
    expected = profile.X[:, inside].sum(axis=1)
    np.testing.assert_allclose(np.asarray(peaks.X[:, j]).ravel(), expected, rtol=1e-4)
    assert "reference_mz" in peaks.uns["peaks"] and peaks.uns["peaks"]["n_peaks"] == PEAKS.size


def test_snr_threshold_keeps_strong_and_drops_weak_peaks():
    heights = np.array([200.0, 200.0, 2.0, 200.0, 2.0, 200.0, 200.0, 200.0])  # two at 2σ
    table = profile_table(heights=heights, n_pixels=1, baseline=0.0, seed=3)
    strict = sf.pp.pick_peaks(table, snr=8)
    found = strict.var["mz"].to_numpy()
    strong = PEAKS[heights > 10]
    assert np.abs(ppm_error(found, strong)).max() < 1.0
    assert found.size == strong.size  # the 2σ peaks and the noise stay below 8σ
    loose = sf.pp.pick_peaks(table, snr=1)
    assert loose.n_vars > found.size  # at 1σ noise maxima pass: the threshold is what filters


def test_frequency_counts_the_pixels_holding_each_peak():
    rng = np.random.default_rng(1)
    presence = rng.random((20, PEAKS.size)) < np.linspace(0.2, 1.0, PEAKS.size)
    presence[0] = True  # every peak somewhere
    table = profile_table(n_pixels=20, presence=presence, baseline=0.0)
    peaks = sf.pp.pick_peaks(table, snr=5)
    assert peaks.n_vars == PEAKS.size
    np.testing.assert_allclose(peaks.var["frequency"].to_numpy(), presence.mean(axis=0))
    kept = sf.pp.pick_peaks(table, snr=5, min_frequency=0.5)
    assert kept.n_vars == int((presence.mean(axis=0) >= 0.5).sum())


def test_centroid_is_exact_for_a_sampled_gaussian():
    x = np.linspace(99.0, 101.0, 201) ** 1.001  # uneven steps
    centre = 100.00371
    y = 50 * np.exp(-0.5 * ((x - centre) / 0.02) ** 2)
    peaks = centroid_peaks(x, y, snr=3)
    assert len(peaks) == 1
    assert abs(peaks.mz[0] - centre) / centre * 1e6 < 1e-3


def test_noise_and_baseline_helpers():
    rng = np.random.default_rng(0)
    level, noise = mad_noise(rng.normal(10.0, 2.0, 100_000))
    assert abs(level - 10) < 0.05 and abs(noise - 2.0) < 0.05
    assert mad_noise(np.zeros(10)) == (0.0, 0.0)
    ramp = np.linspace(0, 10, 500)
    spiky = ramp.copy()
    spiky[250:255] += 100
    np.testing.assert_allclose(tophat_baseline(spiky, 31)[240:265], ramp[240:265], atol=0.7)


def test_bad_options_raise_value_errors(profile):
    with pytest.raises(ValueError, match="snr"):
        sf.pp.pick_peaks(profile, snr=0)
    with pytest.raises(ValueError, match="half_window"):
        sf.pp.pick_peaks(profile, half_window=0)
    with pytest.raises(ValueError, match="reference"):
        sf.pp.pick_peaks(profile, reference="median")
    unsorted = profile[:, ::-1].copy()
    with pytest.raises(ValueError, match="sorted"):
        sf.pp.pick_peaks(unsorted)
    no_mz = profile.copy()
    del no_mz.var["mz"]
    with pytest.raises(ValueError, match="mz"):
        sf.pp.pick_peaks(no_mz)


# ------------------------------------------------------------------------------- real files


def _cardinal_features(path) -> np.ndarray:
    from pyimzml.ImzMLParser import ImzMLParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = ImzMLParser(str(path))
    mz = np.asarray(parser.getspectrum(0)[0], dtype=np.float64)
    used = np.zeros(mz.size, dtype=bool)
    for i in range(len(parser.coordinates)):
        used |= np.asarray(parser.getspectrum(i)[1]) > 0
    return mz[used]


def test_real_profile_peaks_match_cardinal_peak_picking(shared_data):
    """Cardinal's own peak picking of the same real profile file, read with pyimzML."""
    folder = shared_data / "imzml" / "galaxyp_cardinal"
    profile_file = folder / "123_combined.imzml"
    cardinal_file = folder / "preprocessing_results2.imzml"
    if not (profile_file.exists() and cardinal_file.exists()):
        pytest.skip("Cardinal profile / peak-picked files not in the shared data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peaks = sf.pp.pick_peaks(profile_file, snr=10)
    cardinal = _cardinal_features(cardinal_file)
    mine = peaks.var["mz"].to_numpy()
    to_mine = np.abs(cardinal[:, None] - mine[None, :]).min(axis=1)
    to_cardinal = np.abs(mine[:, None] - cardinal[None, :]).min(axis=1)
    # 0.1 m/z is 1.2 sampling steps of the 0.083-step profile axis.
    assert (to_mine < 0.1).mean() >= 0.95, (to_mine < 0.1).mean()
    assert (to_cardinal < 0.1).mean() >= 0.95, (to_cardinal < 0.1).mean()
    assert np.median(to_mine) < 0.04


def test_real_processed_and_continuous_files_give_the_same_peaks(shared_data):
    folder = shared_data / "imzml" / "pyimzML_examples"
    if not folder.is_dir():
        pytest.skip("pyimzML example files not in the shared data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        continuous = sf.pp.pick_peaks(folder / "Example_Continuous.imzML", snr=10)
        processed = sf.pp.pick_peaks(folder / "Example_Processed.imzML", snr=10)
        table = sf.pp.pick_peaks(sf.io.read_imzml(folder / "Example_Continuous.imzML"), snr=10)
    assert continuous.n_vars > 500
    np.testing.assert_allclose(processed.var["mz"], continuous.var["mz"], rtol=1e-7)
    # Streaming the file and summing an in-memory table give the same pixels × peaks.
    np.testing.assert_allclose(continuous.var["mz"], table.var["mz"])
    dense = table.X.toarray() if hasattr(table.X, "toarray") else table.X
    np.testing.assert_allclose(np.asarray(continuous.X), dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(continuous.var["frequency"], table.var["frequency"])
    assert (continuous.obs_names == table.obs_names).all()


def test_tables_without_peaks_nan_rows_sparse_and_dask(profile):
    zeros = profile.copy()
    zeros.X = np.zeros_like(zeros.X)
    empty = sf.pp.pick_peaks(zeros)
    assert empty.shape == (profile.n_obs, 0)
    assert empty.uns["peaks"]["n_peaks"] == 0
    # A row of NaN (a spot without MSI data) neither hides peaks nor counts as holding them.
    holes = profile.copy()
    holes.X[1, :] = np.nan
    peaks = sf.pp.pick_peaks(holes, snr=5, baseline_window=201)
    assert peaks.n_vars == PEAKS.size
    np.testing.assert_allclose(peaks.var["frequency"], (profile.n_obs - 1) / profile.n_obs)
    # Sparse and dask tables give what the dense one gives.
    import dask.array as da
    from scipy import sparse

    dense = sf.pp.pick_peaks(profile, snr=5, baseline_window=201)
    for x in (sparse.csr_matrix(profile.X), da.from_array(profile.X, chunks=(5, 20_000))):
        other = profile.copy()
        other.X = x
        result = sf.pp.pick_peaks(other, snr=5, baseline_window=201)
        np.testing.assert_allclose(result.var["mz"], dense.var["mz"])
        np.testing.assert_allclose(np.asarray(result.X), np.asarray(dense.X), rtol=1e-5)


def test_noise_over_all_points_keeps_thresholded_peaks(profile):
    """Data the writer thresholded (mostly zeros): the non-zero points are all peak."""
    from scipy import sparse

    thresholded = profile.copy()
    thresholded.X = sparse.csr_matrix(np.where(profile.X > 60, profile.X, 0))
    assert sf.pp.pick_peaks(thresholded, snr=5).n_vars < PEAKS.size
    peaks = sf.pp.pick_peaks(thresholded, snr=5, noise="all")
    assert peaks.n_vars == PEAKS.size
    assert np.abs(ppm_error(peaks.var["mz"].to_numpy(), PEAKS)).max() < 1.0
    with pytest.raises(ValueError, match="noise"):
        sf.pp.pick_peaks(profile, noise="mad")


def test_real_zero_padded_centroids_71549_points(shared_data):
    """i2nca's pc_test2: centroids written on a 71,549-point continuous axis (547 non-zero
    points per spectrum). With the noise over all points every stored centroid is a candidate;
    the picked centres are checked against the stored non-zero m/z read with pyimzML."""
    from pyimzml.ImzMLParser import ImzMLParser

    path = shared_data / "imzml" / "galaxyp_i2nca" / "pc_test2.imzml"
    if not path.exists():
        pytest.skip(f"{path} not in the shared data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = ImzMLParser(str(path))
        stored = np.unique(
            np.concatenate(
                [m[y > 0] for m, y in map(parser.getspectrum, range(len(parser.coordinates)))]
            ).astype(np.float64)
        )
        strict = sf.pp.pick_peaks(path, snr=3, half_window=1, pixel_size_um=10)
        peaks = sf.pp.pick_peaks(path, snr=3, half_window=1, noise="all", pixel_size_um=10)
    assert strict.n_vars < 0.3 * peaks.n_vars  # non-zero noise: only the tallest centroids
    mine = peaks.var["mz"].to_numpy()
    on_a_centroid = np.abs(mine[:, None] - stored[None, :]).min(axis=1) < 1e-3
    found = np.abs(stored[:, None] - mine[None, :]).min(axis=1) < 1e-3
    assert on_a_centroid.mean() >= 0.97, on_a_centroid.mean()
    # Neighbouring centroids one axis point apart merge within ± half_window: ~25 % are not
    # separate peaks of the mean spectrum.
    assert found.mean() >= 0.7, found.mean()


def test_every_real_profile_file_gives_a_consistent_peak_table(shared_data):
    """All profile-mode imzML files of the shared data (Cardinal, i2nca, MALDIquant, pyimzML
    outputs; continuous and processed): sorted, non-overlapping windows inside the m/z range,
    frequencies in [0, 1], one row per spectrum, and sums that match pyimzML's spectra."""
    from pyimzml.ImzMLParser import ImzMLParser

    files = []
    for path in sorted((shared_data / "imzml").glob("*/*.im[zZ][mM][lL]")):
        with path.open("rb") as handle:
            if b"MS:1000128" in handle.read(200_000):  # profile spectrum
                files.append(path)
    if not files:
        pytest.skip("no profile-mode imzML in the shared data")
    assert len(files) >= 15
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peaks = sf.pp.pick_peaks(path, snr=5, pixel_size_um=10)
            parser = ImzMLParser(str(path))
        var = peaks.var
        assert peaks.n_obs == len(parser.coordinates), path.name
        if peaks.n_vars == 0:
            continue
        assert (np.diff(var["mz"]) > 0).all(), path.name
        assert (var["mz_hi"].to_numpy()[:-1] < var["mz_lo"].to_numpy()[1:]).all(), path.name
        assert var["frequency"].between(0, 1).all(), path.name
        # The first spectrum's sum over the tallest peak's window, read independently.
        j = int(var["intensity"].to_numpy().argmax())
        mz, y = parser.getspectrum(0)
        inside = (mz >= var["mz_lo"].iloc[j]) & (mz <= var["mz_hi"].iloc[j])
        expected = float(np.sum(y[inside], dtype=np.float64))
        np.testing.assert_allclose(float(peaks.X[0, j]), expected, rtol=1e-4)
