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

Whether a run is ion counts at all is decided by :func:`detect_counts` (``noise="auto"``, the
default of ``sf.pp.pick_peaks``): what the file declares, whole-number values, a digitizer grid,
a floor of single-ion events whose variance is the mean times about one pulse. On the 45 shared
imzML files it calls the two timsTOF profile runs counts and the 43 others not, with or without
their metadata; thresholded multiplicative noise in whole numbers would pass its data tests.

Written here: the moments are one streamed pass of sums and sums of squares over the pixels,
the unit a ratio of two sums, the test a cumulative sum over each peak's window; neither
scipy.signal nor pyOpenMS models the noise of a sum of pixels (pyOpenMS'
``SignalToNoiseEstimatorMedian`` is a windowed median of one spectrum, the same kind of
estimate as the MAD this replaces).
"""

from __future__ import annotations

from dataclasses import dataclass

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


# ------------------------------------------------------------------- is it ion counts?

#: A floor of stray ions: at the median non-zero point at most this share of pixels hold
#: anything (timsTOF kidney 0.018, fleX 0.006; it also needs ≥ 20 pixels to be measurable).
FLOOR_HIT_SHARE = 0.05
#: Non-zero values on the floor needed to measure the count unit.
MIN_FLOOR_VALUES = 1000
#: ``g / pulse`` on the floor is ``E[a²]/E[a]²`` of one ion's pulse (≥ 1; 2 for exponential
#: pulse heights): outside this range the floor's values are not single-ion pulses.
UNIT_OVER_PULSE = (0.9, 3.0)
#: Slope of log variance on log mean over the sparse points (counts: 1; multiplicative: 2).
SLOPE = (0.5, 1.5)
#: Share of non-zero values that must be whole numbers (a digitizer's sums).
WHOLE_SHARE = 0.999
#: Spectra sampled for the cheap check of whole numbers.
SAMPLE_SPECTRA = 64
#: Share of the pooled spectrum's steps that follow the step before within 10 % (a grid).
GRID_SHARE = 0.5
MOMENTS_NEEDED = "the moments decide"

#: Analysers that do not count single ions (PSI-MS accessions; names vary, so by accession).
_NOT_COUNTING_ANALYSERS = {
    "MS:1000484": "orbitrap",
    "MS:1000079": "FT-ICR",
    "MS:1000264": "ion trap",
    "MS:1000082": "quadrupole ion trap",
    "MS:1000291": "linear ion trap",
    "MS:1000078": "axial ejection linear ion trap",
    "MS:1000083": "radial ejection linear ion trap",
}
_TOF = "MS:1000084"
#: Data processing that rescales or reshapes intensities: what it leaves is not counts.
_RESHAPING = {
    "MS:1001484": "intensity normalization",
    "MS:1000592": "smoothing",
    "MS:1000593": "baseline reduction",
    "MS:1000035": "peak picking",
}
_SPECTRUM_TYPES = {"MS:1000127": "centroid", "MS:1000128": "profile"}


@dataclass(frozen=True)
class CountingEvidence:
    """What :func:`detect_counts` measured, and what it decided.

    ``counts`` is the decision; ``reason`` says which test decided it. The numbers are NaN where
    the test that decided came before them.
    """

    counts: bool
    reason: str
    n_pixels: int
    whole_share: float = float("nan")
    grid_share: float = float("nan")
    floor_hit_share: float = float("nan")
    floor_values: int = 0
    unit: float = float("nan")
    pulse: float = float("nan")
    slope: float = float("nan")
    declared: str = ""

    @property
    def unit_over_pulse(self) -> float:
        """``g`` over the mean non-zero value on the floor (``E[a²]/E[a]²`` for counts)."""
        return self.unit / self.pulse if self.pulse > 0 else float("nan")

    def as_dict(self) -> dict:
        """Plain values (no None), for ``uns``."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["counts"] = bool(self.counts)
        out["n_pixels"] = int(self.n_pixels)
        out["floor_values"] = int(self.floor_values)
        out["unit_over_pulse"] = float(self.unit_over_pulse)
        return out


