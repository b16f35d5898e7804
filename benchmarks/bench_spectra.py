"""The numbers of docs/spectra.md: peak picking, recalibration, annotation, matrix and isotope flags
on synthetic spectra (tests/pp/spectra_data.py) and on the real files of ../shared/data.

Usage::

    python benchmarks/bench_spectra.py    # data from $SPATIALFUSE_TEST_DATA or ../shared/data
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


def synthetic(sf, profile_table, peaks, ppm_error) -> None:
    from spatialfuse.pp._recalibrate import measure_errors

    table = profile_table(n_pixels=12)
    t = time.perf_counter()
    picked = sf.pp.pick_peaks(table, snr=5, baseline_window=201)
    t = time.perf_counter() - t
    err = np.abs(ppm_error(picked.var["mz"].to_numpy(), peaks))
    print(
        f"synthetic pick: {picked.n_vars} peaks of {peaks.size} planted; |error| max "
        f"{err.max():.3f} ppm, median {np.median(err):.3f} ppm; {t:.2f} s for 12 px × "
        f"{table.n_vars} points"
    )
    drift = np.random.default_rng(5).uniform(-20, 20, 16)
    drifted = profile_table(drift_ppm=drift, n_pixels=16)
    out = sf.pp.recalibrate(drifted, reference_mz=peaks[[0, 2, 4, 6]], copy=True)
    info = out.uns["recalibration"]
    held = peaks[[1, 3, 5, 7]]
    before = np.nanmedian(np.abs(measure_errors(drifted, held)))
    after = np.nanmedian(np.abs(measure_errors(out, held)))
    estimate_err = np.abs(out.obs["recalibration_ppm"].to_numpy() - drift).max()
    print(
        f"synthetic recalibration (lock masses, ±20 ppm): references "
        f"{info['median_abs_ppm_before']:.2f} → {info['median_abs_ppm_after']:.2f} ppm; held-out "
        f"{before:.2f} → {after:.2f} ppm; drift estimated within {estimate_err:.2f} ppm"
    )
    own = sf.pp.recalibrate(drifted, n_references=5, copy=True)
    est = own.obs["recalibration_ppm"].to_numpy()
    relative = np.abs((est - est.mean()) - (drift - drift.mean())).max()
    print(
        f"synthetic recalibration (own peaks): relative drift within {relative:.2f} ppm; "
        f"{own.uns['recalibration']['median_abs_ppm_after']:.2f} ppm after"
    )


def cardinal(sf) -> None:
    from pyimzml.ImzMLParser import ImzMLParser

    folder = DATA / "imzml" / "galaxyp_cardinal"
    parser = ImzMLParser(str(folder / "preprocessing_results2.imzml"))
    theirs = np.asarray(parser.getspectrum(0)[0], dtype=np.float64)
    used = np.zeros(theirs.size, dtype=bool)
    for i in range(len(parser.coordinates)):
        used |= np.asarray(parser.getspectrum(i)[1]) > 0
    theirs = theirs[used]
    t = time.perf_counter()
    picked = sf.pp.pick_peaks(folder / "123_combined.imzml", snr=10)
    t = time.perf_counter() - t
    ours = picked.var["mz"].to_numpy()
    to_ours = np.abs(theirs[:, None] - ours[None]).min(axis=1)
    to_theirs = np.abs(ours[:, None] - theirs[None]).min(axis=1)
    print(
        f"real Cardinal 123_combined (12 px × 8,399 profile points): {ours.size} peaks in "
        f"{t:.2f} s; Cardinal's peak picking {theirs.size} features; "
        f"{100 * (to_ours < 0.1).mean():.1f} % of theirs within 0.1 m/z of ours, "
        f"{100 * (to_theirs < 0.1).mean():.1f} % of ours within 0.1 of theirs; "
        f"median |Δ| {np.median(to_ours):.4f} m/z"
    )


def real_recalibration(sf) -> None:
    table = sf.io.read_imzml(DATA / "imzml/galaxyp_cardinal/out6.imzml", pixel_size_um=100)
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    mz = table.var["mz"].to_numpy()
    injected = np.array([-20, -10, -5, 0, 5, 10, 15, 20, -15.0])
    moved = table.copy()
    rows = [np.interp(mz * (1 - d * 1e-6), mz, r) for d, r in zip(injected, x, strict=True)]
    moved.X = np.stack(rows).astype(np.float32)
    native = sf.pp.recalibrate(table, copy=True)
    refs = native.uns["recalibration"]["reference_mz"]
    out = sf.pp.recalibrate(moved, reference_mz=refs, copy=True)
    rec = out.obs["recalibration_ppm"].to_numpy() - native.obs["recalibration_ppm"].to_numpy()
    info = out.uns["recalibration"]
    worst = np.abs(rec - injected).max()
    print(
        f"real out6 (9 TOF px, injected ±20 ppm): recovered within {worst:.2f}"
        f" ppm (median {np.median(np.abs(rec - injected)):.2f}, r = "
        f"{np.corrcoef(rec, injected)[0, 1]:.3f}); median |error| "
        f"{info['median_abs_ppm_before']:.2f} → {info['median_abs_ppm_after']:.2f} ppm"
    )
    example = sf.io.read_imzml(DATA / "imzml/pyimzML_examples/Example_Continuous.imzML")
    info = sf.pp.recalibrate(example, copy=True).uns["recalibration"]
    print(
        f"real Example_Continuous (own peaks; axis step 0.083 m/z): median |error| "
        f"{info['median_abs_ppm_before']:.1f} → {info['median_abs_ppm_after']:.1f} ppm"
    )


def bladder(sf) -> None:
    folder = DATA / "paired" / "bladder_spamtp"
    meta = pd.read_csv(folder / "DERIVED_bladder_feature_metadata.csv", index_col=0)
    pairs = [
        (mz, formula, float(error))
        for mz, formulas, errors in zip(
            meta["raw_mz"], meta["all_Formulas"], meta["all_Errors"], strict=True
        )
        for formula, error in zip(str(formulas).split("; "), str(errors).split("; "), strict=True)
    ]
    names = [f for _, f, _ in pairs]
    db = pd.DataFrame({"name": names, "formula": names}).drop_duplicates()
    adata = sf.io.read_imzml(folder / "mouse_bladder_79peaks.imzML")
    t = time.perf_counter()
    sf.tl.annotate(adata, db, ppm=15)
    t = time.perf_counter() - t
    cand = adata.uns["annotation"]["candidates"]
    mz = adata.var["mz"].to_numpy()
    diffs = []
    for observed, formula, error in pairs:
        feature = adata.var_names[np.argmin(np.abs(mz - observed))]
        hit = cand[
            (cand["feature"] == feature)
            & (cand["formula"] == formula)
            & (cand["adduct"] == "[M+K]+")
        ]
        diffs.append(abs(hit["ppm"].iloc[0]) - error)
    top_k = int((adata.var["annotation_adduct"] == "[M+K]+").sum())
    print(
        f"real bladder annotate: {len(diffs)}/{len(pairs)} SpaMTP (formula, [M+K]+) matches, "
        f"max |Δppm| {np.abs(diffs).max():.4f}; {len(cand)} candidates (polarity "
        f"{adata.uns['annotation']['polarity']}); best adduct [M+K]+ for {top_k}/79; "
        f"{1000 * t:.0f} ms"
    )
    sf.pp.flag_matrix(adata, matrix="DHB", max_cluster=5)
    sf.pp.flag_isotopes(adata)
    var = adata.var
    flagged = var[var["matrix"]]
    print(
        "real bladder DHB ions:",
        dict(zip(flagged["mz"].round(4), flagged["matrix_ion"], strict=False)),
    )
    iso = var[var["isotope"]]
    print("real bladder isotopes:", dict(zip(iso.index, iso["isotope_of"], strict=True)))


def main() -> None:
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "tests" / "pp"))
    from spectra_data import PEAKS, ppm_error, profile_table

    import spatialfuse as sf

    synthetic(sf, profile_table, PEAKS, ppm_error)
    if not DATA.is_dir():
        print(f"real files skipped: {DATA} not found (set SPATIALFUSE_TEST_DATA)")
        return
    cardinal(sf)
    real_recalibration(sf)
    bladder(sf)


if __name__ == "__main__":
    main()
