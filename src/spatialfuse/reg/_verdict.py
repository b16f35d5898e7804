"""The verdict on a registration result: one function per failure it catches.

Each check takes the result's numbers (``metrics``, computed by ``register``/``assess``) and returns
the failure in words, or None. :func:`failures` runs them all; a result is ok when it returns
none. The peak checks (is the result a sharp optimum of mutual information) live in
:mod:`spatialfuse.reg._checks`; the thresholds here and there were set on real pairs
(``docs/failure_detection.md``).
"""

from __future__ import annotations

import numpy as np

from spatialfuse.reg import _checks, _footprint, _scale
from spatialfuse.reg._quality import QualityCheck

#: Both frames are in µm, so a right registration scales by about 1; beyond this factor (either
#: way, along either axis) a pixel size is wrong. Real sections stretch by up to ~22 %.
MAX_SCALE = 1.35
#: Least fraction of the moving tissue that must land inside the fixed image. Partial overlap is
#: normal (an optical image cropped inside the MSI region, an MSI region inside the tissue) and
#: is reported (``details["partial_overlap"]``); below this little is left for the checks to judge.
MIN_MOVING_TISSUE_INSIDE = 0.2
#: Below this fraction inside, ``details["partial_overlap"]`` says how much of the moving tissue
#: the fixed image shows.
PARTIAL_OVERLAP_NOTE = 0.9
#: Where only part of one tissue overlaps the other, outlines do not pin the position down and the
#: intensities must: the images must share at least this much information (NMI − 1). Real right
#: alignments reach 0.038–0.24 (0.064 for the bladder crop, the one real right partial overlap),
#: synthetic ones 0.10–0.19; swapped pairs that land as a partial overlap 0.006–0.023 (msiFlow's
#: autofluorescence inside the bladder's stained tissue 0.006–0.008, inside brain A13's H&E
#: 0.023: reported ok at 0.02 in session 7). 0.04 lies in that gap (session 8).
MIN_PARTIAL_NMI_EXCESS = 0.04
#: Where part of the moving tissue lands outside the fixed image, the fixed image must be a crop
#: there: at least this fraction of that tissue must leave where the fixed tissue runs into the
#: edge. Real right crops reach 1.00 (the bladder crop; SMA and msiFlow 1.00 with 2–7 % outside);
#: brain A13's MALDI laid on the bladder's whole-tissue image, reported ok before, 0.34
#: (session 9).
MIN_TISSUE_CUT_AT_EDGE = 0.6


def poor_tissue_overlap(scores: dict, min_dice: float) -> str | None:
    """The tissue masks overlap too little (a wrong place, or different tissues)."""
    if scores["dice"] < min_dice:
        return f"tissue masks overlap poorly (Dice {scores['dice']:.2f} < {min_dice})"
    return None


def uneven_stretch(metrics: dict, plan) -> str | None:
    """With a pixel size estimated: a stretch along one axis no real section shows."""
    low, high = metrics["scale_min"], metrics["scale_max"]
    if plan.estimating and high / low > MAX_SCALE:
        return (
            f"the registration stretches the moving image {high / low:.2f}× more along one "
            "axis than the other (real sections stretch by up to ~22 %)"
        )
    return None


def implausible_tissue_size(metrics: dict, plan) -> str | None:
    """With pixel sizes trusted: the two tissues differ in size beyond any real section."""
    if plan.estimating:
        return None
    if (
        not 1 / _scale.IMPLAUSIBLE_FACTOR
        <= metrics["tissue_area_scale"]
        <= _scale.IMPLAUSIBLE_FACTOR
    ):
        return (
            f"the tissue is {metrics['tissue_area_scale']:.3g}× larger in the fixed image than in "
            "the moving one (about 1 expected: both frames are in µm); a pixel size is probably "
            "wrong"
        )
    return None


