"""Quality checks of a registration result, from the images alone (no ground truth).

A right alignment of two images of the same tissue is a sharp optimum of their mutual
information: moving it by a few pixels in any direction, or turning it slightly, loses
information. Three numbers say whether a result is one:

- ``nmi_excess``: NMI − 1 at the result (0 = the images say nothing about each other);
- ``peak_sharpness``: the mean NMI excess at the result moved by :func:`probe_step_um` (8 shifts
  and 2 turns) relative to the excess at the result; about 1 when nothing pins the alignment
  down (another tissue, a flat landscape), well below 1 at a right alignment;
- ``best_neighbour_gain``: how much more excess the best of those moves has than the result
  (relative); above 0 means the result is not at the optimum it sits near (a result shifted by a
  few pixels, or turned, from the right one).

NMI is computed on the fixed grid over the union of both tissue masks inside the moving image's
domain, with every pixel (no sampling noise). Thresholds (``docs/failure_detection.md``) were set
on real pairs: right and deliberately wrong alignments (shifted 2–5 pixels, turned, mirrored,
swapped between pairs) of ``benchmarks/real_pairs.py``.
"""

from __future__ import annotations

import numpy as np

from spatialfuse.core.transforms import AffineTransform, Transform, compose
from spatialfuse.reg._images import RegistrationImage
from spatialfuse.reg._quality import QualityCheck
from spatialfuse.reg._similarity import coarse, normalized_mutual_information, warp_to
from spatialfuse.reg._threads import ordered_map

#: A result whose neighbours keep more than this fraction of its NMI excess on average is not
#: pinned down. Real pairs (docs/failure_detection.md): right alignments 0.82-0.89; wrong local
#: optima (started mirrored or turned by 90° or 180°) and swapped pairs 0.90-1.01, where the
#: 0.90 ones also fail Dice.
MAX_PEAK_SHARPNESS = 0.9
#: A neighbour with this much more NMI excess (relative) than the result means the result is off
#: the optimum it sits near. Real pairs: right alignments -0.11 to +0.03; results moved by 2-5
#: pixels or turned by 3-5 pixels' worth +0.047 to +0.33.
MAX_NEIGHBOUR_GAIN = 0.04
#: The profile is computed on the fixed grid block-averaged to at most this many pixels a side
#: (every calibration case's working grid is smaller: they were measured at full grid).
PROFILE_MAX_SIDE = 1000
#: Below this NMI excess the images share no usable information.
MIN_NMI_EXCESS = 1e-3


#: The probe distance in pixels of the coarser of the two images ...
PROBE_STEP_PX = 2.0
#: ... or this fraction of the larger image's extent, whichever is larger: region boundaries
#: make the peak, and on a large tissue two pixels move few of them (a synthetic 8 mm tissue at
#: 25 µm kept 92 % of its mutual information at a right alignment under 50 µm probes).
PROBE_STEP_EXTENT = 0.01


def probe_step_um(moving: RegistrationImage, fixed: RegistrationImage) -> float:
    """The probe distance (µm).

    :data:`PROBE_STEP_PX` pixels of the coarser image, or :data:`PROBE_STEP_EXTENT` of the
    larger image's extent, whichever is larger.
    """
    pixels = PROBE_STEP_PX * max(max(moving.pixel_size_um), max(fixed.pixel_size_um))
    extent = max(
        max(img.shape[1] * img.pixel_size_um[0], img.shape[0] * img.pixel_size_um[1])
        for img in (moving, fixed)
    )
    return max(pixels, PROBE_STEP_EXTENT * extent)


def region_nmi(moving: RegistrationImage, fixed: RegistrationImage, transform: Transform) -> float:
    """NMI of the two images over the union of their tissue masks inside the moving domain."""
    image, mask, inside = warp_to(moving, fixed, transform)
    region = (mask | fixed.mask) & inside
    return normalized_mutual_information(image[region], fixed.image[region])


def channel_table(
    moving: RegistrationImage,
    fixed: RegistrationImage,
    transform: Transform,
    moving_names,
    fixed_names,
) -> dict[str, float]:
    """NMI excess of every (moving, fixed) candidate image pair at ``transform``.

    Keys ``"<moving name> × <fixed name>"``; one warp per moving candidate.
    """
    fixed_images = {
        name: coarse(fixed.with_channel(name) if name else fixed, max_side=PROFILE_MAX_SIDE)
        for name in fixed_names
    }
    grid = next(iter(fixed_images.values()))
    table = {}
    for m_name in moving_names:
        image, mask, inside = warp_to(
            moving.with_channel(m_name) if m_name else moving, grid, transform
        )
        region = (mask | grid.mask) & inside
        for f_name, f_img in fixed_images.items():
            nmi = normalized_mutual_information(image[region], f_img.image[region])
            table[f"{m_name} × {f_name}"] = nmi - 1.0
    return table


