"""The output folder: a run deletes and overwrites only what spatialfuse wrote there.

Runs here read one small image and register nothing (well under a second each); what they test
is the folder handling around every run: the journal of what was written, the removal of exactly
the temporaries a killed run left, and the refusal of folders holding the user's files or inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spatialfuse.errors import OutputFolderError
from spatialfuse.workflow._config import parse_config
from spatialfuse.workflow._journal import JOURNAL_NAME, Journal
from spatialfuse.workflow._pipeline import run_pipeline

#: Files a user or their tools keep beside outputs; the old cleanup deleted each of these.
FOREIGN = {
    ".gitlab-ci.yml": b"stages: [test]\n",
    ".env.local": b"SECRET=1\n",
    ".pre-commit-config.yaml": b"repos: []\n",
    ".nextflow.log": b"log\n",
    ".git/objects/x.y.z": b"\x00blob",
    ".git/hooks/.pre-commit.sample": b"#!/bin/sh\n",
    "._msi.imzML": b"\x00\x05\x16\x07AppleDouble",
    "notes.txt": b"mine\n",
}


def _image(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "he.png"
    Image.new("RGB", (48, 32), (200, 120, 150)).save(path)
    return path


def _config(image: Path, output: Path, **modalities):
    data = {
        "output": str(output),
        "modalities": {
            "he": {"kind": "histology", "path": str(image), "pixel_size_um": 2.0},
            **modalities,
        },
        "outputs": {"report": False},
    }
    return parse_config(data, base=image.parent)


def _plant(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_atomic_writes_list_each_temporary_before_creating_it(tmp_path):
    from spatialfuse._io_utils import atomic_dir, atomic_path, journaling

    seen = []

    def record(kind, path):
        seen.append((kind, path.parent == tmp_path, path.name, os.path.lexists(path)))

    with journaling(record):
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("1", encoding="utf-8")
        with atomic_dir(tmp_path / "b.zarr") as folder:
            folder.mkdir()
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "c.json"):
            raise RuntimeError("interrupted")
    tmps = [(here, name, exists) for kind, here, name, exists in seen if kind == "tmp"]
    assert [name.split(".")[1] for _, name, _ in tmps] == ["a", "b", "c"]
    assert all(here and name.startswith(".") and not exists for here, name, exists in tmps)
    assert [name for kind, _, name, _ in seen if kind == "out"] == ["a.json", "b.zarr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.zarr"]


def test_a_forced_run_keeps_every_foreign_file_byte_for_byte(tmp_path):
    out = tmp_path / "out"
    _plant(out, FOREIGN)
    config = _config(_image(tmp_path / "in"), out)
    run_pipeline(config, show_progress=False, force=True)
    run_pipeline(config, show_progress=False, force=True)  # the start of a run cleans up
    after = _tree(out)
    assert {k: after.get(k) for k in FOREIGN} == FOREIGN
    assert "summary.json" in after


def test_a_killed_runs_listed_temporaries_go_and_look_alikes_stay(tmp_path):
    out = tmp_path / "out"
    config = _config(_image(tmp_path / "in"), out)
    run_pipeline(config, show_progress=False)
    # A process killed (no cleanup handlers run) inside an atomic file write and an atomic
    # folder write, as a run's journal records them.
    script = (
        "import os, sys\n"
        "from spatialfuse._io_utils import atomic_dir, atomic_path\n"
        "from spatialfuse.workflow._journal import Journal\n"
        "out = sys.argv[1]\n"
        "with Journal(out).active(), atomic_dir(out + '/spatialdata.zarr') as d:\n"
        "    os.makedirs(d / 'images')\n"
        "    (d / 'images' / 'x.bin').write_bytes(b'half')\n"
        "    with atomic_path(out + '/summary.json') as f:\n"
        "        f.write_text('{\"half')\n"
        "        os._exit(9)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(out)], check=False)
    assert killed.returncode == 9
    left = sorted(p.name for p in out.iterdir() if p.name.startswith((".summary", ".spatialdata")))
    assert len(left) == 2, left
    look_alikes = {".summary.json.0123456789abcdef.json": b"user", ".x.y.z": b"user"}
    _plant(out, look_alikes)

    with pytest.raises(OutputFolderError) as info:
        run_pipeline(config, show_progress=False)
    # The run's own leftovers are already gone; what remains is named, and kept.
    assert ".summary.json.0123456789abcdef.json" in str(info.value)
    assert not set(left) & set(info.value.paths)
    for name in left:
        assert not os.path.lexists(out / name)
    assert _tree(out)[".x.y.z"] == b"user"

    run_pipeline(config, show_progress=False, force=True)
    assert {k: _tree(out)[k] for k in look_alikes} == look_alikes
    json.loads((out / "summary.json").read_text(encoding="utf-8"))
    entries = [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]
    assert {e["out"] for e in entries if "out" in e} == {"summary.json"}


def test_a_folder_with_foreign_files_is_refused_untouched(tmp_path):
    out = tmp_path / "out"
    files = {f"file{i}.txt": b"x" for i in range(5)}
    _plant(out, files)
    config = _config(_image(tmp_path / "in"), out)
    with pytest.raises(OutputFolderError, match="did not write") as info:
        run_pipeline(config, show_progress=False)
    message = str(info.value)
    assert str(out) in message and "--force" in message and "file0.txt" in message
    assert len(info.value.paths) == 3 and "…" in message
    assert sorted(p.name for p in out.iterdir()) == sorted(files)


def test_new_empty_and_own_folders_are_accepted(tmp_path):
    image = _image(tmp_path / "in")
    run_pipeline(_config(image, tmp_path / "new" / "deeper"), show_progress=False)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    run_pipeline(_config(image, tmp_path / "empty"), show_progress=False)
    run_pipeline(_config(image, tmp_path / "empty"), show_progress=False)  # its own outputs
    assert (tmp_path / "empty" / "summary.json").is_file()


def test_a_folder_containing_an_input_needs_force(tmp_path):
    image = _image(tmp_path / "project")
    config = _config(image, tmp_path / "project")
    with pytest.raises(OutputFolderError, match="contains inputs") as info:
        run_pipeline(config, show_progress=False)
    assert str(image) in str(info.value) and "--force" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["he.png"]
    before = image.read_bytes()
    run_pipeline(config, show_progress=False, force=True)
    assert image.read_bytes() == before and (tmp_path / "project" / "summary.json").is_file()


@pytest.mark.parametrize("where", ["visium", "visium/results"])
def test_an_output_folder_in_an_input_folder_is_refused_even_forced(tmp_path, where):
    visium = tmp_path / "visium"
    visium.mkdir()
    config = _config(
        _image(tmp_path / "in"), tmp_path / where, spots={"kind": "visium", "path": str(visium)}
    )
    with pytest.raises(OutputFolderError, match="never writes into its inputs") as info:
        run_pipeline(config, show_progress=False, force=True)
    assert "modality 'spots'" in str(info.value)
    assert list(visium.iterdir()) == []


# -- spatialfuse demo ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Trio:
    folder: Path
    image: Path
    seed: int


def _make(folder: Path, *, seed: int, write_he_serial: bool) -> _Trio:
    """A stand-in for ``synthetic_trio``: seeded, byte-identical files."""
    (folder / "visium").mkdir(parents=True, exist_ok=True)
    (folder / "visium" / "spots.csv").write_text(f"seed,{seed}\n", encoding="utf-8")
    (folder / "he.png").write_bytes(bytes([seed]) * 100)
    return _Trio(folder=folder, image=folder / "he.png", seed=seed)


def test_demo_data_is_kept_when_identical_and_replaced_only_when_its_own(tmp_path):
    from spatialfuse.workflow._demo import _load_or_make

    config = tmp_path / "config.yaml"
    trio = _load_or_make(tmp_path / "data", 1, _make, extra={config: b"seed: 1\n"})
    assert trio.image == tmp_path / "data" / "he.png" and trio.image.read_bytes() == b"\x01" * 100
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    identity = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [config, trio.image]}

    _load_or_make(tmp_path / "data", 1, _make, extra={config: b"seed: 1\n"})
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in identity} == identity

    # Another seed replaces the demo's own files; the user's file stays.
    _load_or_make(tmp_path / "data", 2, _make, extra={config: b"seed: 2\n"})
    assert trio.image.read_bytes() == b"\x02" * 100 and config.read_bytes() == b"seed: 2\n"
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden == [JOURNAL_NAME]
    assert {"config.yaml", "data/he.png", "data/visium/spots.csv"} <= Journal(tmp_path).outputs()


def test_demo_refuses_to_overwrite_a_config_or_data_it_did_not_write(tmp_path):
    from spatialfuse.workflow._demo import run_demo

    mine = {"config.yaml": b"output: elsewhere\n", "data/he.ome.tif": b"my slide"}
    _plant(tmp_path, mine)
    with pytest.raises(OutputFolderError, match="did not write") as info:
        run_demo(tmp_path, show_progress=False)
    message = str(info.value)
    assert str(tmp_path / "config.yaml") in message
    assert str(tmp_path / "data" / "he.ome.tif") in message
    assert _tree(tmp_path) == mine  # nothing written, nothing left behind
    assert not (tmp_path / "results").exists()
