"""Which modality and which features: the look-ups ``tl`` and ``pl`` share.

Their errors name what is missing and suggest close matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse.core.mz import mz_values, mz_windows

if TYPE_CHECKING:
    import anndata


def modalities(mdata, rna_key: str, msi_key: str) -> tuple[anndata.AnnData, anndata.AnnData]:
    """The RNA and MSI AnnData of a MuData, with errors that name what is missing."""
    mod = getattr(mdata, "mod", None)
    if mod is None or not hasattr(mdata, "obs"):
        raise TypeError(
            "mdata must be a mudata.MuData with modalities 'rna' and 'msi' (sf.tl.joint_table), "
            f"got {type(mdata).__name__}"
        )
    missing = [key for key in (rna_key, msi_key) if key not in mod]
    if missing:
        raise ValueError(
            f"mdata has no modality {', '.join(repr(k) for k in missing)} "
            f"(modalities: {list(mod)}); pass rna_key=/msi_key="
        )
    return mod[rna_key], mod[msi_key]


def resolve_genes(rna, genes: Sequence[str] | str, name: str = "rna") -> list[str]:
    """``genes`` checked against ``rna.var_names`` (unique, in the given order)."""
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise ValueError("genes is empty")
    names = rna.var_names
    missing = [g for g in genes if not isinstance(g, str) or g not in names]
    if missing:
        raise ValueError(missing_message("gene", missing, names, name))
    return list(dict.fromkeys(genes))


def resolve_ions(
    msi,
    ions: Sequence[str | float] | str | float,
    *,
    ppm: float | None = None,
    tol: float | None = None,
    name: str = "msi",
) -> list[str]:
    """MSI ``var_names`` for ``ions``: names as given, m/z values matched to the nearest feature.

    A number matches the feature whose ``var["mz"]`` (or the m/z in its ``mz-…`` name) is
    nearest, provided it lies within ± ``ppm`` (default 10) or ± ``tol`` of the number.
    """
    ions = [ions] if isinstance(ions, str | int | float | np.number) else list(ions)
    if not ions:
        raise ValueError("ions is empty")
    names = msi.var_names
    out: list[str] = []
    missing: list[str] = []
    values = [v for v in ions if not isinstance(v, str)]
    if values:
        try:
            centres, lo, hi = mz_windows(np.asarray(values, dtype=np.float64), ppm=ppm, tol=tol)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ions: {exc}") from None
        feature_mz = mz_values(msi)
        order = np.argsort(feature_mz, kind="stable")
        sorted_mz = feature_mz[order]
    matched = iter(range(len(values)))
    for ion in ions:
        if isinstance(ion, str):
            if ion in names:
                out.append(ion)
            else:
                missing.append(repr(ion))
            continue
        i = next(matched)
        j = int(np.searchsorted(sorted_mz, centres[i]))
        candidates = [c for c in (j - 1, j) if 0 <= c < sorted_mz.size]
        best = min(candidates, key=lambda c: abs(sorted_mz[c] - centres[i]), default=None)
        if best is None or not lo[i] <= sorted_mz[best] <= hi[i]:
            near = "" if best is None else f" (nearest feature: m/z {sorted_mz[best]:.4f})"
            window = f"± {tol} m/z" if tol is not None else f"± {10.0 if ppm is None else ppm} ppm"
            missing.append(f"m/z {centres[i]:.4f} {window}{near}")
        else:
            out.append(str(names[order[best]]))
    if missing:
        raise ValueError(
            f"{name} has no ion {', '.join(missing)}"
            + close_hint([m.strip("'") for m in missing if m.startswith("'")], names)
        )
    return list(dict.fromkeys(out))


def missing_message(kind: str, missing: list, names, modality: str) -> str:
    """``"<modality> has no <kind> 'a', 'b'"`` with a close-match hint."""
    listed = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
    return f"{modality} has no {kind} {listed}" + close_hint(
        [m for m in missing if isinstance(m, str)], names
    )


def close_hint(missing: list[str], names) -> str:
    """``"; did you mean ...?"`` for the first missing name, or nothing."""
    if not missing:
        return ""
    pool = [str(v) for v in names]
    close = difflib.get_close_matches(missing[0], pool, n=3)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
