"""Peak picking on profile MSI spectra: reference spectrum → peaks → per-pixel extraction.

The steps, each a small function of its own:

1. a *reference spectrum*: the mean (or the skyline, the per-point maximum) of every spectrum on
   the data's m/z axis (continuous files share one; processed files are put on a common axis by
   :meth:`~spatialfuse.io.imzml.ImzMLReader.mean_spectrum`, which merges their points into
   ``ppm``-wide bins);
2. a *baseline*, the morphological opening (a moving minimum, then a moving maximum) of the
   spectrum over ``baseline_window`` points — MALDIquant's "TopHat" baseline — subtracted;
3. a *noise level*, 1.4826 × the median absolute deviation (MAD) of the baseline-free spectrum
   over its non-zero points (zero-filled stretches of a profile file are padding, not noise), or
   over all points (``noise="all"``, MALDIquant's way, for data the writer thresholded); or,
   for ion-counting TOF data kept on every digitizer point (``noise="counts"``), no single
   noise level: each local maximum's S/N is that of one pixel's sum over its window under
   counting statistics, with the intensity of one ion measured on the data
   (:mod:`spatialfuse.pp._counting`, which says why; the timsTOF kidney's full TOF grid: 8,936
   peaks at S/N 5 from the MAD, 45 — 134 at S/N 3 — from the counts); ``noise="auto"`` (the
   default) takes the counts where :func:`spatialfuse.pp._counting.detect_counts` finds ion
   counts and the MAD of the non-zero points elsewhere;
4. *local maxima* that are the highest point within ``± half_window`` points and stand at least
   ``snr × noise`` above the median of those points (:func:`scipy.signal.find_peaks`),
   their full width at half maximum (:func:`scipy.signal.peak_widths`), and a *centroid*: the
   vertex of the parabola through the logarithms of the apex and its two neighbours, exact for a
   Gaussian peak, on uneven m/z steps too;
5. each peak's *window* ``[centre − w·FWHM, centre + w·FWHM]``, cut at the lowest point between
   neighbours so that windows never overlap; every pixel's intensities are summed per window
   (for an imzML file by the reader's own kernels, :func:`spatialfuse.io.read_imzml` with an
   :class:`~spatialfuse.io.imzml.MzAxis`, streamed in chunks), and the fraction of pixels in
   which the window holds a point ``snr ×`` that pixel's own noise above its own median is
   recorded (no baseline is removed per pixel: on a high baseline this undercounts).

Why written here and not pyOpenMS' ``PeakPickerHiRes``: pyOpenMS is a 45 MB wheel for one
function; scipy already does the hard parts (local maxima with a minimum distance, widths at half
height), and what remains — MAD noise, a TopHat baseline, a three-point Gaussian centroid,
non-overlapping windows — is a few vectorised lines. Side by side on one 100,000-point spectrum
(``benchmarks/bench_peaks.py``) both take a few milliseconds; at S/N 10 this finds 40 of 40
planted peaks, ``PeakPickerHiRes`` 36 (its own noise estimator). Neither it nor scipy.signal
has a noise model for the mean of many pixels' ion counts; matched filtering (scipy's
Gaussian filter at the measured peak width) and a width criterion were measured for that and
dropped (``benchmarks/bench_spectra_real.py``: 5,107 and 5,354 peaks of the kidney's 8,936
remain: the weak peaks above the floor are real, multi-point peaks, not spikes).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._logging import logger, progress
from spatialfuse.core.adata import check_adata
from spatialfuse.errors import UnsupportedFormatError
from spatialfuse.pp import _counting

if TYPE_CHECKING:
    import anndata

__all__ = ["PeakList", "centroid_peaks", "mad_noise", "pick_peaks", "tophat_baseline"]

#: Scale from a median absolute deviation to the standard deviation of Gaussian noise.
MAD_SCALE = 1.482602218505602
#: Intensity values handled per chunk of pixels (16 MiB as float64).
_CHUNK_VALUES = 1 << 21


def mad_noise(intensity: np.ndarray, *, nonzero: bool = True) -> tuple[float, float]:
    """Noise of one spectrum: ``(median, 1.4826 × MAD)`` of its non-zero (or all) finite values."""
    y = np.asarray(intensity, dtype=np.float64)
    y = y[((y != 0) | (not nonzero)) & np.isfinite(y)]
    if y.size == 0:
        return 0.0, 0.0
    median = float(np.median(y))
    return median, float(MAD_SCALE * np.median(np.abs(y - median)))


def tophat_baseline(intensity: np.ndarray, window: int) -> np.ndarray:
    """Morphological opening of ``intensity`` over ``window`` points (a moving min, then max)."""
    from scipy import ndimage

    y = np.asarray(intensity, dtype=np.float64)
    if window <= 1 or y.size == 0:
        return np.zeros_like(y)
    lower = ndimage.minimum_filter1d(y, size=window, mode="nearest")
    return ndimage.maximum_filter1d(lower, size=window, mode="nearest")


@dataclass(frozen=True)
class PeakList:
    """Peaks of one spectrum: apex index, centroid m/z, window, FWHM, height and S/N."""

    index: np.ndarray
    mz: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    fwhm: np.ndarray
    height: np.ndarray
    snr: np.ndarray
    noise: float
    level: float = 0.0

    def __len__(self) -> int:
        return self.mz.size


def _gaussian_vertex(x: np.ndarray, y: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through ``(x, log y)`` at ``i − 1, i, i + 1`` (else the apex)."""
    centre = x[i].astype(np.float64)
    inner = (i > 0) & (i < x.size - 1)
    j = i[inner]
    x0, x1, x2 = x[j - 1], x[j], x[j + 1]
    y0, y1, y2 = y[j - 1], y[j], y[j + 1]
    ok = (y0 > 0) & (y1 > 0) & (y2 > 0)
    l0, l1, l2 = (np.log(np.where(ok, v, 1.0)) for v in (y0, y1, y2))
    # Parabola through three points on uneven steps, relative to the apex: its vertex.
    d0, d2 = x0 - x1, x2 - x1
    num = (l0 - l1) * d2 * d2 - (l2 - l1) * d0 * d0
    den = 2.0 * ((l0 - l1) * d2 - (l2 - l1) * d0)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = num / den
    ok &= np.isfinite(shift) & (den != 0) & (shift > d0) & (shift < d2)
    out = centre[inner]
    out[ok] = x1[ok] + shift[ok]
    centre[inner] = out
    return centre


