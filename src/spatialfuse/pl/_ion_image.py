"""An ion image on its own MSI grid, or resampled onto the H&E through a registration."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse.pl._common import finish, new_axes, one_axes_plot

if TYPE_CHECKING:
    import anndata
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from spatialfuse.io.histology import HistologyImage
    from spatialfuse.reg import Transform


@one_axes_plot
def ion_image(
    msi: anndata.AnnData,
    mz: float | str,
    *,
    he: HistologyImage | None = None,
    transform: Transform | None = None,
    ppm: float | None = None,
    tol: float | None = None,
    layer: str | None = None,
    max_size: int = 1024,
    cmap: str | None = None,
    alpha: float = 0.75,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
    save: str | os.PathLike | None = None,
) -> Figure:
    """Draw the image of one ion, on its own grid or over the H&E, with axes in µm.

    Without ``he`` each spectrum is one pixel of the MSI raster (the pixel at 1-based grid
    position ``(x, y)`` covers ``[(x − 1)·px, x·px] × [(y − 1)·py, y·py]`` µm, see
    ``docs/coordinates.md``); pixels without a spectrum are blank. With ``he`` and ``transform``
    the ion image is resampled (nearest pixel, so every drawn value is a measured one) onto the
    grid of a reduced copy of the H&E (:meth:`~spatialfuse.io.HistologyImage.downsampled`) with
    :func:`spatialfuse.reg.resample`, which follows affine and nonrigid transforms alike, and
    drawn over it in the H&E's µm. squidpy's ``spatial_scatter`` is not used here: it draws
    axis-aligned squares at pixel centres, which misplaces the pixels of a rotated, sheared or
    warped MSI grid.

    Parameters
    ----------
    msi
        MSI pixels × m/z as read by :func:`spatialfuse.io.read_imzml` (``obs["imzml_x"]``,
        ``obs["imzml_y"]``, ``uns["spatialfuse"]["pixel_size_um"]``).
    mz
        An m/z value (the feature with the nearest ``var["mz"]`` within ``ppm`` / ``tol`` is
        drawn) or a feature name (``"mz-760.5851"``).
    he
        A :class:`~spatialfuse.io.HistologyImage` (:func:`spatialfuse.io.read_histology`) to draw
        under the ion image.
    transform
        MSI µm → H&E µm (e.g. ``sf.reg.register(msi, he).transform``); required with ``he``.
    ppm, tol
        Matching window for a numeric ``mz``: ± ``ppm`` (default 10) or ± ``tol`` m/z units.
    layer
        Draw ``msi.layers[layer]`` instead of ``X``.
    max_size
        Longest side, in pixels, of the H&E copy the ion image is resampled onto.
    cmap, alpha, vmin, vmax
        Colour map (default: viridis on its own grid and over a bright-field stain, plasma over
        fluorescence), opacity over the H&E, and colour limits (default: the drawn values'
        range).
    colorbar
        Add a colour bar.
    title
        Axes title (default: the feature's m/z and name).
    {ax_save}

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on. On the axes: with ``he``, the H&E image (first) and the ion image
        (second), both with ``extent`` in H&E µm; without, the ion image with ``extent`` in MSI
        µm. Blank pixels are masked. Under the ion image a bright-field stain (H&E, toluidine
        blue: glass brighter than tissue) is drawn in grey, so that the colour map is the only
        colour; a fluorescence image (dark background) on black, each channel in its colour
        (``docs/outputs.md``, "Colours").

    Raises
    ------
    TypeError
        ``he`` is not a HistologyImage or ``transform`` not a Transform.
    ValueError
        ``msi`` lacks the ``read_imzml`` layout, no feature matches ``mz`` (the message names
        it), or ``he`` is given without ``transform``.
    """
    from spatialfuse.core.features import resolve_ions
    from spatialfuse.core.msi_raster import MsiRaster
    from spatialfuse.pl.stain import msi_cmap, stain_kind, under_overlay

    raster = MsiRaster.from_anndata(msi, "msi")
    name = resolve_ions(msi, mz, ppm=ppm, tol=tol)[0]
    image = raster_image(msi, raster, name, layer)
    feature_mz = (
        float(np.asarray(msi.var["mz"])[msi.var_names.get_loc(name)])
        if ("mz" in msi.var)
        else float("nan")
    )
    px, py = raster.pixel_size_um
    x0, y0 = (raster.origin[0] - 1) * px, (raster.origin[1] - 1) * py

    fig, ax = new_axes(ax, (6.0, 5.0))
    if he is None:
        if transform is not None:
            raise ValueError("transform= needs he= (the H&E to draw the ion image over)")
        extent = (x0, x0 + image.shape[1] * px, y0 + image.shape[0] * py, y0)
        frame = "MSI"
        cmap = cmap or msi_cmap(None)
    else:
        he_rgb, extent, image = _on_histology(he, transform, image, (px, py), (x0, y0), max_size)
        kind = stain_kind(he_rgb)
        ax.imshow(under_overlay(he_rgb, kind), extent=extent, interpolation="nearest")
        cmap = cmap or msi_cmap(kind)
        frame = "H&E"
    shown = ax.imshow(
        np.ma.masked_invalid(image),
        extent=extent,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha if he is not None else None,
        interpolation="nearest",
    )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(f"x (µm, {frame} frame)")
    ax.set_ylabel(f"y (µm, {frame} frame)")
    ax.set_title(title if title is not None else f"m/z {feature_mz:.4f} ({name})")
    if colorbar:
        fig.colorbar(shown, ax=ax, label=layer or "intensity", shrink=0.8)
    return finish(fig, save)


def raster_image(msi, raster, name: str, layer: str | None) -> np.ndarray:
    """``(rows, cols)`` float64 image of feature ``name`` over the raster's bounding box.

    Row ``y − y_min`` and column ``x − x_min`` hold the spectrum at grid position ``(x, y)``;
    positions without a spectrum are NaN.
    """
    from scipy import sparse

    from spatialfuse.core.adata import feature_matrix

    matrix = feature_matrix(msi, layer, "msi")
    column = msi.var_names.get_loc(name)
    values = matrix[:, column]
    values = values.toarray() if sparse.issparse(values) else np.asarray(values)
    cols, rows = raster.shape
    image = np.full((rows, cols), np.nan)
    image[raster.grid_y - raster.origin[1], raster.grid_x - raster.origin[0]] = np.ravel(values)
    return image


def _on_histology(he, transform, image, pixel_size, origin_um, max_size: int):
    """The reduced H&E, its extent in µm and the ion image resampled onto its pixels."""
    from spatialfuse.io.histology import HistologyImage
    from spatialfuse.reg import AffineTransform, Transform, compose, resample

    if not isinstance(he, HistologyImage):
        raise TypeError(
            "he must be a HistologyImage (sf.io.read_histology), got " + type(he).__name__
        )
    if transform is None:
        raise ValueError(
            "he= needs transform= (MSI µm → H&E µm, e.g. sf.reg.register(msi, he).transform)"
        )
    if not isinstance(transform, Transform):
        raise TypeError(
            "transform must be a spatialfuse Transform mapping MSI µm → H&E µm, got "
            + type(transform).__name__
        )
    he_rgb, he_pixel = he.downsampled(max_size=max_size)
    rows, cols = he_rgb.shape[:2]
    # resample (scipy's mode="constant") blanks everything beyond the outermost pixel *centres*,
    # i.e. the outer half of every border pixel; a frame of blank pixels keeps them whole.
    padded = np.pad(image, 1, constant_values=np.nan)
    # The padded image's pixel (0, 0) lies one pixel before the raster's origin in the MSI frame.
    tx, ty = origin_um[0] - pixel_size[0], origin_um[1] - pixel_size[1]
    shift = AffineTransform(np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1]]))
    warped = resample(
        padded,
        compose(transform, shift),
        pixel_size_um=pixel_size,
        output_shape=(rows, cols),
        output_pixel_size_um=he_pixel,
        order=0,
        fill=np.nan,
    )
    extent = (0.0, cols * he_pixel[0], rows * he_pixel[1], 0.0)
    return he_rgb, extent, warped
