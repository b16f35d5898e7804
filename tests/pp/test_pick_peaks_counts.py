"""sf.pp.pick_peaks(noise="counts"): counting-statistics noise for ion-counting TOF spectra.

Known answers on a simulated ion-counting run: every pixel × TOF point holds a Poisson number
of ions, each adding a random pulse height (gamma, so the count unit E[a²]/E[a] is known), on a
floor of stray ions and a "grass" of weak real peaks (a fraction of an ion per pixel) that the
MAD of the mean spectrum counts as signal; the planted peaks (tens of ions per pixel) are what
the option must find.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf
from spatialfuse.pp._counting import count_unit
from spatialfuse.pp._peaks import centroid_peaks

#: Pulse height of one ion: gamma(shape, scale); count unit = scale · (shape + 1).
SHAPE, SCALE = 2.0, 150.0
UNIT = SCALE * (SHAPE + 1)
#: Planted peaks: m/z and apex ions per pixel; FWHM 20 ppm on a 5-ppm axis.
PLANTED = np.array([512.3, 547.81, 580.2, 611.45, 640.07, 688.6])
APEX_IONS = np.array([40.0, 15.0, 80.0, 25.0, 12.0, 50.0])
FWHM_PPM = 20.0


def _counting_run(n_pixels=40, n_grass=300, floor=0.01, grass_ions=0.3, seed=0, planted=True):
    rng = np.random.default_rng(seed)
    mz = 500.0 * (1 + 5e-6) ** np.arange(int(np.log(700 / 500) / np.log(1 + 5e-6)))
    lam = np.full(mz.size, floor)
    grass = rng.uniform(mz[0], mz[-1], n_grass)
    centres = np.r_[grass, PLANTED] if planted else grass
    heights = np.r_[np.full(n_grass, grass_ions), APEX_IONS if planted else []]
    for c, h in zip(centres, heights, strict=True):
        sigma = c * FWHM_PPM * 1e-6 / 2.3548
        near = np.abs(mz - c) < 5 * sigma
        lam[near] += h * np.exp(-0.5 * ((mz[near] - c) / sigma) ** 2)
    ions = rng.poisson(np.broadcast_to(lam, (n_pixels, mz.size)))
    x = np.zeros(ions.shape)
    hit = ions > 0
    x[hit] = rng.gamma(ions[hit] * SHAPE, SCALE)  # a sum of k gamma pulses
    var = pd.DataFrame({"mz": mz}, index=[f"p{i}" for i in range(mz.size)])
    return ad.AnnData(X=x.astype(np.float32), var=var)


def _ppm(found, truth):
    found = np.asarray(found)
    return np.array([np.min(np.abs(found - t)) / t * 1e6 for t in truth])


@pytest.fixture(scope="module")
def run():
    return _counting_run()


def test_counts_finds_the_planted_peaks_and_rejects_the_grass(run):
    peaks = sf.pp.pick_peaks(run, snr=5, noise="counts")
    assert peaks.n_vars == PLANTED.size, peaks.var["mz"].to_numpy()
    assert _ppm(peaks.var["mz"], PLANTED).max() < 1.0
    info = peaks.uns["peaks"]
    assert abs(info["count_unit"] - UNIT) / UNIT < 0.15  # measured on the floor
    # S/N is that of one pixel's window sum: about √(ions a pixel collects in the window).
    ions = APEX_IONS * 1.064 * FWHM_PPM / 5.0  # Gaussian area over the 5-ppm steps
    order = np.argsort(PLANTED)
    np.testing.assert_allclose(peaks.var["snr"].to_numpy(), np.sqrt(ions[order]), rtol=0.25)
    assert (peaks.var["frequency"] >= 0.8).all()  # a pixel passes where its own sum does
    # The MAD of the mean spectrum takes the grass (0.3 ions a pixel) for peaks.
    assert sf.pp.pick_peaks(run, snr=5).n_vars > 200


def test_counts_threshold_is_a_per_pixel_signal_to_noise(run):
    # the 12- and 15-ion peaks (√ ≈ 7.1, 7.9 in their windows) fall out at S/N 8.5
    strict = sf.pp.pick_peaks(run, snr=8.5, noise="counts")
    kept = PLANTED[np.sqrt(APEX_IONS * 1.064 * FWHM_PPM / 5.0) > 8.5]
    assert strict.n_vars == kept.size
    assert _ppm(strict.var["mz"], kept).max() < 1.0


def test_counts_on_pure_floor_and_grass_finds_nothing():
    empty = _counting_run(planted=False, seed=4)
    assert sf.pp.pick_peaks(empty, snr=5, noise="counts").n_vars == 0


def test_counts_from_a_processed_file_matches_the_table(run, tmp_path):
    from pyimzml.ImzMLWriter import ImzMLWriter

    path = tmp_path / "counts.imzML"
    mz = run.var["mz"].to_numpy()
    x = np.asarray(run.X)
    with ImzMLWriter(str(path), mode="processed", spec_type="profile") as writer:
        for i, row in enumerate(x):
            keep = row > 0  # zeros left out, as a TOF export writes them
            writer.addSpectrum(mz[keep], row[keep], (i % 8 + 1, i // 8 + 1))
    from_file = sf.pp.pick_peaks(path, snr=5, noise="counts", pixel_size_um=10)
    from_table = sf.pp.pick_peaks(run, snr=5, noise="counts")
    assert from_file.n_vars == from_table.n_vars == PLANTED.size
    assert _ppm(from_file.var["mz"], PLANTED).max() < 1.0
    unit_file, unit_table = (p.uns["peaks"]["count_unit"] for p in (from_file, from_table))
    assert abs(unit_file - unit_table) / unit_table < 0.05
    np.testing.assert_allclose(
        np.asarray(from_file.X).sum(axis=0), np.asarray(from_table.X).sum(axis=0), rtol=1e-3
    )


def test_count_unit_of_a_known_compound_poisson():
    rng = np.random.default_rng(2)
    ions = rng.poisson(0.05, size=(200, 5000))
    x = np.where(ions > 0, rng.gamma(np.maximum(ions, 1) * SHAPE, SCALE), 0.0)
    unit = count_unit(x.mean(axis=0), (x * x).mean(axis=0), (x > 0).sum(axis=0), 200)
    assert abs(unit - UNIT) / UNIT < 0.15


def test_counts_errors_name_the_problem(run):
    with pytest.raises(ValueError, match=r"noise must be 'nonzero', 'all' or 'counts'"):
        sf.pp.pick_peaks(run, noise="poisson")
    with pytest.raises(ValueError, match=r"noise='counts'.*reference='mean'.*'skyline'"):
        sf.pp.pick_peaks(run, noise="counts", reference="skyline")
    with pytest.raises(ValueError, match=r"noise='counts' measures the intensity of one ion"):
        sf.pp.pick_peaks(run[:1].copy(), noise="counts")  # one pixel: no spread to measure
    # Intensities that are not counts (on an offset of 1,000, varying far less): told so.
    scaled = run.copy()
    scaled.X = scaled.X / 10 + 1000.0
    with pytest.warns(sf.errors.DataWarning, match=r"not counts"):
        sf.pp.pick_peaks(scaled, noise="counts")
    with pytest.raises(ValueError, match=r"noise='counts' needs a positive count_unit"):
        centroid_peaks(run.var["mz"].to_numpy(), np.asarray(run.X[0]), noise="counts")
    with pytest.raises(ValueError, match=r"non-zero intensities"):
        count_unit(np.zeros(5), np.zeros(5), np.zeros(5), 1)


def test_counts_on_sparse_and_lazy_tables_matches_dense(run):
    import dask.array as da
    from scipy import sparse

    dense = sf.pp.pick_peaks(run, snr=5, noise="counts")
    for x in (sparse.csr_matrix(run.X), da.from_array(np.asarray(run.X), chunks=(7, -1))):
        other = ad.AnnData(X=x, var=run.var.copy())
        out = sf.pp.pick_peaks(other, snr=5, noise="counts")
        np.testing.assert_allclose(out.var["mz"], dense.var["mz"])
        np.testing.assert_allclose(out.var["frequency"], dense.var["frequency"])
        np.testing.assert_allclose(np.asarray(out.X), np.asarray(dense.X), rtol=1e-5)
        assert out.uns["peaks"]["count_unit"] == pytest.approx(dense.uns["peaks"]["count_unit"])


def test_moments_leave_missing_values_out_alike_for_dense_and_sparse():
    """Spots without MSI data (all-NaN rows) do not count in the mean, whatever the table."""
    from scipy import sparse

    from spatialfuse.pp._counting import table_moments

    rng = np.random.default_rng(3)
    dense = rng.poisson(0.4, size=(30, 12)).astype(np.float64)
    dense[[2, 7]] = np.nan
    dense[5, 4] = np.inf
    expected_rows = np.isfinite(dense)
    got_dense = table_moments(dense)
    got_sparse = table_moments(sparse.csr_matrix(dense))
    for a, b in zip(got_dense, got_sparse, strict=True):
        np.testing.assert_allclose(a, b)
    clean = np.where(expected_rows, dense, 0.0)
    np.testing.assert_allclose(got_dense[0], clean.sum(axis=0) / expected_rows.sum(axis=0))