def _peak_windows(x: np.ndarray, y: np.ndarray, index: np.ndarray, window_fwhm: float):
    """Centroid, window ``[lo, hi]`` (± ``window_fwhm`` FWHM, cut between neighbours) and FWHM."""
    from scipy.signal import peak_widths

    centre = _gaussian_vertex(x, y, index)
    _, _, left, right = peak_widths(y, index, rel_height=0.5)
    positions = np.arange(x.size, dtype=np.float64)
    lo_half, hi_half = np.interp(left, positions, x), np.interp(right, positions, x)
    step = np.gradient(x)[index] if x.size > 1 else np.ones(index.size)
    fwhm = np.maximum(hi_half - lo_half, step)
    lo = centre - window_fwhm * fwhm
    hi = centre + window_fwhm * fwhm
    # Neighbouring windows meet at the lowest point between the two apexes.
    if index.size > 1:
        valley = np.array(
            [a + int(np.argmin(y[a : b + 1])) for a, b in itertools.pairwise(index.tolist())]
        )
        cut = x[valley]
        clash = hi[:-1] >= lo[1:]
        hi[:-1][clash] = np.maximum(np.nextafter(cut[clash], -np.inf), lo[:-1][clash])
        after = np.maximum(cut[clash], np.nextafter(hi[:-1][clash], np.inf))
        lo[1:][clash] = np.minimum(after, hi[1:][clash])
    return centre, lo, hi, fwhm


