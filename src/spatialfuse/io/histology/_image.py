"""The image model: :class:`HistologyImage`, its levels, pixel sizes and µm ↔ pixel conversion.

Points are ``(x, y) = (column, row)``; the frame's origin is the outer top-left corner of pixel
``(0, 0)``, so the centre of array index ``(col, row)`` at a level with pixel size ``(sx, sy)`` µm
lies at ``((col + 0.5)·sx, (row + 0.5)·sy)`` µm (``docs/coordinates.md``). Every level spans the
same extent in µm.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spatialfuse._limits import check_decoded_image
from spatialfuse._logging import logger
from spatialfuse.io.histology._blocks import _reduce_level
from spatialfuse.io.histology._source import _Source
from spatialfuse.io.histology._units import _SOURCE_WORDS, _fmt, _validate_pixel_size_arg

_FORMAT_WORDS = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF", "ome-tiff": "OME-TIFF"}


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
        h, w = self.level_shapes[self._level(level)]
        return self.read_region(0, 0, w, h, level=level)

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
