"""Numerical edge cases give a right result or the project's own error or warning.

Empty spectra, all-zero pixels, NaN/inf intensities in the ``.ibd``, single-pixel and single-spot
inputs, spots outside the MSI, and too few spots, through ``read_imzml``, ``sf.pp`` and ``sf.tl``.
Files are written by the generator's writer; the MSI is a 5 × 4 raster of 50 µm pixels whose pixel
``(x, y)`` (1-based) covers ``[(x-1)·50, x·50] × [(y-1)·50, y·50]`` µm.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf
from spatialfuse.datasets._writers import write_imzml
from spatialfuse.errors import DataWarning

PIXEL_UM = 50.0
MZ = np.array([100.0, 200.0, 300.0])
COORDS = np.array([(x, y) for y in range(1, 5) for x in range(1, 6)])
IDENTITY = sf.reg.AffineTransform.identity()


def _write(folder, name, coords, mzs, intensities, mode):
    path = folder / f"{name}.imzML"
    write_imzml(
        path,
        np.asarray(coords),
        mzs,
        intensities,
        mode=mode,
        pixel_size_um=(PIXEL_UM, PIXEL_UM),
        uuid_bytes=bytes(range(16)),
        version="test",
    )
    return path


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=np.float64)


@pytest.fixture(scope="module")
def spectra():
    rng = np.random.default_rng(0)
    return (1.0 + rng.random((len(COORDS), len(MZ)))).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory, spectra):
    folder = tmp_path_factory.mktemp("edge")
    n = len(COORDS)
    out = {}
    # processed: spectrum 3 has no peaks at all
    mzs = [MZ.copy() for _ in range(n)]
    ints = [row.copy() for row in spectra]
    mzs[3], ints[3] = np.array([]), np.array([], dtype=np.float32)
    out["empty_spectrum"] = _write(folder, "empty", COORDS, mzs, ints, "processed")
    zero = spectra.copy()
    zero[5] = 0
    out["zero_pixel"] = _write(folder, "zero", COORDS, MZ, zero, "continuous")
    bad = spectra.copy()
    bad[6, 1], bad[7, 0], bad[8, 2] = np.nan, np.inf, -np.inf
    out["nonfinite_continuous"] = _write(folder, "bad_c", COORDS, MZ, bad, "continuous")
    out["nonfinite_processed"] = _write(folder, "bad_p", COORDS, [MZ] * n, list(bad), "processed")
    one = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    out["single_pixel"] = _write(folder, "single", [[1, 1]], MZ, one, "continuous")
    out["all_zero"] = _write(folder, "all_zero", COORDS, MZ, np.zeros_like(spectra), "continuous")
    no_peaks = [np.array([])] * n
    out["all_empty"] = _write(folder, "all_empty", COORDS, no_peaks, no_peaks, "processed")
    return out


def _visium(points_um, *, n_genes: int = 10, seed: int = 0):
    """Spots at ``points_um`` (µm), as read_visium lays them out (2 µm per full-res pixel)."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    n = len(points_um)
    adata = ad.AnnData(
        X=rng.poisson(5, size=(n, n_genes)).astype(np.float32),
        obs=pd.DataFrame(
            {"in_tissue": 1, "array_row": np.arange(n), "array_col": np.arange(n)},
            index=pd.Index([f"BC{i:02d}-1" for i in range(n)], dtype=str),
        ),
        var=pd.DataFrame(index=pd.Index([f"gene{j}" for j in range(n_genes)], dtype=str)),
    )
    adata.obsm["spatial_um"] = np.asarray(points_um, dtype=np.float64)
    adata.obsm["spatial"] = adata.obsm["spatial_um"] / 2.0
    scalefactors = {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 27.5}
    adata.uns["spatial"] = {"lib": {"images": {}, "scalefactors": scalefactors, "metadata": {}}}
    adata.uns["spatialfuse"] = {"modality": "visium", "um_per_px": 2.0}
    return adata


