"""sf.pl.spectrum and sf.pl.recalibration draw the values the spectra functions wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pp"))
from spectra_data import PEAKS, profile_table


@pytest.fixture(scope="module")
def processed():
    table = profile_table(n_pixels=16, drift_ppm=np.linspace(-8, 8, 16))
    sf.pp.recalibrate(table, n_references=5)
    peaks = sf.pp.pick_peaks(table)
    peaks.uns["recalibration"] = table.uns["recalibration"]
    database = pd.DataFrame({"name": ["PC(34:1)"], "mass": [PEAKS[0] - 1.007276]})
    sf.tl.annotate(peaks, database, adducts=["[M+H]+"], polarity="positive")
    return peaks


def test_spectrum_marks_each_picked_peak_and_names_the_annotated_one(processed):
    fig = sf.pl.spectrum(processed, n_labels=3)
    ax = fig.axes[0]
    dots = ax.collections[0].get_offsets()
    np.testing.assert_allclose(dots[:, 0], processed.var["mz"])
    np.testing.assert_allclose(dots[:, 1], processed.var["intensity"])
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == 3 and labels[0] == f"PC(34:1)\n{processed.var['mz'].iloc[0]:.4f}"
    line = ax.lines[0].get_xydata()
    np.testing.assert_allclose(line[:, 0], processed.uns["peaks"]["reference_mz"])


def test_recalibration_bars_are_the_errors_before_and_after(processed):
    info = processed.uns["recalibration"]
    fig = sf.pl.recalibration(processed)
    heights = [p.get_height() for p in fig.axes[0].patches]
    n = len(info["reference_mz"])
    np.testing.assert_allclose(heights[:n], info["ppm_before"])
    np.testing.assert_allclose(heights[n:], info["ppm_after"])
    assert "→" in fig.axes[0].get_title()


def test_without_the_entry_the_error_says_which_function_writes_it(processed):
    bare = processed.copy()
    del bare.uns["peaks"], bare.uns["recalibration"]
    with pytest.raises(ValueError, match=r"no 'peaks' entry from sf\.pp\.pick_peaks"):
        sf.pl.spectrum(bare)
    with pytest.raises(ValueError, match=r"no 'recalibration' entry from sf\.pp\.recalibrate"):
        sf.pl.recalibration(bare)
