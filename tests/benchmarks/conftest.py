"""One way to run a benchmark script's ``--quick`` mode for the smoke tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def run_quick_benchmark(tmp_path):
    """``run(script, *args, timeout, env=None) -> (stdout, results)``.

    Runs ``benchmarks/<script> --quick *args --json …`` in ``tmp_path`` with its inputs under
    ``tmp_path / "data"``, asserts that it exited 0 and said its numbers are meaningless, and
    returns its output and its JSON results.
    """

    def run(script: str, *args: str, timeout: float, env: dict | None = None):
        out = tmp_path / "results.json"
        proc = subprocess.run(
            [sys.executable, str(BENCHMARKS / script), "--quick", *args, "--json", str(out)],
            env={
                **os.environ,
                "SPATIALFUSE_BENCH_DATA": str(tmp_path / "data"),
                "MPLBACKEND": "Agg",
                **(env or {}),
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "MEANINGLESS" in proc.stdout
        return proc.stdout, json.loads(out.read_text())

    return run
