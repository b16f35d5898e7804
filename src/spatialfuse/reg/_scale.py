"""Wrong or missing pixel sizes: which side's scale registration estimates, and a first guess.

Both frames are in µm, so a right registration scales by about 1 — when both pixel sizes are
right. Real files are not always: TIFFs carry display densities (150 dpi = 169 µm per pixel),
OME metadata can say 0.17 µm on a 2× scan, a histology crop may have none. Registration then
estimates the relative scale in its search instead of failing:

- ``scale="given"``: trust both pixel sizes (the result must scale by about 1);
- ``scale="estimate"``: estimate the optical side's pixel size (the fixed one if neither side is
  optical);
- ``scale="auto"`` (default): estimate where a pixel size is unknown (``read_histology(...,
  pixel_size_um="auto")`` on a file without calibration) or implausible: where the two tissue
  areas, measured in the frames as given, differ by more than :data:`IMPLAUSIBLE_FACTOR` in
  linear size (a partial overlap changes areas too, but not by that much).

The first guess of the estimated side's scale makes the tissue areas equal; the start search then
tries factors around it (:data:`SEARCH_FACTORS`), since the MSI may cover part of the tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spatialfuse.reg._images import RegistrationImage

MODES = ("auto", "given", "estimate")
#: Linear size ratio of the tissue areas beyond which given pixel sizes are not trusted.
IMPLAUSIBLE_FACTOR = 3.0
#: Scale factors (relative to the first guess) the start search tries when estimating.
SEARCH_FACTORS = (0.7, 0.85, 1.0, 1.18, 1.4)
#: Long side (pixels) of the quick images that measure the tissue areas.
PROBE_SIDE_PX = 256


@dataclass
class ScalePlan:
    """Which input's pixel size registration estimates (``side``), and the first guess.

    ``factor`` multiplies that side's pixel size (and frame) before the search; ``reason`` says
    why in words; ``nominal_um`` is that side's pixel size as given.
    """

    side: str | None
    factor: float = 1.0
    reason: str = ""
    nominal_um: tuple[float, float] | None = None

    @property
    def estimating(self) -> bool:
        """Whether a pixel size is estimated."""
        return self.side is not None


def _is_optical(obj) -> bool:
    if isinstance(obj, RegistrationImage):
        return obj.modality not in ("msi", "visium")
    return hasattr(obj, "downsampled") and hasattr(obj, "extent_um")


def _unknown(obj) -> bool:
    return getattr(obj, "pixel_size_source", None) == "unknown"


def pixel_size_of(obj) -> tuple[float, float] | None:
    """The pixel size (µm) of an input as given, where it has one."""
    if isinstance(obj, RegistrationImage):
        return tuple(float(v) for v in obj.pixel_size_um)
    size = getattr(obj, "pixel_size_um", None)
    return None if size is None else (float(size[0]), float(size[1]))


def check_mode(mode: str) -> None:
    """Raise :class:`ValueError` unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"scale must be one of {MODES}, got {mode!r}")


def plan(moving, fixed, mode: str, probe) -> ScalePlan:
    """Decide which side's pixel size to estimate and the first guess of its factor.

    ``probe(obj)`` returns a quick :class:`RegistrationImage` of an input (its tissue mask in
    the input's frame as given).
    """
    check_mode(mode)
    if mode == "given":
        return ScalePlan(None)
    if _unknown(moving) or _unknown(fixed):
        side = "fixed" if _unknown(fixed) else "moving"
        reason = f"the {side} image has no pixel size calibration"
    elif mode == "estimate":
        side = "moving" if _is_optical(moving) and not _is_optical(fixed) else "fixed"
        reason = "asked to (scale='estimate')"
    else:
        side = None
        reason = ""
    areas = {}
    for role, obj in (("moving", moving), ("fixed", fixed)):
        img = probe(obj)
        areas[role] = float(img.mask.sum()) * img.pixel_size_um[0] * img.pixel_size_um[1]
    if min(areas.values()) <= 0:
        return ScalePlan(side, 1.0, reason, pixel_size_of(moving if side == "moving" else fixed))
    ratio = float(np.sqrt(areas["moving"] / areas["fixed"]))  # fixed → moving linear size
    if side is None:
        if 1 / IMPLAUSIBLE_FACTOR <= ratio <= IMPLAUSIBLE_FACTOR:
            return ScalePlan(None)
        side = "moving" if _is_optical(moving) and not _is_optical(fixed) else "fixed"
        reason = (
            f"the tissue spans {ratio:.3g}× more in the moving frame than in the fixed one: "
            f"a pixel size is implausible"
        )
    factor = ratio if side == "fixed" else 1.0 / ratio
    nominal = pixel_size_of(moving if side == "moving" else fixed)
    return ScalePlan(side, factor, reason, nominal)


def rescaled(obj, factor: float):
    """``obj`` with its pixel size (and frame) multiplied by ``factor``."""
    if factor == 1.0:
        return obj
    if isinstance(obj, RegistrationImage):
        return rescaled_image(obj, factor)
    if hasattr(obj, "with_pixel_size"):
        sx, sy = obj.pixel_size_um
        return obj.with_pixel_size((sx * factor, sy * factor), source="estimated")
    raise TypeError(f"cannot estimate the pixel size of a {type(obj).__name__}")


def rescaled_image(img: RegistrationImage, factor: float) -> RegistrationImage:
    """A registration image whose frame is ``factor`` × larger (pixel size and origin)."""
    extra = dict(img.extra)
    if "optical_density_pixel_um" in extra:
        size = extra["optical_density_pixel_um"]
        extra["optical_density_pixel_um"] = tuple(v * factor for v in size)
    return replace(
        img,
        pixel_size_um=tuple(v * factor for v in img.pixel_size_um),
        origin_um=tuple(v * factor for v in img.origin_um),
        extra=extra,
    )
