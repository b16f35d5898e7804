"""Spatial domains of the spots: clusters of each spot's neighbourhood, not of the spot alone.

:func:`joint_cluster` clusters the spots on their own features, with the spatial graph mixed into
the feature graph (``spatial_smoothing``); :func:`spatial_domains` goes one step further, as
CellCharter (Varrone et al. 2024, Nat. Genet.) does: each spot's features are concatenated with
the means over its 1-, 2-, …, ``n_hops``-hop spatial neighbours, and a Gaussian mixture clusters
the result. The computation is squidpy's (``sq.gr.calculate_niche(flavor="cellcharter")``, a
simplified CellCharter: PCA of the aggregated features, one scikit-learn Gaussian mixture fit);
this module feeds it the joint embedding and the spatial graph and writes the labels back in the
style of the other ``sf.tl`` functions.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._docs import copy_and_returns, fill_doc
from spatialfuse.core.adata import check_count
from spatialfuse.tl._cluster import _by_size

if TYPE_CHECKING:
    import anndata
    import mudata

__all__ = ["spatial_domains"]

#: ``n_hops``: rings of spatial neighbours averaged (CellCharter's default ``n_layers`` is 3).
DEFAULT_HOPS = 3


@fill_doc(copy=copy_and_returns("data", "mudata.MuData or anndata.AnnData"))
def spatial_domains(
    data: mudata.MuData | anndata.AnnData,
    *,
    n_domains: int | None = None,
    use_rep: str | None = None,
    clusters_key: str = "joint",
    n_hops: int = DEFAULT_HOPS,
    n_spatial_neighbors: int = 6,
    key_added: str = "domains",
    seed: int = 0,
    copy: bool = False,
) -> mudata.MuData | anndata.AnnData | None:
    """Spatial domains: a Gaussian mixture on each spot's features and its neighbourhood's.

    The CellCharter approach through squidpy (``sq.gr.calculate_niche(flavor="cellcharter")``):
    the spot's embedding side by side with the mean embedding of its 1-hop, 2-hop, …
    ``n_hops``-hop neighbours on squidpy's spatial kNN graph (``n_spatial_neighbors`` nearest
    spots), a PCA of that, and a Gaussian mixture with ``n_domains`` components. A domain is then
    a kind of *neighbourhood*, not a kind of spot: noise that :func:`joint_cluster`'s graph
    smoothing leaves scattered through a region averages out, and a region of mixed spots gets
    one label. Use it after :func:`joint_cluster`: by default it takes that function's joint
    embedding (``obsm["X_joint"]``, no NaN) and its number of clusters.

    Parameters
    ----------
    data
        A joint table (MuData) or an AnnData, with spot positions in ``obsm["spatial_um"]`` (or
        ``obsm["spatial"]``).
    n_domains
        Number of domains (mixture components). None: the number of clusters that
        :func:`joint_cluster` (or :func:`cluster_modality`) found, read from
        ``uns[clusters_key]["params"]["n_clusters"]``.
    use_rep
        Embedding in ``obsm`` to aggregate. None: ``f"X_{clusters_key}"`` where present (the
        joint embedding), else ``"X_pca"``. Spots with a non-finite row get no domain (NaN) and
        take no part.
    clusters_key
        ``key_added`` of the clustering the defaults are read from.
    n_hops
        Rings of spatial neighbours averaged (1 = the nearest spots only).
    n_spatial_neighbors
        Neighbours per spot of the spatial graph (6 on the Visium hexagonal grid, 4 on an MSI
        raster).
    key_added
        Name of the labels and of the ``uns`` entry.
    seed
        Seed of the Gaussian mixture.
    {copy}

        - ``obs[key_added]``: categorical domain labels ``"0"``, ``"1"``, … (largest first), NaN
          for spots without a finite embedding;
        - ``uns[key_added]["params"]``: ``method`` (``"cellcharter (squidpy)"``), ``n_domains``
          and where it came from (``n_domains_from``), ``use_rep``, ``n_hops``,
          ``n_spatial_neighbors``, ``n_spots`` labelled, ``seed``.

    Raises
    ------
    TypeError
        ``data`` is neither a MuData nor an AnnData.
    ValueError
        No spot positions, no embedding ``use_rep``, no ``n_domains`` and no clustering to read
        it from, fewer finite spots than domains, or bad parameters.
    """
    import pandas as pd

    if not all(hasattr(data, a) for a in ("obs", "obsm", "uns", "n_obs")):
        raise TypeError(f"data must be a MuData or an AnnData, got {type(data).__name__}")
    check_count(n_hops, "n_hops")
    check_count(n_spatial_neighbors, "n_spatial_neighbors")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")
    position_key = "spatial_um" if "spatial_um" in data.obsm else "spatial"
    if position_key not in data.obsm:
        raise ValueError(
            "spatial_domains needs spot positions in obsm['spatial_um'] or obsm['spatial']"
        )
    if use_rep is None:
        use_rep = f"X_{clusters_key}" if f"X_{clusters_key}" in data.obsm else "X_pca"
    if use_rep not in data.obsm:
        raise ValueError(
            f"obsm has no {use_rep!r}; run sf.tl.joint_cluster first (or give use_rep=)"
        )
    n_domains, source = _n_domains(data, n_domains, clusters_key)

    embedding = np.asarray(data.obsm[use_rep], dtype=np.float64)
    if embedding.ndim != 2:
        raise ValueError(f"obsm[{use_rep!r}] must be 2-D, got shape {embedding.shape}")
    valid = np.isfinite(embedding).all(axis=1)
    if valid.sum() <= max(n_domains, n_spatial_neighbors):
        raise ValueError(
            f"{int(valid.sum())} spots with a finite {use_rep!r} are too few for {n_domains} "
            f"domains on a {n_spatial_neighbors}-neighbour graph"
        )
    positions = np.asarray(data.obsm[position_key], dtype=np.float64)[valid]
    found = _cellcharter(embedding[valid], positions, n_domains, n_hops, n_spatial_neighbors, seed)

    data = data.copy() if copy else data
    labels = np.full(data.n_obs, -1, dtype=np.int64)
    labels[valid] = _by_size(found)
    categories = [str(c) for c in range(int(labels.max()) + 1)]
    data.obs[key_added] = pd.Categorical(
        np.where(labels >= 0, labels.astype(str), None), categories=categories
    )
    params: dict[str, Any] = {
        "method": "cellcharter (squidpy)",
        "n_domains": int(n_domains),
        "n_domains_found": len(categories),
        "n_domains_from": source,
        "use_rep": use_rep,
        "n_hops": int(n_hops),
        "n_spatial_neighbors": int(n_spatial_neighbors),
        "n_spots": int(valid.sum()),
        "seed": int(seed),
    }
    data.uns[key_added] = {"params": params}
    return data if copy else None


def _n_domains(data, n_domains: int | None, clusters_key: str) -> tuple[int, str]:
    """``n_domains``, else the number of clusters in ``uns[clusters_key]``; and its source."""
    if n_domains is not None:
        check_count(n_domains, "n_domains")
        return int(n_domains), "given"
    params = data.uns.get(clusters_key, {}).get("params", {}) if clusters_key in data.uns else {}
    if "n_clusters" not in params:
        raise ValueError(
            f"give n_domains, or run sf.tl.joint_cluster(key_added={clusters_key!r}) first: "
            f"uns[{clusters_key!r}] records no number of clusters"
        )
    return int(params["n_clusters"]), f"uns[{clusters_key!r}]['params']['n_clusters']"


def _cellcharter(embedding, positions, n_domains, n_hops, n_spatial, seed) -> np.ndarray:
    """The CellCharter niches (squidpy's) of ``embedding`` on the kNN graph of ``positions``."""
    import anndata as ad
    import squidpy as sq
    from scipy import sparse

    from spatialfuse._spatial_graph import spatial_knn_graph

    # squidpy stacks the hops with scipy.sparse.hstack, which needs a sparse X
    tmp = ad.AnnData(X=sparse.csr_matrix(embedding))
    tmp.obsm["spatial"] = positions
    spatial_knn_graph(tmp, n_neighs=int(min(n_spatial, embedding.shape[0] - 1)))
    quiet = logging.getLogger("spatialdata")  # "CellCharter recommends ... scVI": we give one
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            sq.gr.calculate_niche(
                tmp,
                flavor="cellcharter",
                distance=int(n_hops),
                aggregation="mean",
                n_components=int(n_domains),
                random_state=int(seed),
            )
    finally:
        quiet.setLevel(level)
    return np.asarray(tmp.obs["cellcharter_niche"].astype(int))
