"""The fast spectrum scanner: a vectorised literal scan plus numpy, for regular files.

Nearly every imzML writer emits the same text for every spectrum; only the numbers differ. This
scanner finds the ``IMS:1000…`` accession tokens with a chunked numpy search, then parses and checks
everything with vectorised numpy:

* each position/offset/length value sits where it sits in the first spectrum, relative to its
  accession, behind ``value="``, and is a plain non-negative integer; the element holding it is a
  cvParam written byte for byte like the first spectrum's up to the accession;
* every spectrum has one x and one y; every array one offset, one length (and one encoded length if
  any array has one), in the same order as the first array;
* every ``<binaryDataArray>`` is the first array of its kind (m/z or intensity) up to the digits
  of its numbers: its start tag and param-group reference sit at the same distance before its
  first accession, and ``</binaryDataArray>`` at the same distance after its last, digits
  discounted — so no inline
  declaration (a data type, a compression) can hide in it;
* the first array of each kind references one param group and holds no cvParam but its external
  offset/lengths (so an inline declaration written into *every* array cannot pass as the layout);
* there are no other ``<binaryDataArray>`` elements (one without accessions would go unseen).

When any check fails it raises :class:`NotRegular` and the caller uses the general scanner, which is
also the reference this one is tested against.
"""

from __future__ import annotations

import functools
import mmap
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from spatialfuse.io.imzml._access import give_back_pages
from spatialfuse.io.imzml._header import ImzMLHeader
from spatialfuse.io.imzml._scan_template import NotTemplate, TokenScan, scan_template
from spatialfuse.io.imzml._table import MISSING, SpectrumTable, dtype_code

_TOKEN = b"IMS:1000"
_ARRAY_END = b"</binaryDataArray>"
_ARRAY_START = b"<binaryDataArray"
_VALUE = b'value="'
_VALUE_BYTES = np.frombuffer(_VALUE, np.uint8)
_ARRAY_KEYS = (102, 103, 104)
_ALL_KEYS = (50, 51, 52, *_ARRAY_KEYS)
_MAX_DIGITS = 19
_CHUNK = 1 << 21
#: Bytes of the document per range where the scan is shared out (``map_ranges``).
RANGE_BYTES = 64 << 20
_ACCESSION_RE = re.compile(rb"""\baccession\s*=\s*["']([^"']*)["']""")
_CVPARAM_HEAD = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?cvParam\s[^<>]*\baccession\s*=\s*\"$")
_TAG_RE = re.compile(rb"<\s*(/?)\s*(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")


class NotRegular(Exception):
    """The file's spectra do not share one layout; use the general scanner."""


def find_literals(
    arr: np.ndarray, literals, start: int, end: int, *, stop: int | None = None
) -> list[np.ndarray]:
    """Offsets of every occurrence of each of ``literals`` in ``arr[start:end]``, in one pass.

    With ``stop`` (at least ``end``): the occurrences that *start* in ``[start, end)`` and end by
    ``stop``, so ranges ``[a, b), [b, c), …`` with the same ``stop`` share out the occurrences
    of ``arr[a:stop]``, each found by exactly one range.

    Candidates are the places of each literal's byte that is rarest in the first MiB of the range
    (for ``<binaryDataArray``, its ``D`` rather than ``<``, which starts every tag); the other
    bytes are then compared at those places only. The range is read in chunks small enough to
    stay in the CPU cache while every literal looks through them (on a 217 MB file, two literals
    in one pass of 2 MiB chunks took 115 ms, in two passes of 16 MiB chunks 210 ms).
    """
    stop = end if stop is None else max(stop, end)
    longest = max(len(lit) for lit in literals)
    sample = arr[start : min(end, start + (1 << 20))]
    counts = np.bincount(sample, minlength=256) if sample.size else np.zeros(256, np.int64)
    anchors = [min(range(len(lit)), key=lambda k: counts[lit[k]]) for lit in literals]
    found: list[list[np.ndarray]] = [[] for _ in literals]
    for a in range(start, end, _CHUNK):
        b = min(end, a + _CHUNK)
        # The last chunk reaches past ``end`` for the anchors of occurrences starting before it.
        chunk = arr[a : b if b < end else min(stop, end + longest)]
        for literal, anchor, out in zip(literals, anchors, found, strict=True):
            candidates = np.flatnonzero(chunk == literal[anchor]) + (a - anchor)
            candidates = candidates[
                (candidates >= start) & (candidates < end) & (candidates + len(literal) <= stop)
            ]
            keep = np.ones(candidates.size, dtype=bool)
            for k in range(len(literal)):
                if k != anchor:
                    keep &= arr[candidates + k] == literal[k]
            out.append(candidates[keep])
    return [np.concatenate(f) if f else np.empty(0, np.int64) for f in found]


