"""Pick landmark pairs by hand in napari, with the fit and its leave-one-out error live.

One napari viewer shows the moving image (left) and the fixed image (right) side by side, each in
its own µm frame (the fixed one shifted right for display only: its layers' ``data`` stay in the
fixed frame). Two Points layers hold the clicks, paired by order; a dock panel shows the landmark
fit (:func:`spatialfuse.reg.from_landmarks`) and its errors after every change, and the moving
image warped onto the fixed one. napari and Qt are imported here only, inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse.pl._landmark_session import PICKER_MODELS, LandmarkSession

if TYPE_CHECKING:
    import napari

    from spatialfuse.reg import RegistrationImage

#: Colours of the two point sets and of the fit's predictions.
MOVING_COLOUR, FIXED_COLOUR, PREDICTED_COLOUR = "#ff4fd8", "#3fd0ff", "#ffe14d"
#: Longest side (pixels) of the optical images' display copies (default) and of the overlay grid.
DISPLAY_SIZE = 2048
OVERLAY_SIZE = 600
#: The overlay: the warped moving image in this colour map, over the fixed image at this opacity
#: (a colour map far from the pinks and purples of H&E stains; over a fluorescence image
#: :data:`spatialfuse.pl.stain.MSI_CMAP_ON_FLUORESCENCE`, plasma).
OVERLAY_COLORMAP, OVERLAY_OPACITY = "viridis", 0.45
#: Size of a new window (logical pixels): room for both images and the panel.
WINDOW_SIZE = (1500, 900)
#: The files the panel saves: for each the save dialog's title, suggested name and filter, and
#: what the status line says was written (from the session).
_SAVED = {
    "landmarks": (
        "Save landmarks",
        "landmarks.csv",
        "CSV (*.csv)",
        lambda session: f"{session.n_pairs} pairs",
    ),
    "transform": (
        "Save transform",
        "transform.json",
        "JSON (*.json)",
        lambda session: session.transform_source,
    ),
}


def _require_napari():
    from spatialfuse.errors import MissingDependencyError

    try:
        import napari
    except ImportError as err:
        raise MissingDependencyError(
            "the landmark picker needs napari and a Qt binding, which are not installed; "
            'install them with `pip install "spatialfuse[napari]"` (napari and PyQt5)'
        ) from err
    return napari


def _extent_um(obj: Any) -> float | None:
    """Longest side of an input in µm, where it has one without building images."""
    from spatialfuse.reg import RegistrationImage

    if isinstance(obj, RegistrationImage):
        return float(max(obj.shape[1] * obj.pixel_size_um[0], obj.shape[0] * obj.pixel_size_um[1]))
    if hasattr(obj, "extent_um"):
        return float(max(obj.extent_um))
    found = _visium_picture(obj)
    if found is not None:
        array, pixel = found
        return float(max(array.shape[:2]) * pixel)
    return None


def _visium_picture(obj: Any) -> tuple[np.ndarray, float] | None:
    """A Visium AnnData's H&E (hires, else lowres) and its pixel size in the full-res µm frame."""
    from spatialfuse.core.visium_geometry import visium_um_per_px

    uns = getattr(obj, "uns", None)
    if uns is None or "spatial" not in uns:
        return None
    um_per_px = visium_um_per_px(obj, required=False)
    if um_per_px is None:
        return None
    spatial = uns["spatial"] or {}
    library = next(iter(spatial), None)
    if library is None:
        return None
    images = spatial[library].get("images", {}) or {}
    scales = spatial[library].get("scalefactors", {}) or {}
    for res in ("hires", "lowres"):
        if res in images:
            scale = float(scales[f"tissue_{res}_scalef"])
            return np.asarray(images[res]), um_per_px / scale
    return None


def _registration_image(obj: Any, *, msi_image: Any, channel: str) -> RegistrationImage:
    from spatialfuse.reg import registration_image

    extent = _extent_um(obj)
    working = None if extent is None else extent / OVERLAY_SIZE
    return registration_image(
        obj, working_pixel_size_um=working, channel=channel, msi_image_kind=msi_image
    )


