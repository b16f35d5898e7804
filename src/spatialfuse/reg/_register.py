"""``sf.reg.register``: automatic registration between modalities, with measured quality."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from spatialfuse._logging import logger, progress
from spatialfuse.errors import SpatialfuseWarning
from spatialfuse.reg import _footprint, _initialize
from spatialfuse.reg._images import (
    RegistrationImage,
    as_registration_image,
    extent_um,
    native_pixel_size,
)
from spatialfuse.reg._itk import COARSE_LEVELS, FULL_LEVELS, refine_bspline, refine_linear
from spatialfuse.reg._similarity import alignment_scores, combined_score
from spatialfuse.reg._transform import AffineTransform, Transform, as_points, compose

MODELS = ("rigid", "similarity", "affine", "bspline")

#: Below this Dice of the tissue masks a registration is reported as failed.
MIN_DICE = 0.75
#: Least NMI gain from the best start to the result of an automatic registration.
MIN_NMI_GAIN = 0.005
#: Largest working image side (pixels) when no MSI sets the working resolution.
WORKING_SIDE_PX = 500
#: Both frames are in µm, so a right registration scales by about 1; beyond this factor (either
#: way, along either axis) a pixel size is wrong. Real sections stretch by up to ~22 %.
MAX_SCALE = 1.35
#: Least fraction of the moving tissue that must land inside the fixed image.
MIN_MOVING_TISSUE_INSIDE = 0.9
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
        the fixed image), ``localisation`` (MSI → H&E: how much the footprint stage's cost
        rises when the result is moved by 50 µm; about 1 means nothing pins the alignment
        down, as when the images show different tissues), ``min_jacobian`` (nonrigid: < 0 means
        folding), with landmarks ``tre_um_median``/``tre_um_max``/``tre_px_median`` (in moving
        pixels, for MSI: MSI pixels), ``seconds``.
    ok
        Whether every quality check passed; ``failures`` says which did not.
    moving_image, fixed_image
        The registration images that were aligned (for plots).
    candidates
        The initial candidates that were refined, with their scores.
    """

    transform: Transform
    metrics: dict
    ok: bool
    failures: list[str]
    model: str
    moving_image: RegistrationImage
    fixed_image: RegistrationImage
    candidates: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        m = self.metrics
        status = "ok" if self.ok else "FAILED (" + "; ".join(self.failures) + ")"
        tre = f", TRE {m['tre_um_median']:.1f} µm" if "tre_um_median" in m else ""
        return (
            f"RegistrationResult({self.model}, {status}: Dice {m['dice_final']:.3f}, "
            f"NMI {m['nmi_initial']:.3f} → {m['nmi_final']:.3f}{tre}, {m['seconds']:.1f} s)"
        )


def _working_pixel_size(moving, fixed, requested: float | None) -> float:
    if requested is not None:
        if not requested > 0:
            raise ValueError(f"working_pixel_size_um must be positive, got {requested!r}")
        return float(requested)
    msi = [s for s in (native_pixel_size(moving), native_pixel_size(fixed)) if s]
    if msi:
        return min(msi) / 2.0
    extents = [e for e in (extent_um(moving), extent_um(fixed)) if e]
    return max(extents) / WORKING_SIDE_PX if extents else 10.0


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


