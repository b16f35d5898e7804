"""A Visium count matrix: a 10x HDF5 file (checked before scanpy reads it) or a 10x MTX folder.

Returns spots × genes with ``var_names`` made unique; barcodes are matched to positions by the
reader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._limits import check_count, require_regular_file
from spatialfuse.errors import FileFormatError, LimitExceededError, MissingFileError

if TYPE_CHECKING:
    import anndata

# An HDF5 dataset may declare at most this many times the file's size (gzip's ratio is ~1,032).
_H5_MAX_EXPANSION = 1100
# Values of a 10x matrix's indices checked at a time.
_H5_CHUNK_VALUES = 1 << 24


def _attr_to_str(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        items = [_attr_to_str(v) for v in value.ravel().tolist()]
        return items[0] if len(items) == 1 else items
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_counts(counts_path: Path) -> tuple[anndata.AnnData, dict[str, Any], str | None]:
    """Read a 10x HDF5 file or MTX folder; return the AnnData, metadata and the h5 library id."""
    if counts_path.is_dir():
        return _read_mtx(counts_path), {}, None
    require_regular_file(counts_path, "count matrix")

    import h5py
    import scanpy as sc

    if not h5py.is_hdf5(counts_path):
        raise FileFormatError(
            counts_path, "not an HDF5 file (expected a 10x feature-barcode matrix)"
        )
    metadata: dict[str, Any] = {}
    library_id = None
    try:
        with h5py.File(counts_path, "r") as fh:
            attrs = {k: _attr_to_str(v) for k, v in fh.attrs.items()}
    except Exception as exc:  # h5py raises OSError, RuntimeError, ... for damaged metadata
        raise FileFormatError(counts_path, f"cannot be opened as HDF5 ({exc})") from exc
    ids = attrs.get("library_ids")
    if isinstance(ids, list):
        ids = ids[0] if ids else None
    if ids:
        library_id = str(ids)
    for key in ("chemistry_description", "software_version"):
        if key in attrs and isinstance(attrs[key], str | int | float):
            metadata[key] = attrs[key]
    _check_10x_h5(counts_path)
    try:
        adata = sc.read_10x_h5(counts_path)
    except Exception as exc:  # scanpy raises bare Exception/KeyError/ValueError for bad files
        raise FileFormatError(
            counts_path, f"not a readable 10x HDF5 matrix ({type(exc).__name__}: {exc})"
        ) from exc
    adata.var_names_make_unique()
    return adata, metadata, library_id


def _check_10x_h5(counts_path: Path) -> None:
    """Refuse a 10x HDF5 matrix whose arrays do not fit together, before scanpy reads it.

    scanpy builds the sparse matrix without checking it, and out-of-range indices or pointers
    then crash the interpreter inside scipy. HDF5 stores chunks that were never written as
    nothing, so a dataset can declare any size; one declaring more than the file could hold
    (gzip expands at most ~1,032-fold) is refused before anything is read.
    """
    import h5py

    file_size = counts_path.stat().st_size
    limit = _H5_MAX_EXPANSION * file_size + (1 << 20)

    def fail(problem: str):
        raise FileFormatError(counts_path, f"not a readable 10x HDF5 matrix: {problem}")

    try:
        with h5py.File(counts_path, "r") as fh:
            group = fh.get("matrix")
            if group is None:  # Space Ranger 1.x: one group per genome
                groups = [g for g in fh.values() if isinstance(g, h5py.Group) and "indptr" in g]
                if len(groups) != 1:
                    return  # not a layout this check knows; scanpy's reader decides
                group = groups[0]
            datasets: dict[str, h5py.Dataset] = {}

            def collect(name, obj) -> None:  # visititems stops at the first non-None return
                if isinstance(obj, h5py.Dataset):
                    datasets[name] = obj

            group.visititems(collect)
            for name, dataset in datasets.items():
                nbytes = dataset.size * dataset.dtype.itemsize
                if nbytes > limit:
                    fail(
                        f"{name} declares {dataset.size:,} values ({nbytes:,} bytes), more than a "
                        f"file of {file_size:,} bytes can hold"
                    )
            features = "features/id" if "features/id" in datasets else "genes"
            missing = [
                n
                for n in ("data", "indices", "indptr", "shape", "barcodes", features)
                if n not in datasets
            ]
            if missing:
                fail(f"no {', '.join(missing)} dataset in {group.name}")
            n_features, n_barcodes = len(datasets[features]), len(datasets["barcodes"])
            check_count(counts_path, "barcodes", n_barcodes, "max_spots")
            shape = np.asarray(datasets["shape"][()])
            if shape.shape != (2,) or shape.dtype.kind not in "iu":
                fail(f"shape is {shape.tolist()!r}, not two integers")
            if shape.tolist() != [n_features, n_barcodes]:
                fail(
                    f"shape says {shape.tolist()} (features × barcodes) but there are "
                    f"{n_features:,} features and {n_barcodes:,} barcodes"
                )
            data, indices = datasets["data"], datasets["indices"]
            if data.dtype.kind not in "iufb" or indices.dtype.kind not in "iu":
                fail(f"data ({data.dtype}) or indices ({indices.dtype}) are not numbers")
            if data.shape != indices.shape or data.ndim != 1:
                fail(f"data has shape {data.shape} but indices {indices.shape}")
            indptr = np.asarray(datasets["indptr"][()])
            if indptr.dtype.kind not in "iu" or indptr.shape != (n_barcodes + 1,):
                fail(f"indptr has {indptr.size:,} values, not one per barcode plus one")
            indptr = indptr.astype(np.int64)  # Space Ranger writes uint32: differences would wrap
            if indptr[0] != 0 or indptr[-1] != len(data) or (np.diff(indptr) < 0).any():
                fail(
                    f"indptr does not rise from 0 to the {len(data):,} stored values "
                    f"(it runs from {indptr[0]} to {indptr[-1]})"
                )
            for start in range(0, len(indices), _H5_CHUNK_VALUES):
                block = indices[start : start + _H5_CHUNK_VALUES]
                if block.size and (block.min() < 0 or block.max() >= n_features):
                    fail(f"a feature index lies outside 0..{n_features - 1}")
    except (FileFormatError, LimitExceededError):
        raise
    except Exception as exc:  # h5py raises many types for a damaged file
        fail(f"{type(exc).__name__}: {exc}")


def _read_mtx(folder: Path) -> anndata.AnnData:
    """Read a 10x MTX folder: scanpy for its layouts, an uncompressed v3 folder by hand."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    import scipy.io
    from scipy import sparse

    for name in os.listdir(folder):  # a FIFO or device would block the reader
        if not (folder / name).is_dir():
            require_regular_file(folder / name, "count matrix file")
    has = {name: (folder / name).is_file() for name in os.listdir(folder)}
    if has.get("matrix.mtx.gz") or has.get("genes.tsv"):
        try:
            return sc.read_10x_mtx(folder)
        except FileNotFoundError as exc:
            raise MissingFileError(exc.filename or folder, "10x MTX folder is incomplete") from exc
        except Exception as exc:
            raise FileFormatError(folder, f"not a readable 10x MTX folder ({exc})") from exc
    # Space Ranger v3 layout written without gzip (features.tsv, not genes.tsv): scanpy only reads
    # the gzipped variant, so read it the way scanpy does.
    for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
        if not has.get(name):
            raise MissingFileError(folder / name, "10x MTX folder is incomplete")
    try:
        matrix = sparse.csr_matrix(scipy.io.mmread(folder / "matrix.mtx").T, dtype=np.float32)
        features = pd.read_csv(folder / "features.tsv", header=None, sep="\t", dtype=str)
        barcodes = pd.read_csv(folder / "barcodes.tsv", header=None, dtype=str)
    except Exception as exc:
        raise FileFormatError(folder, f"not a readable 10x MTX folder ({exc})") from exc
    if features.shape[1] < 2 or matrix.shape != (len(barcodes), len(features)):
        raise FileFormatError(
            folder,
            f"matrix.mtx is {matrix.shape[1]} × {matrix.shape[0]} (features × barcodes) but there "
            f"are {len(features)} features and {len(barcodes)} barcodes",
        )
    var = pd.DataFrame({"gene_ids": features[0].to_numpy()}, index=features[1].to_numpy())
    if features.shape[1] > 2:
        var["feature_types"] = features[2].to_numpy()
    adata = ad.AnnData(X=matrix, obs=pd.DataFrame(index=barcodes[0].to_numpy()), var=var)
    adata.var_names_make_unique()
    if "feature_types" in adata.var:
        adata = adata[:, adata.var["feature_types"] == "Gene Expression"].copy()
    return adata
