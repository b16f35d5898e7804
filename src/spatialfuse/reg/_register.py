"""``sf.reg.register``: automatic registration between modalities, with measured quality."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from spatialfuse._limits import check_resampled_image
from spatialfuse._logging import logger
from spatialfuse.core.transforms import AffineTransform, Transform, as_points, compose
from spatialfuse.errors import CalibrationError, SpatialfuseWarning
from spatialfuse.reg import _checks, _footprint, _initialize, _overlap, _scale, _verdict
from spatialfuse.reg._images import (
    RegistrationImage,
    as_registration_image,
    extent_um,
    native_pixel_size,
)
from spatialfuse.reg._itk import COARSE_LEVELS, FULL_LEVELS, refine_bspline, refine_linear
from spatialfuse.reg._quality import QualityCheck
from spatialfuse.reg._similarity import alignment_scores, combined_score
from spatialfuse.reg._threads import one_blas_thread, ordered_map

MODELS = ("rigid", "similarity", "affine", "bspline")

#: Below this Dice of the tissue masks a registration is reported as failed. Right real results
#: reach 0.73–1.00 (brain A2 0.73/0.745: an MSI region drawn by hand around torn fragments; 0.75
#: flagged both until session 9); no wrong result, real or synthetic, is caught by this check alone
#: (the lowest wrong ones, 0.58–0.71, fail others too: docs/failure_detection.md).
MIN_DICE = 0.70
#: Largest working image side (pixels) when no MSI sets the working resolution.
WORKING_SIDE_PX = 500
#: Largest working image side (pixels) when an MSI does: half its pixel size, unless the larger
#: image would then be more than this many pixels a side. Every real pair and issue 20's speed
#: case work at 150-723 pixels a side, under it; an MSI of 2 million pixels at half its pixel
#: size would put a 3.6 mm H&E at 4,200 a side, and every stage (ITK, warps, checks) costs in
#: proportion to the working grid's area while the H&E (2 µm) carries nothing finer. Measured on
#: the synthetic trio of issue 17 (3 × 2.4 mm tissue): at 500k MSI pixels (3.41 µm), a working
#: pixel of 3.41 µm ended 1.5 µm from the truth, 1.705 µm 1.34 µm.
WORKING_MAX_SIDE_PX = 1024
#: Images whose extents differ by more than this factor (either way) get a pixel-size hint.
EXTENT_RATIO_HINT = 3.0


class RegistrationWarning(SpatialfuseWarning):
    """A registration's quality checks failed; its result has ``ok=False``."""


@dataclass
class RegistrationResult:
    """The outcome of :func:`register`.

    Attributes
    ----------
    transform
        Moving µm → fixed µm, in the frames the readers define.
    metrics
        ``nmi_initial``/``nmi_final`` (normalised mutual information on the fixed grid, 1 = none),
        ``dice_initial``/``dice_final`` (tissue masks), ``scale_min``/``scale_max`` (of the
        affine that best fits the transform over the moving tissue; about 1 when the pixel sizes
        are right), ``moving_tissue_inside`` (fraction of the moving tissue that lands inside
        the fixed image), ``tissue_cut_at_edge`` (of the moving tissue that lands outside it,
        the fraction that leaves where the fixed tissue runs into the image's edge: about 1 for
        a crop; present only where some lands outside), ``localisation`` (MSI → H&E: how much the
        footprint stage's cost rises when the result is moved by 50 µm; about 1 means nothing
        pins the alignment down, as when the images show different tissues; measured on pixels
        merged to at least 20 µm where they are finer, with the cost there as
        ``localisation_cost``) and ``footprint_cost``,
        ``nmi_excess``/``peak_sharpness``/``best_neighbour_gain`` (the peak checks of
        :mod:`spatialfuse.reg._checks`), ``tissue_area_scale`` (fixed over moving tissue size),
        ``estimated_pixel_size_um`` where a pixel size was estimated, ``min_jacobian``
        (nonrigid: < 0 means folding), with landmarks ``tre_um_median``/``tre_um_max``/
        ``tre_px_median`` (in moving pixels, for MSI: MSI pixels), ``seconds``. All numbers.
    ok
        Whether every quality check passed; ``failures`` says which did not.
    moving_image, fixed_image
        The registration images that were aligned (for plots).
    candidates
        The initial candidates that were refined, with their scores.
    details
        What registration chose and why: ``msi_image`` and ``channel`` (the images compared)
        with ``channel_nmi`` (mutual information of every candidate pair at the best start),
        ``footprint`` (whether the footprint stage ran, its costs, or why not), ``scale``
        (``"given"`` or ``"estimated"``), ``estimated_pixel_size`` (side, value in µm, as
        given, relative uncertainty, why) and ``partial_overlap`` (where only part of the
        moving tissue lies in the fixed image, or the moving image covers part of the fixed
        tissue: a note, not a failure) and ``checks`` (every quality check that applied, as
        rows: see :attr:`checks`).
    """

    transform: Transform
    metrics: dict
    ok: bool
    failures: list[str]
    model: str
    moving_image: RegistrationImage
    fixed_image: RegistrationImage
    candidates: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def checks(self):
        """Every quality check as a table: what it measures, value, threshold, pass, what to do.

        Returns
        -------
        pandas.DataFrame
            One row per check (``details["checks"]``), columns ``name``, ``measures``,
            ``value``, ``threshold``, ``passed``, ``failure``, ``remedy``, ``what_to_do``.
        """
        import pandas as pd

        columns = ["name", "measures", "value", "threshold", "passed", "failure", "remedy"]
        return pd.DataFrame(self.details.get("checks", []), columns=[*columns, "what_to_do"])

    def __repr__(self) -> str:
        m = self.metrics
        status = "ok" if self.ok else "FAILED (" + "; ".join(self.failures) + ")"
        tre = f", TRE {m['tre_um_median']:.1f} µm" if "tre_um_median" in m else ""
        # assess() judges a given transform: there is no NMI before it
        nmi = f"{m['nmi_initial']:.3f} → " if "nmi_initial" in m else ""
        return (
            f"RegistrationResult({self.model}, {status}: Dice {m['dice_final']:.3f}, "
            f"NMI {nmi}{m['nmi_final']:.3f}{tre}, {m['seconds']:.1f} s)"
        )


