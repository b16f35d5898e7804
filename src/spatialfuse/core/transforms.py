"""Transforms between micrometre frames: one family of objects, each mapping moving → reference.

A :class:`Transform` maps points ``(x, y)`` in µm from a *moving* frame into a *reference* frame.
Kinds:

- :class:`AffineTransform` — rigid, similarity or affine (a 3 × 3 homogeneous matrix);
- :class:`ThinPlateSpline` — interpolates landmark pairs exactly;
- :class:`DisplacementField` — ``p + u(p)`` with ``u`` sampled on a regular µm grid (what nonrigid
  registration produces, B-spline results included);
- :class:`CompositeTransform` — ``a @ b`` applies ``b`` first, then ``a``;
- :class:`InverseTransform` — the exact inverse of a nonrigid transform that maps the other way:
  applying it solves ``t(p) = q`` numerically (Newton iterations, to ``INVERSE_TOLERANCE_UM``);
  inverting it again returns ``t`` itself, exactly.

Every kind serialises to a JSON-compatible dict and back without loss (floats are written with
``repr``, which round-trips exactly) and, where linear, converts to a spatialdata ``Affine``.
"""

from __future__ import annotations

import json
import os
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from spatialfuse.errors import FileFormatError, SpatialfuseWarning

#: Target accuracy of numeric inverses, in µm (max |t(p) − q| over the points asked for).
INVERSE_TOLERANCE_UM = 1e-6
_INVERSE_MAX_ITERATIONS = 50
_FORMAT = "spatialfuse.transform"
_FORMAT_VERSION = 1


class InverseAccuracyWarning(SpatialfuseWarning):
    """A numeric inverse did not reach :data:`INVERSE_TOLERANCE_UM` at some points."""


def as_points(points) -> np.ndarray:
    """Validate ``points`` as ``(x, y)`` in µm: one pair or an ``(n, 2)`` array.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float64.
    """
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 1 and array.size == 2:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must be an (n, 2) array of (x, y), got shape {array.shape}")
    return array


