"""Warping a histology image at full resolution, tile by tile, into a pyramidal OME-TIFF.

Registration runs at a working resolution; the aligned full-resolution image is made here without
ever holding a whole level: each strip of output tiles is mapped back through the transform's
inverse, only the source rectangle it needs is read (tiled TIFFs decode only those tiles), and the
strip is written before the next is computed. Reduced levels are warped the same way from the
source level closest in resolution (with an anti-aliasing prefilter where that level is finer),
so the pyramid costs about a third more than level 0.
Peak memory is a few strips (``TILE`` rows × ``BLOCK`` columns and their source rectangles),
whatever the image size; JPEG and PNG sources have no random access and are decoded once, whole.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._logging import progress

if TYPE_CHECKING:
    from spatialfuse.core.transforms import Transform
    from spatialfuse.io import HistologyImage

#: Output columns mapped per call (bounds the source rectangle read for a rotated strip).
BLOCK = 1024


def warp_histology(
    he: HistologyImage,
    transform: Transform,
    path: str | os.PathLike,
    *,
    reference: HistologyImage | None = None,
    output_shape: tuple[int, int] | None = None,
    output_pixel_size_um: float | None = None,
    output_origin_um: tuple[float, float] = (0.0, 0.0),
    order: int = 1,
    fill: int = 255,
    show_progress: bool = False,
) -> Path:
    """Warp a histology image into another frame at full resolution, as a pyramidal OME-TIFF.

    Parameters
    ----------
    he
        The moving image (:func:`spatialfuse.io.read_histology`; pyramidal TIFFs are read tile by
        tile).
    transform
        Moving µm → reference µm (e.g. ``result.transform`` of :func:`register`); nonrigid
        transforms are inverted numerically.
    path
        The ``.ome.tif`` to write (atomically).
    reference
        Take the output grid from this image: its shape and pixel size, origin at its corner (so
        the result overlays it pixel for pixel). Otherwise ``output_shape`` /
        ``output_pixel_size_um`` / ``output_origin_um``, and by default the bounding box of the
        moving image mapped into the reference frame at the moving image's pixel size.
    output_shape, output_pixel_size_um, output_origin_um
        The output grid in the reference frame: ``(rows, cols)``, µm per pixel (square), and the
        µm position of the grid's outer top-left corner.
    order
        Interpolation order (0 nearest, 1 linear).
    fill
        Value of output pixels that map outside the moving image (255: white, as H&E background).
    show_progress
        Show a progress bar over the strips.

    Returns
    -------
    pathlib.Path
        ``path``: a tiled (256 px), zlib-compressed, pyramidal OME-TIFF whose ``PhysicalSizeX/Y``
        is the output pixel size; :func:`spatialfuse.io.read_histology` reads it back in the
        reference frame.
    """
    from spatialfuse.io.export.ome_tiff import TILE, pyramid_shapes, write_pyramidal_ome_tiff

    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order!r}")
    if not 0 <= int(fill) <= 255:
        raise ValueError(f"fill must be a uint8 value, got {fill!r}")
    shape, pixel, origin = _output_grid(
        he, transform, reference, output_shape, output_pixel_size_um, output_origin_um
    )
    shapes = pyramid_shapes(shape)
    inverse = transform.inverse()
    sources = _SourceLevels(he)
    n_strips = sum((s[0] + TILE - 1) // TILE for s in shapes)
    bar = progress(range(n_strips), show=show_progress, desc="warping")
    ticks = iter(bar)

    def tile_rows(level: int, row0: int) -> np.ndarray:
        next(ticks, None)
        scale = shape[1] / shapes[level][1]
        step = pixel * scale
        width = shapes[level][1]
        strip = np.full((TILE, width, he.n_channels), fill, dtype=np.uint8)
        rows = min(TILE, shapes[level][0] - row0)
        # A coarse level sampling a finer source covers more source pixels per output pixel:
        # shrink the blocks so each source read stays about TILE × BLOCK pixels.
        ratio = max(1.0, step / min(sources.he.level_pixel_size_um(sources.level_for(step))))
        block_rows = max(8, int(TILE / ratio))
        block_cols = max(64, int(BLOCK / ratio))
        for r0 in range(0, rows, block_rows):
            n_rows = min(block_rows, rows - r0)
            for col0 in range(0, width, block_cols):
                cols = min(block_cols, width - col0)
                strip[r0 : r0 + n_rows, col0 : col0 + cols] = _warp_block(
                    sources, inverse, origin, step, row0 + r0, col0, n_rows, cols, order, fill
                )
        return strip

    result = write_pyramidal_ome_tiff(
        path,
        tile_rows,
        shapes,
        pixel,
        uuid_text=str(uuid.uuid4()),
        name=f"{Path(he.path).name} warped by spatialfuse",
        channels=he.n_channels,
    )
    if hasattr(bar, "close"):
        bar.close()
    return result


def _output_grid(he, transform, reference, shape, pixel, origin):
    if reference is not None:
        sx, sy = reference.pixel_size_um
        if abs(sx - sy) > 1e-6 * max(sx, sy):
            raise ValueError("the reference image's pixels are not square")
        return tuple(reference.shape), float(sx), (0.0, 0.0)
    pixel = float(pixel if pixel is not None else min(he.pixel_size_um))
    if not pixel > 0:
        raise ValueError(f"output_pixel_size_um must be positive, got {pixel!r}")
    if shape is not None:
        return (int(shape[0]), int(shape[1])), pixel, (float(origin[0]), float(origin[1]))
    w, h = he.extent_um
    t = np.linspace(0.0, 1.0, 65)
    outline = np.concatenate(
        [
            np.column_stack([t * w, np.zeros_like(t)]),
            np.column_stack([t * w, np.full_like(t, h)]),
            np.column_stack([np.zeros_like(t), t * h]),
            np.column_stack([np.full_like(t, w), t * h]),
        ]
    )
    mapped = transform.apply(outline)
    lo, hi = mapped.min(axis=0), mapped.max(axis=0)
    cols, rows = np.ceil((hi - lo) / pixel).astype(int)
    return (int(rows), int(cols)), pixel, (float(lo[0]), float(lo[1]))


class _SourceLevels:
    """Reads source rectangles at the level closest in resolution to what is asked."""

    def __init__(self, he):
        self.he = he
        self.whole: dict[int, np.ndarray] = {}

    def level_for(self, step_um: float) -> int:
        best = 0
        for level in range(self.he.n_levels):
            if max(self.he.level_pixel_size_um(level)) <= step_um * (1 + 1e-9):
                best = level
        return best

    def region(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        if self.he.format in ("jpeg", "png"):  # no random access: decode once
            if level not in self.whole:
                self.whole[level] = self.he.read(level)
            return self.whole[level][y0 : y0 + height, x0 : x0 + width]
        return self.he.read_region(x0, y0, width, height, level=level)


def _warp_block(sources, inverse, origin, step, row0, col0, rows, cols, order, fill):
    from scipy.ndimage import gaussian_filter, map_coordinates

    level = sources.level_for(step)
    sx, sy = sources.he.level_pixel_size_um(level)
    lh, lw = sources.he.level_shapes[level]
    yy, xx = np.mgrid[row0 : row0 + rows, col0 : col0 + cols]
    centres = np.column_stack(
        [origin[0] + (xx.ravel() + 0.5) * step, origin[1] + (yy.ravel() + 0.5) * step]
    )
    source = inverse.apply(centres)
    px = source[:, 0] / sx - 0.5
    py = source[:, 1] / sy - 0.5
    inside = (px >= -0.5) & (px <= lw - 0.5) & (py >= -0.5) & (py <= lh - 0.5)
    inside &= np.isfinite(px) & np.isfinite(py)
    out = np.full((rows * cols, sources.he.n_channels), fill, dtype=np.uint8)
    if inside.any():
        x0 = max(int(np.floor(px[inside].min())) - 1, 0)
        y0 = max(int(np.floor(py[inside].min())) - 1, 0)
        x1 = min(int(np.ceil(px[inside].max())) + 2, lw)
        y1 = min(int(np.ceil(py[inside].max())) + 2, lh)
        patch = sources.region(level, x0, y0, x1 - x0, y1 - y0)
        coords = np.vstack([py[inside] - y0, px[inside] - x0])
        # Sampling a finer source at a coarser step aliases fine texture; a Gaussian of half the
        # step (in source pixels) first is the usual anti-aliasing prefilter.
        sigma = 0.5 * step / min(sx, sy)
        for c in range(sources.he.n_channels):
            channel = patch[..., c].astype(np.float32)
            if sigma >= 0.75:
                channel = gaussian_filter(channel, sigma, mode="nearest")
            # "nearest" extends the edge pixels over their outer half (a pixel covers
            # [i - ½, i + ½]); points beyond that were excluded above.
            values = map_coordinates(channel, coords, order=order, mode="nearest")
            out[inside, c] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return out.reshape(rows, cols, -1)
