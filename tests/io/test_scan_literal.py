"""``find_literals``: every occurrence, wherever the chunks and the rare anchor byte fall."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spatialfuse.io.imzml import _scan_fast
from spatialfuse.io.imzml._scan_fast import find_literals

LITERALS = (b"<binaryDataArray", b"IMS:1000", b"<")


@pytest.mark.parametrize("chunk", [7, 16, 1 << 24])
@pytest.mark.parametrize("first", LITERALS)
def test_find_literals_matches_re_finditer(monkeypatch, chunk, first):
    monkeypatch.setattr(_scan_fast, "_CHUNK", chunk)
    rng = np.random.default_rng(7)
    pieces = [b"<cvParam/>", b"<binaryDataArrayList>", b"<binaryDataArray ", b'"IMS:1000102"']
    text = b"".join(pieces[i] for i in rng.integers(0, len(pieces), 300))
    text = first + text + first  # at the very start and the very end
    arr = np.frombuffer(text, np.uint8)
    literals = (first, *(lit for lit in LITERALS if lit != first))
    expected = [[m.start() for m in re.finditer(re.escape(lit), text)] for lit in literals]
    assert [f.tolist() for f in find_literals(arr, literals, 0, len(text))] == expected
    # A sub-range: only occurrences that lie wholly inside it.
    lo, hi = 5, len(text) - 9
    inside = [
        [p for p in positions if p >= lo and p + len(lit) <= hi]
        for lit, positions in zip(literals, expected, strict=True)
    ]
    assert [f.tolist() for f in find_literals(arr, literals, lo, hi)] == inside
