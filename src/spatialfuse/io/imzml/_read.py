"""``read_imzml``: an imzML file as an AnnData table of pixels × m/z features."""

from __future__ import annotations

import os

import numpy as np

from spatialfuse._docs import FEATURE_OPTIONS, fill_doc
from spatialfuse._text import printable
from spatialfuse._version import __version__
from spatialfuse.core.mz import mz_feature_names
from spatialfuse.io.imzml import _finite, _kernels
from spatialfuse.io.imzml._axis import DEFAULT_MAX_FEATURES
from spatialfuse.io.imzml._features import FeatureOptions
from spatialfuse.io.imzml._reader import ImzMLReader


def msi_obs(coords: np.ndarray, tic: np.ndarray):
    """The ``obs`` table of an MSI AnnData: ``"x_y"`` names, grid positions as written, TIC."""
    import pandas as pd

    three_d = bool((coords[:, 2] != coords[0, 2]).any()) if len(coords) else False
    if three_d:
        names = [f"{x}_{y}_{z}" for x, y, z in coords.tolist()]
    else:
        names = [f"{x}_{y}" for x, y, _ in coords.tolist()]
    obs = pd.DataFrame(
        {"imzml_x": coords[:, 0], "imzml_y": coords[:, 1]}, index=pd.Index(names, dtype=str)
    )
    if three_d:
        obs["imzml_z"] = coords[:, 2]
    obs["tic"] = tic
    return obs


def feature_var(centres, lo, hi):
    """The ``var`` table of an MSI AnnData: names like ``mz-760.5851``, window centre and edges."""
    import pandas as pd

    return pd.DataFrame(
        {
            "mz": np.asarray(centres, dtype=np.float64),
            "mz_lo": np.asarray(lo, dtype=np.float64),
            "mz_hi": np.asarray(hi, dtype=np.float64),
        },
        index=pd.Index(mz_feature_names(np.asarray(centres)), dtype=str),
    )


def msi_provenance(reader, size, size_source: str, windows: dict, *, made_by="read_imzml") -> dict:
    """``uns["spatialfuse"]`` of an MSI AnnData: where it came from and how it was built."""
    low, high = reader.mz_range()
    return {
        "modality": "msi",
        "reader": made_by,
        "file": printable(reader.path),
        "ibd_file": printable(reader.ibd_path),
        "uuid": reader.uuid or "",
        "mode": reader.mode,
        "pixel_size_um": [float(size[0]), float(size[1])],
        "pixel_size_source": size_source,
        "mz_range": [float(low), float(high)],
        "mz_dtype": str(reader.mz_dtype),
        "intensity_dtype": str(reader.intensity_dtype),
        "n_spectra": int(reader.n_spectra),
        "grid_origin": [int(v) for v in reader.grid_origin],
        "grid_shape": [int(v) for v in reader.grid_shape],
        "windows": windows,
        "coordinates": "obsm['spatial'] = pixel centres in µm, ((x-0.5)*sx, (y-0.5)*sy)",
        "version": __version__,
    }


def _smaller_layout(table):
    """``table`` as CSR or dense, whichever takes less memory."""
    from scipy import sparse

    if sparse.issparse(table):
        dense_bytes = table.shape[0] * table.shape[1] * table.dtype.itemsize
        sparse_bytes = table.data.nbytes + table.indices.nbytes + table.indptr.nbytes
        return table.toarray() if dense_bytes < sparse_bytes else table
    nnz = int(np.count_nonzero(table))
    if nnz * 8 + (table.shape[0] + 1) * 8 < table.nbytes:
        return sparse.csr_matrix(table)
    return table


