"""The template scan (issue 17): the token scan's very table, or a refusal that sends it there.

Every case compares three scans of one document: the template scan (``template_scan``), the
token scan alone (``scan_fast(..., template=False)``) and ``scan_fast`` as the reader calls it
(template first). Where the template scan refuses, ``scan_fast`` must give exactly what the
token scan gives (a table, or ``NotRegular``); where it accepts, the same table.
"""

from __future__ import annotations

import numpy as np
import pytest
from imzml_factory import edit_spectra, grid_coords, set_param_value, write_simple

from spatialfuse.io.imzml import ImzMLReader, _scan_template
from spatialfuse.io.imzml._header import parse_header
from spatialfuse.io.imzml._scan_fast import NotRegular, scan_fast, template_scan
from spatialfuse.io.imzml._scan_generic import scan_generic
from spatialfuse.io.imzml._scan_template import NotTemplate

NX, NY = 12, 10  # 120 spectra: over MIN_SPECTRA


def _tables(data: bytes, path):
    header = parse_header(data, path)
    out = {}
    for name, scan in (
        ("template", lambda: template_scan(data, header)),
        ("token", lambda: scan_fast(data, header, template=False)),
        ("fast", lambda: scan_fast(data, header)),
    ):
        try:
            out[name] = scan().to_arrays()
        except (NotTemplate, NotRegular) as why:
            out[name] = type(why)
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def _check(data: bytes, path, *, template: bool):
    """The scans agree; the template scan accepted (True), refused (False) or either (None)."""
    out = _tables(data, path)
    if isinstance(out["token"], dict):
        assert isinstance(out["fast"], dict) and _same(out["fast"], out["token"])
    else:
        assert out["fast"] is NotRegular
    if isinstance(out["template"], dict):
        assert template is not False, "the template scan took a file it must refuse"
        assert _same(out["template"], out["token"])
    else:
        assert not template, out["template"]
    return out


@pytest.fixture(scope="module", params=["processed", "continuous"])
def written(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"template_{request.param}")
    kwargs = {"compression": "zlib"} if request.param == "processed" else {}
    return write_simple(folder, coords=grid_coords(NX, NY), mode=request.param, seed=3, **kwargs)


def test_a_regular_file_is_read_by_the_template_with_the_token_scans_table(written):
    data = written.imzml.read_bytes()
    out = _check(data, written.imzml, template=True)
    generic = scan_generic(written.imzml, parse_header(data, written.imzml)).to_arrays()
    assert _same(out["template"], generic)
    with ImzMLReader(written.imzml, cache=False) as reader:
        assert reader.scan_method == "fast"
        np.testing.assert_array_equal(reader.coordinates, written.coords)


def _edit(written, tmp_path, fn, indices) -> tuple[bytes, object]:
    text = edit_spectra(written.imzml.read_text(), fn, indices=indices)
    path = tmp_path / written.imzml.name
    path.write_text(text)
    return path.read_bytes(), path


# Edits of one spectrum far from the first ones (the template scan samples the first eight and
# a few spread over the document; 77 is none of them).
EDITS = {
    # the token scan reads these the same; the template scan must notice the text differs
    "same-length accession swap": lambda b, i: b.replace('"MS:1000795"', '"MS:1000796"', 1),
    "an attribute added": lambda b, i: b.replace("<spectrum ", '<spectrum foo="bar" ', 1),
    "more white space": lambda b, i: b.replace("<scanList", "  <scanList", 1),
    "spectrum on one line": lambda b, i: " ".join(b.split()),
    # the token scan refuses these too (or reads them its own way)
    "IMS key swapped, same length": lambda b, i: b.replace("IMS:1000103", "IMS:1000104", 1),
    "a decimal position": lambda b, i: set_param_value(b, "IMS:1000050", "7.5"),
    "a 19-digit offset": lambda b, i: set_param_value(b, "IMS:1000102", "1" * 19),
    "a 25-digit offset": lambda b, i: set_param_value(b, "IMS:1000102", "1" * 25),
    "an empty value": lambda b, i: set_param_value(b, "IMS:1000051", ""),
    "a negative value": lambda b, i: set_param_value(b, "IMS:1000051", "-3"),
    "a second x": lambda b, i: b.replace(
        "</scan>",
        '<cvParam cvRef="IMS" accession="IMS:1000050" name="position x" value="9"/></scan>',
        1,
    ),
    "a comment": lambda b, i: b.replace("<scanList", "<!-- IMS:1000050 --><scanList", 1),
    "an accession in a unit changed": lambda b, i: b.replace("MS:1000040", "MS:1000041", 1),
}
#: Edits the template scan may take (a digit run that varies where the token scan does not look:
#: taken where the spectrum is one of those it samples).
EITHER = {
    "a count attribute changed": lambda b, i: b.replace('count="1"', 'count="2"', 1),
}


@pytest.mark.parametrize("edit", sorted(EDITS) + sorted(EITHER))
@pytest.mark.parametrize("where", [50, 77])
def test_a_spectrum_written_otherwise_sends_the_file_to_the_token_scan(
    written, tmp_path, edit, where
):
    data, path = _edit(written, tmp_path, {**EDITS, **EITHER}[edit], {where})
    if data == written.imzml.read_bytes():
        pytest.skip("the edit does not apply to this layout")
    _check(data, path, template=None if edit in EITHER else False)


@pytest.mark.parametrize("where", [0, 1, 8, 60, NX * NY - 2, NX * NY - 1])
def test_numbers_of_other_widths_anywhere_are_read(written, tmp_path, where):
    """Positions, offsets and lengths of other digit counts (and leading zeros) in any spectrum."""

    def wider(block: str, i: int) -> str:
        block = set_param_value(block, "IMS:1000050", f"000{i + 1}")
        return set_param_value(block, "IMS:1000051", "1000000")

    data, path = _edit(written, tmp_path, wider, {where})
    out = _check(data, path, template=True)
    assert out["template"]["y"][where] == 1_000_000


def test_text_after_the_last_spectrum_sends_the_file_to_the_token_scan(written, tmp_path):
    text = written.imzml.read_text().replace("</spectrumList>", "<foo/></spectrumList>")
    path = tmp_path / written.imzml.name
    path.write_text(text)
    _check(path.read_bytes(), path, template=False)


def test_a_spectrum_missing_or_added_is_refused(written, tmp_path):
    text = written.imzml.read_text()
    for count in (NX * NY - 1, NX * NY + 1):
        edited = text.replace(f'count="{NX * NY}"', f'count="{count}"', 1)
        path = tmp_path / written.imzml.name
        path.write_text(edited)
        _check(path.read_bytes(), path, template=False)


def test_cursors_and_groups_of_every_size_give_the_same_table(written, monkeypatch):
    """The walk from many cursors at once, in groups, whatever their spacing."""
    data = written.imzml.read_bytes()
    expected = _tables(data, written.imzml)["token"]
    for blocks, cursors in ((1, 1), (1, 3), (3, 2), (8, 2048), (1000, 7)):
        monkeypatch.setattr(_scan_template, "_CURSOR_BLOCKS", blocks)
        monkeypatch.setattr(_scan_template, "_CURSORS", cursors)
        got = template_scan(data, parse_header(data, written.imzml)).to_arrays()
        assert _same(got, expected), (blocks, cursors)


def test_few_spectra_go_to_the_token_scan(tmp_path):
    small = write_simple(tmp_path, coords=grid_coords(4, 3), mode="processed")
    data = small.imzml.read_bytes()
    with pytest.raises(NotTemplate):
        template_scan(data, parse_header(data, small.imzml))
