"""Writers: AnnData/MuData files, SpatialData zarr stores and Space Ranger-like folders.

Everything here writes atomically (a temporary file or folder beside the target, then a rename),
so an interrupted write never leaves a half-written output under the final name.
"""

from spatialfuse.io.export._anndata import write_h5ad, write_h5mu
from spatialfuse.io.export._spatialdata import write_spatialdata
from spatialfuse.io.export._visium import write_visium

__all__ = ["write_h5ad", "write_h5mu", "write_spatialdata", "write_visium"]
