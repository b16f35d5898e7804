"""Block reduction: ``k × k`` block means of a level, read a strip of chunks at a time.

Block ``(i, j)`` of the result averages the pixels ``[i·k, (i + 1)·k) × [j·k, (j + 1)·k)`` of the
level (partial blocks at the right and bottom edges average the pixels they have), so its pixel
size is ``k`` times the level's and every full block sits where its pixels were.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse.io.histology._color import _cast

if TYPE_CHECKING:
    from spatialfuse.io.histology._source import _LevelReader

#: Bytes of pixel data read at once while downsampling block-wise (a strip of tiles).
_BLOCK_BYTES = 8 * 2**20


def _block_mean(block: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k × k`` blocks of ``(h, w, c)``; partial blocks at the end average real pixels.

    Sums ``k`` strided row slices, then ``k`` strided column slices of those, each in the
    smallest exact accumulator (``uint16`` for 8-bit pixels and small ``k``): about ten times
    faster than a float64 reduction over a reshaped view, which for an 8000-pixel H&E was most
    of a registration's extra time. The result is float64 of shape ``(ceil(h / k), ceil(w / k),
    c)``.
    """
    h, w, c = block.shape
    kind = block.dtype.kind
    top = 1 if kind == "b" else int(np.iinfo(block.dtype).max) if kind in "ui" else 0
    if kind in "ub" and top * k * k <= np.iinfo(np.uint64).max:
        row_acc, acc = np.min_scalar_type(top * k), np.min_scalar_type(top * k * k)
    elif kind == "i" and (top + 1) * k * k <= np.iinfo(np.int64).max:
        row_acc = acc = np.dtype(np.int64)
    else:  # floats, and 64-bit integers whose sums could overflow
        row_acc = acc = np.dtype(np.float64)
    nh, nw = -(-h // k), -(-w // k)
    rows = np.zeros((nh, w, c), row_acc)
    for i in range(min(k, h)):
        part = block[i::k]
        rows[: len(part)] += part
    out = np.zeros((nh, nw, c), acc)
    for j in range(min(k, w)):
        part = rows[:, j::k]
        out[:, : part.shape[1]] += part
    count_rows = np.minimum(k, h - np.arange(nh) * k)
    count_cols = np.minimum(k, w - np.arange(nw) * k)
    return out / (count_rows[:, None, None] * count_cols[None, :, None]).astype(np.float64)


def _block_step(chunk: int, k: int, n: int, target: int) -> int:
    """Return a block length on one axis: a multiple of ``k``, chunk-aligned if cheap, or ``n``."""
    if chunk >= n or target >= n:
        return n
    base = math.lcm(chunk, k)
    if base > 4 * max(chunk, k):
        base = k * -(-chunk // k)
    step = base * max(1, target // base)
    return n if step >= n else step


def _reduce_level(reader: _LevelReader, k: int, dtype: np.dtype, n_channels: int) -> np.ndarray:
    """Block-mean a level by ``k``, reading it a strip of chunks at a time."""
    h, w = reader.shape
    if k == 1:
        return reader.region(0, h, 0, w)
    ch, cw = reader.chunks
    itemsize = np.dtype(dtype).itemsize
    sc = _block_step(cw, k, w, target=2048)
    rows = max(k, _BLOCK_BYTES // max(1, sc * n_channels * itemsize))
    sr = _block_step(ch, k, h, target=rows)
    out = np.empty((-(-h // k), -(-w // k), n_channels), dtype)
    for y0 in range(0, h, sr):
        y1 = min(y0 + sr, h)
        for x0 in range(0, w, sc):
            x1 = min(x0 + sc, w)
            block = reader.region(y0, y1, x0, x1)
            out[y0 // k : -(-y1 // k), x0 // k : -(-x1 // k)] = _cast(_block_mean(block, k), dtype)
            del block
    return out
