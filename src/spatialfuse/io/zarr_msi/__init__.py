"""MSI out of core: imzML → chunked zarr stores, lazy (dask) reading, cluster conversion.

See ``docs/out_of_core.md``.
"""

from spatialfuse.io.zarr_msi._convert import convert_imzml
from spatialfuse.io.zarr_msi._memory import parse_memory
from spatialfuse.io.zarr_msi._read import (
    ion_image_from_zarr,
    open_msi_store,
    read_msi_zarr,
    sparse_matmul,
)

__all__ = [
    "convert_imzml",
    "ion_image_from_zarr",
    "open_msi_store",
    "parse_memory",
    "read_msi_zarr",
    "sparse_matmul",
]
