"""What every decoder provides: a source (levels, channels, calibration) and level readers.

A level reader returns processed ``(h, w, C)`` regions of one level (rows, columns, channels)
while its file is open; decoder failures become :class:`~spatialfuse.errors.FileFormatError`
naming the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spatialfuse.errors import FileFormatError, MissingFileError, SpatialfuseError
from spatialfuse.io.histology._blocks import _BLOCK_BYTES
from spatialfuse.io.histology._units import _Calibration

#: The most a file's pixel bytes may inflate where no bound per codec applies (JPEG, JPEG 2000,
#: WebP, ...; see ``_TIFF_MAX_RATIO``): whole-slide levels stay far below it.
_IMAGE_MAX_RATIO = 2000
#: Slack on those bounds, for headers, row padding and tiny images.
_RATIO_SLACK_BYTES = 4096


@contextlib.contextmanager
def _translate_errors(path: Path, action: str) -> Iterator[None]:
    """Re-raise decoder / parser failures as :class:`FileFormatError` naming the file."""
    try:
        yield
    except (SpatialfuseError, MemoryError, KeyboardInterrupt):
        raise
    except FileNotFoundError as exc:
        raise MissingFileError(path, f"disappeared while {action}") from exc
    except Exception as exc:  # decoders raise anything: OSError, ValueError, RuntimeError, ...
        raise FileFormatError(
            path,
            f"cannot be read ({action} failed: {type(exc).__name__}: {exc}); "
            "the file is truncated, corrupt or not a valid image",
        ) from exc


class _LevelReader:
    """Reads processed ``(h, w, C)`` regions of one level while its file is open."""

    shape: tuple[int, int]
    chunks: tuple[int, int]

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class _ArrayReader(_LevelReader):
    """A level decoded whole into memory (JPEG, PNG): regions are slices of it."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = (int(array.shape[0]), int(array.shape[1]))
        rows = max(1, _BLOCK_BYTES // max(1, array.shape[1] * array.shape[2] * array.itemsize))
        self.chunks = (min(rows, self.shape[0]), self.shape[1])

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if (y0, x0) == (0, 0) and (y1, x1) == self.shape:
            return self.array
        return self.array[y0:y1, x0:x1].copy()


class _Source:
    format: str
    level_shapes: list[tuple[int, int]]
    n_channels: int
    dtype: np.dtype
    calibration: _Calibration
    details: list[str]
    levels_note: str = ""

    def reader(self, level: int) -> contextlib.AbstractContextManager[_LevelReader]:
        raise NotImplementedError  # pragma: no cover


def _check_declared_size(
    path: Path, width: int, height: int, nbytes: int, kind: str, *, ratio: int = _IMAGE_MAX_RATIO
) -> None:
    """Refuse a header declaring more pixel bytes than the file can hold (before decoding)."""
    size = os.path.getsize(path)
    if nbytes > size * ratio + _RATIO_SLACK_BYTES:
        raise FileFormatError(
            path,
            f"its {kind} header declares {width:,} × {height:,} pixels ({nbytes:,} bytes), more "
            f"than its {size:,} bytes can hold: the header is damaged",
        )
