"""Vectorised per-pixel work on imzML data: ion images, feature tables, TIC and mean spectra.

Three access patterns, chosen by the data layout:

* **shared m/z axis** (continuous files): intensities form an (n_spectra, n_mz) matrix, mapped as
  a strided view of the ``.ibd`` where the arrays are evenly spaced; a window is a column range, so
  an ion image reads only those columns and a feature table sums column ranges (``reduceat``);
* **per-spectrum m/z, few windows** (processed files): a segmented binary search runs for all
  spectra at once, narrowed by a per-reader sketch of every K-th m/z, instead of reading spectra;
* **per-spectrum m/z, many windows**: one pass over chunks of spectra; each peak finds its window by
  a binary search into the sorted window edges, and ``bincount`` accumulates.

Windows are closed intervals ``[lo, hi]`` compared in float64, like ``bisect_left``/``bisect_right``
over the spectrum's own values.
"""

from __future__ import annotations

import numpy as np

from spatialfuse._logging import progress
from spatialfuse.core.mz import WindowLookup
from spatialfuse.io.imzml import _finite
from spatialfuse.io.imzml._access import IbdAccess
from spatialfuse.io.imzml._table import DTYPE_CODES

#: Values looked up in one call of a window lookup (its temporaries stay in the CPU cache).
LOOKUP_SLICE = 1 << 17

#: Bytes of intensity data handled per chunk in chunked passes.
CHUNK_BYTES = 32 << 20
#: Up to this many windows, processed files use the segmented binary search.
BISECTION_MAX_WINDOWS = 16

#: Values stepped over one at a time before a window's upper end is bisected.
LINEAR_PROBES = 4
#: Largest number of m/z values kept in the per-reader sketch that narrows segment searches.
SKETCH_VALUES = 4_000_000


def shared_mz_axis(acc: IbdAccess) -> np.ndarray | None:
    """The m/z array every spectrum shares, or None when spectra have their own."""
    t = acc.table
    if t.n == 0:
        return None
    same = (
        (t.mz_offset == t.mz_offset[0]).all()
        and (t.mz_length == t.mz_length[0]).all()
        and (t.mz_dtype == t.mz_dtype[0]).all()
        and (t.mz_comp == t.mz_comp[0]).all()
        and (t.int_length == t.mz_length[0]).all()
        and (t.int_dtype == t.int_dtype[0]).all()
    )
    if not same:
        return None
    return np.asarray(acc.array(0, "mz"), dtype=np.float64)


def intensity_matrix(acc: IbdAccess) -> np.ndarray | None:
    """Intensities as an (n_spectra, n_mz) strided view of the ``.ibd``, where the layout allows."""
    t = acc.table
    if acc.compressed or shared_mz_axis(acc) is None:
        return None
    dtype = DTYPE_CODES[int(t.int_dtype[0])]
    length = int(t.int_length[0])
    if t.n == 1:
        stride = length * dtype.itemsize
    else:
        steps = np.diff(t.int_offset)
        stride = int(steps[0])
        if not (steps == stride).all() or stride < length * dtype.itemsize:
            return None
    return np.ndarray(
        shape=(t.n, length),
        dtype=dtype,
        buffer=acc.mm,
        offset=int(t.int_offset[0]),
        strides=(stride, dtype.itemsize),
    )


