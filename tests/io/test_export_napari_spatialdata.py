"""napari-spatialdata opens the demo run's ``spatialdata.zarr`` with no glue (issue 19).

The store ``spatialfuse demo`` writes is read with ``spatialdata.read_zarr`` and handed to
``napari_spatialdata.Interactive`` in a real napari window: every element is added in the
``global`` coordinate system, each layer's footprint in napari equals SpatialData's ``get_extent``
and each raster pixel's centre lands where SpatialData puts it, the spots are coloured by the
joint clusters from the ``joint`` table and the MSI pixels by an ion from the ``msi`` table, and
the drawn canvas shows those colours at the places the transforms say.

Needs napari-spatialdata (``pip install napari-spatialdata``), napari with a Qt binding and
pytest-qt, and a display with OpenGL (``$DISPLAY``, or ``Xvfb`` on the PATH, started here; see
``tests/napari_display.py``). Each missing piece skips these tests with its reason.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

pytest.importorskip("napari", reason='napari not installed (pip install "spatialfuse[napari]")')
pytest.importorskip("pytestqt", reason="pytest-qt not installed (pip install pytest-qt)")
pytest.importorskip(
    "napari_spatialdata", reason="napari-spatialdata not installed (pip install napari-spatialdata)"
)
pytest.importorskip("spatialdata", reason="spatialdata not installed")

from napari_display import napari_display  # tests/napari_display.py

# The demo pipeline (~50 s on 2 cores), then a napari window: ~1 min.
pytestmark = pytest.mark.slow

RASTERS = ("visium_he", "he", "msi_image", "msi_pixels")
ELEMENTS = (*RASTERS, "visium_spots")


@pytest.fixture(scope="session", autouse=True)
def qt_display():
    """A display napari can draw on, or a skip (autouse: before pytest-qt's QApplication)."""
    return napari_display()


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    import spatialdata as sd

    from spatialfuse.workflow import run_demo

    out = tmp_path_factory.mktemp("napari_spatialdata_demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_demo(out, show_progress=False)
        return sd.read_zarr(out / "results" / "spatialdata.zarr")


@pytest.fixture(scope="module")
def loaded(demo_store, qapp):
    """The store in napari-spatialdata's ``Interactive``, every element added in ``global``."""
    import napari
    from napari_spatialdata import Interactive
    from napari_spatialdata._view import QtAdataViewWidget

    viewer = napari.Viewer(show=True)
    try:
        interactive = Interactive(demo_store, headless=True)
        assert interactive._viewer is viewer
        for name in ELEMENTS:
            count = len(viewer.layers)
            interactive.add_element(name, "global")  # loads in a worker thread
            deadline = time.monotonic() + 60
            while len(viewer.layers) == count and time.monotonic() < deadline:
                qapp.processEvents()
                time.sleep(0.02)
            assert viewer.layers[-1].name == name
        view = viewer.window.dock_widgets["View (napari-spatialdata)"]
        assert isinstance(view, QtAdataViewWidget), type(view)
        yield demo_store, viewer, view
    finally:
        viewer.close()


def _global_xy(element):
    """The element's intrinsic (x, y) → ``global`` (x, y) affine matrix, as SpatialData has it."""
    from spatialdata.transformations import get_transformation

    transform = get_transformation(element, to_coordinate_system="global")
    return transform.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))


def _level0(element):
    if hasattr(element, "children") and "scale0" in element.children:
        element = next(iter(element["scale0"].values()))
    return element


def _yx(layer, data_points):
    """World (y, x) of data points of a layer (a channel axis in front is given as 0)."""
    extra = layer.ndim - 2
    points = np.asarray(data_points, dtype=float)
    points = np.hstack([np.zeros((len(points), extra)), points])
    return np.array([layer.data_to_world(p)[-2:] for p in points])


