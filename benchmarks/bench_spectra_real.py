"""Spectra steps on real files: i2nca's profile imzML files and the mouse bladder vs SpaMTP.

Part 1 runs ``sf.pp.pick_peaks`` → ``sf.tl.annotate`` on the files of ``imzml/galaxyp_i2nca``
named profile (continuous ``cp_*``, processed ``pp_*``; 4 pixels, m/z 50–300, negative mode as
the files state) against the small metabolite list of
``tests/data/spectra/metabolites_negative.csv``, with a decoy count (the list shifted by
±0.15–0.45 m/z) for the matches expected by chance; compares the profile copy's peaks with the
centroid copy's; and runs ``sf.pp.recalibrate`` on one file of each kind.
Part 2 flags and annotates the 79 peaks of the mouse bladder (``paired/bladder_spamtp``) against
the lipid class list of ``tests/data/spectra/lipids_by_class.csv`` and compares every peak with
SpaMTP's annotation (LIPID MAPS, ``[M+K]+``, shipped in ``DERIVED_bladder_feature_metadata.csv``).
Both databases are written by ``benchmarks/make_spectra_databases.py`` (formulas only, masses
by molmass; nothing downloaded). The numbers are in docs/spectra.md.

Usage::

    python benchmarks/bench_spectra_real.py   # data from $SPATIALFUSE_TEST_DATA or ../shared/data
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPATIALFUSE_TEST_DATA", ROOT.parent / "shared" / "data"))
DATABASES = ROOT / "tests" / "data" / "spectra"
I2NCA = DATA / "imzml" / "galaxyp_i2nca"
BLADDER = DATA / "paired" / "bladder_spamtp"

#: The profile files of i2nca's test data (cp: continuous profile, pp: processed profile).
PROFILE_FILES = (
    "cp_test1.imzml",
    "cp_test3.imzml",
    "cp_test5.imzml",
    "cp_test6.imzml",
    "pp_test2.imzml",
    "pp_test4.imzml",
)
#: Window of the metabolite annotation of the profile files (their axes step 60–20,000 ppm).
PROFILE_PPM = 20.0


def _annotated(table) -> pd.DataFrame:
    var = table.var
    named = var[var["annotation_name"].astype(str) != ""]
    return named[
        ["mz", "annotation_name", "annotation_adduct", "annotation_ppm", "annotation_n_candidates"]
    ]


#: K+ (the ion's mass: potassium less an electron), for SpaMTP's [M+K]+.
POTASSIUM_ION = 38.9637064864 - 0.000548579909

#: Decoy shifts of the database masses (m/z units): matches of a shifted list are chance.
DECOY_SHIFTS = (-0.45, -0.35, -0.25, -0.15, 0.15, 0.25, 0.35, 0.45)


def _chance_matches(sf, peaks, database: pd.DataFrame, ppm: float, **options) -> float:
    """Mean number of features annotated from the database with its masses shifted (decoys)."""
    counts = []
    for shift in DECOY_SHIFTS:
        decoy = pd.DataFrame({"name": database["name"], "mass": database["mass"] + shift})
        out = sf.tl.annotate(peaks, decoy, ppm=ppm, copy=True, **options)
        counts.append(int((out.var["annotation_name"].astype(str) != "").sum()))
    return float(np.mean(counts))


def _stated_mode(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if "MS:1000128" in text:
        return "profile"
    return "centroid" if "MS:1000127" in text else "not stated"


def profile_files(sf) -> dict:
    from scipy import sparse

    path_db = DATABASES / "metabolites_negative.csv"
    database = pd.read_csv(path_db)
    results = {}
    for name in PROFILE_FILES:
        path = I2NCA / name
        table = sf.io.read_imzml(path)
        x = table.X.toarray() if sparse.issparse(table.X) else np.asarray(table.X)
        nonzero = x > 0
        shaped = (nonzero[:, 1:-1] & nonzero[:, :-2] & nonzero[:, 2:]).sum() / nonzero.sum()
        step = float(np.median(np.diff(table.var["mz"]) / table.var["mz"].to_numpy()[:-1] * 1e6))
        t = time.perf_counter()
        peaks = sf.pp.pick_peaks(path, snr=3)
        sf.tl.annotate(peaks, path_db, ppm=PROFILE_PPM)
        t = time.perf_counter() - t
        info = peaks.uns["annotation"]
        named = _annotated(peaks)
        chance = _chance_matches(sf, peaks, database, PROFILE_PPM)
        results[name] = {"peaks": peaks, "named": named, "table": table, "chance": chance}
        print(
            f"{name}: {peaks.n_obs} px × {table.n_vars} points (median step {step:.0f} ppm; "
            f"stated {_stated_mode(path)}; {shaped:.0%} of non-zero points have both neighbours "
            f"non-zero) → {peaks.n_vars} peaks; {len(named)} annotated within {PROFILE_PPM:g} ppm "
            f"(decoys shifted by ±0.15–0.45 m/z: {chance:.1f}); polarity {info['polarity']} "
            f"({info['polarity_source']}); {t:.2f} s"
        )
        for _, row in named.sort_values("mz").iterrows():
            print(
                f"    {row['mz']:9.4f}  {row['annotation_name']} {row['annotation_adduct']} "
                f"{row['annotation_ppm']:+.1f} ppm ({int(row['annotation_n_candidates'])} cand.)"
            )
    return results


def consistency(results) -> None:
    """The profile copy's peaks (pp_test2) against the centroid copy's (cp_test3)."""
    profile = results["pp_test2.imzml"]["peaks"]
    centroid = results["cp_test3.imzml"]["peaks"]
    top = profile.var.sort_values("intensity", ascending=False).head(50)["mz"].to_numpy()
    ref = np.sort(centroid.var["mz"].to_numpy())
    idx = np.clip(np.searchsorted(ref, top), 1, ref.size - 1)
    nearest = np.where(np.abs(ref[idx] - top) < np.abs(ref[idx - 1] - top), ref[idx], ref[idx - 1])
    diff = top - nearest
    print(
        f"pp_test2 (profile) vs cp_test3 (centroid): of pp_test2's 50 strongest peaks "
        f"{int((np.abs(diff) <= 1 / 12).sum())} lie within half a pp axis step (0.083 m/z) of a "
        f"cp_test3 peak; median |Δ| {np.median(np.abs(diff)):.3f} m/z"
    )


def recalibration(sf, results) -> None:
    """Recalibration of the two kinds of file: what it can and cannot measure on them."""
    for name, kwargs in (
        ("cp_test3.imzml", {"reference_mz": [92.92803, 132.03017, 179.05611], "ppm": 400.0}),
        ("pp_test2.imzml", {"reference_mz": None, "n_references": 10, "ppm": 1000.0}),
    ):
        table = results[name]["table"].copy()
        sf.pp.recalibrate(table, snr=3, **kwargs)
        info = table.uns["recalibration"]
        before, after = info["median_abs_ppm_before"], info["median_abs_ppm_after"]
        what = (
            f"median |error| {before:.1f} → {after:.1f} ppm"
            if before is not None
            else "no reference peak measurable in any pixel"
        )
        print(
            f"{name} recalibrated ({info['reference_source']}, ±{kwargs['ppm']:g} ppm): {what}; "
            f"{info.get('pixels_without_reference', 0)} of {table.n_obs} pixels without a "
            "reference"
        )
    # the per-pixel drift cp_test3 shows at the three lock masses (single points per pixel)
    table = results["cp_test3.imzml"]["table"]
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    mz = table.var["mz"].to_numpy()
    for ref in (92.92803, 132.03017, 179.05611):
        near = np.abs(mz - ref) / ref * 1e6 < 40
        rows = [mz[near][np.argmax(x[i, near])] for i in range(table.n_obs)]
        print(
            f"    cp_test3 at {ref:.4f}: pixel apexes "
            + ", ".join(f"{(m - ref) / ref * 1e6:+.1f}" for m in rows)
            + " ppm"
        )


def bladder(sf) -> dict:
    """The 79 bladder peaks flagged and annotated, each compared with SpaMTP's annotation."""
    from molmass import Formula

    table = sf.io.read_imzml(BLADDER / "mouse_bladder_79peaks.imzML")
    spamtp = pd.read_csv(BLADDER / "DERIVED_bladder_feature_metadata.csv")
    sf.pp.flag_matrix(table, matrix="DHB", polarity="positive", max_cluster=5)
    sf.pp.flag_isotopes(table)
    sf.tl.annotate(table, DATABASES / "lipids_by_class.csv", ppm=5.0, polarity="positive")
    candidates = table.uns["annotation"]["candidates"]
    var = table.var.reset_index(drop=True)
    rows = []
    for _, ref in spamtp.iterrows():
        j = int(np.abs(var["mz"].to_numpy() - ref["raw_mz"]).argmin())
        ours = var.iloc[j]
        theirs = [f.strip() for f in str(ref["all_Formulas"]).split(";")]
        errors = [float(e) for e in str(ref["all_Errors"]).split(";")]
        feature = table.var_names[j]
        cands = candidates[candidates["feature"] == feature] if "feature" in candidates else None
        cand_formulas = set(cands["formula"]) if cands is not None else set()
        lipid = str(ref["Species.Name.Simple"]) != "nan"
        if ours["matrix"]:
            ours_what = f"DHB {ours['matrix_ion']}"
        elif ours["isotope"]:
            ours_what = f"M+{int(ours['isotope_number'])} of {ours['isotope_of']}"
        elif ours["annotation_name"]:
            ours_what = (
                f"{ours['annotation_name']} {ours['annotation_adduct']} "
                f"{ours['annotation_ppm']:+.1f}"
            )
        else:
            ours_what = "no lipid within 5 ppm"
        same_best = ours["annotation_formula"] in theirs and ours["annotation_adduct"] == "[M+K]+"
        if same_best:
            verdict = "same"
        elif any(f in cand_formulas for f in theirs):
            verdict = "SpaMTP's among ours"
        elif ours["matrix"] or ours["isotope"]:
            verdict = "we flag it"
        elif ours["annotation_name"]:
            verdict = "different"
        else:
            verdict = "only SpaMTP"
        ppm_theirs = [
            (ref["raw_mz"] - (Formula(f).isotope.mass + POTASSIUM_ION)) / ref["raw_mz"] * 1e6
            for f in theirs
        ]
        rows.append(
            {
                "mz": round(float(ref["raw_mz"]), 4),
                "ppm_spamtp_formula": round(min(ppm_theirs, key=abs), 1),
                "spamtp": (
                    f"{ref['Species.Name.Simple'] if lipid else theirs[0]} [M+K]+ "
                    f"{min(errors, key=abs):+.1f}"
                ),
                "spamtp_lipid": lipid,
                "spamtp_within_5ppm": min(abs(e) for e in errors) <= 5,
                "ours": ours_what,
                "verdict": verdict,
            }
        )
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(frame.to_string(index=False))
    counts = frame.groupby(["spamtp_lipid", "verdict"]).size()
    print(counts.to_string())
    lipids = pd.read_csv(DATABASES / "lipids_by_class.csv")
    chance = _chance_matches(sf, table, lipids, 5.0, polarity="positive")
    named = int((var["annotation_name"].astype(str) != "").sum())
    print(
        f"bladder: {named} of 79 annotated from {DATABASES.name}/lipids_by_class.csv within 5 ppm "
        f"(decoys shifted by ±0.15–0.45 m/z: {chance:.1f}); "
        f"{int(var['matrix'].sum())} DHB ions, {int(var['isotope'].sum())} isotope peaks; "
        f"SpaMTP named all 79 (15 ppm window), {int(frame['spamtp_lipid'].sum())} as lipids, "
        f"{int(frame['spamtp_within_5ppm'].sum())} within 5 ppm; agreement: "
        + ", ".join(f"{k} {v}" for k, v in frame["verdict"].value_counts().items())
    )
    return {"table": table, "comparison": frame, "chance": chance}


def main() -> int:
    if not I2NCA.is_dir() or not BLADDER.is_dir():
        print(f"shared data not found under {DATA} (set SPATIALFUSE_TEST_DATA)", file=sys.stderr)
        return 1
    warnings.simplefilter("ignore")
    import spatialfuse as sf

    results = profile_files(sf)
    consistency(results)
    recalibration(sf, results)
    bladder(sf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