def _display_pictures(obj: Any, image: RegistrationImage, max_size: int) -> list[dict]:
    """What the viewer shows of an input: an RGB picture where it has one, and its channels.

    Each entry: ``name``, ``data``, ``pixel_size_um`` ``(x, y)``, ``origin_um``, ``rgb``,
    ``visible``, ``colormap`` (of a single-channel picture) and ``kind`` (of an optical picture).
    An optical picture is drawn as the plots draw it (:mod:`spatialfuse.pl.stain`): a bright-field
    stain in its RGB colours, fluorescence on black with each channel in its colour; an MSI's
    channels in viridis.
    """
    from spatialfuse.pl.stain import MSI_CMAP, stain_kind, stain_picture

    pictures = []
    found = None
    if hasattr(obj, "downsampled") and hasattr(obj, "extent_um"):
        found = obj.downsampled(max_size=max_size)
    else:
        visium = _visium_picture(obj)
        if visium is not None:
            found = visium[0], (visium[1], visium[1])
    if found is not None:
        array, size = found
        kind = stain_kind(array)
        pictures.append(
            {
                "name": "image",
                "data": stain_picture(array, kind).astype(np.float32),
                "pixel_size_um": size,
                "rgb": True,
                "kind": kind,
            }
        )
    shown = image.extra.get("channel")
    channels = image.extra.get("channels") or {shown or "image": image.image}
    has_picture = bool(pictures)
    if has_picture and image.modality != "msi":
        # An optical image: its colour picture; the registration channels add nothing to click.
        return pictures
    for name, values in channels.items():
        pictures.append(
            {
                "name": name,
                "data": np.asarray(values, dtype=np.float32),
                "pixel_size_um": image.pixel_size_um,
                "origin_um": image.origin_um,
                "rgb": False,
                "visible": not has_picture and name == shown,
                "colormap": MSI_CMAP if image.modality == "msi" else "gray",
            }
        )
    if pictures and not any(p.get("visible") for p in pictures):
        pictures[0]["visible"] = True
    return pictures


def _coloured(
    warped: tuple | None, shape: tuple[int, int], cmap: str = OVERLAY_COLORMAP
) -> np.ndarray:
    """RGBA of a warped image: its colour map on its tissue, faint elsewhere in its domain."""
    from matplotlib import colormaps

    out = np.zeros((*shape, 4), dtype=np.float32)
    if warped is None:
        return out
    values, tissue = warped
    inside = np.isfinite(values)
    out[inside] = colormaps[cmap](np.clip(values[inside], 0.0, 1.0))
    out[..., 3] = np.where(tissue & inside, 1.0, np.where(inside, 0.25, 0.0))
    return out


