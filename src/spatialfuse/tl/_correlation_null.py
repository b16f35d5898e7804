"""Null distributions of a correlation between two spatially autocorrelated maps.

Two maps that each vary smoothly over the tissue correlate by chance far more often than two
sequences of independent values: neighbouring spots repeat each other, so the data hold fewer
independent observations than spots. Shuffling spots destroys that autocorrelation, and its
p-values are far too small (on independent smooth fields on a hex grid, 60-80 % of pairs come out
"significant" at 5 %; ``tests/tl/test_correlation_null.py``). Two nulls that keep it are here;
every input map is a centred column of unit norm, so a correlation is a dot product.

Dutilleul's modified t-test (:func:`dutilleul_variance`, the default)
    The variance of ``r`` under independence of the two maps is
    ``tr(R_x R_y) / (tr R_x tr R_y)`` for their spatial correlation matrices ``R``
    (Clifford, Richardson & Hémon 1989). Dutilleul (1993) estimates ``R`` from each map's own
    correlogram: Moran-type autocorrelations ``ρ(d) = n S(d) / n_d`` in distance classes ``d``,
    with ``S(d)`` the sum of ``x_i x_j`` over the ``n_d`` ordered pairs of class ``d``, so
    ``Var₀(r) ≈ (n + Σ_d n_d ρ_x(d) ρ_y(d)) / n²``. ``n_eff = 1 + 1/Var₀(r)`` is the effective
    number of independent spots (``n`` for independent data), and
    ``t = r √((n_eff − 2)/(1 − r²))`` is referred to Student's t with ``n_eff − 2`` degrees of
    freedom, the exact null of ``r`` for ``n_eff`` independent Gaussian pairs. Classes are one
    median nearest-neighbour distance wide (one spot pitch on Visium), over all distances
    (truncating the correlograms at half or a third of the largest distance made the test liberal).

    One change to the plug-in formula: classes where the two correlograms have opposite signs are
    left out of the sum. When one smooth map's long-range correlogram is negative where the
    other's is positive, the estimated ``R`` are not valid correlation matrices and the sum can
    fall far below its expectation, even below zero; such pairs got p-values of 1e-10 to 1e-17 on
    independent fields. Leaving those terms out can only raise ``Var₀``; ``Var₀`` is also never
    below ``1/(n − 1)``. Measured false-positive rates on independent Gaussian-smoothed noise
    (σ = 1.5, 4 and 7 spot pitches; a rectangle, an ellipse and a crescent of 450-900 spots;
    22,500 pairs per setting): 2.8-4.1 % at the 5 % level and at most 0.06 % at 0.1 %
    (smallest p-value 8e-6); with the plain formula 3.6-5.2 % and up to 0.21 %.

Moran spectral randomisation (:func:`msr_exceedances`, ``null="msr"``)
    Surrogates with exactly the same Moran spectrum (Wagner & Dray 2015). Spatial weights ``W``
    (here ``1/d²`` between all spots) are doubly centred, ``Ω = H W H`` with ``H = I − 11ᵀ/n``;
    the eigenvectors of ``Ω`` other than the constant, Moran's eigenvector maps ``V`` (Dray,
    Legendre & Peres-Neto 2006), are an orthonormal basis of all centred maps. A map with
    coefficients ``a = Vᵀ x`` has the "singleton" surrogates ``V (s ∘ a)``, ``s_k = ±1`` at
    random: the same power in every eigenvector (the same Moran's I, the same patch sizes) in a
    random arrangement. A surrogate's correlation with ``y`` (coefficients ``b``) is
    ``Σ_k s_k a_k b_k``, so all pairs of a surrogate are one matrix product. Sign randomisation is
    exact only when a map's covariance is diagonal in ``V``; for maps that are smooth on the scale
    of the tissue it is not, and the test turns liberal: 5.5-9 % false positives at 5 % for σ = 4
    pitches, 12-23 % for σ = 7 pitches in the same simulation (1/d² weights; a six-neighbour
    graph is worse). Kept for comparison with published MSR analyses.

References
----------
Clifford, P., Richardson, S. & Hémon, D. (1989). Assessing the significance of the correlation
between two spatial processes. *Biometrics* 45, 123-134. Dutilleul, P. (1993). Modifying the t
test for assessing the correlation between two spatial processes. *Biometrics* 49, 305-314.
Wagner, H. H. & Dray, S. (2015). Generating spatially constrained null models for irregularly
spaced data using Moran spectral randomization methods. *Methods in Ecology and Evolution* 6,
1169-1178. Dray, S., Legendre, P. & Peres-Neto, P. R. (2006). Spatial modelling: a comprehensive
framework for principal coordinate analysis of neighbour matrices (PCNM). *Ecological Modelling*
196, 483-493.
"""

