"""Bad imzML input: every failure is one of spatialfuse's errors, naming the file and the problem.

Never a raw AttributeError/IndexError/KeyError/lxml error, never a hang, never a modified input.
"""

from __future__ import annotations

import re
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from imzml_factory import (
    array_location,
    edit_arrays,
    edit_spectra,
    file_digest,
    group_params,
    inline_array_groups,
    remove_params,
    rewrite_ibd_range,
    set_param_value,
    set_uuid,
    write_simple,
)

from spatialfuse.errors import (
    FileFormatError,
    MissingFileError,
    SpatialfuseError,
    UnsupportedFormatError,
)
from spatialfuse.io.imzml import ImzMLReader
from spatialfuse.io.imzml._header import parse_header
from spatialfuse.io.imzml._scan_generic import scan_generic

HANG_TIMEOUT_S = 30


def run_bounded(fn, timeout: float = HANG_TIMEOUT_S):
    """Call ``fn()`` in a thread; fail the test if it does not finish in ``timeout`` seconds.

    Returns ``(result, exception)``.
    """
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"reading did not finish within {timeout} s (hang)")
    return box.get("result"), box.get("exc")


def open_quietly(path, **kwargs) -> ImzMLReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImzMLReader(path, cache=False, **kwargs)


def expect_error(path, error, match, *, named=None, **kwargs):
    """Open ``path``; assert it raises exactly ``error`` naming ``named`` (default ``path``)."""
    _, exc = run_bounded(lambda: open_quietly(path, **kwargs))
    assert exc is not None, f"{path} was read without error"
    assert isinstance(exc, error), f"expected {error.__name__}, got {type(exc).__name__}: {exc}"
    message = str(exc)
    named = Path(path if named is None else named)
    assert str(named) in message, f"the message does not name {named}: {message}"
    assert exc.path == str(named)
    assert re.search(match, message), f"{match!r} not in {message!r}"
    return exc


@pytest.fixture(params=["continuous", "processed"])
def mode(request):
    return request.param


@pytest.fixture
def truth(tmp_path, mode):
    return write_simple(
        tmp_path, mode=mode, coords=[(x, y) for y in range(1, 4) for x in range(1, 5)]
    )


# --------------------------------------------------------------------------------------------------
# missing, empty and wrong files


def test_missing_imzml(tmp_path):
    expect_error(tmp_path / "nope.imzML", MissingFileError, "no such imzML file")


def test_missing_imzml_given_ibd(tmp_path):
    (tmp_path / "lonely.ibd").write_bytes(bytes(64))
    with pytest.raises(MissingFileError, match="no such imzML file"):
        ImzMLReader(tmp_path / "lonely.ibd", cache=False)


def test_missing_ibd(truth):
    truth.ibd.unlink()
    expect_error(truth.imzml, MissingFileError, r"binary data file .* is missing", named=truth.ibd)


def test_empty_imzml(truth):
    truth.imzml.write_bytes(b"")
    expect_error(truth.imzml, FileFormatError, "file is empty")


def test_whitespace_only_imzml(truth):
    truth.imzml.write_bytes(b" \n\t\n")
    expect_error(truth.imzml, FileFormatError, "file is empty")


def test_empty_ibd(truth):
    truth.ibd.write_bytes(b"")
    expect_error(
        truth.imzml, FileFormatError, "has 0 bytes, fewer than its 16-byte UUID", named=truth.ibd
    )


def test_ibd_shorter_than_uuid(truth):
    truth.ibd.write_bytes(truth.ibd.read_bytes()[:10])
    expect_error(truth.imzml, FileFormatError, "has 10 bytes, fewer than", named=truth.ibd)


@pytest.mark.parametrize("keep", [0.5, 0.9, -1])
def test_truncated_ibd_names_first_spectrum_cut(truth, keep):
    data = truth.ibd.read_bytes()
    size = len(data) - 1 if keep == -1 else int(len(data) * keep)
    truth.ibd.write_bytes(data[:size])
    first_bad = min(
        i
        for i in range(truth.n)
        for kind in ("mz", "intensity")
        if sum(array_location(truth, i, kind)[0::2]) > size
    )
    expect_error(
        truth.imzml,
        FileFormatError,
        rf"spectrum {first_bad} \(.*array\) needs bytes .* only {size} bytes: it is truncated",
        named=truth.ibd,
    )


