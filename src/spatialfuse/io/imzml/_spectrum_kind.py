"""Whether an imzML holds centroid or profile spectra: the data decide, then the declaration."""

from __future__ import annotations

import numpy as np

#: A point is part of a profile (not a centroid) where a non-zero neighbour lies this close.
PROFILE_GAP_PPM = 25.0
#: Spectra looked at to tell centroid from profile data.
SAMPLE_SPECTRA = 64


def spectrum_kind(reader) -> tuple[str, str]:
    """``("centroid" | "profile", how it was decided)`` for the spectra of ``reader``.

    The data decide where they show profile spectra: in a sample of spectra, most non-zero
    points have a non-zero neighbour (the next point of the array, or of the shared axis)
    within :data:`PROFILE_GAP_PPM` — peaks sampled across their width, which centroids never
    are. Otherwise the file's declaration (MS:1000127 / MS:1000128) decides, and where it
    declares neither, centroid. (Writers mislabel: processed profile spectra declared as
    centroids, converter test files named profile that hold centroids.)
    """
    declared = getattr(reader, "spectrum_type", None)
    n = reader.n_spectra
    sample = np.unique(np.linspace(0, max(n - 1, 0), min(n, SAMPLE_SPECTRA)).astype(int))
    shares = []
    for i in sample.tolist():
        mz, intensity = reader.spectrum(i)
        k = min(mz.size, intensity.size)
        mz, intensity = np.asarray(mz[:k], np.float64), np.asarray(intensity[:k], np.float64)
        with np.errstate(invalid="ignore"):
            on = np.isfinite(intensity) & (intensity > 0)
        if on.sum() < 3:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            close = np.abs(np.diff(mz)) <= PROFILE_GAP_PPM * 1e-6 * np.abs(mz[1:])
        pair = close & on[1:] & on[:-1]
        near = np.r_[pair, False] | np.r_[False, pair]
        shares.append(near[on].mean())
    profile_like = bool(shares) and float(np.median(shares)) > 0.5
    if profile_like:
        how = "data (points sampled across each peak)"
        if declared == "centroid":
            how += "; the file declares centroid spectra"
        return "profile", how
    if declared in ("centroid", "profile"):
        return declared, f"file (declares {declared} spectra)"
    return "centroid", "data (isolated points; the file declares no spectrum type)"
