"""m/z features: windows around m/z values, which window a value falls in, feature names.

Shared by the imzML and zarr readers (binning spectra into features), peak picking and the ion
look-up of ``tl``/``pl``.
"""

from __future__ import annotations

import math
import re

import numpy as np

#: Half-width of an m/z window when neither ``ppm=`` nor ``tol=`` is given.
DEFAULT_PPM = 10.0
#: Feature names written by the readers: ``mz-760.5851``.
MZ_NAME = re.compile(r"^mz-([0-9.eE+-]+)$")


def mz_windows(
    mz, *, tol: float | None = None, ppm: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed m/z windows ``[lo, hi]`` around each of ``mz``.

    ``tol`` is a half-width in m/z units, ``ppm`` a half-width in parts per million of each m/z;
    with neither, ``ppm=10``.
    """
    centres = np.atleast_1d(np.asarray(mz, dtype=np.float64))
    if centres.ndim != 1:
        raise ValueError("mz must be a number or a 1-D sequence of numbers")
    if not np.isfinite(centres).all():
        raise ValueError("mz values must be finite")
    if tol is not None and ppm is not None:
        raise ValueError("give either tol= (m/z units) or ppm=, not both")
    if tol is not None:
        if not (np.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        half = np.full_like(centres, float(tol))
    else:
        ppm = DEFAULT_PPM if ppm is None else ppm
        if not (np.isfinite(ppm) and ppm >= 0):
            raise ValueError(f"ppm must be a non-negative number, got {ppm!r}")
        half = np.abs(centres) * float(ppm) * 1e-6
    return centres, centres - half, centres + half


class WindowLookup:
    """Which of a set of non-overlapping closed windows each value falls in, in O(1) per value.

    A uniform grid over the windows' span holds, per cell, the window covering the whole cell, or
    -1 (no window), or "ambiguous" when a window edge lies in or near the cell. Most values are
    resolved with one multiply and one gather; ambiguous ones fall back to an exact binary search
    over the edges. Cells are checked against edges widened by a relative 1e-9, so rounding in the
    cell computation can never misplace a value: the answer equals ``searchsorted`` exactly.
    """

    _AMBIGUOUS = -2

    def __init__(self, lo: np.ndarray, hi: np.ndarray, *, cells_per_edge: int = 64):
        self.edges = np.empty(2 * lo.size)
        self.edges[0::2] = lo
        self.edges[1::2] = np.nextafter(hi, np.inf)  # [lo, hi] closed == [lo, next(hi)) half-open
        self.base = float(self.edges[0])
        span = float(self.edges[-1]) - self.base
        n_cells = int(min(max(cells_per_edge * self.edges.size, 1024), 1 << 22))
        self.scale = n_cells / span if span > 0 else 0.0
        cell = np.arange(n_cells + 1, dtype=np.float64)
        bounds = self.base + cell / self.scale if self.scale else np.full(n_cells + 1, self.base)
        slack = np.abs(bounds) * 1e-9 + 1e-12
        before = np.searchsorted(self.edges, bounds[:-1] - slack[:-1], side="right")
        after = np.searchsorted(self.edges, bounds[1:] + slack[1:], side="right")
        table = np.where(before & 1, (before - 1) >> 1, -1)
        table[before != after] = self._AMBIGUOUS
        self.table = table.astype(np.int64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Window index of every value, -1 outside all windows."""
        cell = ((values - self.base) * self.scale).astype(np.int64)
        np.clip(cell, 0, self.table.size - 1, out=cell)
        found = self.table[cell]
        unsure = np.flatnonzero(found == self._AMBIGUOUS)
        if unsure.size:
            pos = np.searchsorted(self.edges, values[unsure], side="right")
            found[unsure] = np.where(pos & 1, (pos - 1) >> 1, -1)
        return found


def mz_feature_names(mz: np.ndarray) -> list[str]:
    """``mz-760.5851``-style names, with as many decimals as needed to keep them unique."""
    for decimals in range(4, 10):
        names = [f"mz-{value:.{decimals}f}" for value in mz]
        if len(set(names)) == len(names):
            return names
    return [f"mz-{value:.10f}-{i}" for i, value in enumerate(mz)]


def mz_values(msi) -> np.ndarray:
    """``var["mz"]`` as float64, else the m/z parsed from ``mz-…`` names (NaN where none)."""
    if "mz" in msi.var:
        return np.asarray(msi.var["mz"], dtype=np.float64)
    values = []
    for v in msi.var_names:
        match = MZ_NAME.match(str(v))
        values.append(float(match.group(1)) if match else math.nan)
    return np.asarray(values, dtype=np.float64)
