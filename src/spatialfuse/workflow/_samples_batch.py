"""Batch correction between the sections of the combined table, on what the clustering reads.

A section prepared, stained or acquired apart from the others can differ from them as a whole
(another matrix coating, another ionisation yield, another library depth): its spots then sit
apart in every modality's embedding and the joint clustering gives it clusters of its own. The
combined table (:func:`~._samples.combined_table`) can correct each modality's embedding
(``obsm[use_rep]``, the principal components :func:`spatialfuse.tl.joint_cluster` clusters on
with ``method`` ``"concat"`` or ``"wnn"``) for the section of each spot (``obs["sample"]``)
between the preprocessing and the clustering:

- ``"combat"``: ComBat (Johnson et al. 2007, :func:`scanpy.pp.combat`) on the components: each
  component's mean and variance per section brought to the pooled ones (empirical Bayes over the
  components). It removes any difference of a section's average, biology included: sections with
  very different region proportions lose part of their real difference.
- ``"harmony"``: Harmony (Korsunsky et al. 2019; :mod:`harmonypy`, the optional extra
  ``spatialfuse[harmony]``) on the components: soft clusters of spots, each section's offset
  removed per cluster, so that differing region proportions are kept.
- ``"none"``: the components as preprocessing left them.

Spots without data in a modality (NaN rows: spots outside the MSI acquisition) are left out and
stay NaN. The uncorrected components are kept in ``obsm[f"{use_rep}_uncorrected"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mudata
    import numpy as np

__all__ = ["METHODS", "correct_batches", "require_harmonypy"]

#: The batch corrections of the combined table.
METHODS = ("none", "combat", "harmony")
#: What ``pip install`` needs for ``"harmony"``.
HARMONY_INSTALL = "pip install 'spatialfuse[harmony]'"
#: Spots with data a section needs in a modality to be corrected (a variance per section).
MIN_SPOTS = 3


def require_harmonypy() -> None:
    """Raise :class:`~spatialfuse.errors.MissingDependencyError` where harmonypy is missing."""
    from spatialfuse.errors import MissingDependencyError

    try:
        import harmonypy  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            "combined.batch_correction: harmony needs the optional package harmonypy, which is "
            f"not installed; install it with `{HARMONY_INSTALL}` (or use combat or none)"
        ) from err


def correct_batches(
    mdata: mudata.MuData,
    *,
    method: str,
    key: str = "sample",
    use_rep: str = "X_pca",
    modalities: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Correct each modality's embedding for the section of each spot, in place.

    Parameters
    ----------
    mdata
        The combined table after preprocessing: each modality has ``obsm[use_rep]`` and
        ``obs[key]``.
    method
        ``"none"``, ``"combat"`` or ``"harmony"`` (see the module's description).
    key
        The ``obs`` column naming each spot's section.
    use_rep
        The embedding corrected (the one :func:`spatialfuse.tl.joint_cluster` clusters on).
    modalities
        The modalities corrected; None: all of them.
    seed
        Harmony's random state (its k-means starts); ComBat draws nothing.

    Returns
    -------
    dict
        What was done, for ``uns["spatialfuse"]["samples"]["batch_correction"]``: ``method``,
        ``representation``, ``uncorrected_key`` and per modality the sections corrected
        (``modalities``), or why a modality was left as it was (``skipped``).

    Raises
    ------
    ValueError
        An unknown method, a modality without ``obsm[use_rep]`` or ``obs[key]``, or a section
        with data but fewer than :data:`MIN_SPOTS` spots with data in a modality.
    MissingDependencyError
        ``"harmony"`` without harmonypy installed.
    """
    import numpy as np

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    report: dict[str, Any] = {"method": method, "representation": use_rep}
    if method == "none":
        return report
    if method == "harmony":
        require_harmonypy()
    names = list(mdata.mod) if modalities is None else list(modalities)
    uncorrected = f"{use_rep}_uncorrected"
    report.update(uncorrected_key=uncorrected, modalities={}, skipped={})
    for name in names:
        adata = mdata.mod[name]
        if use_rep not in adata.obsm or key not in adata.obs:
            raise ValueError(
                f"modality {name!r} has no obsm[{use_rep!r}] or obs[{key!r}] to correct"
            )
        embedding = np.asarray(adata.obsm[use_rep], dtype=np.float64)
        rows = np.isfinite(embedding).all(axis=1)
        batches = np.asarray(adata.obs[key].astype(str))
        present, counts = np.unique(batches[rows], return_counts=True)
        if present.size < 2:
            report["skipped"][name] = "fewer than two sections have data"
            continue
        few = [f"{b} ({n})" for b, n in zip(present, counts, strict=True) if n < MIN_SPOTS]
        if few:
            raise ValueError(
                f"batch correction of {name!r}: the sections {', '.join(few)} have fewer than "
                f"{MIN_SPOTS} spots with data; use combined.batch_correction: none, or leave "
                "them out"
            )
        if method == "combat":
            corrected = _combat(embedding[rows], batches[rows])
        else:
            corrected = _harmony(embedding[rows], batches[rows], seed=seed)
        out = embedding.copy()
        out[rows] = corrected
        adata.obsm[uncorrected] = embedding
        adata.obsm[use_rep] = out
        report["modalities"][name] = [str(b) for b in present]
    return report


def _combat(x: np.ndarray, batches: np.ndarray) -> np.ndarray:
    """ComBat (:func:`scanpy.pp.combat`) of the rows of ``x`` for their ``batches``."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc

    obs = pd.DataFrame(
        {"batch": pd.Categorical(batches)}, index=[str(i) for i in range(len(batches))]
    )
    table = ad.AnnData(X=np.array(x, dtype=np.float64), obs=obs)
    corrected = sc.pp.combat(table, key="batch", inplace=False)
    return np.asarray(corrected, dtype=np.float64)


def _harmony(x: np.ndarray, batches: np.ndarray, *, seed: int) -> np.ndarray:
    """Harmony's corrected rows of ``x`` for their ``batches`` (spots × components).

    The call :func:`scanpy.external.pp.harmony_integrate` makes (float64 embedding, the obs
    column, keyword arguments through), made here because that wrapper (scanpy 1.11) transposes
    the result, which harmonypy 0.2 and later already return spots × components
    (harmonypy issue #48); the orientation is taken from the result's shape.
    """
    import harmonypy
    import numpy as np
    import pandas as pd

    meta = pd.DataFrame({"batch": pd.Categorical(batches)})
    out = harmonypy.run_harmony(
        np.ascontiguousarray(x, dtype=np.float64), meta, ["batch"], random_state=seed, verbose=False
    )
    z = np.asarray(out.Z_corr, dtype=np.float64)
    if z.shape != x.shape:
        z = z.T
    if z.shape != x.shape:  # pragma: no cover - a harmonypy that returns something else
        raise ValueError(f"harmonypy returned {z.shape} for {x.shape} components")
    if x.shape[0] == x.shape[1] and not _cells_first():
        z = z.T
    return z


def _cells_first() -> bool:
    """Whether this harmonypy's ``Z_corr`` is spots × components (0.2 and later)."""
    from importlib.metadata import version

    from packaging.version import Version

    return Version(version("harmonypy")) >= Version("0.2")
