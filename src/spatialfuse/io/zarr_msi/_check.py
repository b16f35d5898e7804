"""Checks of an MSI zarr store, made before any of it is loaded.

Every array the readers use must exist with the kind, shape and dtype the others imply, and the
files must be able to hold what the store declares: ``X`` has every chunk ``convert_imzml`` writes
(a missing one would read as zeros), and no declared size is larger than its stored bytes inflated
by the most its codecs can (so a damaged shape is refused before anything is allocated).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spatialfuse.errors import FileFormatError

#: The most each bytes-to-bytes codec can inflate (zstd: a 128 KiB block as a 4-byte RLE block;
#: deflate: ~1,032; blosc: its inner codec, at most zstd's). Others count as the largest.
_MAX_RATIO = {"zstd": 33_000, "gzip": 1_100, "blosc": 33_000, "crc32c": 1}
_UNKNOWN_RATIO = 33_000
#: Bytes an element takes at least before compression: a vlen-utf8 string has a 4-byte length.
_MIN_STRING_BYTES = 4
#: numpy dtype kinds of grid positions and of other numeric columns.
_INTEGERS, _NUMBERS = "i", "fiu"


@dataclass(frozen=True)
class StoreLayout:
    """What the checks established: ``X`` is ``n × k``; the store's attributes."""

    n: int
    k: int
    provenance: dict
    nonfinite: tuple[int, int]  # NaN/±inf intensities of the source, and in how many spectra


def _fail(path: Path, message: str):
    raise FileFormatError(path, f"damaged MSI store: {message}")


def _member(path: Path, group, name: str, kind: str):
    """``group[name]``, which must be a zarr ``kind`` ("array" or "group")."""
    where = f"{group.path}/{name}".lstrip("/")
    try:
        member = group[name]
    except KeyError:
        _fail(path, f"{where} is missing")
    except Exception as exc:  # zarr raises many types for unreadable metadata
        _fail(path, f"{where} cannot be opened ({type(exc).__name__}: {exc})")
    if (kind == "array") != hasattr(member, "shape"):
        _fail(path, f"{where} is not a zarr {kind}")
    return member


def _codec_names(array) -> list[str]:
    return [codec.to_dict()["name"] for codec in getattr(array.metadata, "codecs", ())]


def _max_ratio(array) -> int:
    ratio = 1
    names = _codec_names(array)
    if names == ["sharding_indexed"]:  # a shard's inner codecs compress its chunks
        names = [codec.to_dict()["name"] for codec in array.metadata.codecs[0].codecs]
    for name in names:
        if name not in ("bytes", "vlen-utf8", "vlen-bytes", "transpose"):
            ratio *= _MAX_RATIO.get(name, _UNKNOWN_RATIO)
    return ratio


def _stored_bytes(folder: Path) -> tuple[int, int]:
    """Number and total size of the chunk files below ``folder`` (its metadata excluded)."""
    count = size = 0
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            if name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
                continue
            count += 1
            size += os.stat(os.path.join(parent, name)).st_size
    return count, size


def _check_holds(path: Path, array, declared: int, stored: int, what: str) -> None:
    if declared > stored * _max_ratio(array):
        _fail(
            path,
            f"{array.path} declares {what} ({declared:,} bytes), more than its {stored:,} stored "
            "bytes can hold",
        )


