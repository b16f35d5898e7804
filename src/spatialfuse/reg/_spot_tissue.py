"""Whether a Visium folder's in-tissue spots lie on the tissue of its own image.

The folder's files can each be valid and agree with one another (the checks of
``io/_visium_checks.py``) and still not match the picture: ``pxl_row_in_fullres`` and
``pxl_col_in_fullres`` swapped in the positions file, or an image of another capture area. Space
Ranger marks a spot ``in_tissue`` where its own tissue detection saw tissue under it, so on a
consistent folder nearly every in-tissue spot lies on the tissue that
:func:`~spatialfuse.reg._tissue.tissue_mask` finds in the image and no off-tissue spot does (real
folders: 97.5–100 % and 0 %); with the pixel columns swapped, 68–80 % and 15–21 %. Both must
disagree for an error: a tissue with large pale regions (adipose, a pale synthetic region) leaves
in-tissue spots on "background" while off-tissue spots stay off, and spots a user excluded by
hand (in Loupe) lie on tissue while in-tissue spots stay on it. Folders without enough spots of
both kinds (filtered positions) are skipped.

It lives in ``reg`` because it needs the tissue masks of registration images; the workflow runs
it beside the reader's checks and reports it with them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Positions and image disagree where fewer than this fraction of in-tissue spots lie on the
#: image's tissue ...
MIN_IN_TISSUE_ON_TISSUE = 0.85
#: ... and more than this fraction of the off-tissue spots lie on it.
MAX_OFF_TISSUE_ON_TISSUE = 0.05
#: The check needs at least this many in-tissue and off-tissue spots inside the image.
MIN_SPOTS = 20


def spots_on_tissue(visium, *, library_id: str | None = None) -> dict[str, Any]:
    """How many in-tissue spots of a Visium AnnData lie on the tissue of its own image.

    Parameters
    ----------
    visium
        A :func:`~spatialfuse.io.read_visium` AnnData (``obsm["spatial"]``: full-resolution
        pixels ``(x, y)``; ``obs["in_tissue"]``; the hires or lowres image in ``uns["spatial"]``).
    library_id
        The library whose image is used (default: the first).

    Returns
    -------
    dict
        ``check`` (``"spots_on_tissue"``), ``status`` (``"ok"``, ``"error"`` or ``"skipped"``),
        ``detail`` (a sentence), ``fraction`` (in-tissue spots on the image's tissue) and
        ``n_spots`` (in-tissue spots inside the image).
    """
    from spatialfuse.io.visium import tissue_image
    from spatialfuse.reg._tissue import tissue_mask

    found = tissue_image(visium, library_id=library_id)
    if found is None or "in_tissue" not in visium.obs:
        return _result("skipped", "no image or no in_tissue column", None, None, 0)
    image, scale, resolution = found
    rgb = np.asarray(image, dtype=np.float64)
    if rgb.ndim == 3:
        rgb = rgb[..., :3]
    mask, info = tissue_mask(rgb)
    if info.get("background") == "none":
        detail = f"no background found in the {resolution} image"
        return _result("skipped", detail, None, None, 0)
    xy = np.asarray(visium.obsm["spatial"], dtype=np.float64) * scale
    cols, rows = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    inside = (cols >= 0) & (cols < mask.shape[1]) & (rows >= 0) & (rows < mask.shape[0])
    flagged = visium.obs["in_tissue"].astype(bool).to_numpy()
    on = np.zeros(len(flagged), bool)
    on[inside] = mask[rows[inside], cols[inside]]
    n_in, n_off = int((inside & flagged).sum()), int((inside & ~flagged).sum())
    if n_in < MIN_SPOTS or n_off < MIN_SPOTS:
        detail = f"{n_in} in-tissue and {n_off} off-tissue spots inside the image: too few"
        return _result("skipped", detail, None, None, n_in)
    fraction = float(on[inside & flagged].mean())
    off = float(on[inside & ~flagged].mean())
    if fraction < MIN_IN_TISSUE_ON_TISSUE and off > MAX_OFF_TISSUE_ON_TISSUE:
        detail = (
            f"only {100 * fraction:.0f} % of the {n_in} in-tissue spots lie on tissue in the "
            f"{resolution} image, and {100 * off:.0f} % of the off-tissue spots do (consistent "
            "folders: ≥ 97 % and 0 %): the positions do not match the image "
            "(pxl_row_in_fullres and pxl_col_in_fullres swapped, or an image of another capture "
            "area?)"
        )
        return _result("error", detail, fraction, off, n_in)
    detail = (
        f"{100 * fraction:.0f} % of the {n_in} in-tissue spots and {100 * off:.0f} % of the "
        f"{n_off} off-tissue spots lie on tissue in the {resolution} image"
    )
    return _result("ok", detail, fraction, off, n_in)


def _result(
    status: str, detail: str, fraction: float | None, off: float | None, n: int
) -> dict[str, Any]:
    return {
        "check": "spots_on_tissue",
        "status": status,
        "detail": detail,
        "fraction": fraction,
        "off_tissue_fraction": off,
        "n_spots": n,
    }
