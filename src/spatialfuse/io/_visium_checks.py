"""Cross-file consistency of a Space Ranger folder: grid vs pixels, barcodes vs matrix, scales.

Each file of a Visium folder can be valid on its own and still disagree with the others (a
positions file with ``pxl_row``/``pxl_col`` swapped, barcodes permuted between its rows, scale
factors of another run). Such a folder reads without complaint and every spot value is then wrong.
The checks, and what each does when it fails:

- ``grid_vs_pixels`` (error): an affine map (``array_col``, ``array_row``) → pixels fits every
  spot within a quarter of the spot pitch (Space Ranger's positions fit to < 1 % of a pitch).
- ``hexagonal_grid`` (error): that map's row step is √3 (Space Ranger: 1.74) times its column
  step, at right angles; swapped ``array_row``/``array_col`` or a skewed grid fail.
- ``grid_axes`` (warning): ``array_col`` steps along the image's x axis (``pxl_col``). Along y
  means ``pxl_row``/``pxl_col`` are swapped, or an image turned by 90° (which can be right, hence
  a warning, not an error).
- ``barcodes_in_tissue`` (error above 5 %, warning below): a *filtered* matrix's barcodes lie on
  ``in_tissue = 1`` spots; off-tissue barcodes mean the matrix and positions are not from one
  run, or barcodes were permuted between rows of the positions file.
- ``image_scales`` (error): ``tissue_hires_scalef / tissue_lowres_scalef`` equals the ratio of
  the two images' sizes (both are made from one full-resolution image).
- ``spot_diameter`` (warning): ``spot_diameter_fullres`` is 0.4–0.95 of the spot pitch measured
  from the positions (real data: 0.6–0.7). It is not used for calibration, so a wrong value only
  hints at mixed files.

Errors are :class:`~spatialfuse.errors.FileFormatError` naming the file and what disagrees;
warnings go to the reader's warnings. Every result (``ok``, ``warning`` or ``skipped`` with the
measured value) is kept in ``uns["spatialfuse"]["consistency_checks"]`` for the run's summary and
report. Visium HD folders (a square bin grid) get the checks that do not assume the hexagonal
grid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from spatialfuse.errors import FileFormatError

#: Largest fit residual, in spot pitches, of any spot of a consistent positions file.
MAX_GRID_RESIDUAL_PITCH = 0.25
#: Row step / column step of the Visium hexagonal grid (√3; Space Ranger writes 1.74).
HEX_RATIO = math.sqrt(3.0)
#: Relative tolerance on that ratio, and largest |cos| of the angle between the two steps.
HEX_TOLERANCE = 0.05
#: Fraction of filtered-matrix barcodes off tissue above which the folder is refused.
MAX_OFF_TISSUE_FRACTION = 0.05
#: Relative tolerance between the scale-factor ratio and the image-size ratio.
SCALE_TOLERANCE = 0.02
#: Plausible spot_diameter_fullres, as a fraction of the spot pitch.
SPOT_DIAMETER_RANGE = (0.4, 0.95)


def _result(check: str, status: str, detail: str, **values: Any) -> dict[str, Any]:
    return {"check": check, "status": status, "detail": detail, **values}


def _robust_grid_fit(design: np.ndarray, xy: np.ndarray, hexagonal: bool):
    """Grid → pixel affine fitted to the spots that agree with it, and every spot's residual.

    A plain least-squares fit lets one corrupt spot (a pixel row of 1e300) drag the grid off every
    other spot; the fit starts from the spots inside the bulk of the positions and is refitted to
    those within :data:`MAX_GRID_RESIDUAL_PITCH` of it, so the residuals name the spots that are
    off. Returns ``(coef, pitch_px, residual_in_pitches)``.
    """
    finite = np.all(np.isfinite(xy), axis=1)
    low, high = np.percentile(xy[finite], [10, 90], axis=0) if finite.any() else (0.0, 0.0)
    span = np.maximum(high - low, 1e-9)
    inliers = finite & np.all((xy >= low - span) & (xy <= high + span), axis=1)
    coef = pitch = residual = None
    for _ in range(3):
        if inliers.sum() < 3 or np.linalg.matrix_rank(design[inliers]) < 3:
            break
        coef, *_ = np.linalg.lstsq(design[inliers], xy[inliers], rcond=None)
        # One pitch is 2 columns on the hexagonal grid, 1 on a square bin grid.
        pitch = float(np.hypot(*coef[0])) * (2.0 if hexagonal else 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            residual = np.hypot(*(xy - design @ coef).T) / pitch if pitch > 0 else None
        if residual is None:
            break
        agree = residual <= MAX_GRID_RESIDUAL_PITCH
        if agree.sum() < 3 or (agree == inliers).all():
            break
        inliers = agree
    if coef is None or residual is None:
        coef, *_ = np.linalg.lstsq(design, np.nan_to_num(xy), rcond=None)
        pitch = float(np.hypot(*coef[0])) * (2.0 if hexagonal else 1.0)
        residual = np.full(len(design), np.inf)
    return coef, pitch, np.where(np.isfinite(residual), residual, np.inf)


def check_grid(
    col: np.ndarray, row: np.ndarray, xy: np.ndarray, file: Path, *, hexagonal: bool
) -> list[dict[str, Any]]:
    """Grid indices against pixel positions: ``grid_vs_pixels``, ``hexagonal_grid``, ``grid_axes``.

    ``col``, ``row``: ``array_col``, ``array_row``; ``xy``: ``(pxl_col, pxl_row)`` per spot.

    Raises
    ------
    FileFormatError
        Some spot lies off the affine grid, or the grid is not hexagonal (``hexagonal``).
    """
    design = np.column_stack([col, row, np.ones(len(col))]).astype(np.float64)
    if len(col) < 3 or np.linalg.matrix_rank(design) < 3:
        return [_result("grid_vs_pixels", "skipped", "fewer than three spots off one line")]
    coef, pitch, residual = _robust_grid_fit(design, np.asarray(xy, dtype=np.float64), hexagonal)
    step_col, step_row = coef[0], coef[1]  # pixels per array_col, per array_row
    worst = float(residual.max())
    results = []
    if not worst <= MAX_GRID_RESIDUAL_PITCH:
        bad = np.flatnonzero(~(residual <= MAX_GRID_RESIDUAL_PITCH))
        raise FileFormatError(
            file,
            f"array_row/array_col and pxl_row_in_fullres/pxl_col_in_fullres disagree: "
            f"{bad.size:,} of {len(col):,} spots lie off the grid that the others fit (up to "
            f"{worst:.3g} spot pitches; a consistent file fits every spot within "
            f"{MAX_GRID_RESIDUAL_PITCH:g}; first on line {int(bad[0]) + 1} of the data). The "
            "pixel positions do not belong to these grid positions (rows shuffled or edited?)",
        )
    results.append(
        _result(
            "grid_vs_pixels",
            "ok",
            f"every spot within {worst:.3g} pitch of the fitted grid",
            value=worst,
        )
    )
    if hexagonal:
        ratio = float(np.hypot(*step_row) / np.hypot(*step_col))
        cos = float(abs(step_col @ step_row) / (np.hypot(*step_col) * np.hypot(*step_row)))
        if not (abs(ratio / HEX_RATIO - 1) <= HEX_TOLERANCE and cos <= HEX_TOLERANCE):
            angle = math.degrees(math.acos(min(cos, 1.0)))
            raise FileFormatError(
                file,
                f"the grid is not Visium's hexagonal grid: one array_row step is {ratio:.3g} "
                f"array_col steps long (expected {HEX_RATIO:.3g}) at {angle:.1f}° (expected 90°); "
                "are array_row and array_col swapped?",
            )
        results.append(
            _result("hexagonal_grid", "ok", f"row/column step ratio {ratio:.4g}", value=ratio)
        )
    along_x = abs(step_col[0]) >= abs(step_col[1])
    if along_x:
        results.append(_result("grid_axes", "ok", "array_col steps along x (pxl_col_in_fullres)"))
    else:
        results.append(
            _result(
                "grid_axes",
                "warning",
                f"{file}: array_col steps along the image's y axis (pxl_row_in_fullres): "
                "pxl_row_in_fullres and pxl_col_in_fullres look swapped (right only for an "
                "image turned by 90°); spot positions on the image would be mirrored",
            )
        )
    results[0]["pitch_px"] = pitch
    return results


def check_barcodes(
    in_tissue: np.ndarray, counts_path: Path, positions_file: Path
) -> dict[str, Any]:
    """``barcodes_in_tissue``: a filtered matrix's barcodes on in-tissue spots.

    ``in_tissue`` holds the positions file's flag for each matrix barcode that has a position.

    Raises
    ------
    FileFormatError
        More than :data:`MAX_OFF_TISSUE_FRACTION` of them lie off tissue.
    """
    name = counts_path.name
    if "filtered" not in name:
        return _result("barcodes_in_tissue", "skipped", f"{name} is not a filtered matrix")
    if len(in_tissue) == 0:
        return _result("barcodes_in_tissue", "skipped", "no matrix barcode has a position")
    off = int((np.asarray(in_tissue) == 0).sum())
    fraction = off / len(in_tissue)
    text = (
        f"{off:,} of {len(in_tissue):,} barcodes of the filtered matrix {name} lie on spots "
        f"{positions_file.name} marks off tissue (in_tissue = 0)"
    )
    if fraction > MAX_OFF_TISSUE_FRACTION:
        raise FileFormatError(
            positions_file,
            f"{text}: a filtered matrix holds in-tissue spots only, so the barcodes and the "
            "positions are not from one Space Ranger run, or barcodes were permuted between rows",
        )
    if off:
        return _result("barcodes_in_tissue", "warning", f"{positions_file}: {text}", value=fraction)
    return _result("barcodes_in_tissue", "ok", "every matrix barcode is on tissue", value=0.0)


def check_image_scales(
    sizes: dict[str, tuple[int, int]], scalefactors: dict[str, Any], file: Path | None
) -> dict[str, Any]:
    """``image_scales``: hires/lowres scale-factor ratio against the image-size ratio.

    ``sizes`` maps ``"hires"``/``"lowres"`` to an image's ``(width, height)``.

    Raises
    ------
    FileFormatError
        The ratios disagree by more than :data:`SCALE_TOLERANCE`.
    """
    keys = ("tissue_hires_scalef", "tissue_lowres_scalef")
    if file is None or not all(k in scalefactors for k in keys) or len(sizes) < 2:
        return _result("image_scales", "skipped", "needs both images and both scale factors")
    expected = float(scalefactors[keys[0]]) / float(scalefactors[keys[1]])
    found = max(sizes["hires"]) / max(sizes["lowres"])
    if abs(found / expected - 1) > SCALE_TOLERANCE:
        raise FileFormatError(
            file,
            f"tissue_hires_scalef / tissue_lowres_scalef = {expected:.4g}, but the hires image "
            f"({sizes['hires'][0]} × {sizes['hires'][1]} px) is {found:.4g} times the lowres one "
            f"({sizes['lowres'][0]} × {sizes['lowres'][1]} px): the scale factors and images are "
            "not from one run, and spots would be drawn in the wrong place",
        )
    return _result("image_scales", "ok", f"scale and size ratios agree ({found:.4g})", value=found)


def check_spot_diameter(scalefactors: dict[str, Any], pitch_px: float, file: Path | None):
    """``spot_diameter``: ``spot_diameter_fullres`` against the pitch of the positions."""
    diameter = scalefactors.get("spot_diameter_fullres")
    if file is None or diameter is None or not (math.isfinite(pitch_px) and pitch_px > 0):
        return _result("spot_diameter", "skipped", "no spot_diameter_fullres or no pitch")
    ratio = float(diameter) / pitch_px
    lo, hi = SPOT_DIAMETER_RANGE
    if lo <= ratio <= hi:
        return _result("spot_diameter", "ok", f"{ratio:.3g} of the spot pitch", value=ratio)
    return _result(
        "spot_diameter",
        "warning",
        f"{file}: spot_diameter_fullres = {float(diameter):.4g} px is {ratio:.3g} spot pitches "
        f"({pitch_px:.4g} px from the positions; expected {lo:g}-{hi:g}): the scale factors may "
        "be from another run",
        value=ratio,
    )


def check_consistency(
    positions,
    positions_file: Path,
    *,
    hexagonal: bool,
    counts_path: Path | None,
    matrix_in_tissue: np.ndarray,
    scalefactors: dict[str, Any],
    scalefactors_file: Path | None,
    image_sizes: dict[str, tuple[int, int]],
) -> list[dict[str, Any]]:
    """Run every check of this module on one folder (see the module docstring).

    Parameters
    ----------
    positions
        The positions file as a frame (``array_row``, ``array_col``, ``pxl_row_in_fullres``,
        ``pxl_col_in_fullres``).
    positions_file, counts_path, scalefactors_file
        The files, for the messages (``counts_path``/``scalefactors_file`` None where absent).
    hexagonal
        Visium's hexagonal spot grid (False: Visium HD's square bins).
    matrix_in_tissue
        ``in_tissue`` of every matrix barcode that has a position.
    scalefactors
        The keys found in ``scalefactors_json.json`` (no defaults filled in).
    image_sizes
        ``(width, height)`` of the hires and lowres images that exist.

    Returns
    -------
    list of dict
        One per check: ``check``, ``status`` (``ok``, ``warning``, ``skipped``), ``detail`` and,
        where measured, ``value``.

    Raises
    ------
    FileFormatError
        A check that cannot pass on right data failed.
    """
    xy = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    results = check_grid(
        positions["array_col"].to_numpy(),
        positions["array_row"].to_numpy(),
        xy,
        positions_file,
        hexagonal=hexagonal,
    )
    pitch_px = float(results[0].pop("pitch_px", math.nan))
    if counts_path is not None:
        results.append(check_barcodes(matrix_in_tissue, counts_path, positions_file))
    results.append(check_image_scales(image_sizes, scalefactors, scalefactors_file))
    if hexagonal:
        results.append(check_spot_diameter(scalefactors, pitch_px, scalefactors_file))
    return results
