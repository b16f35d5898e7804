"""Small imzML files with known content for the fuzz regression tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from spatialfuse.datasets._writers import write_imzml
from spatialfuse.io.imzml import ImzMLReader

COORDS = np.array([(x, y) for y in range(1, 4) for x in range(1, 5)])


def write_small_imzml(
    folder: Path, *, peaks=None, values=None, name: str = "a"
) -> tuple[Path, list, list]:
    """A processed 4 × 3 imzML + ibd pair; returns its path, m/z arrays and intensities."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    if peaks is None:
        peaks = [np.sort(rng.uniform(100, 1000, 8)) for _ in COORDS]
    if values is None:
        values = [rng.gamma(2.0, 50.0, p.size) for p in peaks]
    path, _ = write_imzml(
        folder / f"{name}.imzML",
        COORDS,
        peaks,
        values,
        mode="processed",
        pixel_size_um=(10.0, 10.0),
        uuid_bytes=bytes(range(16)),
        version="test",
    )
    return path, peaks, values


def edit(path: Path, fn) -> None:
    """Rewrite ``path`` with ``fn(bytes)``, which must change it."""
    text = path.read_bytes()
    new = fn(text)
    assert new != text, "the edit did not change the file"
    path.write_bytes(new)


def open_quietly(path: Path, **kwargs) -> ImzMLReader:
    """An uncached reader, warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImzMLReader(path, cache=False, **kwargs)
