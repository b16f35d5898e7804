"""Package-level promises: the namespaces exist and ``import spatialfuse`` stays light."""

from __future__ import annotations

import subprocess
import sys

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
