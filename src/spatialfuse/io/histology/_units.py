"""Pixel sizes in micrometres from a file's metadata: length units and the calibration found.

A calibration is a pixel size ``(x, y)`` in µm at level 0 with the place it came from (OME
``PhysicalSizeX/Y`` with its unit, Aperio ``MPP``, TIFF resolution tags, PNG ``pHYs``, JPEG
density). Densities below 1000 dpi are display defaults, not calibrations, and are ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spatialfuse.errors import CalibrationError

PixelSizeSource = Literal[
    "argument", "ome", "tiff_resolution", "aperio_mpp", "png_phys", "jpeg_density"
]

#: Pixel sizes derived from dots-per-inch style metadata (TIFF resolution tags, PNG pHYs, JPEG
#: density) coarser than this (i.e. below 1000 dpi) are display defaults such as 72 or 96 dpi
#: (352.8 / 264.6 µm per pixel), not microscope calibrations, and are ignored with a warning.
MAX_DENSITY_PIXEL_SIZE_UM = 25.4

_SOURCE_WORDS = {
    "argument": "the pixel_size_um argument",
    "ome": "OME-XML PhysicalSizeX/Y",
    "tiff_resolution": "TIFF XResolution/YResolution",
    "aperio_mpp": "Aperio MPP",
    "png_phys": "PNG pHYs chunk",
    "jpeg_density": "JPEG JFIF density",
    "unknown": "nowhere (unknown: a nominal 1 µm until registration estimates it)",
    "estimated": "registration's estimate",
}

# Lengths in micrometres, for OME ``PhysicalSize*Unit`` (UnitsLength) and ImageJ ``unit=``.
_UNIT_UM: dict[str, float] = {
    "ym": 1e-18,
    "zm": 1e-15,
    "am": 1e-12,
    "fm": 1e-9,
    "pm": 1e-6,
    "Å": 1e-4,
    "\u212b": 1e-4,  # ANGSTROM SIGN
    "nm": 1e-3,
    "µm": 1.0,  # MICRO SIGN
    "\u03bcm": 1.0,  # GREEK SMALL LETTER MU
    "um": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "dm": 1e5,
    "m": 1e6,
    "dam": 1e7,
    "hm": 1e8,
    "km": 1e9,
    "Mm": 1e12,
    "Gm": 1e15,
    "Tm": 1e18,
    "Pm": 1e21,
    "Em": 1e24,
    "Zm": 1e27,
    "Ym": 1e30,
    "thou": 25.4,
    "li": 25400.0 / 12.0,
    "in": 25400.0,
    "ft": 304800.0,
    "yd": 914400.0,
    "mi": 1609344000.0,
    "pt": 25400.0 / 72.0,
}
_UNIT_WORDS_UM: dict[str, float] = {
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micrometers": 1.0,
    "micrometres": 1.0,
    "\\u00b5m": 1.0,  # ImageJ writes the micro sign escaped
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "nanometers": 1e-3,
    "nanometres": 1e-3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "millimeters": 1e3,
    "millimetres": 1e3,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "meter": 1e6,
    "metre": 1e6,
    "inch": 25400.0,
    "inches": 25400.0,
}
# TIFF ResolutionUnit: 2 inch, 3 centimetre; 4 and 5 are tifffile's millimetre/micrometre.
_RESUNIT_UM = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
_RESUNIT_WORDS = {2: "inch", 3: "cm", 4: "mm", 5: "µm"}


def _unit_um(unit: str) -> float | None:
    unit = unit.strip()
    if unit in _UNIT_UM:
        return _UNIT_UM[unit]
    return _UNIT_WORDS_UM.get(unit.lower())


class _Calibration:
    """A pixel size found in a file, or the reasons none was found."""

    def __init__(self) -> None:
        self.size: tuple[float, float] | None = None
        self.source: str | None = None
        self.ignored: list[str] = []

    def offer(self, sx: float, sy: float, source: str, what: str, *, density: bool) -> bool:
        """Accept ``(sx, sy)`` µm from ``source`` unless it is invalid or a display default."""
        if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
            self.ignored.append(f"{what} gives an invalid pixel size ({sx!r}, {sy!r}) µm")
            return False
        if density and max(sx, sy) > MAX_DENSITY_PIXEL_SIZE_UM:
            self.ignored.append(
                f"{what} = {_fmt(sx)} × {_fmt(sy)} µm per pixel was ignored: a density below "
                f"1000 dpi (pixels > {MAX_DENSITY_PIXEL_SIZE_UM} µm) is a display default such "
                "as 72 or 96 dpi, not a microscope calibration"
            )
            return False
        self.size = (float(sx), float(sy))
        self.source = source
        return True


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _validate_pixel_size_arg(value: Any, path: Path) -> tuple[float, float]:
    hint = "pixel_size_um must be a positive finite number of µm or an (x, y) pair of them"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(path, f"{hint}, got {value!r}") from exc
    if isinstance(value, bool) or arr.ndim > 1 or arr.size not in (1, 2):
        raise CalibrationError(path, f"{hint}, got {value!r}")
    pair = np.broadcast_to(arr.ravel(), (2,)) if arr.size == 1 else arr.ravel()
    if not (np.all(np.isfinite(pair)) and np.all(pair > 0)):
        raise CalibrationError(path, f"{hint}, got {value!r}")
    return float(pair[0]), float(pair[1])


def _resolution_value(tag: Any) -> float | None:
    """Return a TIFF RATIONAL (num, den) or number as float, None if unusable."""
    if tag is None:
        return None
    value = tag.value
    try:
        if isinstance(value, tuple | list):
            if len(value) < 2 or float(value[1]) == 0:
                return None
            return float(value[0]) / float(value[1])
        return float(value)
    except (TypeError, ValueError):
        return None
