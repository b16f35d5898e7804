"""Atomic writers: sf.io.write_h5ad / write_h5mu and the folder writer behind the zarr exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import spatialfuse as sf
from spatialfuse._io_utils import atomic_dir


def _adata(seed=0, n=6):
    import anndata as ad

    rng = np.random.default_rng(seed)
    adata = ad.AnnData(
        rng.random((n, 4)).astype(np.float32),
        obs=pd.DataFrame(
            {"kind": list("abcabc")[:n], "count": np.arange(n)},
            index=pd.Index([f"cell{i}" for i in range(n)]),
        ),
        var=pd.DataFrame({"mz": [100.5, 200.25, 300.0, 400.125]}, index=list("pqrs")),
    )
    adata.obsm["spatial"] = rng.random((n, 2))
    adata.layers["sparse"] = sparse.csr_matrix(adata.X)
    adata.uns["spatialfuse"] = {"pixel_size_um": [20.0, 20.0], "modality": "msi"}
    return adata


def test_write_h5ad_round_trip_and_input_untouched(tmp_path):
    import anndata as ad

    adata = _adata()
    dtypes = adata.obs.dtypes.copy()
    path = sf.io.write_h5ad(adata, tmp_path / "sub" / "x.h5ad")
    assert path == tmp_path / "sub" / "x.h5ad"
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, adata.X)
    np.testing.assert_array_equal(back.obsm["spatial"], adata.obsm["spatial"])
    assert (back.layers["sparse"] != adata.layers["sparse"]).nnz == 0
    assert back.obs["kind"].tolist() == adata.obs["kind"].tolist()
    np.testing.assert_array_equal(back.uns["spatialfuse"]["pixel_size_um"], [20.0, 20.0])
    # anndata's own writer would have turned "kind" into a categorical in place
    pd.testing.assert_series_equal(adata.obs.dtypes, dtypes)
    assert [p.name for p in path.parent.iterdir()] == ["x.h5ad"]


def test_write_h5ad_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    import anndata as ad

    path = sf.io.write_h5ad(_adata(seed=1), tmp_path / "x.h5ad")
    old = path.read_bytes()
    original = ad.AnnData.write_h5ad

    def write_then_fail(self, filename, **kwargs):
        original(self, filename, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ad.AnnData, "write_h5ad", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        sf.io.write_h5ad(_adata(seed=2), path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5ad"]


def test_write_h5mu_round_trip_and_input_untouched(tmp_path):
    import mudata as md

    rna, msi = _adata(seed=3), _adata(seed=4)
    msi.var_names = [f"mz-{m}" for m in msi.var["mz"]]
    mdata = md.MuData({"rna": rna, "msi": msi})
    mdata.obs["cluster"] = list("xyzxyz")
    mdata.obsm["X_joint"] = np.arange(12.0).reshape(6, 2)
    mdata.uns["note"] = "joint"
    before = {
        "global": mdata.obs.dtypes.copy(),
        "rna": rna.obs.dtypes.copy(),
        "msi": msi.obs.dtypes.copy(),
        "columns": list(mdata.obs.columns),
    }
    path = sf.io.write_h5mu(mdata, tmp_path / "joint.h5mu")
    back = md.read_h5mu(path)
    assert set(back.mod) == {"rna", "msi"}
    np.testing.assert_array_equal(back["msi"].X, msi.X)
    np.testing.assert_array_equal(back.obsm["X_joint"], mdata.obsm["X_joint"])
    assert back.obs["cluster"].tolist() == list("xyzxyz")
    assert back.uns["note"] == "joint"
    pd.testing.assert_series_equal(mdata.obs.dtypes, before["global"])
    pd.testing.assert_series_equal(rna.obs.dtypes, before["rna"])
    pd.testing.assert_series_equal(msi.obs.dtypes, before["msi"])
    assert list(mdata.obs.columns) == before["columns"]


def test_write_h5mu_images_once(tmp_path):
    """The same Visium images in every modality and the global uns are written once."""
    import mudata as md

    rng = np.random.default_rng(5)
    images = {"hires": rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)}
    spatial = {"lib": {"images": images, "scalefactors": {"tissue_hires_scalef": 0.5}}}
    rna, msi = _adata(seed=6), _adata(seed=7)
    msi.var_names = [f"mz-{m}" for m in msi.var["mz"]]
    rna.uns["spatial"] = spatial
    msi.uns["spatial"] = {"lib": {"images": {"hires": images["hires"].copy()}}}
    mdata = md.MuData({"rna": rna, "msi": msi})
    mdata.uns["spatial"] = spatial
    back = md.read_h5mu(sf.io.write_h5mu(mdata, tmp_path / "once.h5mu", images_once=True))
    np.testing.assert_array_equal(
        back["rna"].uns["spatial"]["lib"]["images"]["hires"], images["hires"]
    )
    assert "spatial" not in back["msi"].uns and "spatial" not in back.uns
    # the input keeps its copies; without the option every copy is written
    assert "spatial" in msi.uns and "spatial" in mdata.uns
    back = md.read_h5mu(sf.io.write_h5mu(mdata, tmp_path / "all.h5mu"))
    assert "spatial" in back["msi"].uns and "spatial" in back.uns
    # different images are kept
    msi.uns["spatial"]["lib"]["images"]["hires"] = images["hires"][::-1].copy()
    back = md.read_h5mu(sf.io.write_h5mu(mdata, tmp_path / "diff.h5mu", images_once=True))
    assert "spatial" in back["msi"].uns and "spatial" not in back.uns


def test_wrong_types(tmp_path):
    with pytest.raises(TypeError, match="AnnData"):
        sf.io.write_h5ad(np.zeros(3), tmp_path / "x.h5ad")
    with pytest.raises(TypeError, match="MuData"):
        sf.io.write_h5mu(_adata(), tmp_path / "x.h5mu")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir(tmp_path):
    target = tmp_path / "out.zarr"
    with atomic_dir(target) as tmp:
        assert not tmp.exists() and tmp.parent.parent == tmp_path
        tmp.mkdir()
        (tmp / "a").write_text("1")
        assert not target.exists()  # nothing under the final name before completion
    assert (target / "a").read_text() == "1"

    with pytest.raises(FileExistsError):
        with atomic_dir(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(target, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "b").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a"]  # the old folder, untouched
    with atomic_dir(target, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with pytest.raises(FileNotFoundError):
        with atomic_dir(tmp_path / "never"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


@pytest.mark.parametrize(
    "raised, reason",
    [
        (
            OSError(
                28,
                "Can't synchronously write data (file write failed: errno = 28, error message = "
                "'No space left on device')",
            ),
            "the disk is full",
        ),
        (RuntimeError("Can't decrement id ref count (unable to flush file)"), "RuntimeError"),
    ],
    ids=["oserror-enospc", "runtimeerror-close"],
)
def test_disk_full_inside_the_hdf5_write_is_a_clean_error(tmp_path, monkeypatch, raised, reason):
    import anndata as ad
    import mudata as md

    from spatialfuse.errors import OutputWriteError

    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    out = tmp_path / "joint.h5ad"
    out.write_bytes(b"earlier run")

    def full_disk(self_or_path, *args, **kwargs):
        target = args[0] if isinstance(self_or_path, ad.AnnData) else self_or_path
        open(target, "wb").write(b"\x89HDF partial")
        raise raised

    monkeypatch.setattr(ad.AnnData, "write_h5ad", full_disk)
    with pytest.raises(OutputWriteError, match=reason) as info:
        sf.io.write_h5ad(adata, out)
    assert str(out) in str(info.value) and info.value.__cause__ is raised
    assert out.read_bytes() == b"earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joint.h5ad"]  # no temporary left

    monkeypatch.setattr(md, "write_h5mu", full_disk)
    with pytest.raises(OutputWriteError, match=reason):
        sf.io.write_h5mu(md.MuData({"a": adata}), tmp_path / "joint.h5mu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joint.h5ad"]
