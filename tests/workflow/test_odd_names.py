"""File and folder names that are not UTF-8, or long: every command works and records them.

On POSIX a name is bytes; Python decodes bytes that are not UTF-8 into lone surrogates, which
opened fine but raised ``UnicodeEncodeError`` wherever the name was written out (the offset cache
key, HDF5 provenance strings, pyarrow's paths, the report, the terminal).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import spatialfuse as sf
from spatialfuse.cli.main import cli
from spatialfuse.workflow._config import parse_config
from spatialfuse.workflow._pipeline import run_pipeline

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="APFS refuses non-UTF-8 names")

ODD = os.fsdecode(b"caf\xe9 \xff")  # Latin-1 bytes: not UTF-8


@pytest.fixture(scope="module")
def imzml_pair(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    from imzml_factory import write_simple

    base = tmp_path_factory.mktemp("m")
    write_simple(base / "plain", "msi")  # pyimzML cannot write such a name itself
    folder = base / ODD
    (base / "plain").rename(folder)
    for suffix in (".imzML", ".ibd"):
        (folder / f"msi{suffix}").rename(folder / f"msi{ODD}{suffix}")
    return folder / f"msi{ODD}.imzML"


def test_info_prints_a_non_utf8_imzml(imzml_pair, monkeypatch, tmp_path):
    monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(cli, ["info", str(imzml_pair)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "spectra:" in result.output


def test_read_imzml_records_the_name_and_writes_h5ad(imzml_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("SPATIALFUSE_CACHE_DIR", str(tmp_path / "cache"))
    for _ in range(2):  # the second read goes through the offset cache
        adata = sf.io.read_imzml(imzml_pair)
    recorded = adata.uns["spatialfuse"]["file"]
    assert recorded.endswith("caf\\xe9 \\xff/msi" + "caf\\xe9 \\xff.imzML")
    out = imzml_pair.parent / f"out{ODD}.h5ad"
    sf.io.write_h5ad(adata, out)
    assert sf.io.read_imzml(imzml_pair).n_obs == adata.n_obs == 12
    import anndata

    assert anndata.read_h5ad(out).uns["spatialfuse"]["file"] == recorded


def test_missing_non_utf8_file_gives_a_clean_cli_error(tmp_path):
    result = CliRunner().invoke(cli, ["info", str(tmp_path / f"{ODD}.imzML")])
    assert result.exit_code == 1
    assert "no such imzML file" in result.output and "caf\\xe9 \\xff" in result.output


def _image(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 32), (200, 120, 150)).save(path, format="PNG")
    return path


@pytest.mark.parametrize(
    "folder, image, name",
    [
        (ODD, f"he{ODD}.png", "he"),
        ("long", "i" * 240 + ".png", "m" * 200),
        ("a b  c", "with space.png", "$x^2$ <b>&amp;</b>"),
    ],
    ids=["non-utf8", "long", "spaces-mathtext-html"],
)
def test_run_with_odd_paths_and_names_writes_report_and_summary(tmp_path, folder, image, name):
    image = _image(tmp_path / folder / image)
    out = tmp_path / folder / f"results{ODD if folder == ODD else ''}"
    config = parse_config(
        {
            "output": str(out),
            "modalities": {name: {"kind": "histology", "path": str(image), "pixel_size_um": 2.0}},
        },
        base=image.parent,
    )
    result = run_pipeline(config)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    report = (out / "report.html").read_text(encoding="utf-8")
    assert summary["inputs"][name]["kind"] == "histology"
    if folder == ODD:
        assert "caf\\xe9 \\xff" in summary["inputs"][name]["path"]
        assert "caf\\xe9 \\xff" in report
    if "<b>" in name:
        assert "<b>&amp;</b>" not in report  # escaped, not markup
    assert result.files["report"] == out / "report.html"
    shutil.rmtree(out)