def test_every_element_lands_where_spatialdata_puts_it(loaded):
    from spatialdata import get_extent

    sdata, viewer, _ = loaded
    kinds = {name: type(viewer.layers[name]).__name__ for name in ELEMENTS}
    assert kinds == {
        "visium_he": "Image",
        "he": "Image",
        "msi_image": "Image",
        "msi_pixels": "Labels",
        "visium_spots": "Points",  # circles, drawn as points of the circles' diameter
    }
    assert viewer.layers["visium_he"].multiscale and viewer.layers["visium_he"].rgb
    assert viewer.layers["he"].rgb
    # the MSI image's channels are the store's channel names (TIC and the ions)
    channels = list(viewer.layers["msi_image"].metadata["adata"].var_names)
    assert channels == list(sdata["msi_image"].coords["c"].values) and channels[0] == "TIC"

    for name in RASTERS:
        layer, element = viewer.layers[name], sdata[name]
        rows, cols = _level0(element).shape[-2:]
        pixel_um = np.sqrt(abs(np.linalg.det(_global_xy(element)[:2, :2])))  # µm per pixel
        # pixel centres: napari's data point (row, col) is where SpatialData puts the centre of
        # pixel (row, col), i.e. (col + 1/2, row + 1/2) through the element's global transform
        idx = np.array([[0, 0], [rows - 1, 0], [0, cols - 1], [rows - 1, cols - 1], [rows // 2, 7]])
        matrix = _global_xy(element)
        expected_xy = (idx[:, ::-1] + 0.5) @ matrix[:2, :2].T + matrix[:2, 2]
        np.testing.assert_allclose(_yx(layer, idx), expected_xy[:, ::-1], atol=1e-6 * pixel_um)
        # footprint: the pixels' outer corners in napari span SpatialData's extent in global
        corners = np.array([[-0.5, -0.5], [-0.5, cols - 0.5], [rows - 0.5, -0.5]])
        corners = np.vstack([corners, [[rows - 0.5, cols - 0.5]]])
        world = _yx(layer, corners)
        extent = get_extent(element, coordinate_system="global")
        for axis, column in (("y", 0), ("x", 1)):
            found = (world[:, column].min(), world[:, column].max())
            np.testing.assert_allclose(found, extent[axis], atol=1e-6 * pixel_um, err_msg=name)

    # the spots: centres and diameter in global, and the extent of the circles
    layer, spots = viewer.layers["visium_spots"], sdata["visium_spots"]
    import spatialdata as sd

    moved = sd.transform(spots, to_coordinate_system="global")
    expected = np.stack([moved.geometry.y.to_numpy(), moved.geometry.x.to_numpy()], axis=1)
    order = np.asarray(layer.metadata["indices"])
    np.testing.assert_array_equal(order, spots.index.to_numpy())
    np.testing.assert_allclose(_yx(layer, layer.data), expected, atol=1e-6)
    scale = np.linalg.norm(np.subtract(*_yx(layer, [[0.0, 1.0], [0.0, 0.0]])))  # µm per unit
    radius = spots["radius"].to_numpy()
    np.testing.assert_allclose(np.asarray(layer.size) * scale, 2 * radius, rtol=1e-9)
    extent = get_extent(spots, coordinate_system="global")
    for axis, column in (("y", 0), ("x", 1)):
        circles = ((expected[:, column] - radius).min(), (expected[:, column] + radius).max())
        np.testing.assert_allclose(circles, extent[axis], atol=1e-6)


def _show_only(viewer, name):
    for layer in viewer.layers:
        layer.visible = layer.name == name
    viewer.layers[name].opacity = 1.0
    viewer.layers.selection.active = viewer.layers[name]


def _canvas_at(viewer, qapp, centre_yx, zoom, offsets_yx):
    """RGB drawn at world ``centre_yx + offsets_yx`` (µm) with the camera centred on
    ``centre_yx`` at ``zoom`` screen pixels per µm."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9
    camera.center = tuple(float(v) for v in centre_yx)
    camera.zoom = zoom
    qapp.processEvents()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    h, w = shot.shape[:2]
    offsets = np.asarray(offsets_yx, dtype=float)
    rows = np.floor(h / 2 + offsets[:, 0] * zoom).astype(int)
    cols = np.floor(w / 2 + offsets[:, 1] * zoom).astype(int)
    return shot[rows, cols, :3].astype(int)


def test_spots_coloured_by_joint_clusters_drawn_in_place(loaded, qapp):
    sdata, viewer, view = loaded
    layer, spots = viewer.layers["visium_spots"], sdata["visium_spots"]
    _show_only(viewer, "visium_spots")
    qapp.processEvents()
    # the joint table is the first of the tables annotating the spots: picked with no glue
    tables = [view.table_name_widget.itemText(i) for i in range(view.table_name_widget.count())]
    assert view.table_name_widget.currentText() == "joint", tables
    assert {"joint", "visium", "msi_spots"} <= set(tables)
    view.obs_widget._onAction(["joint"])  # what clicking "joint" under Observations does
    qapp.processEvents()

    joint = sdata["joint"].obs.set_index("spot_id")["joint"]
    clusters = joint.reindex(layer.metadata["indices"]).to_numpy()
    colours = np.asarray(layer.face_color)[:, :3]
    per_cluster = {c: np.unique(colours[clusters == c].round(4), axis=0) for c in set(clusters)}
    assert all(len(found) == 1 for found in per_cluster.values()), per_cluster
    assert len(np.unique(np.vstack(list(per_cluster.values())), axis=0)) == len(per_cluster)

    # drawn: one spot of each cluster has its colour inside its radius, background beyond it
    radius = float(spots["radius"].iloc[0])
    world = _yx(layer, layer.data)
    inside = [(0, 0), (0.7 * radius, 0), (0, -0.7 * radius)]
    outside = [(1.25 * radius, 0), (0, -1.25 * radius), (-1.25 * radius, 0)]
    for cluster in sorted(per_cluster):
        i = int(np.flatnonzero(clusters == cluster)[0])
        drawn = _canvas_at(viewer, qapp, world[i], 1.0, inside + outside)
        expected = np.round(colours[i] * 255)
        assert np.abs(drawn[:3] - expected).max() <= 3, (cluster, drawn, expected)
        assert drawn[3:].max() <= 10, (cluster, drawn)  # the black canvas

    # a gene from another table annotating the spots: picked in the table list, then under Vars
    import matplotlib

    view.table_name_widget.setCurrentText("visium")
    qapp.processEvents()
    table = sdata["visium"]
    gene = str(table.var_names[int(np.argmax(_column_values(table, None).var(axis=0)))])
    view.var_widget._onAction([gene])
    qapp.processEvents()
    values = dict(zip(table.obs["spot_id"], _column_values(table, gene), strict=True))
    values = np.array([values[i] for i in layer.metadata["indices"]])
    scaled = (values - values.min()) / (values.max() - values.min())
    expected = matplotlib.colormaps[view.model.cmap](scaled)[:, :3]
    np.testing.assert_allclose(np.asarray(layer.face_color)[:, :3], expected, atol=1e-6)


def _column_values(table, name):
    """A table's ``X`` column ``name`` (all of ``X`` for None) as floats."""
    x = table.X if name is None else table[:, name].X
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=float)
    return x if name is None else x.ravel()


def test_msi_pixels_coloured_by_an_ion_and_images_drawn_in_place(loaded, qapp):
    import matplotlib

    sdata, viewer, view = loaded
    rng = np.random.default_rng(0)

    # the MSI labels, coloured by an ion of the msi table: each label's colour is the ion's
    # value (min-max scaled through the view's colour map); drawn at SpatialData's pixel centres
    layer = viewer.layers["msi_pixels"]
    _show_only(viewer, "msi_pixels")
    qapp.processEvents()
    assert view.table_name_widget.currentText() == "msi"
    table = sdata["msi"]
    ion = str(table.var_names[int(np.argmax(_column_values(table, None).var(axis=0)))])
    view.var_widget._onAction([ion])
    qapp.processEvents()
    values = _column_values(table, ion)
    scaled = (values - values.min()) / (values.max() - values.min())
    expected = matplotlib.colormaps[view.model.cmap](scaled)[:, :3]
    labels = table.obs["pixel_id"].to_numpy()
    found = np.array([layer.colormap.color_dict[int(label)][:3] for label in labels])
    np.testing.assert_allclose(found, expected, atol=1e-6)

    raster = np.asarray(_level0(sdata["msi_pixels"]))
    lut = np.zeros((raster.max() + 1, 3))
    lut[labels] = found * 255
    _check_raster_drawn(
        viewer,
        qapp,
        sdata,
        "msi_pixels",
        rng,
        lambda r, c: lut[raster[r, c]],
        where=raster > 0,
        zoom=0.8,
    )

    # the H&E images (one multiscale), RGB as stored
    for name, zoom in (("he", 10.0), ("visium_he", 24.0)):
        _show_only(viewer, name)
        pixels = np.asarray(_level0(sdata[name]))
        _check_raster_drawn(
            viewer, qapp, sdata, name, rng, lambda r, c, p=pixels: p[:, r, c], zoom=zoom
        )

    # the MSI image: a channel picked by its name (an ion, then TIC) under Vars
    _show_only(viewer, "msi_image")
    qapp.processEvents()
    channels = list(sdata["msi_image"].coords["c"].values)
    for channel in (channels[5], "TIC"):
        view.var_widget._onAction([channel])
        qapp.processEvents()
        assert viewer.dims.current_step[0] == channels.index(channel), channel


def _check_raster_drawn(viewer, qapp, sdata, name, rng, colour, *, zoom, where=None):
    """For pixels unlike their neighbours, the canvas shows their colour on both sides of their
    centre (0.3 pixel off it), the centre being where SpatialData puts it in ``global``."""
    element = sdata[name]
    matrix = _global_xy(element)
    rows, cols = _level0(element).shape[-2:]
    checked = 0
    for _ in range(400):
        r, c = int(rng.integers(1, rows - 1)), int(rng.integers(1, cols - 1))
        if where is not None and not where[r - 1 : r + 2, c - 1 : c + 2].all():
            continue
        mine = np.asarray(colour(r, c), dtype=float)
        neighbours = [
            np.asarray(colour(r + dr, c + dc), dtype=float) for dr, dc in ((-1, -1), (1, 1))
        ]
        if min(np.abs(mine - n).max() for n in neighbours) < 40:
            continue
        xy = np.array([[c + 0.5, r + 0.5], [c + 0.2, r + 0.2], [c + 0.8, r + 0.8]])
        world = (xy @ matrix[:2, :2].T + matrix[:2, 2])[:, ::-1]
        drawn = _canvas_at(viewer, qapp, world[0], zoom, world - world[0])
        assert np.abs(drawn - mine).max() <= 4, (name, r, c, drawn, mine)
        checked += 1
        if checked == 3:
            break
    assert checked == 3, name
