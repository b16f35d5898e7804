"""JPEG (libjpeg through PIL: levels 1-3 are DCT-scaled decodes) and PNG (imagecodecs) sources.

Both decode a level whole; JPEG JFIF density and PNG ``pHYs`` give the pixel size where they
are finer than 1000 dpi.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spatialfuse._limits import check_decoded_image
from spatialfuse._logging import logger
from spatialfuse.errors import FileFormatError, UnsupportedFormatError
from spatialfuse.io.histology._blocks import _block_mean
from spatialfuse.io.histology._color import _bilevel_as_uint8, _cast, _Color
from spatialfuse.io.histology._source import (
    _ArrayReader,
    _check_declared_size,
    _LevelReader,
    _Source,
    _translate_errors,
)
from spatialfuse.io.histology._units import _Calibration, _fmt

_PIL_LOCK = threading.Lock()


@contextlib.contextmanager
def _pil_open(path: Path) -> Iterator[Any]:
    """Open lazily with PIL, without its decompression-bomb limit (slides are legitimately huge)."""
    from PIL import Image

    with _PIL_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    try:
        yield im
    finally:
        im.close()


class _JpegSource(_Source):
    """JPEG: levels 1-3 are libjpeg's DCT-scaled decodes at 1/2, 1/4 and 1/8 (via PIL ``draft``)."""

    format = "jpeg"

    def __init__(self, path: Path):
        self.path = path
        _check_jpeg_end(path)
        with _translate_errors(path, "reading the JPEG header"):
            with _pil_open(path) as im:
                width, height = im.size
                mode = im.mode
                info = dict(im.info)
                progressive = bool(info.get("progressive") or info.get("progression"))
        if mode not in ("L", "RGB", "CMYK", "YCbCr", "1"):
            raise UnsupportedFormatError(path, f"JPEG colour mode {mode} is not supported")
        self.mode = mode
        self.n_channels = 1 if mode in ("L", "1") else 3
        _check_declared_size(path, width, height, width * height * self.n_channels, "JPEG")
        self.dtype = np.dtype(np.uint8)
        self.scales = [s for s in (1, 2, 4, 8) if min(width, height) >= s]
        self.level_shapes = [(-(-height // s), -(-width // s)) for s in self.scales]
        self.levels_note = "JPEG DCT-scaled decodes" if len(self.scales) > 1 else ""
        self.calibration = _Calibration()
        unit = info.get("jfif_unit")
        density = info.get("jfif_density")
        if unit in (1, 2) and density is not None:
            per = 25400.0 if unit == 1 else 10000.0
            word = "dpi" if unit == 1 else "dots per cm"
            dx, dy = float(density[0]), float(density[1])
            if dx > 0 and dy > 0:
                what = f"JPEG density {_fmt(dx)} × {_fmt(dy)} {word}"
                self.calibration.offer(per / dx, per / dy, "jpeg_density", what, density=True)
            else:
                self.calibration.ignored.append(f"JPEG density {density} is invalid")
        self.details = [f"mode {mode}"] + (["progressive"] if progressive else [])

    @contextlib.contextmanager
    def reader(self, level: int) -> Iterator[_LevelReader]:
        scale = self.scales[level]
        expected = self.level_shapes[level]
        check_decoded_image(self.path, (*expected, self.n_channels), 1)
        with _translate_errors(self.path, f"decoding the JPEG at 1/{scale} scale"):
            with _pil_open(self.path) as im:
                full = (im.size[1], im.size[0])
                if scale > 1:
                    im.draft(None, (full[1] // scale, full[0] // scale))
                if self.mode not in ("L", "RGB"):
                    im = im.convert("L" if self.n_channels == 1 else "RGB")
                arr = np.asarray(im)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.dtype == np.bool_:
            arr = _bilevel_as_uint8(arr)
        if arr.shape[:2] != expected:
            # PIL declined DCT scaling (unusual JPEG): reduce the full decode by block means
            logger.debug("%s: DCT scaling unavailable, block-averaging instead", self.path)
            arr = _cast(_block_mean(arr, scale), arr.dtype)
        yield _ArrayReader(np.ascontiguousarray(arr))


def _check_jpeg_end(path: Path) -> None:
    """Refuse a JPEG without an end-of-image marker (a truncated download or copy)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm.rfind(b"\xff\xd9") < 0:
            raise FileFormatError(path, "is truncated: the JPEG has no end-of-image marker (FFD9)")


class _PngSource(_Source):
    """PNG: one level; pixels are decoded whole with imagecodecs (keeps 16-bit RGB exact)."""

    format = "png"

    def __init__(self, path: Path):
        self.path = path
        chunks = _png_chunks(path)
        ihdr = chunks.get(b"IHDR")
        if ihdr is None or len(ihdr) < 13:
            raise FileFormatError(path, "PNG has no valid IHDR header chunk")
        width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", ihdr[:13])
        if width == 0 or height == 0 or ctype not in (0, 2, 3, 4, 6):
            raise FileFormatError(path, f"PNG header is invalid ({width}×{height}, type {ctype})")
        samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
        row_bytes = 1 + -(-width * samples * depth // 8)  # filter byte + packed samples
        _check_declared_size(path, width, height, height * row_bytes, "PNG", ratio=1100)
        self.level_shapes = [(height, width)]
        self.n_channels = 1 if ctype in (0, 4) else 3
        self.dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
        self.calibration = _Calibration()
        phys = chunks.get(b"pHYs")
        if phys is not None and len(phys) >= 9:
            ppx, ppy, unit = struct.unpack(">IIB", phys[:9])
            if unit == 1 and ppx > 0 and ppy > 0:
                what = f"PNG pHYs {ppx} × {ppy} pixels per metre"
                self.calibration.offer(1e6 / ppx, 1e6 / ppy, "png_phys", what, density=True)
        kinds = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}
        self.details = [f"{kinds[ctype]} {depth}-bit"] + (["interlaced"] if interlace else [])
        if ctype in (4, 6) or b"tRNS" in chunks:
            self.details.append("alpha composited on white")

    @contextlib.contextmanager
    def reader(self, level: int) -> Iterator[_LevelReader]:
        import imagecodecs

        h, w = self.level_shapes[0]
        check_decoded_image(self.path, (h, w, 4), self.dtype.itemsize)  # decoded with alpha
        with _translate_errors(self.path, "decoding the PNG"):
            data = self.path.read_bytes()
            arr = imagecodecs.png_decode(data)
        del data
        if arr.ndim == 2:
            arr = arr[..., None]
        n_raw = arr.shape[2]
        color = _Color(n_raw, self.n_channels, "unassoc" if n_raw in (2, 4) else None)
        arr = color.finish(arr)
        if arr.shape[:2] != self.level_shapes[0] or arr.shape[2] != self.n_channels:
            raise FileFormatError(
                self.path, f"decoded PNG has shape {arr.shape}, header says {self.level_shapes[0]}"
            )
        yield _ArrayReader(arr)


def _png_chunks(path: Path) -> dict[bytes, bytes]:
    """Walk the PNG chunk list (headers only for IDAT); check it ends with IEND."""
    found: dict[bytes, bytes] = {}
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        fh.seek(8)
        pos = 8
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise FileFormatError(path, "is truncated: the PNG ends before its IEND chunk")
            length, ctype = struct.unpack(">I4s", head)
            end = pos + 12 + length
            if end > size:
                raise FileFormatError(
                    path, f"is truncated: PNG chunk {ctype!r} extends past the end of the file"
                )
            if ctype in (b"IHDR", b"pHYs", b"tRNS"):
                found[ctype] = fh.read(length)
            if ctype == b"IEND":
                return found
            fh.seek(end)
            pos = end
