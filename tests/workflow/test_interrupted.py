"""Killing ``spatialfuse run`` at random moments never leaves a truncated output behind.

The run is killed with SIGKILL (no cleanup handlers run) at seeded random times, each check looks
at every visible file in the output folder and requires it to be complete (parses / decodes), and
the final run must finish and reuse what the killed runs had completed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _complete(path: Path) -> None:
    """Raise if ``path`` is not a complete file of its kind."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".h5ad":
        import anndata

        anndata.read_h5ad(path)
    elif suffix == ".h5mu":
        import mudata

        mudata.read_h5mu(path)
    elif suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            image.load()
    elif suffix == ".html":
        assert path.read_text(encoding="utf-8").rstrip().endswith("</html>"), path
    elif suffix == ".csv":
        import pandas as pd

        pd.read_csv(path)


def _visible_outputs(results: Path):
    for path in results.rglob("*"):
        parts = path.relative_to(results).parts
        if any(p.startswith(".") for p in parts) or any(p.endswith(".zarr") for p in parts[:-1]):
            continue
        if path.is_file():
            yield path


def test_killed_runs_leave_only_complete_outputs_and_a_rerun_finishes(tmp_path):
    from spatialfuse.datasets import synthetic_trio
    from spatialfuse.workflow._demo import DEMO_CONFIG, _load_or_make
    from spatialfuse.workflow._journal import JOURNAL_NAME

    _load_or_make(tmp_path / "data", 0, synthetic_trio)
    config = tmp_path / "config.yaml"
    config.write_text(DEMO_CONFIG.format(seed=0), encoding="utf-8")
    results = tmp_path / "results"
    command = [sys.executable, "-m", "spatialfuse", "run", str(config), "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    rng = np.random.default_rng(7)
    for delay in sorted(rng.uniform(2.0, 30.0, size=3)):
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        time.sleep(delay)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        if results.exists():
            for path in _visible_outputs(results):
                _complete(path)
    final = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "ok"
    for path in _visible_outputs(results):
        _complete(path)
    leftovers = [
        p
        for p in results.rglob(".*")
        if p.name not in (".cache", JOURNAL_NAME) and ".zarr" not in str(p)
    ]
    assert leftovers == []
