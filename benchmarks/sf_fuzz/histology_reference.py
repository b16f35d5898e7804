"""An independent decoding of a histology image: the oracle the fuzzed reader is checked with.

It shares no code with ``spatialfuse.io.histology`` and takes other routes through the decoders:
TIFF levels are decoded page by page with ``TiffPage.asarray`` (the reader goes through
``aszarr`` and zarr, or plain reads of contiguous data), PNG with PIL (the reader uses
imagecodecs' libpng), JPEG with imagecodecs' libjpeg-turbo (the reader uses PIL). Pixels are put
in ``(rows, cols, channels)`` with alpha composited on white, as the reader documents.

Its answer is :class:`Decoded` (every level's pixels) or :class:`Unverifiable` (the decoders fail,
or the file uses something outside this reference's scope: the reader may read or refuse it, and
is then only checked for consistency).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Levels larger than this are not decoded (the fuzzer does not read them whole either).
MAX_LEVEL_BYTES = 64 << 20


@dataclass
class Decoded:
    """The pixels of the stored levels, ``(rows, cols, channels)``.

    ``n_levels`` is how many levels a reader must report (None for JPEG, whose smaller levels are
    DCT-scaled decodes that this reference does not reproduce).
    """

    levels: list[np.ndarray]
    n_levels: int | None


@dataclass
class Unverifiable:
    """This reference cannot tell what the file holds; ``reason`` says why."""

    reason: str


class _Stop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def decode(path: Path):
    """Decode the image at ``path``: :class:`Decoded` or :class:`Unverifiable`."""
    try:
        head = path.read_bytes()[:8]
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg(path)
        if head == b"\x89PNG\r\n\x1a\n":
            return _png(path)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(path)
        return Unverifiable("not JPEG, PNG or TIFF")
    except _Stop as stop:
        return Unverifiable(stop.reason)
    except MemoryError:
        return Unverifiable("the decoder ran out of memory")
    except Exception as exc:  # the decoders raise anything on damaged input
        return Unverifiable(f"decoding failed: {type(exc).__name__}: {exc}"[:300])


def _composite(color: np.ndarray, alpha: np.ndarray | None, premultiplied: bool) -> np.ndarray:
    """Alpha on white: ``c·a + white·(1 − a)`` (premultiplied: ``c + white·(1 − a)``)."""
    if alpha is None or np.all(alpha == _white(color.dtype)):
        return color
    white = _white(color.dtype)
    a = np.clip(alpha.astype(np.float64) / white, 0, 1)[..., None]
    mixed = color + white * (1 - a) if premultiplied else color * a + white * (1 - a)
    if color.dtype.kind in "ui":
        info = np.iinfo(color.dtype)
        return np.clip(np.rint(mixed), info.min, info.max).astype(color.dtype)
    return mixed.astype(color.dtype)


def _white(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else 1.0


def _check_size(shape, itemsize) -> None:
    if int(np.prod(shape, dtype=np.float64)) * itemsize > MAX_LEVEL_BYTES:
        raise _Stop(f"a level of {tuple(shape)} is too large to decode here")


# -------------------------------------------------------------------------------------- TIFF


def _tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        len(tif.pages)  # index the IFDs first: series parsing alone loops on some circular chains
        if len(tif.series) != 1:
            raise _Stop(f"{len(tif.series)} series")
        series = tif.series[0]
        levels = []
        for level in series.levels:
            if len(level.pages) != 1 or level.pages[0] is None:
                raise _Stop("a level of several pages")
            page = level.pages[0]
            _check_size(page.shape, np.dtype(page.dtype).itemsize)
            if 0 in page.databytecounts:
                raise _Stop("an empty strip or tile (TiffPage.asarray shifts the others)")
            levels.append(_tiff_page(page))
    if any(lvl.shape[2] != levels[0].shape[2] for lvl in levels):
        raise _Stop("levels with different channels")
    return Decoded(levels, len(levels))


def _tiff_page(page) -> np.ndarray:
    import tifffile

    photometric = int(page.photometric)
    p = tifffile.PHOTOMETRIC
    if photometric == p.YCBCR and int(page.compression) == tifffile.COMPRESSION.JPEG:
        photometric = p.RGB  # libjpeg returns RGB
    if photometric not in (p.RGB, p.MINISBLACK, p.MINISWHITE):
        raise _Stop(f"photometric {photometric}")
    if page.dtype is None or np.dtype(page.dtype).kind not in "uifb":
        raise _Stop(f"pixel type {page.dtype}")
    raw = np.asarray(page.asarray())
    axes = page.axes
    if axes == "YX":
        raw = raw[..., None]
    elif axes == "YXS":
        pass
    elif axes == "SYX":
        raw = np.moveaxis(raw, 0, -1)
    else:
        raise _Stop(f"page axes {axes!r}")
    if raw.dtype == np.bool_:  # 1-bit: 0/255, by the bytes the decoder left
        raw = np.where(raw.view(np.uint8) != 0, 255, 0).astype(np.uint8)
    extras = tuple(int(e) for e in (page.extrasamples or ()))
    samples = raw.shape[2]
    if photometric == p.MINISWHITE:
        if samples != 1 or raw.dtype.kind not in "ui":
            raise _Stop("MINISWHITE with several samples or floats")
        return np.iinfo(raw.dtype).max - raw
    if photometric == p.RGB:
        if samples == 3:
            return raw
        if samples > 3 and extras[:1] in ((1,), (2,)):
            return _composite(raw[..., :3], raw[..., 3], premultiplied=extras[0] == 1)
        raise _Stop(f"RGB with {samples} samples and extras {extras}")
    if samples == 1:
        return raw
    if samples == 2 and extras[:1] in ((1,), (2,)):
        return _composite(raw[..., :1], raw[..., 1], premultiplied=extras[0] == 1)
    raise _Stop(f"MINISBLACK with {samples} samples")


# -------------------------------------------------------------------------------------- PNG


def _png(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        _check_size((im.height, im.width, 4), 2)
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA")
        elif mode == "L" and "transparency" in im.info:
            im = im.convert("LA")
        elif mode == "RGB" and "transparency" in im.info:
            im = im.convert("RGBA")
        elif mode in ("I;16", "I;16B", "I") and "transparency" in im.info:
            raise _Stop("16-bit gray with tRNS")
        arr = np.asarray(im)
        mode = im.mode
    if mode in ("I;16", "I;16B", "I"):
        if arr.dtype.kind != "u" and arr.max(initial=0) > 65535:
            raise _Stop("32-bit gray")
        return Decoded([arr.astype(np.uint16)[..., None]], 1)
    if mode == "1":
        arr = np.where(arr.view(np.uint8) != 0, 255, 0).astype(np.uint8)
    if mode in ("L", "1"):
        return Decoded([arr[..., None]], 1)
    if mode == "LA":
        return Decoded([_composite(arr[..., :1], arr[..., 1], premultiplied=False)], 1)
    if mode == "RGB":
        if _png_bit_depth(path) == 16:
            raise _Stop("PIL reads 16-bit RGB as 8-bit")
        return Decoded([arr], 1)
    if mode == "RGBA":
        if _png_bit_depth(path) == 16:
            raise _Stop("PIL reads 16-bit RGBA as 8-bit")
        return Decoded([_composite(arr[..., :3], arr[..., 3], premultiplied=False)], 1)
    raise _Stop(f"PIL mode {mode}")


def _png_bit_depth(path: Path) -> int:
    data = path.read_bytes()
    return data[24] if len(data) > 24 else 0


# -------------------------------------------------------------------------------------- JPEG


def _jpeg(path: Path):
    import imagecodecs
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        mode = im.mode
        _check_size((im.height, im.width, 3), 1)
    if mode not in ("L", "RGB"):
        raise _Stop(f"JPEG mode {mode}")
    arr = imagecodecs.jpeg8_decode(data)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] != (1 if mode == "L" else 3):
        raise _Stop(f"libjpeg-turbo gives {arr.shape[2]} channels for mode {mode}")
    return Decoded([arr], None)
