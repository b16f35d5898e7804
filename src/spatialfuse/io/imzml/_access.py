"""Reading spectra out of the memory-mapped ``.ibd``."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from spatialfuse.errors import FileFormatError
from spatialfuse.io.imzml._table import DTYPE_CODES, SpectrumTable


class IbdAccess:
    """Typed, zero-copy access to the arrays of one ``.ibd`` through its offset table.

    Parameters
    ----------
    mm
        The memory-mapped ``.ibd``.
    table
        The offset table (already validated against the file size).
    path
        The ``.ibd`` path, for error messages.
    """

    def __init__(self, mm, table: SpectrumTable, path: Path):
        self.mm = mm
        self.table = table
        self.path = path
        self.size = len(mm)
        # Python lists: indexing them in per-spectrum loops is far cheaper than numpy scalars.
        self._cols = {
            prefix: (
                getattr(table, f"{prefix}_offset").tolist(),
                getattr(table, f"{prefix}_length").tolist(),
                getattr(table, f"{prefix}_enc").tolist(),
                [DTYPE_CODES[c] for c in getattr(table, f"{prefix}_dtype").tolist()],
                getattr(table, f"{prefix}_comp").tolist(),
            )
            for prefix in ("mz", "int")
        }
        self.compressed = bool(table.mz_comp.any() or table.int_comp.any())
        self._views: dict[tuple[str, int], np.ndarray] = {}

    def array(self, i: int, prefix: str) -> np.ndarray:
        """Array ``prefix`` ("mz" or "int") of spectrum ``i``; a read-only view when uncompressed."""
        offsets, lengths, encs, dtypes, comps = self._cols[prefix]
        length, dtype = lengths[i], dtypes[i]
        if length == 0:
            return np.empty(0, dtype=dtype)
        if not comps[i]:
            return np.frombuffer(self.mm, dtype=dtype, count=length, offset=offsets[i])
        raw = self.mm[offsets[i] : offsets[i] + encs[i]]
        try:
            data = zlib.decompress(raw)
        except zlib.error as exc:
            raise FileFormatError(self.path, f"spectrum {i}: zlib data is corrupt ({exc})") from exc
        values = np.frombuffer(data, dtype=dtype)
        if values.size != length:
            raise FileFormatError(
                self.path,
                f"spectrum {i}: decompressed array has {values.size} values, "
                f"the imzML declares {length}",
            )
        return values

    def concatenated(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """m/z, intensities and spectrum lengths of spectra ``start:stop`` as flat arrays."""
        mz = [self.array(i, "mz") for i in range(start, stop)]
        intensity = [self.array(i, "int") for i in range(start, stop)]
        lengths = np.fromiter(map(len, mz), dtype=np.int64, count=stop - start)
        if not np.array_equal(lengths, np.fromiter(map(len, intensity), np.int64, stop - start)):
            bad = start + int(np.flatnonzero(lengths != [len(a) for a in intensity])[0])
            raise FileFormatError(
                self.path,
                f"spectrum {bad}: m/z and intensity arrays differ in length; "
                "they cannot be paired into peaks",
            )
        if not mz:
            return np.empty(0), np.empty(0), lengths
        return np.concatenate(mz), np.concatenate(intensity), lengths

    def typed_view(self, dtype: np.dtype, residue: int) -> np.ndarray:
        """The whole ``.ibd`` as ``dtype`` starting at byte ``residue`` (zero copy, maybe unaligned)."""
        key = (dtype.str, residue)
        if key not in self._views:
            count = (self.size - residue) // dtype.itemsize
            self._views[key] = np.frombuffer(self.mm, dtype=dtype, count=count, offset=residue)
        return self._views[key]

    def gather(self, dtype: np.dtype, byte_offsets: np.ndarray) -> np.ndarray:
        """Values of ``dtype`` at arbitrary byte offsets, vectorised."""
        out = np.empty(byte_offsets.shape, dtype=dtype)
        residues = byte_offsets % dtype.itemsize
        for residue in np.unique(residues).tolist():
            sel = residues == residue
            view = self.typed_view(dtype, residue)
            out[sel] = view[(byte_offsets[sel] - residue) // dtype.itemsize]
        return out

    def close(self) -> None:
        """Drop the cached views so the map can be closed."""
        self._views.clear()
