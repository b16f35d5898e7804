"""sf.io.write_spatialdata: the store opens with spatialdata, and every element lands where our
transforms put it (truth: the synthetic trio's exact transforms), for affine and nonrigid maps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.reg import Transform

SMALL = dict(
    tissue_size_um=(1500.0, 1200.0),
    he_pixel_size_um=2.0,
    msi_pixel_size_um=40.0,
    n_ions=60,
    n_genes=80,
    write_he_serial=False,
)
TOL_UM = 1e-6


def _load(trio):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        msi = sf.io.read_imzml(trio.msi)
        visium = sf.io.read_visium(trio.visium)
    return msi, visium, sf.io.read_histology(trio.he)


@pytest.fixture(scope="module")
def affine(tmp_path_factory):
    """Both maps affine (no warps): MSI → H&E and Visium → H&E."""
    trio = sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("affine"), seed=3, warp_um=0.0, serial_warp_um=0.0, **SMALL
    )
    assert trio.msi_to_he.is_linear and trio.visium_to_he.is_linear
    return trio, *_load(trio)


@pytest.fixture(scope="module")
def nonrigid(tmp_path_factory):
    """MSI → H&E and Visium → H&E both with smooth displacement fields."""
    trio = sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("warped"), seed=4, warp_um=15.0, serial_warp_um=25.0, **SMALL
    )
    assert not trio.msi_to_he.is_linear and not trio.visium_to_he.is_linear
    return trio, *_load(trio)


def _read(path):
    import spatialdata as sd

    return sd.read_zarr(path)


def _circle_centres(shapes, system):
    import spatialdata as sd

    moved = sd.transform(shapes, to_coordinate_system=system)
    return np.stack([moved.geometry.x.to_numpy(), moved.geometry.y.to_numpy()], axis=1)


def _polygon_corners(shapes, system):
    import shapely
    import spatialdata as sd

    moved = sd.transform(shapes, to_coordinate_system=system)
    coords = shapely.get_coordinates(moved.geometry.to_numpy())
    return coords.reshape(len(moved), 5, 2)[:, :4]  # closed rings repeat their first vertex


def _msi_corners(msi):
    px, py = msi.uns["spatialfuse"]["pixel_size_um"]
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * (px, py)
    return np.asarray(msi.obsm["spatial"])[:, None, :] + offsets[None]


def _image_point_um(sdata, system, col, row, level=0):
    """Where spatialdata puts the centre of pixel (col, row) of the image's level-0 array."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(sdata["he"], to_coordinate_system=system)
    matrix = t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return matrix @ np.array([col + 0.5, row + 0.5, 1.0])


