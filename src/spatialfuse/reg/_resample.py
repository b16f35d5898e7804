"""Resample an image from one micrometre frame into another through a :class:`Transform`."""

from __future__ import annotations

import numpy as np

from spatialfuse.core.transforms import Transform


def pixel_centres_um(shape, pixel_size_um, origin_um=(0.0, 0.0)) -> np.ndarray:
    """``(rows·cols, 2)`` µm positions of the centres of an image's pixels, row-major.

    Pixel ``(col, row)`` has its centre at ``origin + ((col + ½)·sx, (row + ½)·sy)``
    (``docs/coordinates.md``).

    Returns
    -------
    numpy.ndarray
        ``(rows·cols, 2)`` float64 ``(x, y)`` in µm.
    """
    rows, cols = int(shape[0]), int(shape[1])
    sx, sy = np.broadcast_to(np.asarray(pixel_size_um, dtype=np.float64), (2,))
    yy, xx = np.mgrid[0:rows, 0:cols]
    return np.stack(
        [origin_um[0] + (xx.ravel() + 0.5) * sx, origin_um[1] + (yy.ravel() + 0.5) * sy], axis=1
    )


def resample(
    image: np.ndarray,
    transform: Transform,
    *,
    pixel_size_um,
    output_shape: tuple[int, int],
    output_pixel_size_um,
    output_origin_um=(0.0, 0.0),
    order: int = 1,
    fill: float = 0.0,
) -> np.ndarray:
    """Draw ``image`` (in the moving frame) on a grid of the reference frame.

    Parameters
    ----------
    image
        ``(rows, cols)`` or ``(rows, cols, channels)`` array in the moving frame, whose pixel
        ``(0, 0)`` covers ``[0, sx] × [0, sy]`` µm.
    transform
        Moving → reference map; its inverse (exact or numeric) finds where each output pixel
        comes from.
    pixel_size_um
        ``s`` or ``(sx, sy)`` of ``image``.
    output_shape, output_pixel_size_um, output_origin_um
        The reference-frame grid to fill.
    order
        Spline order of the interpolation (0 nearest, 1 linear, 3 cubic).
    fill
        Value outside the moving image.

    Returns
    -------
    numpy.ndarray
        Array of ``output_shape`` (plus channels), dtype float64 (or the input dtype for
        ``order=0``).
    """
    from scipy.ndimage import map_coordinates

    image = np.asarray(image)
    centres = pixel_centres_um(output_shape, output_pixel_size_um, output_origin_um)
    source = transform.inverse().apply(centres)
    sx, sy = np.broadcast_to(np.asarray(pixel_size_um, dtype=np.float64), (2,))
    coords = np.vstack([source[:, 1] / sy - 0.5, source[:, 0] / sx - 0.5])
    channels = image[..., None] if image.ndim == 2 else image
    dtype = image.dtype if order == 0 else np.float64
    out = np.empty((len(centres), channels.shape[2]), dtype=dtype)
    for c in range(channels.shape[2]):
        out[:, c] = map_coordinates(
            channels[..., c].astype(np.float64, copy=False) if order else channels[..., c],
            coords,
            order=order,
            mode="constant",
            cval=fill,
        )
    out = out.reshape(*output_shape, channels.shape[2])
    return out[..., 0] if image.ndim == 2 else out
