"""Visium spot geometry: the capture-spot constants, the spot centres and µm per full-res pixel."""

from __future__ import annotations

import math

import numpy as np

from spatialfuse.core.adata import check_adata
from spatialfuse.errors import CalibrationError

#: Centre-to-centre distance of neighbouring Visium spots (µm).
SPOT_PITCH_UM = 100.0
#: Diameter of a Visium capture spot (µm).
SPOT_DIAMETER_UM = 55.0


def spot_centres(visium, name: str = "visium") -> np.ndarray:
    """Spot centres ``(x, y)`` in µm of a Visium AnnData (``obsm["spatial_um"]``), checked."""
    check_adata(visium, name, reader="read_visium", need_x=False)
    if "spatial_um" not in visium.obsm:
        raise ValueError(
            f"{name} has no spot centres in µm (obsm['spatial_um'] is missing); read it with "
            "sf.io.read_visium, or set obsm['spatial_um'] = (obsm['spatial'] + 0.5) * um_per_px"
        )
    centres = np.asarray(visium.obsm["spatial_um"], dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"{name}.obsm['spatial_um'] must be (n, 2), got shape {centres.shape}")
    if not np.isfinite(centres).all():
        raise ValueError(f"{name}.obsm['spatial_um'] has non-finite coordinates")
    return centres


def visium_um_per_px(visium, name: str = "visium", *, required: bool = True) -> float | None:
    """µm per full-resolution image pixel of a Visium AnnData, checked.

    The one reading of ``uns["spatialfuse"]["um_per_px"]``, which
    :func:`spatialfuse.io.read_visium` derives from the spot pitch (or ``microns_per_pixel``) and
    records with its source in ``uns["spatialfuse"]["um_per_px_source"]``. A spot at full-res
    pixel coordinate ``c`` is centred at ``(c + ½)·u`` µm (``docs/coordinates.md``).

    Parameters
    ----------
    visium
        A Visium AnnData in the layout of :func:`spatialfuse.io.read_visium`.
    name
        The name error messages give ``visium``.
    required
        Whether a missing value is an error; if false, ``visium`` may be any object and None
        means it records none (e.g. a figure then draws no scale bar). A value that is there but
        not a positive finite number is refused either way.

    Returns
    -------
    float or None
        µm per full-resolution pixel (positive, finite); None only when not ``required``.

    Raises
    ------
    TypeError
        ``visium`` is not an AnnData (when ``required``).
    spatialfuse.errors.CalibrationError
        The value is missing (when ``required``), not a number, not positive or not finite.
    """
    if required:
        check_adata(visium, name, reader="read_visium", need_x=False)
    info = (getattr(visium, "uns", None) or {}).get("spatialfuse", None)
    value = info.get("um_per_px", None) if isinstance(info, dict) else None
    if value is None and not required:
        return None
    if value is None:
        raise CalibrationError(
            None,
            f"{name} has no µm per full-resolution pixel: uns['spatialfuse']['um_per_px'] is "
            "missing. Read the data with sf.io.read_visium, or set "
            f"{name}.uns['spatialfuse']['um_per_px'] (e.g. 100 µm / the spot pitch in pixels)",
        )
    try:
        um = float(value)
    except (TypeError, ValueError):
        um = float("nan")
    if not (math.isfinite(um) and um > 0):
        raise CalibrationError(
            None,
            f"{name}: uns['spatialfuse']['um_per_px'] must be a positive, finite number of µm "
            f"per full-resolution pixel, got {value!r}",
        )
    return um
