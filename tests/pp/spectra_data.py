"""Synthetic profile MSI spectra with known peaks, baseline, noise and per-pixel mass drift."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

#: Planted peak centres (m/z), spread over the axis and away from its ends.
PEAKS = np.array([312.1234, 348.2871, 401.0552, 455.9013, 502.3336, 560.7771, 622.4109, 688.2468])


def profile_axis(lo: float = 300.0, hi: float = 700.0, ppm_step: float = 10.0) -> np.ndarray:
    """An m/z axis with a constant relative step (as a TOF/Orbitrap profile is, roughly)."""
    n = int(np.log(hi / lo) / np.log1p(ppm_step * 1e-6)) + 1
    return lo * np.exp(np.arange(n) * np.log1p(ppm_step * 1e-6))


def profile_table(
    *,
    peaks: np.ndarray = PEAKS,
    heights: np.ndarray | None = None,
    n_pixels: int = 20,
    resolving_power: float = 15_000.0,
    noise: float = 1.0,
    baseline: float = 20.0,
    drift_ppm: np.ndarray | float = 0.0,
    presence: np.ndarray | None = None,
    abundance: np.ndarray | None = None,
    seed: int = 0,
    mz: np.ndarray | None = None,
) -> ad.AnnData:
    """Pixels × profile points: Gaussian peaks (FWHM = m/z / resolving power) + baseline + noise.

    ``drift_ppm`` (scalar or one per pixel) moves every peak of a pixel by that many ppm;
    ``presence`` (pixels × peaks, bool) says where each peak exists (all pixels by default);
    ``abundance`` (pixels × peaks) multiplies each peak's height per pixel (1 by default).
    """
    rng = np.random.default_rng(seed)
    mz = profile_axis() if mz is None else mz
    heights = np.linspace(400, 100, peaks.size) if heights is None else heights
    drift = np.broadcast_to(np.asarray(drift_ppm, dtype=np.float64), (n_pixels,))
    presence = np.ones((n_pixels, peaks.size), bool) if presence is None else presence
    abundance = np.ones((n_pixels, peaks.size)) if abundance is None else abundance
    x = np.empty((n_pixels, mz.size), dtype=np.float32)
    slope = baseline * np.exp(-(mz - mz[0]) / 150.0)
    for i in range(n_pixels):
        y = slope + rng.normal(0.0, noise, mz.size)
        centres = peaks * (1 + drift[i] * 1e-6)
        sigma = centres / resolving_power / 2.3548200450309493
        scaled = heights * abundance[i]
        for c, s, h, here in zip(centres, sigma, scaled, presence[i], strict=True):
            if here:
                near = np.abs(mz - c) < 8 * s
                y[near] += h * np.exp(-0.5 * ((mz[near] - c) / s) ** 2)
        x[i] = y
    var = pd.DataFrame({"mz": mz}, index=[f"mz-{v:.6f}" for v in mz])
    obs = pd.DataFrame(index=[f"{i}_1" for i in range(n_pixels)])
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.obsm["spatial"] = np.stack([np.arange(n_pixels) * 10.0, np.zeros(n_pixels)], axis=1)
    return adata


def ppm_error(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Signed ppm error of the nearest found value for each true value."""
    found = np.asarray(found, dtype=np.float64)
    nearest = found[np.abs(found[None, :] - truth[:, None]).argmin(axis=1)]
    return (nearest - truth) / truth * 1e6
