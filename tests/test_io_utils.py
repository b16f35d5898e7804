"""Atomic writes: nothing under the final name until complete, and normal file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from spatialfuse._io_utils import atomic_path


def test_atomic_file_gets_the_permissions_of_a_normal_new_file(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(reference).st_mode)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
