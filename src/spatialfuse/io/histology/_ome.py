"""OME-TIFF checks: the planes OME-XML declares against the file's pages, and its pixel size.

OME ``PhysicalSizeX/Y`` are read with their ``PhysicalSize*Unit`` (µm by default) and converted
to µm per pixel at level 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from spatialfuse.errors import FileFormatError
from spatialfuse.io.histology._units import _Calibration, _unit_um

#: An OME image may declare at most this many planes (Z × C × T, or a TiffData index or count)
#: per page of the file, and at least this many whatever the pages: tifffile allocates a list of
#: them before it reads anything.
_OME_PLANES_PER_PAGE = 64
_OME_MIN_PLANES = 1 << 16


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


def _ome_calibration(tif: Any, s: Any, series: int, cal: _Calibration) -> bool:
    """Offer the OME ``PhysicalSizeX/Y`` of image series ``series`` to ``cal``; False if none."""
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
        idx: int | None = series
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
