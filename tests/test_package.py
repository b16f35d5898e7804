"""Package-level promises: the namespaces exist and ``import spatialfuse`` stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

HEAVY = ["anndata", "scanpy", "squidpy", "SimpleITK", "skimage", "scipy", "dask", "zarr", "lxml"]


def test_namespaces():
    import spatialfuse as sf

    for name in ("io", "pp", "reg", "tl", "pl", "datasets"):
        assert getattr(sf, name).__name__ == f"spatialfuse.{name}"
    assert sf.__version__
    assert callable(sf.io.read_imzml) and callable(sf.io.read_visium)


def test_import_loads_no_heavy_library():
    code = (
        "import sys, spatialfuse as sf; sf.io; sf.pp; sf.reg; sf.tl; sf.pl; sf.datasets;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_opening_an_imzml_file_loads_neither_writers_nor_other_readers():
    # A user who only opens an imzML file (the cold open of issue 17) pays for that reader alone.
    code = (
        "import sys; from spatialfuse.io import ImzMLReader;"
        "print(sorted(m for m in sys.modules if m.startswith(('spatialfuse.io.export',"
        "'spatialfuse.io.visium', 'spatialfuse.io.histology', 'spatialfuse.io.zarr_msi'))"
        " or m in ('anndata', 'pandas', 'zarr', 'dask')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_io_names_resolve_to_their_modules():
    import spatialfuse.io as io
    from spatialfuse.io.export import write_h5ad
    from spatialfuse.io.imzml import read_imzml

    assert sorted(io.__all__) == sorted(io._SOURCES)
    assert io.read_imzml is read_imzml and io.write_h5ad is write_h5ad
    for name in io.__all__:
        assert getattr(io, name) is getattr(importlib.import_module(io._SOURCES[name]), name)
    with pytest.raises(AttributeError, match="has no attribute 'read_nothing'"):
        io.read_nothing  # noqa: B018