def declared_metadata(path) -> dict[str, list[str]]:
    """What an imzML header declares about its intensities, by accession.

    ``{"analysers": [...], "reshaping": [...], "tof": bool, "spectrum_type": str}``:
    analysers that do not count ions (Orbitrap, FT-ICR, ion traps), processing that rescales
    intensities (normalisation, smoothing, baseline reduction, peak picking), whether a
    time-of-flight analyser is declared, and ``"centroid"``/``"profile"`` where the header
    states one of MS:1000127/MS:1000128 only. Read from the text before ``<spectrumList>``
    (at most 2 MiB); empty where the file says nothing or cannot be read.
    """
    import re

    from spatialfuse._ions import header_text

    out = {"analysers": [], "reshaping": [], "tof": False, "spectrum_type": ""}
    head = header_text(path)
    if head is None:
        return out
    head = head.split("<spectrumList", 1)[0]
    found = set(re.findall(r'accession\s*=\s*"([^"]+)"', head))
    out["analysers"] = sorted(v for k, v in _NOT_COUNTING_ANALYSERS.items() if k in found)
    out["reshaping"] = sorted(v for k, v in _RESHAPING.items() if k in found)
    out["tof"] = _TOF in found
    types = {kind for accession, kind in _SPECTRUM_TYPES.items() if accession in found}
    out["spectrum_type"] = types.pop() if len(types) == 1 else ""
    return out


