"""Neighbour graphs of embeddings: one kernel for one embedding, and weighted nearest neighbours.

Weighted nearest neighbours (WNN; Hao et al. 2021, *Cell* 184:3573, Seurat v4's
``FindMultiModalNeighbors``) is written here rather than taken from muon: muon 0.1.9's
``mu.pp.neighbors`` was tried in this environment and is unusable — it crashed the interpreter
with "double free or corruption" and spent about a minute in numba compilation on 100 cells.

Neighbourhoods follow Seurat: spot ``i``'s neighbourhood ``N_i`` is its ``k`` nearest spots,
itself included (``k.nn``). Every graph uses Seurat's kernel: for a spot ``j`` at distance ``d``,

    θ(i, j) = exp(−max(d − c_i, 0) / s_i),

with ``c_i`` the distance to ``i``'s nearest other spot and the width ``s_i`` the mean of
``d − c_i`` over the ``k`` farthest of the spots whose neighbourhoods overlap ``N_i`` least (the
smallest nonzero Jaccard index of the neighbourhoods, ties at the ``k``-th value all considered).
A single embedding's graph links each spot to its ``k − 1`` nearest others with weights θ, so
single-modality, concatenated and WNN clusterings differ only in their embeddings and weights,
never in the graph machinery.

WNN: per modality ``m`` (rows L2-normalised), the mean of ``x^m`` over ``N^m_i`` predicts
``x^m_i`` ("within") and its mean over the neighbourhood in the other modality predicts it too
("cross"). The kernel values of the two predictions give the score
``min(θ_within / (θ_cross + ε), 200)`` (ε = 1e-4, the cap as in Seurat), and the modality weights
``w_i^m`` are the softmax of the scores. Candidate neighbours are the union of each modality's
``n_candidates`` nearest spots; the graph keeps each spot's ``k − 1`` candidates with the largest
``θ(i, j) = Σ_m w_i^m θ_m(i, j)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Neighbourhoods",
    "kernel_graph",
    "modality_weights",
    "neighbourhoods",
    "symmetrise",
    "wnn_graph",
]

#: ε of the within/cross ratio, and the cap of the ratio (Seurat's defaults).
RATIO_EPS = 1e-4
RATIO_MAX = 200.0
# Candidate pairs whose distances are computed at once (bounds temporaries to ~100 MB).
_PAIRS_PER_BLOCK = 1 << 19


@dataclass(frozen=True)
class Neighbourhoods:
    """Nearest spots of every spot in one embedding, and its kernel.

    ``index``/``distance``: ``(n, n_found)``, nearest first, the spot itself excluded; ``k``:
    neighbourhood size, the spot itself included; ``c``: distance to the nearest other spot;
    ``width``: the kernel width ``s`` (see the module docstring).
    """

    embedding: np.ndarray
    index: np.ndarray
    distance: np.ndarray
    c: np.ndarray
    width: np.ndarray
    k: int

    def kernel(self, rows: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """θ of spots ``rows`` to points at ``distance``."""
        return np.exp(-np.maximum(distance - self.c[rows], 0.0) / self.width[rows])

    def affinity(self, rows: np.ndarray, other: np.ndarray) -> np.ndarray:
        """θ(rows[p], other[p]) for each pair ``p``."""
        return self.kernel(rows, _pair_distances(self.embedding, rows, other))

    def hood(self) -> np.ndarray:
        """``(n, k)`` neighbourhoods: each spot, then its ``k − 1`` nearest others."""
        n = self.index.shape[0]
        return np.concatenate([np.arange(n)[:, None], self.index[:, : self.k - 1]], axis=1)


def neighbourhoods(embedding: np.ndarray, *, k: int, n_candidates: int = 0) -> Neighbourhoods:
    """Exact Euclidean neighbours and kernel widths of an ``(n, d)`` embedding (``k`` ≥ 2)."""
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    x = np.ascontiguousarray(embedding, dtype=np.float64)
    n = x.shape[0]
    k = int(min(k, n))
    want = min(max(k - 1, n_candidates), n - 1)
    dist, idx = NearestNeighbors(n_neighbors=want + 1).fit(x).kneighbors(x)
    index, distance = _drop_self(idx, dist)
    c = distance[:, 0].copy()

    # Jaccard index of the neighbourhoods (Seurat's SNN, prune 0) for every pair sharing a spot
    members = np.concatenate([np.arange(n)[:, None], index[:, : k - 1]], axis=1)
    hood = sparse.csr_matrix(
        (np.ones(members.size), members.ravel(), np.arange(0, members.size + 1, k)),
        shape=(n, n),
    )
    shared = (hood @ hood.T).tocoo()
    off = shared.row != shared.col
    rows, cols, inter = shared.row[off], shared.col[off], shared.data[off]
    jaccard = inter / (2 * k - inter)
    d = _pair_distances(x, rows, cols)
    # the k-th smallest Jaccard index of each spot; every pair at or below it is a candidate
    order = np.lexsort((jaccard, rows))
    rows, cols, jaccard, d = rows[order], cols[order], jaccard[order], d[order]
    starts = np.searchsorted(rows, np.arange(n))
    counts = np.bincount(rows, minlength=n)
    kth = jaccard[np.where(counts > 0, starts + np.minimum(counts, k) - 1, 0)]
    keep = jaccard <= kth[rows] + 1e-12
    rows, d = rows[keep], d[keep]
    # the k farthest of them
    order = np.lexsort((-d, rows))
    rows, d = rows[order], d[order]
    starts = np.searchsorted(rows, np.arange(n))
    rank = np.arange(rows.size) - starts[rows]
    take = rank < k
    total = np.bincount(rows[take], weights=d[take], minlength=n)
    used = np.bincount(rows[take], minlength=n)
    width = np.where(used > 0, total / np.maximum(used, 1), distance[:, -1]) - c
    return Neighbourhoods(x, index, distance, c, _positive(width, c), k)


def kernel_graph(hoods: Neighbourhoods):
    """Directed CSR graph: each spot → its ``k − 1`` nearest others, weighted by θ."""
    from scipy import sparse

    n = hoods.index.shape[0]
    width = min(hoods.k - 1, hoods.index.shape[1])
    rows = np.repeat(np.arange(n), width)
    theta = hoods.kernel(rows, hoods.distance[:, :width].ravel())
    return sparse.csr_matrix((theta, (rows, hoods.index[:, :width].ravel())), shape=(n, n))


def modality_weights(hoods: dict[str, Neighbourhoods]) -> np.ndarray:
    """Per-spot modality weights ``(n, n_modalities)``, modalities in ``hoods`` order."""
    names = list(hoods)
    n = hoods[names[0]].embedding.shape[0]
    rows = np.arange(n)
    scores = np.zeros((n, len(names)))
    for a, m in enumerate(names):
        h = hoods[m]
        x = h.embedding

        def theta(prediction, h=h, x=x):
            return h.kernel(rows, np.linalg.norm(x - prediction, axis=1))

        within = theta(x[h.hood()].mean(axis=1))
        cross = np.max([theta(x[hoods[o].hood()].mean(axis=1)) for o in names if o != m], axis=0)
        scores[:, a] = np.minimum(within / (cross + RATIO_EPS), RATIO_MAX)
    scores -= scores.max(axis=1, keepdims=True)
    soft = np.exp(scores)
    return soft / soft.sum(axis=1, keepdims=True)


def wnn_graph(hoods: dict[str, Neighbourhoods], weights: np.ndarray, *, n_candidates: int):
    """Directed WNN graph: each spot → its ``k − 1`` candidates of largest weighted θ."""
    from scipy import sparse

    names = list(hoods)
    first = hoods[names[0]]
    n, k = first.embedding.shape[0], first.k
    keys = []
    for m in names:
        h = hoods[m]
        width = min(n_candidates, h.index.shape[1])
        keys.append(np.repeat(np.arange(n, dtype=np.int64), width) * n + h.index[:, :width].ravel())
    keys = np.sort(np.concatenate(keys))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    rows, cols = np.divmod(keys, n)
    theta = np.zeros(rows.size)
    for a, m in enumerate(names):
        w = weights[rows, a]
        on = w > 0
        theta[on] += w[on] * hoods[m].affinity(rows[on], cols[on])
    order = np.lexsort((-theta, rows))  # stable: equal θ stay in column order
    rows, cols, theta = rows[order], cols[order], theta[order]
    starts = np.searchsorted(rows, np.arange(n))
    take = (np.arange(rows.size) - starts[rows]) < k - 1
    return sparse.csr_matrix((theta[take], (rows[take], cols[take])), shape=(n, n))


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


def _positive(width: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Kernel widths kept positive (duplicated points can make them 0)."""
    return np.maximum(width, 1e-12 + 1e-9 * np.abs(c))
