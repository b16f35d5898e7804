"""``find_literal``: every occurrence, wherever the chunks and the rare anchor byte fall."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spatialfuse.io.imzml import _scan_fast
from spatialfuse.io.imzml._scan_fast import find_literal


@pytest.mark.parametrize("chunk", [7, 16, 1 << 24])
@pytest.mark.parametrize("literal", [b"<binaryDataArray", b"IMS:1000", b"<"])
def test_find_literal_matches_re_finditer(monkeypatch, chunk, literal):
    monkeypatch.setattr(_scan_fast, "_CHUNK", chunk)
    rng = np.random.default_rng(7)
    pieces = [b"<cvParam/>", b"<binaryDataArrayList>", b"<binaryDataArray ", b'"IMS:1000102"']
    text = b"".join(pieces[i] for i in rng.integers(0, len(pieces), 300))
    text = literal + text + literal  # at the very start and the very end
    arr = np.frombuffer(text, np.uint8)
    expected = [m.start() for m in re.finditer(re.escape(literal), text)]
    assert find_literal(arr, literal, 0, len(text)).tolist() == expected
    # A sub-range: only occurrences that lie wholly inside it.
    lo, hi = 5, len(text) - 9
    inside = [p for p in expected if p >= lo and p + len(literal) <= hi]
    assert find_literal(arr, literal, lo, hi).tolist() == inside
