"""MSI preprocessing: normalise, log, optionally keep spatially patterned ions, scale, PCA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._docs import PCA_OPTIONS, copy_and_returns, fill_doc
from spatialfuse._logging import logger
from spatialfuse.core.adata import check_adata, is_dask, rows_with_data
from spatialfuse.pp._common import pca_on_rows, record
from spatialfuse.pp._msi_norm import normalize_msi
from spatialfuse.pp._spatial_filter import filter_ions_spatial

if TYPE_CHECKING:
    import anndata

__all__ = ["preprocess_msi"]


@fill_doc(pca_options=PCA_OPTIONS, copy=copy_and_returns())
def preprocess_msi(
    adata: anndata.AnnData,
    *,
    norm: str = "tic",
    log: bool = True,
    spatial_filter: bool = False,
    filter_kwargs: dict[str, Any] | None = None,
    n_comps: int = 30,
    scale: bool = True,
    max_value: float | None = 10.0,
    random_state: int = 0,
    copy: bool = False,
) -> anndata.AnnData | None:
    """Normalise and log the spectra, optionally flag patterned ions, and run a PCA.

    The steps: :func:`normalize_msi` (``norm``, ``log``); with ``spatial_filter``,
    :func:`filter_ions_spatial` (which flags features, it does not drop them) and the PCA then
    uses the flagged ions only; each ion z-scored over the spectra with data (clipped at
    ``max_value``, on a temporary copy) when ``scale``; scanpy's PCA (ARPACK, seeded).

    Rows without MSI data (NaN, or ``obs["has_msi"]`` false: spots outside the MSI acquisition
    after :func:`spatialfuse.tl.map_to_spots`) are left out of every statistic and get NaN scores.

    The raw intensities are kept in ``layers["raw"]``; if that layer already exists it is the
    starting point, so running the function twice gives the same result. A dask-backed ``X``
    (:func:`spatialfuse.io.read_msi_zarr`) stays lazy, and its PCA is streamed: three passes
    over blocks of rows within the ``max_block_bytes`` resource limit (the features' moments,
    their covariance, the scores), holding a features × features matrix, never the table; the
    axes are ARPACK's up to sign (``uns["pca"]["params"]["svd_solver"]`` says which ran).

    Parameters
    ----------
    adata
        Spectra × m/z: MSI pixels (:func:`~spatialfuse.io.read_imzml`) or spots
        (:func:`~spatialfuse.tl.map_to_spots`).
    norm
        Normalisation method of :func:`normalize_msi`: ``"tic"``, ``"rms"``, ``"median"`` or
        ``"none"``.
    log
        Apply ``log1p`` after normalising.
    spatial_filter
        Run :func:`filter_ions_spatial` and use only the ions it keeps for the PCA.
    filter_kwargs
        Keyword arguments of :func:`filter_ions_spatial` (``min_moran``, ``max_fdr``, ``n_top``,
        ``n_neighs``, ``spatial_key``, ``key_added``; not ``subset``/``copy``).
    n_comps
        Number of principal components; reduced (with a DataWarning) when the data allow fewer.
    {pca_options}
    {copy}

        - ``layers["raw"]``: the intensities before preprocessing;
        - ``X``, ``obs["norm_factor"]``, ``uns["log1p"]``: see :func:`normalize_msi`;
        - with ``spatial_filter``: ``var["moranI"]``, ``var["moranI_pval"]``,
          ``var["moranI_fdr"]`` and the boolean ``var["spatially_variable"]`` (or the
          ``key_added`` given in ``filter_kwargs``);
        - ``obsm["X_pca"]`` (NaN rows for spectra without data), ``varm["PCs"]`` (zero for ions
          not used), ``uns["pca"]``; ``var["pca_mean"]``, ``var["pca_std"]``;
        - ``uns["spatialfuse"]["preprocessing"]``: the parameters of each step.

    Raises
    ------
    TypeError
        ``adata`` is not an AnnData.
    ValueError
        Bad parameters, negative intensities with ``log``, too few spectra with data or too few
        ions for a PCA, or ``filter_kwargs`` with ``subset``/``copy``.
    """
    check_adata(adata)
    kwargs = dict(filter_kwargs or {})
    for forbidden in ("subset", "copy"):
        if forbidden in kwargs:
            raise ValueError(
                f"filter_kwargs may not set {forbidden!r}: preprocess_msi flags ions and uses the "
                "flag for its PCA; call filter_ions_spatial yourself to subset"
            )
    adata = adata.copy() if copy else adata

    if "raw" in adata.layers:
        adata.X = adata.layers["raw"]
    else:
        adata.layers["raw"] = adata.X if is_dask(adata.X) else adata.X.copy()
    normalize_msi(adata, method=norm, log=log)

    var_mask = np.ones(adata.n_vars, dtype=bool)
    if spatial_filter:
        key = kwargs.setdefault("key_added", "spatially_variable")
        filter_ions_spatial(adata, **kwargs)
        var_mask = adata.var[key].to_numpy(dtype=bool)
    rows = rows_with_data(adata)
    pca = pca_on_rows(
        adata,
        rows=rows,
        var_mask=var_mask,
        n_comps=n_comps,
        scale=scale,
        max_value=max_value,
        random_state=random_state,
        what="spectra with data",
    )
    record(
        adata,
        "preprocess_msi",
        {
            "norm": norm,
            "log": "log1p" if log else "none",
            "spatial_filter": bool(spatial_filter),
            **{f"pca_{k}": v for k, v in pca.items()},
        },
    )
    logger.info(
        "preprocess_msi: %d of %d spectra with data, %d of %d ions, %d components",
        int(rows.sum()),
        adata.n_obs,
        int(var_mask.sum()),
        adata.n_vars,
        pca["n_comps"],
    )
    return adata if copy else None
