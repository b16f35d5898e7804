"""``spatialfuse pick-landmarks CONFIG STEP``: which step, which files, what the window gets.

The window itself is replaced by a recorder here (it is tested in
``tests/pl/test_pl_landmark_picker.py``); the last test runs the real function without napari.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

import spatialfuse as sf
from spatialfuse.cli.main import cli


@pytest.fixture
def config(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        pixels = (255 * rng.random((30, 40, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    path = tmp_path / "config.yaml"
    path.write_text(
        "output: out\n"
        "modalities:\n"
        "  a: {kind: histology, path: a.png, pixel_size_um: 2}\n"
        "  b: {kind: histology, path: b.png, pixel_size_um: 3}\n"
        "registrations:\n"
        "  - {moving: a, fixed: b, model: rigid, seed: 7}\n"
        "  - {moving: b, fixed: a, landmarks: mine.csv, start_from_landmarks: true}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def calls(monkeypatch):
    """Record what the command passes to ``sf.pl.pick_landmarks``; save landmarks where asked."""

    class Recorded(list):
        fake = None

    recorded = Recorded()

    def fake(data, reference, **kwargs):
        recorded.append(SimpleNamespace(data=data, reference=reference, **kwargs))
        if getattr(fake, "save", False):
            kwargs["landmarks_path"].parent.mkdir(parents=True, exist_ok=True)
            kwargs["landmarks_path"].write_text("moving_x,moving_y,fixed_x,fixed_y\n1,2,3,4\n")
        return SimpleNamespace(session=SimpleNamespace(n_pairs=len(recorded)))

    monkeypatch.setattr(sf.pl, "pick_landmarks", fake)
    recorded.fake = fake
    return recorded


@pytest.mark.parametrize("step", ["a:b", "1", "a", "a->b", "a → b"])
def test_the_step_is_found_and_its_settings_passed(config, calls, step):
    result = CliRunner().invoke(cli, ["pick-landmarks", str(config), step])
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call.names == ("a", "b") and call.block is True
    assert isinstance(call.data, sf.io.HistologyImage) and call.data.pixel_size_um == (2.0, 2.0)
    assert call.reference.pixel_size_um == (3.0, 3.0)
    assert call.landmarks is None  # nothing saved yet
    assert call.landmarks_path == config.parent / "landmarks" / "a_to_b.csv"
    assert call.transform_path == config.parent / "landmarks" / "a_to_b.json"
    assert call.model == "rigid"  # the landmark fit follows a rigid registration
    options = call.register_options
    assert options["model"] == "rigid" and options["seed"] == 7
    assert options["start_from_landmarks"] is True


def test_saved_landmarks_are_reopened_and_the_config_lines_printed(config, calls):
    calls.fake.save = True
    first = CliRunner().invoke(cli, ["pick-landmarks", str(config), "a:b"])
    assert first.exit_code == 0, first.output
    csv = config.parent / "landmarks" / "a_to_b.csv"
    assert f"landmarks: {csv}" in first.output
    assert "start_from_landmarks: true" in first.output
    assert f"spatialfuse run {config}" in first.output
    again = CliRunner().invoke(cli, ["pick-landmarks", str(config), "1"])
    assert again.exit_code == 0, again.output
    assert calls[1].landmarks == csv


def test_the_step_landmarks_file_and_options(config, calls, tmp_path):
    result = CliRunner().invoke(
        cli, ["pick-landmarks", str(config), "2", "--msi-image", "798.5,885.25"]
    )
    assert result.exit_code == 0, result.output
    call = calls[0]
    assert call.landmarks_path == tmp_path / "mine.csv"  # the registration's own landmarks:
    assert call.msi_image == [798.5, 885.25]
    assert call.model == "affine"
    other = tmp_path / "elsewhere" / "p.csv"
    result = CliRunner().invoke(
        cli, ["pick-landmarks", str(config), "b:a", "--landmarks", str(other)]
    )
    assert result.exit_code == 0, result.output
    assert calls[1].landmarks_path == other and calls[1].transform_path == other.with_suffix(
        ".json"
    )


@pytest.mark.parametrize(
    ("step", "problem"),
    [("c", "no registration matches 'c'"), ("3", "no registration number 3"), ("a:a", "no reg")],
)
def test_an_unknown_step_lists_the_steps(config, calls, step, problem):
    result = CliRunner().invoke(cli, ["pick-landmarks", str(config), step])
    assert result.exit_code == 1
    assert problem in result.output and "1: a:b, 2: b:a" in result.output
    assert "Traceback" not in result.output and not calls


def test_bad_msi_image_is_a_usage_error(config, calls):
    result = CliRunner().invoke(cli, ["pick-landmarks", str(config), "1", "--msi-image", "pc9"])
    assert result.exit_code == 2 and "m/z values separated by commas" in result.output


def test_without_napari_the_command_says_what_to_install(config, monkeypatch):
    monkeypatch.setitem(sys.modules, "napari", None)
    result = CliRunner().invoke(cli, ["pick-landmarks", str(config), "a:b"])
    assert result.exit_code == 1
    assert 'pip install "spatialfuse[napari]"' in result.output
    assert "Traceback" not in result.output
