"""Screenshot the landmark picker for the docs: ``docs/_static/landmark_picker.png``.

Needs the napari extra and a display (on a headless machine, Xvfb)::

    pip install -e ".[napari]"
    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_picker_screenshot.py [OUT.png]

It writes a small synthetic trio, opens ``sf.pl.pick_landmarks`` on its MSI and H&E, places six
pairs as a user would click them (the true positions plus a few µm of hand jitter), and saves the
whole window (images, overlay, panel) as an indexed-colour PNG. Unlike ``make_figures.py`` it is
not run at build time (the docs build needs neither napari nor a display); the PNG is committed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

#: Width of the committed PNG (pixels) and its colours (indexed PNG: a small file).
WIDTH, COLOURS = 1200, 256


def main(out: Path) -> Path:
    """Write the screenshot to ``out``."""
    import tempfile

    from PIL import Image
    from qtpy.QtWidgets import QApplication

    import spatialfuse as sf

    folder = Path(tempfile.mkdtemp(prefix="picker_shot_"))
    trio = sf.datasets.synthetic_trio(
        folder / "trio",
        seed=5,
        tissue_size_um=(2000.0, 1600.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=60,
        write_he_serial=False,
    )
    msi, he = sf.io.read_imzml(trio.msi), sf.io.read_histology(trio.he)
    picker = sf.pl.pick_landmarks(msi, he, names=("MSI", "H&E"))
    rng = np.random.default_rng(2)
    tissue = picker.session.moving_image.centres_um(mask_only=True)
    moving = tissue[rng.choice(len(tissue), 6, replace=False)]
    fixed = trio.msi_to_he.apply(moving) + rng.normal(0.0, 8.0, (6, 2))
    for m, f in zip(moving, fixed, strict=True):
        picker.moving_layer.add(m[::-1][None])  # as a click in add mode does; (row, col)
        picker.fixed_layer.add(f[::-1][None])
    for _ in range(2):  # let Qt lay out the dock, then fit both images into the canvas
        for _ in range(25):
            QApplication.processEvents()
            time.sleep(0.02)
        picker.viewer.reset_view()
    shot = picker.viewer.screenshot(canvas_only=False, flash=False)
    picker.close()
    image = Image.fromarray(shot[..., :3])
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(COLOURS).save(out, optimize=True)
    return out


if __name__ == "__main__":
    target = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).with_name("_static") / "landmark_picker.png"
    )
    written = main(target)
    print(f"{written} ({written.stat().st_size // 1024} KiB)")
