"""A Space Ranger folder's layout: which folder holds ``spatial/``, its files, the spot positions.

Positions are read as Space Ranger wrote them: ``pxl_col_in_fullres``, ``pxl_row_in_fullres`` in
full-resolution image pixels (a spot at ``c`` sits on the centre of pixel ``c``) and the integer
grid indices ``array_row``, ``array_col``; calibration to µm is :mod:`._visium_calibration`'s job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse.errors import FileFormatError, MissingFileError

if TYPE_CHECKING:
    import pandas as pd

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
# Largest |array_row|, |array_col| or in_tissue value accepted: every integer up to it is exact in
# float64 (the text of a larger one may have been rounded on the way in).
_MAX_GRID_INDEX = 2**53 - 1


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


def _counts_alternatives(root: Path, counts_path: Path) -> list[str]:
    return [
        name for name in _COUNTS_CANDIDATES if name != counts_path.name and (root / name).exists()
    ]


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
        _refuse_first(
            ~np.isfinite(values),
            file,
            lambda i, n, col=col: (
                f"column {col!r} has a missing or non-numeric value "
                f"{frame[col].iloc[i]!r} on line {i + first_line} ({n:,} such rows)"
            ),
        )
        if col.startswith("pxl_"):
            out[col] = values
        else:
            # Grid indices are small integers; from ±2**53 on a float no longer holds every integer
            # (and beyond ±2**63 the int64 cast would wrap around).
            _refuse_first(
                (values != np.round(values)) | (np.abs(values) > _MAX_GRID_INDEX),
                file,
                lambda i, n, col=col: (
                    f"column {col!r} must hold integers (grid indices); line "
                    f"{i + first_line} has {frame[col].iloc[i]!r}"
                ),
            )
            out[col] = values.astype(np.int64)
    if not out.index.is_unique:
        dup = out.index[out.index.duplicated()][0]
        raise FileFormatError(file, f"barcode {dup!r} appears more than once")
    return out


def _refuse_first(bad: np.ndarray, file: Path, problem) -> None:
    """Raise ``FileFormatError(file, problem(i, n))`` for the first of ``n`` rows ``bad`` marks."""
    if bad.any():
        raise FileFormatError(file, problem(int(np.flatnonzero(bad)[0]), int(bad.sum())))
