"""Expression preprocessing: counts → log-normalised values → highly variable genes → PCA."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._docs import PCA_OPTIONS, copy_and_returns, fill_doc
from spatialfuse._logging import logger
from spatialfuse.core.adata import check_adata, check_count, finite_rows
from spatialfuse.pp._common import pca_on_rows, record

if TYPE_CHECKING:
    import anndata

__all__ = ["preprocess_rna"]


@fill_doc(pca_options=PCA_OPTIONS, copy=copy_and_returns())
def preprocess_rna(
    adata: anndata.AnnData,
    *,
    n_top_genes: int | None = 2000,
    n_comps: int = 30,
    target_sum: float | None = None,
    scale: bool = True,
    max_value: float | None = 10.0,
    random_state: int = 0,
    copy: bool = False,
) -> anndata.AnnData | None:
    """Normalise, log-transform, select highly variable genes and run a PCA (all with scanpy).

    The steps are scanpy's: ``sc.pp.normalize_total`` (each spot to ``target_sum`` counts),
    ``sc.pp.log1p``, ``sc.pp.highly_variable_genes`` (``flavor="seurat"`` on the log values) and
    ``sc.pp.pca`` (ARPACK, seeded) of the highly variable genes, z-scored first when ``scale``
    (as Seurat's ``ScaleData``; on a temporary copy, so ``X`` keeps the log values).

    The raw counts are kept in ``layers["counts"]``. If that layer already exists (the table was
    preprocessed before), it is the starting point, so running the function twice gives the same
    result instead of logging twice.

    Parameters
    ----------
    adata
        Spots × genes with raw counts in ``X`` (e.g. from :func:`spatialfuse.io.read_visium`).
    n_top_genes
        Number of highly variable genes; at most the number of genes. None: use every gene.
    n_comps
        Number of principal components; reduced (with a :class:`~spatialfuse.errors.DataWarning`)
        to ``min(n_spots, n_genes) − 1`` when the data allow fewer.
    target_sum
        Counts per spot after normalisation; None: the median of the spots' totals.
    {pca_options}
    {copy}

        - ``layers["counts"]``: the raw counts;
        - ``X``: ``log1p`` of the normalised counts (natural log); ``uns["log1p"]``;
        - ``var["highly_variable"]``, ``var["means"]``, ``var["dispersions"]``,
          ``var["dispersions_norm"]``: scanpy's gene selection;
        - ``obsm["X_pca"]``, ``varm["PCs"]`` (zero for genes not used), ``uns["pca"]``
          (``variance``, ``variance_ratio``, ``params``); ``var["pca_mean"]``, ``var["pca_std"]``:
          the mean and standard deviation used to z-score each gene (NaN for genes not used);
        - ``uns["spatialfuse"]["preprocessing"]["preprocess_rna"]``: the parameters.

    Raises
    ------
    TypeError
        ``adata`` is not an AnnData.
    ValueError
        The counts are negative or not finite, or there are too few spots or genes for a PCA.
    """
    import scanpy as sc
    from scipy import sparse

    check_adata(adata)
    check_count(n_top_genes, "n_top_genes", optional=True)
    if target_sum is not None and not (np.isfinite(target_sum) and target_sum > 0):
        raise ValueError(f"target_sum must be a positive number or None, got {target_sum!r}")
    adata = adata.copy() if copy else adata

    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    if sparse.issparse(counts):
        counts = sparse.csr_matrix(counts, dtype=np.float32, copy=True)
        values = counts.data
    else:
        counts = np.array(counts, dtype=np.float32)
        values = counts
    if not finite_rows(counts).all():
        raise ValueError("the counts contain NaN or infinite values")
    if values.size and values.min() < 0:
        raise ValueError(
            "the counts contain negative values; preprocess_rna expects raw counts (log-"
            "normalised data cannot be normalised again)"
        )
    adata.layers["counts"] = counts.copy()
    adata.X = counts

    with warnings.catch_warnings():
        # scanpy warns about spots with zero counts; they stay zero, which is the right answer
        warnings.simplefilter("ignore", UserWarning)
        sc.pp.normalize_total(adata, target_sum=target_sum)
    adata.uns.pop("log1p", None)
    sc.pp.log1p(adata)

    n_genes = adata.n_vars
    if n_top_genes is None or n_top_genes >= n_genes or adata.n_obs < 2:
        adata.var["highly_variable"] = True
        n_hvg = n_genes
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant genes: NaN dispersion
            sc.pp.highly_variable_genes(adata, n_top_genes=int(n_top_genes), flavor="seurat")
        n_hvg = int(adata.var["highly_variable"].sum())
    mask = adata.var["highly_variable"].to_numpy(dtype=bool)
    pca = pca_on_rows(
        adata,
        rows=np.ones(adata.n_obs, dtype=bool),
        var_mask=mask,
        n_comps=n_comps,
        scale=scale,
        max_value=max_value,
        random_state=random_state,
        what="spots",
    )
    record(
        adata,
        "preprocess_rna",
        {
            "target_sum": float(target_sum) if target_sum is not None else None,
            "log": "log1p",
            "n_top_genes": n_hvg,
            "hvg_flavor": "seurat" if n_hvg < n_genes else None,
            **{f"pca_{k}": v for k, v in pca.items()},
        },
    )
    logger.info(
        "preprocess_rna: %d spots, %d of %d genes, %d components",
        adata.n_obs,
        n_hvg,
        n_genes,
        pca["n_comps"],
    )
    return adata if copy else None
