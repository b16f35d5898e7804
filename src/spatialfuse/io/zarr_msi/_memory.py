"""Memory budgets: parsing ``max_memory`` and planning chunk-aligned tiles that fit in it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: Units accepted by :func:`parse_memory`: decimal (kB, MB, GB, TB) and binary (KiB … TiB).
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([A-Za-z]*)\s*$")

#: Smallest budget a conversion accepts.
MIN_MEMORY = 16 * 2**20
#: Allowance for what a conversion holds besides its tiles and per-spectrum state (zarr, small
#: arrays).
BASE_OVERHEAD = 6 * 2**20
#: What a conversion holds per spectrum whatever the tiles: the reader's offset table (~340 B),
#: coordinates, TIC and, while ``obs`` is written, its names (~230 B). Measured with tracemalloc.
PER_SPECTRUM_BYTES = 700
#: Target size of one stored chunk with the default chunk shape.
CHUNK_TARGET_BYTES = 8 * 2**20
#: Default number of m/z columns per chunk.
DEFAULT_CHUNK_COLS = 32
#: Input bytes per task where memory does not limit it (continuous files read through the map).
TASK_TARGET_BYTES = 256 * 2**20
#: At most this many chunks are handed to zarr in one write (zarr encodes them concurrently).
MAX_STRIPE_CHUNKS = 8
#: Target size of one shard (one file holding a row of chunks side by side) of a sharded store.
SHARD_TARGET_BYTES = 128 * 2**20
#: Most chunks in one shard.
MAX_SHARD_CHUNKS = 1024


def parse_memory(value) -> int:
    """Bytes in a size such as ``"2GB"``, ``"512 MiB"``, ``"1.5e9"`` or an integer number of bytes.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024;
    case is ignored. Raises :class:`ValueError` for anything else, or for a size that is not
    positive.
    """
    message = (
        "max_memory must be a positive size such as '2GB', '512MiB' or a number of bytes, "
        f"got {value!r}"
    )
    if isinstance(value, bool):
        raise ValueError(message)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(message) from None
        unit = ""
    elif isinstance(value, float):
        number, unit = value, ""
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is None or match.group(3).lower() not in _UNITS:
            raise ValueError(message)
        number = float(match.group(1) + (f"e{match.group(2)}" if match.group(2) else ""))
        unit = match.group(3).lower()
    else:
        raise ValueError(message)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(message)
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(message)
    return size


def format_bytes(n: float) -> str:
    """``n`` bytes in MiB or GiB, for messages."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Plan:
    """How a conversion cuts its output into chunks and its work into tiles.

    A tile is ``rows [r0, r1) × columns [c0, c1)`` of ``X``, aligned to chunk boundaries, so
    tiles processed by different workers never write the same chunk.
    """

    n_rows: int
    n_cols: int
    chunk_rows: int
    chunk_cols: int
    tile_cols: int
    stripe_chunks: int
    work_bytes: int
    budget: int
    #: Chunks side by side in one shard (one file); 1: no shards, one file per chunk.
    shard_chunks: int = 1

    @property
    def shards(self) -> tuple[int, int] | None:
        """``(rows, cols)`` of a shard, or None where each chunk is its own file."""
        if self.shard_chunks <= 1:
            return None
        return self.chunk_rows, self.chunk_cols * self.shard_chunks

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_rows * self.chunk_cols * 4

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """``(r0, r1, c0, c1)`` of every tile, row band by row band."""
        out = []
        for r0 in range(0, self.n_rows, self.chunk_rows):
            r1 = min(self.n_rows, r0 + self.chunk_rows)
            for c0 in range(0, max(self.n_cols, 1), self.tile_cols):
                out.append((r0, r1, c0, min(self.n_cols, c0 + self.tile_cols)))
        return out


