"""The drift models of :func:`spatialfuse.pp.recalibrate`, shared by profile and centroid data.

A pixel's drift ``e(m)`` (ppm, a function of m/z) is fitted to its errors at the references:

- ``"shift"``: one ppm offset per pixel, the median of its errors at the references;
- ``"linear"``: a ppm offset linear in m/z (least squares, around the references' mean m/z),
  falling back to the shift where a pixel has fewer than three references;
- ``"piecewise"`` (msiWarp-style warping): ``e`` is piecewise linear in m/z between ``n_nodes``
  nodes placed at quantiles of the reference m/z (the first and last at the outermost
  references, so every segment holds references), constant beyond the outer nodes. The node
  values ``v`` minimise ``Σ_k (e(r_k) − e_k)² + λ Σ_j (v_{j+1} − v_j)²`` over the pixel's found
  references ``r_k`` (errors ``e_k``): least squares with a smoothness penalty between
  neighbouring nodes, ``λ = 0.02 ·`` (references found) ``/ n_nodes``. On the interior nodes
  the penalty pulls only on curvature (a straight drift costs nothing there), and a node with
  no reference near it follows its neighbours (the straight line between them; a flat end).
  A pixel needs ``n_nodes + 2`` distinct references found for it; one with fewer falls back to
  ``"linear"`` (three or more) or ``"shift"``, and :func:`drift_record` counts which.

Per group of pixels (``group_by``), one model fitted to their pooled errors.

msiWarp (Bemis et al.; github.com/horvatovichlab/MSIWarp) places its nodes by peak density too,
but searches each node's shift over a grid within a slack, scoring the overlap of every matched
peak pair, by dynamic programming from node to node; it needs a C++ build. Here the nodes are
fitted to the reference errors by one small regularised least-squares solve per pixel
(vectorised over pixels), the same errors the other models use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from spatialfuse.errors import DataWarning

#: The models :func:`spatialfuse.pp.recalibrate` offers.
MODELS = ("shift", "linear", "piecewise")
#: Weight of the smoothness penalty, per reference found and node (see the module docstring).
_SMOOTHNESS = 0.02
#: Pixels solved at a time by the piecewise fit (bounds its (pixels × nodes × nodes) arrays).
_SOLVE_ROWS = 1 << 15


def check_n_nodes(n_nodes) -> int:
    """``n_nodes`` as an int, or the error that names it.

    Raises
    ------
    TypeError
        Not an integer (a bool, a float, a string).
    ValueError
        An integer below 2.
    """
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer):
        raise TypeError(
            f"n_nodes must be an integer >= 2, got {type(n_nodes).__name__} {n_nodes!r}"
        )
    if n_nodes < 2:
        raise ValueError(
            f"n_nodes must be an integer >= 2 (nodes of the piecewise model), got {n_nodes}"
        )
    return int(n_nodes)


def node_positions(refs: np.ndarray, n_nodes: int) -> np.ndarray:
    """The m/z of ``n_nodes`` nodes at evenly spaced quantiles of the references (distinct)."""
    return np.unique(np.quantile(np.asarray(refs, dtype=np.float64), np.linspace(0, 1, n_nodes)))


def _segments(mz: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each m/z's segment ``j`` (between ``nodes[j]`` and ``nodes[j + 1]``) and place ``t`` in it.

    ``t`` is clipped to [0, 1]: the model is constant beyond the outer nodes.
    """
    j = np.clip(np.searchsorted(nodes, mz, side="right") - 1, 0, nodes.size - 2)
    t = np.clip((mz - nodes[j]) / (nodes[j + 1] - nodes[j]), 0.0, 1.0)
    return j, t


