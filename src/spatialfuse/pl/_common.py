"""What every plot shares: one axes or a new figure, saving, and the spot table squidpy draws."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from spatialfuse._docs import AX_SAVE, fill_doc
from spatialfuse._text import literal_text_figures

if TYPE_CHECKING:
    import anndata
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

F = TypeVar("F", bound=Callable)


def one_axes_plot(function: F) -> F:
    """Mark a plot drawn on one axes (``ax``, ``save``; :func:`new_axes`, :func:`finish`).

    Its docstring's line ``{ax_save}`` becomes the shared ``ax`` and ``save`` entries
    (:data:`spatialfuse._docs.AX_SAVE`), and every text it draws is literal
    (:func:`spatialfuse._text.literal_text_figures`).
    """
    return literal_text_figures(fill_doc(ax_save=AX_SAVE)(function))


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``(ax.figure, ax)``, or a new figure with one axes (nothing is shown)."""
    import matplotlib.pyplot as plt

    if ax is not None:
        if not hasattr(ax, "imshow") or not hasattr(ax, "figure"):
            raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return fig, ax


def finish(fig: Figure, save: str | os.PathLike | None) -> Figure:
    """Write ``fig`` atomically when ``save`` is given; return it."""
    if save is not None:
        from spatialfuse._io_utils import atomic_savefig

        atomic_savefig(fig, save, dpi=150)
    return fig


def spot_table(
    source, names, columns: dict[str, np.ndarray], *, image_sources=()
) -> anndata.AnnData:
    """A spots × 0 AnnData for squidpy: ``obs`` = ``columns``, positions and images of ``source``.

    ``source`` is an AnnData or MuData whose ``obs_names`` contain ``names``; its
    ``obsm["spatial"]`` (full-res pixels) and ``uns["spatial"]`` (images, scale factors) are
    carried over, so squidpy draws the spots on the H&E: a bright-field stain in grey, so that the
    spots' colours are the only colours (a fluorescence image on black, each channel in its
    colour; :mod:`spatialfuse.pl.stain`). Without ``obsm["spatial"]``, positions come from
    ``obsm["spatial_um"]`` and there is no image. Where ``source`` carries no images, the first
    of ``image_sources`` that does lends them (a ``joint.h5mu`` stores them once, in its RNA
    modality).
    """
    import anndata as ad
    import pandas as pd

    rows = source.obs_names.get_indexer(names)
    obs = pd.DataFrame(columns, index=pd.Index(np.asarray(names), dtype=str))
    table = ad.AnnData(obs=obs)
    if "spatial" in source.obsm:
        table.obsm["spatial"] = np.asarray(source.obsm["spatial"], dtype=np.float64)[rows]
        found = (getattr(each, "uns", {}).get("spatial") for each in (source, *image_sources))
        images = next((each for each in found if isinstance(each, dict) and each), None)
        if images:
            table.uns["spatial"] = _under_spots(images)
    elif "spatial_um" in source.obsm:
        table.obsm["spatial"] = np.asarray(source.obsm["spatial_um"], dtype=np.float64)[rows]
    else:
        raise ValueError("no spot positions: obsm['spatial'] and obsm['spatial_um'] are missing")
    return table


def _under_spots(spatial: dict) -> dict:
    """``uns["spatial"]`` with every library's images as drawn under coloured spots (a copy)."""
    from spatialfuse.pl.stain import stain_kind, under_overlay

    out = {}
    for library, entry in spatial.items():
        images = entry.get("images") if isinstance(entry, dict) else None
        if not images:
            out[library] = entry
            continue
        drawn = {}
        for res, image in images.items():
            array = np.asarray(image)
            drawn[res] = under_overlay(array, stain_kind(array)).astype(np.float32)
        out[library] = {**entry, "images": drawn}
    return out


def draw_spots(table, color: str, ax: Axes, *, title: str, um_per_px: float | None, **kwargs):
    """``squidpy.pl.spatial_scatter`` of one ``obs`` column on ``ax`` (spots as real-size discs).

    With an H&E in ``uns["spatial"]`` the axes are in pixels of its hires image (squidpy's frame)
    and a scale bar in µm is added where ``um_per_px`` (µm per full-res pixel) is known.
    """
    import squidpy as sq

    options = {"shape": None, "img": False, "frameon": True}
    if "spatial" in table.uns:
        library = next(iter(table.uns["spatial"]))
        entry = table.uns["spatial"][library]
        images = entry.get("images", {}) or {}
        res = "hires" if "hires" in images else next(iter(images), None)
        scale = (entry.get("scalefactors", {}) or {}).get(f"tissue_{res}_scalef")
        options = {"shape": "circle", "library_id": library}
        if res is not None:
            options["img_res_key"] = res
        else:
            options["img"] = False
        if um_per_px and scale:
            options.update(
                scalebar_dx=float(um_per_px) / float(scale),
                scalebar_units="um",
                scalebar_kwargs={"scale_formatter": _scale_label},
            )
    options.update(kwargs)
    sq.pl.spatial_scatter(table, color=color, ax=ax, title=title, **options)
    if "scalebar_dx" in options and options.get("frameon", True):
        um_axes(ax, float(options["scalebar_dx"]))
    return ax


def um_axes(ax: Axes, um_per_unit: float) -> None:
    """Tick ``ax`` (drawn in image pixels, squidpy's frame) in µm of the Visium frame.

    Ticks sit at round µm values (1, 2 or 5 × 10^k, about four per axis); the labels say so.
    """
    import math

    for axis, limits, name in ((ax.xaxis, ax.get_xlim(), "x"), (ax.yaxis, ax.get_ylim(), "y")):
        low, high = sorted(v * um_per_unit for v in limits)
        span = (high - low) / 4
        if not span > 0:
            continue
        power = 10.0 ** math.floor(math.log10(span))
        step = max(m * power for m in (1, 2, 5) if m * power <= span)
        ticks = np.arange(math.ceil(low / step) * step, high + 1e-9 * step, step)
        axis.set_ticks(ticks / um_per_unit, labels=[f"{t:g}" for t in ticks])
        axis.set_label_text(f"{name} (µm, Visium frame)")


#: How matplotlib-scalebar writes µ (mathtext, which literal text would show as is).
_MATHTEXT_MU = r"$\mathregular{\mu}$"


def _scale_label(value, unit: str) -> str:
    """A scale bar's label without mathtext (figures draw text literally)."""
    return f"{value} {unit.replace(_MATHTEXT_MU, 'µ')}"


def um_per_px(*sources) -> float | None:
    """µm per full-res pixel of the first source that records it (None if none does)."""
    from spatialfuse.core.visium_geometry import visium_um_per_px

    for source in sources:
        found = visium_um_per_px(source, required=False)
        if found is not None:
            return found
    return None
