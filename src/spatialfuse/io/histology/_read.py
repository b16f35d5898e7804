"""``read_histology``: the format known by content, the decoder opened, the pixel size chosen."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from spatialfuse._limits import require_regular_file
from spatialfuse._logging import logger
from spatialfuse.errors import (
    CalibrationError,
    DataWarning,
    FileFormatError,
    MissingFileError,
    UnsupportedFormatError,
)
from spatialfuse.io.histology._image import HistologyImage
from spatialfuse.io.histology._jpeg import _JpegSource, _pil_open, _PngSource
from spatialfuse.io.histology._source import _Source
from spatialfuse.io.histology._tiff import _TiffSource
from spatialfuse.io.histology._units import _validate_pixel_size_arg


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