def test_affine_round_trip_places_everything(affine, tmp_path):
    trio, msi, visium, he = affine
    he_to_visium = trio.visium_to_he.inverse()
    spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
    path = sf.io.write_spatialdata(
        tmp_path / "affine.zarr",
        he=he,
        visium=visium,
        msi=msi,
        tables={"msi_spots": spots},
        transforms={"he": he_to_visium, "msi": trio.msi_to_visium},
        reference="visium",
        he_scale_factors=[2],
    )
    sdata = _read(path)
    assert set(sdata.images) == {"he"} and set(sdata.shapes) == {"visium_spots", "msi_pixels"}
    assert set(sdata.tables) == {"visium", "msi", "msi_spots"}

    # spots: the reference frame, identity in both systems
    centres = np.asarray(visium.obsm["spatial_um"])
    np.testing.assert_allclose(_circle_centres(sdata["visium_spots"], "aligned_um"), centres, 0, 0)
    assert np.all(sdata["visium_spots"]["radius"] == 27.5)

    # MSI pixels: squares carried by an Affine; corners and centres where msi_to_visium puts them
    expected = trio.msi_to_visium.apply(_msi_corners(msi).reshape(-1, 2)).reshape(-1, 4, 2)
    corners = _polygon_corners(sdata["msi_pixels"], "aligned_um")
    assert np.abs(corners - expected).max() < TOL_UM
    own = _polygon_corners(sdata["msi_pixels"], "msi_um")
    assert np.abs(own - _msi_corners(msi)).max() < TOL_UM
    import spatialdata as sd

    moved = sd.transform(sdata["msi_pixels"], to_coordinate_system="aligned_um")
    centroids = np.stack([moved.geometry.centroid.x, moved.geometry.centroid.y], axis=1)
    truth = trio.msi_to_visium.apply(msi.obsm["spatial"])
    assert np.abs(centroids - truth).max() < TOL_UM
    assert np.abs(sdata.tables["msi"].obsm["spatial_aligned_um"] - truth).max() < TOL_UM

    # the image: a known H&E pixel (a landmark) lands on the landmark's Visium position
    for point_he, point_visium in zip(
        trio.landmarks_he_um[:5], trio.landmarks_visium_um[:5], strict=True
    ):
        col, row = he.um_to_px(point_he)
        assert np.abs(_image_point_um(sdata, "aligned_um", col, row)[:2] - point_visium).max() < (
            TOL_UM
        )
        assert np.abs(_image_point_um(sdata, "he_um", col, row)[:2] - point_he).max() < TOL_UM
    level0 = np.asarray(sdata["he"]["scale0"]["image"].transpose("y", "x", "c"))
    np.testing.assert_array_equal(level0, he.read())
    assert sdata["he"]["scale1"]["image"].shape[1:] == (-(-he.shape[0] // 2), -(-he.shape[1] // 2))

    # tables link to their shapes; the transforms are stored and rebuild exactly
    table = sdata.tables["msi_spots"]
    assert table.uns["spatialdata_attrs"]["region"] == "visium_spots"
    linked = _circle_centres(sdata["visium_spots"], "visium_um")[table.obs["spot_id"].to_numpy()]
    np.testing.assert_array_equal(linked, spots.obsm["spatial_um"])
    np.testing.assert_array_equal(np.asarray(table.X), np.asarray(spots.X))
    pixels = sdata.tables["msi"]
    assert pixels.uns["spatialdata_attrs"]["instance_key"] == "pixel_id"
    np.testing.assert_array_equal(pixels.obs["pixel_id"].to_numpy(), np.arange(msi.n_obs))
    info = sdata.attrs["spatialfuse"]
    assert info["reference"] == "visium" and info["warped_elements"] == []
    assert Transform.from_dict(info["transforms"]["msi"]) == trio.msi_to_visium
    assert Transform.from_dict(info["transforms"]["he"]) == he_to_visium
    # inputs untouched
    assert "region" not in visium.obs and "pixel_id" not in msi.obs


def test_nonrigid_maps_warp_the_geometry(nonrigid, tmp_path):
    trio, msi, visium, he = nonrigid
    path = sf.io.write_spatialdata(
        tmp_path / "warped.zarr",
        he=he,
        visium=visium,
        msi=msi,
        transforms={"msi": trio.msi_to_he, "visium": trio.visium_to_he},
    )
    sdata = _read(path)
    info = sdata.attrs["spatialfuse"]
    assert info["reference"] == "he"
    assert sorted(info["warped_elements"]) == ["msi_pixels", "visium_spots"]

    spots = _circle_centres(sdata["visium_spots"], "aligned_um")
    truth = trio.visium_to_he.apply(visium.obsm["spatial_um"])
    assert np.abs(spots - truth).max() < TOL_UM
    # a warp moves spots by up to serial_warp_um: the check above is not the identity's
    assert np.abs(truth - trio.visium_affine.apply(visium.obsm["spatial_um"])).max() > 1.0

    corners = _polygon_corners(sdata["msi_pixels"], "aligned_um")
    expected = trio.msi_to_he.apply(_msi_corners(msi).reshape(-1, 2)).reshape(-1, 4, 2)
    assert np.abs(corners - expected).max() < TOL_UM
    centres = trio.msi_to_he.apply(msi.obsm["spatial"])
    assert np.abs(sdata.tables["msi"].obsm["spatial_aligned_um"] - centres).max() < TOL_UM
    assert np.abs(sdata.tables["visium"].obsm["spatial_aligned_um"] - truth).max() < TOL_UM
    # warped elements have no own frame left; the H&E (the reference) keeps its own
    from spatialdata.transformations import get_transformation

    assert set(get_transformation(sdata["msi_pixels"], get_all=True)) == {"aligned_um"}
    for point in trio.landmarks_he_um[:5]:
        col, row = he.um_to_px(point)
        assert np.abs(_image_point_um(sdata, "aligned_um", col, row)[:2] - point).max() < TOL_UM
    rebuilt = Transform.from_dict(info["transforms"]["msi"])
    np.testing.assert_array_equal(rebuilt.apply(msi.obsm["spatial"]), centres)


def test_nonrigid_image_transform_is_refused(nonrigid, tmp_path):
    trio, _, visium, he = nonrigid
    with pytest.raises(ValueError, match="nonrigid"):
        sf.io.write_spatialdata(
            tmp_path / "x.zarr",
            he=he,
            visium=visium,
            transforms={"he": trio.visium_to_he.inverse()},
            reference="visium",
        )
    assert not (tmp_path / "x.zarr").exists()


def test_working_resolution_and_lazy_tiles(affine, tmp_path, monkeypatch):
    from spatialfuse.io.export import _spatialdata

    *_, he = affine
    path = sf.io.write_spatialdata(tmp_path / "coarse.zarr", he=he, he_pixel_size_um=4.0)
    sdata = _read(path)
    reduced, size = he.downsampled(factor=2.0)
    level0 = np.asarray(sdata["he"].transpose("y", "x", "c"))
    np.testing.assert_array_equal(level0, reduced)
    col, row = 17, 23
    expected = (np.array([col, row]) + 0.5) * np.asarray(size)
    assert np.abs(_image_point_um(sdata, "aligned_um", col, row)[:2] - expected).max() < TOL_UM
    assert size[0] == pytest.approx(2 * he.pixel_size_um[0], rel=0.01)

    # full resolution read tile by tile (small tiles, so the image spans many)
    monkeypatch.setattr(_spatialdata, "_IMAGE_CHUNK", 256)
    tiles = _spatialdata._lazy_tiles(he)
    assert tiles.numblocks[0] > 1 and tiles.numblocks[1] > 1
    path = sf.io.write_spatialdata(tmp_path / "full.zarr", he=he)
    full = np.asarray(_read(path)["he"].transpose("y", "x", "c"))
    np.testing.assert_array_equal(full, he.read())


def test_mudata_tables_and_bad_tables(affine, tmp_path):
    import mudata as md

    trio, msi, visium, _ = affine
    spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
    joint = md.MuData({"rna": visium, "msi": spots})
    joint.obs["cluster"] = np.arange(joint.n_obs) % 3
    joint.obsm["X_joint"] = np.arange(2.0 * joint.n_obs).reshape(-1, 2)
    path = sf.io.write_spatialdata(
        tmp_path / "joint.zarr",
        visium=visium,
        msi=msi,
        tables={"joint": joint},
        transforms={"msi": trio.msi_to_visium},
    )
    sdata = _read(path)
    for name in ("joint_rna", "joint_msi", "joint"):
        assert sdata.tables[name].uns["spatialdata_attrs"]["region"] == "visium_spots"
    np.testing.assert_array_equal(sdata.tables["joint_msi"].X, spots.X)
    glob = sdata.tables["joint"]
    assert glob.n_vars == 0 and not any(":" in c for c in glob.obs.columns)
    np.testing.assert_array_equal(glob.obs["cluster"], np.arange(joint.n_obs) % 3)
    np.testing.assert_array_equal(glob.obsm["X_joint"], joint.obsm["X_joint"])
    pixel_table = msi[:10].copy()
    path = sf.io.write_spatialdata(
        tmp_path / "pixels.zarr", msi=msi, tables={"some_pixels": pixel_table}
    )
    table = _read(path).tables["some_pixels"]
    assert table.uns["spatialdata_attrs"]["region"] == "msi_pixels"
    np.testing.assert_array_equal(table.obs["pixel_id"].to_numpy(), np.arange(10))

    stranger = visium.copy()
    stranger.obs_names = [f"x{i}" for i in range(stranger.n_obs)]
    with pytest.raises(ValueError, match="annotate"):
        sf.io.write_spatialdata(tmp_path / "bad.zarr", visium=visium, tables={"s": stranger})
    with pytest.raises(ValueError, match="taken"):
        sf.io.write_spatialdata(tmp_path / "bad.zarr", visium=visium, tables={"visium": visium})
    assert not (tmp_path / "bad.zarr").exists()


def test_argument_errors(affine, tmp_path):
    trio, msi, visium, he = affine
    with pytest.raises(ValueError, match="at least one"):
        sf.io.write_spatialdata(tmp_path / "a.zarr")
    with pytest.raises(ValueError, match="no transform"):
        sf.io.write_spatialdata(tmp_path / "a.zarr", he=he, msi=msi)
    with pytest.raises(ValueError, match="is the reference"):
        sf.io.write_spatialdata(tmp_path / "a.zarr", he=he, transforms={"he": trio.visium_to_he})
    with pytest.raises(ValueError, match="reference"):
        sf.io.write_spatialdata(tmp_path / "a.zarr", he=he, reference="msi")
    with pytest.raises(TypeError, match="Transform"):
        sf.io.write_spatialdata(tmp_path / "a.zarr", he=he, msi=msi, transforms={"msi": np.eye(3)})
    with pytest.raises(ValueError, match="spatial_um"):
        bare = visium.copy()
        del bare.obsm["spatial_um"]
        sf.io.write_spatialdata(tmp_path / "a.zarr", visium=bare)
    assert not (tmp_path / "a.zarr").exists()

    first = sf.io.write_spatialdata(tmp_path / "b.zarr", visium=visium)
    with pytest.raises(FileExistsError):
        sf.io.write_spatialdata(first, visium=visium)
    sf.io.write_spatialdata(
        first, visium=visium, msi=msi, transforms={"msi": trio.msi_to_visium}, overwrite=True
    )
    assert set(_read(first).shapes) == {"visium_spots", "msi_pixels"}


def test_interrupted_write_leaves_nothing(affine, tmp_path, monkeypatch):
    import spatialdata as sd

    _, _, visium, _ = affine
    original = sd.SpatialData.write

    def write_then_fail(self, file_path, *args, **kwargs):
        original(self, file_path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(sd.SpatialData, "write", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        sf.io.write_spatialdata(tmp_path / "c.zarr", visium=visium)
    assert list(tmp_path.iterdir()) == []
