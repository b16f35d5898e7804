"""Write spot-level data (e.g. MSI mapped onto Visium spots) as a Space Ranger-like folder."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._io_utils import atomic_dir
from spatialfuse._logging import logger
from spatialfuse._version import __version__
from spatialfuse.errors import DataWarning
from spatialfuse.io.visium import IMAGE_FILES

if TYPE_CHECKING:
    import anndata

__all__ = ["write_visium"]

_SPOT_COLUMNS = ("in_tissue", "array_row", "array_col")


def write_visium(
    adata: anndata.AnnData,
    path: str | os.PathLike,
    *,
    visium: anndata.AnnData | None = None,
    layer: str | None = None,
    library_id: str | None = None,
    feature_type: str = "Gene Expression",
    genome: str = "",
    overwrite: bool = False,
) -> Path:
    """Write spots × features as a Space Ranger ``outs``-like folder on the Visium image.

    Meant for MSI mapped onto Visium spots (:func:`spatialfuse.tl.map_to_spots`): the folder
    reads back with :func:`squidpy.read.visium`, :func:`spatialfuse.io.read_visium` and other
    Visium readers, which then show the m/z features on the H&E like genes. It holds

    - ``filtered_feature_bc_matrix.h5``: the spots that have data (``obs["has_msi"]`` where that
      column exists, and only rows without NaN) × the features (10x HDF5 v3 layout, ``id`` and
      ``name`` = ``var_names``). Values are written as they are: float32 / float64 stay floating
      point (Space Ranger writes int32 counts, but :func:`scanpy.read_10x_h5` passes float data
      through unchanged; it only converts int32), integers become int32;
    - ``spatial/tissue_positions.csv`` (Space Ranger 2.x, with header): every spot of the Visium
      data, with ``in_tissue``, ``array_row``, ``array_col`` and the full-res pixel position
      from ``obsm["spatial"]`` (``(x, y)`` = (``pxl_col_in_fullres``, ``pxl_row_in_fullres``));
    - ``spatial/scalefactors_json.json`` from ``uns["spatial"][library_id]["scalefactors"]``;
    - ``spatial/tissue_hires_image.png`` and ``tissue_lowres_image.png``: copied byte for byte
      from the Space Ranger folder the Visium data was read from (``uns["spatialfuse"]["path"]``)
      where it still exists, else written from the arrays in ``uns["spatial"]``.

    Written atomically: built in a temporary folder beside ``path``, renamed into place when
    complete.

    Parameters
    ----------
    adata
        Spots × features with Visium barcodes as ``obs_names``, e.g. the result of
        :func:`~spatialfuse.tl.map_to_spots`, which carries the Visium layout (``obs``
        ``in_tissue``/``array_row``/``array_col``, ``obsm["spatial"]``, ``uns["spatial"]``).
    path
        Output folder.
    visium
        The Visium data (:func:`spatialfuse.io.read_visium`) to take positions, scale factors and
        images from; default ``adata`` itself. Every barcode of ``adata`` must be among its spots.
    layer
        Write ``adata.layers[layer]`` instead of ``adata.X``.
    library_id
        ``library_ids`` attribute of the matrix; default the key of ``uns["spatial"]``.
    feature_type
        The 10x ``feature_type`` of every feature. :func:`scanpy.read_10x_h5` (and so
        :func:`squidpy.read.visium` and :func:`spatialfuse.io.read_visium`) keeps only
        ``"Gene Expression"`` features unless called with ``gex_only=False``; hence the default,
        although m/z features are not genes. Pass e.g. ``"Metabolite"`` to label them truthfully
        and read them with ``gex_only=False``.
    genome
        The 10x ``genome`` of every feature.
    overwrite
        Replace an existing ``path`` (only once the new folder is complete).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        ``adata`` lacks the Visium layout (and ``visium`` is not given), a barcode of ``adata`` is
        not a spot of ``visium``, ``layer`` does not exist, or no spot has data.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    from scipy import sparse

    from spatialfuse.core.adata import check_adata
    from spatialfuse.io.export.spaceranger_files import (
        write_10x_h5,
        write_positions_csv,
        write_scalefactors,
    )

    check_adata(adata, "adata", reader="read_visium", need_x=False)
    source = adata if visium is None else visium
    check_adata(source, "visium", reader="read_visium", need_x=False)
    library, entry = _library(source, library_id)
    pixels = _fullres_positions(source)
    missing = [c for c in _SPOT_COLUMNS if c not in source.obs]
    if missing:
        raise ValueError(
            f"{'visium' if visium is not None else 'adata'} has no obs {missing}; read the Visium "
            "data with sf.io.read_visium (or pass it as visium=)"
        )
    position = source.obs_names.get_indexer(adata.obs_names)
    if (position < 0).any():
        unknown = adata.obs_names[position < 0][:3].tolist()
        raise ValueError(
            f"{int((position < 0).sum())} barcodes of adata are not spots of the Visium data "
            f"(e.g. {unknown})"
        )

    matrix = adata.X if layer is None else _layer(adata, layer)
    keep = _rows_with_data(adata, matrix)
    if not keep.any():
        raise ValueError("no spot has data (obs['has_msi'] false or NaN rows everywhere)")
    if not keep.all():
        logger.info("write_visium: %d of %d spots without data left out", (~keep).sum(), keep.size)
    rows = matrix[np.flatnonzero(keep)]
    if not sparse.issparse(rows):
        rows = np.asarray(rows)

    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        spatial = tmp / "spatial"
        spatial.mkdir(parents=True)
        metadata = entry.get("metadata", {}) or {}
        write_10x_h5(
            tmp / "filtered_feature_bc_matrix.h5",
            adata.obs_names[keep],
            rows,
            adata.var_names,
            adata.var_names,
            library_id=library,
            feature_type=feature_type,
            genome=genome,
            chemistry_description=str(metadata.get("chemistry_description", "Visium V1 Slide")),
            software_version=f"spatialfuse {__version__}",
        )
        write_positions_csv(
            spatial / "tissue_positions.csv",
            source.obs_names,
            np.asarray(source.obs["in_tissue"], dtype=np.int64),
            np.asarray(source.obs["array_row"], dtype=np.int64),
            np.asarray(source.obs["array_col"], dtype=np.int64),
            pixels[:, 1],
            pixels[:, 0],
        )
        write_scalefactors(spatial / "scalefactors_json.json", _scalefactors(entry))
        _write_images(source, entry, spatial)
    logger.info("wrote %s: %d spots × %d features", path, int(keep.sum()), adata.n_vars)
    return path


