"""Reading back what squidpy drew: the spot discs of an axes."""

from __future__ import annotations

import numpy as np


def drawn_patches(ax):
    """The PatchCollection squidpy drew the spots with (exactly one per axes)."""
    from matplotlib.collections import PatchCollection

    found = [c for c in ax.collections if isinstance(c, PatchCollection)]
    assert len(found) == 1, ax.collections
    return found[0]


def patch_centres(collection) -> np.ndarray:
    """Centres of the drawn discs (of their bounding boxes), in data coordinates."""
    boxes = [path.get_extents() for path in collection.get_paths()]
    return np.array([[(b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2] for b in boxes])
