"""Run configs that would take minutes or block: refused at once with a ConfigError."""

from __future__ import annotations

import os
import time

import pytest

from spatialfuse._limits import limits
from spatialfuse.errors import ConfigError, FileFormatError
from spatialfuse.workflow import load_config

VALID = """\
output: out
modalities:
  he: {kind: histology, path: he.png, pixel_size_um: 1.0}
"""


def _billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return VALID + "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_billion_laughs(), encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values") as info:
        load_config(path)
    assert time.perf_counter() - start < 5
    assert str(path) in str(info.value)


def test_a_few_aliases_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "output: out\nmodalities:\n  he: &he {kind: histology, path: he.png, pixel_size_um: 1}\n"
        "  he2: *he\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert set(config.modalities) == {"he", "he2"}
    with limits(max_config_nodes=5), pytest.raises(ConfigError, match="more than 5 values"):
        load_config(path)


def test_huge_config_is_refused_by_size(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "# " + "x" * (27 << 20) + "\n", encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="larger than 1,048,576 bytes"):
        load_config(path)
    assert time.perf_counter() - start < 5


def test_fifo_config_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    with pytest.raises(FileFormatError, match="named pipe"):
        load_config(path)


def test_limits_section_validates(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(VALID + "limits: {max_decoded_image_bytes: 1000, max_spots: 7}\n", "utf-8")
    config = load_config(path)
    assert config.limits.max_decoded_image_bytes == 1000 and config.limits.max_spots == 7
    path.write_text(VALID + "limits: {max_spots: 0}\n", "utf-8")
    with pytest.raises(ConfigError, match=r"limits\.max_spots"):
        load_config(path)
