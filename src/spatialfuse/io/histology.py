"""Read histology images (H&E and other stains) lazily, in micrometres.

:func:`read_histology` opens JPEG, PNG, TIFF and OME-TIFF files (tiled, pyramidal, BigTIFF,
Aperio SVS and other TIFF-based whole-slide formats that :mod:`tifffile` parses) without decoding
their pixels and returns a :class:`HistologyImage`: shape, channels, dtype, pyramid levels and the
physical pixel size, with methods to read a level, a region or a downsampled copy.

Coordinates follow ``docs/coordinates.md``: points are ``(x, y) = (column, row)``; the frame's
origin is the outer top-left corner of pixel ``(0, 0)``, so the centre of array index
``(col, row)`` at a level with pixel size ``(sx, sy)`` µm lies at
``((col + 0.5)·sx, (row + 0.5)·sy)`` µm.

Pixel conventions of every array returned here:

- always ``(rows, cols, channels)``: grayscale stays **one channel** ``(H, W, 1)`` (it is not
  expanded to RGB); channel-first OME-TIFF ``(C, Y, X)`` is moved to ``(Y, X, C)``;
- an alpha channel (PNG/TIFF RGBA, gray + alpha, palette with transparency) is **composited on
  white** (the background of a slide scan), so transparent pixels read as white, opaque pixels
  keep their exact values, and the alpha channel is not returned;
- the dtype of the file is kept (``uint16`` stays ``uint16``); 1-bit images become ``uint8`` 0/255.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from spatialfuse._limits import check_decoded_image, require_regular_file
from spatialfuse._logging import logger
from spatialfuse.errors import (
    CalibrationError,
    DataWarning,
    FileFormatError,
    MissingFileError,
    SpatialfuseError,
    UnsupportedFormatError,
)

__all__ = ["HistologyImage", "describe_histology", "read_histology"]

PixelSizeSource = Literal[
    "argument", "ome", "tiff_resolution", "aperio_mpp", "png_phys", "jpeg_density"
]

#: Pixel sizes derived from dots-per-inch style metadata (TIFF resolution tags, PNG pHYs, JPEG
#: density) coarser than this (i.e. below 1000 dpi) are display defaults such as 72 or 96 dpi
#: (352.8 / 264.6 µm per pixel), not microscope calibrations, and are ignored with a warning.
MAX_DENSITY_PIXEL_SIZE_UM = 25.4

#: Bytes of pixel data read at once while downsampling block-wise (a strip of tiles).
_BLOCK_BYTES = 8 * 2**20

#: The most each compression can inflate, by TIFF Compression code (uncompressed: 1; PackBits:
#: 128 bytes from 2; deflate ~1,032; LZW ~1,350; zstd ~32,800; LZMA ~6,500). A level, or one of
#: its strips or tiles, that declares more pixel bytes than its stored bytes times this cannot be
#: in the file and is refused before anything is allocated. Other codecs (JPEG, JPEG 2000, WebP,
#: ...) get _IMAGE_MAX_RATIO: whole-slide levels stay far below it.
_TIFF_MAX_RATIO = {1: 1, 32773: 64, 8: 1100, 32946: 1100, 5: 1400, 50000: 33000, 34926: 33000}
_TIFF_MAX_RATIO.update({34925: 7000})
_IMAGE_MAX_RATIO = 2000
#: Slack on those bounds, for headers, row padding and tiny images.
_RATIO_SLACK_BYTES = 4096
#: An OME image may declare at most this many planes (Z × C × T, or a TiffData index or count)
#: per page of the file, and at least this many whatever the pages: tifffile allocates a list of
#: them before it reads anything.
_OME_PLANES_PER_PAGE = 64
_OME_MIN_PLANES = 1 << 16

_SOURCE_WORDS = {
    "argument": "the pixel_size_um argument",
    "ome": "OME-XML PhysicalSizeX/Y",
    "tiff_resolution": "TIFF XResolution/YResolution",
    "aperio_mpp": "Aperio MPP",
    "png_phys": "PNG pHYs chunk",
    "jpeg_density": "JPEG JFIF density",
    "unknown": "nowhere (unknown: a nominal 1 µm until registration estimates it)",
    "estimated": "registration's estimate",
}

_FORMAT_WORDS = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF", "ome-tiff": "OME-TIFF"}

# Lengths in micrometres, for OME ``PhysicalSize*Unit`` (UnitsLength) and ImageJ ``unit=``.
_UNIT_UM: dict[str, float] = {
    "ym": 1e-18,
    "zm": 1e-15,
    "am": 1e-12,
    "fm": 1e-9,
    "pm": 1e-6,
    "Å": 1e-4,
    "\u212b": 1e-4,  # ANGSTROM SIGN
    "nm": 1e-3,
    "µm": 1.0,  # MICRO SIGN
    "\u03bcm": 1.0,  # GREEK SMALL LETTER MU
    "um": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "dm": 1e5,
    "m": 1e6,
    "dam": 1e7,
    "hm": 1e8,
    "km": 1e9,
    "Mm": 1e12,
    "Gm": 1e15,
    "Tm": 1e18,
    "Pm": 1e21,
    "Em": 1e24,
    "Zm": 1e27,
    "Ym": 1e30,
    "thou": 25.4,
    "li": 25400.0 / 12.0,
    "in": 25400.0,
    "ft": 304800.0,
    "yd": 914400.0,
    "mi": 1609344000.0,
    "pt": 25400.0 / 72.0,
}
_UNIT_WORDS_UM: dict[str, float] = {
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micrometers": 1.0,
    "micrometres": 1.0,
    "\\u00b5m": 1.0,  # ImageJ writes the micro sign escaped
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "nanometers": 1e-3,
    "nanometres": 1e-3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "millimeters": 1e3,
    "millimetres": 1e3,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "meter": 1e6,
    "metre": 1e6,
    "inch": 25400.0,
    "inches": 25400.0,
}
# TIFF ResolutionUnit: 2 inch, 3 centimetre; 4 and 5 are tifffile's millimetre/micrometre.
_RESUNIT_UM = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
_RESUNIT_WORDS = {2: "inch", 3: "cm", 4: "mm", 5: "µm"}

_PIL_LOCK = threading.Lock()


def _unit_um(unit: str) -> float | None:
    unit = unit.strip()
    if unit in _UNIT_UM:
        return _UNIT_UM[unit]
    return _UNIT_WORDS_UM.get(unit.lower())


# --------------------------------------------------------------------------------------------
# errors


@contextlib.contextmanager
def _translate_errors(path: Path, action: str) -> Iterator[None]:
    """Re-raise decoder / parser failures as :class:`FileFormatError` naming the file."""
    try:
        yield
    except (SpatialfuseError, MemoryError, KeyboardInterrupt):
        raise
    except FileNotFoundError as exc:
        raise MissingFileError(path, f"disappeared while {action}") from exc
    except Exception as exc:  # decoders raise anything: OSError, ValueError, RuntimeError, ...
        raise FileFormatError(
            path,
            f"cannot be read ({action} failed: {type(exc).__name__}: {exc}); "
            "the file is truncated, corrupt or not a valid image",
        ) from exc


# --------------------------------------------------------------------------------------------
# calibration


class _Calibration:
    """A pixel size found in a file, or the reasons none was found."""

    def __init__(self) -> None:
        self.size: tuple[float, float] | None = None
        self.source: str | None = None
        self.ignored: list[str] = []

    def offer(self, sx: float, sy: float, source: str, what: str, *, density: bool) -> bool:
        """Accept ``(sx, sy)`` µm from ``source`` unless it is invalid or a display default."""
        if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
            self.ignored.append(f"{what} gives an invalid pixel size ({sx!r}, {sy!r}) µm")
            return False
        if density and max(sx, sy) > MAX_DENSITY_PIXEL_SIZE_UM:
            self.ignored.append(
                f"{what} = {_fmt(sx)} × {_fmt(sy)} µm per pixel was ignored: a density below "
                f"1000 dpi (pixels > {MAX_DENSITY_PIXEL_SIZE_UM} µm) is a display default such "
                "as 72 or 96 dpi, not a microscope calibration"
            )
            return False
        self.size = (float(sx), float(sy))
        self.source = source
        return True


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _validate_pixel_size_arg(value: Any, path: Path) -> tuple[float, float]:
    hint = "pixel_size_um must be a positive finite number of µm or an (x, y) pair of them"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(path, f"{hint}, got {value!r}") from exc
    if isinstance(value, bool) or arr.ndim > 1 or arr.size not in (1, 2):
        raise CalibrationError(path, f"{hint}, got {value!r}")
    pair = np.broadcast_to(arr.ravel(), (2,)) if arr.size == 1 else arr.ravel()
    if not (np.all(np.isfinite(pair)) and np.all(pair > 0)):
        raise CalibrationError(path, f"{hint}, got {value!r}")
    return float(pair[0]), float(pair[1])


def _resolution_value(tag: Any) -> float | None:
    """Return a TIFF RATIONAL (num, den) or number as float, None if unusable."""
    if tag is None:
        return None
    value = tag.value
    try:
        if isinstance(value, tuple | list):
            if len(value) < 2 or float(value[1]) == 0:
                return None
            return float(value[0]) / float(value[1])
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# pixel post-processing


class _Color:
    """How the raw samples of a file become the returned channels."""

    def __init__(
        self,
        n_raw: int,
        n_out: int,
        alpha: Literal["assoc", "unassoc"] | None,
        *,
        invert: bool = False,
    ):
        self.n_raw = n_raw
        self.n_out = n_out
        self.alpha = alpha  # index n_out of the raw channels when not None
        self.invert = invert  # TIFF MINISWHITE: 0 is white

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Turn a raw ``(h, w, n_raw)`` block into ``(h, w, n_out)`` in the output dtype."""
        if raw.dtype == np.bool_:
            raw = _bilevel_as_uint8(raw)
        color = raw[..., : self.n_out]
        if self.invert:
            color = np.iinfo(raw.dtype).max - color
        if self.alpha is None or raw.shape[2] <= self.n_out:
            return np.ascontiguousarray(color)
        alpha = raw[..., self.n_out]
        if raw.dtype.kind in "ui":
            white = float(np.iinfo(raw.dtype).max)
        else:
            white = 1.0
        if alpha.size == 0 or np.all(alpha == white):
            return np.ascontiguousarray(color)
        a = np.clip(alpha.astype(np.float64) / white, 0.0, 1.0)[..., None]
        if self.alpha == "assoc":  # premultiplied
            out = color.astype(np.float64) + white * (1.0 - a)
        else:
            out = color.astype(np.float64) * a + white * (1.0 - a)
        return _cast(out, raw.dtype)


