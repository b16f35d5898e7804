"""Putative annotation of m/z features against a user database (names + formulas or masses).

Every database entry becomes one ion per adduct (``[M+H]+``, ``[M+Na]+``, ``[M+K]+`` for positive
mode, ``[M-H]-``, ``[M+Cl]-`` for negative; masses from the formulas by molmass, electrons
included); a feature matches every ion within ``± ppm`` of its m/z. All matches are kept in
``uns`` (ambiguity is the rule at MS1: isomers share a formula, and adducts of different
molecules can coincide); the best one — the smallest absolute ppm error, with every name that
shares its formula and adduct — goes into ``var`` beside the m/z. Each match gets an *isotope
score*: the cosine between the mean intensities of the features found at its M, M+1 and M+2 and
the pattern molmass computes for the formula with the adduct's atoms (METASPACE's spectral
score, without the spatial part); it is reported, not used to rank. Nothing is downloaded: the
database is the table the user gives (an HMDB, LIPID MAPS or METASPACE export, or their own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._docs import MZ_KEY, fill_doc, flagged_copy
from spatialfuse._ions import polarity_of
from spatialfuse._logging import logger
from spatialfuse.errors import FileFormatError, MissingFileError

if TYPE_CHECKING:
    import anndata
    import pandas as pd

__all__ = ["annotate", "read_database"]

_NAME_COLUMNS = (
    "name",
    "compound",
    "compound_name",
    "molecule_name",
    "common_name",
    "names",
    "moleculenames",
)
_FORMULA_COLUMNS = ("formula", "molecular_formula", "chemical_formula", "sum_formula")
_MASS_COLUMNS = (
    "mass",
    "monoisotopic_mass",
    "exact_mass",
    "monoisotopic_molecular_weight",
    "neutral_mass",
)


_ADDUCT_COLUMNS = ("adduct", "adducts", "ion_type", "precursor_type")
#: Extra columns of a METASPACE export carried into the candidates table (``ion``:
#: METASPACE's own name of the ion, e.g. ``C6H12O6+Cl-``).
_CARRIED = ("msm", "fdr", "moleculeIds", "ion")
#: METASPACE writes adducts as "+H", "-H", "+Cl" (its export as "M+H", "M-H", "M+Cl"; its
#: charged-molecule adducts "[M]+" and "[M]-" as "M[M]+" and "M[M]-"): the names here.
_SHORT_ADDUCTS = {
    "+H": "[M+H]+",
    "+Na": "[M+Na]+",
    "+K": "[M+K]+",
    "+NH4": "[M+NH4]+",
    "-H": "[M-H]-",
    "+Cl": "[M+Cl]-",
    "[M]+": "[M]+",
    "[M]-": "[M]-",
}
#: METASPACE's modifier columns: a chemical modification and a neutral loss of the formula,
#: each a chain of signed groups (``"-H2O"``, ``"-H2+O2"``), applied before the adduct.
_MODIFIER_COLUMNS = ("chemmod", "neutralloss")


def _adduct_name(text: str) -> str:
    """``"+Na"`` (METASPACE), ``"M+Na"`` (its export) or ``"[M+Na]+"`` as ``"[M+Na]+"``."""
    from spatialfuse._ions import ADDUCTS

    value = str(text).strip()
    if value in ADDUCTS:
        return value
    if value in _SHORT_ADDUCTS:
        return _SHORT_ADDUCTS[value]
    if value.startswith("M[M]"):  # the export writes "M" + METASPACE's "[M]+"
        return _SHORT_ADDUCTS.get(value[1:], value)
    core = value.removeprefix("[").split("]")[0].removeprefix("M")
    if core in _SHORT_ADDUCTS:
        return _SHORT_ADDUCTS[core]
    raise ValueError(f"unknown adduct {value!r}; known: {', '.join(ADDUCTS)} (or +H, -H, +Cl, …)")


def _modified_formula(formula: str, modifiers: list[str]) -> str:
    """``formula`` with METASPACE's signed groups (``"-H2O"``, ``"-H2+O2"``) applied (molmass)."""
    import re

    import molmass

    composite = molmass.Formula(formula)
    for modifier in modifiers:
        text = str(modifier).strip()
        if not text or text.lower() == "nan":
            continue
        groups = re.findall(r"([+-])([^+-]+)", text)
        if "".join(sign + group for sign, group in groups) != text.replace(" ", ""):
            raise ValueError(f"modifier {text!r} is not a chain of +/- formulas")
        for sign, group in groups:
            part = molmass.Formula(group)
            composite = composite + part if sign == "+" else composite - part
    return composite.formula


