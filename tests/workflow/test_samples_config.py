"""Configs of several sections (``samples:``): merging, validation and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from spatialfuse.cli.main import cli
from spatialfuse.errors import ConfigError
from spatialfuse.workflow import MultiConfig, load_any_config, load_config, load_samples_config

SHARED = {
    "output": "out",
    "modalities": {
        "msi": {"kind": "imzml", "pixel_size_um": 50.0},
        "he_msi": {"kind": "histology"},
        "visium": {"kind": "visium"},
    },
    "registrations": [
        {"moving": "msi", "fixed": "he_msi", "seed": 3},
        {"moving": "he_msi", "fixed": "visium"},
    ],
    "clustering": {"method": "wnn", "seed": 5},
}


def _sample(name: str, **extra) -> dict:
    return {
        "name": name,
        "modalities": {
            "msi": {"path": f"{name}/msi.imzML"},
            "he_msi": {"path": f"{name}/he.ome.tif"},
            "visium": {"path": f"{name}/visium"},
        },
        **extra,
    }


def _write(tmp_path: Path, data: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_samples_merge_the_shared_settings_and_keep_their_own(tmp_path):
    data = {
        **SHARED,
        "samples": [
            _sample("s1"),
            {
                **_sample("s2"),
                "registrations": [{"moving": "msi", "fixed": "he_msi", "model": "rigid"}],
                "mapping": {"method": "nearest"},
            },
        ],
        "parallel": {"n_workers": 2},
    }
    data["samples"][1]["modalities"]["msi"] = {"path": "/abs/s2.imzML", "pixel_size_um": 20.0}
    config = load_samples_config(_write(tmp_path, data))
    assert isinstance(config, MultiConfig)
    assert [s.name for s in config.samples] == ["s1", "s2"]
    assert config.output == tmp_path / "out"
    s1, s2 = (s.config for s in config.samples)
    assert s1.output == tmp_path / "out" / "s1" and s2.output == tmp_path / "out" / "s2"
    # shared: kinds and reader options; per sample: paths, resolved against the config's folder
    assert s1.modalities["msi"].path == tmp_path / "s1" / "msi.imzML"
    assert s1.modalities["msi"].pixel_size_um == 50.0
    assert s1.registrations[0].seed == 3 and s1.clustering.method == "wnn"
    # a sample's mapping merges into the shared one; its list of registrations replaces it
    assert s2.modalities["msi"].path == Path("/abs/s2.imzML")
    assert s2.modalities["msi"].pixel_size_um == 20.0
    assert s2.modalities["visium"].path == tmp_path / "s2" / "visium"
    assert [(r.moving, r.model) for r in s2.registrations] == [("msi", "rigid")]
    assert s2.mapping.method == "nearest" and s1.mapping.method == "area"
    # the combined table is clustered with the shared settings unless it has its own
    assert config.combined.clustering.method == "wnn" and config.combined.clustering.seed == 5
    assert config.parallel.n_workers == 2 and config.parallel.scheduler is None
    moved = config.with_output(tmp_path / "elsewhere")
    assert moved.samples[1].config.output == tmp_path / "elsewhere" / "s2"
    assert isinstance(load_any_config(_write(tmp_path, data)), MultiConfig)


@pytest.mark.parametrize("samples", [[], None, "s1"])
def test_no_samples_is_a_config_error_naming_the_file(tmp_path, samples):
    path = _write(tmp_path, {**SHARED, "samples": samples})
    with pytest.raises(ConfigError) as info:
        load_samples_config(path)
    message = str(info.value)
    assert str(path) in message and "samples:" in message
    assert "at least one sample" in message


def test_duplicate_sample_names_are_refused(tmp_path):
    path = _write(tmp_path, {**SHARED, "samples": [_sample("s1"), _sample("s2"), _sample("S1")]})
    with pytest.raises(ConfigError) as info:
        load_samples_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "samples[2] (S1)" in message and "samples[0]" in message and "own name" in message


@pytest.mark.parametrize("name", ["a/b", ".hidden", "summary.json", ""])
def test_names_must_be_folder_names(tmp_path, name):
    path = _write(tmp_path, {**SHARED, "samples": [_sample(name)]})
    with pytest.raises(ConfigError, match="output folder's name"):
        load_samples_config(path)


def test_every_bad_sample_is_named_with_its_key(tmp_path):
    bad_key = _sample("s1", mapping={"methd": "area"})
    no_path = {"name": "s2", "modalities": {"msi": {}}}
    own_output = _sample("s3", output="x")
    unknown_modality = _sample("s4", registrations=[{"moving": "msi", "fixed": "nowhere"}])
    path = _write(tmp_path, {**SHARED, "samples": [bad_key, no_path, own_output, unknown_modality]})
    with pytest.raises(ConfigError) as info:
        load_samples_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "samples[0] (s1): mapping.methd: unknown key" in message
    assert "samples[1] (s2): modalities.msi.path" in message
    assert "samples[2] (s3).output" in message
    assert "samples[3] (s4)" in message and "'nowhere'" in message


def test_parallel_and_combined_are_validated(tmp_path):
    data = {
        **SHARED,
        "samples": [_sample("s1")],
        "parallel": {"n_workers": 0},
        "combined": {"ppm": -1},
    }
    with pytest.raises(ConfigError) as info:
        load_samples_config(_write(tmp_path, data))
    assert "parallel.n_workers" in str(info.value) and "combined.ppm" in str(info.value)


def test_single_section_loader_points_to_the_samples_run(tmp_path):
    path = _write(tmp_path, {**SHARED, "samples": [_sample("s1")]})
    with pytest.raises(ConfigError, match="samples:") as info:
        load_config(path)
    assert str(path) in str(info.value)
    single = _write(
        tmp_path,
        {**SHARED, "modalities": {"v": {"kind": "visium", "path": "v"}}, "registrations": []},
        "single.yaml",
    )
    assert not isinstance(load_any_config(single), MultiConfig)
    with pytest.raises(ConfigError, match="no samples"):
        load_samples_config(single)


def test_cli_names_the_config_file_on_a_bad_samples_config(tmp_path):
    path = _write(tmp_path, {**SHARED, "samples": [_sample("s1"), _sample("s1")]})
    result = CliRunner().invoke(cli, ["run", str(path), "--quiet"])
    assert result.exit_code == 1
    assert str(path) in result.output and "own name" in result.output


def test_cli_scheduler_option_needs_a_samples_config(tmp_path):
    single = _write(tmp_path, {"modalities": {"v": {"kind": "visium", "path": "v"}}}, "single.yaml")
    result = CliRunner().invoke(cli, ["run", str(single), "--scheduler", "tcp://x:1"])
    assert result.exit_code == 2
    assert "samples:" in result.output


def test_the_docs_example_of_several_sections_validates(tmp_path):
    import re

    from spatialfuse.workflow._samples_config import parse_samples_config

    docs = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    text = docs.read_text(encoding="utf-8")
    section = text[text.index("## Several sections") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    config = parse_samples_config(yaml.safe_load(block), base=tmp_path, source="docs")
    assert [s.name for s in config.samples] == ["A1", "B1"]
    b1 = config.sample("B1").config
    assert b1.modalities["msi"].kind == "imzml" and b1.modalities["msi"].pixel_size_um == 20
    assert b1.registrations[0].landmarks == tmp_path / "B1" / "landmarks.csv"


def test_ions_of_sections_are_matched_within_the_window():
    import anndata
    import numpy as np

    from spatialfuse.workflow._samples import _matched_ions

    def msi(mz):
        table = anndata.AnnData(np.arange(2 * len(mz), dtype=float).reshape(2, len(mz)))
        table.var_names = [f"mz-{v:.4f}" for v in mz]
        table.var["mz"] = mz
        return table

    first = msi([300.0, 400.0, 500.0])
    second = msi([500.002, 300.001, 400.1, 450.0])  # 400 is 250 ppm away: not the same ion
    matched = _matched_ions({"a": first, "b": second}, ppm=10.0)
    assert list(matched["a"].var_names) == list(matched["b"].var_names)
    assert list(matched["b"].var_names) == ["mz-300.0000", "mz-500.0000"]
    np.testing.assert_array_equal(matched["b"].X, second.X[:, [1, 0]])
    with pytest.raises(ValueError, match="share no ion"):
        _matched_ions({"a": first, "c": msi([600.0])}, ppm=10.0)