def _working_pixel_size(moving, fixed, requested: float | None) -> float:
    if requested is not None:
        if not requested > 0:
            raise ValueError(f"working_pixel_size_um must be positive, got {requested!r}")
        return float(requested)
    msi = [s for s in (native_pixel_size(moving), native_pixel_size(fixed)) if s]
    extents = [e for e in (extent_um(moving), extent_um(fixed)) if e]
    if msi:
        return max(min(msi) / 2.0, max(extents, default=0.0) / WORKING_MAX_SIDE_PX)
    return max(extents) / WORKING_SIDE_PX if extents else 10.0


def _msi_file(obj) -> str | None:
    """The file an MSI AnnData was read from, if ``obj`` is one."""
    uns = getattr(obj, "uns", None)
    return (
        uns.get("spatialfuse", {}).get("file") if uns is not None and _is_msi_anndata(obj) else None
    )


def _check_working_grid(moving, fixed, work: float, msi_files: tuple) -> None:
    """Refuse, before allocating, a working pixel at which an H&E would exceed the memory limit.

    The H&E's optical densities are resampled to half the working pixel; an MSI pixel size in the
    wrong unit (nm read as µm) would ask for tens of GiB. The error names the MSI file whose pixel
    size set the resolution (``msi_files``: of moving and fixed), or the H&E where none did.
    """
    source = next((f for f in msi_files if f), None)
    for image in (moving, fixed):
        if isinstance(image, RegistrationImage) or not hasattr(image, "extent_um"):
            continue
        width, height = image.extent_um
        shape = (max(8, round(2 * height / work)), max(8, round(2 * width / work)), 3)
        why = f"registering {image.path} at a working pixel of {work:.3g} µm"
        if source:
            why += f" (half the MSI pixel size of {2 * work:.3g} µm)"
        check_resampled_image(source or image.path, shape, 4, why)


#: An image narrower than this many working pixels cannot be registered: its pixel size (or the
#: other image's) is in the wrong unit.
MIN_WORKING_PIXELS_ACROSS = 4


def _check_extents(moving, fixed, work: float, msi_files: tuple) -> None:
    """Refuse an image that spans fewer than :data:`MIN_WORKING_PIXELS_ACROSS` working pixels.

    The working grid is bounded (:data:`WORKING_MAX_SIDE_PX`), so an MSI pixel size in the wrong
    unit (50 nm for 50 µm) no longer asks for an absurd H&E grid; it leaves the MSI narrower than
    a working pixel instead, where no search can find anything. The error names the MSI file.
    """
    spans = [extent_um(image) for image in (moving, fixed)]
    for name, span, other in (("moving", spans[0], spans[1]), ("fixed", spans[1], spans[0])):
        if span is None or other is None or span >= MIN_WORKING_PIXELS_ACROSS * work:
            continue
        source = next((f for f in msi_files if f), None)
        raise CalibrationError(
            source,
            f"the {name} image spans {span:.3g} µm against {other:,.0f} µm for the other, fewer "
            f"than {MIN_WORKING_PIXELS_ACROSS} working pixels of {work:.3g} µm: if both show the "
            "same tissue, a pixel size is in the wrong unit (nm read as µm, or µm as nm?); give "
            "the right one to the reader (pixel_size_um=...)",
        )


def _landmark_errors(transform: Transform, landmarks, pixel_size: float | None) -> dict:
    moving_pts, fixed_pts = (as_points(p) for p in landmarks)
    if len(moving_pts) != len(fixed_pts):
        raise ValueError("landmarks: moving and fixed point sets differ in length")
    errors = np.linalg.norm(transform.apply(moving_pts) - fixed_pts, axis=1)
    out = {
        "tre_um_median": float(np.median(errors)),
        "tre_um_mean": float(errors.mean()),
        "tre_um_max": float(errors.max()),
        "n_landmarks": len(errors),
    }
    if pixel_size:
        out["tre_px_median"] = out["tre_um_median"] / pixel_size
    return out