def test_uuid_mismatch(truth):
    rewrite_ibd_range(truth.ibd, 0, bytes(range(16)))
    expect_error(
        truth.imzml,
        FileFormatError,
        f"UUID 000102030405060708090a0b0c0d0e0f does not match {truth.uuid}.*check_uuid=False",
        named=truth.ibd,
    )
    reader = open_quietly(truth.imzml, check_uuid=False)
    for i in range(truth.n):
        mz, intensity = reader.spectrum(i)
        assert np.array_equal(mz, truth.mzs[i]) and mz.dtype == truth.mzs[i].dtype
        assert np.array_equal(intensity, truth.intensities[i])
    reader.close()


def test_invalid_uuid_in_xml(truth):
    truth.edit_xml(lambda t: set_uuid(t, "not-a-uuid"))
    expect_error(truth.imzml, FileFormatError, r"UUID 'not-a-uuid' \(IMS:1000080\) is not 32 hex")


def test_svg_is_not_imzml(tmp_path):
    path = tmp_path / "drawing.imzML"
    path.write_text(
        '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        '<rect width="10" height="10"/></svg>\n'
    )
    (tmp_path / "drawing.ibd").write_bytes(bytes(32))
    expect_error(path, FileFormatError, "not an imzML file")


def test_mzml_without_spectrum_list(tmp_path):
    path = tmp_path / "bare.imzML"
    path.write_text(
        '<?xml version="1.0"?>\n<mzML xmlns="http://psi.hupo.org/ms/mzml"><run/></mzML>\n'
    )
    (tmp_path / "bare.ibd").write_bytes(bytes(32))
    expect_error(path, FileFormatError, "no <spectrumList> element")


def test_binary_junk_with_imzml_extension(tmp_path):
    path = tmp_path / "junk.imzML"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "junk.ibd").write_bytes(bytes(32))
    expect_error(path, FileFormatError, "not an XML document")


@pytest.mark.parametrize("name", ["folder", "folder.imzML"])
def test_directory_as_path(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    expect_error(folder, FileFormatError, "is a folder, not an imzML file")


# --------------------------------------------------------------------------------------------------
# malformed XML


def test_xml_truncated_mid_spectrum(truth):
    text = truth.read_xml()
    cut = text.index('id="spectrum=6"') + 300
    truth.write_xml(text[:cut])
    expect_error(
        truth.imzml, FileFormatError, r"ends before </spectrumList>: the file is truncated"
    )


def test_xml_truncated_in_header(truth):
    text = truth.read_xml()
    truth.write_xml(text[: text.index("<referenceableParamGroupList")])
    expect_error(truth.imzml, FileFormatError, r"no <spectrumList> element")


GARBAGE = "\x00\x01\x7f\xff<<&&\x1b"

#: Damage in the text the fast scanner reads (positions, arrays): found on every path.
DATA_DAMAGE = [
    ("garbage in an array", '<referenceableParamGroupRef ref="intensityArray"/>', GARBAGE),
    ("garbage between positions", 'name="position y"', GARBAGE + 'name="position y"'),
    ("unclosed binary", "<binary/>", "<binary>"),
    ("no </binaryDataArray>", "</binaryDataArray>", ""),
    ("unquoted attribute", 'name="position x"', "name=position x"),
    ("unclosed position", 'name="position x" value="', 'name="position x" valu="'),
]
#: Damage elsewhere in a spectrum: the general scanner refuses it; see the xfail below.
OTHER_DAMAGE = [
    ("garbage in the scan list", '<scanList count="1">', '<scanList count="1">' + GARBAGE),
    ("binary junk", "<scanList", "\x00" * 64 + "<scanList"),
    ("unclosed cvParam", 'name="total ion current" value="{}"/>', None),
    ("no </scan>", "</scan>", ""),
    ("no </spectrum>", "</spectrum>", ""),
    ("stray end tag", "</scanList>", "</scanList></run>"),
]


def _damage(truth, old, new, index=5):
    def fix(block: str, _i: int) -> str:
        if new is None:  # drop the "/" of an empty-element tag
            start = block.index(old.split("{")[0])
            end = block.index("/>", start)
            return block[:end] + block[end + 1 :]
        assert old in block
        return block.replace(old, new, 1)

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={index}))


