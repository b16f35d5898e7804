"""Export H&E, Visium and MSI with their registration as one SpatialData zarr store, in µm.

Elements and coordinate systems
-------------------------------
Every element is placed into one shared coordinate system (``coordinate_system``, default
``"global"``) in micrometres, the frame of the ``reference`` modality, and keeps its own µm frame
as a second system where it can (``docs/coordinates.md``):

=========================  ==============================================  ===============
element                    what                                            own system
=========================  ==============================================  ===============
image ``"he"``             the H&E, multiscale ``(c, y, x)``               ``"he_um"``
image ``"visium_he"``      the Visium H&E (hires, else lowres), multiscale  ``"visium_um"``
image ``"msi_image"``      the MSI raster, channels ``TIC`` + ions          ``"msi_um"``
labels ``"msi_pixels"``    one label per MSI pixel (row + 1; 0 = none)     ``"msi_um"``
shapes ``"visium_spots"``  circles at the spot centres, radius 27.5 µm     ``"visium_um"``
=========================  ==============================================  ===============

SpatialData puts the centre of image pixel ``i`` at ``i + ½`` in its intrinsic coordinates, as
spatialfuse does, so the H&E maps to its µm frame by a pure ``Scale`` of the pixel size, and the
MSI raster (its grid from ``obs["imzml_x"/"imzml_y"]``, origin at the smallest position) by a
``Scale`` of the MSI pixel size and a ``Translation`` to that origin.

The MSI is a raster, so it is stored as one: an image whose channels are the total ion count and
the ions chosen by ``msi_ions`` (default the 20 of largest variance; channel names are the
``var_names``), with pyramid levels where it is large, and a labels element whose value at a
pixel is the row of that pixel's spectrum plus one, which the ``"msi"`` table annotates (so any
ion or ``obs`` column of the table colours the pixels through the labels). Grid positions without
a spectrum are 0 in both.

Linear transforms (:class:`~spatialfuse.reg.AffineTransform`, or all-linear chains) are written as
``spatialdata.transformations.Affine`` from the element's own frame into the shared system, so the
element keeps its own coordinates. SpatialData has no nonrigid transform: under a nonrigid
transform the spot centres are written **warped** into the reference frame, and the MSI raster
and the Visium H&E are **resampled** onto a grid in the reference frame (each cell takes the pixel
its centre maps back to through the transform's inverse: nearest neighbour, so ion values and
labels are the MSI's own), each with an ``Identity`` / ``Scale`` into the shared system and no own
system; the transform itself is stored as JSON in ``attrs["spatialfuse"]["transforms"]`` so it can
be re-applied (:meth:`spatialfuse.reg.Transform.from_dict`). The H&E ``"he"`` is not resampled
(it can be gigapixels): its transform must be linear (or make it the reference).

Tables
------
``visium`` and ``msi`` are written as tables ``"visium"`` and ``"msi"`` annotating
``"visium_spots"`` and ``"msi_pixels"`` (``region_key="region"``, ``instance_key="spot_id"`` /
``"pixel_id"``, as spatialdata-io names them; ``spot_id`` is the spot's row, ``pixel_id`` the
pixel's label, row + 1), with the spot / pixel centres in the shared system added as
``obsm["spatial_<coordinate_system>"]``. Further tables (``tables=``) annotate the spots or the
pixels, whichever their ``obs_names`` belong to; a MuData contributes one table per modality and
one for its global annotation (joint clusters), and a column of the global annotation is not
repeated in the modalities' tables, so ``color="joint"`` finds one table. Where the Visium H&E is
stored as ``"visium_he"``, the tables leave out their ``uns["spatial"]`` (squidpy's copies of it).

spatialdata-plot up to 0.4.0 draws rasters half a pixel up-left of this placement
(scverse/spatialdata-plot#216); the store follows SpatialData's convention, which its
``get_extent`` and ``get_centroids`` share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._io_utils import atomic_dir, encodable_path
from spatialfuse._logging import logger
from spatialfuse._version import __version__
from spatialfuse.core.transforms import Transform

if TYPE_CHECKING:
    import anndata
    import mudata

    from spatialfuse.io.histology import HistologyImage

__all__ = ["write_spatialdata"]

MODALITIES = ("he", "visium", "msi")
#: Element names in the store.
IMAGE_KEY = "he"
VISIUM_IMAGE_KEY = "visium_he"
MSI_IMAGE_KEY = "msi_image"
SPOTS_KEY = "visium_spots"
PIXELS_KEY = "msi_pixels"
REGION_KEY = "region"
SPOT_INSTANCE_KEY = "spot_id"
PIXEL_INSTANCE_KEY = "pixel_id"
#: Name of the MSI image's total-ion-count channel.
TIC_CHANNEL = "TIC"
#: Own µm coordinate system of each modality.
OWN_SYSTEMS = {"he": "he_um", "visium": "visium_um", "msi": "msi_um"}
#: Long side below which no further pyramid level is made.
_PYRAMID_MIN_SIDE = 1024
#: Chunk side of lazily read H&E tiles, pixels.
_IMAGE_CHUNK = 2048
#: Values (rows × features) of the MSI table read at a time when building the MSI image.
_MSI_BLOCK_VALUES = 16_000_000
#: Most grid cells of a raster resampled under a nonrigid transform.
_MAX_RESAMPLED_CELLS = 4_000_000


def write_spatialdata(
    path: str | os.PathLike,
    *,
    he: HistologyImage | str | os.PathLike | None = None,
    visium: anndata.AnnData | None = None,
    msi: anndata.AnnData | None = None,
    tables: Mapping[str, anndata.AnnData | mudata.MuData] | None = None,
    transforms: Mapping[str, Transform] | None = None,
    reference: str | None = None,
    coordinate_system: str = "global",
    he_pixel_size_um: float | None = None,
    he_scale_factors: Sequence[int] | None = None,
    msi_ions: int | Sequence[str] = 20,
    visium_image: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write H&E, Visium spots and image, the MSI and tables as one SpatialData zarr store, in µm.

    Points are ``(x, y) = (column, row)`` in µm. Each modality is placed into the shared coordinate
    system ``coordinate_system``, which is the µm frame of ``reference``, through
    ``transforms[modality]`` (moving → reference, as :mod:`spatialfuse.reg` returns them). See
    :mod:`spatialfuse.io.export._spatialdata` for the elements. The store opens with
    :func:`spatialdata.read_zarr` and draws with spatialdata-plot as it is, e.g.
    ``sdata.pl.render_images("he").pl.render_shapes("visium_spots", color="joint")
    .pl.show(coordinate_systems="global")``.

    The store is written atomically: it is built in a temporary folder beside ``path`` and renamed
    into place once complete.

    Parameters
    ----------
    path
        The ``.zarr`` folder to write.
    he
        The H&E image (:func:`spatialfuse.io.read_histology`, or a path to read with it).
    visium
        Visium spots as read by :func:`spatialfuse.io.read_visium` (centres in
        ``obsm["spatial_um"]``; its H&E in ``uns["spatial"]``).
    msi
        MSI pixels × m/z as read by :func:`spatialfuse.io.read_imzml` (grid positions in
        ``obs["imzml_x"/"imzml_y"]``, ``uns["spatialfuse"]["pixel_size_um"]``); ``X`` may be
        dense, sparse or dask (read in blocks of rows).
    tables
        Further tables by name, e.g. ``{"msi_spots": sf.tl.map_to_spots(...)}``; each annotates
        the Visium spots or the MSI pixels, whichever element its ``obs_names`` belong to (all of
        them must). A MuData gives one table per modality, named ``"<name>_<modality>"``, and
        a table ``"<name>"`` without features holding its global ``obs`` (joint clusters, minus
        the columns copied from modalities), ``obsm`` (joint embeddings), ``obsp`` and ``uns``.
    transforms
        ``{modality: Transform}`` for every modality given except ``reference``: the map from that
        modality's µm frame to the reference's, e.g. ``{"msi": trio.msi_to_he, "visium":
        trio.visium_to_he}`` with ``reference="he"``. Linear ones become ``Affine``
        transformations; nonrigid ones warp the geometry (not possible for the image).
    reference
        ``"he"``, ``"visium"`` or ``"msi"``: the modality whose µm frame is the shared system.
        Default: the first of those given.
    coordinate_system
        Name of the shared coordinate system.
    he_pixel_size_um
        Working resolution of the H&E, µm per pixel. None (default) writes the full resolution,
        read tile by tile from tiled TIFFs so the whole image is never held in memory (JPEG and
        PNG have no random access and are decoded whole). A larger value writes a block-mean
        reduction (:meth:`~spatialfuse.io.HistologyImage.downsampled`) of about that pixel size,
        in memory; the image's transformations use the exact pixel size of what is written.
    he_scale_factors
        Relative downscale factors of the pyramid levels below the first (SpatialData's
        ``scale_factors``). Default: factors of 2 until the long side is below 1,024 pixels
        (the same rule makes the pyramids of the Visium H&E and the MSI image and labels).
    msi_ions
        The ion channels of the MSI image after ``TIC``: a number *n* (the *n* ions of largest
        intensity variance, in ``var`` order; 0 for the TIC alone) or a list of ``var_names``.
    visium_image
        Store the Visium H&E (``uns["spatial"]``, hires else lowres) as image ``"visium_he"``.
    overwrite
        Replace an existing ``path`` (only once the new store is complete).

    Returns
    -------
    pathlib.Path
        ``path``. The store holds:

        - images ``"he"``, ``"visium_he"``, ``"msi_image"`` (channels ``TIC`` and the ions);
          labels ``"msi_pixels"`` (pixel ``pixel_id``, 0 where no spectrum); shapes
          ``"visium_spots"`` (circles, ``radius`` column = 27.5 µm, index = ``spot_id``), each
          in ``coordinate_system`` and, unless warped or resampled, in its own system
          ``"he_um"``, ``"visium_um"``, ``"msi_um"``;
        - tables ``"visium"``, ``"msi"`` and those of ``tables``, with ``obs["region"]``, the
          instance key and ``obsm["spatial_<coordinate_system>"]`` (centres in the shared
          system);
        - ``attrs["spatialfuse"]``: version, units, reference, coordinate system, every transform
          as a JSON dict, which elements were warped or resampled, the MSI image's channels.

    Raises
    ------
    ValueError
        No modality given, ``reference`` not among them, a transform missing or given for the
        reference, a nonrigid transform for the H&E, a table that annotates neither spots nor
        pixels, an ion not in ``msi.var_names``, or an input without its layout.
    TypeError
        A transform is not a :class:`~spatialfuse.reg.Transform`.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    import spatialdata as sd

    given = {"he": he, "visium": visium, "msi": msi}
    present = [m for m in MODALITIES if given[m] is not None]
    if not present:
        raise ValueError("write_spatialdata needs at least one of he=, visium=, msi=")
    if reference is None:
        reference = present[0]
    if reference not in present:
        raise ValueError(
            f"reference={reference!r} must be one of the modalities given: {present} "
            f"(one of {MODALITIES})"
        )
    if not isinstance(coordinate_system, str) or not coordinate_system:
        raise ValueError(f"coordinate_system must be a non-empty string, got {coordinate_system!r}")
    maps = _check_transforms(transforms, present, reference)
    obsm_key = f"spatial_{coordinate_system}"

    images: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    out_tables: dict[str, Any] = {}
    warped: list[str] = []
    resampled: list[str] = []
    regions: dict[str, tuple[str, str, Any, np.ndarray, int]] = {}
    channels: list[str] = []

    if he is not None:
        images[IMAGE_KEY] = _he_element(
            he, maps.get("he"), coordinate_system, he_pixel_size_um, he_scale_factors
        )
    if visium is not None:
        element, aligned, is_warped = _spots_element(visium, maps.get("visium"), coordinate_system)
        shapes[SPOTS_KEY] = element
        warped += [SPOTS_KEY] if is_warped else []
        regions[SPOTS_KEY] = (SPOT_INSTANCE_KEY, "visium", visium.obs_names, aligned, 0)
        if visium_image:
            found = _visium_image_element(visium, maps.get("visium"), coordinate_system)
            if found is not None:
                images[VISIUM_IMAGE_KEY], is_resampled = found
                resampled += [VISIUM_IMAGE_KEY] if is_resampled else []
    if msi is not None:
        image, pixels, aligned, channels, is_resampled = _msi_elements(
            msi, maps.get("msi"), coordinate_system, msi_ions
        )
        images[MSI_IMAGE_KEY] = image
        labels[PIXELS_KEY] = pixels
        resampled += [MSI_IMAGE_KEY, PIXELS_KEY] if is_resampled else []
        regions[PIXELS_KEY] = (PIXEL_INSTANCE_KEY, "msi", msi.obs_names, aligned, 1)

    named: dict[str, anndata.AnnData] = {}
    if visium is not None:
        named["visium"] = visium
    if msi is not None:
        named["msi"] = msi
    for name, table in _flatten_tables(tables).items():
        if name in named:
            raise ValueError(f"table name {name!r} is taken by the {name} input; rename it")
        named[name] = table
    for name, table in named.items():
        out_tables[name] = _table_element(
            name, table, regions, obsm_key, drop_images=VISIUM_IMAGE_KEY in images
        )

    attrs = {
        "spatialfuse": {
            "version": __version__,
            "units": "micrometre",
            "axes": "(x, y) = (column, row)",
            "coordinate_system": coordinate_system,
            "reference": reference,
            "transforms": {
                m: maps[m].to_dict() if m in maps else None for m in present if m != reference
            },
            "transform_direction": "modality -> reference",
            "warped_elements": warped,
            "resampled_elements": resampled,
            "msi_image_channels": channels,
        }
    }
    sdata = sd.SpatialData(
        images=images, labels=labels, shapes=shapes, tables=out_tables, attrs=attrs
    )
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp, encodable_path(tmp) as target:
        sdata.write(target)
    logger.info(
        "wrote %s: %s in %r (reference %s)",
        path,
        ", ".join([*images, *labels, *shapes, *out_tables]),
        coordinate_system,
        reference,
    )
    return path


# --------------------------------------------------------------------------------------------------
# transforms


def _check_transforms(
    transforms: Mapping[str, Transform] | None, present: list[str], reference: str
) -> dict[str, Transform]:
    maps = dict(transforms or {})
    unknown = sorted(set(maps) - set(MODALITIES))
    if unknown:
        raise ValueError(f"transforms has unknown keys {unknown}; use {MODALITIES}")
    if reference in maps:
        raise ValueError(
            f"transforms[{reference!r}] given, but {reference!r} is the reference: its frame is "
            "the shared coordinate system and needs no transform"
        )
    for name, transform in maps.items():
        if not isinstance(transform, Transform):
            raise TypeError(
                f"transforms[{name!r}] must be a spatialfuse Transform, got "
                f"{type(transform).__name__}"
            )
    missing = [m for m in present if m != reference and m not in maps]
    if missing:
        raise ValueError(
            f"no transform into the reference frame {reference!r} for {missing}; pass "
            f"transforms={{{', '.join(repr(m) + ': ...' for m in missing)}}} (moving → reference)"
        )
    extra = sorted(set(maps) - set(present))
    if extra:
        logger.warning("transforms for %s are not used: those modalities were not given", extra)
    return {m: maps[m] for m in present if m in maps}


def _linear(transform: Transform | None):
    """The transform as a spatialdata ``Affine`` (Identity when None), or None if nonrigid."""
    from spatialdata.transformations import Identity

    if transform is None:
        return Identity()
    if transform.is_linear:
        return transform.as_affine().to_spatialdata()
    return None


# --------------------------------------------------------------------------------------------------
# elements


def _he_element(
    he,
    transform: Transform | None,
    coordinate_system: str,
    pixel_size_um: float | None,
    scale_factors: Sequence[int] | None,
):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale, Sequence

    from spatialfuse.io.histology import HistologyImage, read_histology

    if isinstance(he, str | os.PathLike):
        he = read_histology(he)
    if not isinstance(he, HistologyImage):
        raise TypeError(
            f"he must be a HistologyImage (sf.io.read_histology) or a path, got {type(he).__name__}"
        )
    to_shared = _linear(transform)
    if to_shared is None:
        raise ValueError(
            f"the H&E's transform is nonrigid ({type(transform).__name__}); an image cannot be "
            "warped in a SpatialData store. Make the H&E the reference (reference='he', with the "
            "other modalities' transforms into the H&E frame), or pass a linear transform"
        )
    data, size_um = _he_array(he, pixel_size_um)
    h, w = data.shape[1:]
    factors = _scale_factors(max(h, w), scale_factors)
    scale = Scale([size_um[1], size_um[0]], axes=("y", "x"))
    channels = ["r", "g", "b"] if data.shape[0] == 3 else [f"c{i}" for i in range(data.shape[0])]
    logger.debug("H&E %d × %d px at %s µm, pyramid factors %s", w, h, size_um, factors)
    return Image2DModel.parse(
        data,
        dims=("c", "y", "x"),
        scale_factors=factors or None,
        c_coords=channels,
        transformations={
            "he_um": scale,
            coordinate_system: Sequence([scale, to_shared]),
        },
    )


def _he_array(he: HistologyImage, pixel_size_um: float | None):
    """A ``(c, y, x)`` dask array of the H&E at the working resolution, and its pixel size."""
    import dask.array as da

    if pixel_size_um is not None:
        value = float(pixel_size_um)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"he_pixel_size_um must be a positive number, got {pixel_size_um!r}")
        factor = value / min(he.pixel_size_um)
        if factor > 1.0:
            array, size = he.downsampled(factor=factor)
            chunks = (min(_IMAGE_CHUNK, array.shape[0]), min(_IMAGE_CHUNK, array.shape[1]), -1)
            return da.from_array(array, chunks=chunks).transpose(2, 0, 1), size
    size = he.level_pixel_size_um(0)
    if he.format in ("jpeg", "png"):
        array = he.read(0)
        chunks = (min(_IMAGE_CHUNK, array.shape[0]), min(_IMAGE_CHUNK, array.shape[1]), -1)
        return da.from_array(array, chunks=chunks).transpose(2, 0, 1), size
    return _lazy_tiles(he).transpose(2, 0, 1), size


def _lazy_tiles(he: HistologyImage):
    """Level 0 as a dask array whose chunks are read with ``read_region`` when computed."""
    import dask
    import dask.array as da

    h, w = he.shape
    rows = []
    for y0 in range(0, h, _IMAGE_CHUNK):
        height = min(_IMAGE_CHUNK, h - y0)
        row = []
        for x0 in range(0, w, _IMAGE_CHUNK):
            width = min(_IMAGE_CHUNK, w - x0)
            tile = dask.delayed(he.read_region)(x0, y0, width, height)
            row.append(da.from_delayed(tile, (height, width, he.n_channels), dtype=he.dtype))
        rows.append(da.concatenate(row, axis=1))
    return da.concatenate(rows, axis=0)


def _scale_factors(long_side: int, given: Sequence[int] | None) -> list[int]:
    if given is not None:
        factors = [int(f) for f in given]
        if any(f < 1 or f != g for f, g in zip(factors, given, strict=True)):
            raise ValueError(f"he_scale_factors must be positive integers, got {list(given)}")
        return factors
    factors = []
    side = long_side
    while side > _PYRAMID_MIN_SIDE:
        factors.append(2)
        side = -(-side // 2)
    return factors


def _spots_element(visium, transform: Transform | None, coordinate_system: str):
    """Visium spots as circles; returns (element, centres in the shared system, warped)."""
    import geopandas as gpd
    import pandas as pd
    import shapely
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    from spatialfuse.core.visium_geometry import SPOT_DIAMETER_UM, spot_centres

    centres = spot_centres(visium, "visium")
    aligned = centres if transform is None else transform.apply(centres)
    to_shared = _linear(transform)
    warped = to_shared is None
    geometry = shapely.points(aligned if warped else centres)
    frame = gpd.GeoDataFrame(
        {"radius": np.full(len(centres), SPOT_DIAMETER_UM / 2)},
        geometry=geometry,
        index=pd.Index(np.arange(len(centres), dtype=np.int64), name=SPOT_INSTANCE_KEY),
    )
    systems = (
        {coordinate_system: Identity()}
        if warped
        else {"visium_um": Identity(), coordinate_system: to_shared}
    )
    return ShapesModel.parse(frame, transformations=systems), aligned, warped


def _visium_image_element(visium, transform: Transform | None, coordinate_system: str):
    """The Visium H&E as a multiscale image, and whether it was resampled; None if it has none."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale, Sequence

    from spatialfuse.core.visium_geometry import visium_um_per_px
    from spatialfuse.io.visium import tissue_image

    found = tissue_image(visium)
    um_per_px = visium_um_per_px(visium, "the Visium data", required=False)
    if found is None or um_per_px is None:
        logger.debug("the Visium data hold no image (or no um_per_px): no %s", VISIUM_IMAGE_KEY)
        return None
    array, scale, res = found
    if array.ndim == 2:
        array = array[:, :, None]
    pixel = um_per_px / scale
    data = np.moveaxis(np.asarray(array), 2, 0)
    channels = ["r", "g", "b"] if data.shape[0] == 3 else [f"c{i}" for i in range(data.shape[0])]
    to_shared = _linear(transform)
    own = Scale([pixel, pixel], axes=("y", "x"))
    resampled = to_shared is None
    if resampled:
        data, grid = _resample(data, own, transform, pixel, order=0)
        systems = {coordinate_system: grid}
    else:
        systems = {"visium_um": own, coordinate_system: Sequence([own, to_shared])}
    logger.debug("Visium %s image %s at %.3g µm/px", res, data.shape[1:], pixel)
    element = Image2DModel.parse(
        _chunked(data),
        dims=("c", "y", "x"),
        scale_factors=_scale_factors(max(data.shape[1:]), None) or None,
        c_coords=channels,
        transformations=systems,
    )
    return element, resampled


