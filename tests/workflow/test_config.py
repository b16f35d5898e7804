"""The run config: the annotated example validates, and every mistake is named with its place."""

from __future__ import annotations

import pytest
import yaml

from spatialfuse.errors import ConfigError, MissingFileError
from spatialfuse.workflow._config import EXAMPLE_CONFIG, load_config, parse_config


def _example() -> dict:
    return yaml.safe_load(EXAMPLE_CONFIG)


def test_the_annotated_example_validates_and_resolves_paths(tmp_path):
    path = tmp_path / "project" / "config.yaml"
    path.parent.mkdir()
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    config = load_config(path)
    base = path.parent.resolve()
    assert config.modalities["msi"].path == base / "data" / "msi.imzML"
    assert config.modalities["visium"].path == base / "data" / "visium"
    assert config.output == base / "results"
    assert [r.name for r in config.registrations] == ["msi → he_msi", "he_msi → visium"]
    assert (config.msi_name, config.visium_name) == ("msi", "visium")
    assert config.mapping.method == "area"
    assert config.clustering.method == "concat"
    assert config.clustering.resolution == "auto"


def test_absolute_paths_are_kept(tmp_path):
    data = _example()
    data["modalities"]["msi"]["path"] = str(tmp_path / "elsewhere.imzML")
    config = parse_config(data, base=tmp_path / "base")
    assert config.modalities["msi"].path == tmp_path / "elsewhere.imzML"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["modalities"]["msi"].update(pixle_size_um=3), "modalities.msi.pixle_size_um"),
        (lambda d: d["modalities"]["msi"].update(kind="maldi"), "modalities.msi.kind"),
        (lambda d: d["modalities"]["msi"].update(pixel_size_um=-5), "greater than 0"),
        (lambda d: d["registrations"][0].update(model="elastic"), "registrations.0.model"),
        (lambda d: d["registrations"][1].update(fixed="visum"), "'visum', which is not a"),
        (lambda d: d["registrations"][0].update(fixed="msi"), "onto itself"),
        (lambda d: d["mapping"].update(method="closest"), "mapping.method"),
        (lambda d: d["mapping"].update(min_coverage=2), "mapping.min_coverage"),
        (lambda d: d["clustering"].update(method="kmeans"), "clustering.method"),
        (lambda d: d["modalities"]["visium"].update(pixel_size_um=1), "does not apply to Visium"),
        (lambda d: d.update(modalities={}), "at least one modality"),
        (lambda d: d["mapping"].update(msi="he_msi"), "not of kind 'imzml'"),
        (lambda d: d["registrations"].append(dict(d["registrations"][0])), "repeats msi → he_msi"),
    ],
)
def test_mistakes_are_named_with_their_place(edit, message):
    data = _example()
    edit(data)
    with pytest.raises(ConfigError, match="invalid config") as info:
        parse_config(data, base=".", source="my.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("my.yaml: ")


def test_two_msi_modalities_need_a_choice():
    data = _example()
    data["modalities"]["msi2"] = dict(data["modalities"]["msi"])
    del data["mapping"]["msi"]
    with pytest.raises(ConfigError, match="several imzml/msi_zarr modalities"):
        parse_config(data, base=".")
    data["mapping"]["msi"] = "msi2"
    assert parse_config(data, base=".").msi_name == "msi2"


def test_file_errors(tmp_path):
    with pytest.raises(MissingFileError, match="init-config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modalities: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(scalar)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=str(binary.name)):
        load_config(binary)


def test_the_config_reference_in_the_docs_is_the_example():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert EXAMPLE_CONFIG in docs.read_text(encoding="utf-8")


def test_max_tre_needs_landmarks():
    data = _example()
    data["registrations"][0]["max_tre_um"] = 20
    with pytest.raises(ConfigError, match="max_tre_um needs landmarks"):
        parse_config(data, base=".")


def _names_config(modalities: dict[str, str], registrations: list[tuple[str, str]]) -> dict:
    return {
        "modalities": {
            name: {"kind": kind, "path": f"{name}.x"} for name, kind in modalities.items()
        },
        "registrations": [{"moving": m, "fixed": f} for m, f in registrations],
    }


@pytest.mark.parametrize(
    ("modalities", "registrations", "named"),
    [
        # Characters a file name cannot hold become "_"; macOS and Windows ignore case.
        ({"H&E": "histology", "H_E": "histology"}, [], ["H&E", "H_E"]),
        ({"HE": "histology", "he": "histology"}, [], ["HE", "he"]),
        ({"a/b": "histology", "a:b": "histology"}, [], ["a/b", "a:b"]),
        (
            {"x_to_y": "histology", "z": "histology", "x": "histology", "y_to_z": "histology"},
            [("x_to_y", "z"), ("x", "y_to_z")],
            ["x_to_y → z", "x → y_to_z"],
        ),
        (
            {"X_to_y": "histology", "z": "histology", "x": "histology", "y_to_Z": "histology"},
            [("X_to_y", "z"), ("x", "y_to_Z")],
            ["X_to_y → z", "x → y_to_Z"],
        ),
        # The composed MSI → Visium transform is written beside the registrations.
        (
            {"a_to_b": "imzml", "c": "visium", "a": "histology", "b_to_c": "histology"},
            [("a", "b_to_c")],
            ["a → b_to_c", "a_to_b → c"],
        ),
    ],
)
def test_names_whose_output_files_coincide_are_refused(modalities, registrations, named):
    with pytest.raises(ConfigError, match="would") as info:
        parse_config(_names_config(modalities, registrations), base=".")
    for name in named:
        assert name in str(info.value)


def test_a_direct_msi_to_visium_registration_is_not_a_collision():
    config = parse_config(
        _names_config({"msi": "imzml", "visium": "visium"}, [("msi", "visium")]), base="."
    )
    assert (config.msi_name, config.visium_name) == ("msi", "visium")


def test_registration_keys_of_real_slides():
    """pixel_size_um: auto (histology only), scale, channel, start_from_landmarks."""
    data = _example()
    data["modalities"]["he_msi"]["pixel_size_um"] = "auto"
    data["registrations"][0].update(scale="estimate", channel="gray")
    config = parse_config(data, base=".")
    assert config.modalities["he_msi"].pixel_size_um == "auto"
    assert (config.registrations[0].scale, config.registrations[0].channel) == ("estimate", "gray")
    data["modalities"]["msi"]["pixel_size_um"] = "auto"
    with pytest.raises(ConfigError, match="applies to histology images"):
        parse_config(data, base=".")
    data = _example()
    data["registrations"][0]["start_from_landmarks"] = True
    with pytest.raises(ConfigError, match="start_from_landmarks needs landmarks"):
        parse_config(data, base=".")
    data["registrations"][0]["scale"] = "sometimes"
    with pytest.raises(ConfigError, match="scale"):
        parse_config(data, base=".")