def _matches(arr: np.ndarray, positions: np.ndarray, expected: bytes) -> np.ndarray:
    """Per position, whether ``arr[p:p + len(expected)] == expected``."""
    ok = (positions >= 0) & (positions + len(expected) <= arr.size)
    if not positions.size:
        return ok
    rows = sliding_window_view(arr, len(expected))[np.where(ok, positions, 0)]
    return ok & (rows == np.frombuffer(expected, np.uint8)).all(axis=1)


def _require(arr: np.ndarray, positions: np.ndarray, expected: bytes, what: str) -> None:
    if positions.size and not _matches(arr, positions, expected).all():
        raise NotRegular(what)


def _parse_tokens(
    arr: np.ndarray, tokens: np.ndarray, value_at: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key, integer value and digit count of every ``IMS:1000xyz`` token.

    ``value_at[key]`` is the distance from the token to its value's first digit. The 13 bytes
    around each token (its quotes and key) are copied into the rows of a small 2-D array, then, per
    key, the bytes from ``value="`` to past the longest number; tokens with other keys get key -1.
    Copying only those two windows moves half the bytes of one window over both.
    """
    keys_out = np.full(tokens.size, -1, dtype=np.int64)
    values = np.zeros(tokens.size, dtype=np.int64)
    ndigits = np.zeros(tokens.size, dtype=np.int64)
    value_width = len(_VALUE) + _MAX_DIGITS + 1
    if tokens.size and (
        tokens.min() < 1 or tokens.max() + max(value_at.values()) + _MAX_DIGITS + 1 >= arr.size
    ):
        raise NotRegular("token too close to the start or end of the document")
    heads = sliding_window_view(arr, 13)
    tails = sliding_window_view(arr, value_width)
    step = max(1, (32 << 20) // value_width)
    for a in range(0, tokens.size, step):
        b = min(tokens.size, a + step)
        rows = heads[tokens[a:b] - 1]  # rows[:, 0] is the quote before the token
        if not ((rows[:, 0] == 34) & (rows[:, 12] == 34)).all():
            raise NotRegular("IMS:1000 outside an accession attribute")
        keys = (
            (rows[:, 9].astype(np.int64) - 48) * 100
            + (rows[:, 10].astype(np.int64) - 48) * 10
            + (rows[:, 11].astype(np.int64) - 48)
        )
        for key, d in value_at.items():
            sel = np.flatnonzero(keys == key)
            if sel.size == 0:
                continue
            sub = tails[tokens[a + sel] + d - len(_VALUE)]
            if not (sub[:, : len(_VALUE)] == _VALUE_BYTES).all():
                raise NotRegular(f"IMS:1000{key:03d} written in different ways")
            text = sub[:, len(_VALUE) :]
            is_digit = (text >= 48) & (text <= 57)
            count = np.argmin(is_digit, axis=1)
            if not ((text[np.arange(sel.size), count] == 34) & (count > 0)).all():
                raise NotRegular("a value is not a plain non-negative integer")
            number = np.zeros(sel.size, dtype=np.int64)
            for k in range(int(count.max())):
                more = k < count
                number = np.where(more, number * 10 + (text[:, k].astype(np.int64) - 48), number)
            keys_out[a + sel] = key
            values[a + sel] = number
            ndigits[a + sel] = count
        unexpected = np.isin(keys, [k for k in _ALL_KEYS if k not in value_at])
        if unexpected.any():
            raise NotRegular("an accession appears that the first spectrum does not have")
    return keys_out, values, ndigits


@dataclass(frozen=True)
class ScanRange:
    """One byte range of the fast scan, to run anywhere (:func:`scan_range`).

    Attributes
    ----------
    path
        The ``.imzML`` file (a worker maps it itself).
    start, end
        Tokens starting in ``[start, end)`` are this range's.
    stop
        End of the spectrum list: tokens and their values may run past ``end`` up to here.
    value_at, heads
        From the first spectrum: per accession key, the distance from its token to its value,
        and the text its cvParam starts with.
    """

    path: str
    start: int
    end: int
    stop: int
    value_at: dict[int, int]
    heads: dict[int, bytes]


def _scan_range(arr: np.ndarray, task: ScanRange) -> dict[str, np.ndarray]:
    """The per-token work of a byte range: find, parse and check every accession token."""
    tokens, array_starts = find_literals(
        arr, (_TOKEN, _ARRAY_START), task.start, task.end, stop=task.stop
    )
    keys, values, digits = _parse_tokens(arr, tokens, task.value_at)
    for key, head in task.heads.items():
        # Each value sits in a cvParam written like the first spectrum's, from its "<" on.
        at = tokens[keys == key]
        _require(arr, at - len(head), head, f"IMS:1000{key:03d} in another element")
    return {
        "tokens": tokens,
        "keys": keys,
        "values": values,
        "digits": digits,
        "array_starts": array_starts,
    }


def scan_range(task: ScanRange) -> dict[str, np.ndarray]:
    """:func:`_scan_range` of ``task`` on the file it names (on a worker, say).

    Raises
    ------
    NotRegular
        The range's tokens are not written like the first spectrum's.
    """
    with open(task.path, "rb") as handle:
        mm = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _scan_range(np.frombuffer(mm, dtype=np.uint8), task)
    finally:
        try:
            mm.close()
        except BufferError:
            pass  # a view is still alive somewhere; the map goes with it


def _give_back(buf, start: int, stop: int) -> None:
    """:func:`give_back_pages` of ``buf[start:stop]`` where ``buf`` is a large file map.

    Documents under :data:`RANGE_BYTES` are left alone.
    """
    if isinstance(buf, mmap.mmap) and len(buf) > RANGE_BYTES:
        give_back_pages(buf, start, stop)


def template_scan(buf, header: ImzMLHeader) -> SpectrumTable:
    """:func:`~._scan_template.scan_template` with this module's token scan as its check.

    Raises :class:`~._scan_template.NotTemplate` where the document is not that regular.
    """
    token = TokenScan(
        scan=functools.partial(scan_fast, template=False),
        give_back=_give_back,
        range_bytes=RANGE_BYTES,
    )
    return scan_template(buf, header, token)


def byte_ranges(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into ranges of ``size`` bytes (the last one shorter)."""
    size = max(1, int(size))
    return [(a, min(end, a + size)) for a in range(start, end, size)] or [(start, end)]


def _value_offset(buf, token: int) -> int:
    """Distance from an accession token to its value's first character (first spectrum)."""
    element_end = buf.find(b">", token)
    value = buf.find(_VALUE, token, element_end)
    if value < 0:
        raise NotRegular("value attribute missing or before the accession")
    return value + len(_VALUE) - token


def scan_fast(
    buf,
    header: ImzMLHeader,
    *,
    map_ranges: Callable | None = None,
    path=None,
    template: bool = True,
) -> SpectrumTable:
    """Build the offset table by literal scan and numpy; raise :class:`NotRegular` if unsure.

    Parameters
    ----------
    buf
        The whole ``.imzML`` document (bytes or a memory map).
    header
        Its parsed header.
    map_ranges
        Where the per-token work runs: None, here; or ``map_ranges(scan_range, tasks)``
        returning the results of :func:`scan_range` for the :class:`ScanRange` tasks in order
        (``executor.map`` of a process pool, or a dask client's map): the document is cut into
        ranges of :data:`RANGE_BYTES` and the results merged, the same table as one range.
    path
        The ``.imzML`` file, which ``map_ranges``' workers open; needed with ``map_ranges``.
    template
        Try the template scan first (:mod:`._scan_template`: the same table, in about a third of
        the time, where every spectrum is written as the first one), unless ``map_ranges`` is
        given; the token scan below where it does not apply.
    """
    if template and map_ranges is None:
        try:
            return template_scan(buf, header)
        except NotTemplate:
            pass
    start, end = header.body_start, header.body_end
    n = header.spectrum_count
    if not n:
        raise NotRegular("spectrumList has no count")
    groups = {
        spec.kind: (name, spec)
        for name, spec in header.array_groups.items()
        if spec.kind in ("mz", "intensity")
    }
    if len(groups) != 2 or sum(s.kind in groups for s in header.array_groups.values()) != 2:
        raise NotRegular("param groups do not declare exactly one m/z and one intensity array")
    if any(spec.dtype is None for _, spec in groups.values()):
        raise NotRegular("array group without a data type")
    arr = np.frombuffer(buf, dtype=np.uint8)

    first_spectrum_end = buf.find(b"</spectrum>", start, end)
    if first_spectrum_end < 0:
        raise NotRegular("no </spectrum>")
    value_at = {}
    element_head: dict[int, bytes] = {}
    for key in (50, 51, 52, *_ARRAY_KEYS):
        first = buf.find(b'"IMS:1000%03d"' % key, start, first_spectrum_end)
        if first >= 0:
            value_at[key] = _value_offset(buf, first + 1)
            element_head[key] = bytes(buf[buf.rfind(b"<", start, first) : first + 1])
            if not _CVPARAM_HEAD.match(element_head[key]):
                raise NotRegular(f"IMS:1000{key:03d} is not in a cvParam")
        elif key not in (52, 104):
            raise NotRegular(f"no IMS:1000{key:03d} in the first spectrum")
    # The per-token work, in byte ranges (here, or wherever map_ranges runs them), merged.
    # A large document is scanned range by range here too, each range's pages given back once
    # done (a 4.8 GB document kept 4.8 GB of mapped pages resident otherwise).
    ranges = byte_ranges(start, end, RANGE_BYTES)
    tasks = [ScanRange(str(path), a, b, end, value_at, element_head) for a, b in ranges]
    if map_ranges is None or len(tasks) < 2:
        parts = []
        for task in tasks:
            parts.append(_scan_range(arr, task))
            _give_back(buf, task.start, task.end)
    else:
        parts = list(map_ranges(scan_range, tasks))
    tokens, keys, all_values, all_digits, array_starts = (
        np.concatenate([part[name] for part in parts])
        for name in ("tokens", "keys", "values", "digits", "array_starts")
    )
    pos: dict[int, np.ndarray] = {}
    values: dict[int, np.ndarray] = {}
    digits: dict[int, np.ndarray] = {}
    for key in value_at:
        sel = keys == key
        pos[key], values[key], digits[key] = tokens[sel], all_values[sel], all_digits[sel]

    # Spectra: one x and one y each, y following x at the first spectrum's distance.
    px, py = pos[50], pos[51]
    if px.size != n or py.size != n:
        raise NotRegular("position count differs from the spectrumList count")
    gap = py - px - digits[50]
    if not (gap == gap[0]).all() or gap[0] <= 0 or (px[1:] <= py[:-1]).any():
        raise NotRegular("x and y positions are not written alike in every spectrum")
    z = np.ones(n, dtype=np.int64)
    if 52 in pos:
        pz = pos[52]
        if pz.size != n or not (np.searchsorted(px, pz, side="right") - 1 == np.arange(n)).all():
            raise NotRegular("z positions not one per spectrum")
        z = values[52]

    # Arrays: tokens come in the same order in every array.
    present = [k for k in _ARRAY_KEYS if k in pos]
    if any(pos[k].size != 2 * n for k in present):
        raise NotRegular("not exactly two external arrays per spectrum")
    merged = np.concatenate([pos[k] for k in present])
    merged_keys = np.concatenate([np.full(pos[k].size, k) for k in present])
    order = np.argsort(merged, kind="stable")
    merged, merged_keys = merged[order], merged_keys[order]
    per_array = len(present)
    template = merged_keys[:per_array]
    if (
        sorted(template.tolist()) != present
        or not (merged_keys.reshape(-1, per_array) == template).all()
    ):
        raise NotRegular("array accessions not in the same order in every array")
    first_token = merged[0::per_array]
    last_token = merged[per_array - 1 :: per_array]
    last_key = int(template[-1])
    if not (np.searchsorted(px, first_token, side="right") - 1 == np.repeat(np.arange(n), 2)).all():
        raise NotRegular("arrays are not two per spectrum after its position")
    if (first_token[0::2] < py).any():
        raise NotRegular("arrays precede the positions")
    # Each key's tokens are in array order, so digits[k][j] belongs to array j.
    preceding_digits = np.zeros((2 * n, per_array), dtype=np.int64)
    for i in range(1, per_array):
        preceding_digits[:, i] = preceding_digits[:, i - 1] + digits[int(template[i - 1])]
    within = merged.reshape(-1, per_array) - first_token[:, None] - preceding_digits
    if not (within == within[0]).all():
        raise NotRegular("array cvParams differ in length between arrays")

    # Kind of each array from its lead text (start tag + param-group reference), which must equal
    # the first array of that kind byte for byte; then its end tag at the expected distance.
    leads: dict[int, bytes] = {}
    tails: dict[int, int] = {}
    for code, kind in enumerate(("mz", "intensity")):
        ref = b'ref="' + groups[kind][0].encode() + b'"'
        for j in range(2):
            lead = bytes(buf[buf.rfind(_ARRAY_START, 0, int(first_token[j])) : int(first_token[j])])
            if ref in lead:
                break
        else:
            raise NotRegular(f"the first spectrum's arrays do not reference {ref!r}")
        before_own_element = lead[: lead.rfind(b"<")]
        if b"<cvParam" in before_own_element or b"<userParam" in before_own_element:
            raise NotRegular("parameters precede the param-group reference")
        if before_own_element.count(b"<referenceableParamGroupRef") != 1:
            raise NotRegular("an array references more than one param group")
        leads[code] = lead
        end_at = buf.find(_ARRAY_END, int(last_token[j]))
        tails[code] = end_at - int(last_token[j]) - int(digits[last_key][j])
        # After the lead, the template array may hold only its external offset/length cvParams:
        # an inline data type or compression there would override the group.
        rest = bytes(buf[buf.rfind(b"<", 0, int(first_token[j])) : end_at + len(_ARRAY_END)])
        starts = [name for slash, name in _TAG_RE.findall(rest) if not slash]
        if (
            sorted(_ACCESSION_RE.findall(rest)) != sorted(b"IMS:1000%03d" % k for k in present)
            or starts.count(b"cvParam") != per_array
            or not set(starts) <= {b"cvParam", b"binary"}
        ):
            raise NotRegular("an array declares parameters inline")
    width = max(map(len, leads.values()))
    kind_of = np.full(2 * n, -1, dtype=np.int64)
    # Blocks of arrays: their rows fit in 32 MiB, and their stretch of the document (given back
    # after each block) stays near a range's (65,536 arrays: ~80 MB of a 2.4 KB-a-spectrum file).
    step = max(1, min((32 << 20) // width, 1 << 16))
    windows = sliding_window_view(arr, width)
    for a in range(0, 2 * n, step):
        b = min(2 * n, a + step)
        begin = first_token[a:b] - width
        if begin.min() < 0:
            raise NotRegular("array too close to the start of the document")
        rows = windows[begin]
        for code, lead in leads.items():
            hit = (rows[:, width - len(lead) :] == np.frombuffer(lead, np.uint8)).all(axis=1)
            if (hit & (kind_of[a:b] >= 0)).any():
                raise NotRegular("array kind is ambiguous")
            kind_of[a:b][hit] = code
        del rows
        _give_back(buf, int(begin.min()), int(first_token[b - 1]))
    if (kind_of < 0).any():
        raise NotRegular("an array's start does not match the first spectrum's")
    if not ((kind_of[0::2] + kind_of[1::2]) == 1).all():
        raise NotRegular("not one m/z and one intensity array per spectrum")
    expected_end = last_token + digits[last_key] + np.where(kind_of == 0, tails[0], tails[1])
    for a in range(0, 2 * n, step):
        block = expected_end[a : a + step]
        _require(arr, block, _ARRAY_END, "an array's end does not match the first spectrum's")
        _give_back(buf, int(block.min()), int(block.max()))
    # Arrays without accession tokens are invisible above; there must be none.
    starts = array_starts[array_starts + len(_ARRAY_START) < end]
    elements = 0
    for a in range(0, starts.size, step):
        block = starts[a : a + step]
        elements += int((arr[block + len(_ARRAY_START)] != ord("L")).sum())  # not ...ArrayList
        _give_back(buf, int(block.min()), int(block.max()))
    if elements != 2 * n:
        raise NotRegular(
            "binaryDataArray elements other than one m/z and one intensity per spectrum"
        )

    mz_rows = np.flatnonzero(kind_of == 0)
    int_rows = np.flatnonzero(kind_of == 1)
    length = values[103]
    enc = values[104] if 104 in pos else np.full(2 * n, MISSING, np.int64)
    offset = values[102]
    mz_spec, int_spec = groups["mz"][1], groups["intensity"][1]

    def comp(spec) -> int:
        return 0 if spec.compression in (None, "none") else 1

    return SpectrumTable(
        x=values[50],
        y=values[51],
        z=z,
        mz_offset=offset[mz_rows],
        mz_length=length[mz_rows],
        mz_enc=enc[mz_rows],
        mz_dtype=np.full(n, dtype_code(mz_spec.dtype), np.uint8),
        mz_comp=np.full(n, comp(mz_spec), np.uint8),
        int_offset=offset[int_rows],
        int_length=length[int_rows],
        int_enc=enc[int_rows],
        int_dtype=np.full(n, dtype_code(int_spec.dtype), np.uint8),
        int_comp=np.full(n, comp(int_spec), np.uint8),
    )
