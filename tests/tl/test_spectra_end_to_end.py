"""Issue 16's synthetic accuracy targets, end to end: profile spectra of planted ions (isotope
patterns from molmass), DHB matrix ions and ±20 ppm per-pixel drift → recalibrate on the DHB
ions → pick peaks → flag matrix and isotopes → annotate.

Targets (issue 16, "Measured"): peak recall and precision ≥ 0.95, median m/z error after
recalibration ≤ 1 ppm, top-1 annotation of planted formulas ≥ 0.95 where unambiguous.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf
from spatialfuse._ions import adduct_shift, isotope_pattern

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pp"))
from spectra_data import profile_axis, profile_table  # tests/pp/spectra_data.py

ANALYTES = {
    "PC(34:1)": "C42H82NO8P",
    "PC(32:0)": "C40H80NO8P",
    "PE(38:4)": "C43H78NO8P",
    "SM(d34:1)": "C39H79N2O6P",
    "cholesterol": "C27H46O",
    "palmitic acid": "C16H32O2",
    "glutamate": "C5H9NO4",
    "carnitine": "C7H15NO3",
    "creatine": "C4H9N3O2",
    "spermidine": "C7H19N3",
    "heme": "C34H32FeN4O4",
    "AMP": "C10H14N5O7P",
}
ADDUCT_ELEMENTS = ["[M+H]+", "[M+Na]+", "[M+K]+"]
DHB_LOCK = np.array([137.0233, 155.0339, 177.0158, 273.0394])  # [DHB−H2O+H]+ … [2DHB−2H2O+H]+
PPM_MATCH = 3.0


def _planted(rng):
    """Planted peaks: (m/z, height, kind, name, formula, adduct, isotope number)."""
    import molmass

    rows = []
    for name, formula in ANALYTES.items():
        adduct = str(rng.choice(ADDUCT_ELEMENTS))
        ion = molmass.Formula(formula).monoisotopic_mass + adduct_shift(adduct)[0]
        # M, M+1, M+2 as molmass computes them (adduct atoms included; heme's ⁵⁴Fe peak 2 u
        # below M is left out).
        offsets, ratios = isotope_pattern(formula, adduct)
        height = rng.uniform(300, 1000)
        for k, (offset, ratio) in enumerate(zip(offsets, ratios, strict=True)):
            rows.append((ion + offset, height * ratio, "analyte", name, formula, adduct, k))
    for lock in DHB_LOCK:
        rows.append((lock, rng.uniform(500, 1500), "matrix", "DHB", "", "", 0))
    table = pd.DataFrame(rows, columns=["mz", "height", "kind", "name", "formula", "adduct", "k"])
    return table.sort_values("mz").reset_index(drop=True)


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(25)
    planted = _planted(rng)
    assert np.diff(planted["mz"]).min() > 0.05  # resolvable at resolving power 15,000
    drift = rng.uniform(-20, 20, 10)
    # Each ion has its own spatial pattern, shared by its isotopologues.
    pattern = rng.uniform(0.4, 1.6, (10, planted["name"].nunique()))
    column = planted["name"].astype("category").cat.codes.to_numpy()
    profile = profile_table(
        abundance=pattern[:, column],
        peaks=planted["mz"].to_numpy(),
        heights=planted["height"].to_numpy(),
        n_pixels=10,
        drift_ppm=drift,
        mz=profile_axis(120.0, 900.0, 10.0),
        baseline=5.0,
        seed=1,
    )
    profile.uns["spatialfuse"] = {"polarity": "positive"}
    before = sf.pp.pick_peaks(profile, snr=8, baseline_window=301)
    sf.pp.recalibrate(profile, reference_mz=DHB_LOCK, ppm=40)
    peaks = sf.pp.pick_peaks(profile, snr=8, baseline_window=301)
    sf.pp.flag_matrix(peaks, matrix="DHB")
    sf.pp.flag_isotopes(peaks)
    db = pd.DataFrame({"name": list(ANALYTES), "formula": list(ANALYTES.values())})
    sf.tl.annotate(peaks, db, ppm=5)
    return planted, drift, profile, before, peaks


def _nearest_ppm(found, truth):
    nearest = found[np.abs(found[None, :] - truth[:, None]).argmin(axis=1)]
    return (nearest - truth) / truth * 1e6


def test_recalibration_removes_the_drift(run):
    _, drift, profile, _, _ = run
    np.testing.assert_allclose(profile.obs["recalibration_ppm"], drift, atol=1.0)
    assert profile.uns["recalibration"]["median_abs_ppm_after"] < 1.0


def test_peak_recall_precision_and_mz_error(run):
    planted, _, _, before, peaks = run
    mz = peaks.var["mz"].to_numpy()
    # Detectable: planted at least 10× the noise of the mean of 10 pixels (σ = 1/√10).
    detectable = planted[planted["height"] >= 10 / np.sqrt(10)]
    error = _nearest_ppm(mz, detectable["mz"].to_numpy())
    recall = (np.abs(error) <= PPM_MATCH).mean()
    precision = (np.abs(_nearest_ppm(planted["mz"].to_numpy(), mz)) <= PPM_MATCH).mean()
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision
    assert np.median(np.abs(error)) <= 1.0
    # Monoisotopic peaks (isotopologue clusters of K/Fe adducts are mass-weighted blends).
    mono = planted[planted["k"] == 0]
    assert np.median(np.abs(_nearest_ppm(mz, mono["mz"].to_numpy()))) <= 1.0
    # Without recalibration the same picking is worse: the drift smears the mean spectrum.
    unaligned = _nearest_ppm(before.var["mz"].to_numpy(), detectable["mz"].to_numpy())
    assert np.median(np.abs(unaligned)) > 5 * np.median(np.abs(error))
    assert (np.abs(unaligned) <= PPM_MATCH).mean() < recall


def test_matrix_and_isotope_flags(run):
    planted, _, _, _, peaks = run
    var = peaks.var
    mz = var["mz"].to_numpy()

    def feature(value):
        i = int(np.abs(mz - value).argmin())
        return var.index[i] if abs(mz[i] - value) / value * 1e6 <= PPM_MATCH else None

    matrix = [feature(v) for v in planted.loc[planted["kind"] == "matrix", "mz"]]
    assert all(f is not None and var.loc[f, "matrix"] for f in matrix)
    analytes = planted[planted["kind"] == "analyte"]
    mono = [feature(v) for v in analytes.loc[analytes["k"] == 0, "mz"]]
    assert not any(var.loc[f, "matrix"] for f in mono if f is not None)
    assert not any(var.loc[f, "isotope"] for f in mono if f is not None)
    m1 = analytes[analytes["k"] == 1]
    right = 0
    for (_, row), parent in zip(m1.iterrows(), mono, strict=True):
        f = feature(row["mz"])
        right += f is not None and var.loc[f, "isotope_of"] == parent
    assert right / len(m1) >= 0.9, right


def test_annotation_top1(run):
    planted, _, _, _, peaks = run
    var = peaks.var
    mz = var["mz"].to_numpy()
    mono = planted[(planted["kind"] == "analyte") & (planted["k"] == 0)]
    right, unambiguous = 0, 0
    for _, row in mono.iterrows():
        i = int(np.abs(mz - row["mz"]).argmin())
        if var["annotation_n_candidates"].iloc[i] != 1:
            continue
        unambiguous += 1
        right += (var["annotation_formula"].iloc[i], var["annotation_adduct"].iloc[i]) == (
            row["formula"],
            row["adduct"],
        )
    assert unambiguous >= 0.8 * len(mono)
    assert right / unambiguous >= 0.95
    # Isotope peaks and matrix ions are not named as analytes here.
    named = var[var["annotation_name"] != ""]
    assert not named["matrix"].any()
    # The planted M, M+1, M+2 are the pattern molmass computes: the isotope score says so.
    assert named["annotation_isotope_score"].min() > 0.99
