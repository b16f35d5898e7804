"""Draw ``docs/_static/spatialdata.png``: the demo run's SpatialData store, by spatialdata-plot.

    python docs/make_spatialdata_figure.py [DEMO_DIR]   # default: a temporary folder

Runs ``spatialfuse demo --out DEMO_DIR -q`` (about a minute; a re-run reuses its cached steps),
opens ``DEMO_DIR/results/spatialdata.zarr`` with ``spatialdata.read_zarr`` and draws it in the
``global`` coordinate system with spatialdata-plot, with no other code in between: the H&E with
the Visium spots coloured by the joint clusters, the MSI image (total ion count) under the spot
outlines, and the Visium H&E under the MSI pixels (labels) coloured by an ion from the ``msi``
table. Needs spatialdata-plot (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path


def draw(store: Path, out: Path) -> Path:
    """Draw the three panels of ``store`` into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spatialdata as sd
    import spatialdata_plot  # noqa: F401  (registers the .pl accessor)
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sd.read_zarr(store)
        ion = sdata.attrs["spatialfuse"]["msi_image_channels"][1]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
        show = {"coordinate_systems": "global"}
        (
            sdata.pl.render_images("he")
            .pl.render_shapes("visium_spots", color="joint")
            .pl.show(**show, ax=axes[0], title="H&E, spots by joint cluster")
        )
        spots = {"fill_alpha": 0.0, "outline_alpha": 0.8, "outline_color": "white"}
        (
            sdata.pl.render_images("msi_image", channel="TIC", cmap="magma")
            .pl.render_shapes("visium_spots", **spots)
            .pl.show(**show, ax=axes[1], title="MSI total ion count, spot outlines")
        )
        (
            sdata.pl.render_images("visium_he")
            .pl.render_labels("msi_pixels", color=ion, fill_alpha=0.6, table_name="msi")
            .pl.show(**show, ax=axes[2], title=f"Visium H&E, MSI pixels by {ion}")
        )
    for ax in axes:
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    fig.subplots_adjust(left=0.05, right=0.97, wspace=0.45)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=72)
    plt.close(fig)
    # 256 colours: a third of the bytes, no visible difference at this size
    Image.open(buffer).convert("RGB").quantize(256).save(out, optimize=True)
    return out


def main(demo_dir: Path | None = None) -> Path:
    """Run the demo into ``demo_dir`` (a temporary folder if None) and draw its store."""
    out = Path(__file__).parent / "_static" / "spatialdata.png"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(demo_dir) if demo_dir is not None else Path(tmp) / "demo"
        subprocess.run(["spatialfuse", "demo", "--out", str(folder), "-q"], check=True)
        return draw(folder / "results" / "spatialdata.zarr", out)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
