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


def overlap_metrics(mov: RegistrationImage, fix: RegistrationImage, transform: Transform) -> dict:
    """Where ``transform`` puts the moving tissue mask, in one pass over its pixels.

    Returns
    -------
    dict
        ``moving_tissue_inside``: the fraction of the moving tissue inside the fixed image (NaN
        for an empty mask). ``tissue_cut_at_edge``, only where some lands outside (and the fixed
        image has tissue): of that part, the fraction whose nearest point on the image's edge
        shows fixed tissue (within :data:`EDGE_TOLERANCE_PX`): about 1 for a crop (the fixed
        tissue runs into the edge where the moving tissue leaves), about 0 where the moving
        tissue crosses an edge of bare glass. Left out rather than NaN, so that metrics compare
        equal between identical runs.
    """
    points = transform.apply(mov.centres_um(mask_only=True))
    if len(points) == 0:
        return {"moving_tissue_inside": float("nan")}
    step = np.asarray(fix.pixel_size_um, dtype=np.float64)
    low = np.asarray(fix.origin_um, dtype=np.float64)
    high = low + step * np.array([fix.shape[1], fix.shape[0]])
    inside = np.all((points >= low) & (points <= high), axis=1)
    metrics = {"moving_tissue_inside": float(inside.mean())}
    if inside.all() or not fix.mask.any():
        return metrics
    from scipy import ndimage

    at_edge = np.clip(points[~inside], low + 0.5 * step, high - 0.5 * step)
    cols, rows = ((at_edge - low) / step).astype(int).T
    near = ndimage.binary_dilation(fix.mask, iterations=EDGE_TOLERANCE_PX)
    rows = np.clip(rows, 0, fix.shape[0] - 1)
    cols = np.clip(cols, 0, fix.shape[1] - 1)
    metrics["tissue_cut_at_edge"] = float(near[rows, cols].mean())
    return metrics
