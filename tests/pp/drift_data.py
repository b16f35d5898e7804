"""Synthetic spectra whose mass drift bends across the m/z range (the piecewise model's data).

Extends the generators of ``spectra_data`` (profile) and ``centroid_data`` (centroid files):
24 planted peaks over m/z 305–695, 13 references and 11 held out between them, and a
drift that is neither a shift nor linear in m/z — about +15 ppm at the low end, −10 ppm in the
middle and +5 ppm at the high end (a parabola through these), scaled and offset differently on
each acquisition line, plus a small per-pixel jitter.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
from spectra_data import profile_table

from spatialfuse.datasets._writers import write_imzml

#: 24 planted peaks spread over the axis (300–700), irregularly spaced.
MANY_PEAKS = np.round(np.linspace(305.0, 695.0, 24) + np.tile([0.0, 3.1, -2.3, 1.7], 6), 4)
#: Every other peak is a reference, and the last (13); the others (11, each between two
#: references) are never used as references.
REFERENCES = MANY_PEAKS[np.r_[0:23:2, 23]]
HELD_OUT = MANY_PEAKS[1:23:2]
#: The bent drift's shape: +15 ppm at m/z 300, −10 ppm at 500, +5 ppm at 700.
_BEND = np.polyfit([300.0, 500.0, 700.0], [15.0, -10.0, 5.0], 2)


def bent_drift(mz, line_scale: float = 1.0, line_offset: float = 0.0) -> np.ndarray:
    """The drift (ppm) at ``mz``: the bend, scaled and offset per line."""
    return line_scale * np.polyval(_BEND, np.asarray(mz, dtype=np.float64)) + line_offset


def line_parameters(n_lines: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-line ``(scale, offset)`` of the bend: scale in [0.6, 1.4], offset in ±5 ppm."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.6, 1.4, n_lines), rng.uniform(-5.0, 5.0, n_lines)


def pixel_drift(n_lines: int, per_line: int, *, jitter_ppm: float = 0.5, seed: int = 0):
    """``(ppm at MANY_PEAKS, pixels × peaks; line of each pixel)`` of a bent drift by line.

    Each pixel has its line's bend plus one constant jitter (uniform ± ``jitter_ppm``).
    """
    scale, offset = line_parameters(n_lines, seed)
    line = np.repeat(np.arange(n_lines), per_line)
    jitter = np.random.default_rng(seed + 1).uniform(-jitter_ppm, jitter_ppm, line.size)
    ppm = np.stack(
        [bent_drift(MANY_PEAKS, scale[g], offset[g] + j) for g, j in zip(line, jitter, strict=True)]
    )
    return ppm, line


def profile_bent(ppm: np.ndarray, *, seed: int = 0, **kwargs) -> ad.AnnData:
    """Profile spectra (``spectra_data.profile_table``) with pixel ``i``'s peaks moved by
    ``ppm[i]`` (one value per peak of ``MANY_PEAKS``); ``kwargs`` go to ``profile_table``."""
    rows = []
    for i, e in enumerate(ppm):
        row = profile_table(n_pixels=1, peaks=MANY_PEAKS * (1 + e * 1e-6), seed=seed + i, **kwargs)
        row.obs_names = [f"{i}_1"]
        rows.append(row)
    table = ad.concat(rows)
    table.var = rows[0].var
    return table


def write_bent_centroid(path, ppm: np.ndarray, nx: int, *, n_noise: int = 10, seed: int = 1):
    """A processed centroid imzML: pixel ``i`` holds ``MANY_PEAKS`` moved by ``ppm[i]`` (its
    intensity a height in 100–400 times an abundance in [0.5, 1.5]) and ``n_noise`` weak random
    peaks (1–5); pixels fill rows of ``nx``. Returns the path."""
    rng = np.random.default_rng(seed)
    heights = np.linspace(400.0, 100.0, MANY_PEAKS.size)
    mzs, values = [], []
    for e in ppm:
        mz = np.r_[MANY_PEAKS * (1 + e * 1e-6), rng.uniform(300.0, 700.0, n_noise)]
        v = np.r_[heights * rng.uniform(0.5, 1.5, heights.size), rng.uniform(1, 5, n_noise)]
        order = np.argsort(mz)
        mzs.append(mz[order])
        values.append(v[order].astype(np.float32))
    coords = np.array([(i % nx + 1, i // nx + 1) for i in range(len(ppm))])
    write_imzml(
        path,
        coords,
        mzs,
        values,
        mode="processed",
        pixel_size_um=(20.0, 20.0),
        uuid_bytes=bytes(range(16)),
        version="1.1.0",
    )
    return path


def fitted_drift(adata, mz: np.ndarray, key: str = "recalibration") -> np.ndarray:
    """(pixels × ``mz``) the drift each pixel's model says, from the slots recalibrate wrote."""
    info = adata.uns[key]
    if info["model"] == "piecewise":  # interpolated between the nodes, constant beyond
        nodes = info["nodes_mz"]
        return np.stack([np.interp(mz, nodes, v) for v in adata.obsm[f"{key}_nodes_ppm"]])
    offset = adata.obs[f"{key}_ppm"].to_numpy()[:, None]
    slope = adata.obs[f"{key}_slope"].to_numpy()[:, None]
    return offset + slope * (mz[None, :] - info["reference_mz"].mean())
