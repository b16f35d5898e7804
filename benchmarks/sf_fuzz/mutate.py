"""Byte- and text-level mutators shared by the readers' case builders.

Every function takes a ``numpy.random.Generator`` and returns new bytes; none modifies its input.
"""

from __future__ import annotations

import re

import numpy as np

#: Integers at the edges of the types a reader might store them in, and some small ones.
EDGE_INTS = (
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    15,
    16,
    17,
    255,
    256,
    4095,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53,
    2**53 + 1,
    2**62,
    2**63 - 1,
    2**63,
    2**64,
    -(2**31),
    -(2**63),
    -(2**63) - 1,
    10**18,
    10**30,
)
#: Number-like and not-quite-number text.
ODD_NUMBERS = (
    "",
    " ",
    "-0",
    "+1",
    "1.5",
    "2.0",
    "1e3",
    "1e308",
    "1e309",
    "-1e309",
    "1e-320",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "0x10",
    "1_000",
    "\uff11\uff12",  # full-width digits
    "abc",
    "null",
    "true",
    "9" * 40,
    "-",
    ".",
    "1,5",
    " 7 ",
    "0" * 30 + "5",
    "1" + "0" * 400,
)
#: Bytes that mean something to XML, CSV, JSON or YAML.
SPECIAL_BYTES = b"<>&;\"'=/!?[]{}:,#-*|%@`\\\t\r\n \x00\xff\x80"


def pick(rng: np.random.Generator, items, default=None):
    """A random element of ``items`` (``default`` when there is none)."""
    if not len(items):
        return default
    return items[int(rng.integers(len(items)))]


def odd_number(rng: np.random.Generator, near: int | None = None) -> str:
    """An integer at a type edge, a near miss of ``near``, or number-like text."""
    roll = rng.random()
    if near is not None and roll < 0.35:
        delta = int(pick(rng, (1, 2, 3, 4, 7, 8, 16, 100, 4096, 1 << 20)))
        return str(pick(rng, (near + delta, near - delta, near * 2, near * 8, near // 2, -near, 0)))
    if roll < 0.7:
        return str(pick(rng, EDGE_INTS))
    return pick(rng, ODD_NUMBERS)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """Cut ``data`` short: anywhere, near the end, or to nothing."""
    if not data:
        return data
    roll = rng.random()
    if roll < 0.1:
        return b""
    if roll < 0.4:
        return data[: max(0, len(data) - int(rng.integers(1, min(len(data), 64) + 1)))]
    return data[: int(rng.integers(0, len(data)))]


def flip_bits(data: bytes, rng: np.random.Generator, lo: int = 0, hi: int | None = None) -> bytes:
    """Flip 1-8 random bits within ``data[lo:hi]``."""
    hi = len(data) if hi is None else min(hi, len(data))
    if hi <= lo:
        return data
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(lo, hi))
        out[pos] ^= 1 << int(rng.integers(8))
    return bytes(out)


def set_special_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite 1-4 random bytes with characters that are syntax somewhere."""
    if not data:
        return data
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        out[int(rng.integers(len(out)))] = SPECIAL_BYTES[int(rng.integers(len(SPECIAL_BYTES)))]
    return bytes(out)


def delete_range(data: bytes, rng: np.random.Generator, max_len: int = 256) -> bytes:
    """Remove a random run of bytes."""
    if not data:
        return data
    start = int(rng.integers(len(data)))
    return data[:start] + data[start + int(rng.integers(1, max_len + 1)) :]


def duplicate_range(data: bytes, rng: np.random.Generator, max_len: int = 512) -> bytes:
    """Repeat a random run of bytes in place (1-3 extra copies)."""
    if not data:
        return data
    start = int(rng.integers(len(data)))
    chunk = data[start : start + int(rng.integers(1, max_len + 1))]
    return data[:start] + chunk * int(rng.integers(2, 5)) + data[start + len(chunk) :]


def splice(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """Replace a run of ``data`` with a run of ``other``."""
    if not data or not other:
        return data
    a = int(rng.integers(len(data)))
    b = min(len(data), a + int(rng.integers(1, 2048)))
    c = int(rng.integers(len(other)))
    d = min(len(other), c + int(rng.integers(1, 2048)))
    return data[:a] + other[c:d] + data[b:]


def replace_match(text: bytes, pattern: re.Pattern, rng: np.random.Generator, make) -> bytes:
    """Replace group 1 of a random match of ``pattern`` with ``make(old_group_text)``.

    Returns ``text`` unchanged when nothing matches.
    """
    matches = list(pattern.finditer(text))
    if not matches:
        return text
    match = pick(rng, matches)
    new = make(match.group(1))
    if isinstance(new, str):
        new = new.encode("utf-8")
    return text[: match.start(1)] + new + text[match.end(1) :]


def as_int(raw: bytes) -> int | None:
    """``raw`` as a plain decimal integer, or None."""
    try:
        return int(raw.decode("ascii").strip()) if re.fullmatch(rb"\s*-?\d+\s*", raw) else None
    except (UnicodeDecodeError, ValueError):
        return None


def deep_nesting(depth: int, open_: bytes, close: bytes) -> bytes:
    """``open_`` ``depth`` times, then ``close`` ``depth`` times."""
    return open_ * depth + close * depth


DAMAGE = ("truncate", "flip_bits", "special_bytes", "delete_range", "duplicate_range")


def damage(data: bytes, rng: np.random.Generator, kinds=DAMAGE, lo: int = 0) -> tuple[bytes, str]:
    """One random kind of generic damage from ``kinds`` (bit flips from byte ``lo`` on)."""
    kind = pick(rng, kinds)
    if kind == "truncate":
        return truncate(data, rng), kind
    if kind == "flip_bits":
        return flip_bits(data, rng, lo), kind
    if kind == "special_bytes":
        return set_special_bytes(data, rng), kind
    if kind == "delete_range":
        return delete_range(data, rng, 64), kind
    return duplicate_range(data, rng, 128), kind
