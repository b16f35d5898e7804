"""Plots that show how good a registration is."""

from __future__ import annotations

import os
import textwrap
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._text import literal_text_figures

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from spatialfuse.reg import RegistrationResult


def _checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    rows, cols = a.shape
    tile = max(1, int(np.ceil(max(rows, cols) / tiles)))
    yy, xx = np.indices((rows, cols))
    return np.where(((yy // tile) + (xx // tile)) % 2 == 0, a, b)


@literal_text_figures
def registration_qc(
    result: RegistrationResult,
    *,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    tiles: int = 8,
    title: str | None = None,
    save: str | os.PathLike | None = None,
) -> Figure:
    """Overlay, checkerboard and tissue outlines of a registration, and landmark residuals.

    Parameters
    ----------
    result
        A :class:`~spatialfuse.reg.RegistrationResult`.
    landmarks
        ``(moving_points, fixed_points)`` in µm; drawn with arrows from each mapped moving point to
        its fixed partner (residuals magnified ×10 for visibility, stated on the plot).
    tiles
        Checkerboard tiles along the longer side.
    title
        Figure title (default: the result's summary).
    save
        Write the figure here (PNG, PDF, SVG by extension).

    Returns
    -------
    matplotlib.figure.Figure
        The figure: the fixed image with the warped moving image overlaid, a checkerboard of the
        two, their tissue outlines, and with ``landmarks`` a fourth panel of residuals.
    """
    import matplotlib.pyplot as plt

    from spatialfuse.reg import warp_to

    fixed, moving = result.fixed_image, result.moving_image
    warped, warped_mask, inside = warp_to(moving, fixed, result.transform)
    extent = (
        fixed.origin_um[0],
        fixed.origin_um[0] + fixed.shape[1] * fixed.pixel_size_um[0],
        fixed.origin_um[1] + fixed.shape[0] * fixed.pixel_size_um[1],
        fixed.origin_um[1],
    )
    panels = 4 if landmarks is not None else 3
    # as tall as the panels' images need (a wide image left an empty band under the title)
    height = float(np.clip(3.6 * fixed.shape[0] / max(fixed.shape[1], 1), 1.5, 6.0)) + 1.2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, height), constrained_layout=True)
    overlay = np.dstack([fixed.image, np.where(inside, warped, 0), fixed.image])
    axes[0].imshow(np.clip(overlay, 0, 1), extent=extent)
    axes[0].set_title("overlay: fixed magenta, moving green")
    axes[1].imshow(
        _checkerboard(fixed.image, np.where(inside, warped, 0), tiles), cmap="gray", extent=extent
    )
    axes[1].set_title("checkerboard")
    axes[2].imshow(fixed.image, cmap="gray", extent=extent)
    ys = np.linspace(extent[3], extent[2], fixed.shape[0])
    xs = np.linspace(extent[0], extent[1], fixed.shape[1])
    for mask, colour in ((fixed.mask, "magenta"), (warped_mask & inside, "lime")):
        axes[2].contour(xs, ys, _outline(mask), levels=[0.5], colors=colour, linewidths=1)
    m = result.metrics
    dice = m.get("dice_final", float("nan"))
    # A registration that could not run has no Dice: the panel says so instead of "Dice nan".
    axes[2].set_title(
        f"tissue outlines (Dice {dice:.3f})"
        if np.isfinite(dice)
        else "tissue outlines (not registered)"
    )
    if landmarks is not None:
        from spatialfuse.reg import as_points

        src, dst = (as_points(p) for p in landmarks)
        mapped = result.transform.apply(src)
        errors = np.linalg.norm(mapped - dst, axis=1)
        axes[3].imshow(fixed.image, cmap="gray", extent=extent)
        axes[3].quiver(
            mapped[:, 0],
            mapped[:, 1],
            (dst - mapped)[:, 0] * 10,
            (dst - mapped)[:, 1] * 10,
            angles="xy",
            scale_units="xy",
            scale=1,
            color="yellow",
            width=0.006,
        )
        axes[3].scatter(dst[:, 0], dst[:, 1], s=12, c="cyan", label="fixed landmark")
        axes[3].set_title(f"landmark residuals ×10 (median {np.median(errors):.1f} µm)")
        axes[3].legend(loc="lower right", fontsize=7)
    unit = "µm"
    estimate = getattr(result, "details", {}).get("estimated_pixel_size")
    if estimate and estimate["side"] == "fixed":
        # The fixed frame is the image's as given, whose pixel size was estimated, not known.
        given, found = estimate["as_given"][0], estimate["value"][0]
        unit = f"× {found / given:.4g} µm, estimated"
    for ax in axes:
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")
    status = "ok" if result.ok else "FAILED: " + "; ".join(result.failures)
    # sf.reg.assess judges a given transform: it has a final NMI but no initial one
    nmi = f"{m['nmi_final']:.3f}"
    if "nmi_initial" in m:
        nmi = f"{m['nmi_initial']:.3f} → {nmi}"
    default = f"{moving.description} → {fixed.description}: {result.model}, {status}; NMI {nmi}"
    # a failed result's reasons are sentences: wrap them to the figure's width
    width = max(60, round(fig.get_figwidth() * 9))
    fig.suptitle(title or textwrap.fill(default, width))
    if save is not None:
        from spatialfuse._io_utils import atomic_savefig

        atomic_savefig(fig, save)
    return fig


#: Specks and holes smaller than this fraction of the image are left out of the drawn outlines.
OUTLINE_MIN_FRACTION = 0.002


def _outline(mask: np.ndarray) -> np.ndarray:
    """``mask`` without specks and holes under :data:`OUTLINE_MIN_FRACTION` of the image, as float.

    A tissue mask of a textured stain holds many single-pixel specks; their contours hid the
    tissue's outline (a "speckled mass"). Only the drawing leaves them out; Dice uses the mask.
    """
    from skimage.morphology import remove_small_holes, remove_small_objects

    size = max(int(OUTLINE_MIN_FRACTION * mask.size), 1)
    cleaned = remove_small_objects(np.asarray(mask, bool), min_size=size)
    return remove_small_holes(cleaned, area_threshold=size).astype(float)