def _library(source, library_id: str | None) -> tuple[str, dict[str, Any]]:
    spatial = source.uns.get("spatial", None)
    if not isinstance(spatial, dict) or not spatial:
        raise ValueError(
            "no uns['spatial'] (scale factors and images of the Visium library); read the Visium "
            "data with sf.io.read_visium and pass it as visium="
        )
    key = next(iter(spatial)) if len(spatial) == 1 else None
    if key is None:
        info = source.uns.get("spatialfuse", {}) or {}
        key = info.get("library_id") if info.get("library_id") in spatial else None
    if key is None:
        raise ValueError(f"uns['spatial'] holds several libraries {list(spatial)}; keep one")
    entry = spatial[key]
    if not isinstance(entry, dict):
        raise ValueError(f"uns['spatial'][{key!r}] must be a dict, got {type(entry).__name__}")
    return (str(library_id) if library_id is not None else str(key)), entry


def _fullres_positions(source) -> np.ndarray:
    if "spatial" not in source.obsm:
        raise ValueError("no obsm['spatial'] (full-res pixel positions of the spots)")
    pixels = np.asarray(source.obsm["spatial"], dtype=np.float64)
    if pixels.ndim != 2 or pixels.shape[1] != 2 or not np.isfinite(pixels).all():
        raise ValueError(f"obsm['spatial'] must be finite (n, 2), got shape {pixels.shape}")
    return pixels


def _layer(adata, layer: str):
    if layer not in adata.layers:
        raise ValueError(f"adata has no layer {layer!r} (layers: {list(adata.layers)})")
    return adata.layers[layer]


def _rows_with_data(adata, matrix) -> np.ndarray:
    """Spots with MSI data (``obs["has_msi"]`` where present) and no NaN in their row."""
    from scipy import sparse

    keep = np.ones(adata.n_obs, dtype=bool)
    if "has_msi" in adata.obs:
        keep &= np.asarray(adata.obs["has_msi"], dtype=bool)
    if sparse.issparse(matrix):
        csr = sparse.csr_matrix(matrix)
        bad = ~np.isfinite(csr.data)
        keep &= (
            np.bincount(
                np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[bad], minlength=csr.shape[0]
            )
            == 0
        )
    else:
        keep &= np.isfinite(np.asarray(matrix)).all(axis=1)
    return keep


def _scalefactors(entry: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in dict(entry.get("scalefactors", {}) or {}).items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str | int | float | bool):
            out[str(key)] = value
    if "tissue_hires_scalef" not in out:
        raise ValueError("uns['spatial'][library]['scalefactors'] has no tissue_hires_scalef")
    return out


def _write_images(source, entry: dict[str, Any], spatial: Path) -> None:
    """Copy the Space Ranger images where their files exist, else encode the arrays as PNG."""
    from PIL import Image

    info = source.uns.get("spatialfuse", {}) or {}
    origin = Path(info["path"]) / "spatial" if info.get("path") else None
    arrays = entry.get("images", {}) or {}
    for res, name in IMAGE_FILES.items():
        if origin is not None and (origin / name).is_file():
            shutil.copyfile(origin / name, spatial / name)
        elif res in arrays and arrays[res] is not None:
            image = np.asarray(arrays[res])
            if image.dtype != np.uint8:
                image = np.clip(np.rint(image * 255 if image.max() <= 1 else image), 0, 255)
                image = image.astype(np.uint8)
            Image.fromarray(image.squeeze()).save(spatial / name)
        else:
            warnings.warn(
                f"no {res} image (neither {name} in the source folder nor "
                f"uns['spatial'][...]['images'][{res!r}]); squidpy.read.visium needs both images",
                DataWarning,
                stacklevel=3,
            )
