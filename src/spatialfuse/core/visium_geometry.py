"""Visium spot geometry: the capture-spot constants and the spot centres of an AnnData in µm."""

from __future__ import annotations

import numpy as np

from spatialfuse.core.adata import check_adata

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
