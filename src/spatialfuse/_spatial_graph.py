"""squidpy's k-nearest-neighbour spatial graph, across squidpy versions.

squidpy 1.8.2 added ``spatial_neighbors_knn`` and deprecated the generic ``spatial_neighbors``
(removed in 1.9); earlier releases have only the latter. Both build the same graph.
"""

from __future__ import annotations


def spatial_knn_graph(adata, *, n_neighs: int, spatial_key: str = "spatial") -> None:
    """Write squidpy's kNN graph of ``adata.obsm[spatial_key]`` into ``adata.obsp``."""
    import squidpy as sq

    knn = getattr(sq.gr, "spatial_neighbors_knn", None)
    if knn is not None:
        knn(adata, spatial_key=spatial_key, n_neighs=n_neighs)
    else:
        sq.gr.spatial_neighbors(
            adata, spatial_key=spatial_key, coord_type="generic", n_neighs=n_neighs
        )