def _hat_basis(mz: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """(m/z × nodes) weights of linear interpolation between the nodes."""
    j, t = _segments(mz, nodes)
    basis = np.zeros((mz.size, nodes.size))
    rows = np.arange(mz.size)
    basis[rows, j] = 1.0 - t
    basis[rows, j + 1] += t
    return basis


@dataclass
class Drift:
    """Each pixel's fitted drift ``e(m)`` in ppm, evaluated at any m/z by :meth:`ppm`.

    ``offset`` and ``slope`` give the shift and linear models (and the fallback of the
    piecewise one): ``e(m) = offset + slope · (m − centre)``. Where ``warped`` is True the pixel
    has the piecewise model instead: ``e`` interpolates ``node_ppm`` between ``nodes``; its
    ``offset`` is then ``e(centre)`` and its ``slope`` the mean slope over the references.
    """

    model: str
    centre: float
    offset: np.ndarray
    slope: np.ndarray
    nodes: np.ndarray | None = None
    node_ppm: np.ndarray | None = None
    warped: np.ndarray | None = None
    fitted: np.ndarray | None = None

    @classmethod
    def empty(cls, n: int, model: str, centre: float, nodes: np.ndarray | None) -> Drift:
        """No drift for ``n`` pixels, to be filled chunk by chunk (:meth:`put`)."""
        piecewise = model == "piecewise"
        return cls(
            model,
            centre,
            np.zeros(n),
            np.zeros(n),
            nodes if piecewise else None,
            np.zeros((n, nodes.size)) if piecewise else None,
            np.zeros(n, bool) if piecewise else None,
            np.full(n, "shift", dtype=object) if piecewise else None,
        )

    def take(self, a: int, b: int) -> Drift:
        """Pixels ``a:b`` (views)."""
        part = (None if v is None else v[a:b] for v in (self.node_ppm, self.warped, self.fitted))
        return Drift(self.model, self.centre, self.offset[a:b], self.slope[a:b], self.nodes, *part)

    def put(self, a: int, part: Drift) -> None:
        """Write ``part`` as pixels ``a:a + len(part)``."""
        b = a + part.offset.size
        self.offset[a:b], self.slope[a:b] = part.offset, part.slope
        if self.warped is not None:
            self.node_ppm[a:b], self.warped[a:b], self.fitted[a:b] = (
                part.node_ppm,
                part.warped,
                part.fitted,
            )

    def ppm(self, rows, mz: np.ndarray, segments=None) -> np.ndarray:
        """``e(mz)`` in ppm of pixel ``rows`` (an index, or one per m/z value).

        ``segments``: :func:`_segments` of ``mz`` where it was computed once for many rows.
        """
        linear = self.offset[rows] + self.slope[rows] * (mz - self.centre)
        if self.warped is None or not np.any(self.warped[rows]):
            return linear
        j, t = _segments(mz, self.nodes) if segments is None else segments
        values = self.node_ppm[rows, j] * (1.0 - t) + self.node_ppm[rows, j + 1] * t
        return np.where(self.warped[rows], values, linear)

    def segments(self, mz: np.ndarray):
        """What :meth:`ppm` needs of ``mz`` for every pixel (None without nodes)."""
        return None if self.warped is None else _segments(mz, self.nodes)

    def largest(self, low: float, high: float) -> np.ndarray:
        """Each pixel's largest ``|e(m)|`` over ``[low, high]`` (ppm)."""
        most = np.abs(self.offset) + np.abs(self.slope) * max(
            abs(low - self.centre), abs(high - self.centre)
        )
        if self.warped is not None and self.nodes.size:
            # interpolation between the nodes, constant beyond: bounded by the node values
            most = np.where(self.warped, np.abs(self.node_ppm).max(axis=1), most)
        return most


def _fit(errors: np.ndarray, refs: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``(offset_ppm, slope_ppm_per_mz)`` around the references' mean m/z."""
    found = np.isfinite(errors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels without any reference
        offset = np.nanmedian(np.where(found, errors, np.nan), axis=1)
    offset = np.where(found.any(axis=1), offset, 0.0)
    slope = np.zeros_like(offset)
    if model == "linear":
        centre = refs.mean()
        dx = refs - centre
        for i in np.flatnonzero(found.sum(axis=1) >= 3):
            m = found[i]
            a = np.vstack([np.ones(m.sum()), dx[m]]).T
            (offset[i], slope[i]), *_ = np.linalg.lstsq(a, errors[i, m], rcond=None)
    return offset, slope


def _fit_groups(
    errors: np.ndarray, refs: np.ndarray, model: str, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One model per group of pixels (e.g. an acquisition line), fitted to their pooled errors."""
    offset, slope = np.zeros(errors.shape[0]), np.zeros(errors.shape[0])
    codes, inverse = np.unique(groups, return_inverse=True)
    for g in range(codes.size):
        rows = np.flatnonzero(inverse == g)
        pooled = errors[rows].reshape(1, -1)
        pooled_refs = np.tile(refs, rows.size)
        off, slo = _fit(pooled, pooled_refs, model)
        offset[rows], slope[rows] = off[0], slo[0]
    return offset, slope


def _fit_nodes(
    counts: np.ndarray, sums: np.ndarray, refs: np.ndarray, nodes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Node values (rows × nodes) of the penalised least squares, and which rows were fitted.

    ``counts`` (rows × references): how many errors each row has at each reference (1/0 for
    a pixel, a count for a pooled group); ``sums``: their sums. A row is fitted where it has
    ``nodes.size + 2`` distinct references or more.
    """
    k = nodes.size
    basis = _hat_basis(refs, nodes)  # references × nodes
    diff = np.diff(np.eye(k), axis=0)
    penalty = diff.T @ diff
    fitted = (counts > 0).sum(axis=1) >= k + 2
    values = np.zeros((counts.shape[0], k))
    rows = np.flatnonzero(fitted)
    for start in range(0, rows.size, _SOLVE_ROWS):
        r = rows[start : start + _SOLVE_ROWS]
        c = counts[r]
        gram = np.einsum("ik,kp,kq->ipq", c, basis, basis)
        gram += (_SMOOTHNESS * c.sum(axis=1) / k)[:, None, None] * penalty
        rhs = sums[r] @ basis
        values[r] = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
    return values, fitted


def fit_drift(
    errors: np.ndarray,
    refs: np.ndarray,
    model: str,
    *,
    nodes: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> Drift:
    """The :class:`Drift` of each pixel, one model per pixel or per group (pooled errors).

    ``errors``: pixels × references, NaN where not found; ``groups``: one label per pixel;
    ``nodes``: the piecewise model's node m/z (:func:`node_positions`).
    """
    centre = float(refs.mean())
    if model != "piecewise":
        if groups is None:
            offset, slope = _fit(errors, refs, model)
        else:
            offset, slope = _fit_groups(errors, refs, model, groups)
        return Drift(model, centre, offset, slope)
    found = np.isfinite(errors)
    values = np.where(found, errors, 0.0)
    if groups is None:
        counts, sums, index = found.astype(np.float64), values, np.arange(errors.shape[0])
    else:
        codes, index = np.unique(groups, return_inverse=True)
        counts = np.zeros((codes.size, refs.size))
        sums = np.zeros((codes.size, refs.size))
        np.add.at(counts, index, found)
        np.add.at(sums, index, values)
    n_nodes = nodes.size
    warped = np.zeros(errors.shape[0], bool)
    node_ppm = np.zeros((errors.shape[0], n_nodes))
    if n_nodes >= 2:
        group_values, group_fitted = _fit_nodes(counts, sums, refs, nodes)
        warped = group_fitted[index]
        node_ppm[warped] = group_values[index][warped]
    # the others fall back to the linear model (itself the shift below three errors)
    offset, slope = np.zeros(errors.shape[0]), np.zeros(errors.shape[0])
    rest = np.flatnonzero(~warped)
    if rest.size:
        if groups is None:
            offset[rest], slope[rest] = _fit(errors[rest], refs, "linear")
        else:
            offset[rest], slope[rest] = _fit_groups(errors[rest], refs, "linear", groups[rest])
        node_ppm[rest] = offset[rest, None] + slope[rest, None] * (nodes[None, :] - centre)
    pooled = counts.sum(axis=1)[index]  # the linear fallback's own rule: three errors
    fitted_names = np.where(pooled >= 3, "linear", "shift").astype(object)
    fitted_names[warped] = "piecewise"
    drift = Drift(model, centre, offset, slope, nodes, node_ppm, warped, fitted_names)
    if warped.any():
        ends = np.array([refs[0], centre, refs[-1]])
        rows = np.flatnonzero(warped)
        at = drift.ppm(np.repeat(rows, 3), np.tile(ends, rows.size)).reshape(rows.size, 3)
        span = refs[-1] - refs[0]
        offset[rows] = at[:, 1]
        slope[rows] = (at[:, 2] - at[:, 0]) / span if span > 0 else 0.0
    return drift


def drift_record(drift: Drift, n_nodes: int, *, stacklevel: int = 3) -> dict:
    """The ``uns`` entries of the piecewise model (none for the others).

    Warns (a :class:`~spatialfuse.errors.DataWarning`) where every pixel fell back.
    """
    if drift.model != "piecewise":
        return {}
    least = int(drift.nodes.size + 2)
    names, counts = np.unique(drift.fitted.astype(str), return_counts=True)
    by_model = {name: 0 for name in ("piecewise", "linear", "shift")}
    by_model.update({str(k): int(v) for k, v in zip(names, counts, strict=True)})
    if drift.fitted.size and not drift.warped.any():
        warnings.warn(
            f"recalibrate: model='piecewise' fell back for every pixel (a pixel, or a group "
            f"pooled, needs {least} distinct references found): give more "
            "references (n_references=, reference_mz=) or fewer n_nodes=",
            DataWarning,
            stacklevel=stacklevel,
        )
    return {
        "n_nodes": int(n_nodes),
        "nodes_mz": np.asarray(drift.nodes, dtype=np.float64),
        "min_references_piecewise": least,
        "pixels_by_model": by_model,
    }


def write_drift(adata, drift: Drift, before: np.ndarray, key_added: str) -> None:
    """The ``obs`` (and, for the piecewise model, ``obsm``) slots of the drift."""
    adata.obs[f"{key_added}_ppm"] = drift.offset
    adata.obs[f"{key_added}_slope"] = drift.slope
    adata.obs[f"{key_added}_n_found"] = np.isfinite(before).sum(axis=1)
    if drift.warped is not None:
        adata.obsm[f"{key_added}_nodes_ppm"] = drift.node_ppm