@pytest.mark.parametrize(("where", "old", "new"), DATA_DAMAGE, ids=[d[0] for d in DATA_DAMAGE])
def test_malformed_xml_in_data_text(truth, where, old, new):
    _damage(truth, old, new)
    expect_error(truth.imzml, FileFormatError, r"spectrum 5|malformed XML")


@pytest.mark.parametrize(("where", "old", "new"), OTHER_DAMAGE, ids=[d[0] for d in OTHER_DAMAGE])
def test_malformed_xml_elsewhere_general_scanner_refuses(truth, where, old, new):
    _damage(truth, old, new)
    data = truth.imzml.read_bytes()
    header = parse_header(data, truth.imzml)
    _, exc = run_bounded(lambda: scan_generic(truth.imzml, header))
    assert isinstance(exc, FileFormatError), repr(exc)
    assert re.search(rf"{re.escape(str(truth.imzml))}: malformed XML", str(exc)), str(exc)


@pytest.mark.parametrize(("where", "old", "new"), OTHER_DAMAGE, ids=[d[0] for d in OTHER_DAMAGE])
def test_malformed_xml_elsewhere_never_gives_wrong_data(truth, where, old, new):
    """Whatever path reads it, damaged XML is refused or read exactly, never misread."""
    _damage(truth, old, new)
    reader, exc = run_bounded(lambda: open_quietly(truth.imzml))
    if exc is not None:
        assert isinstance(exc, FileFormatError), repr(exc)
        return
    np.testing.assert_array_equal(reader.coordinates, truth.coords)
    for i in range(truth.n):
        assert np.array_equal(reader.spectrum(i)[0], truth.mzs[i])
        assert np.array_equal(reader.spectrum(i)[1], truth.intensities[i])
    reader.close()


@pytest.mark.parametrize(("where", "old", "new"), OTHER_DAMAGE, ids=[d[0] for d in OTHER_DAMAGE])
def test_malformed_xml_elsewhere_refused_with_validate(truth, where, old, new):
    # By default the fast scanner reads such files exactly (test above); validate=True parses the
    # whole document and refuses it.
    _damage(truth, old, new)
    _, exc = run_bounded(lambda: ImzMLReader(truth.imzml, cache=False, validate=True))
    assert isinstance(exc, FileFormatError), repr(exc)
    assert "malformed XML" in str(exc) and truth.imzml.name in str(exc)


# --------------------------------------------------------------------------------------------------
# offsets, lengths and positions


def _edit_array_param(truth, index, kind, accession, value):
    def fix(block: str, _i: int) -> str:
        return edit_arrays(block, kind, lambda a: set_param_value(a, accession, value))

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={index}))


@pytest.mark.parametrize("kind", ["mz", "intensity"])
def test_offset_past_end_of_ibd(truth, kind):
    size = truth.ibd.stat().st_size
    _edit_array_param(truth, 3, kind, "IMS:1000102", size + 100)
    label = "m/z" if kind == "mz" else "intensity"
    expect_error(
        truth.imzml,
        FileFormatError,
        rf"spectrum 3 \({label} array\) needs bytes {size + 100}\.\.",
        named=truth.ibd,
    )