@one_blas_thread
def register(
    moving,
    fixed,
    *,
    model: str = "affine",
    initial: Transform | None = None,
    landmarks=None,
    working_pixel_size_um: float | None = None,
    msi_image: str | list[float] = "auto",
    channel: str = "auto",
    scale: str = "auto",
    angle_step_deg: float = 10.0,
    allow_mirror: bool = True,
    n_starts: int = 3,
    bspline_grid_um: float | None = None,
    max_tre_um: float | None = None,
    min_dice: float = MIN_DICE,
    start_from_landmarks: bool = False,
    seed: int = 0,
    show_progress: bool = False,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` automatically and report how well it worked.

    Parameters
    ----------
    moving, fixed
        An MSI AnnData (:func:`~spatialfuse.io.read_imzml`), a Visium AnnData
        (:func:`~spatialfuse.io.read_visium`; its H&E, in its full-resolution µm frame), a
        :class:`~spatialfuse.io.HistologyImage`, or a prepared :class:`RegistrationImage`
        (:meth:`RegistrationImage.from_array` makes one of an ion image, a fluorescence channel
        or a mask).
    model
        ``"rigid"``, ``"similarity"``, ``"affine"`` or ``"bspline"`` (affine, then a smooth
        nonrigid field). MSI → H&E affine and nonrigid registrations end with the footprint stage
        (:mod:`spatialfuse.reg._footprint`) where the spectra explain the colour well enough
        (``details["footprint"]`` says whether it ran and why not). Other pairs use a
        regularised SimpleITK B-spline.
    initial
        A moving → fixed transform to start from (e.g. from a few clicked landmarks:
        ``from_landmarks(...).transform``); skips the search. This is the way out where the
        automatic search fails.
    landmarks
        ``(moving_points, fixed_points)`` in µm, to measure the target registration error.
    start_from_landmarks
        Where the automatic search fails, a handful of clicked points fix it: with this, the
        ``landmarks`` (at least 3 pairs) give the start (a similarity through 3, an affine
        through 4 or more; mirrors allowed) instead of the search, and registration refines and
        checks from there. Their error is then a fit residual, not an independent TRE.
    working_pixel_size_um
        Resolution the images are compared at; default: half the MSI pixel (coarser where the
        larger image would then be more than 1,024 working pixels a side, as for an MSI of
        millions of pixels), or the larger image at about 500 px without an MSI. The cost does
        not grow with the H&E's full size, nor beyond that with the MSI's pixel count.
    msi_image, channel
        Which MSI image (``"auto"``, ``"pc1"``, ``"pc2"``, ``"tic"``, ``"tissue_pc1"`` or m/z
        values) and which optical channel (``"auto"``, ``"od"``, ``"gray"``, ``"hematoxylin"``,
        ``"eosin"``). ``"auto"`` picks, per pair, the combination with the most mutual
        information at the best start (``metrics["msi_image"]``, ``metrics["channel"]`` and
        ``metrics["channel_nmi"]`` report the choice).
    scale
        ``"auto"``, ``"given"`` or ``"estimate"``: whether the search estimates a pixel size
        that is missing (``read_histology(..., pixel_size_um="auto")``) or implausible
        (:mod:`spatialfuse.reg._scale`). The transform then maps between the frames as given
        and ``details["estimated_pixel_size"]`` reports the estimate and its uncertainty
        (``metrics["estimated_pixel_size_um"]``: its x value).
    angle_step_deg, allow_mirror, n_starts
        The start search: rotations every ``angle_step_deg``, with and without mirroring; the
        ``n_starts`` best distinct starts are screened and the best one refined.
    bspline_grid_um
        Node spacing of the nonrigid field (default: 8 MSI pixels, or 1/8 of the fixed image).
    max_tre_um, min_dice
        Quality thresholds; a result that misses one has ``ok=False`` and warns.
    seed
        Seeds ITK's metric sampling: the same inputs and seed give the same result.
    show_progress
        Show a progress bar over the stages.

    Returns
    -------
    RegistrationResult
        ``transform`` maps moving µm → fixed µm; ``metrics`` and ``ok`` report quality. The
        checks (:mod:`spatialfuse.reg._checks`) were calibrated on real pairs
        (``docs/failure_detection.md``).
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if start_from_landmarks:
        initial = _landmark_start(landmarks, initial)
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=6, desc="registration", disable=not show_progress, leave=False)

    def step(name: str) -> None:
        bar.update(1)
        bar.set_postfix_str(name)

    step("images")
    msi_files = (_msi_file(moving), _msi_file(fixed))
    _scale.check_mode(scale)  # before the images are built

    def first_look(obj):
        """An MSI's image (its own grid), and the quick image the scale plan looks at."""
        if _is_msi_anndata(obj):
            obj = as_registration_image(obj, working_pixel_size_um=None, msi_image_kind=msi_image)
        return obj, (None if scale == "given" else _probe_image(obj, msi_image))

    (moving, moving_probe), (fixed, fixed_probe) = ordered_map(first_look, (moving, fixed))
    probes = {id(moving): moving_probe, id(fixed): fixed_probe}
    plan = _scale.plan(moving, fixed, scale, lambda obj: probes[id(obj)])
    if plan.side == "moving":
        moving = _scale.rescaled(moving, plan.factor)
    elif plan.side == "fixed":
        fixed = _scale.rescaled(fixed, plan.factor)
    work = _working_pixel_size(moving, fixed, working_pixel_size_um)
    _check_working_grid(
        moving, fixed, work, msi_files if working_pixel_size_um is None else (None, None)
    )
    _check_extents(moving, fixed, work, msi_files)
    mov, fix = ordered_map(
        lambda obj: as_registration_image(
            obj, working_pixel_size_um=work, channel=channel, msi_image_kind=msi_image
        ),
        (moving, fixed),
    )
    linear_model = "affine" if model == "bspline" else model
    problems = [p for p in (_tissue_problem(mov, "moving"), _tissue_problem(fix, "fixed")) if p]
    if problems:
        return _finalise(_failed(mov, fix, model, problems, work, t0), plan)
    mov, fix = _match_footprints(mov, fix)

    step("search")
    if initial is not None:
        start = _in_search_frame(initial, plan)
        starts = [(combined_score(alignment_scores(mov, fix, start)), start, {"given": True})]
    else:
        centred = _initialize.candidates(
            mov,
            fix,
            angle_step_deg=angle_step_deg,
            allow_mirror=allow_mirror,
            scales=_start_scales(mov, fix, plan),
        )
        # Shifting only the best few orientations: shifting 18 let a bladder image sit inside a
        # mouse brain's Visium H&E at a spurious sharp optimum, reported ok (bench_real).
        found = centred + _initialize.shifted(mov, fix, centred, count=2 * n_starts)
        found.sort(key=lambda item: -item[0])
        starts = _initialize.distinct(found, count=n_starts)
        if linear_model == "affine" and _footprint.available(mov, fix):
            # The spectra's model of the colour tells orientations apart where outlines and
            # mutual information barely do (a roundish tissue, a crop): its best start is
            # screened too. Where one tissue shows part of the other, the best shifts of every
            # orientation compete (a quarter crop's right orientation ranked 7th by outline).
            top = found[: 4 * n_starts * (2 if allow_mirror else 1)]
            if _initialize.needs_shifts(mov, fix, centred[0][1]):
                top = top + _initialize.crop_starts(mov, fix, centred)
            by_cost = sorted(
                zip(
                    _footprint.costs(mov, fix, [it[1] for it in top]), range(len(top)), strict=True
                ),
            )
            cheapest = top[by_cost[0][1]]
            seen = {(info["angle"], info["mirror"]) for _, _, info in starts}
            if (cheapest[2]["angle"], cheapest[2]["mirror"]) not in seen:
                starts.append(cheapest)
    initial_scores = alignment_scores(mov, fix, starts[0][1])

    # Screen every start with a short coarse refinement (at most a similarity: with fewer
    # degrees of freedom a rotation error cannot hide behind shear and anisotropic scale).
    step("screening")
    screen_model = "rigid" if linear_model == "rigid" else "similarity"
    tried, screened, optimiser_errors = [], [], []
    for outcome, (_score, _start, info) in zip(
        ordered_map(lambda item: _screen(mov, fix, item[1], screen_model, seed), starts),
        starts,
        strict=True,
    ):
        if isinstance(outcome, str):
            optimiser_errors.append(outcome)
            continue
        rank, transform, scores = outcome
        tried.append({**info, **scores, "score": rank})
        screened.append((rank, transform))
    if not screened:
        errors = "; ".join(sorted(set(optimiser_errors)))
        reason = f"SimpleITK could not optimise any start: {errors}"
        return _finalise(_failed(mov, fix, model, [reason], work, t0), plan)
    screened.sort(key=lambda item: -item[0])

    step("channels")
    mov, fix, channel_table = _choose_channels(mov, fix, screened[0][1], msi_image, channel)

    # Finish the best screened start. Where the spectra model the optical image (MSI →
    # optical), the start with the lowest footprint cost is finished too if it is another one:
    # the cost tells a wrong orientation of a roundish tissue even when mutual information
    # barely does, and after finishing the lowest cost wins. Elsewhere a result that is not a
    # sharp optimum sends the next start to be finished too, and the one that scores better
    # (Dice weighted by mutual information, as in screening) is kept: mutual information
    # alone preferred a mirrored blob on a near-featureless pair (brain A13, bench_real).
    step("refinement")
    footprint = linear_model == "affine" and _footprint.available(mov, fix)
    to_finish = screened[:1]
    if initial is None and footprint and len(screened) > 1:
        costs = _footprint.costs(mov, fix, [item[1] for item in screened])
        cheapest = screened[int(np.argmin(costs))]
        # Only where the spectra explain the colour can the cost tell orientations apart (an
        # unrelated image costs a second finish otherwise: a flagged result took 1.5× as long).
        if cheapest is not screened[0] and min(costs) <= FOOTPRINT_MAX_COST:
            to_finish.append(cheapest)
    elif initial is None:
        to_finish = screened[:FINISH_MAX]
    finished = []

    def finish(item):
        return _finish_start(mov, fix, item[1], linear_model, seed, footprint=footprint)

    try:
        if footprint:  # every start is finished: side by side
            finished = ordered_map(finish, to_finish)
        else:  # the next start only where the last one is not a sharp optimum
            for item in to_finish:
                finished.append(finish(item))
                if not _checks.peak_failures(finished[-1][2]):
                    break
    except RuntimeError as exc:
        reason = f"SimpleITK failed while refining the best start: {_itk_message(exc)}"
        return _finalise(_failed(mov, fix, model, [reason], work, t0), plan)
    # A finished start whose shape no real section takes (stretched or scaled by more than
    # SELECTION_MAX_STRETCH) loses to one that keeps it, whatever their scores: on brain A13 with
    # no pixel sizes, mutual information preferred a fit turned 180° and stretched 1.8× along
    # one axis over the right one (bench_real). Within that bound the score decides.
    plausible = {id(item): _plausible_shape(mov, item[0], plan) for item in finished}
    if footprint:
        best = min(finished, key=lambda item: (not plausible[id(item)], item[3]))
    else:
        best = max(finished, key=lambda item: (plausible[id(item)], combined_score(item[1])))
    transform, scores, profile, cost, footprint_info = best

    step("footprint")
    metrics: dict = {}
    details: dict = {
        "msi_image": (mov if mov.modality == "msi" else fix).extra.get("channel"),
        "channel": (fix if mov.modality == "msi" else mov).extra.get("channel"),
        "channel_nmi": channel_table,
        "scale": "estimated" if plan.estimating else "given",
    }
    if footprint:
        details["footprint"] = footprint_info
        metrics["footprint_cost"] = cost
        metrics.update(_footprint.localisation_metrics(mov, fix, transform))
    if model == "bspline" and details.get("footprint", {}).get("ran"):
        grid = bspline_grid_um or _default_grid(mov, fix)
        transform, field, info = _footprint.refine_nonrigid(mov, fix, transform, grid_um=grid)
        scores = alignment_scores(mov, fix, transform)
        sample = mov.centres_um(mask_only=bool(mov.mask.any()))[::3]
        metrics["min_jacobian"] = (
            1.0 if field is None else float(field.jacobian_determinant(sample).min())
        )
        metrics["bspline_grid_um"] = float(grid)
        metrics["nonrigid_kept"] = bool(info["kept"])
    elif model == "bspline":
        grid = bspline_grid_um or _default_grid(mov, fix)
        warped, residual = refine_bspline(mov, fix, transform, grid_spacing_um=grid, seed=seed)
        sample = fix.centres_um(mask_only=bool(fix.mask.any()))[::3]
        # Folding is a property of the nonrigid part alone (a mirror is not a fold).
        metrics["min_jacobian"] = float(residual.jacobian_determinant(sample).min())
        metrics["bspline_grid_um"] = float(grid)
        transform, scores = warped, alignment_scores(mov, fix, warped)

    metrics.update(
        {
            "nmi_initial": initial_scores["nmi"],
            "nmi_final": scores["nmi"],
            "dice_initial": initial_scores["dice"],
            "dice_final": scores["dice"],
            "fixed_tissue_covered": scores["fixed_tissue_covered"],
            **dict(zip(("scale_min", "scale_max"), _scales(mov, transform), strict=True)),
            "working_pixel_size_um": work,
            "tissue_area_scale": _initialize.area_scale(mov, fix),
            **{k: profile[k] for k in ("nmi_excess", "peak_sharpness", "best_neighbour_gain")},
            **_overlap.overlap_metrics(mov, fix, transform),
        }
    )
    if plan.estimating:
        estimate = _estimated_pixel_size(plan, mov, transform)
        details["estimated_pixel_size"] = estimate
        metrics["estimated_pixel_size_um"] = estimate["value"][0]
        metrics["estimated_pixel_size_relative_uncertainty"] = estimate["relative_uncertainty"]
    if landmarks is not None:
        metrics.update(
            _landmark_errors(_in_given_frame(transform, plan), landmarks, native_pixel_size(moving))
        )
    checks = _verdict.checks(mov, metrics, scores, profile, plan, min_dice, max_tre_um)
    failures = [check.failure for check in checks if not check.passed]
    details["checks"] = [check.as_dict() for check in checks]
    overlap = _partial_overlap(metrics)
    if overlap:
        details["partial_overlap"] = overlap
    metrics["seconds"] = time.perf_counter() - t0
    bar.close()
    result = RegistrationResult(
        transform, metrics, not failures, failures, model, mov, fix, tried, details
    )
    result = _finalise(result, plan)
    if failures:
        warnings.warn(
            f"registration {mov.description} → {fix.description} failed its checks: "
            + "; ".join(failures),
            RegistrationWarning,
            stacklevel=2,
        )
    logger.info("%r", result)
    return result


@one_blas_thread
def assess(
    moving,
    fixed,
    transform: Transform,
    *,
    working_pixel_size_um: float | None = None,
    msi_image: str | list[float] = "auto",
    channel: str = "auto",
    landmarks=None,
    max_tre_um: float | None = None,
    min_dice: float = MIN_DICE,
) -> RegistrationResult:
    """Run :func:`register`'s quality checks on a given transform, without optimising it.

    For a hand alignment, a transform from another tool, or a stored result: the same images,
    channel choice and checks as :func:`register`, so ``ok`` and ``failures`` mean the same.

    Parameters
    ----------
    moving, fixed
        As for :func:`register`.
    transform
        Moving µm → fixed µm, in the frames as given (an input read with
        ``pixel_size_um="auto"`` and no calibration is in its nominal 1 µm frame).
    working_pixel_size_um, msi_image, channel, landmarks, max_tre_um, min_dice
        As for :func:`register`.

    Returns
    -------
    RegistrationResult
        ``transform`` unchanged, with ``metrics``, ``ok`` and ``failures``.
    """
    t0 = time.perf_counter()
    if _is_msi_anndata(moving):
        moving = as_registration_image(moving, working_pixel_size_um=None, msi_image_kind=msi_image)
    if _is_msi_anndata(fixed):
        fixed = as_registration_image(fixed, working_pixel_size_um=None, msi_image_kind=msi_image)
    plan = _scale.ScalePlan(None)
    if _scale._unknown(fixed) or _scale._unknown(moving):
        # Work in a frame where the transform scales by about 1, as register does.
        side = "fixed" if _scale._unknown(fixed) else "moving"
        points = (
            moving.centres_um()[:: max(1, moving.image.size // 200)]
            if isinstance(moving, RegistrationImage)
            else np.zeros((1, 2))
        )
        sigma = float(np.sqrt(np.median(np.abs(transform.jacobian_determinant(points)))))
        factor = 1.0 / sigma if side == "fixed" else sigma
        nominal = _scale.pixel_size_of(fixed if side == "fixed" else moving)
        plan = _scale.ScalePlan(side, factor, "pixel size unknown", nominal)
        if side == "fixed":
            fixed = _scale.rescaled(fixed, factor)
        else:
            moving = _scale.rescaled(moving, factor)
    work = _working_pixel_size(moving, fixed, working_pixel_size_um)
    mov = as_registration_image(
        moving, working_pixel_size_um=work, channel=channel, msi_image_kind=msi_image
    )
    fix = as_registration_image(
        fixed, working_pixel_size_um=work, channel=channel, msi_image_kind=msi_image
    )
    problems = [p for p in (_tissue_problem(mov, "moving"), _tissue_problem(fix, "fixed")) if p]
    if problems:
        return _finalise(_failed(mov, fix, "given", problems, work, t0), plan)
    mov, fix = _match_footprints(mov, fix)
    inner = _in_search_frame(transform, plan)
    mov, fix, channel_table = _choose_channels(mov, fix, inner, msi_image, channel)
    scores = alignment_scores(mov, fix, inner)
    profile = _checks.peak_profile(mov, fix, inner)
    metrics = {
        "nmi_final": scores["nmi"],
        "dice_final": scores["dice"],
        "fixed_tissue_covered": scores["fixed_tissue_covered"],
        **dict(zip(("scale_min", "scale_max"), _scales(mov, inner), strict=True)),
        "working_pixel_size_um": work,
        "tissue_area_scale": _initialize.area_scale(mov, fix),
        **{k: profile[k] for k in ("nmi_excess", "peak_sharpness", "best_neighbour_gain")},
        **_overlap.overlap_metrics(mov, fix, inner),
    }
    if _footprint.available(mov, fix):
        metrics["footprint_cost"] = _footprint.cost(mov, fix, inner)
        metrics.update(_footprint.localisation_metrics(mov, fix, inner))
    if landmarks is not None:
        metrics.update(_landmark_errors(transform, landmarks, native_pixel_size(moving)))
    checks = _verdict.checks(mov, metrics, scores, profile, plan, min_dice, max_tre_um)
    failures = [check.failure for check in checks if not check.passed]
    metrics["seconds"] = time.perf_counter() - t0
    details = {
        "msi_image": (mov if mov.modality == "msi" else fix).extra.get("channel"),
        "channel": (fix if mov.modality == "msi" else mov).extra.get("channel"),
        "channel_nmi": channel_table,
        "checks": [check.as_dict() for check in checks],
    }
    overlap = _partial_overlap(metrics)
    if overlap:
        details["partial_overlap"] = overlap
    result = RegistrationResult(
        inner, metrics, not failures, failures, "given", mov, fix, [], details
    )
    return _finalise(result, plan)


def _landmark_start(landmarks, initial: Transform | None) -> Transform:
    """The start a few clicked landmark pairs give (see ``start_from_landmarks``)."""
    from spatialfuse.reg._landmarks import from_landmarks

    if initial is not None:
        raise ValueError("give either initial= or start_from_landmarks=True, not both")
    if landmarks is None:
        raise ValueError("start_from_landmarks=True needs landmarks=(moving_points, fixed_points)")
    moving_pts, fixed_pts = (as_points(p) for p in landmarks)
    if len(moving_pts) != len(fixed_pts) or len(moving_pts) < 3:
        raise ValueError(
            "start_from_landmarks needs at least 3 landmark pairs, "
            f"got {len(moving_pts)} moving and {len(fixed_pts)} fixed points"
        )
    model = "affine" if len(moving_pts) >= 4 else "similarity"
    return from_landmarks(moving_pts, fixed_pts, model=model).transform


def _is_msi_anndata(obj) -> bool:
    uns = getattr(obj, "uns", None)
    return uns is not None and uns.get("spatialfuse", {}).get("modality") == "msi"


def _probe_image(obj, msi_image) -> RegistrationImage:
    """A quick registration image of ``obj`` (tissue mask in its frame as given)."""
    if isinstance(obj, RegistrationImage):
        return obj
    extent = extent_um(obj) or 1000.0
    return as_registration_image(
        obj, working_pixel_size_um=extent / _scale.PROBE_SIDE_PX, msi_image_kind=msi_image
    )


def _start_scales(mov: RegistrationImage, fix: RegistrationImage, plan) -> list[float]:
    """The scales the start search tries.

    1 where the pixel sizes are trusted (and the tissue-area match where that is plausible), a
    range around the first guess where a pixel size is estimated.
    """
    if plan.estimating:
        base = _initialize.area_scale(mov, fix)
        return sorted({round(base * f, 4) for f in _scale.SEARCH_FACTORS} | {1.0})
    by_area = _initialize.area_scale(mov, fix)
    scales = {1.0}
    if 1 / _verdict.MAX_SCALE <= by_area <= _verdict.MAX_SCALE and abs(by_area - 1) > 0.03:
        scales.add(round(by_area, 4))
    return sorted(scales)


def _choose_channels(mov, fix, transform, msi_image, channel):
    """The (moving, fixed) candidate images with the most mutual information at ``transform``."""
    moving_names = mov.channel_names if _auto(msi_image, mov) else (mov.extra.get("channel"),)
    fixed_names = fix.channel_names if _auto(channel, fix) else (fix.extra.get("channel"),)
    if mov.modality != "msi" and not _auto(channel, mov):
        moving_names = (mov.extra.get("channel"),)
    if fix.modality == "msi" and not _auto(msi_image, fix):
        fixed_names = (fix.extra.get("channel"),)
    table = _checks.channel_table(mov, fix, transform, moving_names, fixed_names)
    best = max(table, key=table.get)
    default = f"{moving_names[0] if mov.extra.get('channel') is None else mov.extra.get('channel')}"
    default += f" × {fix.extra.get('channel')}"
    if default in table and table[best] < CHANNEL_SWITCH_GAIN * table[default]:
        # Mutual information at a start a few degrees off is noisy: a small edge is no reason
        # to leave the default images (a synthetic trio went from 0.1 to 2.5 px off that way).
        best = default
    m_name, f_name = best.split(" × ")
    chosen_m = mov.with_channel(m_name) if m_name != "None" else mov
    chosen_f = fix.with_channel(f_name) if f_name != "None" else fix
    return chosen_m, chosen_f, {k: round(float(v), 5) for k, v in table.items()}


#: Another channel pair replaces the default one only with this much more mutual information.
CHANNEL_SWITCH_GAIN = 1.25


def _auto(choice, img: RegistrationImage) -> bool:
    return isinstance(choice, str) and choice == "auto" and len(img.channel_names) > 1


#: The footprint stage runs where the spectra explain the colour this well at the
#: mutual-information result (share of the colour left unexplained at most this). Right
#: alignments of synthetic trios start at 0.05-0.15 and end at 0.03-0.09; the real bladder pair
#: is at 0.38-0.44, where the fit does not gain (docs/benchmarks.md) and costs 8 s.
FOOTPRINT_MAX_COST = 0.32
#: Most screened starts finished in full (a flagged result costs at most this many finishes,
#: not one per start).
FINISH_MAX = 2


def _footprint_stage(mov, fix, transform, start_cost: float):
    """The footprint fit where the spectra explain the colour; else the MI result, and why."""
    if start_cost > FOOTPRINT_MAX_COST:
        return transform, {
            "ran": False,
            "cost_start": start_cost,
            "cost_final": start_cost,
            "why_not": (
                f"the spectra explain only {100 * (1 - start_cost):.0f} % of the colour "
                f"(the stage needs {100 * (1 - FOOTPRINT_MAX_COST):.0f} %)"
            ),
        }
    refined, info = _footprint.refine_affine(mov, fix, transform)
    return refined, {"ran": True, **info}


def _in_search_frame(transform: Transform, plan) -> Transform:
    """A transform between the frames as given, in the (rescaled) frames of the search."""
    if not plan.estimating:
        return transform
    scaling = AffineTransform.from_params(scale=plan.factor)
    if plan.side == "fixed":
        return compose(scaling, transform)
    return compose(transform, scaling.inverse())


def _in_given_frame(transform: Transform, plan) -> Transform:
    """A transform between the search's frames, between the frames as given."""
    if not plan.estimating:
        return transform
    scaling = AffineTransform.from_params(scale=plan.factor)
    if plan.side == "fixed":
        return compose(scaling.inverse(), transform)
    return compose(transform, scaling)


def _estimated_pixel_size(plan, mov: RegistrationImage, transform: Transform) -> dict:
    """The estimated pixel size of the side ``plan`` names, with its uncertainty."""
    low, high = _scales(mov, transform)
    sigma = float(np.sqrt(low * high))
    nominal = np.asarray(plan.nominal_um or (1.0, 1.0), dtype=np.float64)
    factor = plan.factor / sigma if plan.side == "fixed" else plan.factor * sigma
    value = nominal * factor
    other = "moving" if plan.side == "fixed" else "fixed"
    return {
        "side": plan.side,
        "value": [float(v) for v in value],
        "as_given": [float(v) for v in nominal],
        # Images alone cannot tell which side's pixel size is wrong: if it is the other one,
        # its true pixel size is its given one times this.
        "or_" + other + "_pixel_times": float(nominal[0] / value[0]),
        # Anisotropy cannot be told from a pixel-size error: half the spread of the two scales.
        "relative_uncertainty": float((high - low) / (high + low)),
        "reason": plan.reason,
    }


def _partial_overlap(metrics: dict) -> str | None:
    """A note on partial overlap (not a failure: crops and MSI regions inside tissue are normal)."""
    notes = []
    inside = metrics["moving_tissue_inside"]
    if _verdict.MIN_MOVING_TISSUE_INSIDE <= inside < _verdict.PARTIAL_OVERLAP_NOTE:
        notes.append(
            f"{100 * inside:.0f} % of the moving tissue lies inside the fixed image (the fixed "
            "image shows part of it); the checks judged the overlap only"
        )
    covered = metrics["fixed_tissue_covered"]
    if np.isfinite(covered) and covered < _verdict.PARTIAL_OVERLAP_NOTE:
        notes.append(
            f"the moving image covers {100 * covered:.0f} % of the fixed image's tissue (e.g. an "
            "MSI region inside the section)"
        )
    return "; ".join(notes) or None


def _finalise(result: RegistrationResult, plan) -> RegistrationResult:
    """Express a result found in the search's frames in the frames as given."""
    if not plan.estimating:
        return result
    back = 1.0 / plan.factor
    if plan.side == "fixed":
        result.fixed_image = _scale.rescaled_image(result.fixed_image, back)
    else:
        result.moving_image = _scale.rescaled_image(result.moving_image, back)
    result.transform = _in_given_frame(result.transform, plan)
    return result


#: A registration image whose tissue mask covers less than this fraction has no usable tissue.
MIN_TISSUE_FRACTION = 0.005


def _tissue_problem(image: RegistrationImage, role: str) -> str | None:
    """Why ``image`` cannot be registered (no contrast, no tissue), or None."""
    values = image.image[np.isfinite(image.image)]
    if values.size == 0 or float(values.max() - values.min()) <= 1e-9 * max(1.0, abs(values.max())):
        return f"the {role} image ({image.description}) is uniform: no tissue to register"
    fraction = float(image.mask.mean())
    if fraction < MIN_TISSUE_FRACTION:
        return (
            f"no tissue found in the {role} image ({image.description}): the tissue mask covers "
            f"{100 * fraction:.2f} % of it"
        )
    return None


def _extent_hint(mov: RegistrationImage, fix: RegistrationImage) -> str | None:
    """A pixel-size hint when the two images span very different areas, else None."""
    sizes = [
        max(img.shape[1] * img.pixel_size_um[0], img.shape[0] * img.pixel_size_um[1])
        for img in (mov, fix)
    ]
    ratio = sizes[0] / sizes[1]
    if 1 / EXTENT_RATIO_HINT <= ratio <= EXTENT_RATIO_HINT:
        return None
    return (
        f"the moving image spans {sizes[0]:,.0f} µm and the fixed one {sizes[1]:,.0f} µm: if "
        "both show the same tissue, the pixel size of one is wrong"
    )


#: Stretch (ratio of the two scales) and, with pixel sizes trusted, scale beyond which a finished
#: start is not kept while another stays within: looser than the check's
#: :data:`~spatialfuse.reg._verdict.MAX_SCALE` (1.35), so that starts near the check's limit are
#: ranked by their score (brain A13 with its pixel size given as 45 µm: the right fit stretches
#: 1.38×, a mirrored wrong one 1.04×).
SELECTION_MAX_STRETCH = 1.5


def _plausible_shape(mov: RegistrationImage, transform: Transform, plan) -> bool:
    """Whether ``transform`` stretches (and, with pixel sizes trusted, scales) as a section can."""
    low, high = _scales(mov, transform)
    if high / low > SELECTION_MAX_STRETCH:
        return False
    return plan.estimating or 1 / SELECTION_MAX_STRETCH <= low <= high <= SELECTION_MAX_STRETCH


def _scales(mov: RegistrationImage, transform: Transform) -> tuple[float, float]:
    """Smallest and largest scale of the affine that best fits ``transform`` over the tissue."""
    points = mov.centres_um(mask_only=bool(mov.mask.any()))[::7]
    design = np.column_stack([points, np.ones(len(points))])
    fit, *_ = np.linalg.lstsq(design, transform.apply(points), rcond=None)
    singular = np.linalg.svd(fit[:2].T, compute_uv=False)
    return float(singular.min()), float(singular.max())


def _itk_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _failed(mov, fix, model: str, failures: list[str], work: float, t0: float):
    """A result that says why no registration could be made (identity transform, ok=False)."""
    hint = _extent_hint(mov, fix)
    checks = [QualityCheck.judged("could not register", "", None, "", f, "") for f in failures]
    if hint:
        checks.append(QualityCheck.judged("plausible extents", "", None, "", hint, "pixel_size"))
    failures = [check.failure for check in checks]
    nan = float("nan")
    metrics = {
        "nmi_initial": nan,
        "nmi_final": nan,
        "dice_initial": nan,
        "dice_final": nan,
        "fixed_tissue_covered": nan,
        "working_pixel_size_um": work,
        "seconds": time.perf_counter() - t0,
    }
    details = {"checks": [check.as_dict() for check in checks]}
    result = RegistrationResult(
        AffineTransform.identity(), metrics, False, failures, model, mov, fix, [], details
    )
    warnings.warn(
        f"registration {mov.description} → {fix.description} failed: " + "; ".join(failures),
        RegistrationWarning,
        stacklevel=3,
    )
    logger.info("%r", result)
    return result


#: Powell iterations of the final polish (each a line search along every parameter). 6 (with
#: line searches of at most 10 evaluations) gave the same TRE as 20 (and 30) on every case of
#: bench_registration's affine sweep (8 seeds × 2) and on the real pairs, at a fraction of the
#: cost where the metric is flat (a flagged H&E → Visium case spent 41 s of 52 s polishing).
POLISH_ITERATIONS = 6


def _screen(mov, fix, start, screen_model: str, seed: int):
    """A short coarse refinement of one start: ``(rank, transform, scores)``, or ITK's error.

    A refinement that scores worse than its start (the coarse fit diverged, as small images can
    at the coarsest level) gives the start back.
    """
    try:
        transform = _refine(
            mov, fix, start, screen_model, seed, levels=COARSE_LEVELS, iterations=80
        )
    except RuntimeError as exc:  # SimpleITK reports degenerate geometry this way
        return _itk_message(exc)
    scores = alignment_scores(mov, fix, transform)
    start_scores = alignment_scores(mov, fix, start)
    if combined_score(start_scores) > combined_score(scores):
        return combined_score(start_scores), start, start_scores
    return combined_score(scores), transform, scores


def _finish_start(mov, fix, start, linear_model: str, seed: int, *, footprint: bool):
    """One screened start finished: ``(transform, scores, peak profile, cost, footprint info)``.

    Where the spectra model the colour (``footprint``) the footprint stage ends it, and a result
    it could not improve that stops short of the mutual-information optimum is polished.
    """
    transform, scores = _finish(mov, fix, start, linear_model, seed, polish=not footprint)
    cost, info = None, None
    if footprint:
        transform, info = _footprint_stage(
            mov, fix, transform, _footprint.cost(mov, fix, transform)
        )
        cost = info["cost_final"]
        if info["ran"]:
            scores = alignment_scores(mov, fix, transform)
    profile = _checks.peak_profile(mov, fix, transform)
    if footprint and not info["ran"] and _off_the_optimum(profile):
        # The spectra explain too little of the colour for the footprint stage (the real
        # bladder: 57 %) and the result stops short of the mutual-information optimum it sits
        # near: polish it, as images without spectra are.
        transform, scores = _polish(mov, fix, transform, scores, linear_model, seed)
        cost = _footprint.cost(mov, fix, transform)
        profile = _checks.peak_profile(mov, fix, transform)
    return transform, scores, profile, cost, info


def _finish(mov, fix, start, linear_model: str, seed: int, *, polish: bool = True):
    """Full-resolution refinement of a screened start, then a derivative-free polish.

    A refinement that scores worse than its start (:func:`combined_score`) is not kept: sampled
    mutual information at full resolution can drift to a far, wrong optimum (a benchmark trio went
    from 2 to 17 MSI pixels off, its scale doubled).
    """
    transform = start
    if linear_model == "affine":  # a similarity at full resolution first, then all six parameters
        transform = _refine(
            mov, fix, transform, "similarity", seed, levels=FULL_LEVELS, iterations=200
        )
    transform = _refine(mov, fix, transform, linear_model, seed, levels=FULL_LEVELS, iterations=200)
    # Gradient descent on sampled MI stops short of the optimum; a derivative-free polish gets the
    # last fraction of a pixel, kept only if it scores better.
    scores = alignment_scores(mov, fix, transform)
    start_scores = alignment_scores(mov, fix, start)
    if combined_score(start_scores) > combined_score(scores):
        transform, scores = start, start_scores
    if not polish:
        return transform, scores
    return _polish(mov, fix, transform, scores, linear_model, seed)


def _off_the_optimum(profile: dict) -> bool:
    """Whether a probe next to the result has clearly more mutual information (the gain check)."""
    return profile["best_neighbour_gain"] > _checks.MAX_NEIGHBOUR_GAIN


def _polish(mov, fix, transform, scores, linear_model: str, seed: int):
    """A derivative-free (Powell) polish of ``transform``, kept only if it scores better."""
    polished = _refine(
        mov,
        fix,
        transform,
        linear_model,
        seed,
        levels=FULL_LEVELS,
        iterations=POLISH_ITERATIONS,
        optimizer="powell",
    )
    polished_scores = alignment_scores(mov, fix, polished)
    if combined_score(polished_scores) >= combined_score(scores):
        return polished, polished_scores
    return transform, scores


def _match_footprints(mov: RegistrationImage, fix: RegistrationImage):
    """Blur the finer image to the coarser one's pixel footprint.

    An MSI pixel integrates the tissue over its whole area; comparing it with a sharp H&E makes the
    mutual-information optimum broad and biased. A box of width ``w`` has the standard deviation
    of a Gaussian with ``σ = w / √12``.
    """
    from dataclasses import replace

    from scipy.ndimage import gaussian_filter

    coarse_px = max(max(mov.pixel_size_um), max(fix.pixel_size_um))

    def blurred(img: RegistrationImage) -> RegistrationImage:
        sigma = np.sqrt(max(coarse_px**2 - max(img.pixel_size_um) ** 2, 0.0) / 12.0)
        sigma_px = [sigma / img.pixel_size_um[1], sigma / img.pixel_size_um[0]]
        if max(sigma_px) < 0.25:
            return img
        return replace(img, image=gaussian_filter(img.image, sigma_px).astype(np.float32))

    return blurred(mov), blurred(fix)


def _refine(mov: RegistrationImage, fix: RegistrationImage, start, model: str, seed: int, **kw):
    """Refine a start; mirrored starts run on the flipped moving image, then unflip."""
    if not isinstance(start, AffineTransform):
        return start
    if start.is_mirror:
        flipped, flip = mov.mirrored()
        refined, _ = refine_linear(flipped, fix, compose(start, flip), model=model, seed=seed, **kw)
        return compose(refined, flip)
    refined, _ = refine_linear(mov, fix, start, model=model, seed=seed, **kw)
    return refined


def _default_grid(mov: RegistrationImage, fix: RegistrationImage) -> float:
    if mov.modality == "msi":
        return 8 * max(mov.pixel_size_um)
    if fix.modality == "msi":
        return 8 * max(fix.pixel_size_um)
    extent = max(fix.shape[1] * fix.pixel_size_um[0], fix.shape[0] * fix.pixel_size_um[1])
    return extent / 8
