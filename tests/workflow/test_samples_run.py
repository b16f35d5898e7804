"""Several sections on a dask cluster: per-sample outputs, failures by name, the output folder.

Quick: Visium-only samples (read and export) on a scheduler given by address. The full pipeline
on three synthetic sections, compared with runs of each alone, is in
``test_samples_pipeline.py`` (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import spatialfuse as sf
from spatialfuse.cli.main import cli
from spatialfuse.errors import OutputFolderError, SamplesFailedError
from spatialfuse.workflow import run, run_samples


@pytest.fixture(scope="module")
def visium(tmp_path_factory) -> Path:
    trio = sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("trio"),
        seed=2,
        tissue_size_um=(800.0, 600.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=40,
        write_he_serial=False,
    )
    return trio.visium


@pytest.fixture(scope="module")
def scheduler():
    """A dask scheduler with one in-process worker, as a user's running cluster would be."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, processes=False, threads_per_worker=2, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def _config(tmp_path: Path, visium: Path, names=("v1", "v2"), *, missing: str | None = None):
    samples = [{"name": n, "modalities": {"visium": {"path": str(visium)}}} for n in names]
    if missing is not None:
        samples.append(
            {"name": missing, "modalities": {"visium": {"path": str(tmp_path / "nowhere")}}}
        )
    data = {
        "output": "results",
        "modalities": {"visium": {"kind": "visium"}},
        "outputs": {"report": False},
        "samples": samples,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_failing_sample_is_named_while_the_others_finish(tmp_path, visium, scheduler):
    path = _config(tmp_path, visium, missing="lost")
    result = CliRunner().invoke(cli, ["run", str(path), "--scheduler", scheduler, "--quiet"])
    assert result.exit_code == 1, result.output
    assert "lost: FAILED: MissingFileError" in result.output
    assert "1 of 3 samples failed" in result.output and str(tmp_path / "nowhere") in result.output
    out = tmp_path / "results"
    for name in ("v1", "v2"):
        summary = json.loads((out / name / "summary.json").read_text(encoding="utf-8"))
        assert summary["status"] == "ok" and summary["inputs"]["visium"]["n_spots"] > 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "samples_failed" and list(summary["failed"]) == ["lost"]
    assert summary["samples"]["lost"]["error_type"] == "MissingFileError"
    assert summary["samples"]["v1"]["status"] == "ok"
    assert summary["parallel"]["scheduler"] == scheduler
    assert "not_built" in summary["combined"]  # no sample has MSI to join

    # The Python API raises the project's error, carrying the finished samples.
    with pytest.raises(SamplesFailedError) as info:
        run(path, scheduler=scheduler, show_progress=False)
    assert info.value.failures.keys() == {"lost"}
    assert info.value.result.samples["v2"].ok
    assert "MissingFileError" in str(info.value)


def test_samples_run_on_a_scheduler_by_address_and_reuse_their_cache(tmp_path, visium, scheduler):
    path = _config(tmp_path, visium)
    first = run_samples(path, scheduler=scheduler, show_progress=False)
    assert first.ok and first.scheduler == scheduler and set(first.samples) == {"v1", "v2"}
    assert all(s.status == "ok" for s in first.samples.values())
    # each sample is a whole single run in its own folder, journaled and cached there
    for name in ("v1", "v2"):
        folder = tmp_path / "results" / name
        assert (folder / "summary.json").is_file() and (folder / ".spatialfuse-journal").is_file()
    again = run_samples(path, scheduler=scheduler, show_progress=False)
    assert again.ok
    assert [s.summary["status"] for s in again.samples.values()] == ["ok", "ok"]


def test_an_output_folder_with_foreign_files_is_refused_unless_forced(tmp_path, visium, scheduler):
    path = _config(tmp_path, visium, names=("v1",))
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputFolderError, match=r"notes\.txt"):
        run_samples(path, scheduler=scheduler, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # forced: the user's file is kept (nothing is written at its path)
    result = run_samples(path, scheduler=scheduler, show_progress=False, force=True)
    assert result.ok and (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_single_section_config_runs_as_before(tmp_path, visium):
    path = tmp_path / "single.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output": "single",
                "modalities": {"visium": {"kind": "visium", "path": str(visium)}},
                "outputs": {"report": False},
            }
        ),
        encoding="utf-8",
    )
    result = run(path, show_progress=False)
    assert type(result).__name__ == "RunResult" and result.ok
    assert not (tmp_path / "single" / "summary.json").read_text().count('"samples"')