def test_length_past_end_of_ibd(truth):
    _edit_array_param(truth, 4, "intensity", "IMS:1000103", 10**9)
    expect_error(
        truth.imzml, FileFormatError, r"spectrum 4 \(intensity array\) needs bytes", named=truth.ibd
    )


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("-8", r"spectrum 3: negative intensity array offset"),
        ("abc", r"spectrum 3: IMS:1000102 has non-numeric value 'abc'"),
        ("", r"spectrum 3: IMS:1000102 has non-numeric value ''"),
        ("12.5", r"spectrum 3: IMS:1000102 has non-integer value '12.5'"),
        ("nan", r"spectrum 3: IMS:1000102 has non-.* value 'nan'"),
        ("inf", r"spectrum 3: IMS:1000102 has non-.* value 'inf'"),
        ("1e400", r"spectrum 3: IMS:1000102 has non-.* value '1e400'"),
        ("99999999999999999999999", r"spectrum 3: IMS:1000102 .*'99999999999999999999999'"),
        ("9223372036854775800", r"spectrum 3 \(intensity array\) needs bytes"),
        ("8", r"spectrum 3: intensity array offset 8 points into the 16-byte UUID"),
    ],
)
def test_bad_offset_values(truth, value, match):
    _edit_array_param(truth, 3, "intensity", "IMS:1000102", value)
    exc = expect_error(
        truth.imzml, FileFormatError, match, named=None if "needs" not in match else truth.ibd
    )
    assert exc is not None


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("-3", r"spectrum 3: negative intensity array offset or length"),
        ("x", r"spectrum 3: IMS:1000103 has non-numeric value 'x'"),
        # 2**61 + 1 values of 8 bytes overflow int64 byte counts
        ("2305843009213693953", r"spectrum 3 .*intensity array"),
        ("9223372036854775807", r"spectrum 3 .*intensity array"),
    ],
)
def test_bad_length_values(tmp_path, value, match):
    truth = write_simple(tmp_path, mode="processed", intensity_dtype=np.float64)
    _edit_array_param(truth, 3, "intensity", "IMS:1000103", value)
    _, exc = run_bounded(lambda: open_quietly(truth.imzml))
    assert isinstance(exc, FileFormatError), repr(exc)
    assert re.search(match, str(exc)), str(exc)


def test_bad_encoded_length_of_uncompressed_array_is_ignored(truth):
    _edit_array_param(truth, 3, "intensity", "IMS:1000104", 10**12)
    reader = open_quietly(truth.imzml)
    assert np.array_equal(reader.spectrum(3)[1], truth.intensities[3])


@pytest.mark.parametrize("axis", ["x", "y", "both"])
def test_spectrum_without_position(truth, axis):
    accessions = {
        "x": ["IMS:1000050"],
        "y": ["IMS:1000051"],
        "both": ["IMS:1000050", "IMS:1000051"],
    }

    def fix(block: str, _i: int) -> str:
        for accession in accessions[axis]:
            block = remove_params(block, accession)
        return block

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={7}))
    expect_error(
        truth.imzml, FileFormatError, r"spectrum 7: no position \(IMS:1000050/IMS:1000051\)"
    )


@pytest.mark.parametrize("value", ["two", "1.5", ""])
def test_bad_position_value(truth, value):
    def fix(block: str, _i: int) -> str:
        return set_param_value(block, "IMS:1000051", value)

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={2}))
    expect_error(truth.imzml, FileFormatError, r"spectrum 2: IMS:1000051 has non-")


@pytest.mark.parametrize("kind", ["mz", "intensity"])
def test_spectrum_without_array(truth, kind):
    def fix(block: str, _i: int) -> str:
        return edit_arrays(block, kind, lambda a: "")

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={6}))
    expect_error(truth.imzml, FileFormatError, rf"spectrum 6: no {kind} array")


def test_array_without_external_offset(truth):
    def fix(block: str, _i: int) -> str:
        return edit_arrays(block, "intensity", lambda a: remove_params(a, "IMS:1000102"))

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={1}))
    expect_error(
        truth.imzml, FileFormatError, r"spectrum 1: the intensity array has no external offset"
    )


@pytest.mark.parametrize("which", ["one", "all"])
def test_undeclared_param_group(truth, which):
    indices = {4} if which == "one" else None

    def fix(block: str, _i: int) -> str:
        return block.replace('ref="intensityArray"', 'ref="noSuchGroup"')

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices=indices))
    first = 4 if which == "one" else 0
    expect_error(
        truth.imzml,
        FileFormatError,
        rf"spectrum {first}: reference to undeclared param group 'noSuchGroup'",
    )