@fill_doc(feature_options=FEATURE_OPTIONS)
def read_imzml(
    path: str | os.PathLike,
    *,
    mz=None,
    ppm: float | None = None,
    tol: float | None = None,
    pixel_size_um: float | tuple[float, float] | None = None,
    min_frequency: float = 0.01,
    max_features: int | None = DEFAULT_MAX_FEATURES,
    features: FeatureOptions | None = None,
    cache: bool = True,
    show_progress: bool = False,
):
    """Read an imzML file into an AnnData of pixels × m/z features, in micrometres.

    Parameters
    ----------
    path
        The ``.imzML`` file (its ``.ibd`` must sit beside it).
    {feature_options}
    pixel_size_um
        Pixel size ``s`` or ``(sx, sy)`` in µm. Overrides the file's; required where the file does
        not state it.
    features
        The feature options ``mz``, ``ppm``, ``tol``, ``min_frequency`` and ``max_features`` as
        one :class:`~spatialfuse.io.FeatureOptions` (shared with
        :func:`~spatialfuse.io.convert_imzml`), instead of the keywords.
    cache
        Use the offset-table cache.
    show_progress
        Show progress bars.

    Returns
    -------
    anndata.AnnData
        Spectra × features:

        - ``X``: float32 summed intensities (CSR where that is smaller);
        - ``obs_names`` ``"x_y"`` (``"x_y_z"`` for 3-D data); ``obs["imzml_x"]``,
          ``obs["imzml_y"]`` (and ``obs["imzml_z"]``): grid positions exactly as written;
          ``obs["tic"]``: total ion count of the whole spectrum;
        - ``obsm["spatial"]``: pixel centres ``((x − ½)·sx, (y − ½)·sy)`` in µm, in the MSI's
          own frame;
        - ``var_names`` like ``mz-760.5851``; ``var["mz"]`` (float64), ``var["mz_lo"]``,
          ``var["mz_hi"]``: the closed window each feature sums;
        - ``uns["spatialfuse"]``: provenance (file, UUID, mode, pixel size and its source, m/z
          range, window rule, version).

    Warns
    -----
    DataWarning
        The file holds NaN or infinite intensities: they are read as 0 (in ``X`` and ``tic``).
    """
    import anndata as ad

    options = FeatureOptions.resolve(
        features, mz=mz, ppm=ppm, tol=tol, min_frequency=min_frequency, max_features=max_features
    )
    with ImzMLReader(path, cache=cache) as reader:
        reader._acc.stream = True  # one pass each: the .ibd's pages need not stay mapped
        size = reader.require_pixel_size(pixel_size_um)
        size_source = "argument" if pixel_size_um is not None else "file"
        kind, centres, lo, hi, window_rule = options.choose(reader, show_progress=show_progress)
        tic, found = reader._tic(show_progress=show_progress)
        if kind == "identity":
            matrix = _kernels.intensity_matrix(reader._acc)
            if matrix is not None:
                table = np.empty(matrix.shape, dtype=np.float32)
                for a, b in _kernels._row_chunks(len(table), matrix.shape[1] * 8):
                    table[a:b] = matrix[a:b]
                    reader._acc.done_with(a, b)
            else:
                table = np.stack(
                    [reader._acc.array(i, "int") for i in range(reader.n_spectra)]
                ).astype(np.float32)
            _finite.zero_rows(table, found)  # the TIC finds every spectrum that holds any
        else:
            table, _ = reader._window_sums(
                lo, hi, dtype=np.float32, sparse=True, show_progress=show_progress
            )
        _finite.warn_nonfinite(reader.path, found)
        coords = reader.coordinates
        obs = msi_obs(coords, tic)
        var = feature_var(centres, lo, hi)
        spatial = np.stack(
            [(coords[:, 0] - 0.5) * size[0], (coords[:, 1] - 0.5) * size[1]], axis=1
        ).astype(np.float64)
        provenance = msi_provenance(reader, size, size_source, window_rule)
    adata = ad.AnnData(X=_smaller_layout(table), obs=obs, var=var)
    adata.obsm["spatial"] = spatial
    adata.uns["spatialfuse"] = provenance
    return adata
