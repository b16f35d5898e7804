"""Initial alignment: moments of the tissue masks, then a search over rotations and mirrors.

Mutual-information optimisers only converge from nearby starts, so every rotation (in steps of
``angle_step_deg``, not only 90°) with and without a mirror is tried as a similarity transform that
matches the masks' centroids and areas; each is scored on the reference grid by Dice of the masks
times agreement of intensities (:func:`~spatialfuse.reg._similarity.combined_score`), and the best
distinct candidates go on to refinement.
"""

from __future__ import annotations

import numpy as np

from spatialfuse.core.transforms import AffineTransform
from spatialfuse.reg._images import RegistrationImage
from spatialfuse.reg._similarity import alignment_scores, coarse, combined_score


def mask_moments(img: RegistrationImage) -> tuple[np.ndarray, float]:
    """Centroid (µm) and area (µm²) of the tissue mask (of the whole image if it is empty)."""
    centres = img.centres_um(mask_only=bool(img.mask.any()))
    area = len(centres) * img.pixel_size_um[0] * img.pixel_size_um[1]
    return centres.mean(axis=0), area


def area_scale(moving: RegistrationImage, fixed: RegistrationImage) -> float:
    """The scale that makes the moving tissue area equal to the fixed one."""
    _, a_moving = mask_moments(moving)
    _, a_fixed = mask_moments(fixed)
    return float(np.sqrt(a_fixed / a_moving)) if a_moving > 0 else 1.0


def candidates(
    moving: RegistrationImage,
    fixed: RegistrationImage,
    *,
    angle_step_deg: float = 10.0,
    allow_mirror: bool = True,
    scales=None,
) -> list[tuple[float, AffineTransform, dict]]:
    """Score similarity starts at every rotation (and mirror) and scale; best first.

    ``scales``: the scales to try (default: the one that matches the tissue areas).
    """
    c_moving, _ = mask_moments(moving)
    c_fixed, _ = mask_moments(fixed)
    grid = coarse(fixed)  # candidates are ranked on a coarse copy of the reference
    scales = [area_scale(moving, fixed)] if scales is None else list(scales)
    found = []
    for scale in scales:
        for mirror in (False, True) if allow_mirror else (False,):
            for angle in np.arange(0.0, 360.0, angle_step_deg):
                linear = AffineTransform.from_params(rotation_deg=angle, scale=scale, mirror=mirror)
                offset = c_fixed - linear.apply(c_moving[None])[0]
                start = AffineTransform.from_params(
                    rotation_deg=angle, scale=scale, mirror=mirror, translation=offset
                )
                scores = alignment_scores(moving, grid, start)
                found.append(
                    (
                        combined_score(scores),
                        start,
                        {"angle": angle, "mirror": mirror, "scale": scale, **scores},
                    )
                )
    found.sort(key=lambda item: -item[0])
    return found


#: Shifted starts are tried where the tissue extents differ by more than this fraction (a crop).
SHIFT_EXTENT_DIFFERENCE = 0.2
#: Shifts per axis (a grid over the extent difference, centre excluded).
SHIFT_STEPS = 5


def shifted(
    moving: RegistrationImage, fixed: RegistrationImage, found, *, count: int
) -> list[tuple[float, AffineTransform, dict]]:
    """Starts shifted off the centroid match where one tissue shows only part of the other.

    Matching centroids is right when both images show the whole tissue; where the fixed image is
    a crop (or the moving region covers part of the tissue), the smaller tissue's centroid lies
    anywhere inside the larger one. For the best ``count`` distinct starts, a grid of shifts over
    the difference of the two extents (per axis) is scored like the starts themselves.
    """
    moving_points = moving.centres_um(mask_only=bool(moving.mask.any()))
    fixed_extent = np.ptp(fixed.centres_um(mask_only=bool(fixed.mask.any())), axis=0)
    grid = coarse(fixed)
    steps = np.linspace(-0.5, 0.5, SHIFT_STEPS)
    extra = []
    for _score, start, info in distinct(found, count=count):
        difference = np.abs(np.ptp(start.apply(moving_points), axis=0) - fixed_extent)
        if np.all(difference <= SHIFT_EXTENT_DIFFERENCE * np.maximum(fixed_extent, 1e-9)):
            continue
        for fx in steps:
            for fy in steps:
                if fx == 0 and fy == 0:
                    continue
                offset = np.array([fx, fy]) * difference
                move = AffineTransform.from_params(translation=tuple(offset))
                candidate = AffineTransform(move.matrix @ start.matrix)
                scores = alignment_scores(moving, grid, candidate)
                extra.append(
                    (
                        combined_score(scores),
                        candidate,
                        {**info, **scores, "shift": offset.tolist()},
                    )
                )
    return extra


def distinct(found, *, count: int, min_angle_deg: float = 25.0):
    """The best ``count`` candidates that differ by mirror or by at least ``min_angle_deg``."""
    chosen = []
    for item in found:
        info = item[2]
        if all(
            info["mirror"] != other[2]["mirror"]
            or abs((info["angle"] - other[2]["angle"] + 180) % 360 - 180) >= min_angle_deg
            for other in chosen
        ):
            chosen.append(item)
        if len(chosen) == count:
            break
    return chosen
