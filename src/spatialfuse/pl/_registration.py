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

    Notes
    -----
    Each image is drawn as the kind of picture it is (``docs/outputs.md``, "Colours"): a
    bright-field stain (H&E, toluidine blue) in its RGB colours, a fluorescence image on black,
    an MSI image in viridis. The overlay of an MSI and an optical image draws the MSI in viridis
    over the stain in grey, or in plasma over fluorescence; two optical images (or two MSI) are
    overlaid in magenta (fixed) and green (moving). The checkerboard shows the two images
    registration compared (e.g. an H&E's optical density), in grey. Outlines and landmark marks
    take colours that stand out on the picture under them; the titles name them.
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
    looks = {"fixed": _Look.of(fixed), "moving": _Look.of(moving)}
    _draw_overlay(axes[0], result, looks, (warped, warped_mask, inside), extent)
    axes[1].imshow(
        _checkerboard(fixed.image, np.where(inside, warped, 0), tiles), cmap="gray", extent=extent
    )
    axes[1].set_title("checkerboard of the compared images")
    look = looks["fixed"]
    look.draw(axes[2], fixed, extent)
    ys = np.linspace(extent[3], extent[2], fixed.shape[0])
    xs = np.linspace(extent[0], extent[1], fixed.shape[1])
    (fixed_colour, fixed_word), (moving_colour, moving_word) = OUTLINE_COLOURS[look.ground]
    for mask, colour in ((fixed.mask, fixed_colour), (warped_mask & inside, moving_colour)):
        axes[2].contour(xs, ys, _outline(mask), levels=[0.5], colors=colour, linewidths=1.2)
    m = result.metrics
    dice = m.get("dice_final", float("nan"))
    # A registration that could not run has no Dice: the panel says so instead of "Dice nan".
    axes[2].set_title(
        f"outlines: fixed {fixed_word}, moving {moving_word}\n"
        + (f"(Dice {dice:.3f})" if np.isfinite(dice) else "(not registered)")
    )
    if landmarks is not None:
        from spatialfuse.reg import as_points

        src, dst = (as_points(p) for p in landmarks)
        mapped = result.transform.apply(src)
        errors = np.linalg.norm(mapped - dst, axis=1)
        look.draw(axes[3], fixed, extent)
        arrow, point = LANDMARK_COLOURS[look.ground]
        axes[3].quiver(
            mapped[:, 0],
            mapped[:, 1],
            (dst - mapped)[:, 0] * 10,
            (dst - mapped)[:, 1] * 10,
            angles="xy",
            scale_units="xy",
            scale=1,
            color=arrow,
            width=0.006,
        )
        axes[3].scatter(dst[:, 0], dst[:, 1], s=12, c=point, label="fixed landmark")
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
    cleaned = _without_small(remove_small_objects, np.asarray(mask, bool), size, "min_size")
    return _without_small(remove_small_holes, cleaned, size, "area_threshold").astype(float)


def _without_small(function, mask: np.ndarray, size: int, old_name: str) -> np.ndarray:
    """``function`` removing parts under ``size`` pixels (scikit-image 0.26 renamed the limit)."""
    import inspect

    if "max_size" in inspect.signature(function).parameters:
        return function(mask, max_size=size - 1)  # removes parts of at most max_size
    return function(mask, **{old_name: size})


#: Opacity of the MSI over the stain in the overlay panel: on the MSI's tissue, and elsewhere
#: where it was measured (faint, so that the stain shows around the tissue).
OVERLAY_ALPHA, FAINT_ALPHA = 0.6, 0.25
#: Outline colours (and their words in the title) over each kind of picture: fixed, moving.
OUTLINE_COLOURS = {
    "bright": (("black", "black"), ("#00b000", "green")),
    "dark": (("magenta", "magenta"), ("lime", "green")),
    "msi": (("white", "white"), ("#ff2a2a", "red")),
}
#: Landmark residual arrows and fixed landmarks over each kind of picture.
LANDMARK_COLOURS = {
    "bright": ("black", "#00b000"),
    "dark": ("yellow", "cyan"),
    "msi": ("white", "red"),
}


class _Look:
    """How one registration image is drawn: an optical picture in its stain's colours, or an MSI.

    ``kind`` is ``"msi"``, ``"brightfield"`` or ``"fluorescence"``; ``ground`` the background the
    marks are drawn on (``"bright"``, ``"dark"`` or ``"msi"``); ``picture`` the ``(rows, cols,
    3)`` RGB of an optical image (0–1) and ``extent`` where it lies in µm.
    """

    def __init__(self, kind: str, picture: np.ndarray | None = None, extent=None):
        self.kind = kind
        self.ground = {"msi": "msi", "brightfield": "bright"}.get(kind, "dark")
        self.picture = picture
        self.extent = extent

    @classmethod
    def of(cls, img) -> _Look:
        """The look of a :class:`~spatialfuse.reg.RegistrationImage`.

        An optical image is drawn from the colours registration kept (``extra["optical_density"]``
        holds every channel's density at half the working pixel: ``exp(−OD)`` is the stored
        picture); without them from its compared channel, turned so that the background looks
        like the kind's (bright glass, dark fluorescence background).
        """
        from spatialfuse.pl.stain import stain_kind, stain_picture

        if img.modality == "msi":
            return cls("msi")
        background = img.extra.get("background")
        od = img.extra.get("optical_density")
        size = img.extra.get("optical_density_pixel_um")
        if od is not None and size is not None and _same_extent(np.shape(od), size, img):
            rgb = np.exp(-np.asarray(od, dtype=np.float64)[..., :3])
            if np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 0], rgb[..., 2]):
                rgb = rgb[..., 0]  # one channel stored three times
            kind = stain_kind(rgb, background=background)
            rows, cols = rgb.shape[:2]
            ox, oy = img.origin_um
            extent = (ox, ox + cols * size[0], oy + rows * size[1], oy)
            return cls(kind, stain_picture(rgb, kind), extent)
        values = np.asarray(img.image, dtype=np.float64)
        kind = stain_kind(values, background=background)
        mask = np.asarray(img.mask, bool)
        if mask.any() and (~mask).any():
            tissue_brighter = values[mask].mean() > values[~mask].mean()
            if tissue_brighter == (kind == "brightfield"):
                values = values.max() + values.min() - values  # e.g. an optical density
        return cls(kind, stain_picture(values, kind), None)

    def draw(self, ax, img, extent) -> None:
        """Draw ``img`` (the image this look is of) on ``ax`` over ``extent`` (µm)."""
        from spatialfuse.pl.stain import MSI_CMAP

        if self.kind == "msi":
            valid = img.extra.get("valid")
            values = img.image if valid is None else np.ma.masked_where(~valid, img.image)
            ax.imshow(values, cmap=MSI_CMAP, vmin=0, vmax=1, extent=extent, interpolation="nearest")
            return
        ax.imshow(self.picture, extent=self.extent or extent)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])

    def on_fixed_grid(self, moving, fixed, transform) -> np.ndarray:
        """The (moving) picture warped onto the fixed grid, ``(rows, cols, 3)``."""
        from spatialfuse.reg import RegistrationImage, warp_to

        extent = self.extent or (
            moving.origin_um[0],
            moving.origin_um[0] + moving.shape[1] * moving.pixel_size_um[0],
            moving.origin_um[1] + moving.shape[0] * moving.pixel_size_um[1],
            moving.origin_um[1],
        )
        rows, cols = self.picture.shape[:2]
        size = ((extent[1] - extent[0]) / cols, (extent[2] - extent[3]) / rows)
        empty = np.zeros((rows, cols), bool)
        return np.dstack(
            [
                warp_to(
                    RegistrationImage(self.picture[..., c], empty, size, moving.origin_um),
                    fixed,
                    transform,
                )[0]
                for c in range(3)
            ]
        )


