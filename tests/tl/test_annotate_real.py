"""Annotation of real files against the committed databases (benchmarks/bench_spectra_real.py).

The databases (tests/data/spectra) are written by benchmarks/make_spectra_databases.py from
formulas alone; the real files come from ../shared/data and the tests that read them skip where
it is absent.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf

ROOT = Path(__file__).resolve().parents[2]
DATABASES = ROOT / "tests" / "data" / "spectra"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_databases_are_what_the_script_writes():
    """Every mass is molmass' for its formula, and the class rules give the textbook species."""
    make = _module("make_spectra_databases")
    for name, frame in (
        ("lipids_by_class.csv", make.lipids()),
        ("metabolites_negative.csv", make.metabolites()),
    ):
        committed = pd.read_csv(DATABASES / name)
        pd.testing.assert_frame_equal(committed, frame, check_exact=False, rtol=1e-12)
        assert committed["source"].str.len().min() > 10  # each row says where it came from
    lipids = pd.read_csv(DATABASES / "lipids_by_class.csv").set_index("name")
    assert lipids.loc["PC(34:1)", "formula"] == "C42H82NO8P"
    assert lipids.loc["SM(d34:1)", "formula"] == "C39H79N2O6P"


@pytest.fixture(scope="module")
def bench(shared_data):
    module = _module("bench_spectra_real")
    module.I2NCA = shared_data / "imzml" / "galaxyp_i2nca"
    module.BLADDER = shared_data / "paired" / "bladder_spamtp"
    if not module.I2NCA.is_dir() or not module.BLADDER.is_dir():
        pytest.skip("the i2nca files or the bladder are not in the shared data")
    return module


def test_real_negative_mode_metabolites_are_found_in_i2nca_data(bench, capsys):
    """cp_test3 (4 px, negative mode as the file states): six ions of the list within 15 ppm,
    none of the decoys (the list shifted by ±0.15–0.45 m/z) on average."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = bench.profile_files(sf)
    found = results["cp_test3.imzml"]["named"]
    assert found["annotation_adduct"].str.endswith("-").all()  # polarity from the file
    names = set(found["annotation_name"])
    expected = {"aspartic acid", "glucose", "xanthine", "sodium chloride (NaCl2- as [M+Cl]-)"}
    assert expected <= names, names
    assert len(found) >= 6 and found["annotation_ppm"].abs().max() < 15
    assert results["cp_test3.imzml"]["chance"] < 1
    assert results["cp_test3.imzml"]["peaks"].n_vars > 150


def test_bladder_lipids_agree_with_spamtp_where_both_name_them(bench, capsys):
    """The 79 bladder peaks: 29 of SpaMTP's 41 lipid names are our best candidates too, its
    DHB-cluster and M+1 'natural products' are flagged, and SM(d34:1) is found as three adducts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = bench.bladder(sf)
    comparison = out["comparison"].set_index("mz")
    lipid = comparison[comparison["spamtp_lipid"]]
    assert (lipid["verdict"] == "same").sum() >= 29
    assert (comparison["verdict"] == "we flag it").sum() >= 14  # 5 DHB clusters, 9 M+1
    assert out["chance"] < 3
    var = out["table"].var.set_index("mz")
    mz = var.index.to_numpy()
    for target, adduct in ((703.5747, "[M+H]+"), (725.5566, "[M+Na]+"), (741.5306, "[M+K]+")):
        row = var.iloc[int(np.abs(mz - target).argmin())]
        assert row["annotation_name"] == "SM(d34:1)" and row["annotation_adduct"] == adduct