def _row_chunks(n: int, row_bytes: int) -> list[tuple[int, int]]:
    rows = max(1, CHUNK_BYTES // max(1, row_bytes))
    return [(a, min(n, a + rows)) for a in range(0, n, rows)]


def _dense_rows(acc: IbdAccess, matrix: np.ndarray | None, a: int, b: int) -> np.ndarray:
    if matrix is not None:
        return matrix[a:b]
    return np.stack([acc.array(i, "int") for i in range(a, b)])


def window_sums(
    acc: IbdAccess,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    dtype=np.float64,
    show_progress: bool = False,
) -> np.ndarray:
    """Sum of intensities inside each window, per spectrum: an (n_spectra, n_windows) array.

    Sums accumulate in float64 within a chunk of spectra and are stored as ``dtype``, so a float32
    table never needs a float64 copy of itself.
    """
    if lo.size == 0 or acc.table.n == 0:
        return np.zeros((acc.table.n, lo.size), dtype=dtype)
    axis = shared_mz_axis(acc)
    if axis is not None:
        return _shared_axis_sums(acc, axis, lo, hi, dtype=dtype, show_progress=show_progress)
    uniform = (
        not acc.compressed
        and (acc.table.mz_dtype == acc.table.mz_dtype[0]).all()
        and (acc.table.int_dtype == acc.table.int_dtype[0]).all()
        and np.array_equal(acc.table.mz_length, acc.table.int_length)
    )
    if uniform and lo.size <= BISECTION_MAX_WINDOWS:
        search = _segment_search(acc)
        out = np.empty((acc.table.n, lo.size), dtype=dtype)
        for j in range(lo.size):
            out[:, j] = _bisection_sums(acc, search, lo[j], hi[j])
        return out
    return _chunked_sums(acc, lo, hi, dtype=dtype, show_progress=show_progress)


def _shared_axis_blocks(acc, axis, lo, hi, *, show_progress):
    """Yield ``(start, stop, sums)`` for chunks of spectra that share the m/z ``axis``."""
    n = acc.table.n
    i0 = np.searchsorted(axis, lo, side="left")
    i1 = np.maximum(np.searchsorted(axis, hi, side="right"), i0)
    matrix = intensity_matrix(acc)
    if matrix is not None and lo.size <= BISECTION_MAX_WINDOWS:
        # Few windows: read just their columns, all rows at once.
        sums = np.zeros((n, lo.size), dtype=np.float64)
        for j in range(lo.size):
            if i1[j] > i0[j]:
                sums[:, j] = matrix[:, i0[j] : i1[j]].sum(axis=1, dtype=np.float64)
        yield 0, n, sums
        return
    # Windows of one layer do not overlap, so their column ranges partition part of the axis and
    # one reduceat per layer sums every window exactly (no differences of running sums).
    layers = []
    for layer in _window_layers(i0.astype(np.float64), i1.astype(np.float64)):
        layer = layer[np.argsort(i0[layer], kind="stable")]
        bounds = np.empty(2 * layer.size, dtype=np.int64)
        bounds[0::2], bounds[1::2] = i0[layer], i1[layer]
        usable = bounds < axis.size  # a segment whose end is dropped runs to the last column
        layers.append((layer, bounds[usable], np.flatnonzero(usable[0::2]), i1[layer] > i0[layer]))
    for a, b in progress(_row_chunks(n, axis.size * 8), show=show_progress, desc="ion images"):
        block = _dense_rows(acc, matrix, a, b)
        sums = np.zeros((b - a, lo.size), dtype=np.float64)
        for layer, bounds, starts, nonempty in layers:
            if bounds.size == 0:
                continue
            segment = np.add.reduceat(block, bounds, axis=1, dtype=np.float64)
            values = np.zeros((b - a, layer.size), dtype=np.float64)
            values[:, starts] = segment[:, 0::2][:, : starts.size]
            values[:, ~nonempty] = 0.0
            sums[:, layer] = values
        del block
        acc.done_with(a, b)
        yield a, b, sums


def _shared_axis_sums(acc, axis, lo, hi, *, dtype, show_progress):
    out = np.empty((acc.table.n, lo.size), dtype=dtype)
    for a, b, sums in _shared_axis_blocks(acc, axis, lo, hi, show_progress=show_progress):
        out[a:b] = sums
    return out


def _threshold(target: float, dtype: np.dtype, side: str):
    """A value of ``dtype`` that splits stored values exactly as float64 ``target`` does.

    ``v < target`` equals ``v < t`` and ``v <= target`` equals ``v <= t`` for every ``v`` of
    ``dtype``, so comparisons run on the stored type without converting every value.
    """
    if dtype.kind != "f":
        return np.float64(target)
    t = dtype.type(target)
    if float(t) == target:
        return t
    if side == "left":  # v < target  <=>  v < (smallest value above target)
        return t if float(t) > target else np.nextafter(t, dtype.type(np.inf))
    return t if float(t) < target else np.nextafter(t, dtype.type(-np.inf))


class _SegmentSearch:
    """Per-spectrum ``searchsorted`` over every spectrum's m/z array at once.

    Spectra are grouped by the alignment of their m/z array in the ``.ibd`` so each group reads
    through one zero-copy typed view. A *sketch* — every ``K``-th m/z of every spectrum, held in a
    compact padded matrix (at most ``SKETCH_VALUES`` values) — narrows each search to one block of
    ``K`` values with a single vectorised comparison; a branch-free bisection of ``log2(K)`` rounds
    finishes inside the block. Build it once per reader (it reads ~1/K of the m/z data).
    """

    def __init__(self, acc: IbdAccess):
        t = acc.table
        self.n = t.n
        self.dtype = DTYPE_CODES[int(t.mz_dtype[0])]
        itemsize = self.dtype.itemsize
        max_len = int(t.mz_length.max()) if t.n else 0
        self.step = max(1, int(np.ceil(max_len * max(t.n, 1) / SKETCH_VALUES)))
        width = max(1, -(-max_len // self.step))
        residue = t.mz_offset % itemsize
        self.groups = []
        # The residues present, in order (np.unique would import numpy.ma: ~40 ms of a cold start).
        for r in np.flatnonzero(np.bincount(residue, minlength=itemsize)).tolist():
            rows = np.flatnonzero(residue == r)
            view = acc.typed_view(self.dtype, r)
            base = (t.mz_offset[rows] - r) // itemsize
            length = t.mz_length[rows]
            positions = np.arange(width) * self.step
            valid = positions[None, :] < length[:, None]
            index = np.where(valid, base[:, None] + positions[None, :], 0)
            sketch = np.where(valid, view[index], np.inf if self.dtype.kind == "f" else 0)
            if self.dtype.kind != "f":
                sketch = np.where(valid, sketch, np.iinfo(self.dtype).max)
            self.groups.append((rows, view, base, length, sketch))

    def __call__(self, target: float, side: str, start: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(self.n, dtype=np.int64)
        threshold = _threshold(target, self.dtype, side)
        for rows, view, base, length, sketch in self.groups:
            last = view.size - 1
            if start is None:
                # The sketch brackets the answer within one block of `step` values.
                below = (sketch < threshold) if side == "left" else (sketch <= threshold)
                count = below.sum(axis=1)
                lo = np.maximum((count - 1) * self.step + 1, 0)
                size = np.maximum(np.minimum(count * self.step, length) - lo, 0)
            else:
                lo = start[rows].copy()
                # Windows are narrow: step past a few values linearly before bisecting the rest.
                going = lo < length
                for _ in range(LINEAR_PROBES):
                    if not going.any():
                        break
                    values = view[np.minimum(base + lo, last)]
                    below = (values < threshold) if side == "left" else (values <= threshold)
                    going &= below
                    lo += going
                    going &= lo < length
                size = np.where(going, length - lo, 0)
            while size.any():
                half = size >> 1
                mid = lo + half
                values = view[np.minimum(base + mid, last)]
                go = (values < threshold) if side == "left" else (values <= threshold)
                go &= size > 0
                lo = np.where(go, mid + 1, lo)
                size = np.where(go, size - half - 1, half)
            out[rows] = lo
        return out


def _segment_search(acc: IbdAccess) -> _SegmentSearch:
    """The reader's segment search, built on first use and kept."""
    search = getattr(acc, "_segment_search", None)
    if search is None:
        search = _SegmentSearch(acc)
        acc._segment_search = search
    return search


def _bisection_sums(acc: IbdAccess, search: _SegmentSearch, lo: float, hi: float) -> np.ndarray:
    t = acc.table
    start = search(lo, "left")
    stop = search(hi, "right", start)
    counts = stop - start
    total = int(counts.sum())
    if total == 0:
        return np.zeros(t.n, dtype=np.float64)
    rows = np.repeat(np.arange(t.n), counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    dtype = DTYPE_CODES[int(t.int_dtype[0])]
    byte_offsets = t.int_offset[rows] + (start[rows] + within) * dtype.itemsize
    values = acc.gather(dtype, byte_offsets)
    return np.bincount(rows, weights=values, minlength=t.n)


def _window_layers(lo: np.ndarray, hi_open: np.ndarray) -> list[np.ndarray]:
    """Split windows into layers in which no two windows overlap."""
    order = np.argsort(lo, kind="stable")
    sorted_lo, sorted_hi = lo[order], hi_open[order]
    if (sorted_lo[1:] >= sorted_hi[:-1]).all():
        return [order]
    layers: list[list[int]] = []
    ends: list[float] = []
    for idx, a, b in zip(order.tolist(), sorted_lo.tolist(), sorted_hi.tolist(), strict=True):
        for layer, end in enumerate(ends):
            if a >= end:
                layers[layer].append(idx)
                ends[layer] = b
                break
        else:
            layers.append([idx])
            ends.append(b)
    return [np.asarray(layer, dtype=np.int64) for layer in layers]


def window_lookups(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, WindowLookup]]:
    """Closed windows ``[lo, hi]`` as layers of disjoint ones: ``(feature indices, lookup)``."""
    hi_open = np.nextafter(hi, np.inf)
    lookups = []
    for layer in _window_layers(lo, hi_open):
        ordered = layer[np.argsort(lo[layer], kind="stable")]
        lookups.append((ordered, WindowLookup(lo[ordered], hi[ordered])))
    return lookups


def peak_cells(mz, intensity, lengths, lookups, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The table cells of concatenated peaks: ``(cell, intensity)`` of each peak in a window.

    ``mz`` and ``intensity`` hold spectra of ``lengths`` peaks one after another; a cell is
    ``spectrum × k + feature`` (spectra counted from the first given), once per window a peak
    falls in, its weight the peak's intensity as float64.
    """
    ends = np.cumsum(lengths)
    mz64 = mz.astype(np.float64, copy=False)
    keys, weights = [], []
    found = np.empty(mz64.size, dtype=np.int64)
    for features, lookup in lookups:
        # In slices whose temporaries stay in the CPU cache (issue 17: the lookup of a tile's
        # peaks took 2-4x longer in one call over tens of millions of values).
        for a in range(0, mz64.size, LOOKUP_SLICE):
            found[a : a + LOOKUP_SLICE] = lookup(mz64[a : a + LOOKUP_SLICE])
        hit = np.flatnonzero(found >= 0)
        keys.append(np.searchsorted(ends, hit, side="right") * k + features[found[hit]])
        weights.append(intensity[hit].astype(np.float64))
        del hit
    return np.concatenate(keys), np.concatenate(weights)


def _chunk_cells(acc, lo, hi, *, show_progress):
    """Yield ``(start, stop, cells, sums)`` per chunk of spectra: non-empty table cells, sorted.

    ``cells`` index the chunk's ``(stop - start) × n_windows`` block in row-major order; ``sums``
    are float64 totals of the peaks in each cell.
    """
    t = acc.table
    k = lo.size
    mean_len = max(1.0, float(t.int_length.mean())) if t.n else 1.0
    rows_per_chunk = max(
        1, min(int(CHUNK_BYTES // (16 * mean_len)), max(1, (CHUNK_BYTES // 8) // k))
    )
    chunks = [(a, min(t.n, a + rows_per_chunk)) for a in range(0, t.n, rows_per_chunk)]
    peaks = (
        (a, b, *acc.concatenated(a, b))
        for a, b in progress(chunks, show=show_progress, desc="ion images")
    )
    yield from _cells_of(peaks, lo, hi)


def _cells_of(peaks, lo, hi):
    """:func:`_chunk_cells` of chunks given as ``(start, stop, mz, intensity, lengths)``."""
    k = lo.size
    lookups = window_lookups(lo, hi)
    for a, b, mz, intensity, lengths in peaks:
        if mz.size == 0:
            continue
        n_cells = (b - a) * k
        key, weight = peak_cells(mz, intensity, lengths, lookups, k)
        if key.size * 4 > n_cells:  # dense chunk: one bincount over all its cells
            sums = np.bincount(key, weights=weight, minlength=n_cells)
            cells = np.flatnonzero(sums)
            yield a, b, cells, sums[cells]
        elif key.size:  # sparse chunk: add up repeats of a cell
            cells, inverse = np.unique(key, return_inverse=True)
            yield a, b, cells, np.bincount(inverse, weights=weight)


def _chunked_sums(acc, lo, hi, *, dtype, show_progress):
    out = np.zeros((acc.table.n, lo.size), dtype=dtype)
    flat = out.reshape(-1)
    for a, _b, cells, sums in _chunk_cells(acc, lo, hi, show_progress=show_progress):
        flat[a * lo.size + cells] = sums
    return out


def _csr_of_cells(n: int, k: int, chunk_cells, dtype):
    """The ``n × k`` CSR matrix of the cells :func:`_chunk_cells` yields, chunk after chunk."""
    from scipy import sparse

    counts = np.zeros(n, dtype=np.int64)
    col_parts, val_parts = [], []
    for a, b, cells, sums in chunk_cells:
        counts[a:b] = np.bincount(cells // k, minlength=b - a)
        col_parts.append((cells % k).astype(np.int32))
        val_parts.append(sums.astype(dtype))
    if not col_parts:
        return sparse.csr_matrix((n, k), dtype=dtype)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.concatenate(col_parts)
    del col_parts
    data = np.concatenate(val_parts)
    del val_parts
    return sparse.csr_matrix((data, indices, indptr), shape=(n, k))


def bin_peaks(peaks, n_spectra: int, lo, hi, *, dtype=np.float32):
    """Per-spectrum sums of peaks in closed m/z windows ``[lo, hi]``, as a CSR matrix.

    The binning of processed spectra (:func:`~spatialfuse.io.read_imzml`) for peaks that are
    not read from a file as they are (e.g. m/z-corrected ones).

    Parameters
    ----------
    peaks
        Chunks of consecutive spectra in order, each ``(start, stop, mz, intensity, lengths)``
        as :meth:`~spatialfuse.io.imzml.ImzMLReader.iter_chunks` yields them: the peaks of
        spectra ``start:stop`` one spectrum after another, ``lengths`` peaks each.
    n_spectra
        Rows of the result.
    lo, hi
        Window edges (a peak counts in every window that holds it).
    dtype
        dtype of the result (sums accumulate in float64).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_spectra, len(lo))``; a spectrum in no chunk is an empty row.
    """
    from scipy import sparse

    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if lo.size == 0 or n_spectra == 0:
        for _ in peaks:  # the chunks are still consumed (a caller may measure them on the way)
            pass
        return sparse.csr_matrix((n_spectra, lo.size), dtype=dtype)
    return _csr_of_cells(n_spectra, lo.size, _cells_of(peaks, lo, hi), dtype)


def window_sums_sparse(
    acc: IbdAccess, lo: np.ndarray, hi: np.ndarray, *, dtype=np.float32, show_progress=False
):
    """:func:`window_sums` as a CSR matrix, built without a dense intermediate."""
    from scipy import sparse

    n, k = acc.table.n, lo.size
    if k == 0 or n == 0:
        return sparse.csr_matrix((n, k), dtype=dtype)
    axis = shared_mz_axis(acc)
    if axis is not None:
        blocks = [
            sparse.csr_matrix(sums.astype(dtype))
            for _a, _b, sums in _shared_axis_blocks(acc, axis, lo, hi, show_progress=show_progress)
        ]
        return (
            sparse.vstack(blocks, format="csr")
            if blocks
            else sparse.csr_matrix((n, k), dtype=dtype)
        )
    return _csr_of_cells(n, k, _chunk_cells(acc, lo, hi, show_progress=show_progress), dtype)


def spectrum_sums(
    acc: IbdAccess, start: int = 0, stop: int | None = None, *, show_progress: bool = False
) -> np.ndarray:
    """Total intensity (TIC) of spectra ``start:stop`` (all by default), float64, as stored.

    NaN/±inf intensities make their spectrum's sum non-finite (see ``_finite.repair_tic``).
    """
    t = acc.table
    stop = t.n if stop is None else stop
    matrix = intensity_matrix(acc)
    out = np.zeros(stop - start, dtype=np.float64)
    if matrix is not None:
        chunks = _row_chunks(stop - start, matrix.shape[1] * 8)
        for a, b in progress(chunks, show=show_progress, desc="TIC"):
            out[a:b] = matrix[start + a : start + b].sum(axis=1, dtype=np.float64)
            acc.done_with(start + a, start + b)
        return out
    for a, b in progress(_row_chunks(stop - start, 1 << 14), show=show_progress, desc="TIC"):
        for i in range(a, b):
            out[i] = acc.array(start + i, "int").sum(dtype=np.float64)
        acc.done_with(start + a, start + b)
    return out


def mean_of_rows(acc: IbdAccess, *, show_progress: bool = False) -> tuple[np.ndarray, dict]:
    """Mean intensity per m/z position over all spectra (shared-axis files only), float64.

    NaN/±inf intensities count as 0; returns the mean and ``found`` (see ``_finite``).
    """
    t = acc.table
    matrix = intensity_matrix(acc)
    length = int(t.int_length[0])
    total = np.zeros(length, dtype=np.float64)
    found: dict[int, int] = {}
    for a, b in progress(_row_chunks(t.n, length * 8), show=show_progress, desc="mean spectrum"):
        block = _dense_rows(acc, matrix, a, b)
        sums = block.sum(axis=0, dtype=np.float64)
        if not _finite.all_finite(sums):
            bad = ~np.isfinite(block)
            for r in np.flatnonzero(bad.any(axis=1)).tolist():
                found[a + r] = int(bad[r].sum())
            sums = _finite.zeroed(block).sum(axis=0, dtype=np.float64)
        total += sums
    return total / max(t.n, 1), found