def _bilevel_as_uint8(values: np.ndarray) -> np.ndarray:
    """1-bit pixels as 0/255 ``uint8``, read from their bytes.

    A decoder may leave bytes other than 0 and 1 in a bool array; arithmetic on those wraps.
    """
    return np.where(values.view(np.uint8) != 0, np.uint8(255), np.uint8(0))


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _block_mean(block: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k × k`` blocks of ``(h, w, c)``; partial blocks at the end average real pixels.

    Sums ``k`` strided row slices, then ``k`` strided column slices of those, each in the
    smallest exact accumulator (``uint16`` for 8-bit pixels and small ``k``): about ten times
    faster than a float64 reduction over a reshaped view, which for an 8000-pixel H&E was most
    of a registration's extra time. The result is float64 of shape ``(ceil(h / k), ceil(w / k),
    c)``.
    """
    h, w, c = block.shape
    kind = block.dtype.kind
    top = 1 if kind == "b" else int(np.iinfo(block.dtype).max) if kind in "ui" else 0
    if kind in "ub" and top * k * k <= np.iinfo(np.uint64).max:
        row_acc, acc = np.min_scalar_type(top * k), np.min_scalar_type(top * k * k)
    elif kind == "i" and (top + 1) * k * k <= np.iinfo(np.int64).max:
        row_acc = acc = np.dtype(np.int64)
    else:  # floats, and 64-bit integers whose sums could overflow
        row_acc = acc = np.dtype(np.float64)
    nh, nw = -(-h // k), -(-w // k)
    rows = np.zeros((nh, w, c), row_acc)
    for i in range(min(k, h)):
        part = block[i::k]
        rows[: len(part)] += part
    out = np.zeros((nh, nw, c), acc)
    for j in range(min(k, w)):
        part = rows[:, j::k]
        out[:, : part.shape[1]] += part
    count_rows = np.minimum(k, h - np.arange(nh) * k)
    count_cols = np.minimum(k, w - np.arange(nw) * k)
    return out / (count_rows[:, None, None] * count_cols[None, :, None]).astype(np.float64)


def _block_step(chunk: int, k: int, n: int, target: int) -> int:
    """Return a block length on one axis: a multiple of ``k``, chunk-aligned if cheap, or ``n``."""
    if chunk >= n or target >= n:
        return n
    base = math.lcm(chunk, k)
    if base > 4 * max(chunk, k):
        base = k * -(-chunk // k)
    step = base * max(1, target // base)
    return n if step >= n else step


# --------------------------------------------------------------------------------------------
# sources: one per container format; they know levels, channels and how to read a level


class _LevelReader:
    """Reads processed ``(h, w, C)`` regions of one level while its file is open."""

    shape: tuple[int, int]
    chunks: tuple[int, int]

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class _ArrayReader(_LevelReader):
    """A level decoded whole into memory (JPEG, PNG): regions are slices of it."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = (int(array.shape[0]), int(array.shape[1]))
        rows = max(1, _BLOCK_BYTES // max(1, array.shape[1] * array.shape[2] * array.itemsize))
        self.chunks = (min(rows, self.shape[0]), self.shape[1])

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if (y0, x0) == (0, 0) and (y1, x1) == self.shape:
            return self.array
        return self.array[y0:y1, x0:x1].copy()


class _Source:
    format: str
    level_shapes: list[tuple[int, int]]
    n_channels: int
    dtype: np.dtype
    calibration: _Calibration
    details: list[str]
    levels_note: str = ""

    def reader(self, level: int) -> contextlib.AbstractContextManager[_LevelReader]:
        raise NotImplementedError  # pragma: no cover


class _TiffSource(_Source):
    def __init__(self, path: Path, series: int):

        self.path = path
        self.series = series
        with _translate_errors(path, "parsing the TIFF structure"):
            with _open_tiff(path) as tif:
                self._inspect(tif)

    # -- opening

    def _inspect(self, tif: Any) -> None:
        import tifffile

        path = self.path
        n_series = len(tif.series)
        if n_series == 0:
            raise FileFormatError(path, "TIFF file contains no image data")
        if not 0 <= self.series < n_series:
            raise FileFormatError(
                path,
                f"has {n_series} image series (0 to {n_series - 1}); series={self.series} "
                "does not exist",
            )
        s = tif.series[self.series]
        self.format = "ome-tiff" if tif.is_ome else "tiff"
        kf = s.keyframe
        dtype = np.dtype(s.dtype)
        if dtype.kind not in "uifb":
            raise UnsupportedFormatError(path, f"pixel type {dtype} is not supported")
        self.dtype = np.dtype(np.uint8) if dtype.kind == "b" else dtype

        photometric = int(kf.photometric)
        extras = tuple(int(e) for e in (kf.extrasamples or ()))
        P = tifffile.PHOTOMETRIC
        invert = photometric == P.MINISWHITE and dtype.kind in "uib"
        if photometric not in (P.RGB, P.YCBCR, P.MINISBLACK) and not invert:
            name = getattr(kf.photometric, "name", str(photometric))
            raise UnsupportedFormatError(
                path,
                f"photometric interpretation {name} ({dtype}) is not supported (RGB, YCbCr, "
                "MINISBLACK gray or multichannel, integer MINISWHITE are); convert the file to RGB",
            )

        self._layouts = []
        self.level_shapes = []
        n_raw = None
        for i, lvl in enumerate(s.levels):
            layout = self._layout(lvl.axes, lvl.shape, i)
            self._layouts.append(layout)
            self.level_shapes.append((lvl.shape[layout["y"]], lvl.shape[layout["x"]]))
            h, w = self.level_shapes[-1]
            if not all(isinstance(v, int | np.integer) and v >= 1 for v in lvl.shape):
                raise FileFormatError(
                    path,
                    f"level {i} has no pixels or a size that is not a "
                    f"whole number ({w!r} × {h!r}): its size tags are damaged",
                )
            c = 1 if layout["c"] is None else lvl.shape[layout["c"]]
            if n_raw is None:
                n_raw = c
            elif c != n_raw:
                raise UnsupportedFormatError(
                    path, f"pyramid level {i} has {c} channels but level 0 has {n_raw}"
                )
        assert n_raw is not None

        alpha: Literal["assoc", "unassoc"] | None = None
        n_out = n_raw
        if photometric in (P.RGB, P.YCBCR) and n_raw > 3:
            n_out = 3
            if extras and extras[0] in (1, 2):
                alpha = "assoc" if extras[0] == 1 else "unassoc"
            else:
                warnings.warn(
                    f"{path}: RGB image has {n_raw - 3} extra sample channel(s) that are not "
                    "alpha; they are dropped",
                    DataWarning,
                    stacklevel=4,
                )
        elif (
            photometric in (P.MINISBLACK, P.MINISWHITE)
            and n_raw == 2
            and extras[:1] in ((1,), (2,))
        ):
            n_out = 1
            alpha = "assoc" if extras[0] == 1 else "unassoc"
        self._color = _Color(n_raw, n_out, alpha, invert=invert)
        self.n_channels = n_out

        self._check_storage(s)
        self.calibration = self._calibration(tif, s, kf)
        self.levels_note = "stored pyramid" if len(self.level_shapes) > 1 else ""

        details = ["BigTIFF" if tif.is_bigtiff else "classic TIFF"]
        if kf.is_tiled:
            details.append(f"tiled {kf.tilewidth}×{kf.tilelength}")
        else:
            details.append("strips")
        comp = getattr(kf.compression, "name", str(kf.compression)).lower()
        details.append(f"compression {comp}")
        if tif.is_svs:
            details.append("Aperio SVS")
        if n_series > 1:
            details.append(f"series {self.series} of {n_series}")
        if alpha:
            details.append("alpha composited on white")
        self.details = details

    def _layout(self, axes: str, shape: Sequence[int], level: int) -> dict[str, Any]:
        path = self.path
        if "Y" not in axes or "X" not in axes:
            raise UnsupportedFormatError(path, f"image axes {axes!r} have no Y and X")
        channel_axes = [i for i, a in enumerate(axes) if a in "SC" and shape[i] > 1]
        extra = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
        extra = [i for i in extra if i not in channel_axes[:1]]
        if extra:
            sizes = ", ".join(f"{axes[i]}={shape[i]}" for i in extra)
            raise UnsupportedFormatError(
                path,
                f"level {level} has axes {axes!r} with shape {tuple(shape)} ({sizes}): only a "
                "single 2-D image with one channel axis is read (extract one plane, or choose "
                "another series=)",
            )
        index: list[Any] = [0] * len(axes)
        y, x = axes.index("Y"), axes.index("X")
        index[y] = index[x] = None
        c = channel_axes[0] if channel_axes else None
        if c is not None:
            index[c] = slice(None)
        # order of the kept axes after integer indexing, to move to (Y, X, C)
        kept = [i for i in range(len(axes)) if index[i] is None or i == c]
        return {"y": y, "x": x, "c": c, "index": index, "kept": kept}

    def _check_storage(self, s: Any) -> None:
        """Refuse pixel data past the end of the file, and sizes its stored bytes cannot hold."""
        size = os.path.getsize(self.path)
        for i, lvl in enumerate(s.levels):
            for page in lvl.pages:
                if page is None:
                    continue
                offsets = np.asarray(page.dataoffsets, dtype=np.int64)
                counts = np.asarray(page.databytecounts, dtype=np.int64)[: offsets.size]
                if offsets.size:
                    end = int(np.max(offsets + counts))
                    if end > size:
                        raise FileFormatError(
                            self.path,
                            f"is truncated: pixel data of level {i} extends to byte {end} but "
                            f"the file has {size} bytes",
                        )
                stored = int(counts.sum()) if counts.size else 0
                self._check_declared(page, i, stored, int(counts.max()) if counts.size else 0)

    def _check_declared(self, page: Any, level: int, stored: int, largest: int) -> None:
        """Refuse a level, or a strip or tile of it, declaring more than ``stored`` bytes hold."""
        page = page.keyframe  # (a TiffFrame has its own data, the keyframe's layout)
        code = int(page.compression)
        ratio = _TIFF_MAX_RATIO.get(code, _IMAGE_MAX_RATIO)
        bits = max(int(page.bitspersample), 1)
        declared = -(-math.prod(int(v) for v in page.shape) * bits // 8)
        chunk = -(-math.prod(int(v) for v in page.chunks) * bits // 8)
        codec = getattr(page.compression, "name", str(code)).lower()
        for what, need, have in (
            (f"{'×'.join(map(str, page.shape))} values", declared, stored),
            (f"strips or tiles of {'×'.join(map(str, page.chunks))} values", chunk, largest),
        ):
            if need > have * ratio + _RATIO_SLACK_BYTES:
                raise FileFormatError(
                    self.path,
                    f"level {level} declares {what} ({need:,} bytes), more than its {have:,} "
                    f"stored bytes of {codec} data can hold: its size tags are damaged",
                )

    def _calibration(self, tif: Any, s: Any, kf: Any) -> _Calibration:
        cal = _Calibration()
        if tif.is_ome and self._ome_calibration(tif, s, cal):
            return cal
        description = kf.description or ""
        if description.startswith("Aperio"):
            m = re.search(r"\|\s*MPP\s*=\s*([-+0-9.eE]+)", description)
            if m:
                try:
                    mpp = float(m.group(1))
                except ValueError:
                    cal.ignored.append(f"Aperio MPP = {m.group(1)!r} is not a number")
                else:
                    if cal.offer(mpp, mpp, "aperio_mpp", "Aperio MPP", density=False):
                        return cal
        tags = kf.tags
        xres = _resolution_value(tags.get("XResolution"))
        yres = _resolution_value(tags.get("YResolution"))
        if xres is None and yres is None:
            return cal
        xres = xres if xres is not None else yres
        yres = yres if yres is not None else xres
        unit_tag = tags.get("ResolutionUnit")
        unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
        if unit in _RESUNIT_UM:
            if not (xres and yres and xres > 0 and yres > 0):
                cal.ignored.append(f"TIFF resolution {xres!r} × {yres!r} per unit is invalid")
                return cal
            um = _RESUNIT_UM[unit]
            what = f"TIFF resolution {_fmt(xres)} × {_fmt(yres)} pixels per {_RESUNIT_WORDS[unit]}"
            cal.offer(um / xres, um / yres, "tiff_resolution", what, density=True)
            return cal
        # ResolutionUnit NONE: not a calibration, unless ImageJ names the unit
        if tif.is_imagej:
            meta = tif.imagej_metadata or {}
            unit_name = str(meta.get("unit", ""))
            um = _unit_um(unit_name) if unit_name else None
            if um is not None and xres and yres and xres > 0 and yres > 0:
                what = f"ImageJ resolution {_fmt(xres)} pixels per {unit_name}"
                cal.offer(um / xres, um / yres, "tiff_resolution", what, density=False)
        return cal

    def _ome_calibration(self, tif: Any, s: Any, cal: _Calibration) -> bool:
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(tif.ome_metadata)
        except (ET.ParseError, TypeError, ValueError) as exc:
            cal.ignored.append(f"OME-XML could not be parsed ({exc})")
            return False
        images = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Image"]
        pixels_of = []
        for img in images:
            pix = next((el for el in img if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
            pixels_of.append(pix)
        names = [img.get("Name") for img in images]
        if len(images) == len(tif.series):
            idx: int | None = self.series
        elif s.name and names.count(s.name) == 1:
            idx = names.index(s.name)
        elif len(images) == 1:
            idx = 0
        else:
            cal.ignored.append("OME-XML images could not be matched to the TIFF series")
            return False
        pix = pixels_of[idx] if idx is not None and idx < len(pixels_of) else None
        if pix is None:
            return False
        sizes = []
        for ax in ("X", "Y"):
            value = pix.get(f"PhysicalSize{ax}")
            if value is None:
                sizes.append(None)
                continue
            unit = pix.get(f"PhysicalSize{ax}Unit", "µm")  # OME default unit is µm
            um = _unit_um(unit)
            if um is None:
                cal.ignored.append(f"OME PhysicalSize{ax}Unit {unit!r} is not a length unit")
                return False
            try:
                sizes.append(float(value) * um)
            except ValueError:
                cal.ignored.append(f"OME PhysicalSize{ax} = {value!r} is not a number")
                return False
        sx, sy = sizes
        if sx is None and sy is None:
            return False
        sx = sx if sx is not None else sy
        sy = sy if sy is not None else sx
        assert sx is not None and sy is not None
        return cal.offer(sx, sy, "ome", "OME PhysicalSizeX/Y", density=False)

    # -- reading

    @contextlib.contextmanager
    def reader(self, level: int) -> Iterator[_LevelReader]:
        import zarr

        path = self.path
        with _translate_errors(path, f"opening level {level}"):
            tif = _open_tiff(path)
        try:
            with _translate_errors(path, f"opening level {level}"):
                s = tif.series[self.series]
                offset = _contiguous_offset(s, level)
            if offset is not None:
                dtype = np.dtype(s.levels[level].dtype).newbyteorder(tif.byteorder)
                with open(path, "rb") as fh:
                    yield _ContiguousLevelReader(self, fh, offset, dtype, level)
                return
            with _translate_errors(path, f"opening level {level}"):
                store = s.aszarr(level=level)
                z = zarr.open_array(store, mode="r")
            yield _TiffLevelReader(self, z, self._layouts[level], self.level_shapes[level], level)
        finally:
            tif.close()


def _open_tiff(path: Path) -> Any:
    """A ``tifffile.TiffFile`` of ``path``, its IFDs indexed and its OME-XML checked.

    Counting the pages first bounds the walk of the IFD chain: tifffile's series parsing alone
    goes round some circular chains without end.
    """
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        n_pages = len(tif.pages)
        if tif.is_ome:
            _check_ome_planes(path, tif, n_pages)
    except BaseException:
        tif.close()
        raise
    return tif


def _check_ome_planes(path: Path, tif: Any, n_pages: int) -> None:
    """Refuse OME-XML that declares far more planes than the file has pages, or entities.

    tifffile lists the planes an OME image declares (its sizes over its first page's) before it
    reads any, and expands entities.
    """
    import xml.etree.ElementTree as ET

    omexml = tif.ome_metadata
    if not omexml:
        return
    if "<!DOCTYPE" in omexml or "<!ENTITY" in omexml:
        raise FileFormatError(
            path, "its OME-XML declares a DOCTYPE or entities, which OME never uses"
        )
    try:
        root = ET.fromstring(omexml)
    except ET.ParseError:
        return  # tifffile falls back to reading the pages as they are
    limit = max(_OME_MIN_PLANES, _OME_PLANES_PER_PAGE * n_pages)
    for pixels in (e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"):
        sizes = {k: _ome_int(pixels.get(f"Size{k}")) for k in "XYZCT"}
        first = 0
        for data in (e for e in pixels if e.tag.rsplit("}", 1)[-1] == "TiffData"):
            values = [_ome_int(data.get(k), 0) for k in ("IFD", "PlaneCount", "FirstZ")]
            values += [_ome_int(data.get(k), 0) for k in ("FirstC", "FirstT")]
            if max(values) > limit:
                raise FileFormatError(
                    path,
                    f"its OME-XML TiffData points at plane {max(values):,} of a file of "
                    f"{n_pages:,} page(s): the metadata is damaged",
                )
            first = first or values[0]
        page = tif.pages[first] if first < n_pages else tif.pages.first
        area = max(1, int(page.imagewidth) * int(page.imagelength))
        planes = math.prod(sizes.values()) // area
        if planes > limit:
            raise FileFormatError(
                path,
                f"its OME-XML declares an image of {planes:,} planes of {page.imagewidth} × "
                f"{page.imagelength} pixels for a file of {n_pages:,} page(s) (Size X, Y, Z, C, T "
                f"= {', '.join(str(v) for v in sizes.values())}): the metadata is damaged",
            )


def _ome_int(value: str | None, default: int = 1) -> int:
    """An OME integer attribute, ``default`` where absent or not an integer (tifffile says so)."""
    try:
        return max(int(value), 0) if value is not None else default
    except ValueError:
        return default


def _contiguous_offset(series: Any, level: int) -> int | None:
    """File offset of a level stored uncompressed in one contiguous ``(Y, X[, C])`` block, or None.

    Such a level is read by plain file reads of whole rows: through zarr, a 150 MB uncompressed
    H&E took longer to read than to register.
    """
    lvl = series.levels[level]
    offset = getattr(lvl, "dataoffset", None)
    if offset is None or len(lvl.pages) != 1:
        return None
    page = lvl.pages[0]
    if page is None or not getattr(page, "is_memmappable", False):
        return None
    import tifffile

    plain = (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.MINISBLACK)
    dtype = np.dtype(lvl.dtype)
    if page.photometric not in plain or dtype.kind == "b":
        return None
    if page.bitspersample != 8 * dtype.itemsize:
        return None
    if lvl.axes not in ("YX", "YXS"):
        return None
    return int(offset)


class _TiffLevelReader(_LevelReader):
    def __init__(
        self,
        src: _TiffSource,
        z: Any,
        layout: dict[str, Any],
        shape: tuple[int, int],
        level: int,
    ):
        self.src = src
        self.z = z
        self.layout = layout
        self.shape = shape
        self.level = level
        chunks = z.chunks
        self.chunks = (int(chunks[layout["y"]]), int(chunks[layout["x"]]))

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        lay = self.layout
        index = list(lay["index"])
        index[lay["y"]] = slice(y0, y1)
        index[lay["x"]] = slice(x0, x1)
        with _translate_errors(self.src.path, f"decoding level {self.level}"):
            raw = np.asarray(self.z[tuple(index)])
        # axes left: Y, X and maybe C, in file order
        kept = lay["kept"]
        order = [kept.index(lay["y"]), kept.index(lay["x"])]
        if lay["c"] is None:
            raw = raw.transpose(order)[..., None]
        else:
            raw = raw.transpose([*order, kept.index(lay["c"])])
        return self.src._color.finish(raw)


class _ContiguousLevelReader(_LevelReader):
    """Rows of an uncompressed ``(Y, X[, C])`` level read straight from the file."""

    def __init__(self, src: _TiffSource, fh: Any, offset: int, dtype: np.dtype, level: int):
        self.src = src
        self.fh = fh
        self.offset = offset
        self.dtype = dtype
        self.level = level
        self.shape = src.level_shapes[level]
        self.n_raw = src._color.n_raw
        self.chunks = (1, self.shape[1])

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        width = self.shape[1]
        row_bytes = width * self.n_raw * self.dtype.itemsize
        raw = np.empty((y1 - y0, width, self.n_raw), self.dtype)
        self.fh.seek(self.offset + y0 * row_bytes)
        got = self.fh.readinto(memoryview(raw).cast("B"))
        if got != raw.nbytes:
            raise FileFormatError(
                self.src.path,
                f"is truncated: level {self.level} rows {y0}-{y1} end past the end of the file",
            )
        raw = raw[:, x0:x1]
        if not self.dtype.isnative:
            raw = raw.astype(self.dtype.newbyteorder("="))
        return self.src._color.finish(raw)


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


def _check_declared_size(
    path: Path, width: int, height: int, nbytes: int, kind: str, *, ratio: int = _IMAGE_MAX_RATIO
) -> None:
    """Refuse a header declaring more pixel bytes than the file can hold (before decoding)."""
    size = os.path.getsize(path)
    if nbytes > size * ratio + _RATIO_SLACK_BYTES:
        raise FileFormatError(
            path,
            f"its {kind} header declares {width:,} × {height:,} pixels ({nbytes:,} bytes), more "
            f"than its {size:,} bytes can hold: the header is damaged",
        )


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


# --------------------------------------------------------------------------------------------
# opening


def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head:
        raise FileFormatError(path, "file is empty")
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    # something else: say what it is if PIL knows it
    from PIL import UnidentifiedImageError

    try:
        with _pil_open(path) as im:
            fmt = im.format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        ext = path.suffix
        hint = f" despite its {ext} extension" if ext else ""
        raise FileFormatError(
            path,
            f"is not an image spatialfuse can read{hint}: expected JPEG, PNG or TIFF content, "
            f"but it starts with {head[:8]!r}",
        ) from exc
    raise UnsupportedFormatError(
        path, f"{fmt} images are not supported; convert to TIFF, PNG or JPEG"
    )


def read_histology(
    path: str | os.PathLike,
    *,
    pixel_size_um: float | tuple[float, float] | str | None = None,
    series: int = 0,
) -> HistologyImage:
    """Open a histology image lazily and find its pixel size in µm.

    Only the header and metadata are read: no full-resolution pixels are decoded until
    :meth:`HistologyImage.read`, :meth:`~HistologyImage.read_region` or
    :meth:`~HistologyImage.downsampled` asks for them. The format is recognised by content, not by
    file extension.

    Parameters
    ----------
    path
        A JPEG, PNG or TIFF file: plain, tiled, BigTIFF, OME-TIFF (pyramids as SubIFDs or as
        separate levels), Aperio SVS and other TIFF-based slide formats :mod:`tifffile` parses.
    pixel_size_um
        Pixel size in µm, a number (square pixels) or an ``(x, y)`` pair. When given it always
        wins over the file's metadata (``pixel_size_source == "argument"``). When absent the file's
        calibration is used, in this order: OME ``PhysicalSizeX/Y`` (with their unit, µm by
        default), Aperio ``MPP``, TIFF ``XResolution``/``YResolution`` with ``ResolutionUnit``
        inch or centimetre (unit NONE is not a calibration, except in ImageJ files that name a
        length unit), PNG ``pHYs`` in pixels per metre, JPEG JFIF density in dots per inch or cm.
        Densities below 1000 dpi (pixels larger than 25.4 µm) are display defaults such as 72 dpi
        and are ignored with a :class:`~spatialfuse.errors.DataWarning`. ``"auto"``: the file's
        calibration where it has one, else a nominal 1 µm with ``pixel_size_source ==
        "unknown"``; :func:`spatialfuse.reg.register` then estimates the pixel size in its
        search and reports it (also when a file's calibration is implausible).
    series
        Which image series of a multi-series TIFF to read (0 for JPEG and PNG).

    Returns
    -------
    HistologyImage
        The lazily opened image, with ``pixel_size_um`` and ``pixel_size_source`` set.

    Raises
    ------
    MissingFileError
        The file does not exist.
    FileFormatError
        The file is not an image, is truncated or corrupt, or ``series`` does not exist.
    UnsupportedFormatError
        A valid file whose layout is not read (e.g. Z stacks, CMYK TIFF, GIF).
    CalibrationError
        ``pixel_size_um`` is not positive and finite, or it is absent and the file has no
        usable calibration.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise MissingFileError(p, "histology image not found")
    if p.is_dir():
        raise FileFormatError(p, "is a directory, expected an image file")
    require_regular_file(p, "image file")
    auto = isinstance(pixel_size_um, str) and pixel_size_um == "auto"
    arg = None if pixel_size_um is None or auto else _validate_pixel_size_arg(pixel_size_um, p)
    if isinstance(series, bool) or not isinstance(series, int | np.integer):
        raise TypeError(f"series must be an int, got {series!r}")
    try:
        kind = _sniff(p)
    except PermissionError as exc:
        raise FileFormatError(p, "cannot be read: permission denied") from exc
    if kind != "tiff" and series != 0:
        raise FileFormatError(p, f"a {kind.upper()} file has one image; series={series} is invalid")
    src: _Source
    if kind == "tiff":
        src = _TiffSource(p, int(series))
    elif kind == "jpeg":
        src = _JpegSource(p)
    else:
        src = _PngSource(p)

    cal = src.calibration
    if arg is not None:
        size, source = arg, "argument"
        if cal.size is not None and not np.allclose(arg, cal.size, rtol=1e-3):
            logger.info(
                "%s: pixel_size_um=%s overrides the file's %s µm (%s)",
                p,
                arg,
                cal.size,
                cal.source,
            )
    elif cal.size is not None:
        assert cal.source is not None
        size, source = cal.size, cal.source
    elif auto:
        for note in cal.ignored:
            warnings.warn(f"{p}: {note}", DataWarning, stacklevel=2)
        size, source = (1.0, 1.0), "unknown"
    else:
        for note in cal.ignored:
            warnings.warn(f"{p}: {note}", DataWarning, stacklevel=2)
        why = ("; ".join(cal.ignored) + ". ") if cal.ignored else ""
        raise CalibrationError(
            p,
            f"no pixel size calibration found in the file. {why}"
            "Pass pixel_size_um= (µm per pixel, a number or an (x, y) pair) to read_histology",
        )
    return HistologyImage(p, src, size, source, series=int(series))


# --------------------------------------------------------------------------------------------
# the image


class HistologyImage:
    """A lazily opened histology image with its pixel size in micrometres.

    Create it with :func:`read_histology`. Holds no open file handle and no pixels: every read
    reopens the file.

    Attributes
    ----------
    path : pathlib.Path
        The image file.
    format : str
        ``"jpeg"``, ``"png"``, ``"tiff"`` or ``"ome-tiff"``.
    series : int
        The TIFF image series read.
    shape : tuple of int
        ``(rows, cols)`` at full resolution (level 0).
    n_channels : int
        Channels of the returned arrays: 3 for RGB, 1 for grayscale (alpha is composited away).
    dtype : numpy.dtype
        Pixel type of the returned arrays (the file's; 1-bit becomes ``uint8``).
    pixel_size_um : tuple of float
        ``(x, y)`` pixel size at level 0 in µm.
    pixel_size_source : str
        Where ``pixel_size_um`` came from: ``"argument"``, ``"ome"``, ``"tiff_resolution"``,
        ``"aperio_mpp"``, ``"png_phys"``, ``"jpeg_density"``, ``"unknown"`` (read with
        ``pixel_size_um="auto"`` from a file without calibration: a nominal 1 µm) or
        ``"estimated"`` (:meth:`with_pixel_size` after registration estimated it).
    file_pixel_size_um : tuple of float or None
        The file's own calibration (also when overridden by the argument), None if it has none.
    level_shapes : tuple of tuple of int
        ``(rows, cols)`` of every level, level 0 first: stored pyramid levels of a TIFF, or the
        1/2, 1/4, 1/8 DCT-scaled decodes of a JPEG (cheap to decode); a PNG has one level.
    extent_um : tuple of float
        ``(width, height)`` of the whole image in µm.
    """

    def __init__(
        self,
        path: Path,
        source: _Source,
        pixel_size_um: tuple[float, float],
        pixel_size_source: str,
        *,
        series: int = 0,
    ):
        self.path = path
        self._src = source
        self.format: str = source.format
        self.series = series
        self.level_shapes: tuple[tuple[int, int], ...] = tuple(
            (int(h), int(w)) for h, w in source.level_shapes
        )
        self.shape: tuple[int, int] = self.level_shapes[0]
        self.n_channels: int = int(source.n_channels)
        self.dtype: np.dtype = np.dtype(source.dtype)
        self.pixel_size_um: tuple[float, float] = (float(pixel_size_um[0]), float(pixel_size_um[1]))
        self.pixel_size_source: str = pixel_size_source
        self.file_pixel_size_um = source.calibration.size
        self.file_pixel_size_source = source.calibration.source
        self.extent_um: tuple[float, float] = (
            self.shape[1] * self.pixel_size_um[0],
            self.shape[0] * self.pixel_size_um[1],
        )

    def with_pixel_size(
        self, pixel_size_um: float | tuple[float, float], *, source: str = "argument"
    ) -> HistologyImage:
        """The same image with another pixel size (e.g. the one registration estimated).

        Parameters
        ----------
        pixel_size_um
            µm per pixel at level 0, a number or an ``(x, y)`` pair.
        source
            What ``pixel_size_source`` says: ``"argument"`` or ``"estimated"``.

        Returns
        -------
        HistologyImage
            A new object; this one is unchanged.
        """
        import copy

        if source not in _SOURCE_WORDS:
            raise ValueError(f"source must be one of {sorted(_SOURCE_WORDS)}, got {source!r}")
        size = _validate_pixel_size_arg(pixel_size_um, self.path)
        out = copy.copy(self)
        out.pixel_size_um = size
        out.pixel_size_source = source
        out.extent_um = (self.shape[1] * size[0], self.shape[0] * size[1])
        return out

    def __repr__(self) -> str:
        h, w = self.shape
        sx, sy = self.pixel_size_um
        return (
            f"HistologyImage({str(self.path)!r}, {_FORMAT_WORDS[self.format]}, {h}×{w}×"
            f"{self.n_channels} {self.dtype}, pixel {_fmt(sx)}×{_fmt(sy)} µm "
            f"({self.pixel_size_source}), {self.n_levels} level(s))"
        )

    @property
    def n_levels(self) -> int:
        """Number of resolution levels (1 when there is no pyramid)."""
        return len(self.level_shapes)

    # -- geometry

    def _level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int | np.integer):
            raise TypeError(f"level must be an int, got {level!r}")
        n = self.n_levels
        if not -n <= level < n:
            raise ValueError(f"level {level} does not exist: {self.path} has levels 0 to {n - 1}")
        return int(level) % n

    def level_pixel_size_um(self, level: int = 0) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in µm of a level.

        It is the level-0 pixel size times the real size ratio ``full / level`` per axis, so every
        level spans the same extent in µm (a level of 859 rows from 1717 has a y ratio of 1.9988,
        not 2).

        Parameters
        ----------
        level
            Level index (negative counts from the smallest).

        Returns
        -------
        tuple of float
            ``(sx, sy)`` in µm.
        """
        level = self._level(level)
        return self._pixel_size_for_shape(self.level_shapes[level])

    def _pixel_size_for_shape(self, shape: tuple[int, int]) -> tuple[float, float]:
        return (
            self.pixel_size_um[0] * self.shape[1] / shape[1],
            self.pixel_size_um[1] * self.shape[0] / shape[0],
        )

    def px_to_um(self, points: npt.ArrayLike, *, level: int = 0) -> np.ndarray:
        """Convert pixel positions ``(x, y) = (col, row)`` at a level to µm.

        Pixel index ``i`` covers ``[i·s, (i + 1)·s]`` µm and its centre is at ``(i + 0.5)·s``, so
        ``px_to_um([[0, 0]])`` is half a pixel from the origin (``docs/coordinates.md``).
        Fractional positions are allowed (``-0.5`` is the outer edge of the first pixel).

        Parameters
        ----------
        points
            ``(n, 2)`` or ``(2,)`` array of ``(x, y)`` pixel positions (column, row).
        level
            Level whose pixel grid the positions refer to.

        Returns
        -------
        numpy.ndarray
            float64 array of the same shape, ``(x, y)`` in µm.
        """
        pts = _as_points(points)
        s = np.asarray(self.level_pixel_size_um(level))
        return (pts + 0.5) * s

    def um_to_px(self, points: npt.ArrayLike, *, level: int = 0) -> np.ndarray:
        """Convert ``(x, y)`` positions in µm to fractional pixel positions at a level.

        The inverse of :meth:`px_to_um`: the centre of pixel ``i`` maps back to exactly ``i``;
        ``np.floor(um_to_px(p) + 0.5)`` is the index of the pixel containing ``p``.

        Parameters
        ----------
        points
            ``(n, 2)`` or ``(2,)`` array of ``(x, y)`` positions in µm.
        level
            Level whose pixel grid to express the positions in.

        Returns
        -------
        numpy.ndarray
            float64 array of the same shape, ``(x, y)`` = ``(col, row)`` pixel positions.
        """
        pts = _as_points(points)
        s = np.asarray(self.level_pixel_size_um(level))
        return pts / s - 0.5

    # -- pixels

    def read(self, level: int = 0) -> np.ndarray:
        """Read a whole level.

        Parameters
        ----------
        level
            Level index; level 0 of a large slide can need many GB, prefer
            :meth:`downsampled` or :meth:`read_region` there.

        Returns
        -------
        numpy.ndarray
            ``(rows, cols, n_channels)`` array of ``dtype``.
        """
        level = self._level(level)
        h, w = self.level_shapes[level]
        check_decoded_image(self.path, (h, w, self.n_channels), self.dtype.itemsize)
        with self._src.reader(level) as rd:
            return rd.region(0, h, 0, w)

    def read_region(
        self, x0: int, y0: int, width: int, height: int, *, level: int = 0
    ) -> np.ndarray:
        """Read a rectangle of pixels of a level.

        Tiled TIFFs decode only the tiles the region touches; JPEG and PNG decode the whole level
        (they have no random access), so cut many regions from one :meth:`read` there.

        Parameters
        ----------
        x0, y0
            Column and row of the top-left pixel, in pixels of ``level``.
        width, height
            Size in pixels; the region must lie inside the level.
        level
            Level index.

        Returns
        -------
        numpy.ndarray
            ``(height, width, n_channels)`` array of ``dtype``.
        """
        level = self._level(level)
        h, w = self.level_shapes[level]
        vals = []
        for name, v in (("x0", x0), ("y0", y0), ("width", width), ("height", height)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise TypeError(f"{name} must be an int, got {v!r}")
            vals.append(int(v))
        x0, y0, width, height = vals
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got width={width}, height={height}")
        if x0 < 0 or y0 < 0 or x0 + width > w or y0 + height > h:
            raise ValueError(
                f"region x={x0}..{x0 + width}, y={y0}..{y0 + height} lies outside level {level} "
                f"of {self.path} ({w} × {h} px, width × height)"
            )
        check_decoded_image(self.path, (height, width, self.n_channels), self.dtype.itemsize)
        with self._src.reader(level) as rd:
            return rd.region(y0, y0 + height, x0, x0 + width)

    def downsampled(
        self, max_size: int | None = None, *, factor: float | None = None
    ) -> tuple[np.ndarray, tuple[float, float]]:
        """Read a reduced copy, using a stored level where one fits and block means otherwise.

        The deepest level that still has enough pixels is read and, if more reduction is needed,
        reduced by an integer ``k`` with ``k × k`` block means (partial blocks at the right and
        bottom edges average the pixels they have; output shape ``ceil(level / k)``). Tiled and
        stripped TIFFs are reduced a strip of tiles at a time, so memory stays bounded by one
        strip plus the output, never the full image. JPEG levels are libjpeg DCT-scaled decodes
        (1/2, 1/4, 1/8 via PIL ``draft``), which cost a fraction of a full decode. A PNG has to be
        decoded whole (neither PIL nor libpng can do less), then it is block-averaged.

        Parameters
        ----------
        max_size
            Bound on the longest side of the result: it ends up in ``(max_size / 2, max_size]``
            (or the full image if that is already small enough). Default 2048 when ``factor`` is
            not given.
        factor
            Reduction factor wanted instead (>= 1); the nearest achievable combination of a level
            and an integer block size is used.

        Returns
        -------
        array : numpy.ndarray
            ``(rows, cols, n_channels)`` of ``dtype``.
        pixel_size_um : tuple of float
            ``(x, y)`` pixel size of ``array`` in µm: ``k`` times the level's (see
            :meth:`level_pixel_size_um`), so every full block is where its pixels were. Where a
            side is not a multiple of ``k`` the result reaches less than one pixel past the image.
        """
        level, k = self._plan(max_size=max_size, factor=factor)
        logger.debug("%s: downsampling from level %d by block means of %d", self.path, level, k)
        with self._src.reader(level) as rd:
            arr = _reduce_level(rd, k, self.dtype, self.n_channels)
        sx, sy = self.level_pixel_size_um(level)
        return arr, (k * sx, k * sy)

    def thumbnail(self, max_side: int = 512) -> tuple[np.ndarray, tuple[float, float]]:
        """Small overview image; :meth:`downsampled` with ``max_size=max_side``.

        Parameters
        ----------
        max_side
            Bound on the longest side, reached within a factor of 2.

        Returns
        -------
        array : numpy.ndarray
            ``(rows, cols, n_channels)`` of ``dtype``.
        pixel_size_um : tuple of float
            ``(x, y)`` pixel size of ``array`` in µm.
        """
        return self.downsampled(max_size=max_side)

    def _plan(self, *, max_size: int | None, factor: float | None) -> tuple[int, int]:
        """Choose (level, integer block factor) for a downsample."""
        if max_size is not None and factor is not None:
            raise ValueError("give max_size or factor, not both")
        longest = [max(s) for s in self.level_shapes]
        if factor is None:
            m = 2048 if max_size is None else max_size
            if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
                raise ValueError(f"max_size must be a positive int, got {max_size!r}")
            if longest[0] <= m:
                return 0, 1
            level = max(i for i, side in enumerate(longest) if side >= m)
            return level, -(-longest[level] // int(m))
        f = float(factor)
        if not (math.isfinite(f) and f >= 1):
            raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
        candidates = []  # (error on a log scale, level, k)
        for i, side in enumerate(longest):
            ratio = longest[0] / side
            if ratio > f * 1.02:
                continue
            k = max(1, round(f / ratio))
            candidates.append((abs(math.log(ratio * k / f)), i, k))
        # level 0 (ratio 1) always qualifies. Stored levels are rarely exact multiples (859 rows
        # from 1717), so among matches within 2 % of the best the deepest (cheapest) level wins.
        best_err = min(err for err, _, _ in candidates)
        level, k = max((i, k) for err, i, k in candidates if err <= best_err + 0.02)
        return level, k


def _reduce_level(reader: _LevelReader, k: int, dtype: np.dtype, n_channels: int) -> np.ndarray:
    """Block-mean a level by ``k``, reading it a strip of chunks at a time."""
    h, w = reader.shape
    if k == 1:
        return reader.region(0, h, 0, w)
    ch, cw = reader.chunks
    itemsize = np.dtype(dtype).itemsize
    sc = _block_step(cw, k, w, target=2048)
    rows = max(k, _BLOCK_BYTES // max(1, sc * n_channels * itemsize))
    sr = _block_step(ch, k, h, target=rows)
    out = np.empty((-(-h // k), -(-w // k), n_channels), dtype)
    for y0 in range(0, h, sr):
        y1 = min(y0 + sr, h)
        for x0 in range(0, w, sc):
            x1 = min(x0 + sc, w)
            block = reader.region(y0, y1, x0, x1)
            out[y0 // k : -(-y1 // k), x0 // k : -(-x1 // k)] = _cast(_block_mean(block, k), dtype)
            del block
    return out


def _as_points(points: npt.ArrayLike) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if not ((pts.ndim == 2 and pts.shape[1] == 2) or pts.shape == (2,)):
        raise ValueError(f"points must be an (n, 2) array of (x, y), got shape {pts.shape}")
    return pts


# --------------------------------------------------------------------------------------------
# summary


def describe_histology(img: HistologyImage) -> str:
    """Summarise a histology image in a few lines (printed by ``spatialfuse info``).

    Parameters
    ----------
    img
        An image from :func:`read_histology`.

    Returns
    -------
    str
        Lines for the file, format, shape, channels, dtype, pixel size and its source, extent in
        mm and pyramid levels.
    """
    h, w = img.shape
    sx, sy = img.pixel_size_um
    src = img._src
    fmt = _FORMAT_WORDS.get(img.format, img.format)
    details = ", ".join(src.details)
    channels = {1: "1 channel (grayscale)", 3: "3 channels (RGB)"}.get(
        img.n_channels, f"{img.n_channels} channels"
    )
    pixel = f"{_fmt(sx)} × {_fmt(sy)} µm (x × y), from {_SOURCE_WORDS[img.pixel_size_source]}"
    if img.pixel_size_source == "argument" and img.file_pixel_size_um is not None:
        fx, fy = img.file_pixel_size_um
        assert img.file_pixel_size_source is not None
        file_word = _SOURCE_WORDS[img.file_pixel_size_source]
        pixel += f" (the file says {_fmt(fx)} × {_fmt(fy)} µm from {file_word})"
    ew, eh = img.extent_um
    levels = ", ".join(f"{lw}×{lh}" for lh, lw in img.level_shapes)
    note = f" ({src.levels_note})" if src.levels_note else ""
    lines = [
        f"file:       {img.path}",
        f"format:     {fmt}" + (f" ({details})" if details else ""),
        f"shape:      {w} × {h} px (width × height), {channels}, {img.dtype}",
        f"pixel size: {pixel}",
        f"extent:     {ew / 1000:.4g} × {eh / 1000:.4g} mm (width × height)",
        f"levels:     {img.n_levels}{note}: {levels} (width × height)",
    ]
    return "\n".join(lines)
