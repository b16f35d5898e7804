"""``sf.tl.joint_cluster(weights="auto")``: each modality weighted by its spatial signal share.

Known answers on a hexagonal Visium-like grid (pitch 100 µm) cut into three vertical stripes: a
column ``sep · [stripe] + N(0, 1)`` has signal share ``var(signal) / (var(signal) + 1)``; a column
of pure noise has share 0; a modality of pure noise gets weight 0, and the joint clusters are then
those of the informative modality.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import spatialfuse as sf
from spatialfuse.errors import DataWarning
from spatialfuse.tl import _cluster
from spatialfuse.tl._cluster import signal_share


def _grid(nx: int = 24, ny: int = 16) -> np.ndarray:
    """Spot centres ``(x, y)`` of a hexagonal grid, 100 µm apart (rows offset by half a pitch)."""
    cols, rows = np.meshgrid(np.arange(nx), np.arange(ny))
    x = cols * 100.0 + (rows % 2) * 50.0
    y = rows * 100.0 * np.sqrt(3.0) / 2.0
    return np.column_stack([x.ravel(), y.ravel()])


def _stripes(positions: np.ndarray) -> np.ndarray:
    return np.digitize(positions[:, 0], [800.0, 1600.0])


def _mdata(rna_pc, msi_pc, positions=None):
    import anndata as ad
    import mudata as md
    import pandas as pd

    n = len(rna_pc)
    obs = pd.DataFrame(index=pd.Index([f"BC{i:04d}-1" for i in range(n)], dtype=str))
    mods = {}
    for name, pcs in (("rna", rna_pc), ("msi", msi_pc)):
        pcs = np.asarray(pcs, dtype=np.float64)
        var = pd.DataFrame(index=[f"{name}{j}" for j in range(pcs.shape[1])])
        mod = ad.AnnData(X=np.nan_to_num(pcs), obs=obs.copy(), var=var)
        mod.obsm["X_pca"] = pcs
        mods[name] = mod
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    if positions is not None:
        mdata.obsm["spatial_um"] = positions
    return mdata


def _informative_and_noise(seed: int = 0, sep: float = 5.0):
    """RNA: stripes 1 and 2 shifted by ``sep`` on PCs 0 and 1 (4 more PCs of noise); MSI: noise."""
    positions = _grid()
    group = _stripes(positions)
    rng = np.random.default_rng(seed)
    rna = rng.normal(size=(group.size, 6))
    rna[:, 0] += sep * (group == 1)
    rna[:, 1] += sep * (group == 2)
    msi = rng.normal(size=(group.size, 15))
    return positions, group, rna - rna.mean(axis=0), msi - msi.mean(axis=0)


def _ari(truth, labels) -> float:
    labels = np.asarray(labels, dtype=object)
    return adjusted_rand_score(truth, labels.astype(str))


def test_signal_share_known_answers():
    positions = _grid()
    group = _stripes(positions)
    rng = np.random.default_rng(1)
    n = group.size
    step = 3.0 * (group == 1)
    gradient = positions[:, 0] / positions[:, 0].std()  # smooth: unit variance across the grid
    columns = np.column_stack(
        [
            step + rng.normal(size=n),
            2.0 * gradient + rng.normal(size=n),
            np.full(n, 4.0),  # constant
            *(rng.normal(scale=s, size=n) for s in (0.1, 1.0, 10.0)),  # noise at any scale
        ]
    )
    share = signal_share(columns, positions, n_neighbors=6)
    expected_step = step.var() / (step.var() + 1.0)
    assert share[0] == pytest.approx(expected_step, abs=0.05)
    assert share[1] == pytest.approx(4.0 / 5.0, abs=0.05)  # adjacent spots differ a little
    np.testing.assert_array_equal(share[2:], 0.0)


def test_null_spread_of_the_share_is_as_documented(monkeypatch):
    """Without spatial signal the raw share scatters with SD 2.33 / sqrt(pairs) around 0."""
    monkeypatch.setattr(_cluster, "SIGNAL_FLOOR_SD", 0.0)
    positions = _grid()
    noise = np.random.default_rng(2).normal(size=(len(positions), 400))
    raw = signal_share(noise, positions, n_neighbors=6)  # clipped at 0 from below
    import anndata as ad
    from scipy import sparse

    from spatialfuse._spatial_graph import spatial_knn_graph

    tmp = ad.AnnData(obs={"i": np.arange(len(positions))})
    tmp.obsm["spatial"] = positions
    spatial_knn_graph(tmp, n_neighs=6)
    graph = (tmp.obsp["spatial_connectivities"] > 0).astype(float)
    pairs = sparse.triu(((graph + graph.T) > 0).astype(float), k=1).nnz
    sd = _cluster._null_share_sd(pairs)
    assert sd == pytest.approx(2.33 / np.sqrt(pairs), rel=0.01)
    # the 90th percentile of a N(0, sd) is 1.28 sd (the clipping at 0 leaves it alone)
    assert np.quantile(raw, 0.9) == pytest.approx(1.2816 * sd, rel=0.25)


def test_a_pure_noise_modality_gets_no_weight():
    positions, group, rna, msi = _informative_and_noise()
    mdata = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(mdata)
    params = mdata.uns["joint"]["params"]
    assert params["weights_rule"] == "signal"
    shares = params["signal_share"]
    assert shares["msi"] == [0.0] * 15
    assert min(shares["rna"][:2]) > 0.7 and shares["rna"][2:] == [0.0] * 4
    assert params["weights"][1] == 0.0 and params["weights"][0] > 0.5
    # the joint clusters are the informative modality's
    sf.tl.cluster_modality(mdata, "rna")
    joint, rna_alone = _ari(group, mdata.obs["joint"]), _ari(group, mdata.obs["rna_clusters"])
    assert joint >= 0.95
    assert joint == pytest.approx(rna_alone, abs=0.03)
    # the joint embedding: each block's total variance is the modality's weight
    x = mdata.obsm["X_joint"]
    assert x[:, :6].var(axis=0, ddof=1).sum() == pytest.approx(params["weights"][0], rel=1e-9)
    np.testing.assert_array_equal(x[:, 6:], 0.0)


def test_a_noisy_partly_covered_modality_does_not_dominate():
    """MSI noise on 70 % of the spots (NaN elsewhere): weight 0, every spot labelled by RNA."""
    positions, group, rna, msi = _informative_and_noise(seed=3)
    msi = 5.0 * msi
    msi[positions[:, 1] > np.quantile(positions[:, 1], 0.7)] = np.nan
    mdata = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(mdata)
    params = mdata.uns["joint"]["params"]
    assert params["weights"][1] == 0.0
    assert params["n_spots_placed"] == int(np.isnan(msi[:, 0]).sum()) > 0
    assert _ari(group, mdata.obs["joint"]) >= 0.95
    assert np.isfinite(mdata.obsm["X_joint"]).all()


def test_equal_weights_where_there_is_no_spatial_evidence():
    positions, _, rna, msi = _informative_and_noise(seed=4)
    plain = _mdata(rna, msi)  # no positions
    sf.tl.joint_cluster(plain, n_clusters=3)
    assert plain.uns["joint"]["params"]["weights_rule"] == "equal (no spot positions)"
    assert plain.uns["joint"]["params"]["weights"] == [1.0, 1.0]
    sf.tl.joint_cluster(plain, n_clusters=3, weights=None, key_added="none")
    np.testing.assert_array_equal(
        plain.obsp["joint_connectivities"].toarray(), plain.obsp["none_connectivities"].toarray()
    )
    placed = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(placed, n_clusters=3, spatial_smoothing=0.0)
    params = placed.uns["joint"]["params"]
    assert params["weights_rule"] == "equal (no spatial smoothing)"
    np.testing.assert_array_equal(
        placed.obsp["joint_connectivities"].toarray(), plain.obsp["none_connectivities"].toarray()
    )
    # too few spots for the median of their pairs to mean much
    few = _mdata(rna[:20], msi[:20], positions=positions[:20])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # too few for the stability rule too
        sf.tl.joint_cluster(few)
    assert few.uns["joint"]["params"]["weights_rule"] == "equal (too few spots)"
    # positions that say nothing (shuffled): no modality has a share, equal weights, a warning
    shuffled = _mdata(rna, msi, positions=np.random.default_rng(0).permutation(positions))
    with pytest.warns(DataWarning, match="no modality shows spatial signal"):
        sf.tl.joint_cluster(shuffled, n_clusters=3)
    assert shuffled.uns["joint"]["params"]["weights_rule"] == "equal (no spatial signal)"


def test_given_weights_and_bad_values():
    positions, _, rna, msi = _informative_and_noise(seed=5)
    mdata = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(mdata, weights={"msi": 0.5}, n_clusters=3)
    params = mdata.uns["joint"]["params"]
    assert params["weights_rule"] == "given" and params["weights"] == [1.0, 0.5]
    assert "signal_share" not in params
    with pytest.raises(ValueError, match="weights must be 'auto', 'detrended', None or a dict"):
        sf.tl.joint_cluster(mdata, weights="signal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        sf.tl.joint_cluster(mdata, method="wnn", n_clusters=3, key_added="w")  # "auto": no error
    assert "weights_rule" not in mdata.uns["w"]["params"]
    with pytest.raises(ValueError, match="at least 3 spots"):
        signal_share(rna[:2], positions[:2])