def _disc_fractions(centre, diameter=55.0, n=801):
    """Area fraction of a disc in each 50 µm pixel of the 5 × 4 raster, by a fine grid."""
    r = diameter / 2
    axis = np.linspace(-r, r, n)
    xx, yy = np.meshgrid(axis + centre[0], axis + centre[1])
    inside = np.hypot(xx - centre[0], yy - centre[1]) <= r
    col, row = np.floor(xx[inside] / PIXEL_UM), np.floor(yy[inside] / PIXEL_UM)
    fractions = np.zeros(len(COORDS))
    on_raster = (col >= 0) & (col < 5) & (row >= 0) & (row < 4)
    np.add.at(fractions, (row[on_raster] * 5 + col[on_raster]).astype(int), 1.0)
    return fractions / inside.sum()


# ---------------------------------------------------------------------------------------------
# read_imzml, normalize_msi, preprocess_msi


def test_empty_spectrum_reads_as_a_zero_row(files, spectra):
    adata = sf.io.read_imzml(files["empty_spectrum"])
    X = _dense(adata.X)
    assert X.shape == (len(COORDS), 3)
    np.testing.assert_allclose(adata.var["mz"], MZ, rtol=1e-6)
    assert (X[3] == 0).all() and adata.obs["tic"].iloc[3] == 0
    others = np.arange(len(COORDS)) != 3
    np.testing.assert_array_equal(X[others], spectra[others])
    with pytest.warns(DataWarning, match="1 of 20 spectra have a tic of 0"):
        normalised = sf.pp.normalize_msi(adata, copy=True)
    assert np.isfinite(_dense(normalised.X)).all()


def test_all_zero_pixel_stays_zero_and_the_pca_is_finite(files, spectra):
    adata = sf.io.read_imzml(files["zero_pixel"])
    assert (_dense(adata.X)[5] == 0).all()
    with pytest.warns(DataWarning, match="tic of 0"):
        out = sf.pp.preprocess_msi(adata, n_comps=2, copy=True)
    assert np.isfinite(out.obsm["X_pca"]).all()
    # the other pixels' TIC is the sum of what was written
    tic = spectra.sum(axis=1, dtype=np.float64)
    assert np.isclose(
        adata.obs["tic"].to_numpy()[np.arange(20) != 5], tic[np.arange(20) != 5]
    ).all()


@pytest.mark.parametrize("kind", ["nonfinite_continuous", "nonfinite_processed"])
def test_nan_and_inf_intensities_are_read_as_zero_with_a_warning(files, spectra, kind):
    with pytest.warns(DataWarning, match="3 NaN or infinite intensities in 3 spectra"):
        adata = sf.io.read_imzml(files[kind])
    X = _dense(adata.X)
    assert np.isfinite(X).all()
    np.testing.assert_allclose(adata.var["mz"], MZ, rtol=1e-6)  # no NaN m/z centre
    expected = spectra.astype(np.float64)
    expected[6, 1] = expected[7, 0] = expected[8, 2] = 0.0
    np.testing.assert_allclose(X, expected, rtol=1e-6)
    np.testing.assert_allclose(adata.obs["tic"], expected.sum(axis=1), rtol=1e-6)
    out = sf.pp.preprocess_msi(adata, n_comps=2, copy=True)
    assert np.isfinite(_dense(out.X)).all() and np.isfinite(out.obsm["X_pca"]).all()


def test_single_pixel(files):
    adata = sf.io.read_imzml(files["single_pixel"])
    assert adata.shape == (1, 3)
    np.testing.assert_array_equal(adata.obsm["spatial"], [[25.0, 25.0]])
    normalised = sf.pp.normalize_msi(adata, copy=True)
    assert np.isfinite(_dense(normalised.X)).all()
    with pytest.raises(ValueError, match="at least 2 observations"):
        sf.pp.preprocess_msi(adata, n_comps=2, copy=True)