def _msi_elements(msi, transform: Transform | None, coordinate_system: str, ions):
    """The MSI raster as an image (TIC + ions) and labels (row + 1).

    Returns (image, labels, pixel centres in the shared system, channel names, resampled).
    """
    from spatialdata.models import Image2DModel, Labels2DModel
    from spatialdata.transformations import Scale, Sequence, Translation

    from spatialfuse.core.msi_raster import MsiRaster

    raster = MsiRaster.from_anndata(msi, "msi")
    centres = raster.centres_um()
    aligned = centres if transform is None else transform.apply(centres)
    columns = _ion_columns(msi, ions)
    names = [TIC_CHANNEL, *(str(msi.var_names[j]) for j in columns)]
    values = _msi_values(msi, columns)  # (n, 1 + len(columns)), float32
    width, height = raster.shape
    col = raster.grid_x - raster.origin[0]
    row = raster.grid_y - raster.origin[1]
    label_dtype = np.int32 if raster.n < 2**31 - 1 else np.int64
    label = np.zeros((height, width), dtype=label_dtype)
    label[row, col] = np.arange(1, raster.n + 1, dtype=label_dtype)
    image = np.zeros((len(names), height, width), dtype=np.float32)
    image[:, row, col] = values.T
    px, py = raster.pixel_size_um
    own = Sequence(
        [
            Scale([py, px], axes=("y", "x")),
            Translation(
                [(raster.origin[1] - 1) * py, (raster.origin[0] - 1) * px], axes=("y", "x")
            ),
        ]
    )
    to_shared = _linear(transform)
    resampled = to_shared is None
    if resampled:
        step = min(px, py) / 2
        label, grid = _resample(label[None], own, transform, step, order=0)
        label = label[0]
        # the channels follow the labels: each cell the values of the pixel it took
        image = np.zeros((len(names), *label.shape), dtype=np.float32)
        hit = label > 0
        image[:, hit] = values[label[hit] - 1].T
        systems_image = {coordinate_system: grid}
        systems_labels = {coordinate_system: grid}
    else:
        systems_image = {"msi_um": own, coordinate_system: Sequence([own, to_shared])}
        systems_labels = {"msi_um": own, coordinate_system: Sequence([own, to_shared])}
    factors = _scale_factors(max(label.shape), None) or None
    logger.debug(
        "MSI raster %d × %d, channels %s%s",
        label.shape[1],
        label.shape[0],
        names,
        " (resampled)" if resampled else "",
    )
    image_element = Image2DModel.parse(
        _chunked(image),
        dims=("c", "y", "x"),
        scale_factors=factors,
        c_coords=names,
        transformations=systems_image,
    )
    labels_element = Labels2DModel.parse(
        _chunked(label),
        dims=("y", "x"),
        scale_factors=factors,
        transformations=systems_labels,
    )
    return image_element, labels_element, aligned, names, resampled


