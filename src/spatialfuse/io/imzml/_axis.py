"""A common m/z axis for processed data: peaks of all spectra merged within a ppm tolerance.

Peaks are counted on a fine logarithmic grid (bins ``ppm / 4`` wide, so a bin is the same relative
width everywhere), in one chunked pass with memory bounded by the grid, not the data. Runs of
occupied bins form clusters; a run wider than ``2 · ppm`` is cut into ``2 · ppm`` pieces, so
profile-mode data becomes evenly spaced features instead of one giant cluster. A cluster becomes a
feature when peaks fall into it in at least ``min_frequency`` of the spectra; its m/z is the
intensity-weighted mean of its peaks and its window ``[lo, hi]`` is the span of its bins, so windows
never overlap and every peak counts toward at most one feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialfuse._logging import progress

_BINS_PER_PPM = 4
#: A dense bin grid is used up to this many bins (or 4 per peak), occupied bins only beyond.
_DENSE_BINS = 1 << 24
#: Bytes of peak data handled per chunk.
_CHUNK_BYTES = 32 << 20


def _occupied_sums(bins, first_in_bin, weights, weighted_mz):
    """Per occupied bin of one chunk: bin, spectra with a peak there, weight, weighted m/z."""
    occupied, inverse = np.unique(bins, return_inverse=True)
    return (
        occupied,
        np.bincount(inverse[first_in_bin], minlength=occupied.size).astype(np.float64),
        np.bincount(inverse, weights=weights, minlength=occupied.size),
        np.bincount(inverse, weights=weighted_mz, minlength=occupied.size),
    )


@dataclass(frozen=True)
class MzAxis:
    """Features of a common m/z axis: centres and the closed windows ``[lo, hi]`` they cover."""

    mz: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    frequency: np.ndarray  # fraction of spectra with a peak in the window

    def __len__(self) -> int:
        return self.mz.size


def build_mz_axis(
    reader,
    *,
    ppm: float = 5.0,
    min_frequency: float = 0.01,
    max_features: int | None = None,
    show_progress: bool = False,
) -> MzAxis:
    """Merge the peaks of every spectrum of ``reader`` into a common m/z axis.

    Parameters
    ----------
    reader
        An open :class:`~spatialfuse.io.imzml.ImzMLReader`.
    ppm
        Peaks closer than about this many parts per million merge into one feature.
    min_frequency
        Keep features with a peak in at least this fraction of spectra.
    max_features
        Keep at most this many features, the most intense first (then sorted by m/z).
    show_progress
        Show a progress bar.

    Returns
    -------
    MzAxis
        The common axis, sorted by m/z.
    """
    if not ppm > 0:
        raise ValueError(f"ppm must be positive, got {ppm!r}")
    low, high = reader.mz_range()
    if not (np.isfinite(low) and np.isfinite(high)) or high <= 0:
        empty = np.empty(0)
        return MzAxis(empty, empty, empty, empty)
    low = max(low, 1e-6)
    step = np.log1p(ppm * 1e-6 / _BINS_PER_PPM)
    # high / low may overflow; high may lie below the clamped low (every m/z under 1e-6)
    n_bins = max(2, int(np.floor((np.log(high) - np.log(low)) / step)) + 2)
    n_peaks = int(reader._table.mz_length.sum())
    # A dense grid costs 32 bytes a bin; where the m/z range is absurd (one damaged value makes
    # it 1e-6..1e300: half a billion bins), only the occupied bins are kept instead.
    dense = n_bins <= max(_DENSE_BINS, 4 * n_peaks)
    parts = []
    totals = (
        [np.zeros(n_bins, dtype=np.int64) for _ in range(2)]
        + [np.zeros(n_bins, dtype=np.float64) for _ in range(2)]
        if dense
        else None
    )
    mean_len = max(1.0, n_peaks / max(reader.n_spectra, 1))
    chunk_spectra = max(1, int(_CHUNK_BYTES // (16 * mean_len)))
    n_chunks = -(-reader.n_spectra // chunk_spectra)
    for start, stop, mz, intensity, lengths in progress(
        reader.iter_chunks(chunk_spectra=chunk_spectra),
        show=show_progress,
        desc="m/z axis",
        total=n_chunks,
    ):
        if mz.size == 0:
            continue
        mz64 = mz.astype(np.float64, copy=False)
        keep = mz64 > 0
        with np.errstate(over="ignore"):
            position = np.floor(np.log(mz64[keep] / low) / step)
        # Clipped before the cast: an infinite m/z belongs in the last bin, not in bin 0.
        bins = np.clip(position, 0, n_bins - 1).astype(np.int64)
        w = np.maximum(intensity[keep].astype(np.float64, copy=False), 0)
        w[~np.isfinite(w)] = 0.0  # a NaN/inf intensity must not make a centre NaN
        rows = np.repeat(np.arange(stop - start), lengths)[keep]
        # A spectrum counts once per bin: its peaks are sorted, so repeats are neighbours.
        first_in_bin = np.r_[True, (rows[1:] != rows[:-1]) | (bins[1:] != bins[:-1])]
        if dense:
            for total, (index, weights) in zip(
                totals,
                ((bins, None), (bins[first_in_bin], None), (bins, w), (bins, w * mz64[keep])),
                strict=True,
            ):
                total += np.bincount(index, weights=weights, minlength=n_bins)
        else:
            parts.append(_occupied_sums(bins, first_in_bin, w, w * mz64[keep]))

    if dense:
        peaks, spectra, weight, weighted_mz = totals
        occupied = np.flatnonzero(peaks)
        spectra, weight, weighted_mz = spectra[occupied], weight[occupied], weighted_mz[occupied]
    elif parts:
        bins = np.concatenate([p[0] for p in parts])
        occupied, inverse = np.unique(bins, return_inverse=True)
        spectra, weight, weighted_mz = (
            np.bincount(inverse, weights=np.concatenate([p[k] for p in parts])) for k in (1, 2, 3)
        )
    else:
        occupied = np.empty(0, dtype=np.int64)
    if occupied.size == 0:
        empty = np.empty(0)
        return MzAxis(empty, empty, empty, empty)
    new_run = np.r_[True, np.diff(occupied) > 1]
    run_id = np.cumsum(new_run) - 1
    run_start = occupied[new_run][run_id]
    cluster = run_id * 0
    piece = (occupied - run_start) // (2 * _BINS_PER_PPM)
    cluster = np.cumsum(np.r_[True, (np.diff(run_id) > 0) | (np.diff(piece) != 0)]) - 1
    n_clusters = int(cluster[-1]) + 1
    w = np.bincount(cluster, weights=weight, minlength=n_clusters)
    wm = np.bincount(cluster, weights=weighted_mz, minlength=n_clusters)
    count = np.bincount(cluster, weights=spectra, minlength=n_clusters)
    first_bin = occupied[np.r_[0, np.flatnonzero(np.diff(cluster)) + 1]]
    last_bin = occupied[np.r_[np.flatnonzero(np.diff(cluster)), occupied.size - 1]]
    edges_lo = low * np.exp(first_bin * step)
    edges_hi = low * np.exp((last_bin + 1) * step)
    plain_mean = 0.5 * (edges_lo + edges_hi)
    centre = np.divide(wm, w, out=plain_mean.copy(), where=w > 0)
    frequency = np.minimum(count / max(reader.n_spectra, 1), 1.0)
    keep = frequency >= min_frequency
    if max_features is not None and keep.sum() > max_features:
        ranked = np.flatnonzero(keep)[np.argsort(-w[keep], kind="stable")[:max_features]]
        keep = np.zeros_like(keep)
        keep[ranked] = True
    # Windows are closed; shrink the upper edge by one ulp so neighbours never share a value.
    hi = np.nextafter(edges_hi[keep], -np.inf)
    return MzAxis(centre[keep], edges_lo[keep], hi, frequency[keep])
