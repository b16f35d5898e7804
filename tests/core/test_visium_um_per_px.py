"""One accessor for Visium µm per full-res pixel (``core.visium_geometry.visium_um_per_px``).

It returns what ``read_visium`` recorded, refuses a missing or meaningless value with
spatialfuse's own :class:`~spatialfuse.errors.CalibrationError`, and is what registration and the
workflow's export read (no module outside ``core`` and the reader indexes ``um_per_px``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from spatialfuse.core.visium_geometry import visium_um_per_px
from spatialfuse.errors import CalibrationError
from spatialfuse.reg._chain import visium_um_to_fullres_px
from spatialfuse.reg._images import visium_image

SRC = Path(__file__).resolve().parents[2] / "src" / "spatialfuse"
# Modules that read uns["spatialfuse"]["um_per_px"] themselves: the accessor and the reader that
# writes it.
STILL_DIRECT = {
    "core/visium_geometry.py",  # the accessor
    "io/visium.py",  # the reader writes and describes it
}


def _visium(value=..., **extra) -> ad.AnnData:
    adata = ad.AnnData(np.zeros((3, 2), dtype=np.float32))
    adata.uns["spatialfuse"] = {} if value is ... else {"um_per_px": value}
    adata.uns.update(extra)
    return adata


@pytest.mark.parametrize("value", [0.6489, np.float32(1.25), np.float64(2.0), 3])
def test_the_recorded_value_is_returned(value):
    found = visium_um_per_px(_visium(value))
    assert isinstance(found, float) and found == float(value)


def test_a_missing_value_is_a_calibration_error_naming_the_key():
    for adata in (_visium(), _visium(None), ad.AnnData(np.zeros((2, 2)))):
        with pytest.raises(
            CalibrationError, match=r"uns\['spatialfuse'\]\['um_per_px'\] is missing"
        ):
            visium_um_per_px(adata, "slide")
    adata = ad.AnnData(np.zeros((2, 2)))
    adata.uns["spatialfuse"] = "not a dict"
    with pytest.raises(CalibrationError, match="slide has no µm per full-resolution pixel"):
        visium_um_per_px(adata, "slide")


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan"), "abc", [1.0, 2.0]])
def test_a_meaningless_value_is_a_calibration_error(value):
    with pytest.raises(CalibrationError, match="must be a positive, finite number") as caught:
        visium_um_per_px(_visium(value))
    assert isinstance(caught.value, ValueError)


def test_not_an_anndata_is_a_type_error():
    with pytest.raises(TypeError, match="read_visium"):
        visium_um_per_px({"uns": {}})


def test_not_required_a_missing_value_is_none_and_a_bad_one_still_refused():
    for obj in (_visium(), _visium(None), ad.AnnData(np.zeros((2, 2))), None, object()):
        assert visium_um_per_px(obj, required=False) is None
    assert visium_um_per_px(_visium(0.5), required=False) == 0.5
    with pytest.raises(CalibrationError, match="must be a positive, finite number"):
        visium_um_per_px(_visium(-1.0), required=False)


def test_figures_read_it_through_the_accessor():
    from spatialfuse.pl._common import um_per_px
    from spatialfuse.pl._landmark_picker import _visium_picture

    assert um_per_px(None, _visium(), _visium(0.75), _visium(2.0)) == 0.75
    assert um_per_px(_visium()) is None
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    spatial = {"lib": {"images": {"hires": image}, "scalefactors": {"tissue_hires_scalef": 0.5}}}
    picture, pixel = _visium_picture(_visium(0.75, spatial=spatial))
    assert picture.shape == image.shape and pixel == 1.5
    assert _visium_picture(_visium(spatial=spatial)) is None


def test_registration_reads_it_through_the_accessor():
    adata = _visium()
    with pytest.raises(CalibrationError, match="um_per_px"):
        visium_um_to_fullres_px(adata)
    with pytest.raises(CalibrationError, match="um_per_px"):
        visium_image(adata, working_pixel_size_um=10.0)
    m = visium_um_to_fullres_px(_visium(2.0)).matrix
    np.testing.assert_allclose(m, [[0.5, 0, -0.5], [0, 0.5, -0.5], [0, 0, 1]])


def _reads_um_per_px(tree: ast.AST) -> list[int]:
    """Lines that index ``["um_per_px"]``, call ``.get("um_per_px")`` or test ``in``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            key = node.args[0] if node.func.attr == "get" and node.args else None
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            key = node.left
        else:
            continue
        if isinstance(key, ast.Constant) and key.value == "um_per_px":
            lines.append(node.lineno)
    return lines


def test_no_new_module_reads_um_per_px_itself():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(SRC).as_posix()
        if where in STILL_DIRECT:
            continue
        found += [f"{where}:{line}" for line in _reads_um_per_px(ast.parse(path.read_text()))]
    assert not found, "read uns['spatialfuse']['um_per_px'] with visium_um_per_px:\n" + "\n".join(
        found
    )
