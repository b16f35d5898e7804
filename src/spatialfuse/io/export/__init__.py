"""Writers: AnnData/MuData files, SpatialData zarr stores and Space Ranger-like folders.

Everything here writes atomically (a temporary file or folder beside the target, then a rename),
so an interrupted write never leaves a half-written output under the final name.
"""