class Transform(ABC):
    """A map from a moving frame to a reference frame, in micrometres.

    Subclasses implement :meth:`apply`, :meth:`inverse` and the dict round trip.
    """

    kind: ClassVar[str] = "transform"
    _registry: ClassVar[dict[str, type[Transform]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._registry[cls.kind] = cls

    @abstractmethod
    def apply(self, points) -> np.ndarray:
        """Map ``(n, 2)`` points ``(x, y)`` in moving µm to reference µm."""

    @abstractmethod
    def inverse(self) -> Transform:
        """The transform from the reference frame back to the moving frame."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """Parameters for :meth:`to_dict` (JSON-compatible)."""

    @classmethod
    @abstractmethod
    def _from_params(cls, params: dict[str, Any]) -> Transform:
        """Inverse of :meth:`_params`."""

    @property
    def is_linear(self) -> bool:
        """Whether the transform is affine (and so has a matrix)."""
        return False

    def as_affine(self) -> AffineTransform:
        """The transform as one :class:`AffineTransform` (every linear kind has one).

        Raises
        ------
        ValueError
            For a nonrigid transform, which has no single matrix.
        """
        raise ValueError(f"{type(self).__name__} is nonrigid; it has no single matrix")

    def __call__(self, points) -> np.ndarray:
        """Same as :meth:`apply`."""
        return self.apply(points)

    def __matmul__(self, other: Transform) -> Transform:
        """``a @ b``: apply ``b`` first, then ``a``."""
        if not isinstance(other, Transform):
            return NotImplemented
        return compose(self, other)

    def jacobian_determinant(self, points, *, step_um: float = 0.5) -> np.ndarray:
        """Local area scaling ``det(∂T/∂p)`` at ``points`` (central differences); < 0 = folding."""
        p = as_points(points)
        dx = np.array([step_um, 0.0])
        dy = np.array([0.0, step_um])
        jx = (self.apply(p + dx) - self.apply(p - dx)) / (2 * step_um)
        jy = (self.apply(p + dy) - self.apply(p - dy)) / (2 * step_um)
        return jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description; :meth:`from_dict` rebuilds the identical transform."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "kind": self.kind,
            "units": "micrometre",
            "direction": "moving -> reference",
            **self._params(),
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Transform:
        """Rebuild a transform written by :meth:`to_dict`."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a spatialfuse transform description (missing format tag)")
        kind = data.get("kind")
        if kind not in Transform._registry:
            raise ValueError(f"unknown transform kind {kind!r}")
        return Transform._registry[kind]._from_params(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the transform as JSON, atomically (a temporary file, then a rename)."""
        from spatialfuse._io_utils import atomic_path

        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> Transform:
        """Read a transform written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Transform.from_dict(data)
        except FileNotFoundError:
            raise
        except (json.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            raise FileFormatError(path, f"not a valid spatialfuse transform: {exc}") from exc

    def __eq__(self, other) -> bool:
        return isinstance(other, Transform) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))


def _matrix_list(matrix: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(matrix, dtype=np.float64)]


class AffineTransform(Transform):
    """``p ↦ A p + t`` as a 3 × 3 homogeneous matrix acting on ``(x, y, 1)``.

    Parameters
    ----------
    matrix
        3 × 3 (last row ``0 0 1``) or 2 × 3 matrix.
    model
        What the matrix is meant to be: ``"rigid"``, ``"similarity"`` or ``"affine"`` (recorded;
        also used by fitting and registration to say which parameters were free).
    """

    kind = "affine"
    MODELS = ("rigid", "similarity", "affine")

    def __init__(self, matrix, *, model: str = "affine"):
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape == (2, 3):
            m = np.vstack([m, [0.0, 0.0, 1.0]])
        if m.shape != (3, 3) or not np.allclose(m[2], [0, 0, 1]) or not np.isfinite(m).all():
            raise ValueError(f"an affine matrix must be finite, 3 × 3 with last row 0 0 1: {m}")
        if abs(np.linalg.det(m[:2, :2])) < 1e-12:
            raise ValueError("the affine matrix is singular")
        if model not in self.MODELS:
            raise ValueError(f"model must be one of {self.MODELS}, got {model!r}")
        self.matrix = m.copy()
        self.matrix[2] = (0.0, 0.0, 1.0)
        self.model = model

    @classmethod
    def from_params(
        cls,
        *,
        rotation_deg: float = 0.0,
        scale: float | tuple[float, float] = 1.0,
        shear: float = 0.0,
        translation: tuple[float, float] = (0.0, 0.0),
        mirror: bool = False,
        center: tuple[float, float] = (0.0, 0.0),
        model: str | None = None,
    ) -> AffineTransform:
        """Build ``T(p) = R · Sh · S · M · (p − c) + c + t``.

        ``M`` mirrors x when ``mirror``; ``S`` scales by ``scale`` (a number or ``(sx, sy)``);
        ``Sh`` shears x by ``shear · y``; ``R`` rotates counter-clockwise in (x, y) by
        ``rotation_deg`` (in image coordinates with y down, that appears clockwise); ``c`` is the
        centre of the linear part and ``t`` a translation.
        """
        sx, sy = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,))
        theta = np.deg2rad(rotation_deg)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        linear = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
        if mirror:
            linear = linear @ np.diag([-1.0, 1.0])
        c = np.asarray(center, dtype=np.float64)
        m = np.eye(3)
        m[:2, :2] = linear
        m[:2, 2] = c - linear @ c + np.asarray(translation, dtype=np.float64)
        if model is None:
            anisotropic = not np.isclose(sx, sy)
            if shear or anisotropic:
                model = "affine"
            else:
                model = "rigid" if np.isclose(sx, 1.0) else "similarity"
        return cls(m, model=model)

    @classmethod
    def identity(cls) -> AffineTransform:
        """The identity map."""
        return cls(np.eye(3), model="rigid")

    @property
    def is_linear(self) -> bool:
        """Always true."""
        return True

    def as_affine(self) -> AffineTransform:
        """Itself: an affine transform is its own matrix."""
        return self

    @property
    def is_mirror(self) -> bool:
        """Whether the map reverses orientation (negative determinant)."""
        return bool(np.linalg.det(self.matrix[:2, :2]) < 0)

    def decompose(self) -> dict[str, float | bool]:
        """Split the matrix into rotation (deg), scales, shear, translation and mirror.

        :meth:`from_params` with these and ``center=(0, 0)`` rebuilds the matrix.
        """
        linear = self.matrix[:2, :2]
        mirror = self.is_mirror
        if mirror:
            linear = linear @ np.diag([-1.0, 1.0])
        # linear = R @ [[1, shear], [0, 1]] @ diag(sx, sy): QR-like decomposition.
        sx = float(np.hypot(linear[0, 0], linear[1, 0]))
        theta = float(np.arctan2(linear[1, 0], linear[0, 0]))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        upper = rot.T @ linear
        sy = float(upper[1, 1])
        shear = float(upper[0, 1] / sy)
        return {
            "rotation_deg": float(np.rad2deg(theta)),
            "scale_x": sx,
            "scale_y": sy,
            "shear": shear,
            "translation_x": float(self.matrix[0, 2]),
            "translation_y": float(self.matrix[1, 2]),
            "mirror": mirror,
        }

    def apply(self, points) -> np.ndarray:
        """Map points: ``A p + t``."""
        p = as_points(points)
        m = self.matrix
        # Written out per coordinate: numpy's (n, 2) @ (2, 2) product is ~10× slower for large n.
        out = np.empty_like(p)
        out[:, 0] = p[:, 0] * m[0, 0] + p[:, 1] * m[0, 1] + m[0, 2]
        out[:, 1] = p[:, 0] * m[1, 0] + p[:, 1] * m[1, 1] + m[1, 2]
        return out

    def inverse(self) -> AffineTransform:
        """The inverse matrix; inverting that again returns this very transform."""
        source = getattr(self, "_inverse_of", None)
        if source is not None:
            return source
        inverted = AffineTransform(np.linalg.inv(self.matrix), model=self.model)
        inverted._inverse_of = self
        return inverted

    def jacobian_determinant(self, points, *, step_um: float = 0.5) -> np.ndarray:
        """Constant: the determinant of the linear part."""
        return np.full(len(as_points(points)), float(np.linalg.det(self.matrix[:2, :2])))

    def _params(self) -> dict[str, Any]:
        return {"model": self.model, "matrix": _matrix_list(self.matrix)}

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> AffineTransform:
        return cls(params["matrix"], model=params.get("model", "affine"))

    def to_spatialdata(self, input_axes=("x", "y"), output_axes=("x", "y")):
        """The map as a spatialdata ``Affine`` (moving element → shared coordinate system)."""
        from spatialdata.transformations import Affine

        return Affine(self.matrix.copy(), input_axes=input_axes, output_axes=output_axes)

    def __repr__(self) -> str:
        d = self.decompose()
        return (
            f"AffineTransform({self.model}: rotation {d['rotation_deg']:.2f}°, scale "
            f"{d['scale_x']:.4f}×{d['scale_y']:.4f}, shear {d['shear']:.4f}, translation "
            f"({d['translation_x']:.2f}, {d['translation_y']:.2f}) µm"
            f"{', mirrored' if d['mirror'] else ''})"
        )