@pytest.mark.parametrize("kind", ["mz", "intensity"])
def test_array_without_dtype(truth, kind):
    group = "mzArray" if kind == "mz" else "intensityArray"

    def fix(text: str) -> str:
        params = group_params(text, group)
        stripped = re.sub(r'\s*<cvParam[^>]*accession="MS:100052[13]"[^>]*/>', "", params)
        stripped = re.sub(r'\s*<cvParam[^>]*accession="MS:100051[9]"[^>]*/>', "", stripped)
        return text.replace(params, stripped)

    truth.edit_xml(fix)
    expect_error(
        truth.imzml,
        FileFormatError,
        rf"spectrum 0: the {kind} array does not declare its data type",
    )


def test_inline_array_without_dtype(truth):
    truth.edit_xml(inline_array_groups)

    def fix(block: str, _i: int) -> str:
        return edit_arrays(
            block, "mz", lambda a: remove_params(remove_params(a, "MS:1000523"), "MS:1000521")
        )

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={9}))
    expect_error(
        truth.imzml, FileFormatError, r"spectrum 9: the mz array does not declare its data type"
    )


@pytest.mark.parametrize("accession", ["MS:1002312", "MS:1002314", "MS:1002746"])
def test_numpress_in_group_is_unsupported(truth, accession):
    truth.edit_xml(
        lambda t: t.replace(
            group_params(t, "intensityArray"),
            group_params(t, "intensityArray").replace("MS:1000576", accession),
        )
    )
    expect_error(truth.imzml, UnsupportedFormatError, rf"Numpress .*\({accession}\).*not supported")


def test_numpress_inline_in_one_array_is_unsupported(truth):
    param = '<cvParam cvRef="MS" accession="MS:1002313" name="MS-Numpress positive integer"/>'

    def fix(block: str, _i: int) -> str:
        return edit_arrays(
            block, "intensity", lambda a: a.replace("<binary/>", param + "<binary/>")
        )

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={3}))
    expect_error(truth.imzml, UnsupportedFormatError, r"Numpress positive integer .*not supported")


@pytest.mark.parametrize(
    ("unit_accession", "unit_name"),
    [("UO:0000999", "furlong"), (None, "parsec"), ("UO:0000010", None)],
)
def test_pixel_size_with_unknown_unit(tmp_path, unit_accession, unit_name):
    truth = write_simple(
        tmp_path, pixel_size=25, pixel_unit_accession=unit_accession, pixel_unit_name=unit_name
    )
    expect_error(truth.imzml, FileFormatError, r"pixel size IMS:1000046 has an unknown unit")


# --------------------------------------------------------------------------------------------------
# compressed data


@pytest.fixture
def zlib_truth(tmp_path, mode):
    return write_simple(tmp_path, mode=mode, compression="zlib")


def test_compressed_array_without_encoded_length(zlib_truth):
    zlib_truth.edit_xml(lambda t: remove_params(t, "IMS:1000104"))
    expect_error(
        zlib_truth.imzml,
        FileFormatError,
        r"spectrum 0: compressed m/z array without an external encoded length \(IMS:1000104\)",
    )


