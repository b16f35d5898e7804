"""Visium calibration: scale factors, the grid pitch and µm per full-resolution pixel.

µm per full-res pixel comes from ``microns_per_pixel`` where Space Ranger writes it (Visium HD),
else from the grid pitch (100 µm between Visium spot centres, ``bin_size_um`` between HD bins)
divided by the median nearest-neighbour distance of the spot centres in full-res pixels.
``spot_diameter_fullres`` is never used for calibration: on real data it is 60-65 µm wide, not
55 µm. The full-resolution image extent is the hires (else lowres) image size over its scale
factor.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._limits import require_regular_file
from spatialfuse._logging import logger
from spatialfuse.errors import CalibrationError, FileFormatError
from spatialfuse.io._visium_layout import SCALEFACTORS_FILE, _image_file

if TYPE_CHECKING:
    import anndata

_NUMERIC_SCALEFACTORS = (
    "tissue_hires_scalef",
    "tissue_lowres_scalef",
    "spot_diameter_fullres",
    "fiducial_diameter_fullres",
    "regist_target_img_scalef",
    "bin_size_um",
    "microns_per_pixel",
)
# Spots used for the nearest-neighbour pitch; only Visium HD bin grids are ever larger.
_PITCH_MAX_POINTS = 200_000
# µm per full-res pixel outside this range is almost certainly a calibration problem.
_PLAUSIBLE_UM_PER_PX = (0.05, 20.0)
# Relative disagreement between microns_per_pixel and the grid pitch that earns a warning.
_PITCH_TOLERANCE = 0.05
# A full-resolution image extent beyond this (pixels per side) comes from a broken scale factor.
_MAX_FULLRES_PX = 2**31


def _read_scalefactors(spatial_dir: Path, notes: list[str]) -> tuple[dict[str, Any], Path | None]:
    file = spatial_dir / SCALEFACTORS_FILE
    if file.exists() and not file.is_file():
        require_regular_file(file, "scale factors file")  # a FIFO or folder: refused, not missing
    if not file.is_file():
        return {}, None
    try:
        raw = json.loads(file.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(file, f"not valid JSON ({exc})") from exc
    except RecursionError:  # the json module parses nested arrays and objects recursively
        raise FileFormatError(file, "not usable JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise FileFormatError(file, f"expected a JSON object, found {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NUMERIC_SCALEFACTORS:
            if value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
                raise FileFormatError(file, f"{key} is {value!r}, expected a positive number")
            out[key] = number
        elif isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            logger.debug("%s: ignoring non-scalar key %s", file, key)
    return out, file


def _grid_pitch_px(xy: np.ndarray, rc: np.ndarray, *, square: bool) -> float:
    """Median nearest-neighbour distance of spot centres, in full-res px per grid step.

    Each spot's nearest-neighbour distance is divided by the distance of the two spots on the array
    grid in pitch units (1 for adjacent spots): on a complete grid this is the plain median
    nearest-neighbour distance; on a sparse subset of spots it still measures one grid pitch.
    ``rc`` holds ``(array_row, array_col)``: on the Visium hexagonal grid neighbours along a row are
    2 columns apart and rows are sqrt(3)/2 pitch apart; Visium HD bins form a square grid.
    """
    from scipy.spatial import cKDTree

    n = len(xy)
    if n > _PITCH_MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(n, _PITCH_MAX_POINTS, replace=False))
        xy, rc = xy[keep], rc[keep]
    if len(xy) < 2:
        return math.nan
    dist, idx = cKDTree(xy).query(xy, k=2)
    d = dist[:, 1]
    # A spot whose distances overflow (coordinates like 1e300) has no neighbour: index len(xy).
    neighbour = np.minimum(idx[:, 1], len(xy) - 1)
    step = np.abs(rc - rc[neighbour]).astype(np.float64)
    if square:
        grid = np.hypot(step[:, 0], step[:, 1])
    else:
        grid = np.hypot(step[:, 1] / 2.0, step[:, 0] * math.sqrt(3.0) / 2.0)
    ok = np.isfinite(d) & (d > 0) & (grid > 0)
    if not ok.any():
        return math.nan
    return float(np.median(d[ok] / grid[ok]))


def _bin_size_from_name(name: str) -> float | None:
    match = re.fullmatch(r"square_(\d+)um", name)
    return float(match.group(1)) if match else None


def _calibrate(
    scalefactors: dict[str, Any],
    pitch_px: float,
    pitch_um: float,
    *,
    is_hd: bool,
    positions_file: Path,
    notes: list[str],
) -> tuple[float, str]:
    from_pitch = pitch_um / pitch_px if math.isfinite(pitch_px) and pitch_px > 0 else math.nan
    mpp = scalefactors.get("microns_per_pixel")
    if mpp is not None:
        um_per_px, source = float(mpp), "microns_per_pixel"
        if math.isfinite(from_pitch) and abs(from_pitch / um_per_px - 1) > _PITCH_TOLERANCE:
            notes.append(
                f"{positions_file}: microns_per_pixel = {um_per_px:.4g} but the grid pitch gives "
                f"{from_pitch:.4g} µm/px ({pitch_um:g} µm / {pitch_px:.4g} px); "
                "using microns_per_pixel"
            )
    elif math.isfinite(from_pitch):
        um_per_px, source = from_pitch, "bin_size" if is_hd else "spot_pitch"
    elif is_hd and not math.isfinite(pitch_um):
        raise CalibrationError(
            positions_file,
            "Visium HD bins without microns_per_pixel or bin_size_um in scalefactors_json.json; "
            "cannot tell µm per pixel",
        )
    else:
        raise CalibrationError(
            positions_file,
            "cannot derive µm per pixel: fewer than two distinct spots and no microns_per_pixel "
            "in scalefactors_json.json",
        )
    lo, hi = _PLAUSIBLE_UM_PER_PX
    if not lo <= um_per_px <= hi:
        notes.append(
            f"{positions_file}: {um_per_px:.4g} µm per full-res pixel (from {source}) is "
            f"implausible for Visium (expected {lo:g}-{hi:g}); check the positions and scale "
            "factors"
        )
    return um_per_px, source


def _fullres_shape(
    root: Path,
    scalefactors: dict[str, Any],
    found_scalefactors: set[str],
    images: dict[str, np.ndarray],
) -> tuple[int, int] | None:
    """Estimate the full-res image ``(h, w)`` from the hires (else lowres) image and its scale."""
    for res in ("hires", "lowres"):
        key = f"tissue_{res}_scalef"
        if key not in found_scalefactors:
            continue
        if res in images:
            h, w = images[res].shape[:2]
        else:
            file = _image_file(root, res)
            if file is None:
                continue
            try:
                from PIL import Image

                with Image.open(file) as im:
                    w, h = im.size
            except Exception:  # an unreadable image just leaves the extent unknown
                continue
        sf = float(scalefactors[key])
        if not max(h, w) / sf < _MAX_FULLRES_PX:  # a scale factor like 1e-300 says nothing
            continue
        return round(h / sf), round(w / sf)
    return None


def _fullres_extent(
    adata: anndata.AnnData,
    info: dict[str, Any],
    images: dict[str, Any],
    scalefactors: dict[str, Any],
) -> tuple[tuple[float, float], str] | None:
    if "fullres_shape_px" in info:
        h, w = (float(v) for v in np.asarray(info["fullres_shape_px"]).ravel()[:2])
        return (w, h), "from the image size and scale factor"
    for res in ("hires", "lowres"):
        key = f"tissue_{res}_scalef"
        if res in images and key in scalefactors:
            h, w = np.asarray(images[res]).shape[:2]
            sf = float(scalefactors[key])
            return (w / sf, h / sf), f"from the {res} image"
    if "spatial" in adata.obsm and adata.n_obs:
        xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
        span = xy.max(axis=0) - xy.min(axis=0)
        return (float(span[0]), float(span[1])), "spanned by the spots"
    return None
