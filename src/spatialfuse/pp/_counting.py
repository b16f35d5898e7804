"""Counting-statistics noise for peak picking on ion-counting TOF data (``noise="counts"``).

A time-of-flight detector counts ions: a pixel's intensity at one digitizer point is the sum of
the pulses of the ions that hit it, and the number of ions is Poisson. With a pulse height
``a`` (random, from the detector's gain) the intensity is compound Poisson: for ``λ`` ions on
average, mean ``λ·E[a]`` and variance ``λ·E[a²]``, so the variance is the mean times one
*count unit* ``g = E[a²] / E[a]``. ``g`` is measured on the data itself, on the spectrum's
floor — the points where at most the median number of pixels hold anything, where the signal
is a stray ion now and then, not an image, so the spread between pixels is counting noise and
not tissue structure: the variance between pixels summed over those points, divided by their
summed mean. (Choosing the floor by the mean intensity instead, or taking the median of each
point's ratio, picks the points whose few ions had small pulses: 0.37 × the true unit on a
simulated run, 527 instead of 711 on the timsTOF kidney.)

A peak's noise is then that of the value a pixel gets for it — its sum over the peak's window
— not the spread of the mean spectrum along m/z: for a window holding ``W`` (mean over pixels,
``W = Σ`` mean intensities in the window) above a background ``B`` (the spectrum's median level
per point × the window's points), the signal-to-noise ratio is ``(W − B) / √(g·W)``, the square
root of the ions a pixel collects when the background is low. Kept on every digitizer point, the
mean spectrum of an ion-counting run has a floor of single ions and thousands of weak but real
peaks above its MAD (the timsTOF kidney: 8,936 at S/N 5); what a pixel's image can show is the
peak's count per pixel, which this tests. It does not depend on how densely the axis samples
the empty stretches between peaks, nor on the number of pixels (the noise of the *mean* of
``N`` pixels, ``√(g·W / N)``, would admit every ion seen anywhere, ever more with more pixels).
A pixel's own window sum ``s`` counts as found where ``s − B ≥ snr · √(g·s)``.

Assumed: neighbouring points are independent (a digitizer that spreads one ion over two
points would make ``g·W`` too small for the window's variance; on the timsTOF kidney's floor the
covariance between pixels of neighbouring points is 0.0002 × their variance) and the
background is the spectrum's median level everywhere.

Written here: the moments are one streamed pass of sums and sums of squares over the pixels,
the unit a ratio of two sums, the test a cumulative sum over each peak's window; neither
scipy.signal nor pyOpenMS models the noise of a sum of pixels (pyOpenMS'
``SignalToNoiseEstimatorMedian`` is a windowed median of one spectrum, the same kind of
estimate as the MAD this replaces).
"""

from __future__ import annotations

import numpy as np

#: Rows of a dense or lazy table handled per block (as ``_peaks._rows_per_chunk``).
_CHUNK_VALUES = 1 << 21


def count_unit(
    mean: np.ndarray, mean_of_squares: np.ndarray, hits: np.ndarray, n_pixels: int
) -> float:
    """The count unit ``g = E[a²]/E[a]``: variance over mean, pooled over the spectrum's floor.

    ``mean``, ``mean_of_squares`` and ``hits`` (the number of pixels with a non-zero value)
    are per point over the pixels; the floor is the points with at most the median number of
    hits. Raises :class:`ValueError` where nothing there varies between pixels (one pixel, or
    identical pixels); warns (:class:`~spatialfuse.errors.DataWarning`) where the unit is below
    half the mean non-zero value there — one ion's pulse, ``E[a]``, which ``E[a²]/E[a]`` is never
    below: such data are not ion counts (normalised or smoothed intensities).
    """
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(mean_of_squares, dtype=np.float64) - mean**2
    hits = np.asarray(hits, dtype=np.float64)
    positive = np.isfinite(mean) & (mean > 0) & np.isfinite(var) & (hits > 0)
    if not positive.any():
        raise ValueError("noise='counts' needs a spectrum with non-zero intensities")
    floor = positive & (hits <= np.median(hits[positive]))
    unit = float(np.maximum(var[floor], 0.0).sum() / mean[floor].sum())
    pulse = float(n_pixels * mean[floor].sum() / hits[floor].sum())
    if np.isfinite(unit) and unit > 0 and unit < 0.5 * pulse:
        import warnings

        from spatialfuse.errors import DataWarning

        warnings.warn(
            f"noise='counts': the variance between pixels at the spectrum's floor is "
            f"{unit:.3g} × the mean, below the mean non-zero value there ({pulse:.3g}); ion "
            "counts cannot give that, so these intensities are not counts and the S/N means "
            "little: use noise='nonzero'",
            DataWarning,
            stacklevel=3,
        )
    if not (np.isfinite(unit) and unit > 0):
        raise ValueError(
            "noise='counts' measures the intensity of one ion from the spread between pixels "
            "at the spectrum's floor, and found none there (one pixel, or identical pixels): "
            "use noise='nonzero' or 'all'"
        )
    return unit


