"""sf.tl.joint_table / concatenate_modalities: alignment, errors, layout squidpy draws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse

import spatialfuse as sf
from spatialfuse.tl._joint import concatenate_modalities, joint_table

N = 24


def _visium(seed=0):
    """Spots on a 6 × 4 hex grid with an H&E image and scale factors, as read_visium lays out."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows, cols = np.divmod(np.arange(N), 6)
    px = np.column_stack([40 + cols * 50 + 25 * (rows % 2), 40 + rows * 43.3])
    names = pd.Index([f"BC{i:02d}-1" for i in range(N)], dtype=str)
    genes = pd.Index([f"gene{j}" for j in range(5)] + ["mz-300.0000"], dtype=str)
    adata = ad.AnnData(
        X=rng.poisson(5, size=(N, 6)).astype(np.float32),
        obs=pd.DataFrame({"in_tissue": 1, "array_row": rows, "array_col": cols}, index=names),
        var=pd.DataFrame(index=genes),
    )
    adata.obsm["spatial"] = px
    adata.obsm["spatial_um"] = (px + 0.5) * 2.0
    adata.uns["spatial"] = {
        "lib": {
            "images": {"hires": rng.random((200, 200, 3)).astype(np.float32)},
            "scalefactors": {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 27.5},
            "metadata": {},
        }
    }
    adata.uns["spatialfuse"] = {"modality": "visium", "um_per_px": 2.0}
    return adata