class _NonrigidMixin:
    """Numeric inversion shared by nonrigid transforms."""

    def _initial_guess(self, q: np.ndarray) -> np.ndarray:
        return q - (self.apply(q) - q)

    def _invert_points(self, targets) -> np.ndarray:
        """Solve ``self.apply(p) = q`` for every target ``q`` by Newton iterations."""
        q = as_points(targets)
        p = self._initial_guess(q)
        return self._newton(q, p)

    def _newton(self, q: np.ndarray, p: np.ndarray) -> np.ndarray:
        residual = self.apply(p) - q
        for _ in range(_INVERSE_MAX_ITERATIONS):
            error = np.abs(residual).max(axis=1)
            active = error > INVERSE_TOLERANCE_UM * 0.1
            if not active.any():
                break
            pa = p[active]
            step = 0.5
            dx, dy = np.array([step, 0.0]), np.array([0.0, step])
            jx = (self.apply(pa + dx) - self.apply(pa - dx)) / (2 * step)
            jy = (self.apply(pa + dy) - self.apply(pa - dy)) / (2 * step)
            det = jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0]
            det = np.where(np.abs(det) < 1e-12, 1e-12, det)
            r = residual[active]
            dx = (jy[:, 1] * r[:, 0] - jy[:, 0] * r[:, 1]) / det
            dy = (-jx[:, 1] * r[:, 0] + jx[:, 0] * r[:, 1]) / det
            p[active] = pa - np.stack([dx, dy], axis=1)
            residual[active] = self.apply(p[active]) - q[active]
        worst = float(np.abs(residual).max()) if len(q) else 0.0
        self.last_inverse_residual_um = worst
        if worst > INVERSE_TOLERANCE_UM:
            warnings.warn(
                f"numeric inverse of a {self.kind} transform reached a residual of {worst:.3g} µm "
                f"(target {INVERSE_TOLERANCE_UM} µm); the map may fold near these points",
                InverseAccuracyWarning,
                stacklevel=3,
            )
        return p


