"""SimpleITK refinement. The only module that touches ITK's convention.

ITK registration optimises a transform from *fixed* physical points to *moving* ones (the direction
in which it resamples). spatialfuse's transforms map moving → fixed. Conversions happen here and
nowhere else: :func:`to_itk` inverts our moving → fixed affine into ITK's fixed → moving one, and
:func:`from_itk` inverts back.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from spatialfuse.core.transforms import (
    AffineTransform,
    DisplacementField,
    InverseTransform,
    compose,
)
from spatialfuse.reg._images import RegistrationImage

_ITK_MODELS = ("rigid", "similarity", "affine")


def to_itk(transform: AffineTransform, *, model: str, center):
    """ITK transform (fixed → moving) equal to the inverse of ``transform`` (moving → fixed)."""
    import SimpleITK as sitk

    m = np.linalg.inv(transform.matrix)  # fixed -> moving
    a, b = m[:2, :2], m[:2, 2]
    c = np.asarray(center, dtype=np.float64)
    translation = b + a @ c - c  # ITK: T(x) = A (x - c) + c + t
    if model == "affine":
        itk = sitk.AffineTransform(2)
        itk.SetMatrix(tuple(a.ravel()))
    elif model == "similarity":
        itk = sitk.Similarity2DTransform()
        scale = float(np.sqrt(abs(np.linalg.det(a))))
        itk.SetScale(scale)
        itk.SetAngle(float(np.arctan2(a[1, 0], a[0, 0])))
    elif model == "rigid":
        itk = sitk.Euler2DTransform()
        itk.SetAngle(float(np.arctan2(a[1, 0], a[0, 0])))
    else:
        raise ValueError(f"model must be one of {_ITK_MODELS}, got {model!r}")
    itk.SetCenter(tuple(float(v) for v in c))
    itk.SetTranslation(tuple(float(v) for v in translation))
    return itk


def from_itk(itk, *, model: str) -> AffineTransform:
    """Our moving → fixed affine from an ITK fixed → moving linear transform."""
    a = np.asarray(itk.GetMatrix(), dtype=np.float64).reshape(2, 2)
    c = np.asarray(itk.GetCenter(), dtype=np.float64)
    t = np.asarray(itk.GetTranslation(), dtype=np.float64)
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = c + t - a @ c
    return AffineTransform(np.linalg.inv(m), model=model)


_THREADS_LOCK = threading.Lock()
_THREADS_USERS = 0
_THREADS_BEFORE = 0


@contextlib.contextmanager
def _single_threaded():
    """Run ITK with one thread.

    Its threaded metric sums in a varying order, which makes results differ from run to run
    (1e-7 relative, growing through the optimiser); the same inputs and seed must give the same
    transform. Refinements may run at once on several Python threads (``reg/_threads.py``):
    the first to enter sets ITK's global default and the last to leave restores it.
    """
    import SimpleITK as sitk

    global _THREADS_USERS, _THREADS_BEFORE
    with _THREADS_LOCK:
        if _THREADS_USERS == 0:
            _THREADS_BEFORE = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _THREADS_USERS += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_USERS -= 1
            if _THREADS_USERS == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_THREADS_BEFORE)


def itk_seed(seed: int) -> int:
    """Our seed as ITK's: ITK reads 0 as "seed from the clock", so every seed is shifted by one."""
    return 1 + int(seed) % (2**31 - 2)


#: Most fixed-image samples the final stage and polish use (all pixels below this).
FINAL_SAMPLES = 60_000

#: Most evaluations of one line search of the Powell polish.
POWELL_LINE_ITERATIONS = 10

#: Most L-BFGS-B iterations of the B-spline refinement.
BSPLINE_ITERATIONS = 100

#: (shrink factor, smoothing sigma in pixels) per pyramid level.
FULL_LEVELS = ((2, 1.0), (1, 0.0))
COARSE_LEVELS = ((4, 2.0), (2, 1.0))


