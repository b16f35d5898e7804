"""sf.pp.preprocess_rna against an independent computation (numpy + sklearn)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import spatialfuse as sf
from spatialfuse.errors import DataWarning


def _counts(n_spots=60, n_genes=40, seed=0):
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1, 2], n_spots // 3)
    mean = rng.gamma(2.0, 2.0, size=(3, n_genes))
    counts = rng.poisson(mean[group] * rng.uniform(0.5, 2.0, size=(n_spots, 1)))
    obs = pd.DataFrame(index=pd.Index([f"BC{i:03d}-1" for i in range(n_spots)], dtype=str))
    var = pd.DataFrame(index=pd.Index([f"gene{j}" for j in range(n_genes)], dtype=str))
    return ad.AnnData(X=counts.astype(np.float32), obs=obs, var=var), group


def _scaled_pca_scores(values, n_comps):
    from sklearn.decomposition import PCA

    z = (values - values.mean(axis=0)) / values.std(axis=0, ddof=1)
    return PCA(n_components=n_comps, svd_solver="full").fit_transform(np.clip(z, None, 10))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_against_independent_computation(kind):
    adata, _ = _counts()
    raw = adata.X.copy()
    if kind == "sparse":
        adata.X = sparse.csr_matrix(adata.X)
    out = sf.pp.preprocess_rna(adata, n_top_genes=25, n_comps=5, copy=True)

    np.testing.assert_array_equal(
        out.layers["counts"].toarray() if kind == "sparse" else out.layers["counts"], raw
    )
    totals = raw.sum(axis=1, keepdims=True)
    logged = np.log1p(raw / totals * np.median(totals))
    got = out.X.toarray() if kind == "sparse" else out.X
    np.testing.assert_allclose(got, logged, rtol=1e-5)

    hvg = out.var["highly_variable"].to_numpy()
    assert hvg.sum() == 25
    scores = _scaled_pca_scores(logged[:, hvg].astype(np.float64), 5)
    ours = out.obsm["X_pca"]
    assert ours.shape == (60, 5)
    for c in range(5):  # equal up to the sign of each component
        sign = np.sign(ours[:, c] @ scores[:, c])
        np.testing.assert_allclose(ours[:, c], sign * scores[:, c], rtol=1e-3, atol=1e-3)
    assert (out.varm["PCs"][~hvg] == 0).all()
    assert out.uns["spatialfuse"]["preprocessing"]["preprocess_rna"]["n_top_genes"] == 25
    # the input is untouched
    assert "counts" not in adata.layers and "X_pca" not in adata.obsm


def test_rerun_starts_from_the_counts():
    adata, _ = _counts()
    assert sf.pp.preprocess_rna(adata, n_top_genes=20, n_comps=4) is None
    first = adata.X.copy()
    sf.pp.preprocess_rna(adata, n_top_genes=20, n_comps=4)
    np.testing.assert_allclose(adata.X, first)


def test_components_separate_the_groups():
    adata, group = _counts(n_genes=80)
    sf.pp.preprocess_rna(adata, n_top_genes=40, n_comps=3)
    pc = adata.obsm["X_pca"][:, :2]
    centres = np.stack([pc[group == g].mean(axis=0) for g in range(3)])
    spread = max(np.linalg.norm(pc[group == g] - centres[g], axis=1).mean() for g in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) > 2 * spread


def test_tiny_inputs():
    adata, _ = _counts(n_spots=6, n_genes=10)
    with pytest.warns(DataWarning, match="n_comps=30 reduced to 5"):
        out = sf.pp.preprocess_rna(adata, copy=True)
    assert out.obsm["X_pca"].shape == (6, 5)
    assert out.var["highly_variable"].all()  # fewer genes than n_top_genes: every gene
    with pytest.raises(ValueError, match="at least 2 observations"):
        sf.pp.preprocess_rna(adata[:1].copy(), copy=True)


def test_bad_input():
    adata, _ = _counts()
    adata.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        sf.pp.preprocess_rna(adata, copy=True)
    adata.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sf.pp.preprocess_rna(adata, copy=True)
    with pytest.raises(ValueError, match="n_comps"):
        sf.pp.preprocess_rna(_counts()[0], n_comps=0, copy=True)
    with pytest.raises(TypeError, match="AnnData"):
        sf.pp.preprocess_rna({"X": 1})
