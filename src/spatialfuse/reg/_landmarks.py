"""Registration from landmarks: fits, their errors, and landmark files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialfuse.core.transforms import AffineTransform, ThinPlateSpline, Transform, as_points
from spatialfuse.errors import FileFormatError, MissingFileError

LANDMARK_MODELS = ("rigid", "similarity", "affine", "tps")


def _fit_linear(src: np.ndarray, dst: np.ndarray, model: str, allow_mirror: bool) -> np.ndarray:
    """Least-squares 3 × 3 matrix mapping ``src`` onto ``dst``."""
    n = len(src)
    if model == "affine":
        if n < 3:
            raise ValueError("an affine fit needs at least 3 landmark pairs")
        design = np.hstack([src, np.ones((n, 1))])
        solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
        matrix = np.eye(3)
        matrix[:2] = solution.T
        if np.linalg.matrix_rank(design) < 3:
            raise ValueError("landmarks are collinear: an affine fit is undetermined")
        if not allow_mirror and np.linalg.det(matrix[:2, :2]) < 0:
            raise ValueError("the best affine fit mirrors the image but allow_mirror=False")
        return matrix
    if n < 2:
        raise ValueError(f"a {model} fit needs at least 2 landmark pairs")
    # Umeyama / Procrustes, with the reflection allowed where asked.
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(b.T @ a / n)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        best_proper = u @ np.diag([1, -1]) @ vt
        mirrored = u @ vt
        if allow_mirror:
            rotation = mirrored
        else:
            rotation = best_proper
            d = np.diag([1, -1])
    else:
        rotation = u @ vt
    variance = (a**2).sum() / n
    scale = float(np.trace(np.diag(sigma) @ d) / variance) if model == "similarity" else 1.0
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def _fit(src, dst, model: str, allow_mirror: bool, regularization: float) -> Transform:
    if model == "tps":
        return ThinPlateSpline(src, dst, regularization=regularization)
    return AffineTransform(_fit_linear(src, dst, model, allow_mirror), model=model)


@dataclass
class LandmarkFit:
    """A transform fitted to landmarks, with its errors (µm).

    ``fre_um``: per-landmark fiducial registration error (residual of the fit itself);
    ``loo_tre_um``: per-landmark leave-one-out target registration error (each landmark predicted
    by a fit to all the others — the honest estimate of accuracy away from the landmarks).
    """

    transform: Transform
    fre_um: np.ndarray
    loo_tre_um: np.ndarray

    @property
    def metrics(self) -> dict:
        """Summary: mean/median/max of FRE and leave-one-out TRE."""
        out = {
            "fre_um_mean": float(self.fre_um.mean()),
            "fre_um_max": float(self.fre_um.max()),
            "n_landmarks": int(self.fre_um.size),
        }
        if np.isfinite(self.loo_tre_um).any():
            out["loo_tre_um_median"] = float(np.nanmedian(self.loo_tre_um))
            out["loo_tre_um_max"] = float(np.nanmax(self.loo_tre_um))
        return out


def from_landmarks(
    moving_points,
    fixed_points,
    *,
    model: str = "affine",
    allow_mirror: bool = True,
    regularization: float = 0.0,
) -> LandmarkFit:
    """Fit a moving → fixed transform to corresponding points.

    Parameters
    ----------
    moving_points, fixed_points
        ``(n, 2)`` arrays of ``(x, y)`` in µm, row ``i`` of one matching row ``i`` of the other.
    model
        ``"rigid"``, ``"similarity"``, ``"affine"`` (least squares) or ``"tps"`` (thin-plate
        spline through the points; ``regularization`` > 0 smooths).
    allow_mirror
        Let rigid/similarity/affine fits reflect (mirrored acquisitions are common).

    Returns
    -------
    LandmarkFit
        ``.transform`` and the fiducial and leave-one-out target errors in µm.
    """
    if model not in LANDMARK_MODELS:
        raise ValueError(f"model must be one of {LANDMARK_MODELS}, got {model!r}")
    src, dst = as_points(moving_points), as_points(fixed_points)
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} moving points but {len(dst)} fixed points")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain non-finite coordinates")
    transform = _fit(src, dst, model, allow_mirror, regularization)
    fre = np.linalg.norm(transform.apply(src) - dst, axis=1)
    minimum = {"rigid": 2, "similarity": 2, "affine": 3, "tps": 3}[model] + 1
    loo = np.full(len(src), np.nan)
    if len(src) >= minimum:
        for i in range(len(src)):
            keep = np.arange(len(src)) != i
            try:
                fit = _fit(src[keep], dst[keep], model, allow_mirror, regularization)
            except ValueError:
                continue
            loo[i] = np.linalg.norm(fit.apply(src[i : i + 1])[0] - dst[i])
    return LandmarkFit(transform, fre, loo)


def read_landmarks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read landmark pairs from a CSV file.

    Two layouts are recognised by their header: MAGPIE's ``X_left,Y_left,X_right,Y_right`` (left =
    moving, right = fixed), and ``moving_x,moving_y,fixed_x,fixed_y``. A file with exactly four
    numeric columns and no header is read in that order too.

    Returns
    -------
    tuple of numpy.ndarray
        ``(moving_points, fixed_points)``, each ``(n, 2)`` float64.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "no such landmark file")
    try:
        first = path.read_text(encoding="utf-8-sig").splitlines()[0] if path.stat().st_size else ""
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, "not a text (CSV) file") from exc
    header = [c.strip().strip('"').lower() for c in first.split(",")]
    layouts = [
        ["x_left", "y_left", "x_right", "y_right"],
        ["moving_x", "moving_y", "fixed_x", "fixed_y"],
    ]
    try:
        if any(all(col in header for col in layout) for layout in layouts):
            frame = pd.read_csv(path, encoding="utf-8-sig")
            frame.columns = [c.strip().lower() for c in frame.columns]
            layout = next(lay for lay in layouts if all(col in frame.columns for col in lay))
            values = frame[layout].to_numpy(dtype=np.float64)
        else:
            values = pd.read_csv(path, header=None).to_numpy(dtype=np.float64)
            if values.shape[1] != 4:
                raise ValueError(f"expected 4 columns, found {values.shape[1]}")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise FileFormatError(
            path,
            "expected landmark pairs as columns X_left,Y_left,X_right,Y_right (MAGPIE) or "
            f"moving_x,moving_y,fixed_x,fixed_y: {exc}",
        ) from exc
    if len(values) == 0:
        raise FileFormatError(path, "contains no landmarks")
    if not np.isfinite(values).all():
        raise FileFormatError(path, "contains missing or non-numeric coordinates")
    return values[:, :2].copy(), values[:, 2:].copy()
