"""sf.io.write_visium: MSI mapped onto spots, written as a Space Ranger-like folder that
squidpy.read.visium and sf.io.read_visium read back with our spots and values."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf

SMALL = dict(
    tissue_size_um=(1500.0, 1200.0),
    he_pixel_size_um=2.0,
    msi_pixel_size_um=40.0,
    n_ions=60,
    n_genes=80,
    write_he_serial=False,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    trio = sf.datasets.synthetic_trio(tmp_path_factory.mktemp("trio"), seed=5, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        msi = sf.io.read_imzml(trio.msi)
        visium = sf.io.read_visium(trio.visium)
    # keep the left half of the MSI raster so that some spots have no MSI data (NaN rows)
    half = msi[msi.obs["imzml_x"] <= msi.obs["imzml_x"].max() // 2].copy()
    spots = sf.tl.map_to_spots(half, visium, transform=trio.msi_to_visium)
    assert 0 < spots.obs["has_msi"].sum() < spots.n_obs
    return trio, visium, spots


def _read_squidpy(path, **kwargs):
    import squidpy as sq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sq.read.visium(path, **kwargs)


def _library(adata):
    return next(iter(adata.uns["spatial"]))


def test_squidpy_reads_our_spots_and_values(data, tmp_path):
    _, visium, spots = data
    before = spots.obs.copy()
    path = sf.io.write_visium(spots, tmp_path / "outs")
    adata = _read_squidpy(path)

    measured = spots.obs["has_msi"].to_numpy()
    assert adata.obs_names.tolist() == spots.obs_names[measured].tolist()
    assert adata.var_names.tolist() == spots.var_names.tolist()
    assert (adata.var["feature_types"] == "Gene Expression").all()
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), np.asarray(spots.X)[measured])
    np.testing.assert_allclose(adata.obsm["spatial"], spots.obsm["spatial"][measured], atol=1e-9)
    for column in ("in_tissue", "array_row", "array_col"):
        np.testing.assert_array_equal(adata.obs[column], spots.obs[column][measured])
    ours, theirs = spots.uns["spatial"][_library(spots)], adata.uns["spatial"][_library(adata)]
    assert _library(adata) == _library(spots)
    assert theirs["scalefactors"] == pytest.approx(ours["scalefactors"])
    np.testing.assert_array_equal(theirs["images"]["hires"][..., :3], ours["images"]["hires"])
    np.testing.assert_array_equal(theirs["images"]["lowres"][..., :3], ours["images"]["lowres"])
    # the image files are the Space Ranger folder's own bytes
    source = visium.uns["spatialfuse"]["path"]
    for name in ("tissue_hires_image.png", "tissue_lowres_image.png"):
        assert (path / "spatial" / name).read_bytes() == (
            Path(source) / "spatial" / name
        ).read_bytes()
    pd.testing.assert_frame_equal(spots.obs, before)

    # positions list every spot; spots without MSI are simply absent from the matrix
    positions = pd.read_csv(path / "spatial" / "tissue_positions.csv", index_col=0)
    assert positions.index.tolist() == spots.obs_names.tolist()

    # and our own reader recovers the µm frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sf.io.read_visium(path)
    assert back.uns["spatialfuse"]["um_per_px"] == pytest.approx(
        visium.uns["spatialfuse"]["um_per_px"], rel=1e-12
    )
    np.testing.assert_allclose(back.obsm["spatial_um"], spots.obsm["spatial_um"][measured], 0, 1e-9)


def test_metabolite_feature_type_needs_gex_only_false(data, tmp_path):
    _, _, spots = data
    path = sf.io.write_visium(spots, tmp_path / "outs", feature_type="Metabolite", genome="msi")
    assert _read_squidpy(path).n_vars == 0  # scanpy keeps only "Gene Expression" by default
    adata = _read_squidpy(path, gex_only=False)
    assert adata.n_vars == spots.n_vars
    assert set(adata.var["feature_types"]) == {"Metabolite"} and set(adata.var["genome"]) == {"msi"}


def test_images_from_arrays_when_the_source_folder_is_gone(data, tmp_path):
    _, visium, spots = data
    moved = visium.copy()
    moved.uns["spatialfuse"]["path"] = str(tmp_path / "gone")
    path = sf.io.write_visium(spots, tmp_path / "outs", visium=moved)
    adata = _read_squidpy(path)
    ours = visium.uns["spatial"][_library(visium)]["images"]
    np.testing.assert_array_equal(
        adata.uns["spatial"][_library(adata)]["images"]["hires"][..., :3], ours["hires"]
    )
    scalefactors = json.loads((path / "spatial" / "scalefactors_json.json").read_text())
    assert scalefactors == visium.uns["spatial"][_library(visium)]["scalefactors"]


def test_errors_and_atomicity(data, tmp_path):
    _, visium, spots = data
    strangers = spots.copy()
    strangers.obs_names = [f"x{i}" for i in range(strangers.n_obs)]
    with pytest.raises(ValueError, match="not spots"):
        sf.io.write_visium(strangers, tmp_path / "a", visium=visium)
    bare = spots.copy()
    del bare.uns["spatial"]
    with pytest.raises(ValueError, match="uns\\['spatial'\\]"):
        sf.io.write_visium(bare, tmp_path / "a")
    with pytest.raises(ValueError, match="layer"):
        sf.io.write_visium(spots, tmp_path / "a", layer="nope")
    empty = spots.copy()
    empty.obs["has_msi"] = False
    with pytest.raises(ValueError, match="no spot has data"):
        sf.io.write_visium(empty, tmp_path / "a")
    assert not (tmp_path / "a").exists()

    path = sf.io.write_visium(spots, tmp_path / "b")
    with pytest.raises(FileExistsError):
        sf.io.write_visium(spots, path)
    sf.io.write_visium(spots[:20].copy(), path, visium=visium, overwrite=True)
    assert _read_squidpy(path).n_obs == int(spots.obs["has_msi"][:20].sum())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
