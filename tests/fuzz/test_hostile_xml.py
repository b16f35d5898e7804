"""Hostile XML in imzML files: deep nesting, huge and many attributes, XInclude, entities in odd
places. Each is refused with a spatialfuse error or ignored (the read equals what the file holds),
quickly, and nothing is ever resolved or expanded.

``tests/io/test_imzml_bad_input.py`` covers entity declarations (billion laughs, external and
parameter entities, decoy root elements) and external DTDs; this file adds the rest.
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
from fuzz_helpers import edit, open_quietly, write_small_imzml

from spatialfuse.errors import FileFormatError

SECRET = "HOSTILE-XML-SECRET-52c1"
ANCHOR = b'<instrumentConfiguration id="IC1">'


def _read_bounded(path, *, validate: bool, limit_s: float = 20.0):
    """Open ``path`` and read every spectrum in a thread; fail if it takes over ``limit_s``."""
    box: dict = {}

    def run():
        try:
            with open_quietly(path, validate=validate) as reader:
                box["spectra"] = [reader.spectrum(i) for i in range(reader.n_spectra)]
                box["coords"] = reader.coordinates
        except BaseException as exc:
            box["error"] = exc

    started = time.perf_counter()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"reading did not finish within {limit_s} s"
    return box, time.perf_counter() - started


def _refused_or_read_exactly(path, peaks, values, *, validate: bool, refusal: str) -> str:
    box, _ = _read_bounded(path, validate=validate)
    if "error" in box:
        error = box["error"]
        assert isinstance(error, FileFormatError), repr(error)
        assert str(path) in str(error) and re.search(refusal, str(error)), str(error)
        assert SECRET not in str(error)
        return "refused"
    for (mz, intensity), want_mz, want in zip(box["spectra"], peaks, values, strict=True):
        assert np.array_equal(mz, want_mz) and np.array_equal(intensity, want.astype("<f4"))
    return "read"


def _insert_in_spectrum(text: bytes, nest: bytes, which: int = 1) -> bytes:
    starts = [m.start() for m in re.finditer(rb"<spectrum ", text)]
    at = text.find(b"<scanList", starts[which])
    return text[:at] + nest + text[at:]


@pytest.mark.parametrize("depth", [100, 300, 3_000, 1_000_000])
@pytest.mark.parametrize("where", ["header", "spectrum", "before the end"])
@pytest.mark.parametrize("validate", [False, True])
def test_deep_nesting_is_refused_or_ignored(tmp_path, depth, where, validate):
    path, peaks, values = write_small_imzml(tmp_path)
    nest = b"<n>" * depth + b"</n>" * depth
    if where == "header":
        edit(path, lambda t: t.replace(ANCHOR, ANCHOR + nest, 1))
    elif where == "spectrum":
        edit(path, lambda t: _insert_in_spectrum(t, nest))
    else:
        edit(path, lambda t: t.replace(b"</mzML>", nest + b"</mzML>"))
    outcome = _refused_or_read_exactly(
        path, peaks, values, validate=validate, refusal="Excessive depth"
    )
    # libxml2 stops at 256 levels in the header and 2,048 (huge_tree) when validating the body;
    # the fast scanner never parses the spectra it does not need, so nesting there is ignored.
    if where == "header":
        assert outcome == ("read" if depth < 256 else "refused")
    elif not validate:
        assert outcome == "read"
    else:
        assert outcome == ("read" if depth < 2_048 else "refused")


@pytest.mark.parametrize("validate", [False, True])
def test_huge_attribute_is_refused_quickly(tmp_path, validate):
    path, _, _ = write_small_imzml(tmp_path)
    big = b'<userParam name="a" value="' + b"x" * (50 << 20) + b'"/>'
    edit(path, lambda t: t.replace(ANCHOR, ANCHOR + big, 1))
    box, seconds = _read_bounded(path, validate=validate)
    assert isinstance(box.get("error"), FileFormatError), box
    assert "limit" in str(box["error"]) and seconds < 10


@pytest.mark.parametrize("validate", [False, True])
def test_many_attributes_are_ignored(tmp_path, validate):
    path, peaks, values = write_small_imzml(tmp_path)
    attrs = b" ".join(b'a%d="%d"' % (i, i) for i in range(200_000))
    edit(path, lambda t: t.replace(ANCHOR, ANCHOR + b"<m " + attrs + b"/>", 1))
    assert _refused_or_read_exactly(path, peaks, values, validate=validate, refusal="^$") == "read"


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("where", ["header", "spectrum"])
def test_xinclude_is_never_processed(tmp_path, validate, where):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    path, peaks, values = write_small_imzml(tmp_path / "data")
    include = (
        b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="'
        + str(secret).encode()
        + b'" parse="text"/>'
    )
    if where == "header":
        edit(path, lambda t: t.replace(ANCHOR, ANCHOR + include, 1))
    else:
        edit(path, lambda t: _insert_in_spectrum(t, include, which=0))
    outcome = _refused_or_read_exactly(path, peaks, values, validate=validate, refusal=".")
    assert outcome == "read"
    reader = open_quietly(path, validate=validate)
    assert SECRET not in repr(vars(reader)) + repr(vars(reader._header))
    reader.close()


@pytest.mark.parametrize("validate", [False, True])
def test_entity_declaration_after_the_root_is_refused(tmp_path, validate):
    """A DOCTYPE inside the document (where XML allows none) with an entity used later."""
    path, _, _ = write_small_imzml(tmp_path)
    doctype = b'<!DOCTYPE x [<!ENTITY e "' + SECRET.encode() + b'">]>'
    edit(
        path,
        lambda t: t.replace(b"<spectrumList", doctype + b"<spectrumList", 1).replace(
            b'name="position x"', b'name="&e;"', 1
        ),
    )
    box, _ = _read_bounded(path, validate=validate)
    assert isinstance(box.get("error"), FileFormatError), box
    assert SECRET not in str(box["error"])


def test_entities_in_a_utf16_document_are_refused(tmp_path):
    path, _, _ = write_small_imzml(tmp_path)

    def utf16(text: bytes) -> bytes:
        doc = text.decode("latin-1").replace('encoding="ISO-8859-1"', 'encoding="UTF-16"')
        doc = doc.replace("?>\n", f'?>\n<!DOCTYPE mzML [<!ENTITY e "{SECRET}">]>\n', 1)
        return doc.replace('name="position x"', 'name="&e;"', 1).encode("utf-16")

    edit(path, utf16)
    for validate in (False, True):
        box, _ = _read_bounded(path, validate=validate)
        assert isinstance(box.get("error"), FileFormatError), box
        assert SECRET not in str(box["error"])
