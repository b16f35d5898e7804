"""The quick slice of the pipeline attack suite (benchmarks/fuzz_pipeline.py, docs/fuzzing.md).

One case of each cheap class runs ``spatialfuse run`` in a subprocess on a small synthetic trio:
a non-UTF-8 folder name, an output folder of user files with ``--force``, the input folder as
output, a truncated cache entry, a SIGKILL and re-run, a FIFO as the H&E, an imzML pixel size
labelled nm. None may end in a silent wrong result, a crash, a hang or data loss.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from sf_fuzz.pipeline import FAILURES, invalid_file, run_suite, stale_outputs
from sf_fuzz.pipeline_cases import quick_attacks

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

EXPECTED = {
    "non-UTF-8 folder": "ok",
    "user files --force": "ok",
    "input folder": "clean_error",
    "kill": "ok",
    "cache": "ok",
    "FIFO/special: H&E": "clean_error",
    "imzML pixel size labelled nm": "clean_error",
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attacks")
    return folder, run_suite(quick_attacks(2026), folder, log=lambda line: None)


def test_quick_slice_has_no_failures(outcomes):
    _, results = outcomes
    failed = [(o.klass, o.name, o.outcome, o.detail) for o in results if o.outcome in FAILURES]
    assert failed == []
    for o in results:
        key = o.klass if o.klass in ("kill", "cache") else o.name
        assert o.outcome == EXPECTED[key], (o.name, o.outcome, o.detail, o.notes)
    assert all(not o.notes for o in results), [(o.name, o.notes) for o in results]


def test_judge_sees_stale_and_half_written_outputs(outcomes, tmp_path):
    folder, _ = outcomes
    reference = folder / "reference-pair"
    summary = json.loads((reference / "summary.json").read_text(encoding="utf-8"))
    assert stale_outputs(reference, summary, set()) == []
    (reference / "old.h5ad").write_bytes(b"")
    assert stale_outputs(reference, summary, set()) == ["old.h5ad"]
    report = reference / "report.html"
    half = tmp_path / "report.html"
    half.write_bytes(report.read_bytes()[: report.stat().st_size // 2])
    assert invalid_file(report) is None and invalid_file(half) is not None
    transform = next((reference / "transforms").glob("*.json"))
    cut = tmp_path / "t.json"
    cut.write_bytes(transform.read_bytes()[:-10])
    assert invalid_file(cut).startswith("JSONDecodeError")


# -- what the suite found, as unit regressions --------------------------------------------------


def test_output_path_that_is_a_file_is_an_output_folder_error(tmp_path):
    from spatialfuse.errors import OutputFolderError
    from spatialfuse.workflow._lock import output_lock

    user = tmp_path / "data.csv"
    user.write_bytes(b"a,b\n")
    with pytest.raises(OutputFolderError, match="not a folder"):
        with output_lock(user):
            pass
    assert user.read_bytes() == b"a,b\n"


def test_cache_entry_or_seal_replaced_by_a_folder_is_a_miss_and_left_alone(tmp_path):
    from spatialfuse.workflow._steps_cache import SEAL_SUFFIX, StepCache

    cache = StepCache(tmp_path / ".cache")
    for i, damaged in enumerate(("", SEAL_SUFFIX)):
        with cache.store(f"s{i}", "k", ".json") as tmp:
            tmp.write_text("1", encoding="utf-8")
        target = cache.path(f"s{i}", "k", ".json" + damaged)
        target.unlink()
        target.mkdir()
        (target / "x").write_bytes(b"x")
        load = partial(cache.load, f"s{i}", "k", ".json", lambda p: p.read_text(encoding="utf-8"))
        assert load() is None
        with cache.store(f"s{i}", "k", ".json") as tmp:
            tmp.write_text("2", encoding="utf-8")
        assert load() is None
        assert (target / "x").read_bytes() == b"x"
