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
#: Illumination that varies less than this over the background (relative) is left as it is ...
MIN_ILLUMINATION_RANGE = 0.05
#: Pen marks: near-black components (transmittance below this in every channel) ...
INK_MAX_TRANSMITTANCE = 0.15
#: ... or of an absorbance hue this far from the main tissue's are ink, not tissue.
INK_MIN_HUE_DEG = 30.0
#: ... and only where a smooth illumination explains at least this share of the glass's variance.
MIN_ILLUMINATION_EXPLAINED = 0.5
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

    values = np.asarray(image, dtype=np.float64)
    colour = values if values.ndim == 3 else values[..., None]
    valid = np.ones(colour.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    span = np.ptp(colour[valid]) if valid.any() else 0.0
    if not valid.any() or span == 0:
        return valid.copy(), {"background": "none", "separation": 0.0}
    colour = colour / span
    split = _split(colour, valid)
    if split is None:
        return valid.copy(), {"background": "none", "separation": 0.0}
    smooth, background, tissue_side, ratio = split
    info: dict = {"texture_ratio": float(ratio)}
    if ratio > MAX_BACKGROUND_TEXTURE_RATIO or background.sum() < 0.02 * valid.sum():
        info.update(background="none", separation=0.0)
        return valid.copy(), info
    is_bright = _is_brighter(smooth, background, tissue_side)
    flat = _flat_field(colour, background, valid, bright=is_bright)
    if flat is not None:
        # uneven illumination: the split is redone on the flat-fielded image
        colour, info["illumination_range"] = flat
        split = _split(colour, valid)
        if split is None:
            return valid.copy(), {"background": "none", "separation": 0.0}
        smooth, background, tissue_side, ratio = split
        info["texture_ratio"] = float(ratio)
        is_bright = _is_brighter(smooth, background, tissue_side)

    reference = np.median(smooth[background], axis=0)
    # Stained tissue absorbs light (darker than glass in some colour), fluorescent tissue emits
    # it: only that direction counts, so white padding or composited transparency is not tissue.
    sign = -1.0 if is_bright else 1.0
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
    if is_bright and colour.shape[2] >= 3:
        ink = _ink_marks(mask, colour, reference)
        if ink.any():
            mask &= ~ink
            info["ink_fraction"] = float(ink.sum() / max(valid.sum(), 1))
    holes = ndimage.binary_fill_holes(mask) & ~mask
    mask |= holes & ~_without_small_components(holes, MAX_HOLE_FRACTION)
    mask &= valid
    if not mask.any():  # nothing stands out: fall back to the darker/brighter class itself
        mask = tissue_side
    separation = float((np.median(distance[mask]) - level) / max(top, 1e-12)) if mask.any() else 0
    info.update(
        background="bright" if is_bright else "dark",
        separation=max(0.0, min(1.0, separation)),
        threshold=float(cut),
    )
    return mask, info


def _ink_marks(mask: np.ndarray, colour: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """Components of a bright-field mask that are pen marks on the glass, not stained tissue.

    The largest component is taken as tissue. Another component is ink where its colour is one
    no stain on the section has: near black (under ``INK_MAX_TRANSMITTANCE`` of the glass's
    light in every channel, while the tissue transmits more than twice that), or an absorbance
    hue more than ``INK_MIN_HUE_DEG`` from the tissue's (green or black marker beside an H&E or
    toluidine section; separate fragments of real sections differ by at most 12°, see
    ``docs/failure_detection.md``). A fragment stained with a different chromogen (e.g. DAB
    beside hematoxylin) can differ by as much: such slides need the channel given by hand.
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n < 2:
        return np.zeros_like(mask)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum(mask, labels, index)
    transmitted = np.clip(colour / np.maximum(glass, 1e-12), 1e-3, 1.0)
    density = -np.log(transmitted)
    medians = np.stack(
        [ndimage.median(transmitted[..., c], labels, index) for c in range(colour.shape[2])],
        axis=1,
    )
    hues = np.stack(
        [ndimage.median(density[..., c], labels, index) for c in range(colour.shape[2])], axis=1
    )
    hues = hues / np.maximum(np.linalg.norm(hues, axis=1, keepdims=True), 1e-12)
    main = int(np.argmax(sizes))
    angle = np.degrees(np.arccos(np.clip(hues @ hues[main], -1.0, 1.0)))
    black = np.all(medians < INK_MAX_TRANSMITTANCE, axis=1) & (
        medians[main].min() > 2 * INK_MAX_TRANSMITTANCE
    )
    is_ink = (black | (angle > INK_MIN_HUE_DEG)) & (index != main + 1)
    return np.concatenate([[False], is_ink])[labels]


def _split(colour: np.ndarray, valid: np.ndarray):
    """Smoothed colour, the background and tissue candidates (Otsu on brightness), texture ratio.

    None where the brightness is constant over the valid pixels.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = np.stack(
        [ndimage.gaussian_filter(colour[..., c], 2.0) for c in range(colour.shape[2])], axis=2
    )
    brightness = smooth.mean(axis=2)
    raw = colour.mean(axis=2)
    mean = ndimage.uniform_filter(raw, 5)
    texture = np.sqrt(np.maximum(ndimage.uniform_filter(raw**2, 5) - mean**2, 0.0))
    if np.ptp(brightness[valid]) == 0:
        return None
    threshold = threshold_otsu(brightness[valid])
    bright = (brightness > threshold) & valid
    dark = (brightness <= threshold) & valid
    texture_bright = float(np.median(texture[bright])) if bright.any() else np.inf
    texture_dark = float(np.median(texture[dark])) if dark.any() else np.inf
    background, tissue_side = (bright, dark) if texture_bright < texture_dark else (dark, bright)
    ratio = min(texture_bright, texture_dark) / max(max(texture_bright, texture_dark), 1e-12)
    return smooth, background, tissue_side, ratio


def _is_brighter(smooth: np.ndarray, background: np.ndarray, tissue_side: np.ndarray) -> bool:
    """Whether the background is the brighter class (bright field) rather than the darker."""
    if not tissue_side.any():
        return True
    return bool(
        np.median(smooth[background].mean(axis=1)) > np.median(smooth[tissue_side].mean(axis=1))
    )


def _flat_field(colour: np.ndarray, background: np.ndarray, valid: np.ndarray, *, bright: bool):
    """The image corrected for uneven illumination, or None where the illumination is even.

    A quadratic surface per channel is fitted to the background (eroded, so that blurred tissue
    edges do not pull it) and divided out (bright field: transmitted light scales with the
    illumination) or subtracted (fluorescence: the background glow adds). Returns the corrected
    image and the relative range of the fitted illumination over the valid pixels.
    """
    from scipy import ndimage

    core = ndimage.binary_erosion(background, iterations=3)
    if core.sum() < 500:
        core = background
    rows, cols = np.nonzero(core)
    if len(rows) > 20000:
        pick = np.random.default_rng(0).choice(len(rows), 20000, replace=False)
        rows, cols = rows[pick], cols[pick]
    shape = colour.shape[:2]

    def design(r, c):
        y = r / max(shape[0] - 1, 1) - 0.5
        x = c / max(shape[1] - 1, 1) - 0.5
        return np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y])

    samples = colour[rows, cols]
    coef, *_ = np.linalg.lstsq(design(rows, cols), samples, rcond=None)
    fitted = design(rows, cols) @ coef
    explained = 1.0 - np.sum((samples - fitted) ** 2) / max(
        float(np.sum((samples - samples.mean(axis=0)) ** 2)), 1e-12
    )
    # never extrapolate beyond the illumination seen on the background itself
    low, high = fitted.min(axis=0), fitted.max(axis=0)
    level = np.median(fitted, axis=0)
    if bright:
        if np.any(low <= 0.05 * np.maximum(level, 1e-12)):
            return None  # no sensible illumination model
        spread = float(np.max((high - low) / level))
    else:
        spread = float(np.max(high - low) / max(float(np.ptp(colour[valid])), 1e-12))
    if spread < MIN_ILLUMINATION_RANGE or explained < MIN_ILLUMINATION_EXPLAINED:
        return None
    grid_rows, grid_cols = np.mgrid[: shape[0], : shape[1]]
    surface = (design(grid_rows.ravel(), grid_cols.ravel()) @ coef).reshape(colour.shape)
    surface = np.clip(surface, low, high)
    if bright:
        corrected = colour * (level / surface)
    else:
        corrected = colour - (surface - level)
    return corrected, spread


def _without_small_components(mask: np.ndarray, fraction: float) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    keep = np.concatenate([[False], sizes >= fraction * mask.size])
    return keep[labels]
