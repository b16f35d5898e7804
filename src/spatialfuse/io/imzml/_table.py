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
        """Inverse of :meth:`to_arrays`."""
        return cls(**{f.name: np.asarray(arrays[f.name]) for f in fields(cls)})

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
        """Fill missing encoded lengths and check every array lies inside the ``.ibd``."""
        for prefix in ("mz", "int"):
            label = "m/z" if prefix == "mz" else "intensity"
            offset = getattr(self, f"{prefix}_offset")
            length = getattr(self, f"{prefix}_length")
            enc = getattr(self, f"{prefix}_enc")
            comp = getattr(self, f"{prefix}_comp")
            itemsize = np.array([d.itemsize for d in DTYPE_CODES])[getattr(self, f"{prefix}_dtype")]
            raw = length * itemsize
            uncompressed = comp == 0
            missing = enc == MISSING
            bad = np.flatnonzero(missing & ~uncompressed)
            if bad.size:
                raise FileFormatError(
                    path,
                    f"spectrum {bad[0]}: compressed {label} array without an external encoded "
                    "length (IMS:1000104); its size in the .ibd is unknown",
                )
            # Uncompressed arrays are read as length x itemsize bytes, whatever the file claims as
            # encoded length (several writers get that field wrong; readers ignore it).
            enc[uncompressed] = raw[uncompressed]
            neg = np.flatnonzero((offset < 0) | (length < 0) | (enc < 0))
            if neg.size:
                raise FileFormatError(
                    path, f"spectrum {neg[0]}: negative {label} array offset or length"
                )
            beyond = np.flatnonzero(offset + enc > ibd_size)
            if beyond.size:
                i = beyond[0]
                raise FileFormatError(
                    ibd_path,
                    f"spectrum {i} ({label} array) needs bytes {offset[i]}..{offset[i] + enc[i]} "
                    f"but the .ibd has only {ibd_size} bytes: it is truncated or the offsets in "
                    f"{path.name} are wrong",
                )
            before = np.flatnonzero((offset < 16) & (enc > 0))
            if before.size and ibd_size >= 16:
                raise FileFormatError(
                    path,
                    f"spectrum {before[0]}: {label} array offset {offset[before[0]]} points into "
                    "the 16-byte UUID at the start of the .ibd",
                )
