"""``sf.io``: readers and writers of MSI, histology and Visium data, in micrometres.

Readers turn imzML, histology images and Space Ranger folders into Python objects; writers
(:mod:`spatialfuse.io.export`: h5ad/h5mu, SpatialData zarr, Space Ranger-like folders) write
results atomically.

Names load on first access, as the package's subpackages do: opening an imzML file in a fresh
process (``from spatialfuse.io import ImzMLReader``) does not import the writers, the Visium
reader or the histology decoders.

See ``docs/coordinates.md`` for how pixels, spectra and spots map to micrometres.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spatialfuse._lazy import lazy_attributes

if TYPE_CHECKING:
    from spatialfuse.io._inputs import input_files
    from spatialfuse.io.export import write_h5ad, write_h5mu, write_spatialdata, write_visium
    from spatialfuse.io.histology import HistologyImage, describe_histology, read_histology
    from spatialfuse.io.imzml import (
        FeatureOptions,
        ImzMLReader,
        MzAxis,
        build_mz_axis,
        describe_imzml,
        read_imzml,
    )
    from spatialfuse.io.visium import describe_visium, read_visium, visium_files
    from spatialfuse.io.zarr_msi import (
        convert_imzml,
        ion_image_from_zarr,
        read_msi_zarr,
        sparse_matmul,
    )

#: Public name → the module that defines it.
_SOURCES = {
    "input_files": "spatialfuse.io._inputs",
    **dict.fromkeys(
        ("write_h5ad", "write_h5mu", "write_spatialdata", "write_visium"), "spatialfuse.io.export"
    ),
    **dict.fromkeys(
        ("HistologyImage", "describe_histology", "read_histology"), "spatialfuse.io.histology"
    ),
    **dict.fromkeys(
        (
            "FeatureOptions",
            "ImzMLReader",
            "MzAxis",
            "build_mz_axis",
            "describe_imzml",
            "read_imzml",
        ),
        "spatialfuse.io.imzml",
    ),
    **dict.fromkeys(("describe_visium", "read_visium", "visium_files"), "spatialfuse.io.visium"),
    **dict.fromkeys(
        ("convert_imzml", "ion_image_from_zarr", "read_msi_zarr", "sparse_matmul"),
        "spatialfuse.io.zarr_msi",
    ),
}

__all__ = [
    "FeatureOptions",
    "HistologyImage",
    "ImzMLReader",
    "MzAxis",
    "build_mz_axis",
    "convert_imzml",
    "describe_histology",
    "describe_imzml",
    "describe_visium",
    "input_files",
    "ion_image_from_zarr",
    "read_histology",
    "read_imzml",
    "read_msi_zarr",
    "read_visium",
    "sparse_matmul",
    "visium_files",
    "write_h5ad",
    "write_h5mu",
    "write_spatialdata",
    "write_visium",
]

__getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