def _method(seed: int, *, levels=FULL_LEVELS, bins: int = 32, sampling: float | None = 0.3):
    """A Mattes-MI registration method; ``sampling=None`` uses every fixed pixel (no noise)."""
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(1)  # see _single_threaded
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    if sampling is None:
        method.SetMetricSamplingStrategy(method.NONE)
    else:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(sampling, itk_seed(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel([shrink for shrink, _ in levels])
    method.SetSmoothingSigmasPerLevel([sigma for _, sigma in levels])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def refine_linear(
    moving: RegistrationImage,
    fixed: RegistrationImage,
    start: AffineTransform,
    *,
    model: str,
    seed: int = 0,
    iterations: int = 200,
    levels=FULL_LEVELS,
    optimizer: str = "gradient",
) -> tuple[AffineTransform, float]:
    """Refine ``start`` (moving → fixed) by Mattes mutual information.

    Returns the transform and the final metric value (lower is better in ITK's convention).
    """
    import SimpleITK as sitk

    if start.is_mirror:
        raise ValueError(
            "refine_linear needs an orientation-preserving start; flip the image first"
        )
    fixed_itk, moving_itk = fixed.to_sitk(), moving.to_sitk()
    centre = fixed.centres_um(mask_only=bool(fixed.mask.any())).mean(axis=0)
    # The final (full-resolution) stage samples every pixel of small images (random sampling
    # makes the optimiser stop short of the optimum), at most FINAL_SAMPLES of large ones.
    n_pixels = fixed.shape[0] * fixed.shape[1]
    if levels != FULL_LEVELS:
        sampling = 0.3
    else:
        sampling = None if n_pixels <= FINAL_SAMPLES else FINAL_SAMPLES / n_pixels
    method = _method(seed, levels=levels, sampling=sampling)
    # With physical-shift scales a unit step moves points by about 1 µm: start with steps of a
    # few fixed pixels when screening (starts are up to half an angle step off), about half a
    # pixel when polishing, and stop at a thousandth of a pixel.
    pixel = float(min(fixed.pixel_size_um))
    coarse = levels != FULL_LEVELS
    if optimizer == "powell":
        method.SetOptimizerAsPowell(
            numberOfIterations=iterations,
            maximumLineIterations=POWELL_LINE_ITERATIONS,
            stepLength=0.5 * pixel,
            stepTolerance=1e-3 * pixel,
            valueTolerance=1e-7,
        )
    else:
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=(4.0 if coarse else 0.5) * pixel,
            minStep=1e-3 * pixel,
            numberOfIterations=iterations,
            relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-9,
        )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(to_itk(start, model=model, center=centre), inPlace=False)
    with _single_threaded():
        result = method.Execute(fixed_itk, moving_itk)
    if result.GetName() == "CompositeTransform":
        result = sitk.CompositeTransform(result).GetNthTransform(0)
    kind = {
        "rigid": sitk.Euler2DTransform,
        "similarity": sitk.Similarity2DTransform,
        "affine": sitk.AffineTransform,
    }[model]
    linear = kind(result)
    return from_itk(linear, model=model), float(method.GetMetricValue())


def refine_bspline(
    moving: RegistrationImage,
    fixed: RegistrationImage,
    affine: AffineTransform,
    *,
    grid_spacing_um: float,
    seed: int = 0,
):
    """A B-spline refinement on top of ``affine`` (moving → fixed).

    ITK optimises ``B`` (fixed → fixed, near identity) with ``fixed → moving = A⁻¹ ∘ B``; the
    result, moving → fixed, is ``B⁻¹ ∘ A``. ``B`` is stored as a :class:`DisplacementField` sampled
    on the fixed grid (every two fixed pixels, at least a quarter of the control-point spacing)
    and inverted numerically. L-BFGS-B runs at most :data:`BSPLINE_ITERATIONS` iterations.
    """
    import SimpleITK as sitk

    fixed_itk, moving_itk = fixed.to_sitk(), moving.to_sitk()
    extent = np.array(fixed_itk.GetSize()) * np.array(fixed_itk.GetSpacing())
    mesh = [max(1, round(float(e) / grid_spacing_um)) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed_itk, mesh, order=3)
    centre = fixed.centres_um().mean(axis=0)
    method = _method(seed)
    method.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-6,
        numberOfIterations=BSPLINE_ITERATIONS,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=4 * BSPLINE_ITERATIONS,
        costFunctionConvergenceFactor=1e9,
    )
    method.SetMovingInitialTransform(to_itk(affine, model="affine", center=centre))
    method.SetInitialTransform(bspline, inPlace=True)
    with _single_threaded():
        method.Execute(fixed_itk, moving_itk)

    spacing = max(min(fixed.pixel_size_um) * 2, grid_spacing_um / 4)
    origin = np.asarray(fixed.origin_um, dtype=np.float64)
    cols = int(np.ceil(extent[0] / spacing)) + 1
    rows = int(np.ceil(extent[1] / spacing)) + 1
    yy, xx = np.mgrid[0:rows, 0:cols]
    nodes = np.stack([origin[0] + xx.ravel() * spacing, origin[1] + yy.ravel() * spacing], axis=1)
    moved = np.array([bspline.TransformPoint(tuple(p)) for p in nodes])
    field = (moved - nodes).reshape(rows, cols, 2)
    residual = DisplacementField(field, origin_um=tuple(origin), spacing_um=(spacing, spacing))
    return compose(InverseTransform(residual), affine), residual
