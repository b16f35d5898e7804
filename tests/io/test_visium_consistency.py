"""A Visium folder whose files disagree is refused or flagged (real folders, mutated copies).

Each test copies a real Space Ranger folder from the shared data, changes one file the way the
issue's attacks did (or a mix-up would), and checks the error or warning names the file and what
disagrees. Tests skip where the shared data are absent.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialfuse.errors import DataWarning, FileFormatError
from spatialfuse.io import read_visium

SCANPY = "scanpy_visium_1.0.0"  # Space Ranger 1.0 layout, a filtered matrix of 100 barcodes
CYTASSIST = "cytassist_ffpe_mouse_brain"  # 2.x layout, array_col runs along -x; no matrix
COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row", "pxl_col"]


def _positions(folder: Path) -> tuple[Path, pd.DataFrame, bool]:
    path = next((folder / "spatial").glob("tissue_positions*.csv"))
    header = path.read_text(encoding="utf-8").startswith("barcode")
    frame = pd.read_csv(path, header=0 if header else None, dtype=str)
    frame.columns = COLUMNS
    return path, frame, header


def _write_positions(path: Path, frame: pd.DataFrame, header: bool) -> None:
    names = ["barcode", "in_tissue", "array_row", "array_col"]
    names += ["pxl_row_in_fullres", "pxl_col_in_fullres"]
    frame.to_csv(path, index=False, header=names if header else False)


def _read(folder: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return read_visium(folder, **kwargs)


@pytest.mark.parametrize(("name", "counts"), [(SCANPY, True), (CYTASSIST, False)])
def test_real_folders_pass_every_check(name, counts, writable_shared_copy):
    folder = writable_shared_copy(f"visium/{name}")
    checks = _read(folder, require_counts=counts).uns["spatialfuse"]["consistency_checks"]
    assert {c: v["status"] for c, v in checks.items() if v["status"] != "skipped"} == {
        c: "ok" for c in checks if checks[c]["status"] != "skipped"
    }
    assert checks["grid_vs_pixels"]["value"] < 0.01  # Space Ranger's grid fits to < 1 % pitch
    assert checks["hexagonal_grid"]["value"] == pytest.approx(1.74, rel=1e-3)
    assert checks["image_scales"]["status"] == "ok"
    assert 0.6 <= checks["spot_diameter"]["value"] <= 0.71  # 0.65 and 0.70 measured
    if counts:
        assert checks["barcodes_in_tissue"]["status"] == "ok"


def test_swapped_pixel_columns_are_flagged(writable_shared_copy):
    folder = writable_shared_copy(f"visium/{CYTASSIST}")
    path, frame, header = _positions(folder)
    frame[["pxl_row", "pxl_col"]] = frame[["pxl_col", "pxl_row"]].to_numpy()
    _write_positions(path, frame, header)
    with pytest.warns(DataWarning, match="pxl_row_in_fullres and pxl_col_in_fullres look swapped"):
        adata = read_visium(folder, require_counts=False)
    assert adata.uns["spatialfuse"]["consistency_checks"]["grid_axes"]["status"] == "warning"


def test_barcodes_permuted_between_rows_are_refused(writable_shared_copy):
    folder = writable_shared_copy(f"visium/{SCANPY}")
    path, frame, header = _positions(folder)
    frame["barcode"] = np.random.default_rng(0).permutation(frame["barcode"].to_numpy())
    _write_positions(path, frame, header)
    with pytest.raises(FileFormatError, match=r"of 100 barcodes of the filtered matrix") as info:
        _read(folder)
    assert str(path) in str(info.value) and "in_tissue = 0" in str(info.value)


def test_pixel_positions_shuffled_between_spots_are_refused(writable_shared_copy):
    folder = writable_shared_copy(f"visium/{SCANPY}")
    path, frame, header = _positions(folder)
    # Ten rows exchange their pixel positions: every file on its own is still well formed.
    rows = np.arange(100, 110)
    frame.loc[rows, ["pxl_row", "pxl_col"]] = frame.loc[
        rows[::-1], ["pxl_row", "pxl_col"]
    ].to_numpy()
    _write_positions(path, frame, header)
    with pytest.raises(FileFormatError, match=r"10 of 4,992 spots lie off the grid") as info:
        _read(folder)
    assert str(path) in str(info.value)


def test_swapped_grid_columns_are_refused(writable_shared_copy):
    folder = writable_shared_copy(f"visium/{SCANPY}")
    path, frame, header = _positions(folder)
    frame[["array_row", "array_col"]] = frame[["array_col", "array_row"]].to_numpy()
    _write_positions(path, frame, header)
    with pytest.raises(FileFormatError, match=r"not Visium's hexagonal grid.*swapped"):
        _read(folder)


def _edit_scalefactors(folder: Path, **changes) -> Path:
    path = folder / "spatial" / "scalefactors_json.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update({k: data[k] * v for k, v in changes.items()})
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_scale_factors_that_do_not_fit_the_images_are_refused(writable_shared_copy):
    folder = writable_shared_copy(f"visium/{CYTASSIST}")
    path = _edit_scalefactors(folder, tissue_hires_scalef=2.0)
    with pytest.raises(
        FileFormatError, match=r"tissue_hires_scalef / tissue_lowres_scalef"
    ) as info:
        _read(folder, require_counts=False)
    assert str(path) in str(info.value) and "1872 × 2000" in str(info.value)


def test_an_implausible_spot_diameter_is_flagged(writable_shared_copy):
    folder = writable_shared_copy(f"visium/{SCANPY}")
    _edit_scalefactors(folder, spot_diameter_fullres=3.0)
    with pytest.warns(DataWarning, match=r"spot_diameter_fullres = 268.3 px is 1.95 spot pitches"):
        adata = read_visium(folder)
    assert adata.uns["spatialfuse"]["consistency_checks"]["spot_diameter"]["status"] == "warning"
