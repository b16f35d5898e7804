"""How an image is drawn: a stain in its own colours, an MSI image in a colour map that contrasts.

Every plot that shows an optical image (``sf.pl``, the run report) draws it by the kind of
picture it is, found from the image itself (:func:`stain_kind`):

- **bright field** (H&E, toluidine blue, any absorbing stain on bright glass): in RGB as scanned;
  under an MSI overlay in grey (its luminance), so that the MSI's colour map is the only colour
  on the picture;
- **fluorescence** (emitting tissue on a dark background): on black, each channel in its own
  colour (:data:`FLUORESCENCE_COLOURS`: one channel white, two green and magenta, three red,
  green and blue as stored, more in that cycle), contrast-stretched per channel and added;
- **MSI** (an ion image, a PC, the TIC): :data:`MSI_CMAP` (viridis) on its own grid and over a
  bright-field stain, :data:`MSI_CMAP_ON_FLUORESCENCE` (plasma) over fluorescence, whose lowest
  value is a clear blue on black where viridis's dark purple is lost.

The rules live here, in one place, for ``sf.pl`` and the run report (``spatialfuse.pl.stain``).
The histology reader knows the channels (1 grey, 3 RGB, or a fluorescence channel axis) but not
the stain; registration tells bright from dark backgrounds
(``RegistrationImage.extra["background"]``): :func:`stain_kind` asks the same question of a
small copy of the picture.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

StainKind = Literal["brightfield", "fluorescence"]

#: The MSI's colour map on its own grid and over a bright-field stain (drawn in grey).
MSI_CMAP = "viridis"
#: The MSI's colour map over a fluorescence image (on black).
MSI_CMAP_ON_FLUORESCENCE = "plasma"
#: Colours of fluorescence channels, by the number of channels (more than three: this cycle).
FLUORESCENCE_COLOURS = {
    1: ((1.0, 1.0, 1.0),),
    2: ((0.0, 1.0, 0.0), (1.0, 0.0, 1.0)),
    3: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}
_CYCLE = (
    (0.0, 0.0, 1.0),
    (0.0, 1.0, 0.0),
    (1.0, 0.0, 0.0),
    (1.0, 0.0, 1.0),
    (0.0, 1.0, 1.0),
    (1.0, 1.0, 0.0),
)
#: Fluorescence channels are stretched between these percentiles of their values.
FLUORESCENCE_PERCENTILES = (0.5, 99.5)
#: Longest side of the copy :func:`stain_kind` looks at.
_PROBE_SIDE = 256


def channel_colours(n_channels: int) -> tuple[tuple[float, float, float], ...]:
    """The RGB colour (0–1) each of ``n_channels`` fluorescence channels is drawn in."""
    if n_channels in FLUORESCENCE_COLOURS:
        return FLUORESCENCE_COLOURS[n_channels]
    return tuple(_CYCLE[i % len(_CYCLE)] for i in range(n_channels))


def stain_kind(image: np.ndarray, *, background: str | None = None) -> StainKind:
    """``"brightfield"`` or ``"fluorescence"``: whether the tissue absorbs or emits light.

    Parameters
    ----------
    image
        ``(rows, cols)`` or ``(rows, cols, channels)`` values of an optical image.
    background
        What registration found (``RegistrationImage.extra["background"]``): ``"bright"`` or
        ``"dark"`` decide; otherwise the background of a small copy is looked for the same way
        (:class:`spatialfuse.reg.RegistrationImage` ``.from_array``).

    Returns
    -------
    str
        ``"fluorescence"`` where the background is dark, ``"brightfield"`` where it is bright;
        where the tissue fills the picture, by its brightness (below half its range: fluorescence).
    """
    if background == "dark":
        return "fluorescence"
    if background == "bright":
        return "brightfield"
    from spatialfuse.reg import RegistrationImage

    values = _as_unit(np.asarray(image))
    step = max(1, int(np.ceil(max(values.shape[:2]) / _PROBE_SIDE)))
    probe = values[::step, ::step]
    # channels other than RGB: the brightest of them (what emits, if anything does)
    probe = probe if probe.ndim == 3 and probe.shape[2] == 3 else _brightest(probe)
    found = RegistrationImage.from_array(probe, 1.0).extra.get("background")
    if found in ("bright", "dark"):
        return "fluorescence" if found == "dark" else "brightfield"
    return "fluorescence" if float(np.nanmedian(probe)) < 0.5 else "brightfield"


def stain_picture(image: np.ndarray, kind: StainKind) -> np.ndarray:
    """``(rows, cols, 3)`` RGB in 0–1 of an optical image, drawn as its ``kind`` is.

    Bright field: the RGB as stored (one channel: grey), scaled by its type's range.
    Fluorescence: each channel stretched between :data:`FLUORESCENCE_PERCENTILES` of its values,
    in its colour (:func:`channel_colours`), added and clipped (on black).
    """
    values = np.asarray(image)
    if values.ndim == 2:
        values = values[..., None]
    if kind == "brightfield":
        unit = _as_unit(values)
        return np.clip(unit[..., :3] if unit.shape[2] >= 3 else np.repeat(unit, 3, axis=2), 0, 1)
    out = np.zeros((*values.shape[:2], 3))
    for c, colour in enumerate(channel_colours(values.shape[2])):
        out += _stretched(values[..., c].astype(np.float64))[..., None] * np.asarray(colour)
    return np.clip(out, 0.0, 1.0)


def under_overlay(image: np.ndarray, kind: StainKind) -> np.ndarray:
    """The picture an MSI overlay is drawn over: a bright-field stain in grey, fluorescence as is.

    Returns ``(rows, cols, 3)`` RGB in 0–1 (grey: the Rec. 709 luminance in all three).
    """
    picture = stain_picture(image, kind)
    if kind == "brightfield":
        grey = picture @ np.array([0.2126, 0.7152, 0.0722])
        return np.repeat(grey[..., None], 3, axis=2)
    return picture


def msi_cmap(kind: StainKind | None) -> str:
    """The MSI's colour map over a picture of ``kind`` (None: on its own)."""
    return MSI_CMAP_ON_FLUORESCENCE if kind == "fluorescence" else MSI_CMAP


def stain_words(kind: StainKind) -> str:
    """How a picture of ``kind`` is drawn under an overlay, in words for a title."""
    return "fluorescence on black" if kind == "fluorescence" else "stain in grey"


def _as_unit(values: np.ndarray) -> np.ndarray:
    """Values scaled to 0–1 by their type's range (floats: by 1, or their maximum above 1.5)."""
    if values.dtype.kind in "ui":
        return values.astype(np.float64) / float(np.iinfo(values.dtype).max)
    if values.dtype == np.bool_:
        return values.astype(np.float64)
    out = values.astype(np.float64)
    top = float(np.nanmax(out)) if out.size else 0.0
    return out / top if top > 1.5 else out


def _brightest(values: np.ndarray) -> np.ndarray:
    if values.ndim == 2:
        return values
    stretched = np.stack([_stretched(values[..., c]) for c in range(values.shape[2])], axis=2)
    return stretched.max(axis=2)


def _stretched(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape)
    lo, hi = np.percentile(finite, FLUORESCENCE_PERCENTILES)
    if hi <= lo:
        hi = lo + 1.0 if float(finite.max()) <= lo else float(finite.max())
    return np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
