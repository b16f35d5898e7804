r"""The demo's SpatialData store in napari-spatialdata: ``docs/_static/napari_spatialdata.png``.

Needs napari-spatialdata and a display (on a headless machine, Xvfb)::

    pip install -e ".[napari]" napari-spatialdata
    xvfb-run -a -s "-screen 0 1600x1000x24" \
        python docs/make_napari_spatialdata_screenshot.py [STORE.zarr] [OUT.png]

Without a store it runs ``spatialfuse demo`` in a temporary folder (~1 min) and opens its
``results/spatialdata.zarr``. The elements are added in the ``global`` coordinate system with
napari-spatialdata's own API (``Interactive.add_element``), the spots coloured by ``joint`` as a
click on "joint" under the View widget's Observations does, and the whole window is saved as an
indexed-colour PNG. Like ``make_picker_screenshot.py`` it is not run at build time; the PNG is
committed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

#: Width of the committed PNG (pixels) and its colours (indexed PNG: a small file).
WIDTH, COLOURS = 1000, 128


def _wait(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def main(store: Path | None, out: Path) -> Path:
    """Write the screenshot of ``store`` (default: a fresh demo run's) to ``out``."""
    import tempfile

    import napari
    import spatialdata as sd
    from napari_spatialdata import Interactive
    from PIL import Image
    from qtpy.QtCore import Qt

    if store is None:
        from spatialfuse.workflow import run_demo

        folder = Path(tempfile.mkdtemp(prefix="napari_sd_shot_"))
        run_demo(folder, show_progress=False)
        store = folder / "results" / "spatialdata.zarr"
    sdata = sd.read_zarr(store)

    viewer = napari.Viewer(show=True)
    interactive = Interactive(sdata, headless=True)
    interactive.switch_coordinate_system("global")
    for name in ("he", "msi_image", "visium_spots"):
        count = len(viewer.layers)
        interactive.add_element(name, "global")  # loads in a worker thread
        deadline = time.monotonic() + 60
        while len(viewer.layers) == count and time.monotonic() < deadline:
            _wait(0.05)
    msi = viewer.layers["msi_image"]
    msi.colormap, msi.opacity = "magma", 0.45
    viewer.layers.selection.active = viewer.layers["visium_spots"]
    _wait()
    view = viewer.window.dock_widgets["View (napari-spatialdata)"]
    view.obs_widget._onAction(["joint"])  # what clicking "joint" under Observations does
    for item in view.obs_widget.findItems("joint", Qt.MatchFlag.MatchExactly):
        item.setSelected(True)
    _wait()
    viewer.reset_view()
    _wait()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    viewer.close()
    image = Image.fromarray(shot[..., :3])
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(COLOURS).save(out, optimize=True)
    return out


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    source = args[0] if args and args[0].suffix == ".zarr" else None
    rest = args[1:] if source is not None else args
    target = rest[0] if rest else Path(__file__).with_name("_static") / "napari_spatialdata.png"
    written = main(source, target)
    print(f"{written} ({written.stat().st_size // 1024} KiB)")
