"""The hires and lowres H&E images of a Space Ranger folder, as uint8 RGB ``(h, w, 3)`` arrays.

An image is placed on the spots by its ``tissue_<res>_scalef`` (image pixels per full-res pixel);
one without its scale factor, blank or unreadable is left out with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spatialfuse.io._visium_layout import IMAGE_FILES, SCALEFACTORS_FILE, _image_file

# An image may declare at most this many bytes of pixels per byte of file (deflate's ratio is
# ~1,032; JPEG's lower).
_IMAGE_MAX_EXPANSION = 2000
# Fraction of spots that may fall outside an image before the image is reported as misplaced.
_OUTSIDE_IMAGE_TOLERANCE = 0.1


def _image_sizes(root: Path) -> dict[str, tuple[int, int]]:
    """``(width, height)`` of the hires and lowres images that exist and can be opened."""
    from PIL import Image

    sizes = {}
    for res in IMAGE_FILES:
        file = _image_file(root, res)
        if file is None:
            continue
        try:
            with Image.open(file) as im:
                sizes[res] = (int(im.width), int(im.height))
        except Exception:  # an unreadable image is reported where it is loaded
            continue
    return sizes


def _load_images(
    root: Path,
    scalefactors: dict[str, Any],
    found_scalefactors: set[str],
    xy: np.ndarray,
    notes: list[str],
) -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    for res, name in IMAGE_FILES.items():
        file = _image_file(root, res)
        if file is None:
            notes.append(f"{root / 'spatial' / name}: no {res} image; uns['spatial'] has none")
            continue
        key = f"tissue_{res}_scalef"
        if key not in found_scalefactors:
            notes.append(
                f"{file}: {key} missing from {SCALEFACTORS_FILE}, so the {res} image cannot be "
                "placed on the spots; not loaded"
            )
            continue
        try:
            img = _read_rgb(file)
        except Exception as exc:  # PIL raises many types for a broken file
            notes.append(f"{file}: cannot be read as an image ({exc}); {res} image not loaded")
            continue
        if img.size == 0 or int(img.max()) - int(img.min()) <= 2:
            value = int(img.max()) if img.size else 0
            notes.append(
                f"{file}: the {res} image is blank (every pixel ≈ {value}), a placeholder; "
                "dropped from uns['spatial'] images"
            )
            continue
        scaled = xy * float(scalefactors[key])
        h, w = img.shape[:2]
        outside = (
            (scaled[:, 0] < 0) | (scaled[:, 0] >= w) | (scaled[:, 1] < 0) | (scaled[:, 1] >= h)
        )
        if len(xy) and outside.mean() > _OUTSIDE_IMAGE_TOLERANCE:
            notes.append(
                f"{file}: {int(outside.sum()):,} of {len(xy):,} spots fall outside the {w} × {h} "
                f"{res} image at {key} = {scalefactors[key]:g}; image and positions may not match"
            )
        images[res] = img
    return images


def _read_rgb(file: Path) -> np.ndarray:
    """Read an image as a uint8 ``(h, w, 3)`` RGB array (squidpy's reader keeps uint8 too)."""
    from PIL import Image

    with Image.open(file) as im:
        declared = im.width * im.height * max(1, len(im.getbands()))
        limit = _IMAGE_MAX_EXPANSION * file.stat().st_size + (16 << 20)
        if declared > limit:  # checked before PIL allocates the declared size
            raise ValueError(
                f"it declares {im.width} × {im.height} pixels, more than its "
                f"{file.stat().st_size:,} bytes can hold"
            )
        im.load()
        if im.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