def _same_extent(shape, size, img) -> bool:
    """Whether an array of ``shape`` at ``size`` µm covers the extent of ``img`` (±1 pixel)."""
    if len(shape) != 3 or shape[2] < 3:
        return False
    width, height = shape[1] * size[0], shape[0] * size[1]
    return bool(
        abs(width - img.shape[1] * img.pixel_size_um[0]) <= max(size[0], img.pixel_size_um[0])
        and abs(height - img.shape[0] * img.pixel_size_um[1]) <= max(size[1], img.pixel_size_um[1])
    )


def _draw_overlay(ax, result, looks: dict[str, _Look], warped_moving, extent) -> None:
    """The overlay panel: the MSI in its colour map over the stain, or two images in two colours.

    One MSI and one optical image: the stain in grey (bright field) or on black (fluorescence),
    the MSI over it in the colour map that contrasts (:func:`spatialfuse.pl.stain.msi_cmap`),
    at :data:`OVERLAY_ALPHA` on its tissue and :data:`FAINT_ALPHA` elsewhere where it was
    measured. Otherwise the fixed image in magenta and the moving one in green.
    """
    from spatialfuse.pl.stain import msi_cmap, stain_words

    warped, warped_mask, inside = warped_moving
    fixed, moving = result.fixed_image, result.moving_image
    kinds = (looks["fixed"].kind, looks["moving"].kind)
    if (kinds[0] == "msi") == (kinds[1] == "msi"):
        overlay = np.dstack([fixed.image, np.where(inside, warped, 0), fixed.image])
        ax.imshow(np.clip(overlay, 0, 1), extent=extent)
        ax.set_title("overlay: fixed magenta, moving green")
        return
    if kinds[0] == "msi":
        optical, picture_extent = looks["moving"], extent
        picture = optical.on_fixed_grid(moving, fixed, result.transform)
        valid = fixed.extra.get("valid")
        msi = fixed.image if valid is None else np.ma.masked_where(~valid, fixed.image)
        tissue = np.asarray(fixed.mask, bool)
        name = _plain_name(moving)
    else:
        optical = looks["fixed"]
        picture, picture_extent = optical.picture, optical.extent or extent
        msi = np.ma.masked_where(~inside, warped)
        tissue = warped_mask & inside
        name = _plain_name(fixed)
    if optical.kind == "brightfield":
        grey = picture @ np.array([0.2126, 0.7152, 0.0722])
        picture = np.repeat(grey[..., None], 3, axis=2)
    cmap = msi_cmap(optical.kind)
    ax.imshow(np.clip(picture, 0, 1), extent=picture_extent)
    ax.imshow(
        msi,
        cmap=cmap,
        vmin=0,
        vmax=1,
        alpha=np.where(tissue, OVERLAY_ALPHA, FAINT_ALPHA),
        extent=extent,
        interpolation="nearest",
    )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_title(f"overlay: MSI ({cmap}) on\n{name} ({stain_words(optical.kind)})")


def _plain_name(img) -> str:
    """The image's description without the channel registration compared (``"H&E od"`` → H&E)."""
    channel = str(img.extra.get("channel") or "")
    name = img.description or img.modality
    if channel and name.endswith(" " + channel):
        name = name[: -len(channel) - 1]
    return name
