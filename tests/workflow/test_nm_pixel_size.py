"""An imzML whose pixel size is given in nanometres (issue 14).

The reader converts nm to µm. A value meant in µm but labelled nm (``50`` nm for a 50 µm pixel)
made registration resample the H&E at half that pixel: a 70 GiB allocation for a 1 mm H&E. The
working grid is bounded now (issue 17), so nothing large is allocated; such an MSI spans less than
a working pixel, and registration refuses it before any search, with an error naming the imzML and
the unit; a right value in nm works.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import spatialfuse as sf
from spatialfuse.errors import CalibrationError

_PIXEL_SIZE = re.compile(
    r'(accession="IMS:100004[67]"[^>]*?value=")([^"]+)("[^>]*?unitAccession=")UO:0000017'
    r'(" unitName=")micrometer'
)


def _in_nm(src: Path, dst: Path, factor: float) -> Path:
    """Copy an imzML pair, writing its pixel sizes in nm (the µm value times ``factor``)."""
    dst.mkdir()
    text = src.read_bytes().decode("latin-1")

    def to_nm(m: re.Match) -> str:
        return f"{m[1]}{float(m[2]) * factor!r}{m[3]}UO:0000018{m[4]}nanometer"

    new, n = _PIXEL_SIZE.subn(to_nm, text)
    assert n == 2
    (dst / "msi.imzML").write_bytes(new.encode("latin-1"))
    (dst / "msi.ibd").write_bytes(src.with_suffix(".ibd").read_bytes())
    return dst / "msi.imzML"


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    return sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("trio"),
        seed=1,
        tissue_size_um=(800.0, 600.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=40,
    )


def test_right_value_in_nm_reads_as_micrometres(trio, tmp_path):
    path = _in_nm(trio.msi, tmp_path / "nm", 1000.0)
    msi = sf.io.read_imzml(path)
    assert tuple(msi.uns["spatialfuse"]["pixel_size_um"]) == (50.0, 50.0)


def test_micrometre_value_labelled_nm_is_refused_before_the_search(trio, tmp_path):
    path = _in_nm(trio.msi, tmp_path / "nm", 1.0)
    msi = sf.io.read_imzml(path)
    assert tuple(msi.uns["spatialfuse"]["pixel_size_um"]) == (0.05, 0.05)
    he = sf.io.read_histology(trio.he)
    start = time.perf_counter()
    with pytest.raises(CalibrationError) as info:
        sf.reg.register(msi, he, scale="given")
    assert time.perf_counter() - start < 20
    message = str(info.value)
    assert info.value.path == str(path) and str(path) in message
    assert "wrong unit" in message and "nm read as µm" in message and "pixel_size_um" in message


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def test_pipeline_stops_with_an_error_naming_the_imzml(trio, tmp_path):
    path = _in_nm(trio.msi, tmp_path / "nm", 1.0)
    config = {
        "output": str(tmp_path / "out"),
        "modalities": {
            "msi": {"kind": "imzml", "path": str(path)},
            "he": {"kind": "histology", "path": str(trio.he)},
        },
        "registrations": [{"moving": "msi", "fixed": "he", "scale": "given"}],
        "outputs": {"report": False},
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "spatialfuse", "run", str(config_file), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,
    )
    assert done.returncode not in (0, 3), done.stderr
    assert "Traceback" not in done.stderr
    assert str(path) in done.stderr and "wrong unit" in done.stderr
