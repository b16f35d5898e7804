"""sf.pp.normalize_msi against hand computations: dense, sparse and lazy dask tables, NaN rows
(spots without MSI) and all-zero spectra."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse

import spatialfuse as sf
from spatialfuse.errors import DataWarning

MZ = np.linspace(100.0, 900.0, 7)


def _table(X):
    import anndata as ad
    import pandas as pd

    n = X.shape[0]
    obs = pd.DataFrame(index=pd.Index([f"s{i}" for i in range(n)], dtype=str))
    var = pd.DataFrame({"mz": MZ[: X.shape[1]]}, index=[f"mz-{m:.4f}" for m in MZ[: X.shape[1]]])
    return ad.AnnData(X=X, obs=obs, var=var)


@pytest.fixture
def spectra():
    """Five spectra: three with data, one all-zero, one NaN row (a spot without MSI)."""
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 50.0, size=(5, 7))
    X[0, [1, 4]] = 0.0  # centroided data: zeros among the peaks
    X[2] = 0.0
    X[3] = np.nan
    return X


def _expected(X, method):
    """Per-row factors written out by hand, one row at a time."""
    out = []
    for row in X:
        if np.isnan(row).all():
            out.append(np.nan)
        elif method == "tic":
            out.append(row.sum())
        elif method == "rms":
            out.append(np.sqrt(np.mean(row**2)))
        else:
            pos = row[row > 0]
            out.append(np.median(pos) if pos.size else 0.0)
    return np.array(out)


@pytest.mark.parametrize("method", ["tic", "rms", "median"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_factors_target_and_log(spectra, method, kind):
    X = sparse.csr_matrix(np.nan_to_num(spectra, nan=0.0)) if kind == "sparse" else spectra
    if kind == "sparse":
        X = X.tolil()
        X[3] = np.nan  # NaN rows stored explicitly, as map_to_spots writes them
        X = X.tocsr()
    adata = _table(X)
    with pytest.warns(DataWarning, match="1 of 4 spectra"):
        out = sf.pp.normalize_msi(adata, method=method, copy=True)
    factors = _expected(spectra, method)
    np.testing.assert_allclose(out.obs["norm_factor"], factors, rtol=1e-12, equal_nan=True)
    good = np.array([True, True, False, False, True])
    target = np.median(factors[good])
    expected = np.log1p(spectra * (target / np.where(good, factors, 1.0))[:, None])
    got = out.X.toarray() if kind == "sparse" else out.X
    assert sparse.issparse(out.X) == (kind == "sparse")
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[3]).all() and (got[2] == 0).all()  # no data stays NaN, zeros stay zero
    # normalised rows share the factor `target`
    back = np.expm1(got[good])
    np.testing.assert_allclose(_expected(back, method), target, rtol=1e-10)
    assert out.uns["log1p"] == {"base": None}
    assert out.uns["spatialfuse"]["preprocessing"]["normalize_msi"]["method"] == method
    # the input is untouched
    original = X.toarray() if kind == "sparse" else X
    np.testing.assert_array_equal(adata.X.toarray() if kind == "sparse" else adata.X, original)


def test_target_none_method_and_in_place(spectra):
    adata = _table(spectra[[0, 1, 4]])
    assert sf.pp.normalize_msi(adata, method="tic", log=False, target=1.0) is None
    np.testing.assert_allclose(adata.X.sum(axis=1), 1.0)
    adata = _table(spectra[[0, 1, 4]])
    sf.pp.normalize_msi(adata, method="none", log=True)
    np.testing.assert_allclose(adata.X, np.log1p(spectra[[0, 1, 4]]))
    assert "norm_factor" not in adata.obs


def test_integer_input_becomes_float32():
    adata = _table(np.array([[1, 2, 3], [4, 0, 4]], dtype=np.int32))
    sf.pp.normalize_msi(adata, log=False)
    assert adata.X.dtype == np.float32
    # TICs 6 and 8, target their median 7
    np.testing.assert_allclose(adata.X, [[7 / 6, 14 / 6, 21 / 6], [3.5, 0, 3.5]], rtol=1e-6)


def test_bad_input():
    adata = _table(np.array([[1.0, -2.0, 3.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="negative"):
        sf.pp.normalize_msi(adata)
    sf.pp.normalize_msi(adata, log=False, method="rms", copy=True)  # fine without the log
    with pytest.raises(ValueError, match="method must be one of"):
        sf.pp.normalize_msi(adata, method="l2")
    with pytest.raises(ValueError, match="target"):
        sf.pp.normalize_msi(adata, target=0)
    with pytest.raises(TypeError, match="AnnData"):
        sf.pp.normalize_msi(np.ones((2, 2)))
    with pytest.warns(DataWarning, match="no spectrum has data"):
        sf.pp.normalize_msi(_table(np.full((2, 3), np.nan)), copy=True)


# ------------------------------------------------------------------------- dask (read_msi_zarr)


@pytest.fixture
def zarr_msi(tmp_path):
    """A 6 × 5 continuous imzML (one all-zero spectrum) converted to zarr; and its dense values."""
    pytest.importorskip("zarr", minversion="3")
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(3)
    mzs = np.linspace(150.0, 850.0, 40)
    values = rng.gamma(2.0, 40.0, size=(30, 40)).astype(np.float32)
    values[values < 40] = 0.0
    values[7] = 0.0
    path = tmp_path / "tiny.imzML"
    with ImzMLWriter(str(path), mode="continuous", spec_type="centroid") as writer:
        for i, (x, y) in enumerate((x, y) for y in range(1, 6) for x in range(1, 7)):
            writer.addSpectrum(mzs, values[i], (x, y, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = sf.io.convert_imzml(path, tmp_path / "tiny.zarr", pixel_size_um=20, chunks=(7, 9))
        adata = sf.io.read_msi_zarr(store)
    return adata


@pytest.mark.parametrize("method", ["tic", "rms", "median"])
def test_dask_stays_lazy_and_matches_in_memory(zarr_msi, method):
    import dask.array as da

    memory = zarr_msi.copy()
    memory.X = np.asarray(zarr_msi.X.compute())
    with pytest.warns(DataWarning, match="1 of 30"):
        sf.pp.normalize_msi(zarr_msi, method=method)
    with pytest.warns(DataWarning, match="1 of 30"):
        sf.pp.normalize_msi(memory, method=method)
    assert isinstance(zarr_msi.X, da.Array)
    assert zarr_msi.X.dtype == np.float32
    np.testing.assert_allclose(zarr_msi.X.compute(), memory.X, rtol=1e-6)
    np.testing.assert_allclose(zarr_msi.obs["norm_factor"], memory.obs["norm_factor"], rtol=1e-6)
    assert (zarr_msi.X[7].compute() == 0).all()