def _msi_spots(visium, seed=1):
    """Spots × m/z as map_to_spots writes them: the last three spots have no MSI (NaN rows)."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.gamma(2.0, 10.0, size=(N, 4))
    has = np.ones(N, dtype=bool)
    has[-3:] = False
    X[~has] = np.nan
    obs = visium.obs.copy()
    obs["n_msi_pixels"] = np.where(has, 2, 0)
    obs["msi_coverage"] = np.where(has, 1.0, 0.0)
    obs["has_msi"] = has
    mz = [300.0, 400.0, 500.0, 600.0]
    out = ad.AnnData(X=X, obs=obs, var=pd.DataFrame({"mz": mz}, index=[f"mz-{m:.4f}" for m in mz]))
    out.obsm["spatial"] = visium.obsm["spatial"].copy()
    out.obsm["spatial_um"] = visium.obsm["spatial_um"].copy()
    out.uns["spatial"] = visium.uns["spatial"]
    out.uns["spatialfuse"] = {"modality": "msi", "um_per_px": 2.0}
    return out


@pytest.fixture
def pair():
    visium = _visium()
    return visium, _msi_spots(visium)


def test_layout(pair):
    visium, msi = pair
    mdata = joint_table(visium, msi)
    assert list(mdata.mod) == ["rna", "msi"]
    assert mdata.obs_names.equals(visium.obs_names)
    for key in ("has_msi", "msi_coverage", "n_msi_pixels", "in_tissue"):
        assert key in mdata.obs
    np.testing.assert_array_equal(mdata.obs["has_msi"], msi.obs["has_msi"])
    np.testing.assert_array_equal(mdata["rna"].obs["has_msi"], msi.obs["has_msi"])
    for key in ("spatial", "spatial_um"):
        np.testing.assert_array_equal(mdata.obsm[key], visium.obsm[key])
        for mod in ("rna", "msi"):
            np.testing.assert_array_equal(mdata[mod].obsm[key], visium.obsm[key])
    assert mdata["msi"].uns["spatial"]["lib"]["scalefactors"]["tissue_hires_scalef"] == 0.5
    assert set(mdata.uns["spatial"]) == {"lib"}
    assert (mdata["rna"].var["feature_types"] == "Gene Expression").all()
    assert (mdata["msi"].var["feature_types"] == "Metabolite").all()
    assert mdata.uns["spatialfuse"]["modalities"] == {"rna": "rna", "msi": "msi"}
    # inputs untouched
    assert "feature_types" not in visium.var and "has_msi" not in visium.obs


def test_reordered_msi_is_aligned(pair):
    visium, msi = pair
    order = np.random.default_rng(5).permutation(N)
    mdata = joint_table(visium, msi[order].copy())
    np.testing.assert_array_equal(mdata["msi"].X, msi.X)
    np.testing.assert_array_equal(mdata.obs["has_msi"], msi.obs["has_msi"])
    np.testing.assert_array_equal(mdata["msi"].obs_names, visium.obs_names)


def test_mismatches_raise(pair):
    visium, msi = pair
    with pytest.raises(ValueError, match=r"1 barcodes only in rna .*BC05-1"):
        joint_table(visium, msi[[i for i in range(N) if i != 5]].copy())
    renamed = msi.copy()
    renamed.obs_names = [f"X{i}" for i in range(N)]
    with pytest.raises(ValueError, match="different spots"):
        joint_table(visium, renamed)
    moved = msi.copy()
    moved.obsm["spatial_um"] = moved.obsm["spatial_um"] + 10.0
    with pytest.raises(ValueError, match="different obsm\\['spatial_um'\\] positions"):
        joint_table(visium, moved)
    twice = visium[[0, 0, *range(2, N)]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twice.obs_names = [visium.obs_names[0]] * 2 + list(visium.obs_names[2:])
    with pytest.raises(ValueError, match="repeated barcodes"):
        joint_table(twice, msi)
    with pytest.raises(TypeError, match="AnnData"):
        joint_table(visium, msi.X)
    with pytest.raises(ValueError, match="distinct"):
        joint_table(visium, msi, rna_key="x", msi_key="x")


def test_squidpy_draws_both_modalities_on_the_image(pair):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import squidpy as sq

    mdata = joint_table(*pair)
    for mod, color in (("msi", "mz-400.0000"), ("rna", "gene1")):
        ax = sq.pl.spatial_scatter(mdata[mod], color=color, return_ax=True)
        assert len(ax.images) == 1  # the H&E
        # one circle per spot, centred on its full-res position at the hires scale, with the
        # spot diameter (27.5 full-res px) at that scale
        paths = ax.collections[0].get_paths()
        assert len(paths) == N
        lo = np.array([p.vertices.min(axis=0) for p in paths])
        hi = np.array([p.vertices.max(axis=0) for p in paths])
        np.testing.assert_allclose((lo + hi) / 2, mdata.obsm["spatial"] * 0.5, atol=1e-6)
        np.testing.assert_allclose(hi - lo, 27.5 * 0.5, rtol=1e-6)
        plt.close("all")


def test_concatenate(pair):
    visium, msi = pair
    mdata = joint_table(visium, msi)
    joint = concatenate_modalities(mdata)
    assert joint.shape == (N, 10)
    assert joint.var["feature_types"].tolist() == ["Gene Expression"] * 6 + ["Metabolite"] * 4
    assert joint.var_names.is_unique
    # "mz-300.0000" is a gene name and an ion: both get their modality prefix
    assert "rna:mz-300.0000" in joint.var_names and "msi:mz-300.0000" in joint.var_names
    assert "gene0" in joint.var_names
    np.testing.assert_array_equal(joint.X[:, :6], visium.X)
    np.testing.assert_array_equal(joint.X[:, 6:], msi.X)  # NaN rows kept
    np.testing.assert_array_equal(joint.obsm["spatial"], visium.obsm["spatial"])
    assert "spatial" in joint.uns

    visium.X = sparse.csr_matrix(visium.X)
    joint = concatenate_modalities(joint_table(visium, msi), modalities=["msi", "rna"])
    assert sparse.issparse(joint.X) and joint.var["modality"].iloc[0] == "msi"
    np.testing.assert_array_equal(joint.X[:, 4:].toarray(), visium.X.toarray())
    with pytest.raises(ValueError, match="unknown modalities"):
        concatenate_modalities(mdata, modalities=["atac"])
    with pytest.raises(ValueError, match="no layer 'counts'"):
        concatenate_modalities(mdata, layer="counts")
    with pytest.raises(TypeError, match="MuData"):
        concatenate_modalities(visium)


def test_concatenated_table_with_one_modality_columns_writes_to_h5ad(pair, tmp_path):
    import anndata as ad

    visium, msi = pair
    visium.var["highly_variable"] = [True, False, True, True, False, True]
    visium.var["gene_ids"] = [f"ENSG{i}" for i in range(6)]
    msi.var["mean_intensity"] = [1.5, 2.0, 3, 4]
    joint = concatenate_modalities(joint_table(visium, msi))
    path = tmp_path / "joint.h5ad"
    joint.write_h5ad(path)
    back = ad.read_h5ad(path)
    hv = back.var["highly_variable"]
    assert hv.iloc[:6].tolist() == [True, False, True, True, False, True]
    assert hv.iloc[6:].isna().all()
    assert back.var["gene_ids"].iloc[0] == "ENSG0" and back.var["gene_ids"].iloc[6:].isna().all()
    np.testing.assert_allclose(back.var["mean_intensity"].iloc[6:].astype(float), [1.5, 2, 3, 4])


def test_public_names():
    assert sf.tl.joint_table is joint_table
    assert sf.tl.concatenate_modalities is concatenate_modalities
