"""A common m/z axis for processed data: peaks of all spectra merged within a ppm tolerance.

Peaks are counted on a fine logarithmic grid (bins ``ppm / 4`` wide, so a bin is the same relative
width everywhere), in one chunked pass with memory bounded by the grid, not the data. Runs of
occupied bins form clusters; a run wider than ``2 · ppm`` is cut into ``2 · ppm`` pieces, so
profile-mode data becomes evenly spaced features instead of one giant cluster. A cluster becomes a
feature when peaks fall into it in at least ``min_frequency`` of the spectra; its m/z is the
intensity-weighted mean of its peaks and its window ``[lo, hi]`` is the span of its bins, so windows
never overlap and every peak counts toward at most one feature.

A fixed ``min_frequency`` alone lets the axis grow with noise: uniform noise peaks put a peak in
a given window in a fraction of the spectra that grows with their number (5,000 peaks per
spectrum: about 3 % of the spectra per 10 ppm window at m/z 500, so every window passed 1 %:
146k features). The noise rule measures that fraction where each feature sits (the peaks in
± :data:`NOISE_WINDOW_PPM` around it, spread evenly over that neighbourhood's bins) and keeps a
feature only where its count is :data:`NOISE_FACTOR` times what noise alone gives plus
:data:`NOISE_SIGMAS` Poisson standard deviations; the threshold stays near 0 on clean data and
rises with noise, so the number of features does not.
:data:`DEFAULT_MAX_FEATURES` bounds the axis whatever the data.

The pass runs in blocks of :data:`BLOCK_CHUNKS` chunks of spectra (:func:`axis_partial`), here or
on dask workers (``convert_imzml(..., client=)``); the blocks' histograms are added up in block
order (:func:`merge_partials`) wherever they ran, so the axis is the same to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spatialfuse._logging import progress

_BINS_PER_PPM = 4
#: A dense bin grid is used up to this many bins (or 4 per peak), occupied bins only beyond.
_DENSE_BINS = 1 << 24
#: Bytes of peak data handled per chunk.
_CHUNK_BYTES = 32 << 20
#: A feature is kept where its frequency is at least this many times the noise frequency.
NOISE_FACTOR = 3.0
#: ... plus this many Poisson standard deviations of the noise count (few spectra: few counts).
NOISE_SIGMAS = 5.0
#: Half-width (ppm) of the m/z neighbourhood whose peaks give the local noise density.
NOISE_WINDOW_PPM = 20_000.0
#: The noise rule never asks for more than this frequency: where every window is full (profile
#: spectra stored as processed) noise and signal cannot be told apart by frequency.
MAX_NOISE_THRESHOLD = 0.5
#: Default cap on the number of features (the most intense are kept): peak-picked MSI data
#: have hundreds to a few thousand features; 10,000 float32 columns are 40 kB per pixel.
DEFAULT_MAX_FEATURES = 10_000


def _occupied_sums(bins, first_in_bin, weights, weighted_mz):
    """Per occupied bin of one chunk: bin, spectra with a peak there, weight, weighted m/z."""
    occupied, inverse = np.unique(bins, return_inverse=True)
    return (
        occupied,
        np.bincount(inverse[first_in_bin], minlength=occupied.size).astype(np.float64),
        np.bincount(inverse, weights=weights, minlength=occupied.size),
        np.bincount(inverse, weights=weighted_mz, minlength=occupied.size),
    )


def _merge_occupied(parts) -> tuple[np.ndarray, ...]:
    """Sums over the ``(occupied, spectra, weight, weighted_mz)`` of several parts, in order."""
    bins = np.concatenate([p[0] for p in parts])
    occupied, inverse = np.unique(bins, return_inverse=True)
    return (
        occupied,
        *(np.bincount(inverse, weights=np.concatenate([p[k] for p in parts])) for k in (1, 2, 3)),
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


@dataclass(frozen=True)
class AxisGrid:
    """The bins peaks are counted in, and how spectra are cut into chunks and blocks.

    Bin ``b`` covers m/z ``[low·e^(b·step), low·e^((b+1)·step))``. A block (:meth:`blocks`) is
    :data:`BLOCK_CHUNKS` chunks of ``chunk_spectra`` spectra: the unit of work of a parallel pass.
    """

    low: float
    step: float
    n_bins: int
    dense: bool
    chunk_spectra: int
    n_spectra: int

    def blocks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` spectrum ranges of the blocks, in order."""
        size = self.chunk_spectra * BLOCK_CHUNKS
        return [(a, min(self.n_spectra, a + size)) for a in range(0, self.n_spectra, size)]


