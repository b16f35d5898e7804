"""Tissue vs background of an optical image, whatever colour the background is.

Real slides are not white: glass is grey, blue-grey or pink (an eosin haze), fluorescence
backgrounds are dark, and tissue can touch every border. The mask is found in two stages:

1. Otsu's threshold on the smoothed brightness splits the image in two; the class whose local
   texture is lower is the background candidate (glass is smooth, tissue is not). Where both
   classes are about as textured, there is no background: the tissue fills the field (an MSI
   region inside the tissue, an image cropped inside it) and every valid pixel is tissue.
2. Tissue is what is darker (bright field: it absorbs) or brighter (fluorescence: it emits) than
   the background's median colour, in any channel, by more than the background's own spread (6
   robust standard deviations, at least a tenth of the range).

Dust and debris (components under 0.2 % of the image) are dropped and pinholes filled. Written
here because scikit-image's thresholds assume a dark-on-white or bright-on-dark contrast and pick
the strongest contrast, which on a stained section is often dark vs pale tissue rather than
tissue vs glass (``docs/failure_detection.md`` shows the masks of the real pairs).
"""

from __future__ import annotations

import numpy as np

#: A background class at least this textured, relative to the tissue class, is not background.
MAX_BACKGROUND_TEXTURE_RATIO = 0.5
#: Components smaller than this fraction of the image are dust or debris, not tissue.
MIN_COMPONENT_FRACTION = 0.002
#: Holes smaller than this fraction of the image are filled.
MAX_HOLE_FRACTION = 0.001


def tissue_mask(image: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Tissue mask of a bright-field (RGB) or fluorescence (single-channel) image.

    Parameters
    ----------
    image
        ``(rows, cols, channels)`` or ``(rows, cols)`` floats, any range.
    valid
        Pixels that carry data (e.g. not transparent); the others are never tissue.

    Returns
    -------
    tuple
        The boolean mask and a dict describing the decision: ``background`` (``"bright"``,
        ``"dark"`` or ``"none"``), ``separation`` (how far the tissue stands out from the
        background, in units of the colour range, 0–1) and the thresholds used.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    values = np.asarray(image, dtype=np.float64)
    colour = values if values.ndim == 3 else values[..., None]
    valid = np.ones(colour.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    span = np.ptp(colour[valid]) if valid.any() else 0.0
    if not valid.any() or span == 0:
        return valid.copy(), {"background": "none", "separation": 0.0}
    colour = colour / span
    smooth = np.stack(
        [ndimage.gaussian_filter(colour[..., c], 2.0) for c in range(colour.shape[2])], axis=2
    )
    brightness = smooth.mean(axis=2)
    raw = colour.mean(axis=2)
    mean = ndimage.uniform_filter(raw, 5)
    texture = np.sqrt(np.maximum(ndimage.uniform_filter(raw**2, 5) - mean**2, 0.0))

    if np.ptp(brightness[valid]) == 0:
        return valid.copy(), {"background": "none", "separation": 0.0}
    threshold = threshold_otsu(brightness[valid])
    bright = (brightness > threshold) & valid
    dark = (brightness <= threshold) & valid
    texture_bright = float(np.median(texture[bright])) if bright.any() else np.inf
    texture_dark = float(np.median(texture[dark])) if dark.any() else np.inf
    background = bright if texture_bright < texture_dark else dark
    tissue_side = dark if background is bright else bright
    ratio = min(texture_bright, texture_dark) / max(max(texture_bright, texture_dark), 1e-12)
    info: dict = {"texture_ratio": float(ratio)}
    if ratio > MAX_BACKGROUND_TEXTURE_RATIO or background.sum() < 0.02 * valid.sum():
        info.update(background="none", separation=0.0)
        return valid.copy(), info

    reference = np.median(smooth[background], axis=0)
    # Stained tissue absorbs light (darker than glass in some colour), fluorescent tissue emits
    # it: only that direction counts, so white padding or composited transparency is not tissue.
    sign = -1.0 if background is bright else 1.0
    distance = np.linalg.norm(np.maximum(sign * (smooth - reference), 0.0), axis=2)
    level = float(np.median(distance[background]))
    spread = float(np.median(np.abs(distance[background] - level))) * 1.4826
    top = float(np.percentile(distance[valid], 99))
    cut = level + max(6.0 * spread, 0.1 * (top - level))
    found = (distance > cut) & valid
    inner = ndimage.binary_erosion(found, iterations=3)
    if inner.any():
        # Edges blur: halfway between the background and the palest tissue (5th percentile,
        # away from the edges) is where a blurred edge crosses the boundary; the low cut alone
        # grows the mask outwards by about the blur.
        pale = float(np.percentile(distance[inner], 5))
        cut = max(cut, 0.5 * (level + pale))
    mask = (distance > cut) & valid
    radius = 1 if min(mask.shape) < 200 else 2
    mask = ndimage.binary_opening(mask, iterations=radius)
    mask = ndimage.binary_closing(mask, iterations=radius)
    mask = _without_small_components(mask, MIN_COMPONENT_FRACTION)
    holes = ndimage.binary_fill_holes(mask) & ~mask
    mask |= holes & ~_without_small_components(holes, MAX_HOLE_FRACTION)
    mask &= valid
    if not mask.any():  # nothing stands out: fall back to the darker/brighter class itself
        mask = tissue_side
    separation = float((np.median(distance[mask]) - level) / max(top, 1e-12)) if mask.any() else 0
    info.update(
        background="bright" if background is bright else "dark",
        separation=max(0.0, min(1.0, separation)),
        threshold=float(cut),
    )
    return mask, info


def _without_small_components(mask: np.ndarray, fraction: float) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    keep = np.concatenate([[False], sizes >= fraction * mask.size])
    return keep[labels]
