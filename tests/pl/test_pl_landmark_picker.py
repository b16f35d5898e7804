"""The landmark picker in a real napari window (pytest-qt): clicks, live text, files, re-run.

Needs the optional extra (``pip install "spatialfuse[napari]" pytest-qt``) and a display with
OpenGL: ``$DISPLAY``, or ``Xvfb`` on the PATH (started here; ``apt-get install xvfb``). Qt's
``offscreen`` platform is not enough: napari's vispy canvas needs OpenGL, which it lacks (adding an
image layer fails with "QOpenGLWidget: Failed to create context", README "Development"). Each
missing piece skips these tests with its reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason='napari not installed (pip install "spatialfuse[napari]")')
pytest.importorskip("pytestqt", reason="pytest-qt not installed (pip install pytest-qt)")

import spatialfuse as sf
from napari_display import napari_display  # tests/napari_display.py

REFERENCES = Path(__file__).resolve().parents[2] / "benchmarks" / "real_references"
# Napari windows, a synthetic trio, the real bladder pair and registrations: ~1 min on 2 cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session", autouse=True)
def qt_display():
    """A display napari can draw on, or a skip (autouse: before pytest-qt's QApplication)."""
    return napari_display()


@pytest.fixture(scope="module")
def trio_inputs(tmp_path_factory):
    trio = sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("picker_trio"),
        seed=5,
        tissue_size_um=(2000.0, 1600.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=60,
        write_he_serial=False,
    )
    return trio, sf.io.read_imzml(trio.msi), sf.io.read_histology(trio.he)


@pytest.fixture
def picker(qt_display, qtbot, trio_inputs, tmp_path):
    _, msi, he = trio_inputs
    picker = sf.pl.pick_landmarks(
        msi,
        he,
        names=("MSI", "H&E"),
        landmarks_path=tmp_path / "pairs.csv",
        transform_path=tmp_path / "transform.json",
    )
    qtbot.waitUntil(lambda: picker.dock.isVisible() and picker.panel.width() > 0, timeout=20_000)
    yield picker
    qtbot.waitUntil(lambda: not picker.registering, timeout=120_000)
    picker.close()


def _tissue_points(picker, n: int, seed: int = 1) -> np.ndarray:
    tissue = picker.session.moving_image.centres_um(mask_only=True)
    return tissue[np.random.default_rng(seed).choice(len(tissue), n, replace=False)]


def _click(qtbot, picker, xy, *, fixed: bool) -> None:
    """A left click on the canvas where the point ``xy`` (µm of that image's frame) is drawn."""
    from qtpy.QtCore import QPoint, Qt

    viewer = picker.viewer
    canvas = viewer.window._qt_viewer.canvas.native
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    cy, cx = camera.center[-2:]
    x = xy[0] + (picker.offset_x if fixed else 0.0)
    col = canvas.width() / 2 + (x - cx) * camera.zoom
    row = canvas.height() / 2 + (xy[1] - cy) * camera.zoom
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(col), round(row)))


def test_mouse_clicks_add_pairs_and_switch_sides(qtbot, picker, trio_inputs):
    """Real clicks on the canvas: each lands on its image's frame, the side switches after each."""
    trio = trio_inputs[0]
    zoom = (
        picker.viewer.scene.camera if hasattr(picker.viewer, "scene") else picker.viewer.camera
    ).zoom
    one_pixel = 1.0 / zoom  # µm under one screen pixel
    assert picker.viewer.layers.selection.active is picker.moving_layer
    targets = _tissue_points(picker, 3)
    for i, target in enumerate(targets):
        _click(qtbot, picker, target, fixed=False)
        qtbot.waitUntil(lambda i=i: len(picker.moving_layer.data) == i + 1, timeout=5_000)
        assert picker.viewer.layers.selection.active is picker.fixed_layer
        clicked = picker.session.moving_points[i]
        assert np.abs(clicked - target).max() <= one_pixel
        partner = trio.msi_to_he.apply(clicked[None])[0]
        _click(qtbot, picker, partner, fixed=True)
        qtbot.waitUntil(lambda i=i: len(picker.fixed_layer.data) == i + 1, timeout=5_000)
        assert picker.viewer.layers.selection.active is picker.moving_layer
        assert np.abs(picker.session.fixed_points[i] - partner).max() <= one_pixel
    assert picker.session.n_pairs == 3
    assert "affine fit on 3 pairs" in picker.text
    assert "leave-one-out error: needs 4 pairs" in picker.text
    # Screen-pixel clicks: the fit is good to a few screen pixels over the tissue.
    tissue = picker.session.moving_image.centres_um(mask_only=True)
    error = np.linalg.norm(
        picker.session.transform.apply(tissue) - trio.msi_to_he.apply(tissue), axis=1
    )
    assert np.median(error) < 10 * one_pixel


