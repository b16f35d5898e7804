"""The fast spectrum scanner: literal scans plus numpy, for files whose spectra share one layout.

Nearly every imzML writer emits the same text for every spectrum, only the numbers differ. This
scanner finds the accession tokens it needs (``IMS:1000050`` ... ``IMS:1000104``) and the param-group
references with two C-speed literal scans, then parses and checks everything with vectorised numpy:

* every position/offset value sits at the same place relative to its accession as in the first
  spectrum, and is a plain non-negative integer;
* every spectrum has exactly one x, one y, one m/z and one intensity array, each array one offset and
  one length;
* every ``<binaryDataArray>`` is byte-for-byte the first spectrum's, up to the digits of its numbers:
  the text from its start tag to ``</binaryDataArray>`` has exactly the expected length, so no inline
  declaration (a data type, a compression) can hide in it.

Where any check fails it raises :class:`NotRegular` and the caller uses the general scanner, which is
also the reference this one is tested against.
"""

from __future__ import annotations

import re

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from spatialfuse.io.imzml._header import ImzMLHeader
from spatialfuse.io.imzml._table import MISSING, SpectrumTable, dtype_code

_IMS = re.compile(rb"IMS:1000")
_REF = re.compile(rb'ref="')
_ARRAY_END = b"</binaryDataArray>"
_ARRAY_START = b"<binaryDataArray"
_VALUE = b'value="'
_KEYS = (50, 51, 52, 102, 103, 104)
_MAX_DIGITS = 19


class NotRegular(Exception):
    """The file's spectra do not share one layout; use the general scanner."""


def _positions(pattern: re.Pattern, buf, start: int, end: int) -> np.ndarray:
    return np.fromiter(map(re.Match.start, pattern.finditer(buf, start, end)), dtype=np.int64)


