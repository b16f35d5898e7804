"""Draw the figures of the documentation (run by ``conf.py`` at build time, offline).

    python docs/make_figures.py [OUT_DIR]      # default: docs/_static

``frames.png``: the pixel-centre convention of one frame, and a moving frame (MSI, mirrored and
rotated) mapped into a reference frame (H&E) by a :class:`spatialfuse.reg.Transform`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _pixel_grid(ax) -> None:
    """Left panel: a 4 × 3 MSI grid of 100 µm pixels, origin at the outer top-left corner."""
    from matplotlib.patches import Rectangle

    size = 100.0
    for col in range(4):
        for row in range(3):
            ax.add_patch(
                Rectangle(
                    (col * size, row * size), size, size, fill=False, lw=1, ec="0.4"
                )
            )
            ax.plot((col + 0.5) * size, (row + 0.5) * size, "o", ms=4, color="C0")
    ax.annotate("origin (0, 0) µm", (0, 0), (60, -70), arrowprops={"arrowstyle": "->"}, fontsize=8)
    ax.annotate(
        "imzML position (1, 1)\ncentre (50, 50) µm",
        (50, 50),
        (420, 170),
        arrowprops={"arrowstyle": "->"},
        fontsize=8,
    )
    ax.annotate("", (430, -20), (0, -20), arrowprops={"arrowstyle": "->", "color": "k"})
    ax.text(440, -20, "x (column)", va="center", fontsize=8)
    ax.annotate("", (-20, 330), (-20, 0), arrowprops={"arrowstyle": "->", "color": "k"})
    ax.text(-20, 345, "y (row)", ha="center", va="top", fontsize=8)
    ax.set_xlim(-60, 560)
    ax.set_ylim(400, -110)
    ax.set_aspect("equal")
    ax.set_title("one frame: µm, (x, y) = (column, row),\npositions are pixel centres", fontsize=9)
    ax.axis("off")


def _two_frames(ax) -> None:
    """Right panel: an L-shaped tissue in the MSI frame and the same tissue in the H&E frame."""
    shape = np.array([[0, 0], [3, 0], [3, 1], [1, 1], [1, 3], [0, 3], [0, 0]], dtype=float) * 60
    theta = np.deg2rad(30)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    mirror = np.array([[-1.0, 0.0], [0.0, 1.0]])
    matrix = rotation @ mirror
    offset = np.array([620.0, 120.0])
    moved = shape @ matrix.T + offset
    ax.plot(shape[:, 0] + 20, shape[:, 1] + 20, color="C1", lw=2)
    ax.text(20, -20, "MSI frame (moving), µm", color="C1", fontsize=8)
    ax.plot(moved[:, 0], moved[:, 1], color="C2", lw=2)
    ax.text(420, -20, "H&E frame (reference), µm", color="C2", fontsize=8)
    ax.annotate(
        "",
        (430, 150),
        (220, 150),
        arrowprops={"arrowstyle": "->", "color": "C0", "lw": 2},
    )
    ax.text(325, 135, "transform.apply(points)\nmoving → reference", ha="center", fontsize=8)
    ax.annotate(
        "",
        (220, 250),
        (430, 250),
        arrowprops={"arrowstyle": "->", "color": "0.5", "lw": 2, "ls": "--"},
    )
    ax.text(
        325,
        265,
        "transform.inverse()\nreference → moving\n(resampling; ITK's direction)",
        ha="center",
        va="top",
        fontsize=8,
    )
    ax.set_xlim(-20, 800)
    ax.set_ylim(420, -60)
    ax.set_aspect("equal")
    ax.set_title("two frames: a Transform maps moving µm to reference µm", fontsize=9)
    ax.axis("off")


def main(out_dir: Path) -> list[Path]:
    """Write the figures into ``out_dir`` and return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.4]})
    _pixel_grid(axes[0])
    _two_frames(axes[1])
    fig.tight_layout()
    path = out_dir / "frames.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "_static"
    print(*main(target), sep="\n")
