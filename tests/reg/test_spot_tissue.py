"""In-tissue spots of a real Visium folder lie on its tissue; swapped pixel columns do not."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

import spatialfuse as sf
from spatialfuse.errors import FileFormatError
from spatialfuse.workflow._config import Modality
from spatialfuse.workflow._steps import read_modality

CYTASSIST = "cytassist_ffpe_mouse_brain"  # 4,992 positions, 2,310 in tissue, hires image


def _folder(copy, *, swap: bool) -> Path:
    folder = copy(f"visium/{CYTASSIST}")
    if swap:
        path = folder / "spatial" / "tissue_positions.csv"
        frame = pd.read_csv(path)
        columns = ["pxl_row_in_fullres", "pxl_col_in_fullres"]
        frame[columns] = frame[columns[::-1]].to_numpy()
        frame.to_csv(path, index=False)
    return folder


def _read(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sf.io.read_visium(folder, require_counts=False)


def test_real_folder_spots_lie_on_tissue(writable_shared_copy):
    check = sf.reg.spots_on_tissue(_read(_folder(writable_shared_copy, swap=False)))
    assert check["status"] == "ok"
    assert check["n_spots"] == 2310
    assert check["fraction"] > 0.95  # 0.975 measured
    assert check["off_tissue_fraction"] < 0.01  # 0.000 measured


def test_swapped_pixel_columns_put_spots_off_tissue(writable_shared_copy):
    check = sf.reg.spots_on_tissue(_read(_folder(writable_shared_copy, swap=True)))
    assert check["status"] == "error"
    assert check["fraction"] < 0.85  # 0.80 measured
    assert check["off_tissue_fraction"] > 0.05  # 0.15 measured
    assert "swapped" in check["detail"]


def test_the_pipeline_refuses_positions_that_do_not_match_the_image(
    writable_shared_copy, monkeypatch
):
    folder = _folder(writable_shared_copy, swap=True)
    modality = Modality(kind="visium", path=folder)
    # this folder ships no count matrix, which a run requires: read it without
    reader = sf.io.read_visium
    monkeypatch.setattr(sf.io, "read_visium", lambda path: reader(path, require_counts=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileFormatError, match=r"tissue_positions\.csv.*in-tissue spots lie"):
            read_modality(modality)
