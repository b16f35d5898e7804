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
by molmass; nothing downloaded).
Part 3 runs the steps on real high-resolution *profile* spectra: two Bruker timsTOF MALDI
test acquisitions of imzy 0.3.0, converted to processed imzML (``imzml/bruker_timstof_imzy``,
see its SOURCE.txt): a human kidney section (negative mode, 342 px, m/z 400–2200, TOF steps
of 4–7 ppm) — peaks, lipids of the class list, picking on its full TOF grid with the MAD
noise against ``noise="counts"`` (and the alternatives tried), lock-mass recalibration with
held-out lipids (shift, linear, piecewise), and drift injected into the real spectra and
recovered — and a timsTOF fleX run whose stored profile is picked (both noise models) and
compared with Bruker's own line spectra (centroids) of the same pixels. The numbers are in
docs/spectra.md.

Usage::

    python benchmarks/bench_spectra_real.py            # parts 1-3
    python benchmarks/bench_spectra_real.py timstof    # part 3 only (about 3 minutes)
    python benchmarks/bench_spectra_real.py noise      # noise="auto" on every shared imzML
    # data from $SPATIALFUSE_TEST_DATA or ../shared/data
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPATIALFUSE_TEST_DATA", ROOT.parent / "shared" / "data"))
DATABASES = ROOT / "tests" / "data" / "spectra"
I2NCA = DATA / "imzml" / "galaxyp_i2nca"
BLADDER = DATA / "paired" / "bladder_spamtp"
TIMSTOF = DATA / "imzml" / "bruker_timstof_imzy"

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


# --------------------------------------------------------------------------- part 3: timsTOF

#: Lipids of kidney tissue seen as [M-H]- in negative-mode MALDI (neutral sum formulas,
#: written from the class rules of make_spectra_databases.py: LPE(C:D) = C(C+5)H(2C-2D+12)NO7P,
#: PA(C:D) = C(C+3)H(2C-2D+5)O8P, PE(C:D) = C(C+5)H(2C-2D+12)NO8P,
#: PS(C:D) = C(C+6)H(2C-2D+12)NO10P, PI(C:D) = C(C+9)H(2C-2D+17)O13P). Every one is the
#: best candidate of a picked kidney peak within 2 ppm of the class list, or (the three LPE)
#: within 5 ppm, where the file's calibration is 4-5 ppm off (see kidney_recalibration).
KIDNEY_LIPIDS = {
    "LPE(16:0)": "C21H44NO7P",
    "LPE(18:1)": "C23H46NO7P",
    "LPE(18:0)": "C23H48NO7P",
    "PA(34:1)": "C37H71O8P",
    "PA(36:2)": "C39H73O8P",
    "PA(36:1)": "C39H75O8P",
    "PE(34:2)": "C39H74NO8P",
    "PE(34:1)": "C39H76NO8P",
    "PA(38:4)": "C41H73O8P",
    "PE(36:4)": "C41H74NO8P",
    "PE(36:2)": "C41H78NO8P",
    "PE(36:1)": "C41H80NO8P",
    "PE(38:5)": "C43H76NO8P",
    "PE(38:4)": "C43H78NO8P",
    "PS(36:1)": "C42H80NO10P",
    "PI(34:1)": "C43H81O13P",
    "PI(36:4)": "C45H79O13P",
    "PI(36:2)": "C45H83O13P",
    "PI(36:1)": "C45H85O13P",
    "PI(38:5)": "C47H81O13P",
    "PI(38:4)": "C47H83O13P",
}
#: The kidney run's method is named "..._DMACA_...": read here as the matrix
#: 4-(dimethylamino)cinnamic acid (an assumption; the file does not state the matrix).
DMACA = "C11H13NO2"
#: The m/z range of the kidney table used for recalibration (the lipids above lie in it).
KIDNEY_RANGE = (440.0, 900.0)


def kidney_ions() -> pd.Series:
    """[M-H]- m/z of :data:`KIDNEY_LIPIDS` (molmass, electron included), sorted by m/z."""
    from spatialfuse._ions import adduct_shift, formula_mass

    shift = adduct_shift("[M-H]-")[0]
    ions = {name: formula_mass(f) + shift for name, f in KIDNEY_LIPIDS.items()}
    return pd.Series(ions).sort_values()


