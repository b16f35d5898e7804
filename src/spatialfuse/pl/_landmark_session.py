"""The state behind the landmark picker, without any window: points, fit, errors, files.

:func:`~spatialfuse.pl.pick_landmarks` draws it in napari; everything it computes lives here,
so that it is tested without Qt. Points are ``(x, y)`` in µm of each image's own frame
(``docs/coordinates.md``); moving point ``i`` pairs with fixed point ``i``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spatialfuse.reg import LandmarkFit, RegistrationImage, RegistrationResult, Transform

#: Landmark fits the picker offers (those of :func:`spatialfuse.reg.from_landmarks`).
PICKER_MODELS = ("rigid", "similarity", "affine", "tps")
#: Pairs each model needs for a fit (a leave-one-out error needs one more).
MIN_PAIRS = {"rigid": 2, "similarity": 2, "affine": 3, "tps": 3}
#: The CSV header written, one that :func:`spatialfuse.reg.read_landmarks` reads.
CSV_HEADER = "moving_x,moving_y,fixed_x,fixed_y"


def as_xy(points: Any) -> np.ndarray:
    """``(n, 2)`` float64 of any point list (an empty one included)."""
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must be (n, 2) (x, y) in µm, got shape {array.shape}")
    return array


@dataclass
class RegistrationRun:
    """A registration run from the picker's landmarks, and the points it was run from."""

    result: RegistrationResult
    moving_points: np.ndarray
    fixed_points: np.ndarray