from __future__ import annotations

import numpy as np

from spatialfuse._logging import progress

#: Above this many spots MSR's dense n × n eigendecomposition is refused (~24 n² bytes).
MSR_MAX_SPOTS = 15_000
# Memory for one block of work (bytes).
_BLOCK_BYTES = 64 << 20
# MSR surrogates are accumulated in float32: values within this of |r| count as at least as
# extreme, which can only raise a p-value.
_TIE = 1e-5


# -------------------------------------------------------------------------------------------------
# Dutilleul
# -------------------------------------------------------------------------------------------------


def class_width(coords: np.ndarray) -> float:
    """Median nearest-neighbour distance of the points (the Visium spot pitch)."""
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(coords).query(coords, k=2)
    nearest = distance[:, 1]
    nearest = nearest[nearest > 0]
    if not nearest.size:
        raise ValueError("all spots share one position; there is no spatial structure")
    return float(np.median(nearest))


def correlograms(
    coords: np.ndarray, z: np.ndarray, width: float, *, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sums ``S(d) = Σ x_i x_j`` over ordered pairs ``i ≠ j`` in each distance class, per column.

    Class ``d`` holds pairs at distance ``[d·width, (d + 1)·width)``. Returns ``S`` (classes ×
    columns of ``z``) and the number of pairs per class. Cost: ``n²`` × columns multiply-adds, in
    blocks of rows (a sparse class-indicator matrix times ``z``), memory bounded by the block.
    """
    from scipy import sparse
    from scipy.spatial.distance import cdist

    n, m = z.shape
    span = coords.max(axis=0) - coords.min(axis=0)
    n_classes = int(np.hypot(*span) // width) + 1
    rows_per_block = int(max(1, min(n, _BLOCK_BYTES // (8 * max(n_classes * m, n)))))
    sums = np.zeros((n_classes, m))
    pairs = np.zeros(n_classes, dtype=np.int64)
    all_columns = np.arange(n, dtype=np.int64)
    starts = range(0, n, rows_per_block)
    for start in progress(starts, show=show_progress, total=len(starts), desc="correlograms"):
        stop = min(n, start + rows_per_block)
        b = stop - start
        cls = (cdist(coords[start:stop], coords) // width).astype(np.int64)
        cls[np.arange(b), np.arange(start, stop)] = -1  # self pairs
        valid = cls >= 0
        key = (np.arange(b, dtype=np.int64)[:, None] * n_classes + cls)[valid]
        indicator = sparse.csr_matrix(
            (np.ones(key.size), (key, np.broadcast_to(all_columns, (b, n))[valid])),
            shape=(b * n_classes, n),
        )
        lagged = (indicator @ z).reshape(b, n_classes, m)
        sums += np.einsum("bdm,bm->dm", lagged, z[start:stop])
        pairs += np.bincount(cls[valid], minlength=n_classes)
    return sums, pairs


def dutilleul_variance(
    coords: np.ndarray, x: np.ndarray, y: np.ndarray, *, show_progress: bool = False
) -> np.ndarray:
    """``Var₀(r)`` for every column pair of ``x`` and ``y`` (centred, unit-norm columns).

    ``1/n + Σ_d n_d max(ρ_x(d) ρ_y(d), 0) / n²`` with ``ρ(d) = n S(d) / n_d``: classes where the
    two correlograms have opposite signs are left out (see the module's notes), and the result is
    at least ``1 / (n − 1)``, the variance for spatially independent data.
    """
    n = x.shape[0]
    width = class_width(coords)
    sums, pairs = correlograms(coords, np.hstack([x, y]), width, show_progress=show_progress)
    used = pairs > 0
    rho = n * sums[used] / pairs[used, None]
    rx, ry = rho[:, : x.shape[1]], rho[:, x.shape[1] :]
    weight = pairs[used, None].astype(np.float64)
    same_sign = (np.maximum(rx, 0) * weight).T @ np.maximum(ry, 0)
    same_sign += (np.minimum(rx, 0) * weight).T @ np.minimum(ry, 0)
    return np.maximum((n + same_sign) / (n * n), 1.0 / (n - 1))


def dutilleul_p_values(r: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Two-sided p-values of ``r`` against Student's t with ``n_eff − 2`` degrees of freedom."""
    from scipy import stats

    dof = np.maximum(1.0 / variance - 1.0, 1.0)  # n_eff − 2, at least one
    with np.errstate(divide="ignore"):
        t = np.abs(r) * np.sqrt(dof / np.maximum(1.0 - r * r, 0.0))
    return 2.0 * stats.t.sf(t, dof)


# -------------------------------------------------------------------------------------------------
# Moran spectral randomisation
# -------------------------------------------------------------------------------------------------


def moran_basis(coords: np.ndarray) -> np.ndarray:
    """Moran's eigenvector maps of inverse-squared-distance weights: ``(n, n − 1)``, orthonormal.

    The columns span every centred map on the ``n`` points (all are orthogonal to the constant),
    ordered from the most negatively to the most positively autocorrelated pattern.
    """
    from scipy import linalg
    from scipy.spatial.distance import pdist, squareform

    n = coords.shape[0]
    if n > MSR_MAX_SPOTS:
        raise ValueError(
            f"{n:,} spots: Moran spectral randomisation needs a dense {n:,} × {n:,} "
            f"eigendecomposition (limit {MSR_MAX_SPOTS:,}); use null='dutilleul' or fewer spots"
        )
    d = squareform(pdist(coords))
    positive = d[d > 0]
    if not positive.size:
        raise ValueError("all spots share one position; there is no spatial structure")
    np.maximum(d, positive.min(), out=d)  # distinct spots at one position: the closest pair
    w = 1.0 / (d * d)
    del d
    np.fill_diagonal(w, 0.0)
    w -= w.mean(axis=0, keepdims=True)
    w -= w.mean(axis=1, keepdims=True)
    # Lift the constant vector above every other eigenvalue (a row-sum bound on the spectral
    # radius), so the last eigenvector is exactly the constant and the rest span its complement.
    w += (np.abs(w).sum(axis=1).max() + 1.0) / n
    _, vectors = linalg.eigh(w, driver="evd", overwrite_a=True, check_finite=False)
    return np.ascontiguousarray(vectors[:, :-1])


def msr_variance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact variance of ``r`` over sign-randomised surrogates: ``Σ_k a_k² b_k²`` per pair."""
    return (a * a).T @ (b * b)


def msr_exceedances(
    a: np.ndarray,
    b: np.ndarray,
    r: np.ndarray,
    n_permutations: int,
    seed: int,
    *,
    show_progress: bool = False,
) -> np.ndarray:
    """Per pair, how many of ``n_permutations`` singleton surrogates reach ``|r|``.

    ``a`` and ``b`` are the Moran-basis coefficients (``K × genes``, ``K × ions``); the signs are
    drawn for the smaller side, and each batch of surrogates is one float32 matrix product.
    """
    flip_left = a.shape[1] <= b.shape[1]
    left, right = (a, b) if flip_left else (b, a)
    left = np.ascontiguousarray(left.T, dtype=np.float32)  # rows × K
    right = np.ascontiguousarray(right, dtype=np.float32)  # K × columns
    rows, k = left.shape
    target = (np.abs(r) if flip_left else np.abs(r).T).astype(np.float32) - np.float32(_TIE)
    per_surrogate = 4 * rows * (k + right.shape[1])
    batch = int(max(1, min(n_permutations, _BLOCK_BYTES // max(per_surrogate, 1))))
    rng = np.random.default_rng(seed)
    counts = np.zeros(target.shape, dtype=np.int64)
    starts = range(0, n_permutations, batch)
    for start in progress(starts, show=show_progress, total=len(starts), desc="MSR surrogates"):
        m = min(batch, n_permutations - start)
        signs = rng.integers(0, 2, size=(m, 1, k), dtype=np.int8).astype(np.float32) * 2 - 1
        null = ((left[None] * signs).reshape(m * rows, k) @ right).reshape(m, rows, -1)
        counts += (np.abs(null) >= target[None]).sum(axis=0)
    return counts if flip_left else counts.T