def tof_grid_table(sf, path: Path, mz_range: tuple[float, float] | None = None):
    """The processed profile file as a pixels × TOF-points table, exactly as written.

    The timsTOF TDF conversion writes every pixel's spectrum on the same TOF grid (the same
    index has the same m/z in every pixel: 321,043 distinct values over the 9,985,784 points
    written), zeros left out. An :class:`~spatialfuse.io.MzAxis` with one window per grid point
    (edges half-way to the neighbours) reads each point into its own column: the profile table
    a continuous file would give, sparse. (``read_imzml``'s default for a processed file merges
    peaks into at most 10,000 features, which is no profile; the fleX TSF file's grid moves
    with each pixel's temperature correction, so this works for the TDF file only.)
    """
    with sf.io.ImzMLReader(path) as reader:
        grid = np.unique(
            np.concatenate([mz for _a, _b, mz, _i, _n in reader.iter_chunks(chunk_spectra=64)])
        )
    if mz_range is not None:
        grid = grid[(grid >= mz_range[0]) & (grid <= mz_range[1])]
    mid = (grid[1:] + grid[:-1]) / 2
    lo = np.r_[grid[0] - (mid[0] - grid[0]), mid]
    hi = np.nextafter(np.r_[mid, grid[-1] + (grid[-1] - mid[-1])], -np.inf)
    axis = sf.io.MzAxis(grid, lo, hi, np.zeros(grid.size))
    return sf.io.read_imzml(path, mz=axis)


