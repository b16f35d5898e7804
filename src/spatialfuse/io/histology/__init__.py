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

from spatialfuse.io.histology._image import HistologyImage, describe_histology
from spatialfuse.io.histology._read import read_histology
from spatialfuse.io.histology._units import MAX_DENSITY_PIXEL_SIZE_UM, PixelSizeSource

__all__ = [
    "MAX_DENSITY_PIXEL_SIZE_UM",
    "HistologyImage",
    "PixelSizeSource",
    "describe_histology",
    "read_histology",
]
