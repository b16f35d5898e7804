"""sf.tl.joint_cluster / cluster_modality on designed embeddings with known groups, and the WNN
core against a loop-by-loop re-implementation of Hao et al.'s definitions."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import spatialfuse as sf
from spatialfuse.tl import MissingDependencyError
from spatialfuse.tl._wnn import kernel_graph, modality_weights, neighbourhoods, wnn_graph

N_PER = 60


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
        mod = ad.AnnData(X=pcs.copy(), obs=obs.copy(), var=var)  # the features MOFA+ would use
        mod.obsm["X_pca"] = pcs
        mods[name] = mod
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    if positions is not None:
        mdata.obsm["spatial_um"] = positions
    return mdata


def _design(seed=0, sep=6.0, dims=5):
    """Three groups: RNA separates group 2 from {0, 1}, MSI separates group 0 from {1, 2}."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1, 2], N_PER)
    rna = rng.normal(size=(group.size, dims))
    msi = rng.normal(size=(group.size, dims))
    rna[group == 2, 0] += sep
    msi[group == 0, 0] += sep
    return group, rna - rna.mean(axis=0), msi - msi.mean(axis=0)  # centred, as PCA scores are


def _ari(truth, labels):
    labels = np.asarray(labels, dtype=object)
    ok = ~np.asarray([v is None or (isinstance(v, float) and np.isnan(v)) for v in labels])
    return adjusted_rand_score(truth[ok], labels[ok].astype(str))


@pytest.mark.parametrize("method", ["wnn", "concat"])
def test_joint_recovers_what_each_modality_misses(method):
    group, rna, msi = _design()
    mdata = _mdata(rna, msi)
    sf.tl.joint_cluster(mdata, method=method, n_clusters=3)
    sf.tl.cluster_modality(mdata, "rna", n_clusters=3)
    sf.tl.cluster_modality(mdata, "msi", n_clusters=3)
    joint = _ari(group, mdata.obs["joint"])
    singles = [_ari(group, mdata.obs[f"{m}_clusters"]) for m in ("rna", "msi")]
    assert joint > 0.9 and max(singles) < 0.7, (joint, singles)
    assert mdata.obs["joint"].cat.categories.tolist() == ["0", "1", "2"]
    assert mdata.uns["joint"]["params"]["n_clusters"] == 3
    graph = mdata.obsp["joint_connectivities"]
    assert abs(graph - graph.T).max() < 1e-12 and graph.diagonal().max() == 0
    for mod in ("rna", "msi"):  # labels copied for plotting each modality
        assert (mdata[mod].obs["joint"] == mdata.obs["joint"]).all()
    if method == "wnn":
        w = mdata.obs[["joint_weight_rna", "joint_weight_msi"]].to_numpy()
        np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_weights_favour_the_informative_modality():
    rng = np.random.default_rng(3)
    group = np.repeat([0, 1, 2], N_PER)
    informative = rng.normal(size=(group.size, 5))
    informative[np.arange(group.size), group] += 6.0  # group g apart along axis g
    informative -= informative.mean(axis=0)
    noise = rng.normal(size=(group.size, 5))
    mdata = _mdata(informative, noise)
    sf.tl.joint_cluster(mdata, method="wnn", n_clusters=3)
    assert mdata.obs["joint_weight_rna"].mean() > 0.8
    assert _ari(group, mdata.obs["joint"]) > 0.95
    mdata = _mdata(noise, informative)  # swapped roles, swapped weights
    sf.tl.joint_cluster(mdata, method="wnn", n_clusters=3)
    assert mdata.obs["joint_weight_msi"].mean() > 0.8


@pytest.mark.parametrize("method", ["wnn", "concat"])
def test_deterministic_for_a_seed(method):
    _, rna, msi = _design(seed=4, sep=2.5)  # overlapping groups: Leiden has choices to make
    runs = []
    for _ in range(2):
        mdata = _mdata(rna, msi)
        sf.tl.joint_cluster(mdata, method=method, resolution=1.5, seed=7)
        runs.append(mdata)
    np.testing.assert_array_equal(runs[0].obs["joint"], runs[1].obs["joint"])
    assert (runs[0].obsp["joint_connectivities"] != runs[1].obsp["joint_connectivities"]).nnz == 0


