"""The quick slice of the fuzz suite, and checks of the fuzz runner itself.

Each reader gets a few hundred seeded mutation cases (the long run is
``benchmarks/fuzz_readers.py``, see docs/fuzzing.md). Every case must end in a read that matches an
independent decoding of the input, or in one of spatialfuse's own errors naming the input: never
another exception, a hang past the time bound, or an allocation past the memory bound. The
runner's categories are checked against a stand-in reader whose cases fail in known ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sf_fuzz import runner, selftest

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_readers.py"


@pytest.mark.parametrize(
    ("reader", "cases", "seed"),
    [("imzml", 300, 101), ("config", 400, 102), ("visium", 80, 103), ("histology", 150, 104)],
)
def test_quick_slice_reads_correctly_or_raises_our_errors(tmp_path, reader, cases, seed):
    summary = runner.run(
        reader, cases=cases, seed=seed, timeout=30.0, memory_mb=1024, workdir=tmp_path
    )
    table = runner.format_summary([summary])
    print(table)
    assert summary["failure_count"] == 0, table
    counts = summary["counts"]
    assert sum(counts.values()) == cases
    # Both kinds of outcome occur: reads verified against the reference, and refusals.
    assert counts.get("read", 0) >= 0.15 * cases, table
    assert counts.get("error", 0) >= 0.2 * cases, table
    assert summary["workers"]["starts"] == 1  # no hang, crash or memory blow-up restarted it


SELFTEST_SEED = 3


def test_runner_counts_every_outcome_and_bounds_time_and_memory(tmp_path):
    cases = 16
    expected = Counter(selftest.behaviour(runner.case_seed(SELFTEST_SEED, i)) for i in range(cases))
    assert set(expected) == set(selftest.BEHAVIOURS)  # the seed covers every behaviour
    summary = runner.run(
        "selftest", cases=cases, seed=SELFTEST_SEED, timeout=2.0, memory_mb=256, workdir=tmp_path
    )
    assert summary["counts"] == dict(expected)
    assert summary["failure_count"] == cases - expected["read"] - expected["error"]
    assert summary["errors"] == {"FileFormatError": expected["error"]}
    for record in summary["failures"]:
        assert selftest.behaviour(record["seed"]) == record["category"]
        if record["category"] == "timeout":
            # the worker's stack at 90 % of the bound shows where it hung
            assert "Timeout" in record["detail"] and "selftest.py" in record["detail"]
        elif record["category"] == "memory_limit":
            assert "MemoryError" in record["detail"]
        elif record["category"] == "crash":
            assert "Segmentation fault" in record["detail"]
        elif record["category"] == "other_exception":
            assert "KeyError" in record["detail"]
    # a fresh worker after each timeout, crash and memory blow-up
    restarts = expected["timeout"] + expected["crash"] + expected["memory_limit"]
    assert summary["workers"]["starts"] in (restarts, restarts + 1)


def test_command_line_run_and_replay(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--reader", "config", "--cases", "40", "--seed", "7"),
            *("--timeout-per-case", "30", "--progress", "0", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "config" in proc.stdout and "read_unverified" in proc.stdout
    (summary,) = json.loads(out.read_text())
    assert summary["reader"] == "config" and sum(summary["counts"].values()) == 40
    # a case replayed alone ends exactly as it did in the run
    run = runner.run("config", cases=4, seed=7, workdir=tmp_path / "again", keep_records=True)
    for index, record in enumerate(run["records"]):
        assert record["seed"] == runner.case_seed(7, index)
        replayed = runner.replay("config", record["seed"], keep=tmp_path / f"case{index}")
        assert (tmp_path / f"case{index}" / "config.yaml").is_file()
        for key in ("category", "mutations", "error_type", "base"):
            assert replayed[key] == record[key], (key, replayed, record)