class InverseTransform(Transform):
    """The inverse of a nonrigid transform, applied by numeric inversion.

    ``apply(q)`` returns ``p`` with ``|base.apply(p) − q| ≤ INVERSE_TOLERANCE_UM`` (checked; an
    :class:`InverseAccuracyWarning` says where it is not reached); ``inverse()`` returns ``base``.
    """

    kind = "inverse"

    def __init__(self, base: Transform):
        if not hasattr(base, "_invert_points"):
            raise TypeError(f"{type(base).__name__} has no numeric inverse")
        self.base = base

    def apply(self, points) -> np.ndarray:
        """Solve ``base(p) = q`` for each ``q``."""
        return self.base._invert_points(points)

    def inverse(self) -> Transform:
        """The base transform, exactly."""
        return self.base

    @property
    def last_inverse_residual_um(self) -> float | None:
        """Largest residual of the last :meth:`apply`, in µm."""
        return getattr(self.base, "last_inverse_residual_um", None)

    def _params(self) -> dict[str, Any]:
        return {"base": self.base.to_dict()}

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> InverseTransform:
        return cls(Transform.from_dict(params["base"]))

    def __repr__(self) -> str:
        return f"InverseTransform({self.base!r})"


class ThinPlateSpline(_NonrigidMixin, Transform):
    """Thin-plate spline through landmark pairs: ``T(source_i) = target_i`` exactly.

    ``T(p) = a0 + A p + Σ w_i φ(|p − s_i|)`` with ``φ(r) = r² log r``; ``regularization`` λ ≥ 0
    relaxes exact interpolation into smoothing (λ = 0: exact).
    """

    kind = "tps"

    def __init__(self, source, target, *, regularization: float = 0.0):
        self.source = as_points(source).copy()
        self.target = as_points(target).copy()
        if len(self.source) != len(self.target):
            raise ValueError("source and target must have the same number of points")
        if len(self.source) < 3:
            raise ValueError("a thin-plate spline needs at least 3 landmark pairs")
        self.regularization = float(regularization)
        n = len(self.source)
        k = self._kernel(self.source, self.source) + self.regularization * np.eye(n)
        p = np.hstack([np.ones((n, 1)), self.source])
        system = np.zeros((n + 3, n + 3))
        system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = self.target
        try:
            solution = np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                "landmarks are degenerate (collinear or repeated); a thin-plate spline needs "
                "at least 3 non-collinear points"
            ) from exc
        self._weights, self._affine = solution[:n], solution[n:]

    @staticmethod
    def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = 0.5 * r2 * np.log(r2)
        return np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)

    def apply(self, points) -> np.ndarray:
        """Evaluate the spline (in blocks, so memory stays small for many points)."""
        p = as_points(points)
        out = np.empty_like(p)
        for start in range(0, len(p), 20000):
            block = p[start : start + 20000]
            out[start : start + 20000] = (
                self._affine[0]
                + block @ self._affine[1:]
                + self._kernel(block, self.source) @ self._weights
            )
        return out

    def inverse(self) -> Transform:
        """Numeric inverse (exact to :data:`INVERSE_TOLERANCE_UM`)."""
        return InverseTransform(self)

    def _initial_guess(self, q: np.ndarray) -> np.ndarray:
        linear, offset = self._affine[1:].T, self._affine[0]
        return (q - offset) @ np.linalg.inv(linear).T

    def _params(self) -> dict[str, Any]:
        return {
            "source": _matrix_list(self.source),
            "target": _matrix_list(self.target),
            "regularization": self.regularization,
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> ThinPlateSpline:
        return cls(params["source"], params["target"], regularization=params["regularization"])

    def __repr__(self) -> str:
        return f"ThinPlateSpline({len(self.source)} landmarks, λ={self.regularization:g})"


class DisplacementField(_NonrigidMixin, Transform):
    """``T(p) = p + u(p)``, with ``u`` sampled on a regular grid in the moving frame (µm).

    Parameters
    ----------
    displacement
        ``(rows, cols, 2)`` array: ``u = (ux, uy)`` in µm at grid node ``(row, col)``.
    origin_um
        ``(x, y)`` of node ``(0, 0)``.
    spacing_um
        ``(dx, dy)`` between nodes.

    ``u`` is interpolated with cubic B-splines (scipy ``map_coordinates``, order 3, on prefiltered
    coefficients), so it is smooth; outside the grid ``u`` continues with the nearest edge value.
    """

    kind = "displacement"

    def __init__(self, displacement, *, origin_um=(0.0, 0.0), spacing_um=(1.0, 1.0)):
        field = np.asarray(displacement, dtype=np.float64)
        if field.ndim != 3 or field.shape[2] != 2 or min(field.shape[:2]) < 2:
            raise ValueError(f"displacement must be (rows ≥ 2, cols ≥ 2, 2), got {field.shape}")
        if not np.isfinite(field).all():
            raise ValueError("displacement has non-finite values")
        self.displacement = field.copy()
        self.origin_um = tuple(float(v) for v in origin_um)
        self.spacing_um = tuple(float(v) for v in spacing_um)
        if min(self.spacing_um) <= 0:
            raise ValueError("spacing_um must be positive")
        self._coefficients = None

    def _coeffs(self):
        if self._coefficients is None:
            from scipy.ndimage import spline_filter

            self._coefficients = [
                spline_filter(self.displacement[:, :, k], order=3, mode="nearest") for k in (0, 1)
            ]
        return self._coefficients

    def displacement_at(self, points) -> np.ndarray:
        """``u(p)`` at ``(n, 2)`` points."""
        from scipy.ndimage import map_coordinates

        p = as_points(points)
        col = (p[:, 0] - self.origin_um[0]) / self.spacing_um[0]
        row = (p[:, 1] - self.origin_um[1]) / self.spacing_um[1]
        coords = np.vstack([row, col])
        return np.stack(
            [
                map_coordinates(c, coords, order=3, mode="nearest", prefilter=False)
                for c in self._coeffs()
            ],
            axis=1,
        )

    def apply(self, points) -> np.ndarray:
        """``p + u(p)``."""
        p = as_points(points)
        return p + self.displacement_at(p)

    def _invert_points(self, targets) -> np.ndarray:
        """Solve ``p + u(p) = q``: fixed-point iterations, then Newton where they stalled.

        Each iteration ``p ← q − u(p)`` costs one field evaluation and converges wherever the
        field's gradient is below 1; Newton (five evaluations per step) finishes the rest.
        """
        q = as_points(targets)
        p = q - self.displacement_at(q)
        active = np.arange(len(q))
        for _ in range(30):
            if active.size == 0:
                break
            update = q[active] - self.displacement_at(p[active])
            step = np.abs(update - p[active]).max(axis=1)
            p[active] = update
            active = active[step > INVERSE_TOLERANCE_UM * 0.1]
        return self._newton(q, p)

    def inverse(self) -> Transform:
        """Numeric inverse (exact to :data:`INVERSE_TOLERANCE_UM`)."""
        return InverseTransform(self)

    def _params(self) -> dict[str, Any]:
        return {
            "origin_um": list(self.origin_um),
            "spacing_um": list(self.spacing_um),
            "shape": list(self.displacement.shape[:2]),
            "ux": [float(v) for v in self.displacement[:, :, 0].ravel()],
            "uy": [float(v) for v in self.displacement[:, :, 1].ravel()],
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> DisplacementField:
        rows, cols = params["shape"]
        field = np.stack(
            [
                np.asarray(params["ux"], dtype=np.float64).reshape(rows, cols),
                np.asarray(params["uy"], dtype=np.float64).reshape(rows, cols),
            ],
            axis=2,
        )
        return cls(field, origin_um=params["origin_um"], spacing_um=params["spacing_um"])

    def __repr__(self) -> str:
        magnitude = np.hypot(self.displacement[..., 0], self.displacement[..., 1])
        return (
            f"DisplacementField({self.displacement.shape[1]}×{self.displacement.shape[0]} nodes, "
            f"spacing {self.spacing_um[0]:g}×{self.spacing_um[1]:g} µm, max |u| "
            f"{magnitude.max():.3g} µm)"
        )


class CompositeTransform(Transform):
    """A chain: ``CompositeTransform([t1, t2, t3])`` applies ``t1``, then ``t2``, then ``t3``."""

    kind = "composite"

    def __init__(self, steps):
        flat: list[Transform] = []
        for step in steps:
            if isinstance(step, CompositeTransform):
                flat.extend(step.steps)
            elif isinstance(step, Transform):
                flat.append(step)
            else:
                raise TypeError(f"not a Transform: {step!r}")
        if not flat:
            raise ValueError("a composite transform needs at least one step")
        self.steps = flat

    @property
    def is_linear(self) -> bool:
        """Whether every step is linear."""
        return all(s.is_linear for s in self.steps)

    def apply(self, points) -> np.ndarray:
        """Apply the steps in order."""
        p = as_points(points)
        for step in self.steps:
            p = step.apply(p)
        return p

    def inverse(self) -> Transform:
        """The inverses of the steps, in reverse order."""
        source = getattr(self, "_inverse_of", None)
        if source is not None:
            return source
        inverted = CompositeTransform([s.inverse() for s in reversed(self.steps)])
        inverted._inverse_of = self
        return inverted

    def as_affine(self) -> AffineTransform:
        """The single matrix of an all-linear chain."""
        if not self.is_linear:
            raise ValueError("the chain contains a nonrigid step; it has no single matrix")
        affines = [step.as_affine() for step in self.steps]
        matrix = np.eye(3)
        for step in affines:
            matrix = step.matrix @ matrix
        models = [s.model for s in affines]
        model = next((m for m in ("affine", "similarity") if m in models), "rigid")
        return AffineTransform(matrix, model=model)

    def to_spatialdata(self, input_axes=("x", "y"), output_axes=("x", "y")):
        """The chain as one spatialdata ``Affine`` (linear chains only)."""
        return self.as_affine().to_spatialdata(input_axes, output_axes)

    def _params(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> CompositeTransform:
        return cls([Transform.from_dict(s) for s in params["steps"]])

    def __repr__(self) -> str:
        return "CompositeTransform([" + ", ".join(repr(s) for s in self.steps) + "])"


def compose(*transforms: Transform) -> Transform:
    """``compose(a, b, c)`` = ``a @ b @ c``: apply ``c`` first, then ``b``, then ``a``.

    Chains of affine maps collapse into one :class:`AffineTransform`.

    Returns
    -------
    Transform
        An :class:`AffineTransform` when every step is linear, else a
        :class:`CompositeTransform` of the steps.
    """
    if not transforms:
        raise ValueError("compose needs at least one transform")
    chain = CompositeTransform(list(reversed(transforms)))
    if chain.is_linear:
        return chain.as_affine()
    return chain