class LandmarkSession:
    """Landmark pairs between a moving and a fixed image, their fit, its errors and files.

    Parameters
    ----------
    moving, fixed
        What :func:`spatialfuse.reg.register` takes (an MSI or Visium AnnData, a
        ``HistologyImage``, a ``RegistrationImage``); the re-run registers these.
    moving_image, fixed_image
        Their registration images (``sf.reg.registration_image``), drawn and warped.
    model
        The landmark fit: ``"rigid"``, ``"similarity"``, ``"affine"`` or ``"tps"``.
    register_options
        Keyword arguments of :func:`spatialfuse.reg.register` for the re-run (model, channel,
        scale, seed, ...).
    """

    def __init__(
        self,
        moving: Any,
        fixed: Any,
        *,
        moving_image: RegistrationImage,
        fixed_image: RegistrationImage,
        model: str = "affine",
        register_options: dict | None = None,
    ):
        self.moving = moving
        self.fixed = fixed
        self.moving_image = moving_image
        self.fixed_image = fixed_image
        self.register_options = dict(register_options or {})
        self.moving_points = np.zeros((0, 2))
        self.fixed_points = np.zeros((0, 2))
        self.fit: LandmarkFit | None = None
        self.fit_problem: str | None = None
        self.registration: RegistrationRun | None = None
        self._model = "affine"
        self.model = model

    # -- points and fit -------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The landmark fit's model; setting it refits."""
        return self._model

    @model.setter
    def model(self, value: str) -> None:
        if value not in PICKER_MODELS:
            raise ValueError(f"model must be one of {PICKER_MODELS}, got {value!r}")
        self._model = value
        self.refit()

    def set_points(self, moving_points: Any, fixed_points: Any) -> None:
        """Replace both point lists (``(x, y)`` µm, paired by order) and refit."""
        self.moving_points = as_xy(moving_points)
        self.fixed_points = as_xy(fixed_points)
        self.refit()

    @property
    def n_pairs(self) -> int:
        """Pairs complete so far: point ``i`` on both images."""
        return min(len(self.moving_points), len(self.fixed_points))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(moving_points, fixed_points)`` of the complete pairs."""
        n = self.n_pairs
        return self.moving_points[:n].copy(), self.fixed_points[:n].copy()

    def refit(self) -> None:
        """Fit the model to the complete pairs (none below its minimum)."""
        from spatialfuse.reg import from_landmarks

        self.fit, self.fit_problem = None, None
        moving, fixed = self.pairs()
        need = MIN_PAIRS[self.model]
        if len(moving) < need:
            self.fit_problem = f"{self.model} fit: {need - len(moving)} more pair(s) needed"
            return
        if not (np.isfinite(moving).all() and np.isfinite(fixed).all()):
            self.fit_problem = "a point has a non-finite coordinate"
            return
        try:
            self.fit = from_landmarks(moving, fixed, model=self.model)
        except (ValueError, np.linalg.LinAlgError) as exc:
            self.fit_problem = f"no {self.model} fit: {exc}"

    @property
    def moving_pixel_size_um(self) -> float | None:
        """The MSI pixel (µm) where the moving image is an MSI: errors are also given in it."""
        if self.moving_image.modality == "msi":
            return float(min(self.moving_image.pixel_size_um))
        return None

    @property
    def registration_current(self) -> bool:
        """Whether the last registration was run from the pairs as they are now."""
        if self.registration is None:
            return False
        moving, fixed = self.pairs()
        run = self.registration
        return (
            moving.shape == run.moving_points.shape
            and np.array_equal(moving, run.moving_points)
            and np.array_equal(fixed, run.fixed_points)
        )

    @property
    def transform(self) -> Transform | None:
        """The transform to show and save.

        The registration run from the current pairs where there is one, else the landmark fit
        (None without either).
        """
        if self.registration_current:
            return self.registration.result.transform
        return None if self.fit is None else self.fit.transform

    @property
    def transform_source(self) -> str:
        """Where :attr:`transform` comes from, in words."""
        if self.registration_current:
            return "registration from the landmarks"
        return f"{self.model} landmark fit" if self.fit is not None else "none"

    # -- text -----------------------------------------------------------------------------------

    def _um(self, value: float) -> str:
        pixel = self.moving_pixel_size_um
        text = f"{value:.1f} µm"
        return f"{text} ({value / pixel:.2f} MSI px)" if pixel else text

    def summary(self) -> str:
        """The fit and its errors in a few lines (what the picker's panel shows)."""
        n_moving, n_fixed = len(self.moving_points), len(self.fixed_points)
        lines = [f"{self.n_pairs} pair(s): {n_moving} moving point(s), {n_fixed} fixed point(s)"]
        if n_moving != n_fixed:
            side = "fixed" if n_moving > n_fixed else "moving"
            lines.append(f"point {self.n_pairs + 1} has no partner yet: add it on the {side} image")
        if self.fit is None:
            lines.append(self.fit_problem or "no fit")
        else:
            fit = self.fit
            lines.append(f"{self.model} fit on {fit.fre_um.size} pairs")
            lines.append(
                f"fit residual: mean {self._um(float(fit.fre_um.mean()))}, "
                f"max {self._um(float(fit.fre_um.max()))}"
            )
            loo = fit.loo_tre_um
            if np.isfinite(loo).any():
                worst = int(np.nanargmax(loo))
                lines.append(f"leave-one-out error: median {self._um(float(np.nanmedian(loo)))}")
                lines.append(f"  max {self._um(float(loo[worst]))} at pair {worst + 1}")
                per_pair = "  ".join(
                    f"{i + 1}: {v:.1f}" if np.isfinite(v) else f"{i + 1}: -"
                    for i, v in enumerate(loo)
                )
                lines.append(f"per pair (µm): {per_pair}")
            else:
                need = MIN_PAIRS[self.model] + 1
                lines.append(f"leave-one-out error: needs {need} pairs")
            if fit.transform.is_linear:
                parts = fit.transform.as_affine().decompose()
                lines.append(
                    "transform: rotation {:.1f}°, scale {:.3f} × {:.3f}{}".format(
                        parts["rotation_deg"],
                        parts["scale_x"],
                        parts["scale_y"],
                        ", mirrored" if parts["mirror"] else "",
                    )
                )
        if self.registration is not None:
            run = self.registration.result
            state = "ok" if run.ok else "FLAGGED: " + "; ".join(run.failures)
            stale = "" if self.registration_current else " (points changed since)"
            lines.append(f"registration from the landmarks: {state}{stale}")
            tre = run.metrics.get("tre_um_median")
            if tre is not None:
                lines.append(f"  landmark error after refinement: median {self._um(float(tre))}")
        lines.append(f"shown and saved: {self.transform_source}")
        return "\n".join(lines)

    # -- overlay --------------------------------------------------------------------------------

    def warped(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The moving image and its tissue mask drawn on the fixed grid through :attr:`transform`.

        The image is NaN outside the moving image's domain; None without a transform.
        """
        from spatialfuse.reg import warp_to

        transform = self.transform
        if transform is None:
            return None
        image, mask, inside = warp_to(self.moving_image, self.fixed_image, transform)
        shape = self.fixed_image.shape
        out = np.asarray(image, dtype=np.float32).reshape(shape).copy()
        out[~np.asarray(inside, bool).reshape(shape)] = np.nan
        return out, np.asarray(mask, bool).reshape(shape)

    def predicted(self) -> np.ndarray:
        """The moving points mapped into the fixed frame by :attr:`transform` (``(n, 2)``)."""
        transform = self.transform
        if transform is None or len(self.moving_points) == 0:
            return np.zeros((0, 2))
        return np.asarray(transform.apply(self.moving_points), dtype=np.float64)

    # -- files ----------------------------------------------------------------------------------

    def save_landmarks(self, path: str | os.PathLike) -> Path:
        """Write the complete pairs as CSV (``moving_x,moving_y,fixed_x,fixed_y``, µm).

        :func:`spatialfuse.reg.read_landmarks` and the run config's ``landmarks:`` read it.

        Raises
        ------
        ValueError
            No complete pair to write.
        """
        from spatialfuse._io_utils import atomic_path

        moving, fixed = self.pairs()
        if len(moving) == 0:
            raise ValueError("no landmark pair to save: click a point on each image first")
        rows = [CSV_HEADER] + [
            ",".join(repr(float(v)) for v in (*m, *f)) for m, f in zip(moving, fixed, strict=True)
        ]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return path

    def save_transform(self, path: str | os.PathLike) -> Path:
        """Write :attr:`transform` as spatialfuse's transform JSON (``Transform.load`` reads it).

        Raises
        ------
        ValueError
            No transform yet (too few pairs).
        """
        transform = self.transform
        if transform is None:
            raise ValueError(f"no transform to save yet ({self.fit_problem or 'no fit'})")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return transform.save(path)

    def load_landmarks(self, path: str | os.PathLike) -> None:
        """Replace the points by those of a landmark CSV (``sf.reg.read_landmarks``)."""
        from spatialfuse.reg import read_landmarks

        moving, fixed = read_landmarks(path)
        self.set_points(moving, fixed)

    # -- registration ---------------------------------------------------------------------------

    def register(self) -> RegistrationResult:
        """Run :func:`spatialfuse.reg.register` from the complete pairs.

        With ``start_from_landmarks`` (the default here) the pairs give the start and
        registration refines and checks from there; with ``start_from_landmarks=False`` in
        ``register_options`` the automatic search runs and the pairs measure its error.

        Raises
        ------
        ValueError
            Fewer than 3 pairs where they give the start.
        """
        from spatialfuse.reg import register

        moving, fixed = self.pairs()
        options = {"start_from_landmarks": True, **self.register_options}
        if options["start_from_landmarks"] and len(moving) < 3:
            raise ValueError(
                f"registration from landmarks needs at least 3 pairs, {len(moving)} given"
            )
        result = register(self.moving, self.fixed, landmarks=(moving, fixed), **options)
        self.registration = RegistrationRun(result, moving, fixed)
        return result