#: Chunks per block. Blocks are summed in order whether they run here or on workers, so a
#: parallel pass gives the very same axis as a serial one (float sums included).
BLOCK_CHUNKS = 4


def axis_grid(reader, ppm: float) -> AxisGrid | None:
    """The bin grid of ``reader``'s peaks at ``ppm``; None where no spectrum has a positive m/z."""
    low, high = reader.mz_range()
    if not (np.isfinite(low) and np.isfinite(high)) or high <= 0:
        return None
    low = max(low, 1e-6)
    step = np.log1p(ppm * 1e-6 / _BINS_PER_PPM)
    # high / low may overflow; high may lie below the clamped low (every m/z under 1e-6)
    n_bins = max(2, int(np.floor((np.log(high) - np.log(low)) / step)) + 2)
    n_peaks = int(reader.peak_counts.sum())
    # A dense grid costs 24 bytes a bin; where the m/z range is absurd (one damaged value makes
    # it 1e-6..1e300: half a billion bins), only the occupied bins are kept instead.
    dense = n_bins <= max(_DENSE_BINS, 4 * n_peaks)
    mean_len = max(1.0, n_peaks / max(reader.n_spectra, 1))
    chunk_spectra = max(1, int(_CHUNK_BYTES // (16 * mean_len)))
    return AxisGrid(float(low), float(step), n_bins, bool(dense), chunk_spectra, reader.n_spectra)


def axis_partial(reader, grid: AxisGrid, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """The peak histogram of spectra ``start:stop`` (one block), chunk by chunk.

    Returns
    -------
    tuple of numpy.ndarray
        Dense grids: ``(spectra, weight, weighted_mz)`` per bin (spectra with a peak in the bin,
        summed intensity, summed intensity × m/z); otherwise ``(occupied, spectra, weight,
        weighted_mz)`` over the occupied bins only. :func:`merge_partials` adds them up.
    """
    low, step, n_bins, dense = grid.low, grid.step, grid.n_bins, grid.dense
    parts = []
    totals = (
        [np.zeros(n_bins, dtype=np.int64)] + [np.zeros(n_bins, dtype=np.float64) for _ in range(2)]
        if dense
        else None
    )
    for a in range(start, stop, grid.chunk_spectra):
        b = min(stop, a + grid.chunk_spectra)
        mz, intensity, lengths = reader.spectra_block(a, b)
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
        rows = np.repeat(np.arange(b - a), lengths)[keep]
        # A spectrum counts once per bin: its peaks are sorted, so repeats are neighbours.
        first_in_bin = np.r_[True, (rows[1:] != rows[:-1]) | (bins[1:] != bins[:-1])]
        if dense:
            for total, (index, weights) in zip(
                totals,
                ((bins[first_in_bin], None), (bins, w), (bins, w * mz64[keep])),
                strict=True,
            ):
                total += np.bincount(index, weights=weights, minlength=n_bins)
        else:
            parts.append(_occupied_sums(bins, first_in_bin, w, w * mz64[keep]))
    if dense:
        return tuple(totals)
    if not parts:
        return (np.empty(0, np.int64), *(np.empty(0) for _ in range(3)))
    return _merge_occupied(parts)


def merge_partials(grid: AxisGrid, partials) -> tuple[np.ndarray, ...]:
    """Add up the blocks' histograms, in block order: ``(occupied, spectra, weight, wmz)``."""
    if grid.dense:
        totals = None
        for partial in partials:
            if totals is None:  # 0 + x is x: the first block's sums start the totals
                totals = list(partial)
                continue
            for total, values in zip(totals, partial, strict=True):
                total += values
        if totals is None:
            return (np.empty(0, np.int64), *(np.empty(0) for _ in range(3)))
        spectra, weight, weighted_mz = totals
        # A bin holds peaks exactly where a spectrum has a peak in it.
        occupied = np.flatnonzero(spectra)
        return occupied, spectra[occupied], weight[occupied], weighted_mz[occupied]
    parts = [p for p in partials if p[0].size]
    if not parts:
        return (np.empty(0, np.int64), *(np.empty(0) for _ in range(3)))
    return _merge_occupied(parts)


def build_mz_axis(
    reader,
    *,
    ppm: float = 5.0,
    min_frequency: float = 0.01,
    max_features: int | None = DEFAULT_MAX_FEATURES,
    noise_factor: float | None = NOISE_FACTOR,
    show_progress: bool = False,
    map_blocks: Callable | None = None,
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
        Keep at most this many features, the most intense first (then sorted by m/z); None: no
        cap.
    noise_factor
        Keep features with a peak in at least this many times the number of spectra that the
        local noise density gives a window, plus :data:`NOISE_SIGMAS` Poisson standard
        deviations (a frequency of at most :data:`MAX_NOISE_THRESHOLD`); None or 0: no noise
        rule.
    show_progress
        Show a progress bar.
    map_blocks
        Where the blocks' histograms are computed: None, here; or a callable
        ``map_blocks(grid, blocks)`` returning the :func:`axis_partial` of each ``(start,
        stop)`` block in order (``convert_imzml`` passes one that runs them on a dask
        cluster). They are added up in block order either way, so the axis is the same.

    Returns
    -------
    MzAxis
        The common axis, sorted by m/z.
    """
    if not ppm > 0:
        raise ValueError(f"ppm must be positive, got {ppm!r}")
    if max_features is not None and not (
        not isinstance(max_features, bool) and int(max_features) == max_features >= 1
    ):
        raise ValueError(f"max_features must be an integer >= 1 or None, got {max_features!r}")
    if noise_factor is not None and not noise_factor >= 0:
        raise ValueError(f"noise_factor must be >= 0 or None, got {noise_factor!r}")
    grid = axis_grid(reader, ppm)
    empty = MzAxis(*(np.empty(0) for _ in range(4)))
    if grid is None:
        return empty
    blocks = grid.blocks()
    if map_blocks is None:
        partials = (axis_partial(reader, grid, a, b) for a, b in blocks)
    else:
        partials = map_blocks(grid, blocks)
    occupied, spectra, weight, weighted_mz = merge_partials(
        grid, progress(partials, show=show_progress, desc="m/z axis", total=len(blocks))
    )
    if occupied.size == 0:
        return empty
    return _features(
        grid, occupied, spectra, weight, weighted_mz, min_frequency, max_features, noise_factor
    )


def _features(
    grid: AxisGrid, occupied, spectra, weight, weighted_mz, min_frequency, max_features, factor
) -> MzAxis:
    """The axis from the merged histogram: clusters of occupied bins, then the rules."""
    low, step, n_bins, n_spectra = grid.low, grid.step, grid.n_bins, grid.n_spectra
    new_run = np.r_[True, np.diff(occupied) > 1]
    run_id = np.cumsum(new_run) - 1
    run_start = occupied[new_run][run_id]
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
    frequency = np.minimum(count / max(n_spectra, 1), 1.0)
    keep = frequency >= min_frequency
    if factor:
        centre_bin = (first_bin + last_bin) // 2
        keep &= frequency >= _noise_threshold(
            occupied, spectra, centre_bin, n_bins, step, factor, n_spectra
        )
    if max_features is not None and keep.sum() > max_features:
        ranked = np.flatnonzero(keep)[np.argsort(-w[keep], kind="stable")[:max_features]]
        keep = np.zeros_like(keep)
        keep[ranked] = True
    # Windows are closed; shrink the upper edge by one ulp so neighbours never share a value.
    hi = np.nextafter(edges_hi[keep], -np.inf)
    return MzAxis(centre[keep], edges_lo[keep], hi, frequency[keep])


def _noise_threshold(
    occupied, spectra, centre, n_bins: int, step: float, factor: float, n_spectra: int
):
    """Per feature (its centre bin): the least frequency that noise alone does not reach.

    ``μ``: the peaks (each spectrum counted once per bin) within ± :data:`NOISE_WINDOW_PPM` of
    the feature, per bin of that neighbourhood, times the widest window's width in bins (runs of
    occupied bins are cut into windows of that width, and noise makes its runs long). The
    threshold is ``factor · μ`` plus :data:`NOISE_SIGMAS` Poisson standard deviations (``√μ``),
    as a fraction of the spectra: on clean data μ is about 0 and only ``min_frequency`` counts.
    """
    half = max(1, round(float(np.log1p(NOISE_WINDOW_PPM * 1e-6) / step)))
    hits = np.r_[0.0, np.cumsum(spectra)]
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half, n_bins - 1)
    inside = (
        hits[np.searchsorted(occupied, hi, side="right")]
        - hits[np.searchsorted(occupied, lo, side="left")]
    )
    mu = inside / (hi - lo + 1) * (2 * _BINS_PER_PPM)
    count = factor * mu + NOISE_SIGMAS * np.sqrt(mu)
    return np.minimum(count / max(n_spectra, 1), MAX_NOISE_THRESHOLD)