def table_moments(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, mean of squares and non-zero count of every column of a table.

    ``x`` is NumPy, SciPy sparse or dask.

    Missing (non-finite) values are left out of their column's mean, so rows that are all NaN
    (spots without MSI data) do not count, as in the mean spectrum; dense, sparse and dask
    tables give the same moments.
    """
    from scipy import sparse

    n_cols = x.shape[1]
    total, squares, count = np.zeros(n_cols), np.zeros(n_cols), np.zeros(n_cols)
    hits = np.zeros(n_cols)
    if sparse.issparse(x):
        x = sparse.csr_matrix(x, dtype=np.float64, copy=True)
        missing = ~np.isfinite(x.data)
        # As in the dense path: a missing value leaves its column's count, it is not a zero.
        count = x.shape[0] - np.bincount(x.indices[missing], minlength=n_cols).astype(np.float64)
        x.data[missing] = 0.0
        hits = np.bincount(x.indices[x.data != 0], minlength=n_cols).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.asarray(x.sum(axis=0)).ravel() / count
            mean_sq = np.asarray(x.multiply(x).sum(axis=0)).ravel() / count
        return np.nan_to_num(mean), np.nan_to_num(mean_sq), hits
    step = max(1, _CHUNK_VALUES // max(1, n_cols))
    for a in range(0, x.shape[0], step):
        block = x[a : a + step]
        if hasattr(block, "compute"):
            block = block.compute()
        block = np.asarray(block, dtype=np.float64)
        finite = np.isfinite(block)
        values = np.where(finite, block, 0.0)
        total += values.sum(axis=0)
        squares += (values * values).sum(axis=0)
        count += finite.sum(axis=0)
        hits += (values != 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, mean_sq = total / count, squares / count
    return np.nan_to_num(mean), np.nan_to_num(mean_sq), hits


def reader_moments(reader, ppm: float) -> tuple[np.ndarray, ...]:
    """``(mz, mean, mean of squares, hits)`` of an imzML file's pixels, streamed in chunks.

    A continuous file: on its shared axis. A processed file: on the axis of *every* m/z its
    spectra hold, values within ``ppm`` merged (:func:`spatialfuse.io.imzml.build_mz_axis` with
    no frequency, noise or size cut: a TOF export's own grid, 321,043 points for the timsTOF
    kidney) — the default axis of :meth:`~spatialfuse.io.imzml.ImzMLReader.mean_spectrum` keeps
    only points found in 1 % of the pixels, which leaves no floor of stray ions to measure the
    count unit on (there it comes out twice as large, from the tissue's own structure).
    """
    from scipy import sparse

    axis = reader.shared_mz_axis()
    if axis is not None:
        total, squares, hits = np.zeros(axis.size), np.zeros(axis.size), np.zeros(axis.size)
        step = max(1, _CHUNK_VALUES // max(1, axis.size))
        for _a, _b, _mz, intensity, lengths in reader.iter_chunks(chunk_spectra=step):
            if intensity.size:
                block = intensity.reshape(lengths.size, axis.size).astype(np.float64)
                block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
                total += block.sum(axis=0)
                squares += (block * block).sum(axis=0)
                hits += (block != 0).sum(axis=0)
        n = max(reader.n_spectra, 1)
        return np.asarray(axis, dtype=np.float64), total / n, squares / n, hits
    from spatialfuse.core.mz import WindowLookup
    from spatialfuse.io.imzml import build_mz_axis

    common = build_mz_axis(reader, ppm=ppm, min_frequency=0.0, max_features=None, noise_factor=None)
    n_points = common.mz.size
    lookup = WindowLookup(common.lo, common.hi)
    total, squares, hits = np.zeros(n_points), np.zeros(n_points), np.zeros(n_points)
    mean_length = float(reader.peak_counts.mean()) if reader.n_spectra else 1.0
    step = max(1, int(_CHUNK_VALUES // max(1.0, mean_length)))
    for a, b, mz, intensity, lengths in reader.iter_chunks(chunk_spectra=step):
        if not mz.size:
            continue
        rows = np.repeat(np.arange(b - a), lengths)
        window = lookup(mz.astype(np.float64))
        inside = window >= 0
        values = np.nan_to_num(
            intensity[inside].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0
        )
        # Each pixel's sum per window (points of one pixel in one window are added up).
        block = sparse.csr_matrix((values, (rows[inside], window[inside])), shape=(b - a, n_points))
        total += np.asarray(block.sum(axis=0)).ravel()
        squares += np.asarray(block.multiply(block).sum(axis=0)).ravel()
        hits += np.bincount(block.indices[block.data != 0], minlength=n_points)
    n = max(reader.n_spectra, 1)
    return np.asarray(common.mz, dtype=np.float64), total / n, squares / n, hits


def window_snr(
    intensity: np.ndarray,
    raw: np.ndarray,
    first: np.ndarray,
    stop: np.ndarray,
    level: float,
    unit: float,
) -> np.ndarray:
    """Counting S/N of windows ``[first, stop)`` (point indices) of a mean spectrum.

    ``intensity`` is the spectrum picked on (baseline removed or not), ``raw`` the mean whose
    sum gives the counting variance; ``level`` the background per point.
    """
    signal = np.r_[0.0, np.cumsum(intensity)]
    counted = np.r_[0.0, np.cumsum(np.maximum(raw, 0.0))]
    width = stop - first
    above = signal[stop] - signal[first] - level * width
    variance = unit * (counted[stop] - counted[first])
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = above / np.sqrt(variance)
    return np.where(variance > 0, snr, np.where(above > 0, np.inf, 0.0))


def found_by_counts(sums, n_points: np.ndarray, level: float, unit: float, snr: float):
    """Pixels whose window sum ``s`` reaches ``s − level·n_points ≥ snr·√(unit·s)``, per window.

    ``sums`` is the pixels × windows table of window sums (dense or sparse), read in blocks.
    """
    from scipy import sparse

    background = level * np.asarray(n_points, dtype=np.float64)
    counts = np.zeros(sums.shape[1], dtype=np.int64)
    step = max(1, _CHUNK_VALUES // max(1, sums.shape[1]))
    for a in range(0, sums.shape[0], step):
        block = sums[a : a + step]
        block = block.toarray() if sparse.issparse(block) else np.asarray(block)
        s = np.nan_to_num(block.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        found = (s > 0) & (s - background >= snr * np.sqrt(unit * np.maximum(s, 0.0)))
        counts += found.sum(axis=0)
    return counts
