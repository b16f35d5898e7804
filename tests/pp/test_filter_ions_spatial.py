"""sf.pp.filter_ions_spatial: Moran's I against an independent computation; patterned ions kept,
noise dropped; spots without MSI left out."""

from __future__ import annotations

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.errors import DataWarning


def _spots(nrow=14, ncol=16, seed=0):
    """A hex lattice of spots; ions 0-2 follow the tissue, 3-5 are noise."""
    import anndata as ad
    import pandas as pd

    pts = np.array(
        [(c * 100.0 + (50.0 if r % 2 else 0.0), r * 86.6) for r in range(nrow) for c in range(ncol)]
    )
    rng = np.random.default_rng(seed)
    x, y = pts[:, 0] / pts[:, 0].max(), pts[:, 1] / pts[:, 1].max()
    X = np.column_stack(
        [
            10 * x + rng.normal(0, 0.5, len(x)),  # gradient
            np.where(y > 0.5, 5.0, 1.0) + rng.normal(0, 0.5, len(x)),  # two regions
            np.sin(3 * x) * np.cos(2 * y) * 4 + rng.normal(0, 0.3, len(x)),
            rng.normal(0, 1, len(x)),
            rng.exponential(1.0, len(x)),
            rng.normal(5, 2, len(x)),
        ]
    )
    names = [f"mz-{m:.4f}" for m in np.linspace(200, 700, 6)]
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index([f"S{i}" for i in range(len(X))], dtype=str)),
        var=pd.DataFrame(index=pd.Index(names, dtype=str)),
    )
    adata.obsm["spatial"] = pts
    return adata


def _moran(values, pts, k):
    """Moran's I with row-standardised k-nearest-neighbour weights, from its definition."""
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(pts).kneighbors(pts)
    z = values - values.mean()
    lag = z[idx[:, 1:]].mean(axis=1)  # row-standardised: S0 = n
    return float((z * lag).sum() / (z * z).sum())


def test_scores_match_definition_and_select_patterns():
    adata = _spots()
    out = sf.pp.filter_ions_spatial(adata, copy=True)
    expected = [_moran(adata.X[:, j], adata.obsm["spatial"], 6) for j in range(6)]
    np.testing.assert_allclose(out.var["moranI"], expected, atol=1e-6)
    assert out.var["spatially_variable"].tolist() == [True] * 3 + [False] * 3
    assert (out.var["moranI"][:3] > 0.5).all() and (out.var["moranI"][3:].abs() < 0.15).all()
    assert (out.var["moranI_fdr"][:3] < 1e-6).all()
    assert "spatial_connectivities" not in out.obsp and "moranI" not in adata.var


def test_nan_rows_are_left_out_and_subset():
    adata = _spots()
    adata.X[::5] = np.nan
    out = sf.pp.filter_ions_spatial(adata, n_top=2, subset=True, key_added="sv", copy=True)
    keep = ~np.isnan(adata.X).any(axis=1)
    expected = [_moran(adata.X[keep, j], adata.obsm["spatial"][keep], 6) for j in range(6)]
    top = np.argsort(expected)[::-1][:2]
    assert out.n_vars == 2 and set(out.var_names) == set(adata.var_names[top])
    assert out.var["sv"].all()
    np.testing.assert_allclose(out.var["moranI"], np.asarray(expected)[np.sort(top)], atol=1e-6)


def test_raster_default_neighbours_and_thresholds():
    adata = _spots()
    adata.obs["imzml_x"] = 1  # an MSI pixel table: 4 neighbours
    with pytest.warns(DataWarning, match="highest Moran's I is 0.9"):
        sf.pp.filter_ions_spatial(adata, min_moran=0.99, max_fdr=None)
    record = adata.uns["spatialfuse"]["preprocessing"]["filter_ions_spatial"]
    assert record["n_neighs"] == 4 and record["n_kept"] == 0
    with pytest.raises(ValueError, match="no feature passes"):
        sf.pp.filter_ions_spatial(adata, min_moran=0.99, subset=True)


def test_bad_input():
    adata = _spots()
    with pytest.raises(ValueError, match="obsm has no 'xy'"):
        sf.pp.filter_ions_spatial(adata, spatial_key="xy")
    with pytest.raises(ValueError, match="at least 3"):
        sf.pp.filter_ions_spatial(adata[:2].copy())
    with pytest.raises(ValueError, match="max_fdr"):
        sf.pp.filter_ions_spatial(adata, max_fdr=0)
