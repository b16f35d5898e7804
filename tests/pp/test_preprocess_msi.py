"""sf.pp.preprocess_msi: spots without MSI are left out of every statistic; dask stays lazy."""

from __future__ import annotations

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.errors import DataWarning


def _spots(n=80, n_ions=12, seed=0):
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    group = np.arange(n) % 2
    profile = rng.gamma(2.0, 20.0, size=(2, n_ions))
    X = rng.poisson(profile[group] * rng.uniform(0.5, 2, size=(n, 1))).astype(np.float32)
    names = [f"mz-{m:.4f}" for m in np.linspace(150, 950, n_ions)]
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index([f"S{i}" for i in range(n)], dtype=str)),
        var=pd.DataFrame({"mz": np.linspace(150, 950, n_ions)}, index=names),
    )
    adata.obsm["spatial"] = np.column_stack([np.arange(n) % 10, np.arange(n) // 10]) * 100.0
    return adata, group


def test_rows_without_msi_are_ignored():
    adata, _ = _spots()
    missing = np.zeros(adata.n_obs, dtype=bool)
    missing[[3, 17, 40, 41]] = True
    with_nan = adata.copy()
    with_nan.X[missing] = np.nan
    out = sf.pp.preprocess_msi(with_nan, n_comps=4, copy=True)
    ref = sf.pp.preprocess_msi(adata[~missing].copy(), n_comps=4, copy=True)

    assert np.isnan(out.obsm["X_pca"][missing]).all()
    np.testing.assert_allclose(out.obsm["X_pca"][~missing], ref.obsm["X_pca"], atol=1e-4)
    np.testing.assert_allclose(out.X[~missing], ref.X, rtol=1e-6)
    assert np.isnan(out.X[missing]).all()
    np.testing.assert_array_equal(out.layers["raw"], with_nan.X)
    params = out.uns["pca"]["params"]
    assert params["n_obs_used"] == 76 and params["n_vars_used"] == 12
    steps = out.uns["spatialfuse"]["preprocessing"]
    assert set(steps) == {"normalize_msi", "preprocess_msi"}


def test_has_msi_false_rows_count_as_missing():
    """map_to_spots(..., fill_value=0) leaves zero rows, flagged by has_msi, not NaN rows."""
    adata, _ = _spots()
    has = np.ones(adata.n_obs, dtype=bool)
    has[[5, 6, 60]] = False
    zeros = adata.copy()
    zeros.X[~has] = 0.0
    zeros.obs["has_msi"] = has
    out = sf.pp.preprocess_msi(zeros, n_comps=4, copy=True)  # no all-zero DataWarning
    ref = sf.pp.preprocess_msi(adata[has].copy(), n_comps=4, copy=True)
    assert np.isnan(out.obsm["X_pca"][~has]).all()
    np.testing.assert_allclose(out.obsm["X_pca"][has], ref.obsm["X_pca"], atol=1e-4)
    assert (out.X[~has] == 0).all() and np.isnan(out.obs["norm_factor"][~has]).all()


def test_components_separate_groups_and_rerun_is_stable():
    adata, group = _spots()
    sf.pp.preprocess_msi(adata, n_comps=3)
    first = adata.obsm["X_pca"].copy()
    pc1 = first[:, 0]
    assert min(pc1[group == 0].max(), pc1[group == 1].max()) < max(
        pc1[group == 0].min(), pc1[group == 1].min()
    )  # the groups do not overlap on PC1
    sf.pp.preprocess_msi(adata, n_comps=3)  # starts again from layers["raw"]
    np.testing.assert_allclose(adata.obsm["X_pca"], first)


def test_spatial_filter_restricts_the_pca():
    adata, _ = _spots()
    rng = np.random.default_rng(1)
    xy = adata.obsm["spatial"] / 100.0
    adata.X[:, 0] = 50 + 40 * (xy[:, 0] > 4)  # a patterned ion
    adata.X[:, 1] = 50 + 40 * (xy[:, 1] > 3)
    adata.X[:, 2:] = rng.poisson(30, size=(adata.n_obs, adata.n_vars - 2))  # noise
    out = sf.pp.preprocess_msi(
        adata, spatial_filter=True, filter_kwargs={"n_top": 2}, n_comps=1, copy=True
    )
    kept = out.var["spatially_variable"].to_numpy()
    assert kept.tolist() == [True, True] + [False] * 10
    assert (out.varm["PCs"][~kept] == 0).all() and (out.varm["PCs"][kept] != 0).all()
    with pytest.raises(ValueError, match="may not set 'subset'"):
        sf.pp.preprocess_msi(adata, spatial_filter=True, filter_kwargs={"subset": True})


def test_dask_x_stays_lazy():
    da = pytest.importorskip("dask.array")
    adata, _ = _spots()
    memory = sf.pp.preprocess_msi(adata, n_comps=3, copy=True)
    lazy = adata.copy()
    lazy.X = da.from_array(adata.X, chunks=(16, 5))
    sf.pp.preprocess_msi(lazy, n_comps=3)
    assert isinstance(lazy.X, da.Array) and isinstance(lazy.layers["raw"], da.Array)
    np.testing.assert_allclose(lazy.X.compute(), memory.X, rtol=1e-6)
    np.testing.assert_allclose(lazy.obsm["X_pca"], memory.obsm["X_pca"], atol=1e-4)


def test_too_few_spectra():
    adata, _ = _spots(n=4)
    adata.X[:3] = np.nan
    with pytest.raises(ValueError, match="at least 2 observations"):
        sf.pp.preprocess_msi(adata, copy=True)
    adata, _ = _spots(n=5)
    with pytest.warns(DataWarning, match="reduced to 4"):
        sf.pp.preprocess_msi(adata, copy=True)