def peak_profile(moving: RegistrationImage, fixed: RegistrationImage, transform: Transform) -> dict:
    """NMI at ``transform`` and at its probes (8 shifts, 2 turns), summarised.

    The sharpness uses probes of :func:`probe_step_um`; the neighbour gain probes of exactly
    :data:`PROBE_STEP_PX` coarser pixels (a result a few pixels off must see its optimum from
    there; a longer probe overshoots it). Where the two distances are equal one set serves both.

    Returns
    -------
    dict
        ``nmi``, ``nmi_excess``, ``peak_sharpness``, ``best_neighbour_gain``,
        ``probe_step_um``, ``gain_step_um``.
    """
    step = probe_step_um(moving, fixed)
    gain_step = PROBE_STEP_PX * max(max(moving.pixel_size_um), max(fixed.pixel_size_um))
    fixed = coarse(fixed, max_side=PROFILE_MAX_SIDE)
    at = region_nmi(moving, fixed, transform) - 1.0
    centres = transform.apply(moving.centres_um(mask_only=bool(moving.mask.any()))[::5])
    centre = centres.mean(axis=0)
    radius = float(np.sqrt(((centres - centre) ** 2).sum(axis=1).mean())) or 1.0

    def excess_at(distance: float) -> np.ndarray:
        angle = float(np.degrees(distance / radius))
        probes = []
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            norm = distance / np.hypot(dx, dy)
            probes.append(AffineTransform.from_params(translation=(dx * norm, dy * norm)))
        for sign in (1, -1):
            turn = AffineTransform.from_params(rotation_deg=sign * angle)
            back = AffineTransform.from_params(translation=centre - turn.apply(centre[None])[0])
            probes.append(compose(back, turn))
        moved = ordered_map(lambda p: region_nmi(moving, fixed, compose(p, transform)), probes)
        return np.array(moved) - 1.0

    sharp = excess_at(step)
    near = sharp if np.isclose(step, gain_step) else excess_at(gain_step)
    scale = max(at, 1e-12)
    return {
        "nmi": at + 1.0,
        "nmi_excess": at,
        "peak_sharpness": float(sharp.mean() / scale) if at > 0 else 1.0,
        "best_neighbour_gain": float(near.max() / scale - 1.0) if at > 0 else 0.0,
        "probe_step_um": step,
        "gain_step_um": gain_step,
    }


def peak_checks(profile: dict) -> list[QualityCheck]:
    """The peak checks of ``profile`` (:func:`peak_profile`), one row each.

    Without mutual information the other two do not apply and only the first is returned.
    """
    excess = profile["nmi_excess"]
    shared = QualityCheck.judged(
        "shared information",
        "normalised mutual information − 1 at the result",
        excess,
        f"≥ {MIN_NMI_EXCESS:g}",
        "no mutual information between the aligned images" if excess < MIN_NMI_EXCESS else None,
    )
    if not shared.passed:
        return [shared]
    sharpness, gain = profile["peak_sharpness"], profile["best_neighbour_gain"]
    pinned = QualityCheck.judged(
        "alignment pinned down",
        "share of the mutual information kept when the result is moved a little",
        sharpness,
        f"≤ {MAX_PEAK_SHARPNESS:g}",
        (
            f"nothing pins the alignment down: moved by {profile['probe_step_um']:.0f} µm the "
            f"images keep {100 * sharpness:.0f} % of their mutual information "
            f"(at most {100 * MAX_PEAK_SHARPNESS:.0f} % at a right alignment); they probably "
            "show different tissues or sections"
        )
        if sharpness > MAX_PEAK_SHARPNESS
        else None,
    )
    at_optimum = QualityCheck.judged(
        "at the optimum",
        "mutual information gained by the best small move (relative)",
        gain,
        f"≤ {MAX_NEIGHBOUR_GAIN:g}",
        (
            f"the result is off the optimum it sits near: moved by {profile['gain_step_um']:.0f}"
            f" µm it gains {100 * gain:.0f} % mutual information"
        )
        if gain > MAX_NEIGHBOUR_GAIN
        else None,
    )
    return [shared, pinned, at_optimum]


def peak_failures(profile: dict) -> list[str]:
    """Which of the peak checks ``profile`` (:func:`peak_profile`) fails, in words."""
    return [check.failure for check in peak_checks(profile) if not check.passed]
