"""The plain SimpleITK baseline of bench_real.py: what a careful user writes in ~100 lines.

First principal component of the log spectra (or the given moving image) against the optical
density of the optical image, 8 orientations (4 quarter turns × mirror) × 2 signs of the
component, each a moments-centred similarity fit by Mattes mutual information; the best by
metric value is refined as an affine. Nothing here imports spatialfuse's registration code: the
baseline stays independent of the engine it is compared with.
"""

from __future__ import annotations

import numpy as np


def msi_pc1(adata) -> tuple[np.ndarray, tuple[float, float]]:
    """PC1 of log(1 + TIC-normalised spectra) on the MSI grid, and the pixel size (µm)."""
    from scipy import sparse

    x = np.asarray(adata.obs["imzml_x"], dtype=np.int64)
    y = np.asarray(adata.obs["imzml_y"], dtype=np.int64)
    data = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X, dtype=np.float64)
    tic = np.maximum(data.sum(axis=1, keepdims=True), 1e-12)
    logged = np.log1p(data / tic * np.median(tic))
    centred = logged - logged.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    pc1 = centred @ vt[0]
    grid = np.zeros((y.max() - y.min() + 1, x.max() - x.min() + 1))
    grid[y - y.min(), x - x.min()] = pc1 - pc1.min() + 1e-3
    size = tuple(float(v) for v in adata.uns["spatialfuse"]["pixel_size_um"])
    # the grid's pixel (0, 0) is imzML (x.min(), y.min()), whose corner is at (x.min() - 1) * size
    origin = ((x.min() - 1) * size[0], (y.min() - 1) * size[1])
    return grid, size, origin


def optical_density(rgb: np.ndarray, pixel_um: tuple[float, float], target_um: float):
    """Summed optical density, block-averaged to about ``target_um`` per pixel."""
    rgb = rgb[..., :3].astype(np.float64)
    rgb = rgb / (255.0 if rgb.max() <= 255 else 65535.0)
    od = (-np.log(np.clip(rgb, 1 / 255, 1))).sum(axis=2)
    k = max(1, int(target_um // max(pixel_um)))
    rows, cols = od.shape[0] // k * k, od.shape[1] // k * k
    od = od[:rows, :cols].reshape(rows // k, k, cols // k, k).mean(axis=(1, 3))
    return od, (pixel_um[0] * k, pixel_um[1] * k)


def _image(array, spacing, origin=(0.0, 0.0)):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o + 0.5 * s) for o, s in zip(origin, spacing, strict=True)))
    return img


def _method(seed: int):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.25, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=4.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def _to_matrix(tx) -> np.ndarray:
    """A SimpleITK 2-D linear transform (fixed → moving) as a 3×3 matrix."""
    a = np.array(tx.GetMatrix()).reshape(2, 2)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = t + c - a @ c
    return m


def register(moving, moving_spacing, fixed, fixed_spacing, *, moving_origin=(0.0, 0.0), seed=1):
    """Moving µm → fixed µm (3×3) by the baseline recipe; also returns the metric value."""
    import SimpleITK as sitk

    fixed_img = _image(fixed, fixed_spacing)
    width = moving.shape[1] * moving_spacing[0]
    best = None
    for sign in (1.0, -1.0):
        for mirror in (False, True):
            array = sign * (moving[:, ::-1] if mirror else moving)
            moving_img = _image(array, moving_spacing, moving_origin)
            for quarter in range(4):
                init = sitk.CenteredTransformInitializer(
                    fixed_img,
                    moving_img,
                    sitk.Similarity2DTransform(),
                    sitk.CenteredTransformInitializerFilter.MOMENTS,
                )
                init = sitk.Similarity2DTransform(init)
                init.SetAngle(quarter * np.pi / 2)
                method = _method(seed)
                method.SetInitialTransform(init, inPlace=False)
                out = method.Execute(fixed_img, moving_img)
                value = method.GetMetricValue()
                if best is None or value < best[0]:
                    best = (value, out, mirror, moving_img)
    value, similarity, mirror, moving_img = best
    affine = sitk.AffineTransform(2)
    sim = sitk.Similarity2DTransform(sitk.CompositeTransform(similarity).GetNthTransform(0))
    affine.SetMatrix(sim.GetMatrix())
    affine.SetTranslation(sim.GetTranslation())
    affine.SetCenter(sim.GetCenter())
    method = _method(seed)
    method.SetInitialTransform(affine, inPlace=False)
    out = method.Execute(fixed_img, moving_img)
    fixed_to_moving = _to_matrix(sitk.CompositeTransform(out).GetNthTransform(0))
    matrix = np.linalg.inv(fixed_to_moving)
    if mirror:  # the moving array was flipped about the grid's centre line
        centre = moving_origin[0] + width / 2
        flip = np.array([[-1.0, 0.0, 2 * centre], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = matrix @ flip
    return matrix, float(method.GetMetricValue())