def _frame_box(image: RegistrationImage) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` µm of a registration image."""
    x0, y0 = image.origin_um
    return (
        x0,
        y0,
        x0 + image.shape[1] * image.pixel_size_um[0],
        y0 + image.shape[0] * image.pixel_size_um[1],
    )


class LandmarkPicker:
    """A napari viewer for picking landmark pairs, with its panel (see :func:`pick_landmarks`).

    Attributes
    ----------
    viewer
        The napari viewer.
    session
        The :class:`~spatialfuse.pl._landmark_session.LandmarkSession`: points, fit, files.
    moving_layer, fixed_layer
        The two Points layers (napari ``(row, col)`` = ``(y, x)`` µm of each image's own frame).
    text
        The panel's text: the fit and its errors, updated on every change.
    landmarks_path, transform_path
        Where the Save buttons write (a file dialog asks where these are None).
    """

    def __init__(
        self,
        session: LandmarkSession,
        *,
        viewer: napari.Viewer,
        moving_pictures: list[dict],
        fixed_pictures: list[dict],
        moving_name: str,
        fixed_name: str,
        landmarks_path: Path | None,
        transform_path: Path | None,
    ):
        self.session = session
        self.viewer = viewer
        self.moving_name, self.fixed_name = moving_name, fixed_name
        self.landmarks_path, self.transform_path = landmarks_path, transform_path
        self._updating = False
        self._worker = None
        mx0, _, mx1, _ = _frame_box(session.moving_image)
        fx0, _, fx1, _ = _frame_box(session.fixed_image)
        gap = 0.05 * max(mx1 - mx0, fx1 - fx0)
        #: How far right the fixed image is drawn (µm; display only).
        self.offset_x = mx1 + gap - fx0
        # the overlay's colour map contrasts with the fixed picture (plasma over fluorescence)
        from spatialfuse.pl.stain import msi_cmap

        kinds = [p["kind"] for p in fixed_pictures if "kind" in p]
        self.overlay_cmap = msi_cmap(kinds[0] if kinds else None)
        self._moving_picture_layers = self._add_pictures(moving_pictures, moving_name, 0.0)
        self._fixed_picture_layers = self._add_pictures(fixed_pictures, fixed_name, self.offset_x)
        self.overlay_layer = self._add_overlay()
        self.moving_layer = self._add_point_layer(f"{moving_name} points", MOVING_COLOUR, 0.0)
        self.fixed_layer = self._add_point_layer(
            f"{fixed_name} points", FIXED_COLOUR, self.offset_x
        )
        # On top of the fixed points: a cross beside its disc is a pair the fit does not follow.
        self.predicted_layer = viewer.add_points(
            np.zeros((0, 2)),
            name="fit: moving points on the fixed image",
            symbol="cross",
            size=0.7 * self._point_size(),
            face_color=PREDICTED_COLOUR,
            border_width=0,
            translate=(0.0, self.offset_x),
        )
        self.predicted_layer.editable = False
        self._build_panel()
        for layer in (self.moving_layer, self.fixed_layer):
            layer.events.data.connect(self._on_points_changed)
        self._show_points()
        self.refresh()
        viewer.layers.selection.active = self.moving_layer
        self.moving_layer.mode = "add"
        viewer.reset_view()
        # Once more when Qt has laid out the panel (the canvas is narrower then).
        from qtpy.QtCore import QTimer

        QTimer.singleShot(200, viewer.reset_view)

    # -- layers ---------------------------------------------------------------------------------

    def _point_size(self) -> float:
        width = max(self.offset_x, 1.0) + (_frame_box(self.session.fixed_image)[2])
        return max(width / 60.0, 1e-6)

    def _add_pictures(self, pictures: list[dict], prefix: str, offset_x: float) -> list:
        layers = []
        for picture in pictures:
            sx, sy = picture["pixel_size_um"]
            ox, oy = picture.get("origin_um", (0.0, 0.0))
            layers.append(
                self.viewer.add_image(
                    picture["data"],
                    name=f"{prefix} {picture['name']}",
                    rgb=picture["rgb"],
                    scale=(sy, sx),
                    # napari draws pixel i's centre at translate + i·scale; ours is at (i + ½)·s.
                    translate=(oy + sy / 2, ox + sx / 2 + offset_x),
                    visible=bool(picture.get("visible", True)),
                    colormap=None if picture["rgb"] else picture.get("colormap", "gray"),
                )
            )
        return layers

    def _add_overlay(self):
        fixed = self.session.fixed_image
        sx, sy = fixed.pixel_size_um
        ox, oy = fixed.origin_um
        return self.viewer.add_image(
            np.zeros((*fixed.shape, 4), dtype=np.float32),
            name=f"{self.moving_name} warped onto {self.fixed_name}",
            rgb=True,
            scale=(sy, sx),
            translate=(oy + sy / 2, ox + sx / 2 + self.offset_x),
            opacity=OVERLAY_OPACITY,
        )

    def _add_point_layer(self, name: str, colour: str, offset_x: float):
        import pandas as pd

        return self.viewer.add_points(
            np.zeros((0, 2)),
            name=name,
            size=self._point_size(),
            face_color=colour,
            border_color="white",
            features=pd.DataFrame({"pair": pd.Series([], dtype=int)}),
            feature_defaults={"pair": 0},
            text={"string": "{pair}", "color": colour, "size": 12, "anchor": "upper_left"},
            translate=(0.0, offset_x),
        )

    # -- panel ----------------------------------------------------------------------------------

    def _build_panel(self) -> None:
        from qtpy.QtGui import QFont
        from qtpy.QtWidgets import (
            QCheckBox,
            QComboBox,
            QHBoxLayout,
            QLabel,
            QPlainTextEdit,
            QPushButton,
            QVBoxLayout,
            QWidget,
        )

        panel = QWidget()
        layout = QVBoxLayout(panel)
        intro = QLabel(
            f"Click a point on {self.moving_name} (left), then the same place on "
            f"{self.fixed_name} (right); the active points layer switches after each click. "
            "Points pair by order; drag to move, select and Delete to remove."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        row.addWidget(QLabel("fit:"))
        self.model_box = QComboBox()
        self.model_box.addItems(list(PICKER_MODELS))
        self.model_box.setCurrentText(self.session.model)
        self.model_box.currentTextChanged.connect(self._on_model_changed)
        row.addWidget(self.model_box)
        self.overlay_box = QCheckBox("overlay")
        self.overlay_box.setChecked(True)
        self.overlay_box.toggled.connect(self._on_overlay_toggled)
        row.addWidget(self.overlay_box)
        layout.addLayout(row)
        self.text_box = QPlainTextEdit()
        self.text_box.setReadOnly(True)
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.TypeWriter)
        self.text_box.setFont(font)
        self.text_box.setMinimumWidth(360)
        layout.addWidget(self.text_box)
        self.save_landmarks_button = QPushButton("Save landmarks (CSV)")
        self.save_landmarks_button.clicked.connect(lambda: self._guarded(self.save_landmarks))
        self.save_transform_button = QPushButton("Save transform (JSON)")
        self.save_transform_button.clicked.connect(lambda: self._guarded(self.save_transform))
        self.register_button = QPushButton("Register from landmarks")
        self.register_button.clicked.connect(lambda: self._guarded(self.start_registration))
        self.clear_button = QPushButton("Clear points")
        self.clear_button.clicked.connect(self.clear)
        for button in (
            self.save_landmarks_button,
            self.save_transform_button,
            self.register_button,
            self.clear_button,
        ):
            layout.addWidget(button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.dock = self.viewer.window.add_dock_widget(panel, name="landmarks", area="right")
        self.panel = panel

    def _guarded(self, action) -> None:
        """Run a button's action; a refusal (too few pairs, a bad file) goes to the status line."""
        from spatialfuse.errors import SpatialfuseError

        try:
            action()
        except (ValueError, OSError, SpatialfuseError) as exc:
            self.status.setText(f"not done: {exc}")

    def _on_model_changed(self, model: str) -> None:
        self.session.model = model
        self.refresh()

    def _on_overlay_toggled(self, checked: bool) -> None:
        self.overlay_layer.visible = bool(checked)

    # -- points ---------------------------------------------------------------------------------

    @staticmethod
    def _xy(layer) -> np.ndarray:
        data = np.asarray(layer.data, dtype=np.float64)
        return data[:, ::-1].copy() if data.size else np.zeros((0, 2))

    def _on_points_changed(self, event) -> None:
        if self._updating:
            return
        action = str(getattr(event, "action", "changed"))
        if action in ("adding", "removing", "changing"):
            return
        self.session.set_points(self._xy(self.moving_layer), self._xy(self.fixed_layer))
        self._label_points()
        self.refresh()
        if action == "added":
            source = event.source
            other = self.fixed_layer if source is self.moving_layer else self.moving_layer
            if len(source.data) >= len(other.data):
                self.viewer.layers.selection.active = other
                other.mode = "add"

    def _label_points(self) -> None:
        import pandas as pd

        self._updating = True
        try:
            for layer in (self.moving_layer, self.fixed_layer):
                numbers = np.arange(1, len(layer.data) + 1)
                current = layer.features.get("pair")
                if current is not None and np.array_equal(np.asarray(current), numbers):
                    continue  # a drag moves points without renumbering them
                layer.features = pd.DataFrame({"pair": numbers})
                layer.feature_defaults = {"pair": len(layer.data) + 1}
        finally:
            self._updating = False

    def _show_points(self) -> None:
        """Put the session's points into the layers (e.g. landmarks given at the start)."""
        self._updating = True
        try:
            self.moving_layer.data = self.session.moving_points[:, ::-1]
            self.fixed_layer.data = self.session.fixed_points[:, ::-1]
        finally:
            self._updating = False
        self._label_points()

    def set_points(self, moving_points: Any, fixed_points: Any) -> None:
        """Replace the clicks by ``(x, y)`` µm point lists (as if clicked), and refresh."""
        self.session.set_points(moving_points, fixed_points)
        self._show_points()
        self.refresh()

    def clear(self) -> None:
        """Remove every point."""
        self.set_points(np.zeros((0, 2)), np.zeros((0, 2)))
        self.status.setText("points cleared")

    # -- what the panel and the overlay show -----------------------------------------------------

    @property
    def text(self) -> str:
        """The panel's text."""
        return self.text_box.toPlainText()

    def refresh(self) -> None:
        """Redraw the text, the overlay and the predicted points from the session."""
        self.text_box.setPlainText(self.session.summary())
        self.overlay_layer.data = _coloured(
            self.session.warped(), self.session.fixed_image.shape, self.overlay_cmap
        )
        predicted = self.session.predicted()
        self.predicted_layer.data = predicted[:, ::-1] if len(predicted) else np.zeros((0, 2))

    # -- files ----------------------------------------------------------------------------------

    def _save(self, kind: str, path: str | os.PathLike | None) -> Path | None:
        """Write the session's ``kind`` file (:data:`_SAVED`) and say so on the status line.

        To ``path``, else to the file last written (``{kind}_path``), else to a file picked in a
        save dialog; None when the dialog is cancelled.
        """
        title, suggestion, pattern, what = _SAVED[kind]
        target = Path(path) if path is not None else getattr(self, f"{kind}_path")
        if target is None:
            from qtpy.QtWidgets import QFileDialog

            name, _ = QFileDialog.getSaveFileName(self.panel, title, suggestion, pattern)
            if not name:
                return None
            target = Path(name)
        written = getattr(self.session, f"save_{kind}")(target)
        setattr(self, f"{kind}_path", written)
        self.status.setText(f"{what(self.session)} written to {written}")
        return written

    def save_landmarks(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the pairs as CSV to ``path`` (default: :attr:`landmarks_path`, else ask)."""
        return self._save("landmarks", path)

    def save_transform(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the shown transform as JSON to ``path`` (default: :attr:`transform_path`)."""
        return self._save("transform", path)

    # -- registration ---------------------------------------------------------------------------

    @property
    def registering(self) -> bool:
        """Whether a registration started from the panel is still running."""
        return self._worker is not None

    def start_registration(self):
        """Run :func:`spatialfuse.reg.register` from the pairs in a worker thread.

        The panel shows the verdict and the overlay the refined transform when it ends
        (:attr:`registering` turns false). Returns the napari worker.
        """
        from napari.qt.threading import create_worker

        if self._worker is not None:
            raise ValueError("a registration is already running")
        if self.session.n_pairs < 3 and self.session.register_options.get(
            "start_from_landmarks", True
        ):
            raise ValueError(
                f"registration from landmarks needs at least 3 pairs, {self.session.n_pairs} given"
            )
        worker = create_worker(self.session.register)
        worker.returned.connect(self._registration_done)
        worker.errored.connect(self._registration_failed)
        worker.finished.connect(self._registration_finished)
        self._worker = worker
        self.register_button.setEnabled(False)
        self.status.setText("registering from the landmarks…")
        worker.start()
        return worker

    def _registration_done(self, result) -> None:
        verdict = "ok" if result.ok else "flagged: " + "; ".join(result.failures)
        self.status.setText(f"registration {verdict}")
        self.refresh()

    def _registration_failed(self, exc: Exception) -> None:
        self.status.setText(f"registration failed: {exc}")

    def _registration_finished(self) -> None:
        self._worker = None
        self.register_button.setEnabled(True)

    def close(self) -> None:
        """Close the viewer."""
        self.viewer.close()


def pick_landmarks(
    data: Any,
    reference: Any,
    *,
    landmarks: str | os.PathLike | tuple | None = None,
    model: str = "affine",
    msi_image: str | list[float] = "auto",
    channel: str = "auto",
    landmarks_path: str | os.PathLike | None = None,
    transform_path: str | os.PathLike | None = None,
    register_options: dict | None = None,
    names: tuple[str, str] | None = None,
    display_size: int = DISPLAY_SIZE,
    viewer: napari.Viewer | None = None,
    show: bool = True,
    block: bool = False,
) -> LandmarkPicker:
    """Pick landmark pairs by hand in napari and see the fit and its error as you click.

    Opens the moving image (left) and the reference image (right) side by side in µm. Click a
    point on one, then the same place on the other (points pair by order). After every change
    the panel shows the landmark fit (:func:`spatialfuse.reg.from_landmarks`), its residuals and
    its leave-one-out error; the moving image is drawn warped onto the reference one. Buttons
    save the landmarks CSV (what ``register(..., landmarks=...)``, ``read_landmarks`` and the
    run config's ``landmarks:`` read) and the transform (``Transform.load``), and re-run
    :func:`spatialfuse.reg.register` from the landmarks. Needs the optional extra
    ``pip install "spatialfuse[napari]"`` (napari and a Qt binding).

    Parameters
    ----------
    data
        The moving input, as :func:`spatialfuse.reg.register` takes it: an MSI AnnData
        (:func:`~spatialfuse.io.read_imzml`; shown as its ion images/PCs/TIC, as registration
        builds them), a ``HistologyImage``, a Visium AnnData or a ``RegistrationImage``.
    reference
        The fixed input (an H&E ``HistologyImage`` or a Visium AnnData, shown in colour; or any
        of the above).
    landmarks
        Pairs to start from: a CSV path (:func:`spatialfuse.reg.read_landmarks`) or
        ``(moving_points, fixed_points)`` ``(x, y)`` µm.
    model
        The landmark fit shown: ``"rigid"``, ``"similarity"``, ``"affine"`` or ``"tps"``
        (the panel changes it).
    msi_image
        The MSI image shown first (``"auto"``, ``"pc1"``, ``"pc2"``, ``"tic"``, ``"labels"`` or
        m/z values summed); the other candidates are layers too, hidden.
    channel
        The optical channel of the reference's registration image (``"auto"``, ``"od"``,
        ``"gray"``, ``"hematoxylin"``, ``"eosin"``); the overlay is drawn on its grid.
    landmarks_path, transform_path
        Where the Save buttons write; None: a file dialog asks.
    register_options
        Keyword arguments of :func:`spatialfuse.reg.register` for the re-run (default
        ``start_from_landmarks=True`` and the ``model`` of register's default).
    names
        Names of the two inputs in the viewer (default ``("moving", "fixed")``).
    display_size
        Longest side (pixels) of the copy of a histology image shown (read from the pyramid
        level that fits); larger shows finer detail to click on and takes more memory.
    viewer
        A napari viewer to draw into (default: a new one).
    show
        Show the window (False: build it hidden, e.g. for scripts and tests).
    block
        Run the Qt event loop until the window closes (for scripts; the CLI does).

    Returns
    -------
    LandmarkPicker
        The viewer, its panel and the :class:`LandmarkSession` (``.session``) with the points,
        the fit (``.session.fit``), the registration run (``.session.registration``).
    """
    napari = _require_napari()
    from spatialfuse.reg import read_landmarks

    moving_name, fixed_name = names or ("moving", "fixed")
    moving_image = _registration_image(data, msi_image=msi_image, channel="auto")
    fixed_image = _registration_image(reference, msi_image="auto", channel=channel)
    session = LandmarkSession(
        data,
        reference,
        moving_image=moving_image,
        fixed_image=fixed_image,
        model=model,
        register_options=register_options,
    )
    if landmarks is not None:
        if isinstance(landmarks, (str, os.PathLike)):
            landmarks = read_landmarks(landmarks)
        session.set_points(*landmarks)
    if viewer is None:
        viewer = napari.Viewer(title="spatialfuse: pick landmarks", show=show)
        viewer.window.resize(*WINDOW_SIZE)
    picker = LandmarkPicker(
        session,
        viewer=viewer,
        moving_pictures=_display_pictures(data, moving_image, display_size),
        fixed_pictures=_display_pictures(reference, fixed_image, display_size),
        moving_name=moving_name,
        fixed_name=fixed_name,
        landmarks_path=None if landmarks_path is None else Path(landmarks_path),
        transform_path=None if transform_path is None else Path(transform_path),
    )
    if block:
        napari.run()
    return picker
