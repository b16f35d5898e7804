"""sf.io.write_spatialdata: the store opens with spatialdata, and every element lands where our
transforms put it (truth: the synthetic trio's exact transforms), for affine and nonrigid maps;
spatialdata-plot draws it in the ``global`` system with every element where the transforms say."""

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


def _element_matrix(element, system):
    """The element's intrinsic (x, y) → ``system`` (x, y) affine matrix."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=system)
    return t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))


def _msi_corners(msi):
    px, py = msi.uns["spatialfuse"]["pixel_size_um"]
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * (px, py)
    return np.asarray(msi.obsm["spatial"])[:, None, :] + offsets[None]


def _raster_cells(msi):
    """Each MSI pixel's (column, row) in the store's raster (origin at the smallest position)."""
    gx = msi.obs["imzml_x"].to_numpy()
    gy = msi.obs["imzml_y"].to_numpy()
    return np.stack([gx - gx.min(), gy - gy.min()], axis=1)


def _image_point_um(sdata, system, col, row, level=0, name="he"):
    """Where spatialdata puts the centre of pixel (col, row) of the image's level-0 array."""
    matrix = _element_matrix(sdata[name], system)
    return matrix @ np.array([col + 0.5, row + 0.5, 1.0])


def _level0(element):
    """Level 0 of a (possibly multiscale) element as a numpy array."""
    if hasattr(element, "children") and "scale0" in element.children:
        element = next(iter(element["scale0"].values()))
    return np.asarray(element)


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
    assert set(sdata.images) == {"he", "visium_he", "msi_image"}
    assert set(sdata.shapes) == {"visium_spots"} and set(sdata.labels) == {"msi_pixels"}
    assert set(sdata.tables) == {"visium", "msi", "msi_spots"}
    # every element reaches the global system
    from spatialdata.transformations import get_transformation

    for name in ("he", "visium_he", "msi_image", "msi_pixels", "visium_spots"):
        assert "global" in get_transformation(sdata[name], get_all=True), name

    # spots: the reference frame, identity in both systems
    centres = np.asarray(visium.obsm["spatial_um"])
    np.testing.assert_allclose(_circle_centres(sdata["visium_spots"], "global"), centres, 0, 0)
    assert np.all(sdata["visium_spots"]["radius"] == 27.5)

    import spatialdata as sd

    # MSI pixels: a raster (labels + image) carried by an Affine; each pixel's cell, its centre
    # and its corners land where msi_to_visium puts the pixel
    cells = _raster_cells(msi)
    labels = _level0(sdata["msi_pixels"])
    np.testing.assert_array_equal(labels[cells[:, 1], cells[:, 0]], np.arange(1, msi.n_obs + 1))
    for system, transform in (("global", trio.msi_to_visium), ("msi_um", None)):
        for element in ("msi_pixels", "msi_image"):
            matrix = _element_matrix(sdata[element], system)
            centres = (cells + 0.5) @ matrix[:2, :2].T + matrix[:2, 2]
            truth = np.asarray(msi.obsm["spatial"])
            truth = truth if transform is None else transform.apply(truth)
            assert np.abs(centres - truth).max() < TOL_UM
            corners = cells[:, None, :] + np.array([[0, 0], [1, 0], [1, 1], [0, 1]])[None]
            corners = corners.reshape(-1, 2) @ matrix[:2, :2].T + matrix[:2, 2]
            expected = _msi_corners(msi).reshape(-1, 2)
            expected = expected if transform is None else transform.apply(expected)
            assert np.abs(corners - expected).max() < TOL_UM
    truth = trio.msi_to_visium.apply(msi.obsm["spatial"])
    assert np.abs(sdata.tables["msi"].obsm["spatial_global"] - truth).max() < TOL_UM
    # spatialdata's own reading of the labels agrees: label k's centroid is pixel k - 1's centre
    centroids = sd.get_centroids(sdata["msi_pixels"], coordinate_system="global").compute()
    centroids = centroids.loc[np.arange(1, msi.n_obs + 1), ["x", "y"]].to_numpy()
    assert np.abs(centroids - truth).max() < 1e-6 * max(msi.uns["spatialfuse"]["pixel_size_um"])

    # the image: a known H&E pixel (a landmark) lands on the landmark's Visium position
    for point_he, point_visium in zip(
        trio.landmarks_he_um[:5], trio.landmarks_visium_um[:5], strict=True
    ):
        col, row = he.um_to_px(point_he)
        assert np.abs(_image_point_um(sdata, "global", col, row)[:2] - point_visium).max() < (
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
    assert pixels.uns["spatialdata_attrs"]["region"] == "msi_pixels"
    assert pixels.uns["spatialdata_attrs"]["instance_key"] == "pixel_id"
    # pixel_id is the pixel's label (row + 1; 0 is the background of the labels)
    np.testing.assert_array_equal(pixels.obs["pixel_id"].to_numpy(), np.arange(1, msi.n_obs + 1))
    info = sdata.attrs["spatialfuse"]
    assert info["reference"] == "visium" and info["warped_elements"] == []
    assert info["resampled_elements"] == []
    # the Visium images live in the image element, not in every table
    assert not any("spatial" in t.uns for t in sdata.tables.values())
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
    assert info["warped_elements"] == ["visium_spots"]
    assert sorted(info["resampled_elements"]) == ["msi_image", "msi_pixels", "visium_he"]

    spots = _circle_centres(sdata["visium_spots"], "global")
    truth = trio.visium_to_he.apply(visium.obsm["spatial_um"])
    assert np.abs(spots - truth).max() < TOL_UM
    # a warp moves spots by up to serial_warp_um: the check above is not the identity's
    assert np.abs(truth - trio.visium_affine.apply(visium.obsm["spatial_um"])).max() > 1.0

    # the MSI raster resampled into the H&E frame: the cell under each warped pixel centre holds
    # that pixel's label, and the image holds its TIC there
    centres = trio.msi_to_he.apply(msi.obsm["spatial"])
    labels = _level0(sdata["msi_pixels"])
    matrix = _element_matrix(sdata["msi_pixels"], "global")
    cell = np.floor((centres - matrix[:2, 2]) @ np.linalg.inv(matrix[:2, :2]).T).astype(int)
    np.testing.assert_array_equal(labels[cell[:, 1], cell[:, 0]], np.arange(1, msi.n_obs + 1))
    tic = _level0(sdata["msi_image"])[0]
    np.testing.assert_allclose(
        tic[cell[:, 1], cell[:, 0]], np.asarray(msi.X).sum(axis=1), rtol=1e-5
    )
    assert np.abs(sdata.tables["msi"].obsm["spatial_global"] - centres).max() < TOL_UM
    assert np.abs(sdata.tables["visium"].obsm["spatial_global"] - truth).max() < TOL_UM
    # warped elements have no own frame left; the H&E (the reference) keeps its own
    from spatialdata.transformations import get_transformation

    assert set(get_transformation(sdata["msi_pixels"], get_all=True)) == {"global"}
    for point in trio.landmarks_he_um[:5]:
        col, row = he.um_to_px(point)
        assert np.abs(_image_point_um(sdata, "global", col, row)[:2] - point).max() < TOL_UM
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
    assert np.abs(_image_point_um(sdata, "global", col, row)[:2] - expected).max() < TOL_UM
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
    joint = md.MuData({"rna": visium.copy(), "msi": spots})
    joint.obs["cluster"] = np.arange(joint.n_obs) % 3
    joint["rna"].obs["cluster"] = np.arange(joint.n_obs) % 3  # as mudata's push_obs copies it
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
    # a global column is in one table, so a plot colouring by it finds one
    assert [t for t in sdata.tables if "cluster" in sdata.tables[t].obs] == ["joint"]
    np.testing.assert_array_equal(glob.obs["cluster"], np.arange(joint.n_obs) % 3)
    np.testing.assert_array_equal(glob.obsm["X_joint"], joint.obsm["X_joint"])
    pixel_table = msi[:10].copy()
    path = sf.io.write_spatialdata(
        tmp_path / "pixels.zarr", msi=msi, tables={"some_pixels": pixel_table}
    )
    table = _read(path).tables["some_pixels"]
    assert table.uns["spatialdata_attrs"]["region"] == "msi_pixels"
    np.testing.assert_array_equal(table.obs["pixel_id"].to_numpy(), np.arange(1, 11))

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
    assert set(_read(first).shapes) == {"visium_spots"}
    assert set(_read(first).labels) == {"msi_pixels"}


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


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def test_msi_image_channels_and_visium_image(affine, tmp_path):
    trio, msi, visium, _ = affine
    path = sf.io.write_spatialdata(
        tmp_path / "channels.zarr",
        visium=visium,
        msi=msi,
        transforms={"msi": trio.msi_to_visium},
        msi_ions=5,
    )
    sdata = _read(path)
    x = _dense(msi.X).astype(np.float64)
    variance = x.var(axis=0)
    top = sorted(np.argsort(-variance, kind="stable")[:5])
    names = ["TIC", *msi.var_names[top]]
    assert list(sdata["msi_image"].c.values) == names
    assert sdata.attrs["spatialfuse"]["msi_image_channels"] == names
    image = _level0(sdata["msi_image"])
    cells = _raster_cells(msi)
    values = image[:, cells[:, 1], cells[:, 0]].T
    np.testing.assert_allclose(values[:, 0], x.sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(values[:, 1:], x[:, top], rtol=1e-6)

    # chosen by name; the TIC alone
    chosen = list(msi.var_names[[3, 1]])
    path = sf.io.write_spatialdata(tmp_path / "named.zarr", msi=msi, msi_ions=chosen)
    assert list(_read(path)["msi_image"].c.values) == ["TIC", *chosen]
    path = sf.io.write_spatialdata(tmp_path / "tic.zarr", msi=msi, msi_ions=0)
    assert list(_read(path)["msi_image"].c.values) == ["TIC"]
    with pytest.raises(ValueError, match="not among"):
        sf.io.write_spatialdata(tmp_path / "bad.zarr", msi=msi, msi_ions=["nope"])
    with pytest.raises(ValueError, match="non-negative"):
        sf.io.write_spatialdata(tmp_path / "bad.zarr", msi=msi, msi_ions=-1)
    assert not (tmp_path / "bad.zarr").exists()

    # the Visium H&E: its pixel k covers full-resolution pixels [k / s, (k + 1) / s), so its
    # centre lies at (k + ½)·u / s µm (u µm per full-res pixel, s = tissue_hires_scalef)
    from spatialfuse.io.visium import tissue_image

    array, scale, _ = tissue_image(visium)
    u = float(visium.uns["spatialfuse"]["um_per_px"])
    np.testing.assert_array_equal(_level0(sdata["visium_he"]).transpose(1, 2, 0), array)
    for col, row in ((0, 0), (17, 40), (array.shape[1] - 1, array.shape[0] - 1)):
        for system in ("global", "visium_um"):
            point = _image_point_um(sdata, system, col, row, name="visium_he")[:2]
            assert np.abs(point - (np.array([col, row]) + 0.5) * u / scale).max() < TOL_UM
    path = sf.io.write_spatialdata(tmp_path / "noimage.zarr", visium=visium, visium_image=False)
    sdata = _read(path)
    assert set(sdata.images) == set() and "spatial" in sdata.tables["visium"].uns


# --------------------------------------------------------------------------------------------------
# drawn by spatialdata-plot


def _render(sdata, calls, *, size_in=6.0, dpi=100):
    """Draw ``calls`` (a function of ``sdata.pl``) on an Agg figure; the RGB pixels and axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size_in, size_in), dpi=dpi, facecolor="black")
    ax.set_facecolor("black")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calls(sdata).pl.show(coordinate_systems="global", ax=ax, colorbar=False)
    ax.set_axis_off()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.int16)
    return fig, ax, pixels


def _display_px(fig, ax, points_um):
    """(column, row) of data points on the rendered canvas (rows counted from the top)."""
    xy = ax.transData.transform(np.asarray(points_um, dtype=float))
    return np.stack([xy[:, 0], fig.canvas.get_width_height()[1] - xy[:, 1]], axis=1)


def _plot_raster_offset():
    """Where spatialdata-plot draws a raster pixel's centre, minus where spatialdata puts it.

    SpatialData puts the centre of pixel ``i`` at ``i + ½`` (``get_extent`` is ``[0, shape]``,
    ``get_centroids`` of label pixel 0 is 0.5). spatialdata-plot up to 0.4.0 draws it at ``i``
    (scverse/spatialdata-plot#216, fixed by #742): measured here on a one-pixel image so the
    checks below hold with either version. Returns -0.5 or 0.0 (intrinsic pixels).
    """
    import spatialdata as sd
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    data = np.zeros((1, 4, 4), dtype=np.float32)
    data[0, 2, 1] = 1.0  # (col, row) = (1, 2): centre (1.5, 2.5), 10× → (15, 25)
    image = Image2DModel.parse(
        data, dims=("c", "y", "x"), transformations={"global": Scale([10, 10], axes=("y", "x"))}
    )
    probe = sd.SpatialData(images={"probe": image})
    fig, ax, pixels = _render(probe, lambda s: s.pl.render_images("probe", cmap="gray"))
    centre = _blob_centre(pixels.min(axis=2) > 200)
    height = fig.canvas.get_width_height()[1]
    x, y = ax.transData.inverted().transform([[centre[0], height - centre[1]]])[0]
    offset = (x / 10 - 1.5, y / 10 - 2.5)
    assert np.allclose(offset, offset[0], atol=0.05), offset
    assert min(abs(offset[0]), abs(offset[0] + 0.5)) < 0.05, offset
    return round(offset[0] * 2) / 2


def _um_per_px(ax):
    """µm per canvas pixel of a render (its axis limits depend on what was drawn)."""
    return 1 / abs(ax.transData.get_matrix()[0, 0])


def _blob_centre(mask):
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


@pytest.fixture(scope="module")
def rendered_store(affine, tmp_path_factory):
    """The affine trio with marks whose place is known: one bright MSI pixel, a green square
    painted into the H&E; reference Visium (so the MSI and H&E are rotated and mirrored)."""
    pytest.importorskip("spatialdata_plot", reason="spatialdata-plot is not installed")
    import tifffile

    trio, msi, visium, he = affine
    tmp = tmp_path_factory.mktemp("render")
    msi = msi.copy()
    x = _dense(msi.X).astype(np.float32)
    bright = int(
        np.argmin(np.linalg.norm(msi.obsm["spatial"] - np.median(msi.obsm["spatial"], 0), axis=1))
    )
    x[bright] = x.sum(axis=1).max() * 20 / x.shape[1]  # 20× the largest TIC
    msi.X = x
    rgb = he.read().copy()
    mark_px = (np.array(he.shape[::-1]) * [0.35, 0.6]).astype(int)  # (col, row)
    half = 12
    rgb[mark_px[1] - half : mark_px[1] + half, mark_px[0] - half : mark_px[0] + half] = (0, 255, 0)
    tifffile.imwrite(tmp / "marked.tif", rgb)
    marked = sf.io.read_histology(tmp / "marked.tif", pixel_size_um=he.pixel_size_um)
    path = sf.io.write_spatialdata(
        tmp / "render.zarr",
        he=marked,
        visium=visium,
        msi=msi,
        transforms={"he": trio.visium_to_he.inverse(), "msi": trio.msi_to_visium},
        reference="visium",
    )
    marks = {
        "msi": (
            trio.msi_to_visium,
            np.asarray(msi.obsm["spatial"][[bright]], dtype=float),
            np.asarray(msi.uns["spatialfuse"]["pixel_size_um"], dtype=float),
        ),
        # the square's centre: the corner between its four middle pixels
        "he": (
            trio.visium_to_he.inverse(),
            (mark_px[None] * np.asarray(he.pixel_size_um)).astype(float),
            np.asarray(he.pixel_size_um, dtype=float),
        ),
    }
    return _read(path), visium, marks


def test_spatialdata_plot_draws_everything_where_the_transforms_say(rendered_store):
    sdata, visium, marks = rendered_store
    msi_to_visium, bright_msi_um, msi_px = marks["msi"]
    he_to_visium, mark_he_um, he_px = marks["he"]

    # spatialdata-plot <= 0.4.0 draws rasters half a pixel up-left of spatialdata's convention
    # (measured, not assumed): the expected places below include that offset, the store not
    shift = _plot_raster_offset()
    msi_shift = np.asarray(msi_px) * shift  # in the MSI frame, before msi_to_visium

    # the MSI image: the one bright pixel is drawn where msi_to_visium puts its centre
    fig, ax, pixels = _render(
        sdata, lambda s: s.pl.render_images("msi_image", channel="TIC", cmap="gray")
    )
    bright = pixels.min(axis=2) > 200  # white: the top of the grey map, on a black figure
    found = _blob_centre(bright)
    expected = _display_px(fig, ax, msi_to_visium.apply(bright_msi_um + msi_shift))[0]
    assert np.linalg.norm(found - expected) * _um_per_px(ax) < 0.15 * msi_px[0]
    # its area is one MSI pixel (40 µm square) in display pixels
    area = bright.sum() * _um_per_px(ax) ** 2
    assert 0.6 * msi_px[0] ** 2 < area < 1.4 * msi_px[0] ** 2

    # the H&E: the painted green square lands on the transform-mapped position
    fig, ax, pixels = _render(sdata, lambda s: s.pl.render_images("he"))
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    green = (g > 200) & (r < 60) & (b < 60)
    assert green.sum() > 20
    found = _blob_centre(green)
    expected = _display_px(fig, ax, he_to_visium.apply(mark_he_um + he_px * shift))[0]
    assert np.linalg.norm(found - expected) * _um_per_px(ax) < 4.0  # µm; the square is 48 µm

    # the spots: filled circles of radius 27.5 µm centred on the spot centres
    fig, ax, pixels = _render(
        sdata, lambda s: s.pl.render_shapes("visium_spots", color="red", fill_alpha=1.0)
    )
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    centres = _display_px(fig, ax, visium.obsm["spatial_um"])
    cols, rows = np.round(centres - 0.5).astype(int).T
    assert red[rows, cols].all()  # every centre is drawn red
    # half-way between two spots (100 µm apart) is background
    nearest = np.argsort(
        np.linalg.norm(visium.obsm["spatial_um"] - visium.obsm["spatial_um"][0], axis=1)
    )[1]
    middle = _display_px(fig, ax, visium.obsm["spatial_um"][[0, nearest]].mean(axis=0)[None])[0]
    assert not red[int(middle[1]), int(middle[0])]
    area = red.sum() * _um_per_px(ax) ** 2
    expected_area = len(centres) * np.pi * 27.5**2
    assert 0.85 * expected_area < area < 1.15 * expected_area


def test_spatialdata_plot_composite_and_joint_colours(rendered_store, affine, tmp_path):
    """H&E, MSI image and spots in one picture (the documented call), and spots coloured by a
    table column (the joint clusters) without naming the table."""
    import mudata as md

    sdata, visium, *_ = rendered_store
    fig, ax, pixels = _render(
        sdata,
        lambda s: (
            s.pl.render_images("he")
            .pl.render_images("msi_image", channel="TIC", alpha=0.5)
            .pl.render_shapes(
                "visium_spots", fill_alpha=0.0, outline_alpha=1.0, outline_color="red"
            )
        ),
    )
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    centres = _display_px(fig, ax, visium.obsm["spatial_um"])
    assert red.sum() > len(centres) * 10  # every spot outlined
    assert not red[np.round(centres[:, 1]).astype(int), np.round(centres[:, 0]).astype(int)].any()

    trio, msi, visium, _ = affine
    spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
    joint = md.MuData({"rna": visium, "msi": spots})
    joint.obs["joint"] = (np.arange(joint.n_obs) % 2).astype(str)
    joint.obs["joint"] = joint.obs["joint"].astype("category")
    path = sf.io.write_spatialdata(
        tmp_path / "joint.zarr", visium=visium, tables={"joint": joint}, visium_image=False
    )
    store = _read(path)
    fig, ax, pixels = _render(
        store, lambda s: s.pl.render_shapes("visium_spots", color="joint", fill_alpha=1.0)
    )
    centres = _display_px(fig, ax, visium.obsm["spatial_um"])
    colours = pixels[np.round(centres[:, 1]).astype(int), np.round(centres[:, 0]).astype(int)]
    groups = joint.obs["joint"].to_numpy().astype(str)
    first, second = colours[groups == "0"], colours[groups == "1"]
    assert (first == first[0]).all() and (second == second[0]).all()
    assert not np.array_equal(first[0], second[0])


def test_msi_image_read_in_blocks_dense_sparse_dask(affine, tmp_path, monkeypatch):
    """The MSI image is built from blocks of rows whatever X is: the same channels."""
    import dask.array as da
    from scipy import sparse

    from spatialfuse.io.export import _spatialdata

    _, msi, _, _ = affine
    whole = sf.io.write_spatialdata(tmp_path / "whole.zarr", msi=msi, msi_ions=4)
    expected = _level0(_read(whole)["msi_image"])
    monkeypatch.setattr(_spatialdata, "_MSI_BLOCK_VALUES", 7 * msi.n_vars)  # 7 rows a block
    x = _dense(msi.X)
    for kind, matrix in (
        ("sparse", sparse.csr_matrix(x)),
        ("dask", da.from_array(x, chunks=(100, -1))),
    ):
        other = msi.copy()
        other.X = matrix
        path = sf.io.write_spatialdata(tmp_path / f"{kind}.zarr", msi=other, msi_ions=4)
        np.testing.assert_allclose(_level0(_read(path)["msi_image"]), expected, rtol=1e-6)