def test_all_zero_file_refuses_a_pca_with_a_reason(files):
    adata = sf.io.read_imzml(files["all_zero"])
    assert (_dense(adata.X) == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(ValueError, match="constant"):
            sf.pp.preprocess_msi(adata, n_comps=2, copy=True)


def test_file_without_any_peak(files):
    adata = sf.io.read_imzml(files["all_empty"])
    assert adata.shape == (len(COORDS), 0)
    with pytest.warns(DataWarning, match="no spectrum has data"):
        sf.pp.normalize_msi(adata, copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(ValueError, match="at least 2 observations and 2 features"):
            sf.pp.preprocess_msi(adata, copy=True)


# ---------------------------------------------------------------------------------------------
# map_to_spots, joint_table, joint_cluster, cross_modal_correlation


@pytest.fixture(scope="module")
def msi(files):
    return sf.io.read_imzml(files["zero_pixel"])


def test_spots_outside_the_msi(msi):
    visium = _visium([[5000.0, 5000.0], [6000.0, 5000.0], [7000.0, 5000.0], [8000.0, 5000.0]])
    with pytest.warns(DataWarning, match="none of the 4 Visium spots overlaps"):
        spots = sf.tl.map_to_spots(msi, visium, transform=IDENTITY)
    assert np.isnan(_dense(spots.X)).all()
    assert not spots.obs["has_msi"].any() and (spots.obs["n_msi_pixels"] == 0).all()
    mdata = sf.tl.joint_table(visium, spots)
    assert not mdata.obs["has_msi"].any()
    with pytest.raises(ValueError, match="only 0 spots have data in both"):
        sf.tl.cross_modal_correlation(mdata)


def test_single_spot_is_the_area_weighted_mean(msi):
    centre = (125.0, 100.0)
    visium = _visium([centre])
    spots = sf.tl.map_to_spots(msi, visium, transform=IDENTITY)
    fractions = _disc_fractions(centre)
    expected = fractions @ _dense(msi.X) / fractions.sum()
    np.testing.assert_allclose(_dense(spots.X)[0], expected, rtol=0.01)
    assert spots.obs["n_msi_pixels"].iloc[0] == (fractions > 0).sum()
    mdata = sf.tl.joint_table(visium, spots)
    with pytest.raises(ValueError, match="at least 3 spots"):
        sf.tl.joint_cluster(mdata, n_clusters=2)
    with pytest.raises(ValueError, match="only 1 spots have data in both"):
        sf.tl.cross_modal_correlation(mdata)


def test_single_pixel_msi_onto_spots(files):
    one = sf.io.read_imzml(files["single_pixel"])
    visium = _visium([[25.0, 25.0], [300.0, 300.0]])
    spots = sf.tl.map_to_spots(one, visium, transform=IDENTITY)
    X = _dense(spots.X)
    np.testing.assert_allclose(X[0], [1.0, 2.0, 3.0])
    assert np.isnan(X[1]).all() and spots.obs["has_msi"].tolist() == [True, False]
    # a 55 µm disc centred on a 50 µm pixel: the part of it inside the square
    expected = _disc_fractions((25.0, 25.0))[0]
    assert spots.obs["msi_coverage"].iloc[0] == pytest.approx(expected, abs=0.01)


@pytest.fixture(scope="module")
def few_spots(msi):
    def make(k):
        points = [[30.0 + 190.0 * (i % 4) / 3, 30.0 + 140.0 * (i // 4)] for i in range(k)]
        visium = _visium(points)
        spots = sf.tl.map_to_spots(msi, visium, transform=IDENTITY)
        rna = sf.pp.preprocess_rna(visium, n_top_genes=None, n_comps=2, copy=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            ions = sf.pp.preprocess_msi(spots, n_comps=2, copy=True)
        return sf.tl.joint_table(rna, ions)

    return make


def test_too_few_spots_for_a_correlation(few_spots):
    mdata = few_spots(3)
    with pytest.raises(ValueError, match=r"only 3 spots have data in both .* at least 4"):
        sf.tl.cross_modal_correlation(mdata)


def test_five_spots_give_finite_correlations_and_clusters(few_spots):
    mdata = few_spots(5)
    sf.tl.joint_cluster(mdata, n_clusters=2)
    assert mdata.obs["joint"].notna().all() and mdata.obs["joint"].nunique() == 2
    table = sf.tl.cross_modal_correlation(mdata)
    assert len(table) == 10 * 3
    values = table[["r", "n_eff", "p_value", "p_adjusted"]].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert table["r"].abs().le(1).all() and table["p_value"].between(0, 1).all()