@pytest.mark.parametrize("method", ["wnn", "concat"])
def test_spots_without_msi_are_placed_by_rna(method):
    group, rna, msi = _design(seed=1)
    missing = np.random.default_rng(2).random(group.size) < 0.2
    msi[missing] = np.nan
    mdata = _mdata(rna, msi)
    sf.tl.joint_cluster(mdata, method=method, n_clusters=3)
    labels = mdata.obs["joint"].to_numpy()
    assert not mdata.obs["joint"].isna().any()  # every spot is labelled
    measured = ~missing
    assert _ari(group[measured], labels[measured]) > 0.9
    # RNA tells group 2 from the rest, not group 0 from group 1: a spot without MSI gets the
    # label of group 2 exactly when it belongs to group 2
    label_of_2 = mdata.obs["joint"][measured & (group == 2)].mode()[0]
    np.testing.assert_array_equal(labels[missing] == label_of_2, group[missing] == 2)
    basis = mdata.obs["joint_basis"].to_numpy()
    assert (basis[missing] == "rna").all() and (basis[measured] == "rna+msi").all()
    graph = mdata.obsp["joint_connectivities"]
    assert graph[np.flatnonzero(missing)].nnz == 0  # they did not shape the clusters
    # the clusters of the measured spots are those of the measured spots alone
    alone = _mdata(rna[measured], msi[measured])
    sf.tl.joint_cluster(alone, method=method, n_clusters=3)
    np.testing.assert_array_equal(alone.obs["joint"], labels[measured])
    if method == "wnn":
        np.testing.assert_array_equal(mdata.obs["joint_weight_msi"][missing], 0.0)
        np.testing.assert_array_equal(mdata.obs["joint_weight_rna"][missing], 1.0)
        assert (mdata.obs["joint_weight_msi"][measured] > 0).all()
    # single-modality MSI clustering: no label where there is no MSI
    sf.tl.cluster_modality(mdata, "msi", n_clusters=2)
    assert mdata.obs["msi_clusters"].isna().to_numpy().tolist() == missing.tolist()
    assert mdata.obsp["msi_clusters_connectivities"][np.flatnonzero(missing)].nnz == 0


def test_concat_without_the_second_block_is_the_single_modality_clustering():
    _, rna, msi = _design(seed=5, sep=3.0)
    mdata = _mdata(rna, msi)
    sf.tl.joint_cluster(mdata, method="concat", weights={"msi": 0.0}, resolution=0.8)
    sf.tl.cluster_modality(mdata, "rna", resolution=0.8)
    np.testing.assert_array_equal(mdata.obs["joint"], mdata.obs["rna_clusters"])
    diff = mdata.obsp["joint_connectivities"] - mdata.obsp["rna_clusters_connectivities"]
    assert abs(diff).max() < 1e-9


def test_spatial_smoothing_follows_the_tissue():
    """Two halves of a spot grid, weakly told apart by either modality: smoothing helps."""
    rng = np.random.default_rng(11)
    gx, gy = np.meshgrid(np.arange(20), np.arange(12))
    pos = np.column_stack([gx.ravel(), gy.ravel()]) * 100.0
    half = (gx.ravel() >= 10).astype(int)
    rna = rng.normal(size=(half.size, 5))
    msi = rng.normal(size=(half.size, 5))
    rna[:, 0] += 1.2 * half
    msi[:, 0] += 1.2 * half
    scores = {}
    for alpha in (0.0, 0.6):
        mdata = _mdata(rna, msi, positions=pos)
        sf.tl.joint_cluster(mdata, method="wnn", n_clusters=2, spatial_smoothing=alpha)
        scores[alpha] = _ari(half, mdata.obs["joint"])
    assert scores[0.6] > 0.8 and scores[0.6] > scores[0.0] + 0.3, scores


def test_cluster_modality_on_an_anndata():
    import anndata as ad

    group, rna, _ = _design()
    adata = ad.AnnData(obsm={"X_pca": rna})
    sf.tl.cluster_modality(adata, n_clusters=2, key_added="k")
    assert _ari(group == 2, adata.obs["k"]) > 0.95
    assert adata.uns["k"]["params"]["n_clusters"] == 2
    with pytest.raises(ValueError, match="modality must be None"):
        sf.tl.cluster_modality(adata, "rna")


