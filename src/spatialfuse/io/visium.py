"""Read 10x Genomics Visium and Visium HD (Space Ranger) output into :class:`anndata.AnnData`.

The result has the layout squidpy and scanpy expect (``obsm["spatial"]`` in full-resolution image
pixels, ``uns["spatial"][library_id]`` with images and scale factors) plus the physical calibration
spatialfuse works in: ``obsm["spatial_um"]`` and ``uns["spatialfuse"]["um_per_px"]``.

Conventions (see ``docs/coordinates.md``):

- points are ``(x, y) = (column, row)`` = ``(pxl_col_in_fullres, pxl_row_in_fullres)``;
- a spot at full-res coordinate ``c`` sits on the centre of image pixel ``c``, so its centre in µm
  is ``(c + 0.5) * um_per_px``;
- µm per full-res pixel comes from ``microns_per_pixel`` where Space Ranger writes it (Visium HD),
  else from the grid pitch (100 µm between Visium spot centres, ``bin_size_um`` between HD bins)
  divided by the median nearest-neighbour distance of the spot centres in full-res pixels.
  ``spot_diameter_fullres`` is never used for calibration: on real data it is 60-65 µm wide, not
  55 µm.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._logging import logger
from spatialfuse._text import printable
from spatialfuse.core.visium_geometry import SPOT_DIAMETER_UM, SPOT_PITCH_UM
from spatialfuse.errors import DataWarning, FileFormatError, MissingFileError
from spatialfuse.io._visium_calibration import (
    _bin_size_from_name,
    _calibrate,
    _fullres_extent,
    _fullres_shape,
    _grid_pitch_px,
    _read_scalefactors,
)
from spatialfuse.io._visium_checks import check_consistency
from spatialfuse.io._visium_images import _image_sizes, _load_images
from spatialfuse.io._visium_layout import (
    DEFAULT_COUNTS_FILE,
    IMAGE_FILES,
    POSITION_COLUMNS,
    POSITIONS_FILES,
    SCALEFACTORS_FILE,
    _counts_alternatives,
    _counts_path,
    _find_positions_file,
    _image_file,
    _read_positions,
    _resolve_root,
)
from spatialfuse.io._visium_matrix import _read_counts

if TYPE_CHECKING:
    import anndata

__all__ = [
    "POSITIONS_FILES",
    "POSITION_COLUMNS",
    "SPOT_DIAMETER_UM",
    "SPOT_PITCH_UM",
    "describe_visium",
    "read_visium",
    "visium_files",
]


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def read_visium(
    path: str | os.PathLike,
    *,
    counts_file: str | os.PathLike = DEFAULT_COUNTS_FILE,
    library_id: str | None = None,
    load_images: bool = True,
    require_counts: bool = True,
) -> anndata.AnnData:
    """Read a Visium or Visium HD Space Ranger output folder.

    Parameters
    ----------
    path
        A Space Ranger ``outs`` folder, any folder holding ``spatial/`` and the count matrix, the
        sample folder above ``outs``, or a Visium HD bin folder
        (``outs/binned_outputs/square_008um``). A ``spatial/`` folder itself or the path of the
        ``.h5`` count matrix are accepted too.
    counts_file
        The count matrix, relative to the folder (or absolute): a 10x HDF5 file (read with
        :func:`scanpy.read_10x_h5`) or a 10x MTX folder (read with :func:`scanpy.read_10x_mtx`).
        A missing file is an error even where another matrix exists; the error names the
        alternative.
    library_id
        Key under ``uns["spatial"]``. Default: the ``library_ids`` attribute of the HDF5 matrix,
        else the folder name (the sample folder for an ``outs`` folder).
    load_images
        Load ``tissue_hires_image.png`` and ``tissue_lowres_image.png``.
    require_counts
        If false and the count matrix is absent, return every spot of the positions file with zero
        genes instead of raising.

    Returns
    -------
    anndata.AnnData
        One observation per barcode of the count matrix that has a position (in matrix order), or
        every position when there is no matrix. Slots written:

        - ``X``, ``var``: counts and features from the matrix (``var_names`` made unique).
        - ``obs["in_tissue"]``, ``obs["array_row"]``, ``obs["array_col"]``: from the positions file.
        - ``obsm["spatial"]``: ``(n, 2)`` float64 full-res pixel coordinates ``(x, y)`` =
          ``(pxl_col_in_fullres, pxl_row_in_fullres)``.
        - ``obsm["spatial_um"]``: ``(n, 2)`` float64 spot centres in µm in the Visium image frame,
          ``(obsm["spatial"] + 0.5) * um_per_px``.
        - ``uns["spatial"][library_id]``: ``"images"`` (``"hires"``/``"lowres"`` as uint8 RGB arrays
          of shape ``(h, w, 3)``, the dtype squidpy's reader uses, alpha dropped; blank or missing
          images are left out), ``"scalefactors"`` (every key of ``scalefactors_json.json``,
          missing required keys filled with defaults; optional keys such as
          ``fiducial_diameter_fullres`` only where the file has them) and ``"metadata"``
          (``chemistry_description``, ``software_version``, ... from the matrix).
        - ``uns["spatialfuse"]``: ``um_per_px``, ``um_per_px_source`` (``"spot_pitch"``,
          ``"microns_per_pixel"`` or ``"bin_size"``), ``reader``, ``path``, ``positions_file``,
          ``positions_format`` (``"spaceranger1"``, ``"spaceranger2"`` or
          ``"visium_hd_parquet"``), ``library_id``, ``grid_pitch_px``, ``grid_pitch_um``,
          ``spot_diameter_um``, ``n_positions``, ``n_positions_in_tissue``,
          ``n_dropped_barcodes``, and ``counts_file``, ``scalefactors_file``, ``fullres_shape_px``
          ``(h, w)`` where known.

    Raises
    ------
    MissingFileError
        The folder, its ``spatial/`` folder, the positions file, or the count matrix is absent.
    FileFormatError
        The positions file, the count matrix or ``scalefactors_json.json`` is malformed.
    CalibrationError
        µm per pixel cannot be derived (fewer than two spots and no ``microns_per_pixel``).

    Warns
    -----
    DataWarning
        Missing scalefactors or images, blank images, spots outside the image, matrix barcodes
        without a position (dropped), implausible calibration.
    """
    notes: list[str] = []
    try:
        return _read_visium(
            Path(os.fspath(path)).expanduser(),
            counts_file=os.fspath(counts_file),
            library_id=library_id,
            load_images=load_images,
            require_counts=require_counts,
            notes=notes,
        )
    finally:
        for message in notes:
            warnings.warn(message, DataWarning, stacklevel=2)


def tissue_image(
    adata: anndata.AnnData, *, library_id: str | None = None
) -> tuple[np.ndarray, float, str] | None:
    """The Visium H&E held in ``uns["spatial"]``: the hires image, else the lowres one.

    Returns
    -------
    tuple or None
        ``(image, scale, resolution)``: the array, its ``tissue_<resolution>_scalef`` (image
        pixels per full-resolution pixel) and ``"hires"`` or ``"lowres"``; None when the data
        hold no image.
    """
    spatial = adata.uns.get("spatial", {}) or {}
    library_id = library_id or next(iter(spatial), None)
    if library_id is None or library_id not in spatial:
        return None
    entry = spatial[library_id]
    images, scales = entry.get("images", {}) or {}, entry.get("scalefactors", {}) or {}
    for res in ("hires", "lowres"):
        if res in images:
            return np.asarray(images[res]), float(scales[f"tissue_{res}_scalef"]), res
    return None


def describe_visium(adata: anndata.AnnData) -> str:
    """Summarise a Visium AnnData read by :func:`read_visium` in a few lines.

    Parameters
    ----------
    adata
        Result of :func:`read_visium` (other Visium AnnData objects are described as far as
        possible).

    Returns
    -------
    str
        Library id, spots (total and in tissue), genes, µm per full-res pixel and its source,
        full-res extent in pixels and millimetres, images with their sizes, and the positions
        format.
    """
    info = dict(adata.uns.get("spatialfuse", {}) or {})
    spatial = adata.uns.get("spatial", {}) or {}
    lib = info.get("library_id")
    if lib is None and len(spatial) == 1:
        lib = next(iter(spatial))
    lib_entry = spatial.get(lib, {}) if lib is not None else {}
    images = lib_entry.get("images", {}) or {}
    scalefactors = lib_entry.get("scalefactors", {}) or {}

    lines = [f"Visium library {lib!r}" if lib is not None else "Visium data (no library id)"]
    if "path" in info:
        lines[0] += f" from {info['path']}"

    n_in = None
    if "in_tissue" in adata.obs:
        n_in = int(np.asarray(adata.obs["in_tissue"]).astype(bool).sum())
    spots = f"spots: {adata.n_obs:,}"
    if n_in is not None:
        spots += f" ({n_in:,} in tissue)"
    if "n_positions" in info:
        spots += (
            f"; positions file: {int(info['n_positions']):,} spots"
            f" ({int(info.get('n_positions_in_tissue', 0)):,} in tissue)"
        )
    if int(info.get("n_dropped_barcodes", 0)):
        spots += f"; {int(info['n_dropped_barcodes']):,} matrix barcodes without position dropped"
    lines.append(spots)
    genes = f"genes: {adata.n_vars:,}"
    if "counts_file" not in info and "reader" in info:
        genes += " (no count matrix read)"
    lines.append(genes)

    um = info.get("um_per_px")
    if um is not None:
        lines.append(
            f"µm per full-res px: {float(um):.4g} (from {info.get('um_per_px_source', '?')})"
        )
    else:
        lines.append("µm per full-res px: unknown")

    extent = _fullres_extent(adata, info, images, scalefactors)
    if extent is not None:
        (w, h), how = extent
        text = f"full-res extent: {w:,.0f} × {h:,.0f} px"
        if um is not None:
            text += f" = {w * float(um) / 1000:.2f} × {h * float(um) / 1000:.2f} mm"
        lines.append(f"{text} ({how})")

    if images:
        parts = []
        for key, img in images.items():
            arr = np.asarray(img)
            parts.append(f"{key} {arr.shape[1]} × {arr.shape[0]} px")
        lines.append("images: " + ", ".join(parts))
    else:
        lines.append("images: none")
    if "positions_format" in info:
        text = f"positions: {info['positions_format']}"
        if "positions_file" in info:
            text += f" ({info['positions_file']})"
        lines.append(text)
    return "\n".join(lines)


def visium_files(
    path: str | os.PathLike, *, counts_file: str | os.PathLike = DEFAULT_COUNTS_FILE
) -> list[Path]:
    """Every file :func:`read_visium` opens for ``path``, resolved exactly as the reader does.

    Parameters
    ----------
    path, counts_file
        As for :func:`read_visium`.

    Returns
    -------
    list of Path
        The positions file, then ``scalefactors_json.json``, the hires and lowres images and the
        count matrix (every file of an MTX folder) where they exist. The pipeline's step cache
        fingerprints these, so a step is recomputed whenever any of them changes.

    Raises
    ------
    MissingFileError
        The folder, its ``spatial/`` folder or the positions file is absent.
    """
    root, counts = _resolve_root(Path(os.fspath(path)).expanduser(), os.fspath(counts_file))
    files = [_find_positions_file(root)]
    scalefactors = root / "spatial" / SCALEFACTORS_FILE
    if scalefactors.is_file():
        files.append(scalefactors)
    files += [f for f in (_image_file(root, res) for res in IMAGE_FILES) if f is not None]
    counts_path = _counts_path(root, counts)
    if counts_path.is_dir():
        files += sorted(p for p in counts_path.rglob("*") if p.is_file())
    elif counts_path.is_file():
        files.append(counts_path)
    return files


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def _read_visium(
    path: Path,
    *,
    counts_file: str,
    library_id: str | None,
    load_images: bool,
    require_counts: bool,
    notes: list[str],
) -> anndata.AnnData:
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    root, counts_file = _resolve_root(path, counts_file)
    spatial_dir = root / "spatial"
    positions_file = _find_positions_file(root)
    positions, positions_format = _read_positions(positions_file)
    is_hd = positions_format == "visium_hd_parquet"
    logger.info("read %d positions (%s) from %s", len(positions), positions_format, positions_file)

    scalefactors, scalefactors_file = _read_scalefactors(spatial_dir, notes)
    if scalefactors_file is None:
        notes.append(
            f"{spatial_dir / SCALEFACTORS_FILE}: scalefactors file missing; using default scale "
            "factors, so the hires/lowres images cannot be placed on the spots and are not loaded"
        )
        load_images = False

    # -- calibration -------------------------------------------------------------------------------
    xy_all = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    rc_all = positions[["array_row", "array_col"]].to_numpy(dtype=np.int64)
    pitch_px = _grid_pitch_px(xy_all, rc_all, square=is_hd)
    pitch_um = SPOT_PITCH_UM
    spot_diameter_um = SPOT_DIAMETER_UM
    if is_hd:
        bin_size = scalefactors.get("bin_size_um")
        if bin_size is None:
            bin_size = _bin_size_from_name(root.name)
            if bin_size is not None:
                logger.info("bin size %s µm taken from the folder name %s", bin_size, root.name)
        pitch_um = spot_diameter_um = bin_size if bin_size is not None else math.nan
    um_per_px, source = _calibrate(
        scalefactors, pitch_px, pitch_um, is_hd=is_hd, positions_file=positions_file, notes=notes
    )

    # -- scale factors with defaults -------------------------------------------------------------
    found_scalefactors = set(scalefactors)
    scalefactors = dict(scalefactors)
    if "spot_diameter_fullres" not in scalefactors:
        diameter_px = (spot_diameter_um if math.isfinite(spot_diameter_um) else 1.0) / um_per_px
        scalefactors["spot_diameter_fullres"] = diameter_px
        if scalefactors_file is not None:
            notes.append(
                f"{scalefactors_file}: no spot_diameter_fullres; using {spot_diameter_um:g} µm = "
                f"{diameter_px:.4g} full-res px"
            )
    # With no image to place, a scale factor of 1 plots the spots in full-res pixels.
    scalefactors.setdefault("tissue_hires_scalef", 1.0)
    scalefactors.setdefault("tissue_lowres_scalef", 1.0)

    # -- counts ------------------------------------------------------------------------------------
    counts_path = _counts_path(root, counts_file)
    metadata: dict[str, Any] = {}
    h5_library_id = None
    if counts_path.exists():
        adata, metadata, h5_library_id = _read_counts(counts_path)
    else:
        alternatives = _counts_alternatives(root, counts_path)
        if require_counts:
            hint = ""
            if alternatives:
                hint = "; found " + " and ".join(
                    f'{a!r} (pass counts_file="{a}"; in a run config: counts_file: {a})'
                    for a in alternatives
                )
            raise MissingFileError(
                counts_path,
                f"count matrix {counts_path.name!r} not found in {root}{hint}; pass "
                "require_counts=False (in a run config: require_counts: false) to read the spot "
                "positions only",
            )
        if alternatives:
            notes.append(
                f"{counts_path}: count matrix not found, returning positions only; "
                + ", ".join(f'counts_file="{a}"' for a in alternatives)
                + " would read counts"
            )
        adata = ad.AnnData(
            X=sparse.csr_matrix((len(positions), 0), dtype=np.float32),
            obs=pd.DataFrame(index=positions.index.copy()),
        )

    # -- align barcodes ----------------------------------------------------------------------------
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][0]
        raise FileFormatError(counts_path, f"barcode {dup!r} appears more than once in the matrix")
    present = adata.obs_names.isin(positions.index)
    n_dropped = int((~present).sum())
    if n_dropped:
        example = adata.obs_names[~present][0]
        if n_dropped == adata.n_obs:
            raise FileFormatError(
                positions_file,
                f"none of the {adata.n_obs:,} barcodes of {counts_path.name} (e.g. {example!r}) "
                f"is in the positions file (e.g. {positions.index[0]!r}); are the matrix and the "
                "spatial folder from the same run?",
            )
        notes.append(
            f"{positions_file}: {n_dropped:,} of {adata.n_obs:,} barcodes of {counts_path.name} "
            f"have no position (e.g. {example!r}); they are dropped"
        )
        adata = adata[present].copy()
    pos = positions.loc[adata.obs_names]
    checks = check_consistency(
        positions,
        positions_file,
        hexagonal=not is_hd,
        counts_path=counts_path if counts_path.exists() else None,
        matrix_in_tissue=pos["in_tissue"].to_numpy(),
        scalefactors={k: scalefactors[k] for k in found_scalefactors},
        scalefactors_file=scalefactors_file,
        image_sizes=_image_sizes(root),
    )
    notes += [c["detail"] for c in checks if c["status"] == "warning"]

    obs = adata.obs.copy()
    obs["in_tissue"] = pos["in_tissue"].to_numpy()
    obs["array_row"] = pos["array_row"].to_numpy()
    obs["array_col"] = pos["array_col"].to_numpy()
    adata.obs = obs
    xy = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    adata.obsm["spatial"] = xy
    adata.obsm["spatial_um"] = (xy + 0.5) * um_per_px

    n_negative = int((xy < 0).any(axis=1).sum())
    if n_negative:
        notes.append(
            f"{positions_file}: {n_negative:,} of {len(xy):,} spots have negative full-res "
            "coordinates (they lie outside the image); kept"
        )

    # -- images ------------------------------------------------------------------------------------
    images: dict[str, np.ndarray] = {}
    if load_images:
        images = _load_images(root, scalefactors, found_scalefactors, xy, notes)
    fullres_shape = _fullres_shape(root, scalefactors, found_scalefactors, images)

    # -- library id and uns ------------------------------------------------------------------------
    if library_id is None:
        library_id = h5_library_id or (root.parent.name if root.name == "outs" else root.name)
        library_id = library_id or "library"
    adata.uns["spatial"] = {
        library_id: {"images": images, "scalefactors": scalefactors, "metadata": metadata}
    }
    info: dict[str, Any] = {
        "um_per_px": float(um_per_px),
        "um_per_px_source": source,
        "reader": "read_visium",
        "path": printable(root.resolve()),
        "positions_file": printable(positions_file.resolve()),
        "positions_format": positions_format,
        "library_id": library_id,
        "grid_pitch_px": float(pitch_px),
        "grid_pitch_um": float(pitch_um),
        "spot_diameter_um": float(spot_diameter_um),
        "n_positions": len(positions),
        "n_positions_in_tissue": int(positions["in_tissue"].astype(bool).sum()),
        "n_dropped_barcodes": n_dropped,
    }
    info["consistency_checks"] = {
        c["check"]: {k: v for k, v in c.items() if k != "check"} for c in checks
    }
    if counts_path.exists():
        info["counts_file"] = printable(counts_path.resolve())
    if scalefactors_file is not None:
        info["scalefactors_file"] = printable(scalefactors_file.resolve())
    if fullres_shape is not None:
        info["fullres_shape_px"] = np.asarray(fullres_shape, dtype=np.int64)
    adata.uns["spatialfuse"] = info
    return adata
