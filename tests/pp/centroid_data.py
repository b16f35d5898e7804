"""Synthetic centroid (processed) imzML files with known per-pixel m/z drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from spectra_data import PEAKS

from spatialfuse.datasets._writers import write_imzml

#: Heights of the planted peaks (noise peaks are 1-5).
HEIGHTS = np.linspace(400.0, 100.0, PEAKS.size)


def line_drift(nx: int, ny: int, *, span: float = 20.0, pixel_jitter: float = 3.0, seed: int = 0):
    """Per-pixel drift (ppm): linear over the lines from −span to +span, plus per-pixel jitter."""
    rng = np.random.default_rng(seed)
    line = np.linspace(-span, span, ny)
    return (np.repeat(line, nx) + rng.uniform(-pixel_jitter, pixel_jitter, nx * ny)).round(6)


def write_centroid(
    path,
    *,
    nx: int = 8,
    ny: int = 6,
    drift_ppm=0.0,
    slope_ppm_per_mz: float | np.ndarray = 0.0,
    jitter_ppm: float = 0.0,
    n_noise: int = 20,
    mode: str = "processed",
    seed: int = 1,
):
    """A processed centroid file: every pixel holds the planted ``PEAKS`` at its own drift.

    The m/z of peak ``m`` in pixel ``i`` is ``m · (1 + e · 10⁻⁶)`` with
    ``e = drift[i] + slope[i] · (m − PEAKS.mean())`` (+ Gaussian jitter); its intensity is its
    height times a per-pixel abundance in [0.5, 1.5]; ``n_noise`` weak random peaks (1-5) are
    added. ``mode="continuous"`` writes the same peaks (without drift) on one shared axis, zero
    where a pixel has none. Returns the path.
    """
    rng = np.random.default_rng(seed)
    n = nx * ny
    drift = np.broadcast_to(np.asarray(drift_ppm, dtype=np.float64), (n,))
    slope = np.broadcast_to(np.asarray(slope_ppm_per_mz, dtype=np.float64), (n,))
    coords = np.array([(i % nx + 1, i // nx + 1) for i in range(n)])
    mzs, values = [], []
    for i in range(n):
        error = drift[i] + slope[i] * (PEAKS - PEAKS.mean()) + rng.normal(0, jitter_ppm, PEAKS.size)
        planted = PEAKS * (1 + error * 1e-6)
        noise = rng.uniform(300.0, 700.0, n_noise)
        mz = np.r_[planted, noise]
        v = np.r_[HEIGHTS * rng.uniform(0.5, 1.5, PEAKS.size), rng.uniform(1.0, 5.0, n_noise)]
        order = np.argsort(mz)
        mzs.append(mz[order])
        values.append(v[order].astype(np.float32))
    if mode == "continuous":
        axis = np.unique(np.concatenate(mzs))
        block = np.zeros((n, axis.size), np.float32)
        for i in range(n):
            block[i, np.searchsorted(axis, mzs[i])] = values[i]
        mzs, values = axis, block
    write_imzml(
        path,
        coords,
        mzs,
        values,
        mode=mode,
        pixel_size_um=(20.0, 20.0),
        uuid_bytes=bytes(range(16)),
        version="1.1.0",
    )
    if mode == "continuous":  # the writer declares continuous spectra profile; these are not
        text = Path(path).read_text(encoding="latin-1")
        text = text.replace(
            '"MS:1000128" name="profile spectrum"', '"MS:1000127" name="centroid spectrum"'
        )
        Path(path).write_text(text, encoding="latin-1")
    return path
