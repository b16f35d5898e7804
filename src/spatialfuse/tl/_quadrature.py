"""A fixed quadrature of the disc: sample points that fill a Visium capture area uniformly.

:func:`disc_samples` returns ``n`` points of the unit disc, each standing for an equal share
``π / n`` of its area: a sunflower (Vogel) lattice of ``m = n // 2`` points,
``r_k = √((k + ½) / m)``, ``θ_k = (k + ½) · golden angle``, together with its reflection through
the centre (and the centre itself when ``n`` is odd). The point set is centrally symmetric, so its
centroid is the disc's centre exactly and a linear function is averaged without error; the
golden-angle spiral keeps any straight line (a pixel edge) from lining up with rows of points,
which is what limits a regular lattice.

The fraction of the points that fall inside a region converges to the fraction of the disc's area
that the region covers. For the regions this matters for, a pixel square cutting a disc at any
offset and angle, the largest error of that fraction decreases like ``n^(-3/4)``; the measured
values are in :data:`MEASURED_MAX_WEIGHT_ERROR` (see :func:`weight_error_bound`).
"""

from __future__ import annotations

import numpy as np

#: Default number of sample points per spot.
DEFAULT_N_SAMPLES = 1024

#: Largest absolute error of a pixel's weight (the fraction of a disc's area the pixel covers),
#: measured against the closed-form area of a disc ∩ square, by number of samples: the larger of
#: two independent sets of 6,000 random placements (pixel sizes 10, 20, 30, 50, 75 and 100 µm at
#: random offsets and angles, disc 55 µm). ``python benchmarks/bench_mapping.py`` re-measures one.
MEASURED_MAX_WEIGHT_ERROR = {
    256: 0.0225,
    512: 0.0130,
    1024: 0.0089,
    2048: 0.0060,
    4096: 0.0030,
}
#: Root-mean-square error of the weights of the pixels a disc touches, same placements.
MEASURED_RMS_WEIGHT_ERROR = {
    256: 0.0040,
    512: 0.0024,
    1024: 0.0015,
    2048: 0.00082,
    4096: 0.00047,
}

QUADRATURE_RULE = "centrally symmetric sunflower (Vogel) lattice, equal-area samples"
_GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def disc_samples(n: int) -> np.ndarray:
    """``n`` equal-area sample points of the unit disc, ``(n, 2)`` float64 ``(x, y)``.

    Deterministic and centrally symmetric (see the module docstring).
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"n_samples must be at least 2, got {n}")
    m = n // 2
    k = np.arange(m, dtype=np.float64) + 0.5
    if n % 2:
        # The centre point stands for a central disc of area π / n; the m pairs fill the rest.
        r = np.sqrt(1.0 / n + (k / m) * (1.0 - 1.0 / n))
    else:
        r = np.sqrt(k / m)
    theta = k * _GOLDEN_ANGLE  # k + ½: no sample sits exactly on an axis through the centre
    half = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    parts = [half, -half]
    if n % 2:
        parts.append(np.zeros((1, 2)))
    return np.concatenate(parts)


def weight_error_bound(n: int) -> tuple[float, str]:
    """The largest weight error to expect with ``n`` samples, and how it was obtained.

    Measured values (:data:`MEASURED_MAX_WEIGHT_ERROR`) where ``n`` is one of the measured sizes,
    else the power law ``c · n^(-3/4)`` fitted through the measurement at the nearest size.
    """
    n = int(n)
    if n in MEASURED_MAX_WEIGHT_ERROR:
        return MEASURED_MAX_WEIGHT_ERROR[n], "measured"
    sizes = np.array(sorted(MEASURED_MAX_WEIGHT_ERROR))
    nearest = int(sizes[np.argmin(np.abs(np.log(sizes) - np.log(max(n, 1))))])
    value = MEASURED_MAX_WEIGHT_ERROR[nearest] * (nearest / n) ** 0.75
    return float(min(value, 1.0)), f"estimated as c·n^(-3/4) from the measurement at n={nearest}"
