"""The offset table: where every spectrum's arrays are in the ``.ibd`` and how they are encoded."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from spatialfuse.errors import FileFormatError

#: dtype codes stored per array; the order is part of the cache format.
DTYPE_CODES: tuple[np.dtype, ...] = (
    np.dtype("<f4"),
    np.dtype("<f8"),
    np.dtype("<i4"),
    np.dtype("<i8"),
)
COMPRESSION_CODES: tuple[str, ...] = ("none", "zlib")
MISSING = -1
#: An upper bound of deflate's compression ratio (its true maximum is about 1,032).
ZLIB_MAX_RATIO = 1100


def dtype_code(dtype: np.dtype) -> int:
    """The table code of ``dtype``."""
    return DTYPE_CODES.index(np.dtype(dtype))


@dataclass
class SpectrumTable:
    """Per-spectrum positions and array locations, as parallel numpy arrays (one row a spectrum).

    ``*_enc`` is the encoded length in bytes (``MISSING`` where the file omits it).
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    mz_offset: np.ndarray
    mz_length: np.ndarray
    mz_enc: np.ndarray
    mz_dtype: np.ndarray
    mz_comp: np.ndarray
    int_offset: np.ndarray
    int_length: np.ndarray
    int_enc: np.ndarray
    int_dtype: np.ndarray
    int_comp: np.ndarray

    @property
    def n(self) -> int:
        """Number of spectra."""
        return len(self.x)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """All columns, for caching."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays) -> SpectrumTable:
        """Inverse of :meth:`to_arrays`; raise ValueError unless the columns form a valid table.

        (The arrays may come from a damaged cache entry.)
        """
        table = cls(**{f.name: np.asarray(arrays[f.name]) for f in fields(cls)})
        columns = table.to_arrays()
        n = table.x.shape[0] if table.x.ndim == 1 else -1
        for name, values in columns.items():
            if values.ndim != 1 or values.shape[0] != n or values.dtype.kind not in "iu":
                raise ValueError(f"column {name} is not {n} integers")
        for name, limit in (
            ("mz_dtype", len(DTYPE_CODES)),
            ("int_dtype", len(DTYPE_CODES)),
            ("mz_comp", len(COMPRESSION_CODES)),
            ("int_comp", len(COMPRESSION_CODES)),
        ):
            if n and (int(columns[name].min()) < 0 or int(columns[name].max()) >= limit):
                raise ValueError(f"column {name} holds an unknown code")
        return table

    @classmethod
    def from_columns(cls, **columns) -> SpectrumTable:
        """Build a table from sequences, casting each column to its storage type."""
        small = {"mz_dtype", "mz_comp", "int_dtype", "int_comp"}
        return cls(
            **{
                name: np.asarray(values, dtype=np.uint8 if name in small else np.int64)
                for name, values in columns.items()
            }
        )

    def finalise(self, ibd_size: int, path: Path, ibd_path: Path) -> None:
        """Fill missing encoded lengths and check every array lies inside the ``.ibd``.

        Each check reports the first spectrum that fails it (over both arrays).
        """
        itemsizes = np.array([d.itemsize for d in DTYPE_CODES], dtype=np.int64)
        cols = {}
        for prefix in ("mz", "int"):
            label = "m/z" if prefix == "mz" else "intensity"
            offset = getattr(self, f"{prefix}_offset")
            length = getattr(self, f"{prefix}_length")
            enc = getattr(self, f"{prefix}_enc")
            comp = getattr(self, f"{prefix}_comp")
            itemsize = itemsizes[getattr(self, f"{prefix}_dtype")]
            uncompressed = comp == 0
            missing = enc == MISSING
            cols[label] = (offset, length, enc, itemsize, uncompressed, missing)

        def first(test) -> tuple[int, str] | None:
            hits = [
                (int(idx[0]), order, label)
                for order, (label, col) in enumerate(cols.items())
                if (idx := np.flatnonzero(test(*col))).size
            ]
            return min(hits)[0::2] if hits else None

        bad = first(lambda o, n, e, s, u, m: m & ~u)
        if bad:
            raise FileFormatError(
                path,
                f"spectrum {bad[0]}: compressed {bad[1]} array without an external encoded "
                "length (IMS:1000104); its size in the .ibd is unknown",
            )
        for _offset, length, enc, itemsize, uncompressed, _ in cols.values():
            # Uncompressed arrays are read as length x itemsize bytes, whatever the file claims as
            # encoded length (several writers get that field wrong; readers ignore it). Lengths are
            # clipped so that the product cannot overflow; a clipped length cannot fit the file.
            raw = np.minimum(length, np.iinfo(np.int64).max // 8) * itemsize
            enc[uncompressed] = raw[uncompressed]
        bad = first(lambda o, n, e, s, u, m: (o < 0) | (n < 0) | (e < 0))
        if bad:
            raise FileFormatError(
                path, f"spectrum {bad[0]}: negative {bad[1]} array offset or length"
            )
        # offset + enc > ibd_size, written so that it cannot overflow
        bad = first(lambda o, n, e, s, u, m: (o > ibd_size - e) | (n > ibd_size // s) & u)
        if bad:
            i, label = bad
            offset, length, enc, itemsize, uncompressed, _ = cols[label]
            size = int(length[i]) * int(itemsize[i]) if uncompressed[i] else int(enc[i])
            raise FileFormatError(
                ibd_path,
                f"spectrum {i} ({label} array) needs bytes {offset[i]}..{int(offset[i]) + size} "
                f"but the .ibd has only {ibd_size} bytes: it is truncated or the offsets in "
                f"{path.name} are wrong",
            )
        # zlib inflates at most ~1,032-fold: a larger declared size cannot be in the file.
        bad = first(lambda o, n, e, s, u, m: ~u & (n > (ZLIB_MAX_RATIO * e + 1024) // s))
        if bad:
            i, label = bad
            raise FileFormatError(
                path,
                f"spectrum {i}: the compressed {label} array declares {cols[label][1][i]:,} values "
                f"but has {cols[label][2][i]:,} bytes, which zlib cannot inflate that far",
            )
        bad = first(lambda o, n, e, s, u, m: (o < 16) & (e > 0))
        if bad and ibd_size >= 16:
            i, label = bad
            raise FileFormatError(
                path,
                f"spectrum {i}: {label} array offset {cols[label][0][i]} points into "
                "the 16-byte UUID at the start of the .ibd",
            )
        # Each intensity array is another pixel's data, so together they cannot need more bytes
        # than the .ibd holds. Where they do, arrays overlap (spectra declaring the same bytes over
        # and over) and a table of them would be many times the size of the files.
        stored = cols["intensity"][2].astype(np.float64)  # float: the sum must not wrap around
        total = float(stored.sum())
        if total > ibd_size:
            i = int(np.searchsorted(np.cumsum(stored), ibd_size, side="right"))
            raise FileFormatError(
                path,
                f"the intensity arrays of its {self.n:,} spectra declare {total:,.0f} bytes in "
                f"all, more than the {ibd_size:,} bytes of {ibd_path.name} (used up by spectrum "
                f"{i}): arrays overlap, so their offsets or lengths are wrong",
            )