def _explode_molecules(out, names_col, ids_col):
    """One row per molecule of METASPACE's ``", "``-joined name (and id) lists."""
    import pandas as pd

    names = [str(v).split(", ") if str(v).strip() not in ("", "nan") else [""] for v in names_col]
    ids = (
        [str(v).split(", ") for v in ids_col]
        if ids_col is not None
        else [[""] * len(n) for n in names]
    )
    ids = [
        i if len(i) == len(n) else [", ".join(i)] * len(n) for n, i in zip(names, ids, strict=True)
    ]
    repeat = np.array([len(n) for n in names])
    exploded = out.loc[out.index.repeat(repeat)].reset_index(drop=True)
    exploded["name"] = [name for group in names for name in group]
    if "moleculeIds" in exploded:
        exploded["moleculeIds"] = [i for group in ids for i in group]
    return pd.DataFrame(exploded)


def _leading_comments(path: Path) -> int:
    """Lines at the top of a file that start with ``#`` (METASPACE exports begin with two)."""
    count = 0
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            count += 1
    return count


def _column(frame, choices) -> str | None:
    lower = {str(c).strip().lower(): c for c in frame.columns}
    for choice in choices:
        if choice in lower:
            return lower[choice]
    return None


def read_database(database: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A database as a table of ``name``, ``formula`` (may be empty) and neutral ``mass``.

    ``database`` is a CSV/TSV path (the separator is taken from the suffix, or sniffed) or a
    DataFrame with a name column and a formula or monoisotopic-mass column (names matched
    case-insensitively: ``name``/``compound``, ``formula``/``molecular_formula``,
    ``mass``/``monoisotopic_mass``/``exact_mass``). Where both are given, the formula wins.

    A table with an ``adduct`` column lists *ions*: each row is matched with its own adduct only
    (``[M+Na]+``, or METASPACE's ``+Na`` / ``M+Na``), which is how a METASPACE annotation
    export is imported. Its layout, as METASPACE's web app writes it (``formatCsvRow.ts`` and
    ``AnnotationTable.vue`` in metaspace2020/metaspace): two leading ``#`` lines (skipped; a
    UTF-8 byte-order mark before them too), every cell quoted, columns ``formula``, ``adduct``
    (``"M" +`` the engine's adduct: ``M+H``, ``M-H``, ``M+Cl``, ``M[M]+``), optional
    ``chemMod`` and ``neutralLoss`` (signed groups such as ``-H2O``, applied to the formula
    before the adduct), ``ion``, ``mz``, ``msm``, ``fdr``, ``moleculeNames`` and
    ``moleculeIds`` (lists joined by ``", "``: one database row per molecule, so isomers share
    a formula and are reported together); ``msm``, ``fdr``, ``moleculeIds`` and ``ion`` are
    kept in the candidates.
    """
    import pandas as pd

    from spatialfuse._ions import formula_mass

    path = None
    if isinstance(database, str | os.PathLike):
        path = Path(database)
        if not path.is_file():
            raise MissingFileError(path, "the annotation database (a CSV or TSV file) is absent")
        sep = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(path.suffix.lower())
        try:
            frame = pd.read_csv(
                path,
                sep=sep,
                engine="python" if sep is None else "c",
                skiprows=_leading_comments(path),
                encoding="utf-8-sig",
            )
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise FileFormatError(path, f"cannot be read as a CSV/TSV table: {exc}") from exc
    elif isinstance(database, pd.DataFrame):
        frame = database
    else:
        raise TypeError(
            f"database must be a path to a CSV/TSV or a DataFrame, got {type(database).__name__}"
        )

    def fail(message: str):
        if path is not None:
            raise FileFormatError(path, message)
        raise ValueError(f"database: {message}")

    name_col = _column(frame, _NAME_COLUMNS)
    formula_col = _column(frame, _FORMULA_COLUMNS)
    mass_col = _column(frame, _MASS_COLUMNS)
    if name_col is None:
        fail(f"no name column (one of {_NAME_COLUMNS}); columns are {list(frame.columns)}")
    if formula_col is None and mass_col is None:
        fail(
            f"no formula column ({_FORMULA_COLUMNS}) or mass column ({_MASS_COLUMNS}); "
            f"columns are {list(frame.columns)}"
        )
    names = frame[name_col].astype(str).str.strip().to_numpy()
    formulas = (
        frame[formula_col].fillna("").astype(str).str.strip().to_numpy()
        if formula_col is not None
        else np.full(len(frame), "", dtype=object)
    )
    given = (
        pd.to_numeric(frame[mass_col], errors="coerce").to_numpy(dtype=np.float64)
        if mass_col is not None
        else np.full(len(frame), np.nan)
    )
    modifier_cols = [c for c in (_column(frame, (m,)) for m in _MODIFIER_COLUMNS) if c is not None]
    if modifier_cols and formula_col is not None:  # METASPACE: the ion's neutral is modified
        mods = frame[modifier_cols].fillna("").astype(str).to_numpy()
        for i in np.flatnonzero((mods != "").any(axis=1)):
            try:
                formulas[i] = _modified_formula(formulas[i], list(mods[i]))
            except Exception as exc:  # molmass.FormulaError and ValueError
                fail(f"row {i + 1} ({names[i]!r}): {exc}".replace("\n", " "))
    masses = np.empty(len(frame))
    for i, (formula, mass) in enumerate(zip(formulas, given, strict=True)):
        if formula:
            try:
                masses[i] = formula_mass(formula)
            except ValueError as exc:
                fail(f"row {i + 1} ({names[i]!r}): {exc}")
        elif np.isfinite(mass) and mass > 0:
            masses[i] = mass
        else:
            fail(f"row {i + 1} ({names[i]!r}) has neither a formula nor a positive mass")
    out = pd.DataFrame({"name": names, "formula": formulas, "mass": masses})
    adduct_col = _column(frame, _ADDUCT_COLUMNS)
    if adduct_col is not None:
        adducts = []
        for i, value in enumerate(frame[adduct_col].to_numpy()):
            try:
                adducts.append(_adduct_name(value))
            except ValueError as exc:
                fail(f"row {i + 1} ({names[i]!r}): {exc}")
        out["adduct"] = adducts
        for column in _CARRIED:
            found = _column(frame, (column.lower(),))
            if found is not None:
                out[column] = frame[found].to_numpy()
        if str(name_col).strip().lower() == "moleculenames":
            ids_col = _column(frame, ("moleculeids",))
            out = _explode_molecules(
                out, frame[name_col].to_numpy(), None if ids_col is None else frame[ids_col]
            )
            empty = out["name"] == ""
            out.loc[empty, "name"] = out.loc[empty, "formula"]
    return out


def _feature_means(adata) -> np.ndarray:
    """Mean intensity of every feature over the pixels (NaN rows ignored), computed."""
    from scipy import sparse

    x = adata.X
    if sparse.issparse(x):
        return np.asarray(x.mean(axis=0), dtype=np.float64).ravel()
    if hasattr(x, "compute"):
        import dask.array as da

        return np.asarray(da.nanmean(x, axis=0).compute(), dtype=np.float64)
    if x.shape[0] == 0:
        return np.zeros(x.shape[1])
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.asarray(x, dtype=np.float64), axis=0)
    return np.nan_to_num(np.asarray(mean, dtype=np.float64).ravel())


def isotope_scores(candidates, mz: np.ndarray, means: np.ndarray, ppm: float) -> np.ndarray:
    """Cosine of observed and expected (M, M+1, M+2) mean intensities, per candidate.

    NaN for a candidate without a formula or whose feature has no signal. The observed M+k
    is the mean intensity of the feature nearest ``ion_mz + offset_k`` within ``ppm`` (0 where
    none lies there), divided by the candidate's own feature's mean.
    """
    from spatialfuse._ions import isotope_pattern

    order = np.argsort(mz)
    sorted_mz = mz[order]
    scores = np.full(len(candidates), np.nan)
    feature_mz = candidates["mz"].to_numpy()
    for i, (formula, adduct, ion, observed_mz) in enumerate(
        zip(
            candidates["formula"],
            candidates["adduct"],
            candidates["ion_mz"],
            feature_mz,
            strict=True,
        )
    ):
        if not formula:
            continue
        offsets, expected = isotope_pattern(formula, adduct)
        j0 = order[np.searchsorted(sorted_mz, observed_mz)]
        base = means[j0] if sorted_mz.size else 0.0
        if not base > 0:
            continue
        observed = [1.0]
        for offset in offsets[1:]:
            target = ion + offset
            lo = np.searchsorted(sorted_mz, target * (1 - ppm * 1e-6), side="left")
            hi = np.searchsorted(sorted_mz, target * (1 + ppm * 1e-6), side="right")
            if hi > lo:
                nearest = order[lo + int(np.abs(sorted_mz[lo:hi] - target).argmin())]
                observed.append(max(means[nearest], 0.0) / base)
            else:
                observed.append(0.0)
        a, b = np.asarray(observed), np.asarray(expected)
        scores[i] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return scores


@fill_doc(mz_key=MZ_KEY, copy=flagged_copy("an annotated"))
def annotate(
    adata: anndata.AnnData,
    database: str | os.PathLike | pd.DataFrame,
    *,
    adducts: list[str] | None = None,
    ppm: float = 5.0,
    polarity: str | None = None,
    mz_key: str = "mz",
    key_added: str = "annotation",
    copy: bool = False,
) -> anndata.AnnData | None:
    """Annotate m/z features with the database entries whose adduct ions lie within ``ppm``.

    Parameters
    ----------
    adata
        A table of m/z features (``var[mz_key]``), e.g. from :func:`spatialfuse.pp.pick_peaks`
        or :func:`spatialfuse.io.read_imzml`.
    database
        Path of a CSV/TSV, or a DataFrame, with a name column and a formula (or neutral
        monoisotopic mass) column; with an ``adduct`` column each row is one ion (a METASPACE
        annotation export imports this way); see :func:`spatialfuse.tl._annotate.read_database`.
    adducts
        Adduct names (``"[M+H]+"``, ``"[M+Na]+"``, ``"[M+K]+"``, ``"[M+NH4]+"``,
        ``"[M-H2O+H]+"``, ``"[M-H]-"``, ``"[M+Cl]-"``, ``"[M-H2O-H]-"``). None: the defaults of
        the polarity (positive ``[M+H]+ [M+Na]+ [M+K]+``, negative ``[M-H]- [M+Cl]-``), of both
        where the polarity is unknown; for an ion list, its own adducts (of the polarity).
    ppm
        Largest absolute m/z error of a match, in parts per million.
    polarity
        ``"positive"`` or ``"negative"``; None: from ``uns["spatialfuse"]["polarity"]`` or the
        imzML file the table was read from (MS:1000130/129), else both (recorded in ``uns``).
    {mz_key}
    key_added
        Prefix of the ``var`` columns and name of the ``uns`` entry written.
    {copy}
        The annotated copy if ``copy``, else None. Writes (``var_names`` and ``var[mz_key]``
        are kept):

        - ``var[f"{key_added}_name"]``: the best match (smallest absolute ppm error; isomers
          sharing its formula and adduct joined by ``"; "``), ``""`` where nothing matches;
        - ``var[f"{key_added}_formula"]``, ``var[f"{key_added}_adduct"]``,
          ``var[f"{key_added}_ion_mz"]``, ``var[f"{key_added}_ppm"]`` (observed − theoretical,
          in ppm of the theoretical m/z; NaN where nothing matches);
        - ``var[f"{key_added}_n_candidates"]``: how many (entry, adduct) ions match;
        - ``var[f"{key_added}_isotope_score"]``: of the best match, the cosine between the
          mean intensities of the features at its M, M+1, M+2 and the pattern molmass computes
          for its formula and adduct (1 = the pattern is there; NaN for mass-only entries);
        - ``uns[key_added]``: ``"candidates"`` (a DataFrame of every match: feature, mz, name,
          formula, adduct, ion_mz, ppm, isotope_score; msm, fdr, moleculeIds from a METASPACE
          export), ``"adducts"``, ``"ppm"``,
          ``"polarity"`` and where it came from (``"polarity_source"``).
    """
    import pandas as pd

    from spatialfuse._ions import DEFAULT_ADDUCTS, adduct_polarity, adduct_shift
    from spatialfuse.core.adata import check_adata

    check_adata(adata)
    if mz_key not in adata.var:
        raise ValueError(f"adata.var has no {mz_key!r} column (the m/z of each feature)")
    if not (np.isfinite(ppm) and ppm > 0):
        raise ValueError(f"ppm must be a positive number, got {ppm!r}")
    pol, pol_source = polarity_of(adata, polarity)
    db = read_database(database)
    per_row = "adduct" in db
    if adducts is not None:
        chosen = list(adducts)
        if not chosen:
            raise ValueError("adducts is empty: give at least one adduct, or None")
        for name in chosen:
            adduct_shift(name)  # ValueError naming an unknown adduct
        if pol is not None:
            wrong = [a for a in chosen if adduct_polarity(a) != pol]
            if wrong:
                raise ValueError(f"adducts {wrong} do not fit the {pol} polarity ({pol_source})")
    elif per_row:  # an ion list (METASPACE): its own adducts, those of the polarity
        chosen = [
            a for a in dict.fromkeys(db["adduct"]) if pol is None or adduct_polarity(a) == pol
        ]
    else:
        chosen = (
            DEFAULT_ADDUCTS[pol]
            if pol is not None
            else DEFAULT_ADDUCTS["positive"] + DEFAULT_ADDUCTS["negative"]
        )
    if pol is None:
        logger.warning("annotate: the polarity is unknown; adducts of both polarities considered")
    mz = np.asarray(adata.var[mz_key], dtype=np.float64)

    shifts = np.array([adduct_shift(a)[0] for a in chosen])
    if per_row:
        index_of = {a: i for i, a in enumerate(chosen)}
        adduct_all = np.array([index_of.get(a, -1) for a in db["adduct"]], dtype=np.int64)
        entry = np.flatnonzero(adduct_all >= 0)
        adduct = adduct_all[entry]
        ion_mz = db["mass"].to_numpy()[entry] + shifts[adduct]
    else:
        ion_mz = (db["mass"].to_numpy()[:, None] + shifts[None, :]).ravel()  # entry-major
        entry = np.repeat(np.arange(len(db)), len(chosen))
        adduct = np.tile(np.arange(len(chosen)), len(db))
    order = np.argsort(ion_mz, kind="stable")
    sorted_ions = ion_mz[order]
    # |mz − ion| ≤ ppm·ion  ⇔  mz/(1+ppm) ≤ ion ≤ mz/(1−ppm)
    start = np.searchsorted(sorted_ions, mz / (1 + ppm * 1e-6), side="left")
    stop = np.searchsorted(sorted_ions, mz / (1 - ppm * 1e-6), side="right")
    counts = np.maximum(stop - start, 0)
    feature = np.repeat(np.arange(mz.size), counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    ions = order[np.repeat(start, counts) + within]
    theoretical = ion_mz[ions]
    error = (mz[feature] - theoretical) / theoretical * 1e6
    candidates = pd.DataFrame(
        {
            "feature": adata.var_names.to_numpy()[feature].astype(str),
            "mz": mz[feature],
            "name": db["name"].to_numpy()[entry[ions]],
            "formula": db["formula"].to_numpy()[entry[ions]],
            "adduct": np.asarray(chosen, dtype=object)[adduct[ions]],
            "ion_mz": theoretical,
            "ppm": error,
        }
    )
    for column in _CARRIED:
        if column in db:
            candidates[column] = db[column].to_numpy()[entry[ions]]
    candidates = candidates.iloc[
        np.lexsort((candidates["name"].to_numpy(), np.abs(error), feature))
    ].reset_index(drop=True)
    if len(candidates):
        candidates["isotope_score"] = isotope_scores(candidates, mz, _feature_means(adata), ppm)
    else:
        candidates["isotope_score"] = np.empty(0)

    adata = adata.copy() if copy else adata
    n = adata.n_vars
    best_name = np.full(n, "", dtype=object)
    best_formula = np.full(n, "", dtype=object)
    best_adduct = np.full(n, "", dtype=object)
    best_ion = np.full(n, np.nan)
    best_ppm = np.full(n, np.nan)
    best_score = np.full(n, np.nan)
    n_candidates = np.bincount(feature, minlength=n)
    if len(candidates):
        index = pd.Index(adata.var_names.astype(str)).get_indexer(candidates["feature"])
        first = np.r_[True, index[1:] != index[:-1]]
        for row in np.flatnonzero(first):
            j = index[row]
            top = candidates.iloc[row]
            same = candidates.iloc[row : row + n_candidates[j]]
            key_match = (same["adduct"] == top["adduct"]) & np.isclose(
                same["ion_mz"], top["ion_mz"], rtol=1e-12, atol=0
            )
            if top["formula"]:
                key_match &= same["formula"] == top["formula"]
            best_name[j] = "; ".join(dict.fromkeys(same.loc[key_match, "name"]))
            best_formula[j], best_adduct[j] = top["formula"], top["adduct"]
            best_ion[j], best_ppm[j] = top["ion_mz"], top["ppm"]
            best_score[j] = top["isotope_score"]
    adata.var[f"{key_added}_name"] = best_name.astype(str)
    adata.var[f"{key_added}_formula"] = best_formula.astype(str)
    adata.var[f"{key_added}_adduct"] = best_adduct.astype(str)
    adata.var[f"{key_added}_ion_mz"] = best_ion
    adata.var[f"{key_added}_ppm"] = best_ppm
    adata.var[f"{key_added}_n_candidates"] = n_candidates
    adata.var[f"{key_added}_isotope_score"] = best_score
    adata.uns[key_added] = {
        "candidates": candidates,
        "adducts": list(chosen),
        "ppm": float(ppm),
        "polarity": pol or "unknown",
        "polarity_source": pol_source,
        "n_entries": len(db),
        "n_annotated": int((n_candidates > 0).sum()),
    }
    logger.info(
        "annotate: %d of %d features matched (%d candidates, %s polarity)",
        int((n_candidates > 0).sum()),
        n,
        len(candidates),
        pol or "unknown",
    )
    return adata if copy else None
