"""Export H&E, Visium and MSI with their registration as one SpatialData zarr store, in µm.

Elements and coordinate systems
-------------------------------
Every element keeps its own frame (``docs/coordinates.md``) and is placed into one shared
coordinate system (``coordinate_system``, default ``"aligned_um"``) in micrometres, the frame of the
``reference`` modality:

========================  ===========================================  =====================
element                   geometry                                     own system
========================  ===========================================  =====================
image ``"he"``            the H&E, multiscale ``(c, y, x)``            ``"he_um"``
shapes ``"visium_spots"`` circles at the spot centres, radius 27.5 µm  ``"visium_um"``
shapes ``"msi_pixels"``   one square polygon per MSI pixel             ``"msi_um"``
========================  ===========================================  =====================

SpatialData puts the centre of image pixel ``i`` at ``i + ½`` in its intrinsic coordinates, as
spatialfuse does, so the H&E maps to its µm frame by a pure ``Scale`` of the pixel size.

MSI pixels are written as **square polygons** (the pixel's area, ``[(x − 1)·px, x·px] ×
[(y − 1)·py, y·py]`` µm), the way spatialdata-io writes Visium HD bins: the shape is what
:func:`spatialfuse.tl.map_to_spots` integrates over, it draws as the raster it is, and SpatialData's
own aggregation (``spatialdata.aggregate``) then measures true overlaps with other shapes. Points
with a size attribute would lose the square and its orientation under a rotation.

Linear transforms (:class:`~spatialfuse.reg.AffineTransform`, or all-linear chains) are written as
``spatialdata.transformations.Affine`` from the element's own frame into the shared system, so the
element keeps its own coordinates. SpatialData has no nonrigid transform: a nonrigid transform's
**warped geometry** is written instead (spot centres and polygon corners mapped into the reference
frame, with an ``Identity`` into the shared system and no own system), and the transform itself
is stored as JSON in ``attrs["spatialfuse"]["transforms"]`` so it can be re-applied
(:meth:`spatialfuse.reg.Transform.from_dict`). An image cannot be warped this way; its transform
must be linear.

Tables
------
``visium`` and ``msi`` are written as tables ``"visium"`` and ``"msi"`` annotating their shapes
(``region_key="region"``, ``instance_key="spot_id"`` / ``"pixel_id"``, as spatialdata-io names
them), with the spot / pixel centres in the shared system added as
``obsm["spatial_<coordinate_system>"]``. Further tables (``tables=``) annotate the spots or the
pixels, whichever their ``obs_names`` belong to; a MuData contributes one table per modality and
one for its global annotation.
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
SPOTS_KEY = "visium_spots"
PIXELS_KEY = "msi_pixels"
REGION_KEY = "region"
SPOT_INSTANCE_KEY = "spot_id"
PIXEL_INSTANCE_KEY = "pixel_id"
#: Long side below which no further pyramid level is made.
_PYRAMID_MIN_SIDE = 1024
#: Chunk side of lazily read H&E tiles, pixels.
_IMAGE_CHUNK = 2048


def write_spatialdata(
    path: str | os.PathLike,
    *,
    he: HistologyImage | str | os.PathLike | None = None,
    visium: anndata.AnnData | None = None,
    msi: anndata.AnnData | None = None,
    tables: Mapping[str, anndata.AnnData | mudata.MuData] | None = None,
    transforms: Mapping[str, Transform] | None = None,
    reference: str | None = None,
    coordinate_system: str = "aligned_um",
    he_pixel_size_um: float | None = None,
    he_scale_factors: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write H&E, Visium spots, MSI pixels and tables as one SpatialData zarr store, in µm.

    Points are ``(x, y) = (column, row)`` in µm. Each modality is placed into the shared coordinate
    system ``coordinate_system``, which is the µm frame of ``reference``, through
    ``transforms[modality]`` (moving → reference, as :mod:`spatialfuse.reg` returns them). See
    :mod:`spatialfuse.io.export._spatialdata` for the elements, and why MSI pixels are polygons.

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
        ``obsm["spatial_um"]``).
    msi
        MSI pixels × m/z as read by :func:`spatialfuse.io.read_imzml` (grid positions in
        ``obs["imzml_x"/"imzml_y"]``, ``uns["spatialfuse"]["pixel_size_um"]``).
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
        ``scale_factors``). Default: factors of 2 until the long side is below 1,024 pixels.
    overwrite
        Replace an existing ``path`` (only once the new store is complete).

    Returns
    -------
    pathlib.Path
        ``path``. The store holds:

        - images ``"he"``; shapes ``"visium_spots"`` (circles, ``radius`` column = 27.5 µm,
          index = ``spot_id``) and ``"msi_pixels"`` (polygons, index = ``pixel_id``), each in
          ``coordinate_system`` and, unless warped, in its own system ``"he_um"``,
          ``"visium_um"``, ``"msi_um"``;
        - tables ``"visium"``, ``"msi"`` and those of ``tables``, with ``obs["region"]``, the
          instance key and ``obsm["spatial_<coordinate_system>"]`` (centres in the shared
          system);
        - ``attrs["spatialfuse"]``: version, units, reference, coordinate system, every transform
          as a JSON dict and which elements were warped.

    Raises
    ------
    ValueError
        No modality given, ``reference`` not among them, a transform missing or given for the
        reference, a nonrigid transform for the image, a table that annotates neither spots nor
        pixels, or an input without its layout.
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
    shapes: dict[str, Any] = {}
    out_tables: dict[str, Any] = {}
    warped: list[str] = []
    regions: dict[str, tuple[str, str, Any, np.ndarray]] = {}

    if he is not None:
        images[IMAGE_KEY] = _he_element(
            he, maps.get("he"), coordinate_system, he_pixel_size_um, he_scale_factors
        )
    if visium is not None:
        element, aligned, is_warped = _spots_element(visium, maps.get("visium"), coordinate_system)
        shapes[SPOTS_KEY] = element
        warped += [SPOTS_KEY] if is_warped else []
        regions[SPOTS_KEY] = (SPOT_INSTANCE_KEY, "visium", visium.obs_names, aligned)
    if msi is not None:
        element, aligned, is_warped = _pixels_element(msi, maps.get("msi"), coordinate_system)
        shapes[PIXELS_KEY] = element
        warped += [PIXELS_KEY] if is_warped else []
        regions[PIXELS_KEY] = (PIXEL_INSTANCE_KEY, "msi", msi.obs_names, aligned)

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
        out_tables[name] = _table_element(name, table, regions, obsm_key)

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
        }
    }
    sdata = sd.SpatialData(images=images, shapes=shapes, tables=out_tables, attrs=attrs)
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp, encodable_path(tmp) as target:
        sdata.write(target)
    logger.info(
        "wrote %s: %s in %r (reference %s)",
        path,
        ", ".join([*images, *shapes, *out_tables]),
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


def _pixels_element(msi, transform: Transform | None, coordinate_system: str):
    """MSI pixels as square polygons; returns (element, centres in the shared system, warped)."""
    import geopandas as gpd
    import pandas as pd
    import shapely
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    from spatialfuse.core.msi_raster import MsiRaster

    raster = MsiRaster.from_anndata(msi, "msi")
    centres = raster.centres_um()
    px, py = raster.pixel_size_um
    # corners counter-clockwise on screen (y down): top-left, top-right, bottom-right, bottom-left
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * (px, py)
    corners = centres[:, None, :] + offsets[None, :, :]
    to_shared = _linear(transform)
    warped = to_shared is None
    aligned = centres if transform is None else transform.apply(centres)
    if warped:
        corners = transform.apply(corners.reshape(-1, 2)).reshape(corners.shape)
    frame = gpd.GeoDataFrame(
        geometry=shapely.polygons(corners),
        index=pd.Index(np.arange(raster.n, dtype=np.int64), name=PIXEL_INSTANCE_KEY),
    )
    systems = (
        {coordinate_system: Identity()}
        if warped
        else {"msi_um": Identity(), coordinate_system: to_shared}
    )
    return ShapesModel.parse(frame, transformations=systems), aligned, warped


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
                out[f"{name}_{modality}"] = adata
            out[name] = _global_annotation(table)
        else:
            raise TypeError(
                f"tables[{name!r}] must be an AnnData or a MuData, got {type(table).__name__}"
            )
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


def _table_element(name: str, table, regions: dict, obsm_key: str):
    """The table annotating the element its ``obs_names`` belong to."""
    import pandas as pd
    from spatialdata.models import TableModel

    from spatialfuse.io.export._anndata import _shallow_anndata

    region, position = _find_region(name, table, regions)
    instance_key, _, _, aligned = regions[region]
    out = _shallow_anndata(table)
    if out is table:  # backed: the shallow copy is the object itself
        out = table.to_memory()
    for column in (REGION_KEY, instance_key):
        if column in out.obs:
            raise ValueError(f"table {name!r} already has obs[{column!r}]; rename that column")
    out.obs[REGION_KEY] = pd.Categorical([region] * out.n_obs)
    out.obs[instance_key] = position.astype(np.int64)
    out.obsm[obsm_key] = np.asarray(aligned[position], dtype=np.float64)
    return TableModel.parse(out, region=region, region_key=REGION_KEY, instance_key=instance_key)


def _find_region(name: str, table, regions: dict) -> tuple[str, np.ndarray]:
    """The element whose instances include every observation of ``table``, and their positions."""
    import pandas as pd

    for region, (_, _, names, _) in regions.items():
        position = pd.Index(names).get_indexer(table.obs_names)
        if len(position) and (position >= 0).all():
            return region, position
    targets = " or ".join(f"{info[1]} ({region})" for region, info in regions.items())
    raise ValueError(
        f"table {name!r}: its obs_names are not all among the observations of "
        f"{targets or 'any spots or pixels (no visium= or msi= given)'}; a table must annotate "
        "Visium spots (barcodes) or MSI pixels"
    )