def wrong_scale(metrics: dict, plan) -> str | None:
    """With pixel sizes trusted: the result scales by far from 1 (a wrong pixel size, or tissue)."""
    if plan.estimating or implausible_tissue_size(metrics, plan):
        return None
    low, high = metrics["scale_min"], metrics["scale_max"]
    if high > MAX_SCALE or low < 1 / MAX_SCALE:
        return (
            f"the registration scales the moving image by {low:.2f}–{high:.2f} (about 1 expected: "
            "both frames are in µm); a pixel size is probably wrong, or the two images do not "
            "show the same tissue"
        )
    return None


def too_little_overlap(metrics: dict) -> str | None:
    """Too little of the moving tissue lands inside the fixed image to judge anything."""
    if metrics["moving_tissue_inside"] < MIN_MOVING_TISSUE_INSIDE:
        return (
            f"only {100 * metrics['moving_tissue_inside']:.0f} % of the moving tissue lands inside "
            "the fixed image: too little overlap to judge the alignment — the fixed image shows "
            "a small part of the tissue (a crop?); register against an image of the whole "
            "section"
        )
    return None


def partial_overlap_without_information(metrics: dict) -> str | None:
    """Part of one tissue overlaps the other and the intensities do not pin the position."""
    partial = (
        metrics["moving_tissue_inside"] < PARTIAL_OVERLAP_NOTE
        or metrics["fixed_tissue_covered"] < PARTIAL_OVERLAP_NOTE
    )
    if partial and metrics["nmi_excess"] < MIN_PARTIAL_NMI_EXCESS:
        return (
            "only part of one tissue overlaps the other and the images share little information "
            f"(NMI − 1 = {metrics['nmi_excess']:.3f} < {MIN_PARTIAL_NMI_EXCESS}): where the "
            "outlines do not match, nothing pins the position down; they probably show "
            "different tissues or sections"
        )
    return None


def tissue_over_glass(metrics: dict) -> str | None:
    """Part of the moving tissue leaves the fixed image where that image shows no tissue."""
    cut = metrics.get("tissue_cut_at_edge", float("nan"))
    inside = metrics["moving_tissue_inside"]
    if inside < PARTIAL_OVERLAP_NOTE and cut < MIN_TISSUE_CUT_AT_EDGE:
        return (
            f"{100 * (1 - inside):.0f} % of the moving tissue lands outside the fixed image, and "
            f"only {100 * cut:.0f} % of it leaves where the fixed image's tissue reaches the edge "
            "(a crop would cut its tissue there): the result lays tissue over bare glass; the "
            "images probably show different tissues, or the result is in the wrong place"
        )
    return None


def spectra_do_not_localise(mov, metrics: dict) -> str | None:
    """MSI → H&E: moving the result hardly raises the colour the spectra cannot explain."""
    # Pixels finer than the shift are judged merged to its scale, with the cost there.
    unexplained = metrics.get("localisation_cost", metrics.get("footprint_cost"))
    least = _footprint.least_localisation(unexplained)
    if metrics.get("localisation", np.inf) < least:
        return (
            "the spectra do not pin the alignment down: moving it by "
            f"{max(_footprint.LOCALISATION_SHIFT_UM, *mov.pixel_size_um):g} µm raises "
            f"the colour they cannot explain only {metrics['localisation']:.2f}× (at least "
            f"{least:g}× expected where {100 * unexplained:.0f} % is unexplained); the images "
            "probably show different tissues or sections"
        )
    return None


def folding(metrics: dict) -> str | None:
    """A nonrigid map that folds (negative Jacobian somewhere)."""
    if metrics.get("min_jacobian", 1.0) <= 0:
        return f"the nonrigid map folds (min Jacobian {metrics['min_jacobian']:.2f})"
    return None


def landmark_error(metrics: dict, max_tre_um: float | None) -> str | None:
    """With landmarks and a bound: the median landmark error is above it."""
    if max_tre_um is not None and metrics.get("tre_um_median", 0.0) > max_tre_um:
        return f"landmark error too large (median {metrics['tre_um_median']:.1f} µm > {max_tre_um})"
    return None