def _nearest_ppm(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|ppm| from each value to the nearest of ``reference``."""
    ref = np.sort(reference)
    i = np.clip(np.searchsorted(ref, values), 1, ref.size - 1)
    gap = np.minimum(np.abs(values - ref[i - 1]), np.abs(values - ref[i]))
    return gap / values * 1e6


def kidney_peaks(sf) -> dict:
    """Peaks of the kidney file (streamed from its path), named from the class list."""
    path = TIMSTOF / "kidney_tdf_profile.imzML"
    t = time.perf_counter()
    # The MAD on the path's own axis, as measured and documented (the default, noise="auto",
    # takes the counting noise for this ion-counting run: see kidney_noise_models).
    peaks = sf.pp.pick_peaks(path, snr=5, noise="nonzero")
    t = time.perf_counter() - t
    var = peaks.var
    fwhm_ppm = (var["fwhm"] / var["mz"] * 1e6).to_numpy()
    print(
        f"kidney (timsTOF, {peaks.n_obs} px): {peaks.n_vars} peaks at S/N 5 in {t:.1f} s; "
        f"FWHM median {np.median(fwhm_ppm):.1f} ppm (m/FWHM {np.median(1e6 / fwhm_ppm):,.0f}; "
        "the file's PeakWidthEstimateValue says 25 ppm)"
    )
    sf.pp.flag_isotopes(peaks)
    builtin = {
        m: int(sf.pp.flag_matrix(peaks, matrix=m, max_cluster=5, copy=True).var["matrix"].sum())
        for m in ("DHB", "CHCA", "9-AA", "DAN", "SA", "NEDC")
    }
    # the method is "..._DMACA_...": read as 4-(dimethylamino)cinnamic acid (an assumption)
    sf.pp.flag_matrix(peaks, matrix=DMACA, max_cluster=5)
    flagged = peaks.var[peaks.var["matrix"]]
    print(
        f"    matrix: built-in lists flag {builtin}; as {DMACA} (DMACA, assumed): "
        + ", ".join(
            f"{mz:.4f} {ion} {ppm:+.1f} ppm"
            for mz, ion, ppm in zip(
                flagged["mz"], flagged["matrix_ion"], flagged["matrix_ppm"], strict=True
            )
        )
    )
    lipids = DATABASES / "lipids_by_class.csv"
    sf.tl.annotate(peaks, lipids, ppm=5.0)
    named = _annotated(peaks)
    database = pd.read_csv(lipids)
    chance = _chance_matches(sf, peaks, database, 5.0)
    ions = kidney_ions()
    found = {}
    for name, ion in ions.items():
        ppm = (var["mz"].to_numpy() - ion) / ion * 1e6
        j = int(np.abs(ppm).argmin())
        found[name] = (float(var["mz"].iloc[j]), float(ppm[j]), float(var["frequency"].iloc[j]))
    print(
        f"    {len(named)} named from {lipids.name} within 5 ppm (decoys shifted by ±0.15–0.45 "
        f"m/z: {chance:.1f}); {int(peaks.var['isotope'].sum())} flagged as isotopes; polarity "
        f"{peaks.uns['annotation']['polarity']} ({peaks.uns['annotation']['polarity_source']})"
    )
    for name, (mz, ppm, freq) in found.items():
        print(
            f"    {name:10s} [M-H]- {ions[name]:9.4f}: picked {mz:9.4f} "
            f"({ppm:+.1f} ppm, {freq:.0%} px)"
        )
    return {
        "peaks": peaks,
        "named": named,
        "chance": chance,
        "found": found,
        "builtin_matrix": builtin,
    }


def _held_out(table, ions: pd.Series, names: list[str], ppm: float = 15.0) -> dict:
    """Errors at held-out lipids: per pixel (median |ppm|) and per ion (median over pixels).

    Measured as recalibrate measures its references: each pixel's peak within ``± ppm``.
    """
    from spatialfuse.pp._recalibrate import measure_errors

    errors = measure_errors(table, ions[names].to_numpy(), ppm=ppm)
    per_ion = np.nanmedian(errors, axis=0)
    return {
        "pixel_abs": float(np.nanmedian(np.abs(errors))),
        "ion_abs": float(np.median(np.abs(per_ion))),
        "ion_max": float(np.max(np.abs(per_ion))),
        "per_ion": dict(zip(names, per_ion.round(2), strict=True)),
    }


#: Models compared on the kidney: (label, recalibrate keywords).
KIDNEY_MODELS = (
    ("shift", {"model": "shift"}),
    ("linear", {"model": "linear"}),
    ("piecewise, 3 nodes", {"model": "piecewise", "n_nodes": 3}),
    ("piecewise, 5 nodes", {"model": "piecewise", "n_nodes": 5}),
)


def kidney_recalibration(sf, table=None) -> dict:
    """Lock masses = every other kidney lipid by m/z; the others held out."""
    if table is None:
        table = tof_grid_table(sf, TIMSTOF / "kidney_tdf_profile.imzML", KIDNEY_RANGE)
    ions = kidney_ions()
    lock, held = list(ions.index[0::2]), list(ions.index[1::2])
    rows = {"before": _held_out(table, ions, held)}
    for label, kwargs in KIDNEY_MODELS:
        t = time.perf_counter()
        out = sf.pp.recalibrate(
            table, reference_mz=ions[lock].tolist(), ppm=15.0, copy=True, **kwargs
        )
        info = out.uns["recalibration"]
        rows[label] = {
            **_held_out(out, ions, held),
            "refs_before": info["median_abs_ppm_before"],
            "refs_after": info["median_abs_ppm_after"],
            "pixels_by_model": info.get("pixels_by_model"),
            "seconds": time.perf_counter() - t,
        }
    print(
        f"kidney recalibration ({table.n_obs} px × {table.n_vars:,} TOF points, m/z "
        f"{KIDNEY_RANGE[0]:g}–{KIDNEY_RANGE[1]:g}): lock masses {', '.join(lock)}; held out "
        f"{', '.join(held)}"
    )
    for label, row in rows.items():
        refs = (
            f"refs {row['refs_before']:.2f} → {row['refs_after']:.2f} ppm; "
            if "refs_before" in row
            else ""
        )
        print(
            f"    {label:20s} {refs}held-out: per pixel {row['pixel_abs']:.2f} ppm, per ion "
            f"median {row['ion_abs']:.2f}, worst {row['ion_max']:.2f} ppm "
            f"({', '.join(f'{k} {v:+.2f}' for k, v in row['per_ion'].items())})"
            + (f"; {row['pixels_by_model']}" if row.get("pixels_by_model") else "")
        )
    return {"table": table, "rows": rows, "lock": lock, "held": held}


def inject_drift(table, drift, seed: int):
    """The table's spectra with ``drift(rng, mz)`` ppm added (a peak at m moves to m(1+d))."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    mz = table.var["mz"].to_numpy()
    x = sparse.csr_matrix(table.X)
    rows, applied = [], []
    for i in range(table.n_obs):
        d = drift(rng, mz)
        y = x[i].toarray().ravel()
        rows.append(sparse.csr_matrix(np.interp(mz / (1 + d * 1e-6), mz, y).astype(np.float32)))
        applied.append(d)
    out = table.copy()
    out.X = sparse.vstack(rows).tocsr()
    return out, np.array(applied)


def uniform_shift(rng, mz):
    """One offset per pixel, uniform in ±20 ppm."""
    return np.full(mz.size, rng.uniform(-20, 20))


def bend(rng, mz):
    """+15 → −10 → +5 ppm across m/z 450–885, × 0.6–1.4 and ± 5 ppm per pixel."""
    u = np.clip((mz - 450.0) / (885.0 - 450.0), 0, 1)
    return np.interp(u, [0, 0.5, 1], [15, -10, 5]) * rng.uniform(0.6, 1.4) + rng.uniform(-5, 5)


def kidney_injected(sf, table) -> dict:
    """Drift injected into the real kidney spectra, removed at the lock masses."""
    ions = kidney_ions()
    lock, held = list(ions.index[0::2]), list(ions.index[1::2])
    refs = ions[lock].tolist()
    out = {}
    drifted, applied = inject_drift(table, uniform_shift, 0)
    base = sf.pp.recalibrate(table, reference_mz=refs, ppm=40.0, copy=True)
    fixed = sf.pp.recalibrate(drifted, reference_mz=refs, ppm=40.0, copy=True)
    info = fixed.uns["recalibration"]
    recovered = fixed.obs["recalibration_ppm"].to_numpy() - base.obs["recalibration_ppm"].to_numpy()
    gap = np.abs(recovered - applied[:, 0])
    out["shift"] = {
        "refs_before": info["median_abs_ppm_before"],
        "refs_after": info["median_abs_ppm_after"],
        "gap_median": float(np.median(gap)),
        "gap_max": float(gap.max()),
        "r": float(np.corrcoef(recovered, applied[:, 0])[0, 1]),
        "held_before": _held_out(drifted, ions, held, ppm=40.0)["pixel_abs"],
        "held_after": _held_out(fixed, ions, held)["pixel_abs"],
    }
    print(
        f"kidney, ±20 ppm per pixel injected: refs {info['median_abs_ppm_before']:.1f} → "
        f"{info['median_abs_ppm_after']:.2f} ppm; recovered drift − injected: median "
        f"{out['shift']['gap_median']:.2f}, max {out['shift']['gap_max']:.1f} ppm "
        f"(r = {out['shift']['r']:.3f}); held-out per pixel {out['shift']['held_before']:.2f} → "
        f"{out['shift']['held_after']:.2f} ppm"
    )
    drifted, _ = inject_drift(table, bend, 1)
    held_drifted = _held_out(drifted, ions, held, ppm=40.0)["pixel_abs"]
    for label, kwargs in KIDNEY_MODELS:
        fixed = sf.pp.recalibrate(drifted, reference_mz=refs, ppm=40.0, copy=True, **kwargs)
        info = fixed.uns["recalibration"]
        out[f"bend, {label}"] = row = {
            "refs_before": info["median_abs_ppm_before"],
            "refs_after": info["median_abs_ppm_after"],
            "held_before": held_drifted,
            "held_after": _held_out(fixed, ions, held)["pixel_abs"],
        }
        print(
            f"kidney, bend injected, {label:20s}: refs {row['refs_before']:.2f} → "
            f"{row['refs_after']:.2f} ppm; held-out per pixel {row['held_before']:.2f} → "
            f"{row['held_after']:.2f} ppm"
        )
    return out


def _lipids_found(peaks_mz: np.ndarray, ions: np.ndarray, ppm: float = 5.0) -> int:
    """How many of ``ions`` lie within ``ppm`` of a picked m/z."""
    if peaks_mz.size == 0:
        return 0
    return int((_nearest_ppm(ions, peaks_mz) <= ppm).sum())


def kidney_noise_models(sf) -> dict:
    """Picking on the kidney's full TOF grid: the MAD noise, ``noise="counts"``, alternatives.

    The table is every written TOF point (342 × 321,043, sparse; what ``sf.pp.recalibrate``
    returns for this file). Today's noise (1.4826 × MAD of the mean's non-zero points) is
    there the floor of stray ions; ``noise="counts"`` tests each peak's sum over its window in
    one pixel under counting statistics; the same from the path (streamed, on the axis of
    every m/z the file holds) shows it does not depend on the table. Then what was tried and
    dropped, on the same mean spectrum: matched filtering (a Gaussian of the FWHM measured on
    the 20 strongest peaks) before the MAD, a width criterion (FWHM >= half that), and the
    counting noise of the *mean* of N pixels (variance g·mean/N).
    """
    from spatialfuse.pp._counting import count_unit, table_moments
    from spatialfuse.pp._peaks import centroid_peaks

    path = TIMSTOF / "kidney_tdf_profile.imzML"
    ions = kidney_ions().to_numpy()
    table = tof_grid_table(sf, path)
    out = {}

    def row(label, peaks_mz, seconds=None, extra=""):
        found = _lipids_found(peaks_mz, ions)
        out[label] = {"n_peaks": int(peaks_mz.size), "lipids": found}
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        print(
            f"    {label:44s} {peaks_mz.size:6,d} peaks{took}; "
            f"lipids within 5 ppm {found}/21{extra}"
        )

    print(f"kidney, full TOF grid ({table.n_obs} px × {table.n_vars:,} points), S/N 5 unless said:")
    for label, kwargs in (
        ("MAD of the mean (noise='nonzero')", {"snr": 5, "noise": "nonzero"}),
        ("the MAD + min_frequency=0.5", {"snr": 5, "noise": "nonzero", "min_frequency": 0.5}),
        ("noise='auto' (the default), S/N 5", {"snr": 5}),
        ("noise='counts', S/N 5", {"snr": 5, "noise": "counts"}),
        ("noise='counts', S/N 3", {"snr": 3, "noise": "counts"}),
    ):
        t = time.perf_counter()
        peaks = sf.pp.pick_peaks(table, **kwargs)
        t = time.perf_counter() - t
        info = peaks.uns["peaks"]
        extra = (
            f" (count unit {info['count_unit']:.0f}; frequency median "
            f"{peaks.var['frequency'].median():.2f}, min {peaks.var['frequency'].min():.2f})"
            if info["noise_model"] == "counts"
            else f" (noise {info['noise']:.1f})"
        )
        row(label, peaks.var["mz"].to_numpy(), t, extra)
        if info["noise_model"] == "counts":
            mz = peaks.var["mz"].to_numpy()
            missed = [
                n
                for n, ion in kidney_ions().items()
                if mz.size == 0 or _nearest_ppm(np.array([ion]), mz)[0] > 5
            ]
            if missed:
                print(f"        not picked: {', '.join(missed)}")
    for snr in (5.0, 3.0):
        t = time.perf_counter()
        peaks = sf.pp.pick_peaks(path, snr=snr, noise="counts")
        t = time.perf_counter() - t
        row(f"noise='counts', S/N {snr:g}, from the path", peaks.var["mz"].to_numpy(), t)
    # Tried and dropped, on the same mean spectrum.
    mz = table.var["mz"].to_numpy()
    mean, squares, hits = table_moments(table.X)
    today = centroid_peaks(mz, mean, snr=5)
    step = np.gradient(mz)
    strongest = np.argsort(today.height)[-20:]
    width = float(np.median(today.fwhm[strongest] / step[today.index[strongest]]))
    smooth = ndimage.gaussian_filter1d(mean, width / 2.3548)
    row(f"matched filter (Gaussian, FWHM {width:.1f} points)", centroid_peaks(mz, smooth, snr=5).mz)
    wide = today.fwhm / step[today.index] >= width / 2
    row(f"width criterion (FWHM >= {width / 2:.1f} points)", today.mz[wide])
    unit = count_unit(mean, squares, hits, table.n_obs)
    level = today.level
    every = centroid_peaks(mz, mean, snr=1e-9)
    of_mean = (every.height - level) / np.sqrt(unit * every.height / table.n_obs)
    row("counting noise of the mean (g·mean/N)", every.mz[of_mean >= 5])
    return out


def flex_vs_bruker(sf, snrs=(5.0, 3.0, 2.0), noises=("nonzero", "counts")) -> dict:
    """Peaks of the fleX profile (streamed) against Bruker's line spectra of the same pixels."""
    bruker = sf.io.read_imzml(TIMSTOF / "fleX_tsf_bruker_centroids.imzML")
    frequency = np.asarray((bruker.X > 0).mean(axis=0)).ravel()
    features = bruker.var["mz"].to_numpy()
    frequent = features[frequency >= 0.1]
    out = {}
    for noise in noises:
        for snr in snrs:
            peaks = sf.pp.pick_peaks(TIMSTOF / "fleX_tsf_profile.imzML", snr=snr, noise=noise)
            ours = peaks.var["mz"].to_numpy()
            gaps = _nearest_ppm(ours, features) if ours.size else np.empty(0)
            key = snr if noise == "nonzero" else (noise, snr)
            out[key] = {
                "n_peaks": peaks.n_vars,
                "precision": float((gaps <= 5).mean()) if gaps.size else float("nan"),
                "median_ppm": float(np.median(gaps)) if gaps.size else float("nan"),
                "recall": float((_nearest_ppm(frequent, ours) <= 5).mean()) if ours.size else 0.0,
                "peaks": peaks,
            }
            print(
                f"fleX profile ({peaks.n_obs} px) at S/N {snr:g}, noise={noise!r}: "
                f"{peaks.n_vars} peaks, {out[key]['precision']:.0%} within 5 ppm of a Bruker "
                f"centroid feature (median {out[key]['median_ppm']:.1f} ppm); of Bruker's "
                f"{frequent.size} features found in >= 10 % of {bruker.n_obs} pixels, "
                f"{out[key]['recall']:.0%} picked"
            )
    return out


def flex_centroid_recalibration(sf) -> dict:
    """Bruker's own line spectra of the fleX run recalibrated from the path (own references)."""
    path = TIMSTOF / "fleX_tsf_bruker_centroids.imzML"
    out = {}
    for label, kwargs in KIDNEY_MODELS:
        table = sf.pp.recalibrate(path, n_references=10, ppm=15.0, **kwargs)
        info = table.uns["recalibration"]
        out[label] = {
            "refs_before": info["median_abs_ppm_before"],
            "refs_after": info["median_abs_ppm_after"],
            "n_found": float(table.obs["recalibration_n_found"].median()),
            "pixels_by_model": info.get("pixels_by_model"),
            "n_features": table.n_vars,
        }
        print(
            f"fleX Bruker centroids ({table.n_obs} px), own 10 references, {label}: "
            f"{info['median_abs_ppm_before']:.2f} → {info['median_abs_ppm_after']:.2f} ppm; "
            f"median {out[label]['n_found']:.0f} references found a pixel; "
            f"{table.n_vars} features"
            + (f"; {info['pixels_by_model']}" if info.get("pixels_by_model") else "")
        )
    return out


def timstof(sf) -> dict:
    """Part 3, in order: kidney peaks, recalibration, injected drift; fleX vs Bruker."""
    results = {"peaks": kidney_peaks(sf)}
    results["noise_models"] = kidney_noise_models(sf)
    table = tof_grid_table(sf, TIMSTOF / "kidney_tdf_profile.imzML", KIDNEY_RANGE)
    results["recalibration"] = kidney_recalibration(sf, table)
    results["injected"] = kidney_injected(sf, table)
    results["flex"] = flex_vs_bruker(sf)
    results["flex_centroids"] = flex_centroid_recalibration(sf)
    return results


#: Each shared imzML file labelled without the detector, from its cvParams and SOURCE.txt:
#: "counts" (TOF ion counts on every digitizer point), "not", or "unknown", with the reason.
NOISE_LABELS = {
    "bruker_timstof_imzy/kidney_tdf_profile": ("counts", "timsTOF TDF profile, libtimsdata sums"),
    "bruker_timstof_imzy/fleX_tsf_profile": ("counts", "timsTOF fleX TSF profile, libtimsdata"),
    "bruker_timstof_imzy/fleX_tsf_bruker_centroids": ("not", "Bruker's centroids (MS:1000127)"),
    "bladder_spamtp/mouse_bladder_79peaks": ("not", "Orbitrap, 79 centroided peaks"),
    "pyimzML_examples/Example_Continuous": ("not", "LTQ FT Ultra, ion trap (MS:1000264)"),
    "pyimzML_examples/Example_Processed": ("not", "LTQ FT Ultra, ion trap (MS:1000264)"),
    "galaxyp_cardinal/Example_Processed": ("not", "LTQ FT Ultra, ion trap (MS:1000264)"),
    "galaxyp_cardinal/out6": ("unknown", "Cardinal's Analyze 7.5 test data as is; no instrument"),
    "galaxyp_cardinal/preprocessing_results4": ("not", "Cardinal preprocessing of the Analyze75"),
    "galaxyp_i2nca/pp_test2": ("unknown", "i2nca 50-ppm binning; no instrument stated"),
    "galaxyp_i2nca/pp_test4": ("not", "i2nca + m2aia: TIC, log2, median baseline, SG smoothing"),
    "galaxyp_maldiquant/outfile1": ("not", "MALDIquant output of the imzML.org example"),
    "galaxyp_maldiquant/peak_detection4": ("not", "MALDIquant peak detection (centroids)"),
}


def noise_label(path: Path) -> tuple[str, str]:
    """The independent label of a shared imzML file (:data:`NOISE_LABELS`, else by folder)."""
    key = f"{path.parent.name}/{path.stem}"
    if key in NOISE_LABELS:
        return NOISE_LABELS[key]
    if path.parent.name == "galaxyp_i2nca":
        return "not", "i2nca conversion declared centroid (MS:1000127)"
    if path.parent.name == "galaxyp_cardinal":
        return "not", "Cardinal output derived from the imzML.org ion-trap example"
    return "unknown", "not labelled"


def noise_choice(sf) -> dict:
    """noise="auto" on every shared imzML file against its label: the confusion table."""
    from spatialfuse.pp import _counting

    files = sorted([*DATA.glob("imzml/*/*.imz[mM][lL]"), *DATA.glob("paired/*/*.imzML")])
    rows = []
    for path in files:
        label, why = noise_label(path)
        t = time.perf_counter()
        with sf.io.ImzMLReader(path) as reader:
            whole, _declared = _counting.sample_checks(reader)
            moments = _counting.reader_moments(reader, 5.0)
            n = reader.n_spectra
            full, _ = _counting.reader_evidence(reader, 5.0)
        blind = _counting.detect_counts(*moments, n, whole_share=whole, declared={})
        rows.append(
            {
                "file": f"{path.parent.name}/{path.name}",
                "label": label,
                "auto": "counts" if full.counts else "not",
                "data only": "counts" if blind.counts else "not",
                "px": n,
                "whole": whole,
                "grid": blind.grid_share,
                "floor": blind.floor_hit_share,
                "g/pulse": blind.unit_over_pulse,
                "slope": blind.slope,
                "reason": full.reason,
                "label source": why,
                "s": time.perf_counter() - t,
            }
        )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_colwidth", 70):
        print(table.drop(columns=["label source"]).to_string(index=False, float_format="%.3g"))
    for column in ("auto", "data only"):
        print(f"\nconfusion, {column!r} (rows: label, columns: decision)")
        print(pd.crosstab(table["label"], table[column]).to_string())
    return {"table": table}


def main() -> int:
    warnings.simplefilter("ignore")
    import spatialfuse as sf

    if sys.argv[1:] == ["noise"]:
        noise_choice(sf)
        return 0
    only_timstof = sys.argv[1:] == ["timstof"]
    if not only_timstof:
        if not I2NCA.is_dir() or not BLADDER.is_dir():
            print(
                f"shared data not found under {DATA} (set SPATIALFUSE_TEST_DATA)", file=sys.stderr
            )
            return 1
        results = profile_files(sf)
        consistency(results)
        recalibration(sf, results)
        bladder(sf)
    if TIMSTOF.is_dir():
        timstof(sf)
    elif only_timstof:
        print(f"{TIMSTOF} not found (set SPATIALFUSE_TEST_DATA)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
