"""Reading spectra out of the memory-mapped ``.ibd``."""

from __future__ import annotations

import mmap
import zlib
from pathlib import Path

import numpy as np

from spatialfuse.errors import FileFormatError
from spatialfuse.io.imzml._table import DTYPE_CODES, SpectrumTable

#: Bytes per value of each dtype code.
_ITEMSIZES = np.array([dtype.itemsize for dtype in DTYPE_CODES], dtype=np.int64)


def give_back_pages(mm, start: int, stop: int) -> None:
    """Unmap the pages of ``mm[start:stop]`` from this process (``MADV_DONTNEED``).

    On a read-only file map this drops only the process's mapping of the pages: the kernel's page
    cache keeps them, and a later read maps them again, same bytes, so it is always safe. Objects
    without ``madvise`` (the ``b""`` of an empty file) are left alone.
    """
    if stop <= start or not hasattr(mm, "madvise"):
        return
    start -= start % mmap.PAGESIZE
    stop = min(stop, len(mm))
    if stop > start:
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)


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

    #: Give the pages of each block back once read (:meth:`done_with`): set by one-pass readers
    #: (``read_imzml``), whose passes never come back to a block. A mapped page stays in the
    #: process (and its RSS) until unmapped, so without this reading a 12 GB ``.ibd`` grows the
    #: process by 12 GB of file pages although it keeps only the table.
    stream = False

    def __init__(self, mm, table: SpectrumTable, path: Path):
        self.mm = mm
        self.table = table
        self.path = path
        self.size = len(mm)
        self._lists: dict | None = None
        self.compressed = bool(table.mz_comp.any() or table.int_comp.any())
        #: Spectra whose m/z and intensity arrays differ in length.
        self.mismatched = np.flatnonzero(table.mz_length != table.int_length)
        self._views: dict[tuple[str, int], np.ndarray] = {}

    @property
    def _cols(self) -> dict:
        """Per prefix, the table's columns as Python lists, built on first use.

        Indexing lists in per-spectrum loops is far cheaper than numpy scalars; building them
        on open cost ~25 ms of a cold open of 90,000 spectra (issue 17), unused by ion images.
        """
        if self._lists is None:
            table = self.table
            self._lists = {
                prefix: (
                    getattr(table, f"{prefix}_offset").tolist(),
                    getattr(table, f"{prefix}_length").tolist(),
                    getattr(table, f"{prefix}_enc").tolist(),
                    [DTYPE_CODES[c] for c in getattr(table, f"{prefix}_dtype").tolist()],
                    getattr(table, f"{prefix}_comp").tolist(),
                )
                for prefix in ("mz", "int")
            }
        return self._lists

    def array(self, i: int, prefix: str) -> np.ndarray:
        """Array ``prefix`` ("mz" or "int") of spectrum ``i``; read-only view if uncompressed."""
        offsets, lengths, encs, dtypes, comps = self._cols[prefix]
        length, dtype = lengths[i], dtypes[i]
        if length == 0:
            return np.empty(0, dtype=dtype)
        if not comps[i]:
            # A slice of a whole-file typed view is several times cheaper than np.frombuffer.
            offset = offsets[i]
            residue = offset % dtype.itemsize
            start = (offset - residue) // dtype.itemsize
            return self.typed_view(dtype, residue)[start : start + length]
        raw = self.mm[offsets[i] : offsets[i] + encs[i]]
        expected = length * dtype.itemsize
        try:
            inflater = zlib.decompressobj()
            # Never inflate more than one byte beyond the declared size (a zip bomb stops there).
            data = inflater.decompress(raw, expected + 1)
        except zlib.error as exc:
            raise FileFormatError(self.path, f"spectrum {i}: zlib data is corrupt ({exc})") from exc
        if len(data) != expected:
            size = f"{len(data)} bytes" if len(data) < expected else f"more than {expected} bytes"
            raise FileFormatError(
                self.path,
                f"spectrum {i}: decompressed {'m/z' if prefix == 'mz' else 'intensity'} array has "
                f"{size}, the imzML declares {length} values of {dtype.itemsize} bytes",
            )
        if not inflater.eof:
            raise FileFormatError(
                self.path, f"spectrum {i}: zlib data is corrupt (incomplete or truncated stream)"
            )
        return np.frombuffer(data, dtype=dtype)

    def concatenated(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """m/z, intensities and peak counts of spectra ``start:stop`` as flat arrays.

        Where a spectrum's m/z and intensity arrays differ in length (some writers emit such
        files), peaks are paired by index over the shorter one.
        """
        mz = [self.array(i, "mz") for i in range(start, stop)]
        intensity = [self.array(i, "int") for i in range(start, stop)]
        if self.mismatched.size:
            for i in self.mismatched[(self.mismatched >= start) & (self.mismatched < stop)]:
                n = min(len(mz[i - start]), len(intensity[i - start]))
                mz[i - start], intensity[i - start] = mz[i - start][:n], intensity[i - start][:n]
        lengths = np.fromiter(map(len, mz), dtype=np.int64, count=stop - start)
        if not mz:
            return np.empty(0), np.empty(0), lengths
        out = np.concatenate(mz), np.concatenate(intensity), lengths
        del mz, intensity
        self.done_with(start, stop)  # the arrays above are copies
        return out

    def done_with(self, start: int, stop: int) -> None:
        """With :attr:`stream` set: unmap the pages of spectra ``start:stop`` from this process.

        See :func:`give_back_pages`; spectra laid out out of order only cost re-reads.
        """
        if not self.stream or stop <= start:
            return
        t = self.table
        first, last = self.size, 0
        for prefix in ("mz", "int"):
            offset = getattr(t, f"{prefix}_offset")[start:stop]
            stored = (
                getattr(t, f"{prefix}_length")[start:stop]
                * _ITEMSIZES[getattr(t, f"{prefix}_dtype")[start:stop]]
            )
            stored = np.maximum(stored, getattr(t, f"{prefix}_enc")[start:stop])
            first = min(first, int(offset.min()))
            last = max(last, int((offset + stored).max()))
        give_back_pages(self.mm, first, last)

    def typed_view(self, dtype: np.dtype, residue: int) -> np.ndarray:
        """The whole ``.ibd`` as ``dtype`` from byte ``residue`` (zero copy, maybe unaligned)."""
        key = (dtype.str, residue)
        view = self._views.get(key)
        if view is None:
            count = (self.size - residue) // dtype.itemsize
            view = np.frombuffer(self.mm, dtype=dtype, count=count, offset=residue)
            self._views[key] = view
        return view

    def gather(self, dtype: np.dtype, byte_offsets: np.ndarray) -> np.ndarray:
        """Values of ``dtype`` at arbitrary byte offsets, vectorised."""
        out = np.empty(byte_offsets.shape, dtype=dtype)
        residues = byte_offsets % dtype.itemsize
        # The residues present, in order (np.unique would import numpy.ma: ~40 ms cold).
        for residue in np.flatnonzero(np.bincount(residues.ravel())).tolist():
            sel = residues == residue
            view = self.typed_view(dtype, residue)
            out[sel] = view[(byte_offsets[sel] - residue) // dtype.itemsize]
        return out

    def close(self) -> None:
        """Drop the cached views so the map can be closed."""
        self._views.clear()
