"""TIFF, BigTIFF, OME-TIFF and TIFF-based slide formats (Aperio SVS, ...) read with tifffile.

Levels are the stored pyramid (SubIFDs or separate series levels); regions are decoded tile by
tile through zarr, or read by plain file reads where a level is one uncompressed block.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spatialfuse.errors import DataWarning, FileFormatError, UnsupportedFormatError
from spatialfuse.io.histology._color import _Color
from spatialfuse.io.histology._ome import _ome_calibration, _open_tiff
from spatialfuse.io.histology._source import (
    _IMAGE_MAX_RATIO,
    _RATIO_SLACK_BYTES,
    _LevelReader,
    _Source,
    _translate_errors,
)
from spatialfuse.io.histology._units import (
    _RESUNIT_UM,
    _RESUNIT_WORDS,
    _Calibration,
    _fmt,
    _resolution_value,
    _unit_um,
)

#: The most each compression can inflate, by TIFF Compression code (uncompressed: 1; PackBits:
#: 128 bytes from 2; deflate ~1,032; LZW ~1,350; zstd ~32,800; LZMA ~6,500). A level, or one of
#: its strips or tiles, that declares more pixel bytes than its stored bytes times this cannot be
#: in the file and is refused before anything is allocated. Other codecs (JPEG, JPEG 2000, WebP,
#: ...) get _IMAGE_MAX_RATIO: whole-slide levels stay far below it.
_TIFF_MAX_RATIO = {1: 1, 32773: 64, 8: 1100, 32946: 1100, 5: 1400, 50000: 33000, 34926: 33000}
_TIFF_MAX_RATIO.update({34925: 7000})


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
        if tif.is_ome and _ome_calibration(tif, s, self.series, cal):
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