def test_n_clusters_that_no_resolution_gives_warns():
    from spatialfuse.errors import DataWarning

    # two far-apart groups of 6 spots: the graph has two components, so never one cluster
    rng = np.random.default_rng(0)
    rna = rng.normal(size=(12, 3))
    rna[6:, 0] += 50
    rna -= rna.mean(axis=0)
    mdata = _mdata(rna, rna + rng.normal(0, 0.1, size=rna.shape))
    with pytest.warns(DataWarning, match="no resolution tried gives 1 clusters; keeping 2"):
        sf.tl.joint_cluster(mdata, n_clusters=1, n_neighbors=5)
    assert mdata.obs["joint"].nunique() == 2


def test_bad_input():
    _, rna, msi = _design()
    mdata = _mdata(rna, msi)
    with pytest.raises(ValueError, match="method must be one of"):
        sf.tl.joint_cluster(mdata, method="magic")
    with pytest.raises(ValueError, match="at least two modalities"):
        sf.tl.joint_cluster(mdata, modalities=["rna"])
    with pytest.raises(ValueError, match="unknown modalities"):
        sf.tl.joint_cluster(mdata, modalities=["rna", "atac"])
    with pytest.raises(ValueError, match=r"run sf\.pp\.preprocess_rna"):
        sf.tl.joint_cluster(mdata, use_rep="X_umap")
    with pytest.raises(ValueError, match="spatial_smoothing"):
        sf.tl.joint_cluster(mdata, spatial_smoothing=1.0)
    with pytest.raises(ValueError, match="positions"):
        sf.tl.joint_cluster(mdata, spatial_smoothing=0.5)
    with pytest.raises(ValueError, match="n_neighbors"):
        sf.tl.joint_cluster(mdata, n_neighbors=1)
    with pytest.raises(ValueError, match="weights apply to method='concat' only"):
        sf.tl.joint_cluster(mdata, method="wnn", weights={"rna": 2.0})
    with pytest.raises(ValueError, match="weights name modalities not clustered"):
        sf.tl.joint_cluster(mdata, method="concat", weights={"atac": 2.0})
    with pytest.raises(TypeError, match="MuData"):
        sf.tl.joint_cluster(rna)
    odd = (np.arange(len(rna)) % 2 == 1)[:, None]
    with pytest.raises(ValueError, match=r"no modality among \['rna', 'msi'\] has data for every"):
        sf.tl.joint_cluster(_mdata(np.where(odd, np.nan, rna), np.where(odd, msi, np.nan)))
    few = np.full_like(msi, np.nan)
    few[:2] = msi[:2]
    with pytest.raises(ValueError, match="at least 3 spots with every modality"):
        sf.tl.joint_cluster(_mdata(rna, few))


def test_mofa_without_mofapy2_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mofapy2", None)  # import mofapy2 → ImportError
    _, rna, msi = _design()
    with pytest.raises(ImportError, match="pip install mofapy2") as info:
        sf.tl.joint_cluster(_mdata(rna, msi), method="mofa")
    assert isinstance(info.value, MissingDependencyError)


def test_mofa_when_installed():
    pytest.importorskip("mofapy2")
    group, rna, msi = _design(seed=6)
    missing = np.zeros(group.size, dtype=bool)
    missing[::9] = True
    msi[missing] = np.nan
    mdata = _mdata(rna, msi)
    sf.tl.joint_cluster(mdata, method="mofa", n_factors=4, n_clusters=3)
    labels = mdata.obs["joint"].to_numpy()
    assert _ari(group[~missing], labels[~missing]) > 0.9
    assert not mdata.obs["joint"].isna().any()
    assert mdata.uns["joint"]["params"]["n_factors"] <= 4


# -------------------------------------------------------------------------------------------------
# the WNN core against its definitions, written out with loops


