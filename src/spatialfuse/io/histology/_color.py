"""Raw samples of a file as the returned channels: alpha composited on white, 1-bit as 0/255.

Colour channels keep the file's dtype; an alpha channel is composited on white (the background
of a slide scan), so transparent pixels read as white and opaque pixels keep their exact values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


class _Color:
    """How the raw samples of a file become the returned channels."""

    def __init__(
        self,
        n_raw: int,
        n_out: int,
        alpha: Literal["assoc", "unassoc"] | None,
        *,
        invert: bool = False,
    ):
        self.n_raw = n_raw
        self.n_out = n_out
        self.alpha = alpha  # index n_out of the raw channels when not None
        self.invert = invert  # TIFF MINISWHITE: 0 is white

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Turn a raw ``(h, w, n_raw)`` block into ``(h, w, n_out)`` in the output dtype."""
        if raw.dtype == np.bool_:
            raw = _bilevel_as_uint8(raw)
        color = raw[..., : self.n_out]
        if self.invert:
            color = np.iinfo(raw.dtype).max - color
        if self.alpha is None or raw.shape[2] <= self.n_out:
            return np.ascontiguousarray(color)
        alpha = raw[..., self.n_out]
        if raw.dtype.kind in "ui":
            white = float(np.iinfo(raw.dtype).max)
        else:
            white = 1.0
        if alpha.size == 0 or np.all(alpha == white):
            return np.ascontiguousarray(color)
        a = np.clip(alpha.astype(np.float64) / white, 0.0, 1.0)[..., None]
        if self.alpha == "assoc":  # premultiplied
            out = color.astype(np.float64) + white * (1.0 - a)
        else:
            out = color.astype(np.float64) * a + white * (1.0 - a)
        return _cast(out, raw.dtype)


def _bilevel_as_uint8(values: np.ndarray) -> np.ndarray:
    """1-bit pixels as 0/255 ``uint8``, read from their bytes.

    A decoder may leave bytes other than 0 and 1 in a bool array; arithmetic on those wraps.
    """
    return np.where(values.view(np.uint8) != 0, np.uint8(255), np.uint8(0))


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)