def test_corrupt_zlib_data_fails_when_read(zlib_truth):
    offset, _, enc = array_location(zlib_truth, 5, "intensity")
    rewrite_ibd_range(zlib_truth.ibd, offset, b"\xde\xad\xbe\xef" * (enc // 4))
    reader = open_quietly(zlib_truth.imzml)  # the header and offsets are fine
    np.testing.assert_array_equal(reader.spectrum(4)[1], zlib_truth.intensities[4])
    ibd = re.escape(str(zlib_truth.ibd))
    with pytest.raises(FileFormatError, match=rf"{ibd}: spectrum 5: zlib data is corrupt"):
        reader.spectrum(5)
    with pytest.raises(FileFormatError, match=r"spectrum 5: zlib data is corrupt"):
        reader.ion_image(float(zlib_truth.mzs[5][0]), tol=0.5)
    with pytest.raises(FileFormatError, match=r"spectrum 5: zlib data is corrupt"):
        reader.tic()
    reader.close()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x01\x02\x03", r"spectrum 2: decompressed .* \d+ bytes?|spectrum 2: decompressed"),
        (bytes(8 * 1000), r"spectrum 2: decompressed"),
        (b"", r"spectrum 2: decompressed"),
    ],
)
def test_zlib_data_of_wrong_size(tmp_path, payload, match):
    truth = write_simple(tmp_path, mode="processed", compression="zlib", intensity_dtype=np.float64)
    data = zlib.compress(payload)
    offset = truth.ibd.stat().st_size
    with open(truth.ibd, "ab") as handle:
        handle.write(data)
    _edit_array_param(truth, 2, "intensity", "IMS:1000102", offset)
    _edit_array_param(truth, 2, "intensity", "IMS:1000104", len(data))
    reader = open_quietly(truth.imzml, check_uuid=True)
    _, exc = run_bounded(lambda: reader.spectrum(2))
    assert isinstance(exc, FileFormatError), repr(exc)
    assert re.search(match, str(exc)), str(exc)
    assert str(truth.ibd) in str(exc)
    reader.close()


# --------------------------------------------------------------------------------------------------
# hostile XML: entities, external entities


SECRET = "TOP-SECRET-7d1f3a"


def _lol_dtd(depth: int = 9) -> str:
    decl = '<!ENTITY lol "lol">'
    decl += '<!ENTITY lol1 "' + "&lol;" * 10 + '">'
    for i in range(2, depth + 1):
        decl += f'<!ENTITY lol{i} "' + f"&lol{i - 1};" * 10 + '">'
    return decl


def _hostile_cases(secret_file: Path, dtd_file: Path) -> dict[str, tuple[str, str]]:
    xxe = f'<!ENTITY xxe SYSTEM "file://{secret_file}">'
    return {
        "billion laughs": (f"<!DOCTYPE mzML [{_lol_dtd()}]>\n", "&lol9;"),
        "external entity": (f"<!DOCTYPE mzML [{xxe}]>\n", "&xxe;"),
        "parameter entity": (
            f'<!DOCTYPE mzML [<!ENTITY % p SYSTEM "file://{dtd_file}"> %p;]>\n',
            "&xxe;",
        ),
        # a decoy root element in a comment or processing instruction before the DTD
        "laughs behind comment": (f"<!-- <mzML> -->\n<!DOCTYPE mzML [{_lol_dtd()}]>\n", "&lol9;"),
        "entity behind comment": (f"<!-- <mzML> -->\n<!DOCTYPE mzML [{xxe}]>\n", "&xxe;"),
        "entity behind PI": (f"<?decoy <mzML ?>\n<!DOCTYPE mzML [{xxe}]>\n", "&xxe;"),
        "entity behind system id": (f'<!DOCTYPE mzML SYSTEM "<mzML x" [{xxe}]>\n', "&xxe;"),
    }


