"""Ion masses: formulas (through molmass), adducts, polarity, shared by annotation and matrix flags.

An adduct's m/z is ``(k · M + Σ added − Σ lost ∓ z · mₑ) / |z|`` for a neutral monoisotopic mass
``M``: positive ions have lost electrons (``− mₑ``), negative ions gained them (``+ mₑ``).
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

#: Electron mass in u (CODATA 2018).
ELECTRON_MASS = 0.000548579909065

#: Adducts by name: (charge, formula added, formula lost). All single charge, one molecule.
ADDUCTS: dict[str, tuple[int, str, str]] = {
    "[M+H]+": (1, "H", ""),
    "[M+Na]+": (1, "Na", ""),
    "[M+K]+": (1, "K", ""),
    "[M+NH4]+": (1, "NH4", ""),
    "[M-H2O+H]+": (1, "H", "H2O"),
    "[M-H]-": (-1, "", "H"),
    "[M+Cl]-": (-1, "Cl", ""),
    "[M-H2O-H]-": (-1, "", "H3O"),
    # the molecule itself charged (METASPACE's "[M]+" / "[M]-": pre-charged or radical ions)
    "[M]+": (1, "", ""),
    "[M]-": (-1, "", ""),
}

#: Adducts considered by default for each polarity.
DEFAULT_ADDUCTS = {
    "positive": ["[M+H]+", "[M+Na]+", "[M+K]+"],
    "negative": ["[M-H]-", "[M+Cl]-"],
}

_POLARITY_ACCESSIONS = {"MS:1000130": "positive", "MS:1000129": "negative"}
#: Bytes of an imzML header searched for the scan polarity.
_HEADER_BYTES = 2 << 20


@cache
def formula_mass(formula: str) -> float:
    """Monoisotopic mass of ``formula`` in u (molmass); ValueError naming it when it is not one."""
    import molmass

    text = str(formula).strip()
    if not text:
        raise ValueError("empty formula")
    try:
        return float(molmass.Formula(text).monoisotopic_mass)
    except Exception as exc:  # molmass.FormulaError and anything its parser raises
        raise ValueError(f"{text!r} is not a chemical formula ({exc})".replace("\n", " ")) from exc


def adduct_shift(adduct: str) -> tuple[float, int]:
    """``(mass added to M, charge)`` of a named adduct, electrons included."""
    if adduct not in ADDUCTS:
        raise ValueError(f"unknown adduct {adduct!r}; known: {', '.join(ADDUCTS)}")
    charge, added, lost = ADDUCTS[adduct]
    shift = (formula_mass(added) if added else 0.0) - (formula_mass(lost) if lost else 0.0)
    return shift - charge * ELECTRON_MASS, charge


@cache
def isotope_pattern(formula: str, adduct: str, n: int = 3) -> tuple[tuple[float, ...], ...]:
    """Isotope pattern of ``formula`` as ``adduct``: ``(m/z offsets, relative intensities)``.

    The first ``n`` isotopologues by nominal mass from the monoisotopic ion, the adduct's atoms
    included (⁴¹K, ³⁷Cl); each offset is molmass' abundance-weighted mass of that nominal mass.
    """
    import molmass

    charge, added, lost = ADDUCTS[adduct]
    composite = molmass.Formula(formula)
    if added:
        composite = composite + molmass.Formula(added)
    if lost:
        composite = composite - molmass.Formula(lost)
    entries = {e.massnumber: e for e in composite.spectrum(min_fraction=1e-6).values()}
    monoisotopic = composite.monoisotopic_mass
    mono = min(entries.values(), key=lambda e: abs(e.mass - monoisotopic), default=None)
    if mono is None or mono.fraction <= 0:
        return (0.0,) * n, (1.0,) + (0.0,) * (n - 1)
    nominal = mono.massnumber
    offsets, ratios = [], []
    for k in range(n):
        entry = entries.get(nominal + k)
        offsets.append((entry.mass - mono.mass) / abs(charge) if entry else k * 1.0033548350723)
        ratios.append(entry.fraction / mono.fraction if entry else 0.0)
    return tuple(offsets), tuple(ratios)


def adduct_polarity(adduct: str) -> str:
    """``"positive"`` or ``"negative"``."""
    return "positive" if adduct_shift(adduct)[1] > 0 else "negative"


def header_text(path: str | os.PathLike | None) -> str | None:
    """An imzML file's first 2 MiB as text (Latin-1), or None where there is no path or no file."""
    if not path:
        return None
    try:
        with Path(path).open("rb") as handle:
            return handle.read(_HEADER_BYTES).decode("latin-1")
    except OSError:
        return None


def file_polarity(path: str | os.PathLike | None) -> str | None:
    """Scan polarity stated in an imzML file's first 2 MiB (MS:1000130/129), else None."""
    head = header_text(path)
    if head is None:
        return None
    found = {
        polarity
        for accession, polarity in _POLARITY_ACCESSIONS.items()
        if re.search(rf'accession="{accession}"', head)
    }
    return found.pop() if len(found) == 1 else None


def polarity_of(adata, polarity: str | None) -> tuple[str | None, str]:
    """The ion polarity to annotate ``adata`` with, and where it came from.

    ``polarity`` as given; else ``uns["spatialfuse"]["polarity"]``; else what the imzML file
    states (MS:1000130 / MS:1000129); else None (adducts of both polarities are considered).
    """
    if polarity is not None:
        if polarity not in ("positive", "negative"):
            raise ValueError(f"polarity must be 'positive', 'negative' or None, got {polarity!r}")
        return polarity, "argument"
    info = adata.uns.get("spatialfuse", {}) or {}
    stated = info.get("polarity") if hasattr(info, "get") else None
    if stated in ("positive", "negative"):
        return stated, "uns['spatialfuse']['polarity']"
    found = file_polarity(info.get("file")) if hasattr(info, "get") else None
    if found:
        return found, "imzML file (MS:1000130/MS:1000129)"
    return None, "unknown: adducts of both polarities considered"
