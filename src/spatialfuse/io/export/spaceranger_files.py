"""The files of a Space Ranger ``outs`` folder, written one at a time.

Shared by :func:`spatialfuse.io.write_visium` and the synthetic-data generator, so that both write
the layout :func:`spatialfuse.io.read_visium`, :func:`squidpy.read.visium` and
:func:`scanpy.read_10x_h5` read: a 10x feature-barcode matrix (HDF5, v3), a Space Ranger 2.x
positions file with a header, and ``scalefactors_json.json``. The output depends only on the
arguments (no clock, no host), so equal inputs give equal bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: Header of a Space Ranger 2.x ``tissue_positions.csv``.
POSITIONS_HEADER = "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres"


def write_10x_h5(
    path: Path,
    barcodes,
    matrix,
    feature_ids,
    feature_names,
    *,
    library_id: str,
    feature_type: str = "Gene Expression",
    genome: str = "",
    chemistry_description: str = "Visium V1 Slide",
    software_version: str = "spatialfuse",
) -> None:
    """Write a 10x Genomics feature-barcode matrix (HDF5, v3 layout): features × barcodes CSC.

    ``matrix`` is barcodes × features, dense or scipy sparse. Integer data is stored as int32
    (Space Ranger's counts); floating-point data keeps float32 / float64, which
    :func:`scanpy.read_10x_h5` passes through unchanged (it only re-types int32 data).
    """
    import h5py
    from scipy import sparse

    if sparse.issparse(matrix):
        csc = sparse.csc_matrix(matrix.T)
    else:
        csc = sparse.csc_matrix(np.asarray(matrix).T)
    data = csc.data
    if data.dtype.kind in "iub":
        data = data.astype(np.int32)
    elif data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    n_features = len(feature_ids)
    with h5py.File(path, "w") as fh:
        fh.attrs["library_ids"] = np.array([library_id.encode()])
        fh.attrs["chemistry_description"] = np.array([chemistry_description.encode()])
        fh.attrs["software_version"] = np.array([software_version.encode()])
        fh.attrs["filetype"] = np.array([b"matrix"])
        fh.attrs["version"] = np.array([2], dtype=np.int32)
        grp = fh.create_group("matrix")
        grp["barcodes"] = np.array([str(b).encode() for b in barcodes], dtype="S")
        grp["data"] = data
        grp["indices"] = csc.indices.astype(np.int64)
        grp["indptr"] = csc.indptr.astype(np.int64)
        grp["shape"] = np.array(csc.shape, dtype=np.int32)
        features = grp.create_group("features")
        features["id"] = np.array([str(g).encode() for g in feature_ids], dtype="S")
        features["name"] = np.array([str(g).encode() for g in feature_names], dtype="S")
        features["feature_type"] = np.array([feature_type.encode()] * n_features)
        features["genome"] = np.array([genome.encode()] * n_features)
        features["_all_tag_keys"] = np.array([b"genome"])


def write_positions_csv(
    path: Path, barcodes, in_tissue, array_row, array_col, pxl_row, pxl_col
) -> None:
    """Write ``tissue_positions.csv`` (Space Ranger 2.x, with header).

    Full-res coordinates are written with ``repr`` (exact round trip), integers as integers.
    """
    lines = [POSITIONS_HEADER]
    for b, t, r, c, pr, pc in zip(
        np.asarray(barcodes).tolist(),
        np.asarray(in_tissue).tolist(),
        np.asarray(array_row).tolist(),
        np.asarray(array_col).tolist(),
        np.asarray(pxl_row).tolist(),
        np.asarray(pxl_col).tolist(),
        strict=True,
    ):
        lines.append(f"{b},{int(t)},{int(r)},{int(c)},{pr!r},{pc!r}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_scalefactors(path: Path, scalefactors: Mapping[str, float]) -> None:
    """Write ``scalefactors_json.json`` (sorted keys, four-space indent)."""
    Path(path).write_text(
        json.dumps(dict(scalefactors), indent=4, sort_keys=True) + "\n", encoding="utf-8"
    )