def centroid_peaks(
    mz: np.ndarray,
    intensity: np.ndarray,
    *,
    snr: float = 3.0,
    half_window: int = 2,
    baseline_window: int | None = None,
    window_fwhm: float = 1.0,
    noise: str = "nonzero",
    count_unit: float | None = None,
) -> PeakList:
    """Pick and centroid the peaks of one profile spectrum (steps 2–5 of the module docstring).

    ``mz`` must be sorted ascending. ``baseline_window`` (points) defaults to no baseline removal;
    ``window_fwhm`` is the window half-width in FWHMs; ``noise`` is ``"nonzero"`` or ``"all"``
    (which points the median and MAD are taken over), or ``"counts"``: ``intensity`` is the mean
    of ion-counting spectra and each local maximum's S/N that of one pixel's sum over its window,
    with ``count_unit`` the variance per unit of intensity (:mod:`spatialfuse.pp._counting`).
    """
    from scipy.signal import find_peaks

    x = np.asarray(mz, dtype=np.float64)
    raw = np.nan_to_num(np.asarray(intensity, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    y = raw - tophat_baseline(raw, int(baseline_window)) if baseline_window else raw
    level, spread = mad_noise(y, nonzero=noise != "all")
    if noise == "counts":
        if count_unit is None or not (np.isfinite(count_unit) and count_unit > 0):
            raise ValueError(f"noise='counts' needs a positive count_unit, got {count_unit!r}")
        threshold = level + np.finfo(np.float64).tiny  # every local maximum above the level
    else:
        threshold = level + max(snr * spread, np.finfo(np.float64).tiny)
    index, props = find_peaks(y, height=threshold, distance=half_window + 1)
    height = props["peak_heights"]
    if noise == "counts":
        # Each maximum's window is cut at its neighbours' valleys (a shoulder does not borrow
        # the counts of the peak beside it); the windows are then drawn again among the kept.
        snr_values = np.empty(0)
        if index.size:
            _, lo, hi, _ = _peak_windows(x, y, index, window_fwhm)
            first, stop = _column_ranges(x, lo, hi)
            snr_values = _counting.window_snr(y, raw, first, stop, level, count_unit)
        keep = snr_values >= snr
        index, height, snr_values = index[keep], height[keep], snr_values[keep]
        spread = float(np.sqrt(count_unit * max(level, 0.0)))
    if index.size == 0:
        empty = np.empty(0)
        return PeakList(
            index.astype(np.int64), empty, empty, empty, empty, empty, empty, spread, level
        )
    centre, lo, hi, fwhm = _peak_windows(x, y, index, window_fwhm)
    if noise != "counts":
        snr_values = (height - level) / spread if spread > 0 else np.full(index.size, np.inf)
    return PeakList(index.astype(np.int64), centre, lo, hi, fwhm, height, snr_values, spread, level)


# ----------------------------------------------------------------------------------- tables


def _row_medians(values: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Median of ``values`` per row id (0 for rows without values), vectorised."""
    out = np.zeros(n_rows)
    if values.size == 0:
        return out
    order = np.lexsort((values, rows))
    ordered = values[order]
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    low = starts[has] + (counts[has] - 1) // 2
    high = starts[has] + counts[has] // 2
    out[has] = 0.5 * (ordered[low] + ordered[high])
    return out


def _row_noise(
    values: np.ndarray, rows: np.ndarray, n_rows: int, nonzero: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(median, 1.4826 × MAD)`` of the row's non-zero (or all) values."""
    keep = ((values != 0) | (not nonzero)) & np.isfinite(values)
    v, r = values[keep].astype(np.float64), rows[keep]
    median = _row_medians(v, r, n_rows)
    return median, MAD_SCALE * _row_medians(np.abs(v - median[r]), r, n_rows)


def dense_noise(b: np.ndarray, nonzero: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a finite float64 block: ``(median, 1.4826 × MAD)`` of its non-zero values."""
    if not nonzero:
        level = np.median(b, axis=1) if b.shape[1] else np.zeros(b.shape[0])
        spread = np.median(np.abs(b - level[:, None]), axis=1) if b.shape[1] else level
        return level, MAD_SCALE * spread
    # Row by row: the work arrays are one spectrum, not copies of the whole block (a block of
    # 2 million values is 16 MiB; nanmedian over a masked copy held four more of it).
    level, noise = np.zeros(b.shape[0]), np.zeros(b.shape[0])
    for i, row in enumerate(b):
        values = row[row != 0]
        if values.size:
            level[i] = np.median(values)
            noise[i] = MAD_SCALE * np.median(np.abs(values - level[i]))
    return level, noise


def _dense_found(block, starts, stops, snr: float, nonzero: bool):
    """Per window, whether each row of a dense block holds a point above its own threshold."""
    b = np.nan_to_num(np.asarray(block, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    level, noise = dense_noise(b, nonzero)
    padded = np.concatenate([b, np.zeros((b.shape[0], 1))], axis=1)
    bounds = np.empty(2 * starts.size, dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, stops
    best = np.maximum.reduceat(padded, bounds, axis=1)[:, 0::2]
    best[:, stops <= starts] = 0.0
    limit = (level + np.maximum(snr * noise, np.finfo(np.float64).tiny))[:, None]
    return best >= limit


def _flat_found(n_rows, rows, window, values, n_windows: int, snr: float, nonzero: bool):
    """:func:`_dense_found` for points given as flat (row, window, value) arrays."""
    values = np.nan_to_num(values.astype(np.float64, copy=False), nan=0.0, posinf=0.0)
    level, noise = _row_noise(values, rows, n_rows, nonzero)
    inside = window >= 0
    key = rows[inside] * n_windows + window[inside]
    best = np.zeros(n_rows * n_windows)
    np.maximum.at(best, key, values[inside])
    best = best.reshape(n_rows, n_windows)
    limit = (level + np.maximum(snr * noise, np.finfo(np.float64).tiny))[:, None]
    return best >= limit


def _found_counts(chunks, n_windows: int, snr: float, nonzero: bool = True) -> np.ndarray:
    """Pixels in which each window holds a point ≥ the pixel's median + ``snr`` × its noise.

    ``chunks`` yields ``("dense", block, starts, stops)`` (rows × points, window column ranges
    ``[start, stop)``) or ``("flat", n_rows, rows, window, values)`` over all points of a block
    of pixels, ``window`` being each point's window index (−1 outside every window).
    """
    counts = np.zeros(n_windows, dtype=np.int64)
    for kind, *parts in chunks:
        if kind == "dense":
            found = _dense_found(*parts, snr, nonzero)
        else:
            found = _flat_found(*parts, n_windows, snr, nonzero)
        counts += found.sum(axis=0)
    return counts


def _rows_per_chunk(n_points: int) -> int:
    return max(1, _CHUNK_VALUES // max(1, n_points))


def _column_ranges(mz: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    start = np.searchsorted(mz, lo, side="left")
    return start, np.maximum(np.searchsorted(mz, hi, side="right"), start)


def _table_chunks(
    x,
    mz: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    show_progress: bool,
    nonzero: bool = True,
    sums: np.ndarray | None = None,
):
    """Blocks of rows of ``x`` for :func:`_found_counts`; each block is read once.

    With ``sums`` (rows × windows, float32) each block's window sums are written there too,
    so a lazy table is computed once for both (``x @ window matrix``).
    """
    from scipy import sparse

    n = x.shape[0]
    weights = _window_matrix(mz, lo, hi) if sums is not None else None
    starts, stops = _column_ranges(mz, lo, hi)
    window_of_column = np.full(mz.size, -1, dtype=np.int64)
    for j, (a, b) in enumerate(zip(starts.tolist(), stops.tolist(), strict=True)):
        window_of_column[a:b] = j
    step = _rows_per_chunk(mz.size)
    for a in progress(range(0, n, step), show=show_progress, desc="peak frequency"):
        block = x[a : a + step]
        if hasattr(block, "compute"):
            block = block.compute()
        if sums is not None:
            product = block @ weights
            sums[a : a + step] = product.toarray() if sparse.issparse(product) else product
        if sparse.issparse(block) and not nonzero:  # implicit zeros count: a dense chunk
            block = block.toarray()
        if sparse.issparse(block):
            coo = sparse.coo_matrix(block)
            rows, cols = coo.row.astype(np.int64), coo.col
            yield "flat", block.shape[0], rows, window_of_column[cols], coo.data
        else:
            yield "dense", np.asarray(block), starts, stops


def _reader_chunks(reader, lo: np.ndarray, hi: np.ndarray, show_progress: bool):
    from spatialfuse.core.mz import WindowLookup

    axis = reader.shared_mz_axis()
    if axis is not None:  # continuous: dense blocks of rows, windows are column ranges
        starts, stops = _column_ranges(axis, lo, hi)
        step = _rows_per_chunk(axis.size)
        chunks = reader.iter_chunks(chunk_spectra=step)
        for _a, _b, _mz, intensity, lengths in progress(
            chunks, show=show_progress, desc="peak frequency"
        ):
            yield "dense", intensity.reshape(lengths.size, axis.size), starts, stops
        return
    lookup = WindowLookup(lo, hi)
    mean_length = float(reader.peak_counts.mean()) if reader.n_spectra else 1.0
    chunks = reader.iter_chunks(chunk_spectra=_rows_per_chunk(int(mean_length)))
    for a, b, mz, intensity, lengths in progress(chunks, show=show_progress, desc="peak frequency"):
        rows = np.repeat(np.arange(b - a), lengths)
        window = lookup(mz.astype(np.float64)) if mz.size else np.empty(0, dtype=np.int64)
        yield "flat", b - a, rows, window, intensity


def _window_matrix(mz: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """(n_points × n_windows) 0/1 CSR matrix: point ``i`` lies in window ``j``."""
    from scipy import sparse

    start = np.searchsorted(mz, lo, side="left")
    stop = np.maximum(np.searchsorted(mz, hi, side="right"), start)
    lengths = stop - start
    cols = np.repeat(np.arange(lo.size), lengths)
    points = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.repeat(start, lengths) + points
    data = np.ones(rows.size, dtype=np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(mz.size, lo.size))


def _reference_from_table(adata, reference: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean or maximum over the rows; rows of NaN (spots without MSI data) are left out."""
    import warnings

    from scipy import sparse

    mz = np.asarray(adata.var["mz"], dtype=np.float64)
    x = adata.X
    if adata.n_obs == 0:
        return mz, np.zeros(mz.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        if sparse.issparse(x):
            values = x.mean(axis=0) if reference == "mean" else x.max(axis=0).toarray()
        elif hasattr(x, "compute"):
            values = _lazy_reference(x, reference)
        else:
            values = (np.nanmean if reference == "mean" else np.nanmax)(x, axis=0)
    values = np.asarray(values, dtype=np.float64).ravel()
    return mz, np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def _lazy_reference(x, reference: str) -> np.ndarray:
    """Column mean or maximum of a dask table, one block of rows computed at a time.

    dask's own reductions let the scheduler compute many blocks (or their per-block partial
    sums, a row of the axis each) before combining them; a loop holds one block.
    """
    total = np.zeros(x.shape[1])
    count = np.zeros(x.shape[1])
    top = np.full(x.shape[1], np.nan)
    step = _rows_per_chunk(x.shape[1])
    for a in range(0, x.shape[0], step):
        block = np.asarray(x[a : a + step].compute(), dtype=np.float64)
        finite = np.isfinite(block)
        if reference == "mean":
            total += np.where(finite, block, 0.0).sum(axis=0)
            count += finite.sum(axis=0)
        else:
            top = np.fmax(top, np.where(finite, block, np.nan).max(axis=0, initial=-np.inf))
    if reference != "mean":
        return np.where(np.isfinite(top), top, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _reference_from_reader(reader, reference: str, ppm: float) -> tuple[np.ndarray, np.ndarray]:

    if reference == "mean":
        return reader.mean_spectrum(ppm=ppm)
    axis = reader.shared_mz_axis()
    if axis is None:
        raise UnsupportedFormatError(
            reader.path,
            "reference='skyline' needs a continuous file (one shared m/z axis); use "
            "reference='mean' for a processed file",
        )
    top = np.zeros(axis.size)
    step = _rows_per_chunk(axis.size)
    for _a, _b, _mz, intensity, lengths in reader.iter_chunks(chunk_spectra=step):
        if intensity.size:
            block = intensity.reshape(lengths.size, axis.size).astype(np.float64)
            top = np.maximum(top, np.nan_to_num(block, nan=0.0, posinf=0.0).max(axis=0))
    return axis, top


def _check_options(snr, half_window, baseline_window, window_fwhm, reference, min_frequency):
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr!r}")
    if isinstance(half_window, bool) or int(half_window) != half_window or half_window < 1:
        raise ValueError(f"half_window must be an integer >= 1 (points), got {half_window!r}")
    if baseline_window is not None and (
        isinstance(baseline_window, bool)
        or int(baseline_window) != baseline_window
        or baseline_window < 3
    ):
        raise ValueError(
            f"baseline_window must be None or an integer >= 3, got {baseline_window!r}"
        )
    if not (np.isfinite(window_fwhm) and window_fwhm > 0):
        raise ValueError(f"window_fwhm must be a positive number, got {window_fwhm!r}")
    if reference not in ("mean", "skyline"):
        raise ValueError(f"reference must be 'mean' or 'skyline', got {reference!r}")
    if not (0 <= min_frequency <= 1):
        raise ValueError(f"min_frequency must lie in [0, 1], got {min_frequency!r}")


def pick_peaks(
    data: anndata.AnnData | str | os.PathLike,
    *,
    snr: float = 3.0,
    half_window: int = 2,
    baseline_window: int | None = None,
    window_fwhm: float = 1.0,
    reference: str = "mean",
    min_frequency: float = 0.0,
    ppm: float = 5.0,
    pixel_size_um: float | tuple[float, float] | None = None,
    noise: str = "auto",
    key_added: str = "peaks",
    show_progress: bool = False,
) -> anndata.AnnData:
    """Pick peaks on the mean (or skyline) spectrum and extract them from every pixel.

    The method (MAD noise, TopHat baseline, local maxima above ``snr × noise``, Gaussian
    three-point centroids, non-overlapping windows of ``± window_fwhm`` FWHM) is described in
    :mod:`spatialfuse.pp._peaks`.

    Parameters
    ----------
    data
        Pixels × m/z points of profile spectra: an AnnData with ``var["mz"]`` sorted ascending
        (e.g. :func:`spatialfuse.io.read_imzml` of a continuous profile file), or the path of an
        ``.imzML`` file (continuous or processed), which is streamed in chunks and never held as
        a dense table.
    snr
        Keep local maxima at least this many times the noise level (1.4826 × MAD).
    half_window
        A peak is the highest point within ``± half_window`` points.
    baseline_window
        Width in points of the TopHat baseline subtracted before picking (None: no baseline;
        take a few times the widest peak).
    window_fwhm
        Half-width of each peak's extraction window, in multiples of its FWHM.
    reference
        ``"mean"`` (the mean spectrum) or ``"skyline"`` (the per-point maximum, which also
        finds peaks present in few pixels; continuous data only for files).
    min_frequency
        Keep peaks found (above ``snr`` × the pixel's own noise) in at least this fraction of
        pixels.
    ppm
        For processed files, the bin width that puts spectra on a common axis for the mean.
    pixel_size_um
        For a file without a pixel size, the pixel size in µm (as in ``read_imzml``).
    noise
        Which points the median and MAD (the noise) are taken over: ``"nonzero"`` (zero-filled
        stretches of a profile file are padding, not signal) or ``"all"`` (MALDIquant's way;
        on spectra that are mostly zeros — centroids written on a dense axis, or data the
        writer thresholded — the noise is then 0 and every local maximum above 0 is kept).
        ``"counts"``, for ion-counting data (TOF) kept on every digitizer point: each local
        maximum's S/N is that of one pixel's sum over its window under counting statistics,
        ``(W − B) / √(g·W)``, with the intensity of one ion ``g`` measured from the spread
        between pixels at the spectrum's floor (:mod:`spatialfuse.pp._counting`); a pixel
        counts as holding the peak where its own window sum passes the same test. Needs
        ``reference="mean"`` and more than one pixel.
        ``"auto"`` (the default): ``"counts"`` where the data are ion counts kept on every
        digitizer point, else ``"nonzero"``, decided by
        :func:`spatialfuse.pp._counting.detect_counts` (what the file declares, whole-number
        intensities, a digitizer grid, a floor of single-ion events whose variance is the
        mean times one pulse; the timsTOF runs pass, the 43 other shared files do not) and
        recorded in ``uns[key_added]``; with ``reference="skyline"``, ``"nonzero"``.
    key_added
        Name of the ``uns`` entry describing the picking.
    show_progress
        Show progress bars.

    Returns
    -------
    anndata.AnnData
        A new pixels × peaks table (centroided), with ``obs``/``obsm`` of the input:

        - ``X``: float32 sum of each pixel's intensities inside each peak window;
        - ``var_names`` like ``mz-760.5851``; ``var["mz"]``: centroid m/z of the reference
          peak; ``var["mz_lo"]``, ``var["mz_hi"]``: its closed window; ``var["fwhm"]``;
          ``var["intensity"]``: reference height above baseline; ``var["snr"]``;
          ``var["frequency"]``: fraction of pixels in which the peak is found;
        - ``uns[key_added]``: the options, the noise level, the number of local maxima kept
          and dropped, and the reference spectrum (``"reference_mz"``,
          ``"reference_intensity"``) for plotting; ``"noise_model"`` (and ``"noise_over"``):
          the noise model used, ``"noise_requested"``: the ``noise`` given,
          ``"noise_choice"``: why that model (for ``"auto"``, the test that decided), and for
          ``"auto"`` ``"counting_evidence"``: what :func:`~spatialfuse.pp._counting.detect_counts`
          measured.
    """
    import anndata as ad
    import pandas as pd

    from spatialfuse.core.mz import mz_feature_names

    _check_options(snr, half_window, baseline_window, window_fwhm, reference, min_frequency)
    if noise not in ("auto", "nonzero", "all", "counts"):
        raise ValueError(
            f"noise must be 'nonzero', 'all' or 'counts' (or 'auto', which chooses 'counts' "
            f"for ion counts, else 'nonzero'), got {noise!r}"
        )
    if noise == "counts" and reference != "mean":
        raise ValueError(
            f"noise='counts' models the mean of the pixels' counts: give reference='mean', "
            f"not {reference!r}"
        )
    is_path = isinstance(data, str | os.PathLike)
    if not is_path:
        check_adata(data, "data")
        if "mz" not in data.var:
            raise ValueError("data.var has no 'mz' column: give a table of m/z features")
    unit = None
    evidence = None
    choice = "given"
    model = noise
    if noise == "auto" and reference != "mean":
        model, choice = "nonzero", f"reference={reference!r}: the counting model needs the mean"
    if is_path:
        from spatialfuse.io.imzml import ImzMLReader

        with ImzMLReader(data) as reader:
            moments = None
            if model == "auto":
                evidence, moments = _counting.reader_evidence(reader, ppm)
                model, choice = ("counts" if evidence.counts else "nonzero"), evidence.reason
            if model == "counts":
                if moments is None:
                    moments = _counting.reader_moments(reader, ppm)
                ref_mz, ref_y, ref_sq, hits = moments
                unit = _counting.count_unit(ref_y, ref_sq, hits, reader.n_spectra)
            else:
                ref_mz, ref_y = _reference_from_reader(reader, reference, ppm)
    else:
        moments = None
        if model == "auto":
            evidence, moments = _counting.table_evidence(data)
            model, choice = ("counts" if evidence.counts else "nonzero"), evidence.reason
        if model == "counts":
            ref_mz = np.asarray(data.var["mz"], dtype=np.float64)
            ref_y, ref_sq, hits = (
                moments if moments is not None else _counting.table_moments(data.X)
            )
            unit = _counting.count_unit(ref_y, ref_sq, hits, data.n_obs)
        else:
            ref_mz, ref_y = _reference_from_table(data, reference)
        if data.n_vars > 1 and not (np.diff(ref_mz) > 0).all():
            raise ValueError("data.var['mz'] must be sorted ascending (profile points in order)")
    counts = model == "counts"
    nonzero = model != "all"
    if noise == "auto":
        logger.info("pick_peaks: noise='auto' chose %r: %s", model, choice)
    peaks = centroid_peaks(
        ref_mz,
        ref_y,
        snr=snr,
        half_window=half_window,
        baseline_window=baseline_window,
        window_fwhm=window_fwhm,
        noise=model,
        count_unit=unit,
    )
    lo, hi = peaks.lo, peaks.hi
    if is_path:
        from spatialfuse.io.imzml import ImzMLReader, MzAxis, read_imzml

        axis = MzAxis(peaks.mz, lo, hi, np.zeros(peaks.mz.size))
        table = read_imzml(data, mz=axis, pixel_size_um=pixel_size_um, show_progress=show_progress)
        x = table.X
        if not counts:
            with ImzMLReader(data) as reader:
                chunks = _reader_chunks(reader, lo, hi, show_progress)
                found = _found_counts(chunks, lo.size, snr, nonzero)
        obs, obsm, uns = table.obs, dict(table.obsm), dict(table.uns)
    else:
        mz = ref_mz
        x = np.empty((data.n_obs, lo.size), dtype=np.float32)
        chunks = _table_chunks(data.X, mz, lo, hi, show_progress, nonzero, sums=x)
        if counts:  # the sums only: the test below reads them
            for _ in chunks:
                pass
        else:
            found = _found_counts(chunks, lo.size, snr, nonzero)
        obs, obsm, uns = data.obs.copy(), dict(data.obsm), dict(data.uns)
    if counts:
        first, stop = _column_ranges(ref_mz, lo, hi)
        found = _counting.found_by_counts(x, stop - first, peaks.level, unit, snr)
    n_obs = max(len(obs), 1)
    frequency = found / n_obs
    keep = frequency >= min_frequency
    var = pd.DataFrame(
        {
            "mz": peaks.mz,
            "mz_lo": lo,
            "mz_hi": hi,
            "fwhm": peaks.fwhm,
            "intensity": peaks.height,
            "snr": peaks.snr,
            "frequency": frequency,
        }
    )[keep]
    var.index = pd.Index(mz_feature_names(var["mz"].to_numpy()), dtype=str)
    x = x[:, np.flatnonzero(keep)]
    out = ad.AnnData(X=x, obs=obs, var=var)
    for k, v in obsm.items():
        out.obsm[k] = v
    out.uns.update(uns)
    method = "counting noise of each window" if counts else "MAD noise"
    out.uns[key_added] = {
        "method": f"mean/skyline spectrum, TopHat baseline, {method}, Gaussian 3-point centroid",
        "reference": reference,
        "snr": float(snr),
        "half_window": int(half_window),
        "baseline_window": int(baseline_window or 0),
        "window_fwhm": float(window_fwhm),
        "min_frequency": float(min_frequency),
        "noise_over": model,
        "noise_model": model,
        "noise_requested": noise,
        "noise_choice": choice,
        "noise": float(peaks.noise),
        "count_unit": float(unit) if counts else float("nan"),
        "n_local_maxima": len(peaks),
        "n_peaks": int(keep.sum()),
        "reference_mz": np.asarray(ref_mz, dtype=np.float64),
        "reference_intensity": np.asarray(ref_y, dtype=np.float64),
    }
    if evidence is not None:
        out.uns[key_added]["counting_evidence"] = evidence.as_dict()
    logger.info(
        "pick_peaks: %d peaks (%d local maxima above S/N %g, %d kept at min_frequency %g)",
        int(keep.sum()),
        len(peaks),
        snr,
        int(keep.sum()),
        min_frequency,
    )
    return out