def _check_x(path: Path, x) -> tuple[int, int]:
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        _fail(path, f"X is {x.ndim}-D {x.dtype}, not a 2-D numeric table")
    n, k = (int(v) for v in x.shape)
    rows, cols = (int(v) for v in x.chunks)
    if min(rows, cols) < 1 or rows > max(n, 1) or cols > max(k, 1):
        _fail(path, f"X's chunks of {rows} × {cols} do not fit X's {n} × {k} values")
    # A sharded X (zarr v3) stores a file per shard, a block of whole chunks; else one per chunk.
    shards = getattr(x, "shards", None)
    unit, files = (rows, cols), "chunk files"
    if shards is not None:
        unit, files = tuple(int(v) for v in shards), "shard files"
        if unit[0] != rows:
            _fail(path, f"X's shards of {unit[0]} × {unit[1]} are not one row of chunks")
    expected = -(-n // unit[0]) * -(-k // unit[1])
    what = f"chunks of {rows} × {cols}" + ("" if shards is None else f" in shards of {unit[1]}")
    folder = path / x.path
    count, _ = _stored_bytes(folder)
    if count != expected:
        _fail(
            path,
            f"X declares {n:,} × {k:,} values in {expected:,} {what}, but "
            f"{count:,} {files} are stored: the store is incomplete or its shape is wrong",
        )
    if expected:
        first = folder / x.metadata.encode_chunk_key((0, 0))
        size = first.stat().st_size if first.is_file() else 0
        declared = unit[0] * unit[1] * x.dtype.itemsize
        _check_holds(path, x, declared, size, what)
        if _max_ratio(x) == 1 and shards is None and size != declared:
            _fail(path, f"X's first chunk has {size:,} bytes, not the {declared:,} it declares")
    return n, k


def _check_table(path: Path, group, length: int, required: dict[str, str]) -> None:
    """Columns of a dataframe group: 1-D, ``length`` long; ``required`` ones of a dtype kind."""
    for name, kinds in required.items():
        column = _member(path, group, name, "array")
        if column.dtype.kind not in kinds:
            wanted = "integers" if kinds == _INTEGERS else "numbers"
            _fail(path, f"{column.path} holds {column.dtype}, not {wanted}")
    index = group.attrs.get("_index", "_index")
    if not isinstance(index, str):
        _fail(path, f"{group.path}'s _index attribute is {index!r}, not a column name")
    names = _member(path, group, index, "array")
    _, stored = _stored_bytes(path / names.path)
    _check_holds(path, names, length * _MIN_STRING_BYTES, stored, f"{length:,} names")
    for _, member in group.members(max_depth=None):
        if hasattr(member, "shape") and tuple(member.shape) != (length,):
            _fail(path, f"{member.path} has shape {tuple(member.shape)}, X implies ({length},)")


def check_store(path: Path, root) -> StoreLayout:
    """Check the store at ``path`` (open as ``root``); raise FileFormatError naming the fault."""
    provenance = root.attrs.get("spatialfuse")
    if not isinstance(provenance, dict):
        _fail(path, "the root attribute 'spatialfuse' (provenance) is missing or not a mapping")
    info = root.attrs.get("spatialfuse_store", {})
    nonfinite = info.get("nonfinite_intensities", [0, 0])
    if not (
        isinstance(nonfinite, list)
        and len(nonfinite) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in nonfinite)
    ):
        _fail(path, f"spatialfuse_store.nonfinite_intensities is {nonfinite!r}, not two counts")
    n, k = _check_x(path, _member(path, root, "X", "array"))
    spectra = provenance.get("n_spectra", n)
    if not isinstance(spectra, int) or spectra != n:
        _fail(path, f"the provenance says {spectra!r} spectra, X has {n:,} rows")
    obs = _member(path, root, "obs", "group")
    _check_table(path, obs, n, {"imzml_x": _INTEGERS, "imzml_y": _INTEGERS, "tic": _NUMBERS})
    _check_table(path, _member(path, root, "var", "group"), k, {"mz": _NUMBERS})
    spatial = _member(path, _member(path, root, "obsm", "group"), "spatial", "array")
    if tuple(spatial.shape) != (n, 2) or spatial.dtype.kind not in _NUMBERS:
        _fail(path, f"obsm/spatial is {tuple(spatial.shape)} {spatial.dtype}, not ({n}, 2) numbers")
    return StoreLayout(n, k, provenance, (nonfinite[0], nonfinite[1]))


def chunk_error(path, exc: Exception, where: str) -> FileFormatError:
    """The error for a chunk of X that cannot be decoded."""
    return FileFormatError(
        path, f"damaged MSI store: X {where} cannot be read ({type(exc).__name__}: {exc})"
    )
