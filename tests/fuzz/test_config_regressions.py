"""Regression tests for run-config bugs the fuzzer found; each writes its minimal input.

Before the fixes: deeply nested YAML raised a bare RecursionError, some explicitly tagged values a
bare AttributeError or ValueError (inside PyYAML), a repeated key silently dropped a setting, and
``.inf``/``.nan`` passed as numbers (a pixel size of infinity validated).
"""

from __future__ import annotations

import threading

import pytest

from spatialfuse.errors import ConfigError
from spatialfuse.workflow._config import MAX_YAML_DEPTH, load_config

VALID = "modalities:\n  msi: {kind: imzml, path: msi.imzML, pixel_size_um: 20}\n"


def _load(tmp_path, text: str, timeout: float = 20.0):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    box = {}

    def run():
        try:
            box["config"] = load_config(path)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "load_config did not finish"
    return box, path


def _refused(tmp_path, text: str, match: str) -> ConfigError:
    box, path = _load(tmp_path, text)
    error = box.get("error")
    assert isinstance(error, ConfigError), repr(error)
    assert str(path) in str(error)
    assert match in str(error), str(error)
    return error


@pytest.mark.parametrize(
    "nested",
    [
        "[" * 100_000 + "]" * 100_000,
        "{a: " * 5_000 + "1" + "}" * 5_000,
        # 600 levels: deep enough, and under the 1 MiB config size limit (2 × 600²/2 bytes)
        "\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(600)),
    ],
    ids=["flow-list", "flow-map", "block"],
)
def test_deep_nesting_is_refused(tmp_path, nested):
    _refused(tmp_path, VALID + "extra: " + nested + "\n", f"more than {MAX_YAML_DEPTH} levels")


def test_nesting_within_the_limit_reaches_validation(tmp_path):
    nested = "[" * (MAX_YAML_DEPTH - 2) + "]" * (MAX_YAML_DEPTH - 2)
    _refused(tmp_path, VALID + "extra: " + nested + "\n", "extra: unknown key")


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!timestamp 12", "timestamp"),
        ("!!int abc", "int"),
        ("!!float x", "float"),
        ("!!float ''", "float"),  # an IndexError inside PyYAML
    ],
)
def test_unreadable_tagged_values_are_refused(tmp_path, value, tag):
    text = f"modalities:\n  msi: {{kind: imzml, path: msi.imzML, pixel_size_um: {value}}}\n"
    _refused(tmp_path, text, f"as tag:yaml.org,2002:{tag}")


@pytest.mark.parametrize("key", ["output", "kind"])
def test_a_repeated_key_is_refused(tmp_path, key):
    text = (
        "output: a\noutput: b\n" + VALID
        if key == "output"
        else "modalities:\n  msi:\n    kind: imzml\n    kind: visium\n    path: x\n"
    )
    error = _refused(tmp_path, text, f"the key {key!r} appears twice")
    assert "lines 1 and 2" in str(error) or "lines 3 and 4" in str(error)


def test_merge_keys_still_override(tmp_path):
    text = (
        "modalities:\n  a: &m {kind: imzml, path: a.imzML, pixel_size_um: 5}\n"
        "  b: {<<: *m, kind: histology, path: b.tif}\n"
    )
    box, _ = _load(tmp_path, text)
    config = box["config"]
    assert config.modalities["b"].kind == "histology"
    assert config.modalities["b"].pixel_size_um == 5
    assert config.modalities["b"].path.name == "b.tif"


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "!!float 1e400"])
@pytest.mark.parametrize("where", ["pixel_size_um", "resolution"])
def test_non_finite_numbers_are_refused(tmp_path, value, where):
    if where == "pixel_size_um":
        text = f"modalities:\n  msi: {{kind: imzml, path: m.imzML, pixel_size_um: {value}}}\n"
    else:
        text = VALID + f"clustering: {{resolution: {value}}}\n"
    _refused(tmp_path, text, "finite number")


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    # refused by the alias-expansion limit while parsing, before validation sees the 9⁹ values
    text = "\n".join(lines) + "\n" + VALID + "registrations: *a9\n"
    _refused(tmp_path, text, "through aliases")
