"""Flag m/z features that are MALDI matrix ions or matrix clusters (DHB, CHCA, 9-AA, DAN, …).

Cluster ions ``[nM − kH₂O + X]`` for ``n = 1 … max_cluster`` molecules of the matrix,
``k = 0 … n`` water losses (matrices with oxygen only) and the single-charge adducts of the
polarity (``+H``, ``+Na``, ``+K`` in positive mode, ``−H`` in negative mode), masses from the
formulas by molmass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._docs import MZ_KEY, fill_doc, flagged_copy
from spatialfuse.core.adata import check_adata

if TYPE_CHECKING:
    import anndata

__all__ = ["MATRICES", "flag_matrix", "matrix_ions"]

#: Common MALDI matrices by name: their molecular formulas.
MATRICES = {
    "DHB": "C7H6O4",  # 2,5-dihydroxybenzoic acid
    "CHCA": "C10H7NO3",  # α-cyano-4-hydroxycinnamic acid
    "9-AA": "C13H10N2",  # 9-aminoacridine
    "DAN": "C10H10N2",  # 1,5-diaminonaphthalene
    "SA": "C11H12O5",  # sinapinic acid
    "NEDC": "C12H14N2",  # N-(1-naphthyl)ethylenediamine (as the free base)
}

_CLUSTER_ADDUCTS = {
    "positive": [("H", "[M+H]+"), ("Na", "[M+Na]+"), ("K", "[M+K]+")],
    "negative": [("-H", "[M-H]-")],
}


def matrix_ions(matrix: str, *, polarity: str | None = None, max_cluster: int = 3):
    """``(labels, m/z)`` of the cluster ions of ``matrix`` (a name of MATRICES or a formula)."""
    import re

    from spatialfuse._ions import adduct_shift, formula_mass

    formula = MATRICES.get(matrix, matrix)
    mass = formula_mass(formula)
    water = formula_mass("H2O")
    # Only a molecule with oxygen can lose water (9-AA and DAN have none).
    has_oxygen = re.search(r"O(?![a-z])", formula) is not None
    unit = f"({matrix})" if matrix[:1].isdigit() else matrix
    polarities = [polarity] if polarity else ["positive", "negative"]
    labels, values = [], []
    for pol in polarities:
        for symbol, adduct in _CLUSTER_ADDUCTS[pol]:
            shift, _ = adduct_shift(adduct)
            for n in range(1, max_cluster + 1):
                for k in range(n + 1 if has_oxygen else 1):
                    head = f"{n}{unit}" if n > 1 else matrix
                    loss = f"-{k if k > 1 else ''}H2O" if k else ""
                    sign = "+" if pol == "positive" else "-"
                    tail = symbol if symbol.startswith("-") else f"+{symbol}"
                    labels.append(f"[{head}{loss}{tail}]{sign}")
                    values.append(n * mass - k * water + shift)
    return labels, np.asarray(values)


@fill_doc(mz_key=MZ_KEY, copy=flagged_copy("a flagged"))
def flag_matrix(
    adata: anndata.AnnData,
    *,
    matrix: str | list[str] = "DHB",
    ppm: float = 5.0,
    max_cluster: int = 3,
    polarity: str | None = None,
    mz_key: str = "mz",
    key_added: str = "matrix",
    copy: bool = False,
) -> anndata.AnnData | None:
    """Mark the features whose m/z is a matrix ion or cluster within ``ppm``.

    Parameters
    ----------
    adata
        A table of m/z features (``var[mz_key]``).
    matrix
        One or more names of :data:`MATRICES` (``"DHB"``, ``"CHCA"``, ``"9-AA"``, ``"DAN"``,
        ``"SA"``, ``"NEDC"``) or molecular formulas.
    ppm
        Largest absolute m/z error of a match, in ppm.
    max_cluster
        Largest number of matrix molecules in a cluster.
    polarity
        ``"positive"`` or ``"negative"``; None: as :func:`spatialfuse.tl.annotate` finds it (the
        table's provenance or its imzML file), else both.
    {mz_key}
    key_added
        Prefix of the ``var`` columns written.
    {copy}
        The flagged copy if ``copy``, else None. Writes ``var[key_added]`` (bool: a matrix
        ion), ``var[f"{key_added}_ion"]`` (e.g. ``"[2DHB-H2O+H]+"``, ``""`` if none) and
        ``var[f"{key_added}_ppm"]`` (NaN if none).
    """
    from spatialfuse._ions import polarity_of

    check_adata(adata)
    if mz_key not in adata.var:
        raise ValueError(f"adata.var has no {mz_key!r} column (the m/z of each feature)")
    if not (np.isfinite(ppm) and ppm > 0):
        raise ValueError(f"ppm must be a positive number, got {ppm!r}")
    if isinstance(max_cluster, bool) or int(max_cluster) != max_cluster or max_cluster < 1:
        raise ValueError(f"max_cluster must be an integer >= 1, got {max_cluster!r}")
    pol, _ = polarity_of(adata, polarity)
    names = [matrix] if isinstance(matrix, str) else list(matrix)
    labels, values = [], []
    for name in names:
        try:
            more_labels, more_values = matrix_ions(name, polarity=pol, max_cluster=int(max_cluster))
        except ValueError as exc:
            raise ValueError(
                f"matrix {name!r} is neither a known matrix ({', '.join(MATRICES)}) "
                f"nor a formula: {exc}"
            ) from exc
        labels += more_labels
        values.append(more_values)
    ions = np.concatenate(values)
    mz = np.asarray(adata.var[mz_key], dtype=np.float64)
    error = (mz[:, None] - ions[None, :]) / ions[None, :] * 1e6
    nearest = np.abs(error).argmin(axis=1) if ions.size else np.zeros(mz.size, dtype=int)
    best = error[np.arange(mz.size), nearest] if ions.size else np.full(mz.size, np.nan)
    hit = np.abs(best) <= ppm
    adata = adata.copy() if copy else adata
    adata.var[key_added] = hit
    adata.var[f"{key_added}_ion"] = np.where(hit, np.asarray(labels, dtype=object)[nearest], "")
    adata.var[f"{key_added}_ion"] = adata.var[f"{key_added}_ion"].astype(str)
    adata.var[f"{key_added}_ppm"] = np.where(hit, best, np.nan)
    return adata if copy else None