def _reference_width(x, k):
    """Seurat's kernel width: the mean of d − c over the k farthest of the spots whose
    k-neighbourhoods (self included) overlap least (smallest nonzero Jaccard index, all spots at
    the k-th smallest value considered)."""
    n = len(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    hoods = [set(np.argsort(d[i], kind="stable")[:k]) for i in range(n)]
    c = np.sort(d, axis=1)[:, 1]
    width = np.empty(n)
    for i in range(n):
        jac = {}
        for j in range(n):
            inter = len(hoods[i] & hoods[j])
            if j != i and inter:
                jac[j] = inter / len(hoods[i] | hoods[j])
        kth = sorted(jac.values())[min(k, len(jac)) - 1]
        far = sorted((d[i, j] for j, v in jac.items() if v <= kth), reverse=True)[:k]
        width[i] = np.mean(far) - c[i]
    return width, c, d


def test_width_and_kernel_match_the_definition():
    x = np.random.default_rng(8).normal(size=(40, 3))
    hoods = neighbourhoods(x, k=6)
    width, c, d = _reference_width(x, 6)
    np.testing.assert_allclose(hoods.width, width, rtol=1e-12)
    np.testing.assert_allclose(hoods.c, c, rtol=1e-12)
    graph = kernel_graph(hoods).toarray()
    for i in range(40):
        nearest = np.argsort(d[i])[1:6]
        expected = np.exp(-np.maximum(d[i, nearest] - c[i], 0) / width[i])
        np.testing.assert_allclose(graph[i, nearest], expected, rtol=1e-12)
        assert np.count_nonzero(graph[i]) == 5


def test_wnn_weights_and_graph_match_the_definition():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 4))
    a[:10, 0] += 4
    k = 5
    hoods = {"a": neighbourhoods(a, k=k, n_candidates=12), "b": neighbourhoods(b, k=k)}
    weights = modality_weights(hoods)
    graph = wnn_graph(hoods, weights, n_candidates=12).toarray()

    emb = {"a": a, "b": b}
    ref = {m: _reference_width(emb[m], k) for m in emb}
    scores = np.zeros((30, 2))
    for col, (m, other) in enumerate((("a", "b"), ("b", "a"))):
        width, c, d = ref[m]
        d_other = ref[other][2]
        for i in range(30):
            within = emb[m][np.argsort(d[i], kind="stable")[:k]].mean(axis=0)  # self included
            cross = emb[m][np.argsort(d_other[i], kind="stable")[:k]].mean(axis=0)

            def theta(p, i=i, c=c, width=width, m=m):
                return np.exp(-max(np.linalg.norm(emb[m][i] - p) - c[i], 0) / width[i])

            scores[i, col] = min(theta(within) / (theta(cross) + 1e-4), 200.0)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights, expected, rtol=1e-9, atol=1e-12)

    # each spot's k − 1 edges go to the candidates (12 nearest in a, 4 in b) of largest
    # w_a θ_a + w_b θ_b
    for i in range(30):
        cand = set(np.argsort(ref["a"][2][i])[1:13]) | set(np.argsort(ref["b"][2][i])[1:5])
        joint = {}
        for j in cand:
            joint[j] = sum(
                weights[i, col] * np.exp(-max(ref[m][2][i, j] - ref[m][1][i], 0) / ref[m][0][i])
                for col, m in enumerate("ab")
            )
        best = sorted(joint, key=lambda j: -joint[j])[: k - 1]
        assert set(np.flatnonzero(graph[i])) == set(best)
        np.testing.assert_allclose(graph[i, best], [joint[j] for j in best], rtol=1e-9)


# -------------------------------------------------------------------------------------------------
# resolution chosen from the data, spots without MSI, the joint embedding


