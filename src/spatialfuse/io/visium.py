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

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._limits import check_count, require_regular_file
from spatialfuse._logging import logger
from spatialfuse._text import printable
from spatialfuse.core.visium_geometry import SPOT_DIAMETER_UM, SPOT_PITCH_UM
from spatialfuse.errors import (
    CalibrationError,
    DataWarning,
    FileFormatError,
    LimitExceededError,
    MissingFileError,
)
from spatialfuse.io._visium_checks import check_consistency

if TYPE_CHECKING:
    import anndata
    import pandas as pd

__all__ = [
    "SPOT_DIAMETER_UM",
    "SPOT_PITCH_UM",
    "describe_visium",
    "read_visium",
    "visium_files",
]


#: Columns of a Space Ranger positions file, in file order.
POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)
#: Positions files looked for in ``spatial/``, in order of preference.
POSITIONS_FILES = ("tissue_positions.parquet", "tissue_positions.csv", "tissue_positions_list.csv")
SCALEFACTORS_FILE = "scalefactors_json.json"
IMAGE_FILES = {"hires": "tissue_hires_image.png", "lowres": "tissue_lowres_image.png"}
DEFAULT_COUNTS_FILE = "filtered_feature_bc_matrix.h5"
_COUNTS_CANDIDATES = (
    "filtered_feature_bc_matrix.h5",
    "raw_feature_bc_matrix.h5",
    "filtered_feature_bc_matrix",
    "raw_feature_bc_matrix",
)
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
# An HDF5 dataset may declare at most this many times the file's size (gzip's ratio is ~1,032).
_H5_MAX_EXPANSION = 1100
# Values of a 10x matrix's indices checked at a time.
_H5_CHUNK_VALUES = 1 << 24
# An image may declare at most this many bytes of pixels per byte of file (deflate's ratio is
# ~1,032; JPEG's lower).
_IMAGE_MAX_EXPANSION = 2000
# A full-resolution image extent beyond this (pixels per side) comes from a broken scale factor.
_MAX_FULLRES_PX = 2**31
# Largest |array_row|, |array_col| or in_tissue value accepted: every integer up to it is exact in
# float64 (the text of a larger one may have been rounded on the way in).
_MAX_GRID_INDEX = 2**53 - 1
# Fraction of spots that may fall outside an image before the image is reported as misplaced.
_OUTSIDE_IMAGE_TOLERANCE = 0.1


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
                    f'{a!r} (pass counts_file="{a}")' for a in alternatives
                )
            raise MissingFileError(
                counts_path,
                f"count matrix {counts_path.name!r} not found in {root}{hint}; pass "
                "require_counts=False to read the spot positions only",
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


def _resolve_root(path: Path, counts_file: str) -> tuple[Path, str]:
    """Find the folder that holds ``spatial/`` (and normally the count matrix)."""
    if not path.exists():
        raise MissingFileError(
            path, "folder does not exist; expected a Space Ranger outs folder (with spatial/)"
        )
    if path.is_file():
        if path.suffix.lower() in {".h5", ".hdf5"}:
            return path.parent, path.name  # the count matrix itself
        if path.name in POSITIONS_FILES and path.parent.name == "spatial":
            return path.parent.parent, counts_file
        raise FileFormatError(
            path, "expected a Space Ranger output folder (or its .h5 count matrix), not this file"
        )
    if (path / "spatial").is_dir():
        return path, counts_file
    if (path / "outs" / "spatial").is_dir():
        return path / "outs", counts_file
    if path.name == "spatial" and any((path / f).is_file() for f in POSITIONS_FILES):
        return path.parent, counts_file
    bins = _hd_bins(path) or _hd_bins(path / "outs")
    if bins:
        raise MissingFileError(
            path / "spatial",
            "no spatial/ folder; this looks like Visium HD output: pass a bin folder, e.g. "
            + ", ".join(str(b) for b in bins),
        )
    raise MissingFileError(
        path / "spatial",
        "no spatial/ folder; expected a Space Ranger outs folder with "
        "spatial/tissue_positions*.csv",
    )


def _counts_path(root: Path, counts_file: str) -> Path:
    """The count matrix ``counts_file`` names, relative to ``root`` unless absolute."""
    return Path(counts_file) if os.path.isabs(counts_file) else root / counts_file


def _hd_bins(folder: Path) -> list[Path]:
    binned = folder / "binned_outputs"
    if not binned.is_dir():
        return []
    return sorted(p for p in binned.iterdir() if p.is_dir() and (p / "spatial").is_dir())


def _find_positions_file(root: Path) -> Path:
    spatial_dir = root / "spatial"
    for name in POSITIONS_FILES:
        if (spatial_dir / name).is_file():
            return spatial_dir / name
    bins = _hd_bins(root)
    hint = (
        "; this is Visium HD output: pass a bin folder, e.g. " + ", ".join(map(str, bins))
        if bins
        else ""
    )
    raise MissingFileError(
        spatial_dir / POSITIONS_FILES[1],
        f"no positions file in {spatial_dir} (looked for {', '.join(POSITIONS_FILES)}){hint}",
    )


def _read_positions(file: Path) -> tuple[pd.DataFrame, str]:
    """Read a positions file into a frame indexed by barcode, with numeric columns."""
    import pandas as pd

    if file.suffix.lower() == ".parquet":
        try:
            raw = pd.read_parquet(file)
        except Exception as exc:  # pyarrow raises a variety of types for a bad file
            raise FileFormatError(file, f"cannot be read as Parquet ({exc})") from exc
        if "barcode" not in raw.columns and raw.index.name == "barcode":
            raw = raw.reset_index()
        missing = [c for c in POSITION_COLUMNS if c not in raw.columns]
        if missing:
            raise FileFormatError(
                file,
                f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, raw.columns))}",
            )
        frame = raw[list(POSITION_COLUMNS)].copy()
        frame["barcode"] = frame["barcode"].astype(str)
        return _validate_positions(frame, file, first_line=1), "visium_hd_parquet"

    has_header = _csv_has_header(file)
    try:
        raw = pd.read_csv(
            file,
            header=0 if has_header else None,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError as exc:
        raise FileFormatError(file, "positions file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise FileFormatError(file, f"not a valid positions CSV ({exc})") from exc
    if has_header:
        raw.columns = [str(c).strip().lower() for c in raw.columns]
        if all(c in raw.columns for c in POSITION_COLUMNS):
            raw = raw[list(POSITION_COLUMNS)]
    if raw.shape[1] != len(POSITION_COLUMNS):
        raise FileFormatError(
            file,
            f"expected {len(POSITION_COLUMNS)} columns ({', '.join(POSITION_COLUMNS)}), "
            f"found {raw.shape[1]}",
        )
    raw.columns = list(POSITION_COLUMNS)
    frame = _validate_positions(raw, file, first_line=2 if has_header else 1)
    return frame, "spaceranger2" if has_header else "spaceranger1"


def _csv_has_header(file: Path) -> bool:
    """Whether a positions CSV starts with a header row: decided by content, never by file name."""
    try:
        with open(file, encoding="utf-8-sig") as fh:
            for line in fh:
                if line.strip():
                    return line.split(",")[0].strip().strip('"').strip().lower() == "barcode"
    except UnicodeDecodeError as exc:
        raise FileFormatError(file, f"not a text file ({exc})") from exc
    raise FileFormatError(file, "positions file is empty")


def _validate_positions(frame: pd.DataFrame, file: Path, *, first_line: int) -> pd.DataFrame:
    import pandas as pd

    if len(frame) == 0:
        raise FileFormatError(file, "positions file has no spots")
    out = pd.DataFrame(index=pd.Index(frame["barcode"].astype(str).str.strip(), name="barcode"))
    if (out.index == "").any():
        line = int(np.flatnonzero(out.index == "")[0]) + first_line
        raise FileFormatError(file, f"empty barcode on line {line}")
    for col in POSITION_COLUMNS[1:]:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FileFormatError(
                file,
                f"column {col!r} has a missing or non-numeric value {frame[col].iloc[i]!r} "
                f"on line {i + first_line} ({int(bad.sum()):,} such rows)",
            )
        if col.startswith("pxl_"):
            out[col] = values
        else:
            # Grid indices are small integers; from ±2**53 on a float no longer holds every integer
            # (and beyond ±2**63 the int64 cast would wrap around).
            bad = (values != np.round(values)) | (np.abs(values) > _MAX_GRID_INDEX)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise FileFormatError(
                    file,
                    f"column {col!r} must hold integers (grid indices); line {i + first_line} has "
                    f"{frame[col].iloc[i]!r}",
                )
            out[col] = values.astype(np.int64)
    if not out.index.is_unique:
        dup = out.index[out.index.duplicated()][0]
        raise FileFormatError(file, f"barcode {dup!r} appears more than once")
    return out


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


def _counts_alternatives(root: Path, counts_path: Path) -> list[str]:
    return [
        name for name in _COUNTS_CANDIDATES if name != counts_path.name and (root / name).exists()
    ]


def _attr_to_str(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        items = [_attr_to_str(v) for v in value.ravel().tolist()]
        return items[0] if len(items) == 1 else items
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_counts(counts_path: Path) -> tuple[anndata.AnnData, dict[str, Any], str | None]:
    """Read a 10x HDF5 file or MTX folder; return the AnnData, metadata and the h5 library id."""
    if counts_path.is_dir():
        return _read_mtx(counts_path), {}, None
    require_regular_file(counts_path, "count matrix")

    import h5py
    import scanpy as sc

    if not h5py.is_hdf5(counts_path):
        raise FileFormatError(
            counts_path, "not an HDF5 file (expected a 10x feature-barcode matrix)"
        )
    metadata: dict[str, Any] = {}
    library_id = None
    try:
        with h5py.File(counts_path, "r") as fh:
            attrs = {k: _attr_to_str(v) for k, v in fh.attrs.items()}
    except Exception as exc:  # h5py raises OSError, RuntimeError, ... for damaged metadata
        raise FileFormatError(counts_path, f"cannot be opened as HDF5 ({exc})") from exc
    ids = attrs.get("library_ids")
    if isinstance(ids, list):
        ids = ids[0] if ids else None
    if ids:
        library_id = str(ids)
    for key in ("chemistry_description", "software_version"):
        if key in attrs and isinstance(attrs[key], str | int | float):
            metadata[key] = attrs[key]
    _check_10x_h5(counts_path)
    try:
        adata = sc.read_10x_h5(counts_path)
    except Exception as exc:  # scanpy raises bare Exception/KeyError/ValueError for bad files
        raise FileFormatError(
            counts_path, f"not a readable 10x HDF5 matrix ({type(exc).__name__}: {exc})"
        ) from exc
    adata.var_names_make_unique()
    return adata, metadata, library_id


def _check_10x_h5(counts_path: Path) -> None:
    """Refuse a 10x HDF5 matrix whose arrays do not fit together, before scanpy reads it.

    scanpy builds the sparse matrix without checking it, and out-of-range indices or pointers
    then crash the interpreter inside scipy. HDF5 stores chunks that were never written as
    nothing, so a dataset can declare any size; one declaring more than the file could hold
    (gzip expands at most ~1,032-fold) is refused before anything is read.
    """
    import h5py

    file_size = counts_path.stat().st_size
    limit = _H5_MAX_EXPANSION * file_size + (1 << 20)

    def fail(problem: str):
        raise FileFormatError(counts_path, f"not a readable 10x HDF5 matrix: {problem}")

    try:
        with h5py.File(counts_path, "r") as fh:
            group = fh.get("matrix")
            if group is None:  # Space Ranger 1.x: one group per genome
                groups = [g for g in fh.values() if isinstance(g, h5py.Group) and "indptr" in g]
                if len(groups) != 1:
                    return  # not a layout this check knows; scanpy's reader decides
                group = groups[0]
            datasets: dict[str, h5py.Dataset] = {}

            def collect(name, obj) -> None:  # visititems stops at the first non-None return
                if isinstance(obj, h5py.Dataset):
                    datasets[name] = obj

            group.visititems(collect)
            for name, dataset in datasets.items():
                nbytes = dataset.size * dataset.dtype.itemsize
                if nbytes > limit:
                    fail(
                        f"{name} declares {dataset.size:,} values ({nbytes:,} bytes), more than a "
                        f"file of {file_size:,} bytes can hold"
                    )
            features = "features/id" if "features/id" in datasets else "genes"
            missing = [
                n
                for n in ("data", "indices", "indptr", "shape", "barcodes", features)
                if n not in datasets
            ]
            if missing:
                fail(f"no {', '.join(missing)} dataset in {group.name}")
            n_features, n_barcodes = len(datasets[features]), len(datasets["barcodes"])
            check_count(counts_path, "barcodes", n_barcodes, "max_spots")
            shape = np.asarray(datasets["shape"][()])
            if shape.shape != (2,) or shape.dtype.kind not in "iu":
                fail(f"shape is {shape.tolist()!r}, not two integers")
            if shape.tolist() != [n_features, n_barcodes]:
                fail(
                    f"shape says {shape.tolist()} (features × barcodes) but there are "
                    f"{n_features:,} features and {n_barcodes:,} barcodes"
                )
            data, indices = datasets["data"], datasets["indices"]
            if data.dtype.kind not in "iufb" or indices.dtype.kind not in "iu":
                fail(f"data ({data.dtype}) or indices ({indices.dtype}) are not numbers")
            if data.shape != indices.shape or data.ndim != 1:
                fail(f"data has shape {data.shape} but indices {indices.shape}")
            indptr = np.asarray(datasets["indptr"][()])
            if indptr.dtype.kind not in "iu" or indptr.shape != (n_barcodes + 1,):
                fail(f"indptr has {indptr.size:,} values, not one per barcode plus one")
            indptr = indptr.astype(np.int64)  # Space Ranger writes uint32: differences would wrap
            if indptr[0] != 0 or indptr[-1] != len(data) or (np.diff(indptr) < 0).any():
                fail(
                    f"indptr does not rise from 0 to the {len(data):,} stored values "
                    f"(it runs from {indptr[0]} to {indptr[-1]})"
                )
            for start in range(0, len(indices), _H5_CHUNK_VALUES):
                block = indices[start : start + _H5_CHUNK_VALUES]
                if block.size and (block.min() < 0 or block.max() >= n_features):
                    fail(f"a feature index lies outside 0..{n_features - 1}")
    except (FileFormatError, LimitExceededError):
        raise
    except Exception as exc:  # h5py raises many types for a damaged file
        fail(f"{type(exc).__name__}: {exc}")


def _read_mtx(folder: Path) -> anndata.AnnData:
    """Read a 10x MTX folder: scanpy for its layouts, an uncompressed v3 folder by hand."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    import scipy.io
    from scipy import sparse

    for name in os.listdir(folder):  # a FIFO or device would block the reader
        if not (folder / name).is_dir():
            require_regular_file(folder / name, "count matrix file")
    has = {name: (folder / name).is_file() for name in os.listdir(folder)}
    if has.get("matrix.mtx.gz") or has.get("genes.tsv"):
        try:
            return sc.read_10x_mtx(folder)
        except FileNotFoundError as exc:
            raise MissingFileError(exc.filename or folder, "10x MTX folder is incomplete") from exc
        except Exception as exc:
            raise FileFormatError(folder, f"not a readable 10x MTX folder ({exc})") from exc
    # Space Ranger v3 layout written without gzip (features.tsv, not genes.tsv): scanpy only reads
    # the gzipped variant, so read it the way scanpy does.
    for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
        if not has.get(name):
            raise MissingFileError(folder / name, "10x MTX folder is incomplete")
    try:
        matrix = sparse.csr_matrix(scipy.io.mmread(folder / "matrix.mtx").T, dtype=np.float32)
        features = pd.read_csv(folder / "features.tsv", header=None, sep="\t", dtype=str)
        barcodes = pd.read_csv(folder / "barcodes.tsv", header=None, dtype=str)
    except Exception as exc:
        raise FileFormatError(folder, f"not a readable 10x MTX folder ({exc})") from exc
    if features.shape[1] < 2 or matrix.shape != (len(barcodes), len(features)):
        raise FileFormatError(
            folder,
            f"matrix.mtx is {matrix.shape[1]} × {matrix.shape[0]} (features × barcodes) but there "
            f"are {len(features)} features and {len(barcodes)} barcodes",
        )
    var = pd.DataFrame({"gene_ids": features[0].to_numpy()}, index=features[1].to_numpy())
    if features.shape[1] > 2:
        var["feature_types"] = features[2].to_numpy()
    adata = ad.AnnData(X=matrix, obs=pd.DataFrame(index=barcodes[0].to_numpy()), var=var)
    adata.var_names_make_unique()
    if "feature_types" in adata.var:
        adata = adata[:, adata.var["feature_types"] == "Gene Expression"].copy()
    return adata


def _image_dirs(root: Path) -> list[Path]:
    dirs = [root / "spatial"]
    # Visium HD: the images of a bin folder are the same as those of outs/spatial.
    if root.parent.name == "binned_outputs":
        dirs.append(root.parent.parent / "spatial")
    return dirs


def _image_file(root: Path, res: str) -> Path | None:
    """The ``res`` (``"hires"``/``"lowres"``) image of the folder ``root``, or None."""
    name = IMAGE_FILES[res]
    return next((d / name for d in _image_dirs(root) if (d / name).is_file()), None)


def _image_sizes(root: Path) -> dict[str, tuple[int, int]]:
    """``(width, height)`` of the hires and lowres images that exist and can be opened."""
    from PIL import Image

    sizes = {}
    for res in IMAGE_FILES:
        file = _image_file(root, res)
        if file is None:
            continue
        try:
            with Image.open(file) as im:
                sizes[res] = (int(im.width), int(im.height))
        except Exception:  # an unreadable image is reported where it is loaded
            continue
    return sizes


def _load_images(
    root: Path,
    scalefactors: dict[str, Any],
    found_scalefactors: set[str],
    xy: np.ndarray,
    notes: list[str],
) -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    for res, name in IMAGE_FILES.items():
        file = _image_file(root, res)
        if file is None:
            notes.append(f"{root / 'spatial' / name}: no {res} image; uns['spatial'] has none")
            continue
        key = f"tissue_{res}_scalef"
        if key not in found_scalefactors:
            notes.append(
                f"{file}: {key} missing from {SCALEFACTORS_FILE}, so the {res} image cannot be "
                "placed on the spots; not loaded"
            )
            continue
        try:
            img = _read_rgb(file)
        except Exception as exc:  # PIL raises many types for a broken file
            notes.append(f"{file}: cannot be read as an image ({exc}); {res} image not loaded")
            continue
        if img.size == 0 or int(img.max()) - int(img.min()) <= 2:
            value = int(img.max()) if img.size else 0
            notes.append(
                f"{file}: the {res} image is blank (every pixel ≈ {value}), a placeholder; "
                "dropped from uns['spatial'] images"
            )
            continue
        scaled = xy * float(scalefactors[key])
        h, w = img.shape[:2]
        outside = (
            (scaled[:, 0] < 0) | (scaled[:, 0] >= w) | (scaled[:, 1] < 0) | (scaled[:, 1] >= h)
        )
        if len(xy) and outside.mean() > _OUTSIDE_IMAGE_TOLERANCE:
            notes.append(
                f"{file}: {int(outside.sum()):,} of {len(xy):,} spots fall outside the {w} × {h} "
                f"{res} image at {key} = {scalefactors[key]:g}; image and positions may not match"
            )
        images[res] = img
    return images


def _read_rgb(file: Path) -> np.ndarray:
    """Read an image as a uint8 ``(h, w, 3)`` RGB array (squidpy's reader keeps uint8 too)."""
    from PIL import Image

    with Image.open(file) as im:
        declared = im.width * im.height * max(1, len(im.getbands()))
        limit = _IMAGE_MAX_EXPANSION * file.stat().st_size + (16 << 20)
        if declared > limit:  # checked before PIL allocates the declared size
            raise ValueError(
                f"it declares {im.width} × {im.height} pixels, more than its "
                f"{file.stat().st_size:,} bytes can hold"
            )
        im.load()
        if im.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


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
