"""``sf.tl.joint_cluster(feature_smoothing="noise_share")``: each component smoothed by its noise.

Each component ``k`` of each modality is moved toward its spatial neighbours' mean by its own noise
share ``1 − ρ_k`` (``ρ_k`` the signal share the weights measure): a noise-free component is left
alone, a component of pure noise is replaced by its neighbours' mean, one in between is smoothed
by its share. Known answers on a hexagonal Visium-like grid (pitch 100 µm), and the weak-border
case of ``tests/tl/test_domains.py`` (two halves and a disc, mean shifts below the noise), where
the clusters of the defaults are mostly noise and those of the option recover the regions.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from test_cluster_weights import _grid, _mdata  # tests/tl/test_cluster_weights.py
from test_domains import _domains  # tests/tl/test_domains.py

import spatialfuse as sf
from spatialfuse.tl._cluster import neighbour_average, signal_share


def _ari(truth, labels) -> float:
    return adjusted_rand_score(truth, np.asarray(labels, dtype=object).astype(str))


def test_neighbour_average_takes_one_share_per_column():
    positions = _grid(40, 30)
    noise = np.random.default_rng(0).normal(size=(len(positions), 3))
    out = neighbour_average(noise, positions, share=np.array([0.0, 0.5, 1.0]))
    assert np.array_equal(out[:, 0], noise[:, 0])  # share 0: unchanged
    assert np.allclose(out[:, 1], neighbour_average(noise[:, [1]], positions, share=0.5)[:, 0])
    # share 1: the neighbours' mean alone; independent noise keeps about 1/6 of its variance
    assert np.var(out[:, 2]) == pytest.approx(1.0 / 6.0, abs=0.03)
    with pytest.raises(ValueError, match="one per column"):
        neighbour_average(noise, positions, share=np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        neighbour_average(noise, positions, share=np.array([0.5, 1.5, 0.0]))


def _stripes_and_noise(seed: int = 0):
    """Three vertical stripes. RNA: PC 0 the stripes without noise, PC 1 the stripes plus noise of
    SD 1.5, PC 2 noise; MSI: PC 0 the stripes plus noise of SD 1, PC 1 noise."""
    positions = _grid(30, 24)
    group = np.digitize(positions[:, 0], [1000.0, 2000.0])
    rng = np.random.default_rng(seed)
    n = group.size
    step = 2.0 * group.astype(float)
    rna = np.column_stack([step, step + 1.5 * rng.normal(size=n), rng.normal(size=n)])
    msi = np.column_stack([step + rng.normal(size=n), rng.normal(size=n)])
    return positions, group, rna - rna.mean(axis=0), msi - msi.mean(axis=0)


def test_a_noise_free_component_is_left_alone_a_noisy_one_smoothed_by_its_share():
    positions, group, rna, msi = _stripes_and_noise()
    mdata = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(mdata, feature_smoothing="noise_share", key_added="j")
    params = mdata.uns["j"]["params"]
    assert params["feature_smoothing"] == "noise_share"
    rho = {m: np.asarray(params["signal_share"][m]) for m in ("rna", "msi")}
    smoothing = {m: np.asarray(params["smoothing_share"][m]) for m in ("rna", "msi")}
    for m in ("rna", "msi"):
        assert np.allclose(smoothing[m], 1.0 - rho[m])
        assert np.allclose(rho[m], signal_share(mdata[m].obsm["X_pca"], positions))
    # the noise-free stripes: share 1 (adjacent spots equal but at the stripes' borders)
    assert rho["rna"][0] == pytest.approx(1.0) and smoothing["rna"][0] == pytest.approx(0.0)
    # stripes (variance 8/3) + noise: shares near 8/3 / (8/3 + 2.25) and 8/3 / (8/3 + 1)
    assert rho["rna"][1] == pytest.approx(0.54, abs=0.08)
    assert rho["msi"][0] == pytest.approx(0.73, abs=0.08)
    assert rho["rna"][2] == 0.0 and rho["msi"][1] == 0.0  # pure noise: smoothed fully
    # the joint embedding: block column k = x_k smoothed by 1 - rho_k, times sqrt(rho_k / T_m)
    joint = mdata.obsm["X_j"]
    expected = {
        m: neighbour_average(mdata[m].obsm["X_pca"], positions, share=smoothing[m])
        for m in ("rna", "msi")
    }
    assert np.allclose(expected["rna"][:, 0], rna[:, 0])  # left alone
    assert not np.allclose(expected["rna"][:, 1], rna[:, 1])
    start = 0
    for m in ("rna", "msi"):
        e = expected[m]
        scale = np.sqrt(rho[m] / np.var(e, axis=0, ddof=1).sum())
        assert np.allclose(joint[:, start : start + e.shape[1]], e * scale)
        start += e.shape[1]
    # the smoothed noisy column keeps its stripes and loses most of its noise
    residual = expected["rna"][:, 1] - 2.0 * group
    residual -= residual.mean()
    assert np.var(residual) < 0.45 * 2.25  # smoothed by 0.44: measured 0.36 of it


def test_noise_free_data_are_not_smoothed():
    positions, group, _, _ = _stripes_and_noise()
    step = 2.0 * group.astype(float)
    clean = np.column_stack([step, -step])
    mdata = _mdata(clean - clean.mean(axis=0), clean[:, ::-1] - clean.mean(axis=0), positions)
    sf.tl.joint_cluster(mdata, key_added="plain")
    sf.tl.joint_cluster(mdata, feature_smoothing="noise_share", key_added="ns")
    shares = mdata.uns["ns"]["params"]["smoothing_share"]
    assert max(max(v) for v in shares.values()) == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(mdata.obsm["X_ns"], mdata.obsm["X_plain"])
    assert list(mdata.obs["ns"]) == list(mdata.obs["plain"])
    assert _ari(group, mdata.obs["ns"]) == 1.0


@pytest.mark.parametrize("seed", [1, 3])
def test_weak_borders_recovered_where_the_defaults_give_noise(seed):
    """The two halves and a disc of ``test_domains.py`` (noise 1.5 × the means' spread)."""
    positions, truth, x = _domains(seed=seed)
    mdata = _mdata(x[:, :4], x[:, 4:], positions=positions)
    sf.tl.joint_cluster(mdata, key_added="plain")
    sf.tl.joint_cluster(mdata, feature_smoothing="noise_share", key_added="ns")
    plain, ns = _ari(truth, mdata.obs["plain"]), _ari(truth, mdata.obs["ns"])
    # measured: seed 1 0.05 (22 clusters) -> 0.86 (3); seed 3 0.51 (2) -> 0.97 (3)
    assert ns > 0.8 and ns > plain + 0.3, (ns, plain)
    assert mdata.uns["ns"]["params"]["n_clusters"] == 3


def test_noise_share_is_checked_and_needs_positions():
    positions, _, rna, msi = _stripes_and_noise()
    mdata = _mdata(rna, msi, positions=positions)
    with pytest.raises(ValueError, match="or be 'noise_share'"):
        sf.tl.joint_cluster(mdata, feature_smoothing="noise")
    with pytest.raises(ValueError, match="or be 'noise_share'"):
        sf.tl.joint_cluster(mdata, method="wnn", feature_smoothing=-0.1)
    with pytest.raises(ValueError, match="needs spot positions"):
        sf.tl.joint_cluster(_mdata(rna, msi), feature_smoothing="noise_share")
    # equal weights: the shares are measured for the smoothing alone
    sf.tl.joint_cluster(mdata, weights=None, feature_smoothing="noise_share", key_added="eq")
    params = mdata.uns["eq"]["params"]
    assert params["weights_rule"] == "equal" and "signal_share" not in params
    assert params["smoothing_share"]["rna"][0] == pytest.approx(0.0)
    assert params["smoothing_share"]["rna"][2] == pytest.approx(1.0)
    # no spatial signal anywhere: nothing to go by, nothing smoothed
    rng = np.random.default_rng(5)
    noise = _mdata(rng.normal(size=rna.shape), rng.normal(size=msi.shape), positions)
    with pytest.warns(sf.errors.DataWarning, match="no modality shows spatial signal"):
        sf.tl.joint_cluster(noise, feature_smoothing="noise_share", key_added="n")
    assert noise.uns["n"]["params"]["smoothing_share"] is None
