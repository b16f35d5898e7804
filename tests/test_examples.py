"""Every script in ``examples/`` runs to completion on synthetic data and writes what it says.

Each script runs in its own temporary folder (it writes its small trio there, ~2 s), in a fresh
interpreter with a non-interactive matplotlib backend.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Files each example must leave in its working folder (beyond the shared trio/).
OUTPUTS = {
    "read_msi_quickstart.py": ["example.imzML", "example.ibd"],
    "register_msi_to_he.py": ["register_qc.png", "msi_to_he.json"],
    "ion_on_tissue.py": ["ion_on_he.png"],
    "joint_clustering.py": ["joint_clusters.png"],
    "cross_modal_correlation.py": ["correlation.png", "gene_and_ion.png"],
    "landmarks.py": ["landmarks.csv", "msi_to_he.json"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(OUTPUTS)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_has_a_docstring_header(name):
    docstring = ast.get_docstring(ast.parse((EXAMPLES / name).read_text(encoding="utf-8")))
    assert docstring and len(docstring.splitlines()[0]) > 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_runs(name, workdir):
    out = workdir / name.removesuffix(".py")
    out.mkdir()
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, str(EXAMPLES / name)]
    if name == "read_msi_quickstart.py":
        args.append(str(out))
    proc = subprocess.run(args, cwd=out, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()
    for filename in OUTPUTS[name]:
        path = out / filename
        assert path.is_file() and path.stat().st_size > 0, f"{name} did not write {filename}"
