"""OME-TIFF writing: the OME-XML header and a tiled, pyramidal writer fed tile by tile.

The pyramidal writer never holds an image level in memory: each level is written from a callable
that returns one row of tiles at a time (OME-TIFF 6 layout: full resolution in the first IFD,
reduced levels as its SubIFDs, the layout ``read_histology``, QuPath and Bio-Formats read).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

#: Tile side of written TIFFs (pixels; a multiple of 16 as TIFF requires).
TILE = 256


def ome_xml(
    width: int, height: int, pixel_size_um: float, *, uuid_text: str, name: str, channels: int = 3
) -> str:
    """The OME-XML of one interleaved ``uint8`` image with ``PhysicalSizeX/Y`` in µm.

    Built by tifffile's ``OmeXml``, which escapes the name (a file name with ``&`` or ``<``).
    """
    import tifffile

    size = float(pixel_size_um)
    ome = tifffile.OmeXml(Creator="spatialfuse", UUID=f"urn:uuid:{uuid_text}")
    ome.addimage(
        np.uint8,
        (height, width, channels),
        (1, 1, 1, height, width, channels),
        axes="YXS",
        Name=name,
        PhysicalSizeX=size,
        PhysicalSizeXUnit="µm",
        PhysicalSizeY=size,
        PhysicalSizeYUnit="µm",
    )
    return ome.tostring(declaration=True)


def pyramid_shapes(shape: tuple[int, int], *, min_side: int = 1024) -> list[tuple[int, int]]:
    """Level shapes, halving until the longer side is at most ``min_side``."""
    shapes = [(int(shape[0]), int(shape[1]))]
    while max(shapes[-1]) > min_side:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def write_pyramidal_ome_tiff(
    path: str | os.PathLike,
    tile_rows: Callable[[int, int], Iterator[np.ndarray]],
    shapes: list[tuple[int, int]],
    pixel_size_um: float,
    *,
    uuid_text: str,
    name: str,
    channels: int = 3,
) -> Path:
    """Write a tiled pyramidal RGB OME-TIFF whose pixels come from ``tile_rows``, atomically.

    Parameters
    ----------
    path
        Destination ``.ome.tif``.
    tile_rows
        ``tile_rows(level, row0)`` returns the ``(TILE, width, channels)`` ``uint8`` strip of
        rows ``row0 … row0 + TILE`` of that level (padded past the image's end); it is called
        for each strip of each level in order, so only one strip is held at a time.
    shapes
        ``(rows, cols)`` of every level, full resolution first (:func:`pyramid_shapes`).
    pixel_size_um
        Pixel size of level 0; level ``k`` is ``pixel_size_um · 2**k`` (as shapes halve).
    uuid_text, name
        For the OME-XML.
    """
    import tifffile

    from spatialfuse._io_utils import atomic_path

    height, width = shapes[0]
    xml = ome_xml(width, height, pixel_size_um, uuid_text=uuid_text, name=name, channels=channels)

    def tiles(level: int) -> Iterator[np.ndarray]:
        h, w = shapes[level]
        for row0 in range(0, h, TILE):
            strip = tile_rows(level, row0)
            for col0 in range(0, w, TILE):
                tile = strip[:, col0 : col0 + TILE]
                if tile.shape[1] < TILE:
                    tile = np.pad(tile, ((0, 0), (0, TILE - tile.shape[1]), (0, 0)))
                yield np.ascontiguousarray(tile)

    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level, shape in enumerate(shapes):
            per_cm = 1e4 / (float(pixel_size_um) * width / shape[1])
            options = {
                "shape": (*shape, channels),
                "dtype": np.uint8,
                "tile": (TILE, TILE),
                "photometric": "rgb",
                "compression": "zlib",
                "resolution": (per_cm, per_cm),
                "resolutionunit": "CENTIMETER",
            }
            if level == 0:
                options.update(
                    subifds=len(shapes) - 1,
                    description=xml.encode("utf-8"),
                    metadata=None,
                    software="spatialfuse",
                )
            else:
                options["subfiletype"] = 1
            tif.write(tiles(level), **options)
    return path