@pytest.fixture
def secret_files(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY xxe SYSTEM "file://{secret}">')
    return secret, dtd


@pytest.mark.parametrize(
    "case",
    [
        "billion laughs",
        "external entity",
        "parameter entity",
        "laughs behind comment",
        "entity behind comment",
        "entity behind PI",
        "entity behind system id",
    ],
)
@pytest.mark.parametrize("where", ["header text", "uuid", "spectrum"])
def test_entity_declarations_are_refused(tmp_path, secret_files, case, where):
    doctype, ref = _hostile_cases(*secret_files)[case]
    truth = write_simple(tmp_path / "data", mode="processed")
    text = truth.read_xml().replace("?>\n", "?>\n" + doctype, 1)
    if where == "header text":
        text = text.replace(
            '<instrumentConfiguration id="IC1">', '<instrumentConfiguration id="IC1">' + ref
        )
    elif where == "uuid":
        text = set_uuid(text, ref)
    else:
        text = text.replace('name="position x"', f'name="{ref}"')
    truth.write_xml(text)
    for cache in (False, True):
        _, exc = run_bounded(lambda cache=cache: ImzMLReader(truth.imzml, cache=cache))
        assert isinstance(exc, FileFormatError), repr(exc)
        assert str(truth.imzml) in str(exc)
        assert re.search(r"entit", str(exc)), str(exc)
        assert SECRET not in str(exc) and SECRET not in repr(exc.args)


def test_external_dtd_is_never_loaded(tmp_path, secret_files):
    """A DOCTYPE naming an external DTD: the DTD is not loaded, its entities never resolved."""
    _, dtd = secret_files
    truth = write_simple(tmp_path / "data", mode="processed")
    text = truth.read_xml().replace("?>\n", f'?>\n<!DOCTYPE mzML SYSTEM "file://{dtd}">\n', 1)
    text = text.replace(
        '<instrumentConfiguration id="IC1">', '<instrumentConfiguration id="IC1">&xxe;'
    )
    text = text.replace('name="position x"', 'name="&xxe;"')
    truth.write_xml(text)
    reader, exc = run_bounded(lambda: open_quietly(truth.imzml))
    if exc is not None:
        assert isinstance(exc, FileFormatError), repr(exc)
        assert SECRET not in str(exc)
        return
    everything = repr(vars(reader)) + repr(vars(reader._header)) + repr(reader)
    assert SECRET not in everything
    for i in range(truth.n):
        assert np.array_equal(reader.spectrum(i)[1], truth.intensities[i])
    reader.close()


def test_plain_doctype_without_entities_is_read(truth):
    truth.edit_xml(lambda t: t.replace("?>\n", "?>\n<!DOCTYPE mzML>\n", 1))
    reader = open_quietly(truth.imzml)
    assert np.array_equal(reader.spectrum(truth.n - 1)[1], truth.intensities[-1])
    reader.close()


# --------------------------------------------------------------------------------------------------
# errors are always ours; inputs are never modified


def test_inputs_are_never_modified(truth):
    before = (file_digest(truth.imzml), file_digest(truth.ibd))
    mtimes = (truth.imzml.stat().st_mtime_ns, truth.ibd.stat().st_mtime_ns)
    for cache in (True, True, False):
        with ImzMLReader(truth.imzml, cache=cache) as reader:
            reader.ion_images([float(truth.mzs[0][0]), float(truth.mzs[0][-1])], tol=0.1)
            reader.tic()
            for i in range(truth.n):
                reader.spectrum(i)
    assert (file_digest(truth.imzml), file_digest(truth.ibd)) == before
    assert (truth.imzml.stat().st_mtime_ns, truth.ibd.stat().st_mtime_ns) == mtimes
    assert sorted(p.name for p in truth.imzml.parent.iterdir()) == sorted(
        [truth.imzml.name, truth.ibd.name]
    )


def test_failed_read_does_not_modify_inputs(truth):
    _edit_array_param(truth, 3, "intensity", "IMS:1000102", "abc")
    before = (file_digest(truth.imzml), file_digest(truth.ibd))
    with pytest.raises(FileFormatError):
        ImzMLReader(truth.imzml)
    assert (file_digest(truth.imzml), file_digest(truth.ibd)) == before


def test_random_byte_flips_raise_only_our_errors(tmp_path):
    """Fuzz: flip bytes of the XML body; whatever happens, only spatialfuse errors escape."""
    rng = np.random.default_rng(7)
    original = write_simple(tmp_path / "orig", mode="processed")
    text = original.imzml.read_bytes()
    body = text.index(b"<spectrumList")
    for trial in range(40):
        data = bytearray(text)
        for pos in rng.integers(body, len(data), size=3):
            data[pos] = int(rng.integers(0, 256))
        original.imzml.write_bytes(bytes(data))

        def attempt():
            with open_quietly(original.imzml) as reader:
                for i in range(reader.n_spectra):
                    reader.spectrum(i)

        _, exc = run_bounded(attempt)
        assert exc is None or isinstance(exc, SpatialfuseError), f"trial {trial}: {exc!r}"