def checks(mov, metrics, scores, profile, plan, min_dice, max_tre_um) -> list[QualityCheck]:
    """Every check that applies to the result, in the order :func:`failures` reports them."""
    rows = [
        QualityCheck.judged(
            "tissue overlap",
            "Dice of the two tissue masks",
            scores["dice"],
            f"≥ {min_dice:g}",
            poor_tissue_overlap(scores, min_dice),
        )
    ]
    rows += _checks.peak_checks(profile)
    low, high = metrics["scale_min"], metrics["scale_max"]
    if plan.estimating:
        rows.append(
            QualityCheck.judged(
                "even stretch",
                "largest over smallest scale of the result",
                high / low,
                f"≤ {MAX_SCALE:g}",
                uneven_stretch(metrics, plan),
                "pixel_size",
            )
        )
    else:
        size = implausible_tissue_size(metrics, plan)
        factor = _scale.IMPLAUSIBLE_FACTOR
        rows.append(
            QualityCheck.judged(
                "plausible tissue size",
                "tissue size in the fixed image over the moving one",
                metrics["tissue_area_scale"],
                f"between {1 / factor:.2g} and {factor:g}",
                size,
                "pixel_size",
            )
        )
        if size is None:
            rows.append(
                QualityCheck.judged(
                    "scale about 1",
                    "smallest and largest scale of the result (µm to µm)",
                    high if high - 1 >= 1 - low else low,
                    f"between {1 / MAX_SCALE:.2f} and {MAX_SCALE:g}",
                    wrong_scale(metrics, plan),
                    "pixel_size",
                )
            )
    rows.append(
        QualityCheck.judged(
            "enough overlap",
            "share of the moving tissue inside the fixed image",
            metrics["moving_tissue_inside"],
            f"≥ {MIN_MOVING_TISSUE_INSIDE:g}",
            too_little_overlap(metrics),
            "whole_section",
        )
    )
    if metrics["moving_tissue_inside"] < PARTIAL_OVERLAP_NOTE and np.isfinite(
        metrics.get("tissue_cut_at_edge", np.nan)
    ):
        rows.append(
            QualityCheck.judged(
                "a crop where tissue leaves the image",
                "share of the moving tissue outside the fixed image that leaves where the fixed "
                "tissue reaches the edge",
                metrics["tissue_cut_at_edge"],
                f"≥ {MIN_TISSUE_CUT_AT_EDGE:g}",
                tissue_over_glass(metrics),
            )
        )
    partial = partial_overlap_without_information(metrics)
    if partial or min(metrics["moving_tissue_inside"], metrics["fixed_tissue_covered"]) < (
        PARTIAL_OVERLAP_NOTE
    ):
        rows.append(
            QualityCheck.judged(
                "information where the overlap is partial",
                "normalised mutual information − 1 at the result",
                metrics["nmi_excess"],
                f"≥ {MIN_PARTIAL_NMI_EXCESS:g}",
                partial,
            )
        )
    if "localisation" in metrics:
        unexplained = metrics.get("localisation_cost", metrics.get("footprint_cost"))
        rows.append(
            QualityCheck.judged(
                "spectra pin the alignment down",
                "rise of the colour the spectra cannot explain when the result is moved",
                metrics["localisation"],
                f"≥ {_footprint.least_localisation(unexplained):g}",
                spectra_do_not_localise(mov, metrics),
            )
        )
    if "min_jacobian" in metrics:
        rows.append(
            QualityCheck.judged(
                "no folding",
                "smallest Jacobian determinant of the nonrigid map",
                metrics["min_jacobian"],
                "> 0",
                folding(metrics),
                "nonrigid",
            )
        )
    if max_tre_um is not None and "tre_um_median" in metrics:
        rows.append(
            QualityCheck.judged(
                "landmark error",
                "median distance of the landmarks after registration (µm)",
                metrics["tre_um_median"],
                f"≤ {max_tre_um:g}",
                landmark_error(metrics, max_tre_um),
                "landmark_file",
            )
        )
    return rows


def failures(mov, metrics, scores, profile, plan, min_dice, max_tre_um) -> list[str]:
    """Every check's failure, in words (empty: the result is ok)."""
    found = checks(mov, metrics, scores, profile, plan, min_dice, max_tre_um)
    return [check.failure for check in found if not check.passed]
