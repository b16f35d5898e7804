"""``resolution="auto"`` and the option ``resolution="consensus"`` (issue 18, session 10).

``"auto"`` (the default) keeps the finest resolution whose stability (mean ARI between Leiden runs
on 80 % subsets) is within 0.05 of the best; coarse splits are nearly always the most stable, so
where the data have a clear coarse level and a fuzzier finer one it settles on the coarse one (two
clusters), and on pure noise it takes a fine level (16-20 clusters here). ``"consensus"``:
stability within 0.15 of the best, every cluster stable (clusterboot Jaccard >= 0.75) and every
two clusters separated by >= 2.65 pooled SD in the embedding; the finest such resolution, else one
cluster. (Not the default: it over-split two held-out semi-real runs, docs/benchmarks.md.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_cluster import _ari, _mdata
from test_cluster_weights import _grid

import spatialfuse as sf
from spatialfuse.errors import DataWarning
from spatialfuse.tl import _cluster


def _two_levels(seed: int, sep: float, *, big: float = 10.0, n: int = 100, dims: int = 5):
    """Four groups of ``n``: {0, 1} and {2, 3} ``big`` apart in both modalities; within the
    pairs, the RNA tells 0 from 1 and the MSI 2 from 3, ``sep`` apart (noise SD 1)."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1, 2, 3], n)
    rna = rng.normal(size=(group.size, dims))
    msi = rng.normal(size=(group.size, dims))
    rna[group >= 2, 0] += big
    msi[group >= 2, 0] += big
    rna[group == 1, 1] += sep
    msi[group == 3, 1] += sep
    return group, rna - rna.mean(axis=0), msi - msi.mean(axis=0)


@pytest.mark.parametrize(("seed", "sep"), [(1, 3.5), (1, 3.0), (0, 3.0)])
def test_a_real_finer_level_is_not_collapsed_to_two_clusters(seed, sep):
    """Measured: 4 clusters, ARI 0.90 / 0.83 / 0.78; ``"auto"``: 2 clusters, ARI 0.50."""
    group, rna, msi = _two_levels(seed, sep)
    mdata = _mdata(rna, msi)
    sf.tl.joint_cluster(mdata, resolution="consensus")
    params = mdata.uns["joint"]["params"]
    assert params["resolution_rule"] == "consensus"
    assert params["n_clusters"] == 4
    assert _ari(group, mdata.obs["joint"]) > 0.75
    chosen = f"{params['resolution']:g}"
    assert params["cluster_stability"][chosen] >= _cluster.CLUSTER_STABILITY_MIN
    assert params["separation"][chosen] >= _cluster.SEPARATION_MIN
    # "auto": a more stable coarse level, two clusters (the same subsets, the same record)
    stability = params["stability"]
    assert stability[chosen] < max(stability.values()) - 0.05
    sf.tl.joint_cluster(mdata, key_added="auto")
    auto = mdata.uns["auto"]["params"]
    assert auto["resolution_rule"] == "stability" and auto["stability"] == stability
    assert auto["n_clusters"] == 2
    assert _ari(group, mdata.obs["auto"]) < 0.55


@pytest.mark.parametrize("positions", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_pure_noise_is_one_cluster(seed, positions):
    """No structure in either modality: one cluster with a DataWarning (``"auto"``: 16-20)."""
    rng = np.random.default_rng(seed)
    where = _grid() if positions else None
    n = len(where) if positions else 300
    mdata = _mdata(rng.normal(size=(n, 6)), rng.normal(size=(n, 6)), positions=where)
    with pytest.warns(DataWarning, match="all spots are put in one cluster"):
        sf.tl.joint_cluster(mdata, resolution="consensus")
    params = mdata.uns["joint"]["params"]
    assert params["n_clusters"] == 1 and params["resolution"] == 0.0
    assert mdata.obs["joint"].nunique() == 1
    assert np.isfinite(mdata.obsm["X_joint"]).all()
    assert min(params["cluster_stability"].values()) < _cluster.CLUSTER_STABILITY_MIN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        sf.tl.cluster_modality(mdata, "rna", resolution="consensus")
        sf.tl.joint_cluster(mdata, key_added="auto")
    assert mdata.uns["rna_clusters"]["params"]["n_clusters"] == 1
    assert mdata.uns["auto"]["params"]["n_clusters"] > 10


def test_separation_of_one_gaussian_cut_in_two_is_2_65():
    x = np.random.default_rng(0).normal(size=(200_000, 1))
    halves = (x[:, 0] > 0).astype(np.int64)
    expected = 2 * np.sqrt(2 / np.pi) / np.sqrt(1 - 2 / np.pi)  # 2.647
    assert _cluster._separation(x, halves) == pytest.approx(expected, abs=0.01)
    assert _cluster.SEPARATION_MIN == pytest.approx(expected, abs=0.005)
    # three well-apart groups: the closest pair sets the value; one cluster: inf
    y = np.concatenate([np.zeros(50), np.full(50, 4.0), np.full(50, 10.0)])[:, None]
    y = y + np.random.default_rng(1).normal(size=y.shape)
    labels = np.repeat([0, 1, 2], 50)
    assert 3.0 < _cluster._separation(y, labels) < 5.0
    assert _cluster._separation(y, np.zeros(150, dtype=np.int64)) == np.inf


def test_cluster_jaccard_known_answers():
    labels = np.repeat([0, 1], 50)
    same = labels.copy()
    halved = labels.copy()
    halved[25:50] = 2  # cluster 0 comes back cut in half
    partial = np.full(100, -1)
    partial[::2] = labels[::2]  # a subset run that saw every second spot
    np.testing.assert_allclose(_cluster._cluster_jaccard(labels, [same, partial]), [1.0, 1.0])
    np.testing.assert_allclose(_cluster._cluster_jaccard(labels, [halved]), [0.5, 1.0])
    np.testing.assert_allclose(_cluster._cluster_jaccard(labels, [same, halved]), [0.75, 1.0])
