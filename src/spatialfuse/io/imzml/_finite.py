"""NaN and infinite intensities: every value computed from them reads them as 0.

Converters sometimes write NaN or ±inf intensities. Every path that turns intensities into MSI
values (TIC, ion images, window sums, mean spectra, the tables of ``read_imzml`` and
``convert_imzml``) reads them as 0, and its caller warns once with how many there were.

Finding them costs nothing on clean data: a sum over a NaN or ±inf is itself NaN or ±inf, so the
cells of a result that such values touched are exactly its non-finite ones. Only those cells are
recomputed, from their spectrum with the non-finite intensities set to 0. (A sum of finite values
that overflows stays infinite: its spectrum holds nothing to zero.)

Functions return ``found``: ``{spectrum index: number of NaN/±inf intensities in it}``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from spatialfuse.errors import DataWarning
from spatialfuse.io.imzml._access import IbdAccess

Found = dict[int, int]


def all_finite(values: np.ndarray) -> bool:
    """Whether ``values`` holds no NaN or ±inf, without allocating an array of its size."""
    if values.dtype.kind not in "fc" or values.size == 0:
        return True
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(np.add.reduce(values, axis=None)):
            return True
    return bool(np.isfinite(values).all())  # finite values whose sum overflowed, or not


def zeroed(values: np.ndarray) -> np.ndarray:
    """``values`` itself where all are finite, else a copy with NaN/±inf set to 0."""
    if all_finite(values):
        return values
    out = np.array(values, copy=True)
    out[~np.isfinite(out)] = 0
    return out


def zero_rows(table: np.ndarray, rows) -> None:
    """Set the NaN/±inf values of ``table[rows]`` (a dense 2-D array) to 0, in place."""
    for i in rows:
        row = table[i]
        row[~np.isfinite(row)] = 0


def _count(intensity: np.ndarray) -> int:
    if intensity.dtype.kind != "f":
        return 0
    return int(np.count_nonzero(~np.isfinite(intensity)))


def finite_spectrum(acc: IbdAccess, i: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Spectrum ``i`` as float64 ``(mz, intensity)`` with NaN/±inf intensities set to 0.

    Arrays of different lengths are paired over the shorter one (as every summing path does);
    the count is of the whole stored intensity array.
    """
    mz, intensity = acc.array(i, "mz"), acc.array(i, "int")
    count = _count(intensity)
    n = min(mz.size, intensity.size)
    values = intensity[:n].astype(np.float64)
    if count:
        values[~np.isfinite(values)] = 0.0
    return mz[:n].astype(np.float64), values, count


def repair_tic(acc: IbdAccess, tic: np.ndarray, start: int = 0) -> Found:
    """Recompute, in place, the non-finite sums of ``tic`` (spectra ``start, start + 1, ...``)."""
    found: Found = {}
    for r in np.flatnonzero(~np.isfinite(tic)).tolist():
        intensity = acc.array(start + r, "int")
        count = _count(intensity)
        if count:
            tic[r] = float(intensity[np.isfinite(intensity)].sum(dtype=np.float64))
            found[start + r] = count
    return found


def _cell_sums(acc, lo, hi, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, Found]:
    """Window sums of cells ``(rows[k], cols[k])`` over finite intensities only."""
    out = np.empty(rows.size, dtype=np.float64)
    found: Found = {}
    order = np.argsort(rows, kind="stable")
    bounds = np.flatnonzero(np.diff(rows[order])) + 1
    for cells in np.split(order, bounds):
        if cells.size == 0:
            continue
        i = int(rows[cells[0]])
        mz, intensity, count = finite_spectrum(acc, i)
        if count:
            found[i] = count
        for k in cells.tolist():
            j = cols[k]
            out[k] = intensity[(mz >= lo[j]) & (mz <= hi[j])].sum()
    return out, found


def repair_window_sums(acc: IbdAccess, lo, hi, sums: np.ndarray, start: int = 0) -> Found:
    """Recompute, in place, the non-finite cells of ``sums`` over finite intensities.

    ``sums`` is dense: spectra ``start, start + 1, ...`` × windows ``[lo, hi]``.
    """
    if all_finite(sums):
        return {}
    rows, cols = np.nonzero(~np.isfinite(sums))
    values, found = _cell_sums(acc, lo, hi, rows + start, cols)
    sums[rows, cols] = values
    return found


def repair_csr(acc: IbdAccess, lo, hi, matrix) -> Found:
    """:func:`repair_window_sums` for a CSR matrix of all spectra (explicit zeros removed)."""
    bad = np.flatnonzero(~np.isfinite(matrix.data))
    if bad.size == 0:
        return {}
    rows = np.searchsorted(matrix.indptr, bad, side="right") - 1
    values, found = _cell_sums(acc, lo, hi, rows, matrix.indices[bad])
    matrix.data[bad] = values
    matrix.eliminate_zeros()
    return found


def warn_nonfinite(path: str | os.PathLike, found: Found, *, stacklevel: int = 2) -> None:
    """Warn once that the NaN/±inf intensities in ``found`` were read as 0 (if there are any)."""
    if not found:
        return
    warnings.warn(
        nonfinite_message(path, sum(found.values()), len(found)),
        DataWarning,
        stacklevel=stacklevel + 1,
    )


def nonfinite_message(path: str | os.PathLike, n_values: int, n_spectra: int) -> str:
    """The words of the warning about ``n_values`` NaN/±inf intensities in ``n_spectra``."""
    return (
        f"{os.fspath(path)}: {n_values} NaN or infinite intensities in {n_spectra} spectra were "
        "read as 0 (a converter fault?)"
    )