def register(
    moving,
    fixed,
    *,
    model: str = "affine",
    initial: Transform | None = None,
    landmarks=None,
    working_pixel_size_um: float | None = None,
    msi_image: str | list[float] = "auto",
    channel: str = "od",
    angle_step_deg: float = 10.0,
    allow_mirror: bool = True,
    n_starts: int = 3,
    bspline_grid_um: float | None = None,
    max_tre_um: float | None = None,
    min_dice: float = MIN_DICE,
    seed: int = 0,
    show_progress: bool = False,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` automatically and report how well it worked.

    Parameters
    ----------
    moving, fixed
        An MSI AnnData (:func:`~spatialfuse.io.read_imzml`), a Visium AnnData
        (:func:`~spatialfuse.io.read_visium`; its H&E, in its full-resolution µm frame), a
        :class:`~spatialfuse.io.HistologyImage`, or a prepared :class:`RegistrationImage`.
    model
        ``"rigid"``, ``"similarity"``, ``"affine"`` or ``"bspline"`` (affine, then a smooth
        nonrigid field). MSI → H&E affine and nonrigid registrations end with the footprint stage
        (:mod:`spatialfuse.reg._footprint`): the H&E averaged over each MSI pixel's footprint is
        fitted against the spectra. Its nonrigid field is kept only if it lowers the cost on
        held-out pixels (otherwise the result is the affine one, ``metrics["nonrigid_kept"]``
        says which); on the synthetic benchmark it takes back part of a one-pixel warp, not all
        of it (see ``docs/benchmarks.md``). Other pairs use a regularised SimpleITK B-spline.
    initial
        A moving → fixed transform to start from (e.g. from landmarks); skips the search.
    landmarks
        ``(moving_points, fixed_points)`` in µm, to measure the target registration error.
    working_pixel_size_um
        Resolution the images are compared at; default: half the MSI pixel, or the larger image
        at about 500 px. The cost does not grow with the H&E's full size.
    msi_image, channel
        Which MSI image (``"auto"``, ``"pc1"``, ``"pc2"``, ``"tic"`` or m/z values) and which
        H&E channel (``"od"``, ``"hematoxylin"``, ``"gray"``) to register.
    angle_step_deg, allow_mirror, n_starts
        The start search: rotations every ``angle_step_deg``, with and without mirroring; the
        ``n_starts`` best distinct starts are refined and the best result kept.
    bspline_grid_um
        Node spacing of the nonrigid field (default: 8 MSI pixels, or 1/8 of the fixed image).
    max_tre_um, min_dice
        Quality thresholds; a result that misses one has ``ok=False`` and warns.
    seed
        Seeds ITK's metric sampling: the same inputs and seed give the same result.
    show_progress
        Show a progress bar over the refined starts.

    Returns
    -------
    RegistrationResult
        ``transform`` maps moving µm → fixed µm; ``metrics`` and ``ok`` report quality.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    t0 = time.perf_counter()
    work = _working_pixel_size(moving, fixed, working_pixel_size_um)
    mov = as_registration_image(
        moving, working_pixel_size_um=work, channel=channel, msi_image_kind=msi_image
    )
    fix = as_registration_image(
        fixed, working_pixel_size_um=work, channel=channel, msi_image_kind=msi_image
    )
    linear_model = "affine" if model == "bspline" else model
    problems = [p for p in (_tissue_problem(mov, "moving"), _tissue_problem(fix, "fixed")) if p]
    if problems:
        return _failed(mov, fix, model, problems, work, t0)
    mov, fix = _match_footprints(mov, fix)

    if initial is not None:
        starts = [(combined_score(alignment_scores(mov, fix, initial)), initial, {"given": True})]
    else:
        found = _initialize.candidates(
            mov, fix, angle_step_deg=angle_step_deg, allow_mirror=allow_mirror
        )
        starts = _initialize.distinct(found, count=n_starts)
    initial_scores = alignment_scores(mov, fix, starts[0][1])

    # Screen every start with a short coarse refinement, then refine the best one fully.
    tried = []
    screened = []
    # Screening uses at most a similarity (rotation, scale, translation): with fewer degrees of
    # freedom a rotation error cannot hide behind shear and anisotropic scale.
    screen_model = "rigid" if linear_model == "rigid" else "similarity"
    optimiser_errors = []
    for _score, start, info in progress(starts, show=show_progress, desc="registration"):
        try:
            transform = _refine(
                mov, fix, start, screen_model, seed, levels=COARSE_LEVELS, iterations=80
            )
        except RuntimeError as exc:  # SimpleITK reports degenerate geometry this way
            optimiser_errors.append(_itk_message(exc))
            continue
        scores = alignment_scores(mov, fix, transform)
        rank = combined_score(scores)
        tried.append({**info, **scores, "score": rank})
        screened.append((rank, transform))
    if not screened:
        errors = "; ".join(sorted(set(optimiser_errors)))
        reason = f"SimpleITK could not optimise any start: {errors}"
        return _failed(mov, fix, model, [reason], work, t0)
    screened.sort(key=lambda item: -item[0])

    # Finish the best screened start; if it did not gain information (a wrong orientation of a
    # roundish tissue), finish the next ones and keep the first that does.
    try:
        # With the footprint stage to come, the derivative-free polish is not needed.
        polish = not (linear_model == "affine" and _footprint.available(mov, fix))
        transform, scores = _finish(mov, fix, screened[0][1], linear_model, seed, polish=polish)
        if initial is None:
            for _rank, other in screened[1:]:
                if scores["nmi"] >= initial_scores["nmi"] + MIN_NMI_GAIN:
                    break
                candidate, candidate_scores = _finish(
                    mov, fix, other, linear_model, seed, polish=polish
                )
                if candidate_scores["nmi"] > scores["nmi"]:
                    transform, scores = candidate, candidate_scores
    except RuntimeError as exc:
        reason = f"SimpleITK failed while refining the best start: {_itk_message(exc)}"
        return _failed(mov, fix, model, [reason], work, t0)

    metrics: dict = {}
    if linear_model == "affine" and _footprint.available(mov, fix):
        # The last fraction of a pixel: fit the MSI's own forward model (see _footprint).
        transform, info = _footprint.refine_affine(mov, fix, transform)
        if initial is None and info["cost_final"] > _footprint.SUSPECT_COST:
            # The spectra explain the colour poorly: perhaps a wrong orientation that gained
            # information anyway. Finish the other starts; the lowest footprint cost wins.
            for _rank, other in screened[1:]:
                try:
                    candidate, _ = _finish(mov, fix, other, linear_model, seed, polish=False)
                except RuntimeError:
                    continue
                candidate, other_info = _footprint.refine_affine(mov, fix, candidate)
                if other_info["cost_final"] < info["cost_final"]:
                    transform, info = candidate, other_info
        scores = alignment_scores(mov, fix, transform)
        metrics["footprint_cost"] = info["cost_final"]
    if model == "bspline" and _footprint.available(mov, fix):
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
        warped_scores = alignment_scores(mov, fix, warped)
        sample = fix.centres_um(mask_only=bool(fix.mask.any()))[::3]
        # Folding is a property of the nonrigid part alone (a mirror is not a fold).
        metrics["min_jacobian"] = float(residual.jacobian_determinant(sample).min())
        metrics["bspline_grid_um"] = float(grid)
        transform, scores = warped, warped_scores

    metrics.update(
        {
            "nmi_initial": initial_scores["nmi"],
            "nmi_final": scores["nmi"],
            "dice_initial": initial_scores["dice"],
            "dice_final": scores["dice"],
            "fixed_tissue_covered": scores["fixed_tissue_covered"],
            "moving_tissue_inside": _moving_tissue_inside(mov, fix, transform),
            **dict(zip(("scale_min", "scale_max"), _scales(mov, transform), strict=True)),
            "working_pixel_size_um": work,
        }
    )
    if _footprint.available(mov, fix):
        metrics["localisation"] = _footprint.localisation(mov, fix, transform)
    if landmarks is not None:
        metrics.update(_landmark_errors(transform, landmarks, native_pixel_size(moving)))
    metrics["seconds"] = time.perf_counter() - t0

    failures = []
    if scores["dice"] < min_dice:
        failures.append(f"tissue masks overlap poorly (Dice {scores['dice']:.2f} < {min_dice})")
    if scores["nmi"] <= 1.0 + 1e-3:
        failures.append("no mutual information between the aligned images")
    elif (
        initial is None
        and scores["nmi"] < initial_scores["nmi"] + MIN_NMI_GAIN
        and metrics.get("footprint_cost", np.inf) > _footprint.SUSPECT_COST
    ):
        # Refinement from a right start always gains information; a start that loses it was the
        # wrong orientation of a roundish tissue, which Dice alone cannot tell. Where the
        # footprint stage ran, its cost tells directly (a start close to right gains little NMI).
        failures.append(
            f"refinement did not increase mutual information (NMI {initial_scores['nmi']:.3f} → "
            f"{scores['nmi']:.3f}); the orientation is probably wrong"
        )
    low, high = metrics["scale_min"], metrics["scale_max"]
    if high > MAX_SCALE or low < 1 / MAX_SCALE:
        failures.append(
            f"the registration scales the moving image by {low:.2f}–{high:.2f} (about 1 expected: "
            "both frames are in µm); a pixel size is probably wrong — check the pixel_size_um "
            "of both images (pass pixel_size_um= to the reader) — or the two images do not show "
            "the same tissue"
        )
    if metrics["moving_tissue_inside"] < MIN_MOVING_TISSUE_INSIDE:
        failures.append(
            f"only {100 * metrics['moving_tissue_inside']:.0f} % of the moving tissue lands inside "
            "the fixed image: the fixed image shows part of the tissue (a crop?) — register "
            "against an image of the whole section"
        )
    least = _footprint.least_localisation(metrics.get("footprint_cost"))
    if metrics.get("localisation", np.inf) < least:
        unexplained = metrics.get("footprint_cost")
        failures.append(
            "the spectra do not pin the alignment down: moving it by "
            f"{max(_footprint.LOCALISATION_SHIFT_UM, *mov.pixel_size_um):g} µm raises "
            f"the colour they cannot explain only {metrics['localisation']:.2f}× (at least "
            f"{least:g}× expected"
            + ("" if unexplained is None else f" where {100 * unexplained:.0f} % is unexplained")
            + "); the images probably show different tissues or sections"
        )
    if metrics.get("min_jacobian", 1.0) <= 0:
        failures.append(f"the nonrigid map folds (min Jacobian {metrics['min_jacobian']:.2f})")
    if max_tre_um is not None and metrics.get("tre_um_median", 0.0) > max_tre_um:
        failures.append(
            f"landmark error too large (median {metrics['tre_um_median']:.1f} µm > {max_tre_um})"
        )
    result = RegistrationResult(transform, metrics, not failures, failures, model, mov, fix, tried)
    if failures:
        warnings.warn(
            f"registration {mov.description} → {fix.description} failed its checks: "
            + "; ".join(failures),
            RegistrationWarning,
            stacklevel=2,
        )
    logger.info("%r", result)
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
        "both show the same tissue, the pixel size of one is wrong (pass pixel_size_um= to "
        "the reader)"
    )


def _scales(mov: RegistrationImage, transform: Transform) -> tuple[float, float]:
    """Smallest and largest scale of the affine that best fits ``transform`` over the tissue."""
    points = mov.centres_um(mask_only=bool(mov.mask.any()))[::7]
    design = np.column_stack([points, np.ones(len(points))])
    fit, *_ = np.linalg.lstsq(design, transform.apply(points), rcond=None)
    singular = np.linalg.svd(fit[:2].T, compute_uv=False)
    return float(singular.min()), float(singular.max())


def _moving_tissue_inside(
    mov: RegistrationImage, fix: RegistrationImage, transform: Transform
) -> float:
    """Fraction of the moving tissue mask that ``transform`` puts inside the fixed image."""
    points = transform.apply(mov.centres_um(mask_only=True))
    if len(points) == 0:
        return float("nan")
    low = np.asarray(fix.origin_um)
    high = low + np.array(
        [fix.shape[1] * fix.pixel_size_um[0], fix.shape[0] * fix.pixel_size_um[1]]
    )
    return float(np.all((points >= low) & (points <= high), axis=1).mean())


def _itk_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _failed(mov, fix, model: str, failures: list[str], work: float, t0: float):
    """A result that says why no registration could be made (identity transform, ok=False)."""
    hint = _extent_hint(mov, fix)
    failures = list(failures) + ([hint] if hint else [])
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
    result = RegistrationResult(
        AffineTransform.identity(), metrics, False, failures, model, mov, fix, []
    )
    warnings.warn(
        f"registration {mov.description} → {fix.description} failed: " + "; ".join(failures),
        RegistrationWarning,
        stacklevel=3,
    )
    logger.info("%r", result)
    return result


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
    polished = _refine(
        mov,
        fix,
        transform,
        linear_model,
        seed,
        levels=FULL_LEVELS,
        iterations=20,
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
