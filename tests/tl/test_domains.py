"""``sf.tl.spatial_domains``: CellCharter-style domains (squidpy) against a known answer.

A hexagonal Visium-like grid (pitch 100 µm, 36 × 30 spots) holds three domains: a disc of radius
900 µm in the middle and the left and right halves around it. Each spot's embedding is its
domain's mean plus noise 1.5 times the spread of the means, so a spot alone says little (a
Gaussian mixture on the spots: ARI about 0.4) while its neighbourhood says much.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import spatialfuse as sf


def _grid(nx: int = 36, ny: int = 30) -> np.ndarray:
    cols, rows = np.meshgrid(np.arange(nx), np.arange(ny))
    x = cols * 100.0 + (rows % 2) * 50.0
    y = rows * 100.0 * np.sqrt(3.0) / 2.0
    return np.column_stack([x.ravel(), y.ravel()])


def _domains(seed: int = 0, noise: float = 1.5, dims: int = 8):
    positions = _grid()
    centre = positions.mean(axis=0)
    inside = np.linalg.norm(positions - centre, axis=1) < 900.0
    truth = np.where(inside, 2, np.where(positions[:, 0] < centre[0], 0, 1))
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, dims))
    x = means[truth] + noise * rng.normal(size=(truth.size, dims))
    return positions, truth, x - x.mean(axis=0)


def _adata(x, positions):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(index=[f"BC{i:04d}-1" for i in range(len(x))])
    a = ad.AnnData(obs=obs)
    a.obsm["X_pca"] = x
    a.obsm["spatial_um"] = positions
    return a


def _ari(truth, labels) -> float:
    labels = np.asarray(labels, dtype=object)
    return adjusted_rand_score(truth, labels.astype(str))


def test_domains_recover_the_known_regions_where_single_spots_do_not():
    from sklearn.mixture import GaussianMixture

    positions, truth, x = _domains()
    adata = _adata(x, positions)
    sf.tl.spatial_domains(adata, n_domains=3)
    got = _ari(truth, adata.obs["domains"])
    alone = adjusted_rand_score(truth, GaussianMixture(3, random_state=0).fit_predict(x))
    assert alone < 0.5  # each spot alone: the noise hides its domain
    assert got > 0.8, (got, alone)  # measured 0.83
    labels = adata.obs["domains"]
    assert list(labels.cat.categories) == ["0", "1", "2"]
    counts = labels.value_counts(sort=False).to_numpy()
    assert (np.diff(counts) <= 0).all()  # largest first
    params = adata.uns["domains"]["params"]
    assert params["method"] == "cellcharter (squidpy)" and params["n_domains"] == 3
    assert params["n_domains_from"] == "given" and params["use_rep"] == "X_pca"
    assert params["n_hops"] == 3 and params["n_spots"] == truth.size


def test_after_joint_cluster_it_takes_the_joint_embedding_and_cluster_count():
    import mudata as md

    positions, truth, x = _domains(seed=1)
    rna, msi = _adata(x[:, :4].copy(), positions), _adata(x[:, 4:].copy(), positions)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "msi": msi})
    mdata.obsm["spatial_um"] = positions
    sf.tl.joint_cluster(mdata, n_clusters=3)
    out = sf.tl.spatial_domains(mdata, copy=True)
    assert "domains" not in mdata.obs  # copy=True leaves the input alone
    params = out.uns["domains"]["params"]
    assert params["use_rep"] == "X_joint" and params["n_domains"] == 3
    assert params["n_domains_from"] == "uns['joint']['params']['n_clusters']"
    joint = _ari(truth, out.obs["joint"])
    domains = _ari(truth, out.obs["domains"])
    assert domains > 0.8 and domains > joint, (domains, joint)  # measured 0.85 vs 0.18


def test_spots_without_an_embedding_get_no_domain():
    positions, truth, x = _domains(seed=2)
    x[:40] = np.nan
    adata = _adata(x, positions)
    sf.tl.spatial_domains(adata, n_domains=3, key_added="d")
    labels = adata.obs["d"]
    assert labels.isna().to_numpy()[:40].all() and not labels.isna().to_numpy()[40:].any()
    assert adata.uns["d"]["params"]["n_spots"] == truth.size - 40
    assert _ari(truth[40:], labels.to_numpy()[40:]) > 0.6  # measured 0.74


def test_bad_input():
    positions, _, x = _domains()
    adata = _adata(x, positions)
    with pytest.raises(ValueError, match=r"give n_domains, or run sf\.tl\.joint_cluster"):
        sf.tl.spatial_domains(adata)
    with pytest.raises(ValueError, match="obsm has no 'X_nope'"):
        sf.tl.spatial_domains(adata, n_domains=3, use_rep="X_nope")
    del adata.obsm["spatial_um"]
    with pytest.raises(ValueError, match="needs spot positions"):
        sf.tl.spatial_domains(adata, n_domains=3)
    with pytest.raises(TypeError, match="MuData or an AnnData"):
        sf.tl.spatial_domains(np.zeros((3, 2)), n_domains=2)