def test_points_fit_text_files_and_rerun(qtbot, picker, trio_inputs, tmp_path):
    """Points added as a click adds them: the text follows every change; the saved CSV and
    transform are the clicked pairs and the trio's known transform; Register refines from them."""
    trio, msi, he = trio_inputs
    moving = _tissue_points(picker, 6)
    fixed = trio.msi_to_he.apply(moving)
    texts = []
    for m, f in zip(moving, fixed, strict=True):
        picker.moving_layer.add(m[::-1][None])  # napari's (row, col) = (y, x)
        texts.append(picker.text)
        picker.fixed_layer.add(f[::-1][None])
        texts.append(picker.text)
    assert "point 1 has no partner yet: add it on the fixed image" in texts[0]
    assert "affine fit: 2 more pair(s) needed" in texts[1]
    assert "affine fit on 3 pairs" in texts[5] and "needs 4 pairs" in texts[5]
    assert "leave-one-out error: median 0.0 µm (0.00 MSI px)" in texts[7]
    assert "6 pair(s): 6 moving point(s), 6 fixed point(s)" in picker.text
    # The pair labels number the points.
    assert list(picker.fixed_layer.features["pair"]) == [1, 2, 3, 4, 5, 6]
    # The fit's predictions sit on the fixed points; the overlay covers the H&E tissue.
    np.testing.assert_allclose(picker.predicted_layer.data[:, ::-1], fixed, atol=1e-6)
    overlay = np.asarray(picker.overlay_layer.data)
    fixed_mask = picker.session.fixed_image.mask
    opaque = overlay[..., 3] > 0.5
    assert 2 * (opaque & fixed_mask).sum() / (opaque.sum() + fixed_mask.sum()) > 0.8

    # Moving a point (a drag does this) raises its leave-one-out error; the text follows.
    data = np.array(picker.fixed_layer.data)
    data[2] += 80.0
    picker.fixed_layer.data = data
    loo = picker.session.fit.loo_tre_um
    assert loo[2] > 50
    assert f"median {np.median(loo):.1f} µm" in picker.text
    assert f"  3: {loo[2]:.1f}  " in picker.text
    data[2] -= 80.0
    picker.fixed_layer.data = data

    # Save buttons: the CSV is what register reads; the transform is the known one.
    from qtpy.QtCore import Qt

    qtbot.mouseClick(picker.save_landmarks_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(picker.save_transform_button, Qt.MouseButton.LeftButton)
    pairs = sf.reg.read_landmarks(tmp_path / "pairs.csv")
    np.testing.assert_allclose(pairs[0], moving, rtol=1e-12)
    np.testing.assert_allclose(pairs[1], fixed, rtol=1e-12)
    saved = sf.reg.Transform.load(tmp_path / "transform.json")
    tissue = picker.session.moving_image.centres_um(mask_only=True)
    np.testing.assert_allclose(saved.apply(tissue), trio.msi_to_he.apply(tissue), atol=1e-6)
    assert "written to" in picker.status.text()

    # Register from the landmarks (a worker thread); the panel and the saved transform follow.
    qtbot.mouseClick(picker.register_button, Qt.MouseButton.LeftButton)
    assert picker.registering
    qtbot.waitUntil(lambda: not picker.registering, timeout=120_000)
    result = picker.session.registration.result
    assert result.ok, result.failures
    assert "registration ok" in picker.status.text()
    assert "registration from the landmarks: ok" in picker.text
    assert "shown and saved: registration from the landmarks" in picker.text
    picker.save_transform()
    refined = sf.reg.Transform.load(tmp_path / "transform.json")
    assert refined == result.transform
    error = np.linalg.norm(refined.apply(tissue) - trio.msi_to_he.apply(tissue), axis=1)
    assert np.median(error) < 0.25 * 50  # a quarter of an MSI pixel

    # The saved CSV re-runs register(..., landmarks=...) outside the window too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sf.reg.RegistrationWarning)
        again = sf.reg.register(msi, he, landmarks=pairs, start_from_landmarks=True)
    assert again.ok and again.metrics["tre_um_median"] < 0.25 * 50


def test_landmarks_given_at_the_start_and_the_panel_controls(
    qtbot, qt_display, trio_inputs, tmp_path
):
    trio, msi, he = trio_inputs
    tissue = sf.reg.registration_image(msi, working_pixel_size_um=None).centres_um(mask_only=True)
    moving = tissue[np.random.default_rng(3).choice(len(tissue), 5, replace=False)]
    fixed = trio.msi_to_he.apply(moving) + np.random.default_rng(4).normal(0, 5, (5, 2))
    csv = tmp_path / "given.csv"
    csv.write_text(
        "X_left,Y_left,X_right,Y_right\n"
        + "".join(f"{a},{b},{c},{d}\n" for (a, b), (c, d) in zip(moving, fixed, strict=True)),
        encoding="utf-8",
    )
    picker = sf.pl.pick_landmarks(msi, he, landmarks=csv, model="similarity")
    try:
        assert len(picker.moving_layer.data) == len(picker.fixed_layer.data) == 5
        assert "similarity fit on 5 pairs" in picker.text
        expected = sf.reg.from_landmarks(moving, fixed, model="similarity").loo_tre_um
        np.testing.assert_allclose(picker.session.fit.loo_tre_um, expected)
        picker.model_box.setCurrentText("affine")
        assert "affine fit on 5 pairs" in picker.text
        picker.overlay_box.setChecked(False)
        assert not picker.overlay_layer.visible
        # Removing a point (select it, Delete) leaves its partner unpaired.
        picker.moving_layer.selected_data = {4}
        picker.moving_layer.remove_selected()
        assert "point 5 has no partner yet: add it on the moving image" in picker.text
        # Refusals go to the status line, not a traceback.
        picker.clear()
        assert picker.session.n_pairs == 0
        picker._guarded(picker.start_registration)
        assert (
            "not done: registration from landmarks needs at least 3 pairs" in picker.status.text()
        )
        picker.landmarks_path = tmp_path / "none.csv"
        picker._guarded(picker.save_landmarks)
        assert "not done: no landmark pair to save" in picker.status.text()
        assert not (tmp_path / "none.csv").exists()
        # The MSI's candidate images are layers (the one registration shows is visible).
        names = [layer.name for layer in picker.viewer.layers]
        assert {"moving pc1", "moving tic", "fixed image"} <= set(names)
    finally:
        picker.close()


def test_msi_onto_a_visium_image(qtbot, trio_inputs):
    """The fixed image may be a Visium folder: its H&E in the full-resolution µm frame."""
    trio, msi, _ = trio_inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visium = sf.io.read_visium(trio.visium)
    picker = sf.pl.pick_landmarks(msi, visium, names=("MSI", "Visium"))
    try:
        picture = next(layer for layer in picker.viewer.layers if layer.name == "Visium image")
        assert picture.rgb
        spatial = next(iter(visium.uns["spatial"].values()))
        scale = spatial["scalefactors"]["tissue_hires_scalef"]
        pixel = visium.uns["spatialfuse"]["um_per_px"] / scale
        np.testing.assert_allclose(picture.scale, (pixel, pixel))
        moving = _tissue_points(picker, 6, seed=2)
        picker.set_points(moving, trio.msi_to_visium.apply(moving))
        assert "6 pair(s)" in picker.text and "affine fit on 6 pairs" in picker.text
        # The serial section's smooth warp (≤ 30 µm) is what an affine leaves.
        assert picker.session.fit.fre_um.max() < 40
        tissue = picker.session.moving_image.centres_um(mask_only=True)
        error = np.linalg.norm(
            picker.session.transform.apply(tissue) - trio.msi_to_visium.apply(tissue), axis=1
        )
        assert np.median(error) < 40
        opaque = np.asarray(picker.overlay_layer.data)[..., 3] > 0.5
        fixed_mask = picker.session.fixed_image.mask
        assert 2 * (opaque & fixed_mask).sum() / (opaque.sum() + fixed_mask.sum()) > 0.7
    finally:
        picker.close()


def test_real_bladder_pair_with_its_reference_landmarks(qtbot, shared_data, tmp_path):
    """The real bladder MSI and H&E with the 11 hand-placed reference landmarks
    (benchmarks/real_references): the panel reports their fit, Register refines from them."""
    import pandas as pd
    from qtpy.QtCore import Qt

    folder = shared_data / "paired" / "bladder_spamtp"
    if not folder.is_dir():
        pytest.skip(f"{folder} not in the shared data")
    msi = sf.io.read_imzml(folder / "mouse_bladder_79peaks.imzML")
    # The TIFF states no usable pixel size; 2.8 µm is what registration estimates for it.
    he = sf.io.read_histology(folder / "mouse_urinary_bladder_HE.tif", pixel_size_um=2.8)
    table = pd.read_csv(REFERENCES / "bladder_spamtp_landmarks.csv")
    pixel = 10.0
    x0, y0 = int(msi.obs["imzml_x"].min()), int(msi.obs["imzml_y"].min())
    # 0-based grid column/row and optical pixel, centres at integers (real_references/README.md)
    moving = np.column_stack(
        [(table["msi_col"] + x0 - 0.5) * pixel, (table["msi_row"] + y0 - 0.5) * pixel]
    )
    fixed = (table[["optical_x", "optical_y"]].to_numpy(np.float64) + 0.5) * 2.8
    picker = sf.pl.pick_landmarks(
        msi,
        he,
        landmarks=(moving, fixed),
        names=("MSI", "H&E"),
        transform_path=tmp_path / "bladder.json",
    )
    try:
        fit = sf.reg.from_landmarks(moving, fixed)
        median = float(np.nanmedian(fit.loo_tre_um))
        assert "11 pair(s): 11 moving point(s), 11 fixed point(s)" in picker.text
        assert f"leave-one-out error: median {median:.1f} µm ({median / pixel:.2f} MSI px)" in (
            picker.text
        )
        assert median / pixel < 3  # the references are good to about 2 MSI pixels
        qtbot.mouseClick(picker.register_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not picker.registering, timeout=300_000)
        result = picker.session.registration.result
        assert result.ok, result.failures
        picker.save_transform()
        refined = sf.reg.Transform.load(tmp_path / "bladder.json")
        tissue = picker.session.moving_image.centres_um(mask_only=True)
        apart = np.linalg.norm(refined.apply(tissue) - fit.transform.apply(tissue), axis=1)
        assert np.median(apart) / pixel < 3  # within the references' own uncertainty
    finally:
        picker.close()


def test_the_command_opens_the_window_for_a_step_of_a_run(
    qtbot, trio_inputs, tmp_path, monkeypatch
):
    """``spatialfuse pick-landmarks config.yaml msi:he`` in a real window; a 'user' clicks, saves
    and closes it; the run config then registers from the saved landmarks."""
    from click.testing import CliRunner
    from qtpy.QtCore import Qt

    from spatialfuse.cli.main import cli
    from spatialfuse.workflow import load_config, read_modality, register_pair

    trio = trio_inputs[0]
    config = tmp_path / "config.yaml"
    lines = [
        "output: out",
        "modalities:",
        f"  msi: {{kind: imzml, path: '{trio.msi}'}}",
        f"  he: {{kind: histology, path: '{trio.he}'}}",
        "registrations:",
        "  - {moving: msi, fixed: he, seed: 3}",
    ]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    real = sf.pl.pick_landmarks
    seen = {}

    def user(data, reference, **kwargs):
        assert kwargs.pop("block") is True  # the command runs the window until it is closed
        picker = real(data, reference, **kwargs)
        seen.update(kwargs, layers=[layer.name for layer in picker.viewer.layers])
        moving = _tissue_points(picker, 5)
        picker.set_points(moving, trio.msi_to_he.apply(moving))
        qtbot.mouseClick(picker.save_landmarks_button, Qt.MouseButton.LeftButton)
        qtbot.mouseClick(picker.save_transform_button, Qt.MouseButton.LeftButton)
        picker.close()
        return picker

    monkeypatch.setattr(sf.pl, "pick_landmarks", user)
    result = CliRunner().invoke(cli, ["pick-landmarks", str(config), "msi:he"])
    assert result.exit_code == 0, result.output
    assert {"msi points", "he points", "he image"} <= set(seen["layers"])
    assert seen["register_options"]["seed"] == 3
    csv = tmp_path / "landmarks" / "msi_to_he.csv"
    assert "5 landmark pair(s) clicked" in result.output and f"landmarks: {csv}" in result.output
    moving, fixed = sf.reg.read_landmarks(csv)
    np.testing.assert_allclose(fixed, trio.msi_to_he.apply(moving), rtol=1e-12)
    saved = sf.reg.Transform.load(csv.with_suffix(".json"))
    np.testing.assert_allclose(saved.apply(moving), fixed, atol=1e-6)
    # The lines the command printed, added to the config: the step registers from them.
    lines[-1] = f"  - {{moving: msi, fixed: he, landmarks: '{csv}', start_from_landmarks: true}}"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(config)
    step = cfg.registrations[0]
    run = register_pair(
        read_modality(cfg.modalities["msi"]), read_modality(cfg.modalities["he"]), step
    )
    assert run.ok, run.failures
    assert run.metrics["tre_um_median"] < 0.25 * 50