def _balanced(total: int, most: int) -> int:
    """The smallest block size ``<= most`` that splits ``total`` into as few blocks as ``most``."""
    most = max(1, min(most, total))
    blocks = -(-total // most)
    return -(-total // blocks)


def usable_memory(n_spectra: int, budget: int) -> int:
    """Bytes of ``budget`` left for tiles once fixed and per-spectrum costs are set aside.

    Raises :class:`ValueError` (saying what would do) when the budget is below ``MIN_MEMORY`` or
    cannot hold ``n_spectra``'s per-spectrum state plus ``MIN_MEMORY / 2`` of tiles.
    """
    if budget < MIN_MEMORY:
        raise ValueError(
            f"max_memory={format_bytes(budget)} is below the minimum of {format_bytes(MIN_MEMORY)}"
        )
    per_spectrum = n_spectra * PER_SPECTRUM_BYTES
    usable = budget - BASE_OVERHEAD - per_spectrum
    if usable < MIN_MEMORY // 2:
        need = BASE_OVERHEAD + per_spectrum + MIN_MEMORY // 2
        raise ValueError(
            f"max_memory={format_bytes(budget)} is too small for {n_spectra:,} spectra: their "
            f"offset table and per-pixel metadata alone take about {format_bytes(per_spectrum)}; "
            f"give at least {format_bytes(need)}"
        )
    return usable


def plan_tiles(
    n_rows: int,
    n_cols: int,
    budget: int,
    *,
    chunks: tuple[int, int] | None = None,
    whole_band: bool = False,
    streamed: bool = False,
    shards: bool = False,
) -> Plan:
    """Choose chunk and tile shapes for an ``n_rows × n_cols`` float32 table within ``budget``.

    Parameters
    ----------
    n_rows, n_cols
        Shape of ``X`` (spectra × features).
    budget
        Bytes the conversion may hold at once (see :func:`parse_memory`).
    chunks
        ``(rows, cols)`` of a stored chunk; by default ``DEFAULT_CHUNK_COLS`` columns and as many
        rows as make about ``CHUNK_TARGET_BYTES`` (all rows where that is fewer).
    whole_band
        Prefer chunk rows such that a whole band (chunk rows × all columns) fits in one tile, so
        each spectrum is read once (processed data: its peaks are binned in one pass).
    streamed
        Tiles are copied straight from the memory-mapped input into zarr, without a tile buffer:
        tiles can then be as large as ``TASK_TARGET_BYTES`` regardless of the budget.
    shards
        Store chunks side by side in shards (one file each) of about ``SHARD_TARGET_BYTES`` (at
        most ``MAX_SHARD_CHUNKS`` chunks), as many as a quarter of the budget can encode at
        once; tiles and writes are then whole shards.
    """
    usable = usable_memory(n_rows, budget)
    n_rows_1, n_cols_1 = max(n_rows, 1), max(n_cols, 1)
    # A chunk must fit several times over: the tile, the copies zarr makes while writing it.
    max_chunk = usable // 8
    if chunks is not None:
        rows, cols = (int(c) for c in chunks)
        if rows < 1 or cols < 1:
            raise ValueError(f"chunks must be two positive integers (rows, cols), got {chunks!r}")
        rows, cols = min(rows, n_rows_1), min(cols, n_cols_1)
        if rows * cols * 4 > max_chunk:
            raise ValueError(
                f"chunks of {rows} × {cols} float32 values ({format_bytes(rows * cols * 4)}) do "
                f"not fit max_memory={format_bytes(budget)} (at most {format_bytes(max_chunk)} "
                "per chunk): give smaller chunks or a larger max_memory"
            )
    else:
        cols = min(DEFAULT_CHUNK_COLS, n_cols_1)
        most_rows = min(CHUNK_TARGET_BYTES, max_chunk) // (cols * 4)
        if whole_band:
            band_rows = (usable // 2) // (-(-n_cols_1 // cols) * cols * 4)
            # Not below chunks of 256 KiB: narrower bands would only multiply the files.
            most_rows = min(most_rows, max(band_rows, (256 * 2**10) // (cols * 4)))
        rows = _balanced(n_rows_1, max(1, most_rows))
    chunk_bytes = rows * cols * 4
    n_col_chunks = -(-n_cols_1 // cols)
    # zarr encodes a write's chunks in buffers of their own: a quarter of the budget holds them.
    encodable = max(1, (usable // 4) // (2 * chunk_bytes))
    stripe = min(MAX_STRIPE_CHUNKS, encodable)
    if streamed:
        tile_chunks = max(stripe, TASK_TARGET_BYTES // chunk_bytes)
    else:
        tile_chunks = max(1, (usable // 2) // chunk_bytes)
    shard_chunks = 1
    if shards:
        wanted = max(1, SHARD_TARGET_BYTES // chunk_bytes)
        shard_chunks = min(wanted, MAX_SHARD_CHUNKS, encodable, n_col_chunks, tile_chunks)
        if shard_chunks > 1:
            n_shards = -(-n_col_chunks // shard_chunks)
            shard_chunks = -(-n_col_chunks // n_shards)  # equal shards, the last one full too
            stripe = shard_chunks  # each write is one whole shard
    # Equal tiles, each a whole number of shards (of chunks, unsharded) wide.
    n_units = -(-n_col_chunks // shard_chunks)
    tile_units = max(1, min(n_cols_1, tile_chunks * cols) // (shard_chunks * cols))
    per_tile = -(-n_units // -(-n_units // tile_units))
    tile_cols = min(n_cols_1, per_tile * shard_chunks * cols)
    return Plan(
        n_rows=n_rows,
        n_cols=n_cols,
        chunk_rows=rows,
        chunk_cols=cols,
        tile_cols=tile_cols,
        stripe_chunks=stripe,
        work_bytes=max(1, usable // 4),
        budget=budget,
        shard_chunks=shard_chunks,
    )
