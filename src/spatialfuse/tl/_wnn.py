"""Neighbour graphs of embeddings: one kernel for one embedding, and weighted nearest neighbours.

Weighted nearest neighbours (WNN; Hao et al. 2021, *Cell* 184:3573, Seurat v4's
``FindMultiModalNeighbors``) is written here rather than taken from muon: muon 0.1.9's
``mu.pp.neighbors`` was tried in this environment and is unusable — it crashed the interpreter
with "double free or corruption" and spent about a minute in numba compilation on 100 cells.

Every graph uses the same affinity (Hao et al.'s kernel): for spot ``i`` and a spot ``j`` at
distance ``d`` in an embedding,

    θ(i, j) = exp(−max(d − c_i, 0) / (σ_i − c_i)),

with ``c_i`` the distance to ``i``'s nearest other spot and ``σ_i`` the mean distance to the
``n_bandwidth`` spots whose ``k``-neighbourhoods overlap most with ``i``'s (Jaccard index, ties
broken by distance). A single embedding's graph links each spot to its ``k`` nearest spots with
weights θ, so single-modality, concatenated and WNN clusterings differ only in their embeddings
and weights, never in the graph machinery.

WNN: per modality ``m`` with embedding rows ``x_i`` (L2-normalised), the mean of ``x`` over
``i``'s ``k`` nearest spots *in m* predicts ``x_i`` ("within"), and the mean over its ``k``
nearest spots *in the other modality* predicts it too ("cross"). The affinities of ``x_i`` to the
two predictions give ``s_i^m = θ_within / (θ_cross + ε)``; the weights ``w_i^m`` are the softmax
of ``s_i`` over modalities. Candidate neighbours are the union of each modality's
``n_candidates`` nearest; the graph keeps each spot's ``k`` candidates with the largest
``θ(i, j) = Σ_m w_i^m θ_m(i, j)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Neighbourhoods", "kernel_graph", "neighbourhoods", "symmetrise", "wnn_graph"]

#: ε of the within/cross ratio (Hao et al.).
RATIO_EPS = 1e-4
# Candidate pairs whose distances are computed at once (bounds temporaries to ~100 MB).
_PAIRS_PER_BLOCK = 1 << 19


@dataclass(frozen=True)
class Neighbourhoods:
    """Nearest other spots of every spot in one embedding, and its kernel's bandwidths.

    ``index``/``distance``: ``(n, n_found)``, nearest first, self excluded. ``c``: distance to
    the nearest; ``sigma``: the Jaccard bandwidth (see the module docstring); ``k``: the size of
    the neighbourhoods the Jaccard index compares.
    """

    embedding: np.ndarray
    index: np.ndarray
    distance: np.ndarray
    c: np.ndarray
    sigma: np.ndarray
    k: int

    def affinity(self, rows: np.ndarray, other: np.ndarray) -> np.ndarray:
        """θ(rows[p], other[p]) for each pair ``p``."""
        d = _pair_distances(self.embedding, rows, other)
        c, sigma = self.c[rows], self.sigma[rows]
        return np.exp(-np.maximum(d - c, 0.0) / _bandwidth(sigma, c))


def neighbourhoods(
    embedding: np.ndarray, *, k: int, n_bandwidth: int, n_candidates: int = 0
) -> Neighbourhoods:
    """k-nearest neighbours (exact, Euclidean) and kernel bandwidths of an ``(n, d)`` embedding."""
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    x = np.ascontiguousarray(embedding, dtype=np.float64)
    n = x.shape[0]
    want = min(max(k, n_bandwidth, n_candidates), n - 1)
    nn = NearestNeighbors(n_neighbors=want + 1).fit(x)
    dist, idx = nn.kneighbors(x)
    index, distance = _drop_self(idx, dist)
    k = min(k, want)

    # Jaccard index of the k-neighbourhoods (self included, as Seurat) for every pair that shares
    # a neighbour; the bandwidth averages the distances to the n_bandwidth most similar spots.
    members = np.concatenate([np.arange(n)[:, None], index[:, :k]], axis=1)
    hood = sparse.csr_matrix(
        (np.ones(members.size), members.ravel(), np.arange(0, members.size + 1, k + 1)),
        shape=(n, n),
    )
    shared = (hood @ hood.T).tocoo()
    off = shared.row != shared.col
    rows, cols, inter = shared.row[off], shared.col[off], shared.data[off]
    jaccard = inter / (2 * (k + 1) - inter)
    d = _pair_distances(x, rows, cols)
    order = np.lexsort((d, -jaccard, rows))
    rows, d = rows[order], d[order]
    starts = np.searchsorted(rows, np.arange(n))
    counts = np.diff(np.append(starts, rows.size))
    rank = np.arange(rows.size) - np.repeat(starts, counts)
    take = rank < n_bandwidth
    total = np.bincount(rows[take], weights=d[take], minlength=n)
    used = np.bincount(rows[take], minlength=n)
    fallback = distance[:, : max(min(n_bandwidth, distance.shape[1]), 1)].mean(axis=1)
    sigma = np.where(used > 0, total / np.maximum(used, 1), fallback)
    return Neighbourhoods(x, index, distance, distance[:, 0].copy(), sigma, k)


def kernel_graph(hoods: Neighbourhoods, k: int):
    """Directed CSR graph: each spot → its ``k`` nearest, weighted by θ."""
    from scipy import sparse

    n = hoods.index.shape[0]
    k = min(k, hoods.index.shape[1])
    rows = np.repeat(np.arange(n), k)
    cols = hoods.index[:, :k].ravel()
    c, sigma = hoods.c[rows], hoods.sigma[rows]
    theta = np.exp(-np.maximum(hoods.distance[:, :k].ravel() - c, 0.0) / _bandwidth(sigma, c))
    return sparse.csr_matrix((theta, (rows, cols)), shape=(n, n))


def wnn_graph(
    hoods: dict[str, Neighbourhoods],
    *,
    k: int,
    complete: np.ndarray,
    reference: str,
    n_candidates: int,
):
    """WNN graph and per-spot weights (``(n, n_modalities)``, modalities in ``hoods`` order).

    ``complete`` marks spots measured in every modality: their weights come from the within /
    cross predictions among complete spots only. The other spots get weight 1 on ``reference``
    (the modality that covers every spot) and 0 elsewhere.
    """
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    names = list(hoods)
    n = hoods[names[0]].embedding.shape[0]
    weights = np.zeros((n, len(names)))
    weights[:, names.index(reference)] = 1.0
    members = np.flatnonzero(complete)
    if members.size > 2:
        k_pred = min(k, members.size - 1)
        within_nn = {}
        for m in names:
            x = hoods[m].embedding[members]
            _, idx = NearestNeighbors(n_neighbors=k_pred + 1).fit(x).kneighbors(x)
            within_nn[m] = members[_drop_self(idx, None)[0]]
        ratios = np.zeros((members.size, len(names)))
        for a, m in enumerate(names):
            h = hoods[m]
            x = h.embedding[members]
            c, sigma = h.c[members], h.sigma[members]

            def theta(prediction, x=x, c=c, sigma=sigma):
                d = np.linalg.norm(x - prediction, axis=1)
                return np.exp(-np.maximum(d - c, 0.0) / _bandwidth(sigma, c))

            within = theta(h.embedding[within_nn[m]].mean(axis=1))
            cross = np.max(
                [theta(h.embedding[within_nn[o]].mean(axis=1)) for o in names if o != m],
                axis=0,
            )
            ratios[:, a] = within / (cross + RATIO_EPS)
        ratios -= ratios.max(axis=1, keepdims=True)
        soft = np.exp(ratios)
        weights[members] = soft / soft.sum(axis=1, keepdims=True)

    # candidates: the union of each modality's nearest spots
    pairs = []
    for m in names:
        h = hoods[m]
        width = min(n_candidates, h.index.shape[1])
        pairs.append(np.stack([np.repeat(np.arange(n), width), h.index[:, :width].ravel()]))
    rows, cols = np.unique(np.concatenate(pairs, axis=1), axis=1)
    theta = np.zeros(rows.size)
    for a, m in enumerate(names):
        w = weights[rows, a]
        on = w > 0
        theta[on] += w[on] * hoods[m].affinity(rows[on], cols[on])
    order = np.lexsort((cols, -theta, rows))
    rows, cols, theta = rows[order], cols[order], theta[order]
    starts = np.searchsorted(rows, np.arange(n))
    counts = np.diff(np.append(starts, rows.size))
    take = (np.arange(rows.size) - np.repeat(starts, counts)) < k
    graph = sparse.csr_matrix((theta[take], (rows[take], cols[take])), shape=(n, n))
    return graph, weights


def symmetrise(graph):
    """Fuzzy union ``G + Gᵀ − G ∘ Gᵀ`` (UMAP's): an edge is as strong as either direction."""
    from scipy import sparse

    graph = sparse.csr_matrix(graph)
    transpose = graph.T.tocsr()
    out = graph + transpose - graph.multiply(transpose)
    out = sparse.csr_matrix(out)
    out.eliminate_zeros()
    return out


# -------------------------------------------------------------------------------------------------


def _drop_self(idx: np.ndarray, dist: np.ndarray | None):
    """Remove each row's own index from a ``k + 1`` neighbour list (else its last entry)."""
    n, width = idx.shape
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), width - 1)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    index = idx[keep].reshape(n, width - 1)
    return index, (dist[keep].reshape(n, width - 1) if dist is not None else None)


def _pair_distances(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.empty(rows.size)
    for start in range(0, rows.size, _PAIRS_PER_BLOCK):
        stop = start + _PAIRS_PER_BLOCK
        diff = x[rows[start:stop]] - x[cols[start:stop]]
        out[start:stop] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def _bandwidth(sigma: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``σ − c``, kept positive (duplicated points make it 0)."""
    width = sigma - c
    floor = 1e-12 + 1e-9 * np.abs(sigma)
    return np.maximum(width, floor)