def _unequal_groups(seed=0, sep=5.0):
    """Groups of 400, 150 and 40 spots, each a homogeneous Gaussian blob in both modalities."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1, 2], [400, 150, 40])

    def embedding():
        x = rng.normal(size=(group.size, 10))
        for g in (1, 2):
            x[group == g, g - 1] += sep
        return x - x.mean(axis=0)

    return group, embedding(), embedding()


def test_auto_resolution_does_not_split_homogeneous_groups():
    """At resolution 1 Leiden splits the 400-spot blob (measured: 5 clusters, ARI 0.43); the
    stability rule finds the three groups (measured: 3 clusters, ARI 0.99, resolution 0.7)."""
    group, rna, msi = _unequal_groups()
    mdata = _mdata(rna, msi)
    sf.tl.joint_cluster(mdata)
    params = mdata.uns["joint"]["params"]
    assert params["method"] == "concat" and params["resolution_rule"] == "stability"
    assert mdata.obs["joint"].nunique() == 3
    assert _ari(group, mdata.obs["joint"]) > 0.95
    stability = params["stability"]
    assert stability[f"{params['resolution']:g}"] == max(stability.values())
    assert min(stability.values()) < 0.8  # some resolution was unstable (the split blob)
    sf.tl.joint_cluster(mdata, resolution=1.0, key_added="r1")
    assert mdata.uns["r1"]["params"]["resolution_rule"] == "given"
    assert _ari(group, mdata.obs["r1"]) < 0.8  # what the old default did
    sf.tl.cluster_modality(mdata, "rna")
    assert mdata.uns["rna_clusters"]["params"]["resolution_rule"] == "stability"
    assert _ari(group, mdata.obs["rna_clusters"]) > 0.95


def test_spots_without_msi_excluded_when_asked_and_the_embedding_has_no_nan():
    group, rna, msi = _design(seed=1)
    missing = np.random.default_rng(2).random(group.size) < 0.2
    msi[missing] = np.nan
    mdata = _mdata(rna, msi)
    sf.tl.joint_cluster(mdata, incomplete="exclude", n_clusters=3)
    assert mdata.obs["joint"].isna().to_numpy().tolist() == missing.tolist()
    assert (mdata.obs["joint_basis"].to_numpy()[missing] == "none").all()
    params = mdata.uns["joint"]["params"]
    assert params["n_spots_excluded"] == missing.sum() and params["n_spots_placed"] == 0
    assert _ari(group[~missing], mdata.obs["joint"].to_numpy()[~missing]) > 0.9
    for method in ("concat", "wnn"):
        sf.tl.joint_cluster(mdata, method=method, n_clusters=3, key_added=method)
        emb = mdata.obsm[f"X_{method}"]
        assert emb.shape == (group.size, 10) and np.isfinite(emb).all()
        np.testing.assert_allclose(emb[~missing, 5:].var(axis=0, ddof=1).sum(), 1.0)
        assert mdata.uns[method]["params"]["n_spots_placed"] == missing.sum()
        # a spot without MSI gets the MSI block of complete spots of its expression group: in
        # group 2 (which the RNA tells apart) that is the MSI of group 2, not of group 0
        msi_block = emb[:, 5:]
        centre = {g: msi_block[~missing & (group == g)].mean(axis=0) for g in (0, 2)}
        dist = {g: np.linalg.norm(msi_block - c, axis=1) for g, c in centre.items()}
        assert (dist[2] < dist[0])[missing & (group == 2)].all()


def test_bad_resolution_and_incomplete():
    _, rna, msi = _design()
    mdata = _mdata(rna, msi)
    message = r"resolution must be a positive number or one of \('auto', 'consensus', 'finer'\)"
    for bad in ("best", -1.0, 0, float("nan"), None):
        with pytest.raises(ValueError, match=message):
            sf.tl.joint_cluster(mdata, resolution=bad)
    with pytest.raises(ValueError, match=message):
        sf.tl.cluster_modality(mdata, "rna", resolution="max")
    with pytest.raises(ValueError, match=r"incomplete must be one of \('place', 'exclude'\)"):
        sf.tl.joint_cluster(mdata, incomplete="drop")


def test_too_few_spots_for_the_stability_rule_warn_and_use_resolution_1():
    from spatialfuse.errors import DataWarning

    rng = np.random.default_rng(0)
    mdata = _mdata(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)))
    with pytest.warns(DataWarning, match="20 spots are too few to choose the resolution"):
        sf.tl.joint_cluster(mdata)
    params = mdata.uns["joint"]["params"]
    assert params["resolution"] == 1.0 and params["resolution_rule"].startswith("fallback")
    assert params["stability"] == {}


def test_spatial_smoothing_by_default_only_where_spots_have_positions():
    group, rna, msi = _design(seed=2)
    plain = _mdata(rna, msi)
    sf.tl.joint_cluster(plain, n_clusters=3)
    assert plain.uns["joint"]["params"]["spatial_smoothing"] == 0.0
    positions = np.random.default_rng(0).uniform(0, 2000, size=(group.size, 2))
    placed = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(placed, n_clusters=3)
    assert placed.uns["joint"]["params"]["spatial_smoothing"] == 0.3
    sf.tl.joint_cluster(placed, n_clusters=3, spatial_smoothing=0.0, key_added="off")
    np.testing.assert_array_equal(
        placed.obsp["off_connectivities"].toarray(), plain.obsp["joint_connectivities"].toarray()
    )
    graph = placed.obsp["joint_connectivities"]
    assert (graph != placed.obsp["off_connectivities"]).nnz > 0  # the spatial edges came in
    sf.tl.cluster_modality(placed, "rna", n_clusters=2)
    assert placed.uns["rna_clusters"]["params"]["spatial_smoothing"] == 0.3