def _whole_share(values: np.ndarray) -> tuple[int, int]:
    """``(non-zero finite values, of which whole numbers)``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v != 0)]
    return int(v.size), int(np.count_nonzero(v == np.round(v)))


def sample_checks(data) -> tuple[float, dict]:
    """The cheap checks, before any pass over the data: ``(whole share, declared)``.

    ``data`` is an :class:`~spatialfuse.io.imzml.ImzMLReader` or an AnnData. ``whole share``
    is the share of the non-zero values of up to 64 spectra (evenly spaced) that are whole
    numbers; ``declared`` what the file states (:func:`declared_metadata`, with its
    ``"spectrum_type"``; an AnnData's file is ``uns["spatialfuse"]["file"]``).
    """
    if hasattr(data, "spectrum"):
        n = data.n_spectra
        rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, SAMPLE_SPECTRA)).astype(int))
        total = whole = 0
        for i in rows.tolist():
            a, b = _whole_share(data.spectrum(i)[1])
            total, whole = total + a, whole + b
        declared = declared_metadata(data.path)
        declared["spectrum_type"] = data.spectrum_type or ""
        return (whole / total if total else float("nan")), declared
    from scipy import sparse

    n = data.n_obs
    rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, SAMPLE_SPECTRA)).astype(int))
    x = data.X
    if hasattr(x, "compute"):
        # A lazy table one row at a time: indexing it with all rows at once computes every
        # block they fall in together (the recalibrated store: 64 blocks in memory at once).
        total = whole = 0
        for i in rows.tolist():
            a, b = _whole_share(np.asarray(x[i : i + 1].compute()))
            total, whole = total + a, whole + b
    else:
        block = x[rows]
        block = block.toarray() if sparse.issparse(block) else np.asarray(block)
        total, whole = _whole_share(block)
    info = data.uns.get("spatialfuse", {}) or {}
    path = info.get("file") if hasattr(info, "get") else None
    declared = declared_metadata(path)
    return (whole / total if total else float("nan")), declared


def grid_share(mz: np.ndarray, mean: np.ndarray) -> float:
    """Share of the pooled spectrum's steps within 10 % of the step before (a digitizer grid).

    Over the points where the mean is non-zero, in m/z order: a profile kept on every TOF
    point steps along the instrument's grid (timsTOF kidney 0.92, fleX 0.86); centroids,
    however many pixels put them side by side, do not (Bruker's own centroids of the fleX run
    0.09, i2nca's 0.07–0.08, the bladder's 79 peaks 0.13).
    """
    x = np.asarray(mz, dtype=np.float64)[np.asarray(mean) > 0]
    if x.size < 4:
        return 0.0
    step = np.diff(x) / x[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.abs(np.log(step[1:] / step[:-1]))
    return float(np.mean(change < np.log(1.1)))


def _floor_slope(mean: np.ndarray, var: np.ndarray, hits: np.ndarray, n_pixels: int) -> float:
    """Slope of log pooled variance on log pooled mean, points grouped by their hits.

    Over the sparse points (held by at most 20 % of pixels), in groups of doubling hit counts
    (1, 2–3, 4–7, …): compound-Poisson counts give variance = g × mean, slope 1;
    multiplicative (normalised) intensities slope 2; NaN with fewer than two groups.
    """
    sparse_points = (hits > 0) & (mean > 0) & (hits <= 0.2 * n_pixels)
    group = np.floor(np.log2(np.maximum(hits, 1))).astype(int)
    xs, ys = [], []
    for g in np.unique(group[sparse_points]).tolist():
        sel = sparse_points & (group == g)
        m, v = mean[sel].sum(), np.maximum(var[sel], 0.0).sum()
        if sel.sum() >= 10 and m > 0 and v > 0:
            xs.append(np.log(m / sel.sum()))
            ys.append(np.log(v / sel.sum()))
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(xs, ys, 1)[0])


def detect_counts(
    mz: np.ndarray | None,
    mean: np.ndarray | None,
    mean_of_squares: np.ndarray | None,
    hits: np.ndarray | None,
    n_pixels: int,
    *,
    whole_share: float = float("nan"),
    declared: dict | None = None,
) -> CountingEvidence:
    """Whether intensities are ion counts kept on every digitizer point (``noise="auto"``).

    Ion counts, for the counting noise of :func:`count_unit`, pass every test, in this order
    (the first that fails decides, and is named in ``reason``):

    1. what the file declares, where it declares it: no centroid spectra (MS:1000127), no
       Orbitrap, FT-ICR or ion-trap analyser without a time-of-flight one, no normalisation,
       smoothing, baseline reduction or peak picking (PSI-MS accessions; a file that declares
       nothing passes);
    2. whole numbers: at least 99.9 % of the sampled non-zero values (a digitizer's sums of
       pulses; normalised, smoothed, resampled, baseline-corrected or log values are not);
    3. at least 20 pixels (fewer cannot show a floor held by ≤ 5 % of them);
    4. every point of a digitizer grid: ≥ 50 % of the pooled spectrum's steps within 10 % of
       the step before (:func:`grid_share`; centroids are not);
    5. a floor of stray ions: at the median non-zero point at most 5 % of the pixels hold
       anything, with at least 1,000 non-zero values on that floor;
    6. the floor's values are single-ion pulses: the count unit ``g`` (variance over mean) is
       0.9–3 × their mean non-zero value (``E[a²]/E[a]²`` of a pulse-height distribution);
    7. variance proportional to the mean over the sparse points: slope 0.5–1.5 of log variance
       on log mean (counts 1, multiplicative intensities 2) where two groups can be formed.

    ``mz``, ``mean``, ``mean_of_squares`` and ``hits`` are the per-point moments over the
    pixels (:func:`reader_moments`, :func:`table_moments`; None where tests 1–3 decide);
    ``whole_share`` and ``declared`` come from :func:`sample_checks`. Tests 2–7 need no
    metadata. Measured on the 45 shared imzML files (the confusion table is in
    ``docs/spectra.md``).
    """
    declared = declared or {}
    said = [*declared.get("analysers", []), *declared.get("reshaping", [])]
    if declared.get("spectrum_type"):
        said.insert(0, f"{declared['spectrum_type']} spectra")
    base = {
        "n_pixels": int(n_pixels),
        "whole_share": float(whole_share),
        "declared": ", ".join(said),
    }
    analysers = declared.get("analysers", [])
    if declared.get("spectrum_type") == "centroid":
        return CountingEvidence(False, "the file declares centroid spectra (MS:1000127)", **base)
    if analysers and not declared.get("tof"):
        return CountingEvidence(
            False, f"the file declares an {analysers[0]} analyser (no time-of-flight)", **base
        )
    if declared.get("reshaping"):
        return CountingEvidence(
            False, f"the file declares {declared['reshaping'][0]} of its intensities", **base
        )
    if not (whole_share >= WHOLE_SHARE):
        return CountingEvidence(
            False,
            f"{whole_share:.1%} of the sampled non-zero values are whole numbers "
            f"(a digitizer's counts: ≥ {WHOLE_SHARE:.1%})",
            **base,
        )
    if n_pixels * FLOOR_HIT_SHARE < 1:
        return CountingEvidence(
            False, f"{n_pixels} pixels: too few to see a floor of stray ions (≥ 20)", **base
        )
    if mean is None:
        return CountingEvidence(False, MOMENTS_NEEDED, **base)
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(mean_of_squares, dtype=np.float64) - mean**2
    hits = np.asarray(hits, dtype=np.float64)
    positive = np.isfinite(mean) & (mean > 0) & np.isfinite(var) & (hits > 0)
    if not positive.any():
        return CountingEvidence(False, "no non-zero intensities", **base)
    median_hits = float(np.median(hits[positive]))
    floor = positive & (hits <= median_hits)
    base["grid_share"] = grid_share(mz, np.where(positive, mean, 0.0))
    base["floor_hit_share"] = median_hits / n_pixels
    base["floor_values"] = int(hits[floor].sum())
    base["pulse"] = float(n_pixels * mean[floor].sum() / hits[floor].sum())
    base["unit"] = float(np.maximum(var[floor], 0.0).sum() / mean[floor].sum())
    base["slope"] = _floor_slope(mean, var, hits, n_pixels)
    evidence = CountingEvidence(False, "", **base)
    if evidence.grid_share < GRID_SHARE:
        reason = (
            f"not every point of a digitizer grid: {evidence.grid_share:.0%} of the pooled "
            f"spectrum's steps follow the one before within 10 % (a profile: ≥ {GRID_SHARE:.0%})"
        )
    elif evidence.floor_hit_share > FLOOR_HIT_SHARE:
        reason = (
            f"no floor of stray ions: the median non-zero point is non-zero in "
            f"{evidence.floor_hit_share:.0%} of the pixels (counts: ≤ {FLOOR_HIT_SHARE:.0%})"
        )
    elif evidence.floor_values < MIN_FLOOR_VALUES:
        reason = f"{evidence.floor_values} values on the floor: too few to measure one ion"
    elif not (UNIT_OVER_PULSE[0] <= evidence.unit_over_pulse <= UNIT_OVER_PULSE[1]):
        reason = (
            f"the floor's variance over mean is {evidence.unit_over_pulse:.2f} × its mean "
            f"non-zero value (single-ion pulses: {UNIT_OVER_PULSE[0]}–{UNIT_OVER_PULSE[1]})"
        )
    elif np.isfinite(evidence.slope) and not (SLOPE[0] <= evidence.slope <= SLOPE[1]):
        reason = (
            f"variance grows as mean^{evidence.slope:.2f} over the sparse points "
            f"(counts: mean^1, multiplicative noise: mean^2)"
        )
    else:
        reason = (
            f"ion counts: whole numbers on a digitizer grid, a floor of single ions (median "
            f"point in {evidence.floor_hit_share:.1%} of pixels), count unit {evidence.unit:.3g}"
            f" = {evidence.unit_over_pulse:.2f} × one pulse, variance ∝ "
            f"mean^{evidence.slope:.2f}"
        )
        return CountingEvidence(True, reason, **base)
    return CountingEvidence(False, reason, **base)


def reader_evidence(reader, ppm: float):
    """``(evidence, moments)`` of an imzML file: :func:`detect_counts` on its data.

    ``moments`` is :func:`reader_moments`' ``(mz, mean, mean of squares, hits)`` where the
    cheap checks left the decision to them (one streamed pass over the file), else None.
    """
    whole, declared = sample_checks(reader)
    n = reader.n_spectra
    evidence = detect_counts(None, None, None, None, n, whole_share=whole, declared=declared)
    if evidence.reason != MOMENTS_NEEDED:
        return evidence, None
    moments = reader_moments(reader, ppm)
    return detect_counts(*moments, n, whole_share=whole, declared=declared), moments


def table_evidence(adata):
    """``(evidence, moments)`` of a pixels × points table, as :func:`reader_evidence`.

    ``moments`` is :func:`table_moments`' ``(mean, mean of squares, hits)`` or None.
    """
    whole, declared = sample_checks(adata)
    n = adata.n_obs
    evidence = detect_counts(None, None, None, None, n, whole_share=whole, declared=declared)
    if evidence.reason != MOMENTS_NEEDED:
        return evidence, None
    moments = table_moments(adata.X)
    mz = np.asarray(adata.var["mz"], dtype=np.float64)
    return detect_counts(mz, *moments, n, whole_share=whole, declared=declared), moments
