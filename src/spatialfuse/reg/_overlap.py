"""Where a result puts the moving tissue relative to the fixed image: inside it, and at its edges.

A partial overlap is normal (an optical image cropped inside the MSI region), but a crop has a
signature: where the moving tissue leaves the fixed image, the fixed image's tissue is cut by its
edge there too. A result that lays the moving tissue across an edge where the fixed image shows
glass contradicts the images (a wrong place, or another tissue), however well the part inside
matches.
"""

from __future__ import annotations

import numpy as np

from spatialfuse.core.transforms import Transform
from spatialfuse.reg._images import RegistrationImage

#: How far (working pixels) from where the moving tissue crosses the edge the fixed tissue may
#: end: masks are smoothed and real crop edges are not straight.
EDGE_TOLERANCE_PX = 3


def _bounds(fix: RegistrationImage) -> tuple[np.ndarray, np.ndarray]:
    low = np.asarray(fix.origin_um, dtype=np.float64)
    size = np.array([fix.shape[1] * fix.pixel_size_um[0], fix.shape[0] * fix.pixel_size_um[1]])
    return low, low + size


def moving_tissue_inside(
    mov: RegistrationImage, fix: RegistrationImage, transform: Transform
) -> float:
    """Fraction of the moving tissue mask that ``transform`` puts inside the fixed image."""
    points = transform.apply(mov.centres_um(mask_only=True))
    if len(points) == 0:
        return float("nan")
    low, high = _bounds(fix)
    return float(np.all((points >= low) & (points <= high), axis=1).mean())


def tissue_cut_at_edge(
    mov: RegistrationImage, fix: RegistrationImage, transform: Transform
) -> float:
    """Where the moving tissue leaves the fixed image, how much of it leaves through tissue.

    Of the moving tissue that lands outside the fixed image, the fraction whose nearest point on
    the image's edge shows fixed tissue (within :data:`EDGE_TOLERANCE_PX`).

    About 1 for a crop (the fixed tissue runs into the edge where the moving tissue leaves the
    image), about 0 where the moving tissue crosses an edge of bare glass; NaN when no moving
    tissue lands outside.
    """
    points = transform.apply(mov.centres_um(mask_only=True))
    low, high = _bounds(fix)
    outside = ~np.all((points >= low) & (points <= high), axis=1)
    if not outside.any() or not fix.mask.any():
        return float("nan")
    from scipy import ndimage

    step = np.asarray(fix.pixel_size_um, dtype=np.float64)
    at_edge = np.clip(points[outside], low + 0.5 * step, high - 0.5 * step)
    cols, rows = ((at_edge - low) / step).astype(int).T
    near = ndimage.binary_dilation(fix.mask, iterations=EDGE_TOLERANCE_PX)
    rows = np.clip(rows, 0, fix.shape[0] - 1)
    cols = np.clip(cols, 0, fix.shape[1] - 1)
    return float(near[rows, cols].mean())


def edge_metrics(mov: RegistrationImage, fix: RegistrationImage, transform: Transform) -> dict:
    """``{"tissue_cut_at_edge": value}`` where some moving tissue lands outside, else ``{}``.

    Left out rather than NaN, so that metrics compare equal between identical runs.
    """
    value = tissue_cut_at_edge(mov, fix, transform)
    return {"tissue_cut_at_edge": value} if np.isfinite(value) else {}