def _ion_columns(msi, ions) -> list[int]:
    """Column indices of the MSI image's ion channels: the top ``ions`` by variance, or named."""
    if isinstance(ions, str):
        ions = [ions]
    if isinstance(ions, int | np.integer) and not isinstance(ions, bool):
        n = int(ions)
        if n < 0:
            raise ValueError(f"msi_ions must be a non-negative number or a list of ions, got {n}")
        if n == 0 or msi.n_vars == 0:
            return []
        variance = _msi_moments(msi)
        top = np.argsort(-variance, kind="stable")[: min(n, msi.n_vars)]
        return sorted(int(j) for j in top)
    try:
        wanted = [str(name) for name in ions]
    except TypeError:
        raise TypeError(
            f"msi_ions must be a number or a list of var_names, got {type(ions).__name__}"
        ) from None
    index = msi.var_names.get_indexer(wanted)
    missing = [name for name, j in zip(wanted, index, strict=True) if j < 0]
    if missing:
        raise ValueError(
            f"msi_ions: {missing[:5]} not among the MSI's var_names (e.g. "
            f"{list(msi.var_names[:3])})"
        )
    return [int(j) for j in index]


def _msi_blocks(msi, columns=None):
    """Dense float64 blocks of rows of ``msi.X`` (optionally only ``columns``)."""
    from scipy import sparse

    x = msi.X
    rows = max(1, _MSI_BLOCK_VALUES // max(msi.n_vars, 1))
    for start in range(0, msi.n_obs, rows):
        block = x[start : start + rows]
        if columns is not None:
            block = block[:, columns]
        if hasattr(block, "compute"):
            block = block.compute()
        if sparse.issparse(block):
            block = block.toarray()
        yield np.nan_to_num(np.asarray(block, dtype=np.float64), nan=0.0)


def _msi_moments(msi) -> np.ndarray:
    """Variance of every ion over the pixels, read in blocks of rows."""
    total = np.zeros(msi.n_vars)
    squares = np.zeros(msi.n_vars)
    for block in _msi_blocks(msi):
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    mean = total / max(msi.n_obs, 1)
    return squares / max(msi.n_obs, 1) - mean**2


def _msi_values(msi, columns: list[int]) -> np.ndarray:
    """``(n, 1 + len(columns))``: the TIC and the chosen ions of every pixel, float32."""
    out = np.empty((msi.n_obs, 1 + len(columns)), dtype=np.float32)
    start = 0
    for block in _msi_blocks(msi):
        stop = start + len(block)
        out[start:stop, 0] = block.sum(axis=1)
        out[start:stop, 1:] = block[:, columns]
        start = stop
    return out


def _resample(data: np.ndarray, own, transform: Transform, step_um: float, *, order: int):
    """Resample ``(c, y, x)`` ``data`` (intrinsic → own µm by ``own``) into the reference frame.

    Each cell of a grid of ``step_um`` covering the transformed extent takes the pixel its centre
    maps back to through ``transform.inverse()`` (nearest neighbour: ``order`` 0 only). Returns the
    resampled array and the grid's transformation into the reference frame.
    """
    import warnings

    from spatialdata.transformations import Scale, Sequence, Translation

    if order != 0:  # pragma: no cover - only nearest neighbour is used
        raise ValueError("only nearest-neighbour resampling is implemented")
    matrix = own.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    c, h, w = data.shape
    # the outline of the data, densely, carried into the reference frame
    t = np.linspace(0.0, 1.0, 65)
    edge = np.concatenate(
        [
            np.stack([t * w, np.zeros_like(t)], 1),
            np.stack([t * w, np.full_like(t, h)], 1),
            np.stack([np.zeros_like(t), t * h], 1),
            np.stack([np.full_like(t, w), t * h], 1),
        ]
    )
    outline = transform.apply(edge @ matrix[:2, :2].T + matrix[:2, 2])
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    cells = np.prod(np.ceil((hi - lo) / step_um))
    if cells > _MAX_RESAMPLED_CELLS:
        step_um *= math.sqrt(cells / _MAX_RESAMPLED_CELLS)
    nx, ny = (max(int(v), 1) for v in np.ceil((hi - lo) / step_um))
    gx, gy = np.meshgrid(
        lo[0] + (np.arange(nx) + 0.5) * step_um, lo[1] + (np.arange(ny) + 0.5) * step_um
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        back = transform.inverse().apply(np.stack([gx.ravel(), gy.ravel()], axis=1))
    intrinsic = (back - matrix[:2, 2]) @ np.linalg.inv(matrix[:2, :2]).T
    with np.errstate(invalid="ignore"):
        ix = np.floor(intrinsic[:, 0])
        iy = np.floor(intrinsic[:, 1])
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = np.zeros((c, ny * nx), dtype=data.dtype)
    out[:, inside] = data[:, iy[inside].astype(np.int64), ix[inside].astype(np.int64)]
    grid = Sequence(
        [
            Scale([step_um, step_um], axes=("y", "x")),
            Translation([lo[1], lo[0]], axes=("y", "x")),
        ]
    )
    return out.reshape(c, ny, nx), grid


def _chunked(array: np.ndarray):
    """A dask array of ``array`` in chunks of at most ``_IMAGE_CHUNK`` along y and x."""
    import dask.array as da

    chunks = tuple(-1 if axis < array.ndim - 2 else _IMAGE_CHUNK for axis in range(array.ndim))
    return da.from_array(array, chunks=chunks)


# --------------------------------------------------------------------------------------------------
# tables


def _flatten_tables(tables) -> dict[str, anndata.AnnData]:
    """``{name: AnnData}``; a MuData becomes one table per modality plus its global annotation."""
    from anndata import AnnData

    out: dict[str, AnnData] = {}
    for name, table in dict(tables or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"table names must be non-empty strings, got {name!r}")
        if isinstance(table, AnnData):
            out[name] = table
        elif hasattr(table, "mod") and isinstance(getattr(table, "mod", None), Mapping):
            for modality, adata in table.mod.items():
                out[f"{name}_{modality}"] = _without_global_columns(adata, table.obs)
            out[name] = _global_annotation(table)
        else:
            raise TypeError(
                f"tables[{name!r}] must be an AnnData or a MuData, got {type(table).__name__}"
            )
    return out


def _without_global_columns(adata, global_obs) -> anndata.AnnData:
    """``adata`` without the ``obs`` columns its MuData's global annotation holds too.

    mudata copies a column such as the joint clusters into every modality; kept in one table
    only, a plot colouring by it (``color="joint"``) finds one table, not three.
    """
    from spatialfuse.io.export._anndata import _shallow_anndata

    repeated = [c for c in adata.obs.columns if c in global_obs.columns]
    if not repeated:
        return adata
    out = _shallow_anndata(adata)
    if out is adata:  # backed
        out = adata.to_memory()
    out.obs = out.obs.drop(columns=repeated)
    return out


def _global_annotation(mdata) -> anndata.AnnData:
    """The MuData's own annotation (joint clusters, embeddings) as a table without features."""
    from anndata import AnnData

    copied = tuple(f"{modality}:" for modality in mdata.mod)
    obs = mdata.obs.loc[:, [c for c in mdata.obs.columns if not str(c).startswith(copied)]]
    return AnnData(
        obs=obs.copy(),
        obsm={k: np.asarray(v) for k, v in mdata.obsm.items() if k not in mdata.mod},
        obsp=dict(mdata.obsp),
        uns=dict(mdata.uns),
    )


def _table_element(name: str, table, regions: dict, obsm_key: str, *, drop_images: bool):
    """The table annotating the element its ``obs_names`` belong to.

    With ``drop_images`` the table's ``uns["spatial"]`` (squidpy's copy of the Visium images) is
    left out: the store holds those images once, as an image element.
    """
    import pandas as pd
    from spatialdata.models import TableModel

    from spatialfuse.io.export._anndata import _shallow_anndata

    region, position = _find_region(name, table, regions)
    instance_key, _, _, aligned, offset = regions[region]
    out = _shallow_anndata(table)
    if out is table:  # backed: the shallow copy is the object itself
        out = table.to_memory()
    for column in (REGION_KEY, instance_key):
        if column in out.obs:
            raise ValueError(f"table {name!r} already has obs[{column!r}]; rename that column")
    if drop_images:
        out.uns.pop("spatial", None)
    out.obs[REGION_KEY] = pd.Categorical([region] * out.n_obs)
    out.obs[instance_key] = position.astype(np.int64) + offset
    out.obsm[obsm_key] = np.asarray(aligned[position], dtype=np.float64)
    return TableModel.parse(out, region=region, region_key=REGION_KEY, instance_key=instance_key)


def _find_region(name: str, table, regions: dict) -> tuple[str, np.ndarray]:
    """The element whose instances include every observation of ``table``, and their positions."""
    import pandas as pd

    for region, (_, _, names, _, _) in regions.items():
        position = pd.Index(names).get_indexer(table.obs_names)
        if len(position) and (position >= 0).all():
            return region, position
    targets = " or ".join(f"{info[1]} ({region})" for region, info in regions.items())
    raise ValueError(
        f"table {name!r}: its obs_names are not all among the observations of "
        f"{targets or 'any spots or pixels (no visium= or msi= given)'}; a table must annotate "
        "Visium spots (barcodes) or MSI pixels"
    )
