"""The drift models of :func:`spatialfuse.pp.recalibrate`, shared by profile and centroid data.

``"shift"``: one ppm offset per pixel, the median of its errors at the references;
``"linear"``: a ppm offset linear in m/z (least squares, around the references' mean m/z),
falling back to the shift where a pixel has fewer than three references; per group of pixels
(``group_by``), one model fitted to their pooled errors.
"""

from __future__ import annotations

import numpy as np


def _fit(errors: np.ndarray, refs: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``(offset_ppm, slope_ppm_per_mz)`` around the references' mean m/z."""
    import warnings

    found = np.isfinite(errors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels without any reference
        offset = np.nanmedian(np.where(found, errors, np.nan), axis=1)
    offset = np.where(found.any(axis=1), offset, 0.0)
    slope = np.zeros_like(offset)
    if model == "linear":
        centre = refs.mean()
        dx = refs - centre
        for i in np.flatnonzero(found.sum(axis=1) >= 3):
            m = found[i]
            a = np.vstack([np.ones(m.sum()), dx[m]]).T
            (offset[i], slope[i]), *_ = np.linalg.lstsq(a, errors[i, m], rcond=None)
    return offset, slope


def _fit_groups(
    errors: np.ndarray, refs: np.ndarray, model: str, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One model per group of pixels (e.g. an acquisition line), fitted to their pooled errors."""
    offset, slope = np.zeros(errors.shape[0]), np.zeros(errors.shape[0])
    codes, inverse = np.unique(groups, return_inverse=True)
    for g in range(codes.size):
        rows = np.flatnonzero(inverse == g)
        pooled = errors[rows].reshape(1, -1)
        pooled_refs = np.tile(refs, rows.size)
        off, slo = _fit(pooled, pooled_refs, model)
        offset[rows], slope[rows] = off[0], slo[0]
    return offset, slope