def _rows(windows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bytes ``[p, p + width)`` for every p, as an (n, width) array."""
    if positions.size and (positions.min() < 0 or positions.max() >= len(windows)):
        raise NotRegular("window outside the document")
    return windows[positions]


def _check_bytes(arr: np.ndarray, positions: np.ndarray, expected: bytes) -> None:
    if not positions.size:
        return
    if positions.min() < 0 or positions.max() + len(expected) > arr.size:
        raise NotRegular("expected text outside the document")
    ok = np.ones(positions.size, dtype=bool)
    for k, byte in enumerate(expected):
        ok &= arr[positions + k] == byte
    if not ok.all():
        raise NotRegular(f"layout differs from the first spectrum near byte {positions[~ok][0]}")


def _parse_uints(arr: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse the unsigned integers that start at ``starts`` and end at a double quote."""
    values = np.zeros(starts.size, dtype=np.int64)
    ndigits = np.zeros(starts.size, dtype=np.int64)
    active = np.ones(starts.size, dtype=bool)
    for k in range(_MAX_DIGITS + 1):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        pos = starts[idx] + k
        if pos.max() >= arr.size:
            raise NotRegular("number runs past the end of the document")
        c = arr[pos]
        is_digit = (c >= 48) & (c <= 57)
        is_quote = c == 34
        if not (is_digit | is_quote).all():
            raise NotRegular("a value is not a plain non-negative integer")
        digit_rows = idx[is_digit]
        values[digit_rows] = values[digit_rows] * 10 + (c[is_digit] - 48)
        ndigits[digit_rows] += 1
        active[idx[is_quote]] = False
    if active.any() or (ndigits == 0).any():
        raise NotRegular("empty or overlong integer value")
    return values, ndigits


def _value_offset(buf, token: int) -> int:
    """Distance from an accession token to its value's first character, from the first spectrum."""
    element_end = buf.find(b">", token)
    value = buf.find(_VALUE, token, element_end)
    if value < 0:
        raise NotRegular("value attribute precedes the accession")
    return value + len(_VALUE) - token


def scan_fast(buf, header: ImzMLHeader) -> SpectrumTable:
    """Build the offset table with literal scans and numpy; raise :class:`NotRegular` if unsure."""
    start, end = header.body_start, header.body_end
    n = header.spectrum_count
    if not n:
        raise NotRegular("spectrumList has no count")
    array_groups = {
        name.encode() + b'"': spec
        for name, spec in header.array_groups.items()
        if spec.kind in ("mz", "intensity")
    }
    if len({spec.kind for spec in array_groups.values()}) != 2:
        raise NotRegular("param groups do not declare both an m/z and an intensity array")
    for spec in array_groups.values():
        if spec.dtype is None:
            raise NotRegular("array group without a data type")
    arr = np.frombuffer(buf, dtype=np.uint8)

    tokens = _positions(_IMS, buf, start, end)
    if tokens.size == 0 or tokens.max() + 12 > arr.size:
        raise NotRegular("no accession tokens")
    _check_bytes(arr, tokens - 1, b'"')
    keys = (
        (arr[tokens + 8].astype(np.int64) - 48) * 100
        + (arr[tokens + 9].astype(np.int64) - 48) * 10
        + (arr[tokens + 10].astype(np.int64) - 48)
    )
    by_key: dict[int, np.ndarray] = {}
    digits: dict[int, np.ndarray] = {}
    values: dict[int, np.ndarray] = {}
    for key in _KEYS:
        pos = tokens[keys == key]
        if key == 52 and pos.size == 0:
            continue
        if pos.size == 0:
            raise NotRegular(f"no IMS:1000{key:03d} tokens")
        _check_bytes(arr, pos + 11, b'"')
        d = _value_offset(buf, int(pos[0]))
        template = bytes(buf[pos[0] : pos[0] + d])
        if key in (50, 51, 52):
            # Positions sit in <scan>; check the whole text from accession to value.
            windows = sliding_window_view(arr, d)
            if not (_rows(windows, pos) == np.frombuffer(template, np.uint8)).all():
                raise NotRegular(f"IMS:1000{key:03d} is written in different ways")
        else:
            _check_bytes(arr, pos + d - len(_VALUE), _VALUE)
        by_key[key] = pos
        values[key], digits[key] = _parse_uints(arr, pos + d)

    pos_x, pos_y = by_key[50], by_key[51]
    if pos_x.size != n or pos_y.size != n:
        raise NotRegular("position count differs from spectrumList count")
    spectrum_of = lambda p: np.searchsorted(pos_x, p, side="right") - 1  # noqa: E731
    expected = np.arange(n)
    if not np.array_equal(spectrum_of(pos_y), expected):
        raise NotRegular("y positions not one per spectrum")
    z = np.ones(n, dtype=np.int64)
    if 52 in by_key:
        if not np.array_equal(spectrum_of(by_key[52]), expected):
            raise NotRegular("z positions not one per spectrum")
        z = values[52]

    offsets_pos = by_key[102]
    n_arrays = offsets_pos.size
    if n_arrays != 2 * n:
        raise NotRegular("not exactly two external arrays per spectrum")

    refs = _positions(_REF, buf, start, end) + len(b'ref="')
    ref_kind = np.full(refs.size, -1, dtype=np.int64)
    ref_name_len = np.zeros(refs.size, dtype=np.int64)
    kinds = {"mz": 0, "intensity": 1}
    group_of_kind: dict[int, tuple[bytes, object]] = {}
    for name, spec in array_groups.items():
        hit = np.ones(refs.size, dtype=bool)
        for k, byte in enumerate(name):
            inside = refs + k < arr.size
            hit &= inside & (arr[np.minimum(refs + k, arr.size - 1)] == byte)
        code = kinds[spec.kind]
        if hit.any() and code in group_of_kind and group_of_kind[code][0] != name:
            raise NotRegular("several groups declare the same array kind")
        if hit.any():
            group_of_kind[code] = (name, spec)
        ref_kind[hit] = code
        ref_name_len[hit] = len(name)
    if set(group_of_kind) != {0, 1}:
        raise NotRegular("arrays are not declared through param-group references")
    array_refs = refs[ref_kind >= 0]
    array_ref_kind = ref_kind[ref_kind >= 0]
    if array_refs.size != n_arrays:
        raise NotRegular("not one param-group reference per array")
    # Every array's reference precedes its own cvParams (mzML schema order).
    owner = np.searchsorted(offsets_pos, array_refs)
    if not np.array_equal(owner, np.arange(n_arrays)):
        raise NotRegular("array references and offsets are not paired")
    if (array_refs[1:] < offsets_pos[:-1]).any():
        raise NotRegular("array references and offsets interleave")
    array_spectrum = spectrum_of(offsets_pos)
    if (array_spectrum < 0).any() or not np.array_equal(spectrum_of(array_refs), array_spectrum):
        raise NotRegular("arrays outside their spectrum")
    for code in (0, 1):
        counts = np.bincount(array_spectrum[array_ref_kind == code], minlength=n)
        if counts.size != n or not (counts == 1).all():
            raise NotRegular("not one m/z and one intensity array per spectrum")

    def per_array(key: int, required: bool) -> tuple[np.ndarray, np.ndarray]:
        pos = by_key.get(key, np.empty(0, np.int64))
        if pos.size == 0 and not required:
            return np.full(n_arrays, MISSING, np.int64), np.zeros(n_arrays, np.int64)
        if pos.size != n_arrays:
            raise NotRegular(f"IMS:1000{key:03d} not once per array")
        owner = np.searchsorted(array_refs, pos, side="right") - 1
        if not np.array_equal(owner, np.arange(n_arrays)):
            raise NotRegular(f"IMS:1000{key:03d} not once per array")
        return values[key], digits[key]

    offset, offset_digits = values[102], digits[102]
    length, length_digits = per_array(103, True)
    enc, enc_digits = per_array(104, False)

    # Each array's text, start tag to end tag, must match the first array of its kind in length
    # once the digits of its numbers are discounted.
    numbers_in = offset_digits + length_digits + enc_digits
    for code in (0, 1):
        sel = np.flatnonzero(array_ref_kind == code)
        first = sel[0]
        ref0 = int(array_refs[first])
        start_tag = buf.rfind(_ARRAY_START, 0, ref0)
        end_tag = buf.find(_ARRAY_END, ref0)
        if start_tag < 0 or end_tag < 0:
            raise NotRegular("binaryDataArray tags not found")
        lead = bytes(buf[start_tag:ref0])
        if b"<cvParam" in lead or b"<userParam" in lead:
            raise NotRegular("parameters precede the param-group reference")
        windows = sliding_window_view(arr, len(lead))
        if not (_rows(windows, array_refs[sel] - len(lead)) == np.frombuffer(lead, np.uint8)).all():
            raise NotRegular("binaryDataArray start tags differ")
        expected_end = array_refs[sel] + (end_tag - ref0) + (numbers_in[sel] - numbers_in[first])
        _check_bytes(arr, expected_end, _ARRAY_END)

    mz_rows = np.flatnonzero(array_ref_kind == 0)
    int_rows = np.flatnonzero(array_ref_kind == 1)
    mz_spec = group_of_kind[0][1]
    int_spec = group_of_kind[1][1]
    return SpectrumTable(
        x=values[50],
        y=values[51],
        z=z,
        mz_offset=offset[mz_rows],
        mz_length=length[mz_rows],
        mz_enc=enc[mz_rows],
        mz_dtype=np.full(n, dtype_code(mz_spec.dtype), np.uint8),
        mz_comp=np.full(n, 0 if mz_spec.compression in (None, "none") else 1, np.uint8),
        int_offset=offset[int_rows],
        int_length=length[int_rows],
        int_enc=enc[int_rows],
        int_dtype=np.full(n, dtype_code(int_spec.dtype), np.uint8),
        int_comp=np.full(n, 0 if int_spec.compression in (None, "none") else 1, np.uint8),
    )
