"""Real-world imzML variants: each must read exactly what was written (values and dtypes).

Files are written by pyimzML (tests/io/imzml_factory.py) and rewritten into the variants found in
the wild. For every variant the fast and the general scanner must agree where the fast one accepts
the file, and ion images, TIC and mean spectra must match an independent computation.
"""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
from imzml_factory import (
    IMS_INTEGER_ACCESSIONS,
    ImzMLTruth,
    drop_mode,
    edit_arrays,
    edit_spectra,
    empty_names,
    expected_window_sums,
    format_uuid,
    grid_coords,
    ims_integer_accessions,
    inline_array_groups,
    make_spectra,
    one_line,
    override_array_dtype,
    reindent,
    remove_params,
    set_param_value,
    set_uuid,
    value_before_accession,
    write_imzml,
    write_simple,
)

from spatialfuse.errors import CalibrationError, DataWarning
from spatialfuse.io.imzml import ImzMLReader, _scan_fast
from spatialfuse.io.imzml._header import parse_header
from spatialfuse.io.imzml._scan_fast import NotRegular, scan_fast
from spatialfuse.io.imzml._scan_generic import scan_generic

MODES = ["continuous", "processed"]
DTYPES = [np.dtype("<f4"), np.dtype("<f8"), np.dtype("<i4"), np.dtype("<i8")]


# --------------------------------------------------------------------------------------------------
# helpers


def open_reader(path, *, expect_warning: str | None = None, **kwargs) -> ImzMLReader:
    """Open without the cache; fail on any DataWarning except one matching ``expect_warning``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = ImzMLReader(path, cache=False, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    if expect_warning is None:
        assert not messages, messages
    else:
        assert any(expect_warning in m for m in messages), (expect_warning, messages)
    return reader


def scan_in_ranges(data: bytes, header, path, range_bytes: int):
    """The fast scan shared out in byte ranges of ``range_bytes`` (run one after the other)."""
    with mock.patch.object(_scan_fast, "RANGE_BYTES", range_bytes):
        return scan_fast(data, header, map_ranges=map, path=path)


def scan_both(truth: ImzMLTruth):
    """Offset tables from both scanners (fast is None where it raises NotRegular).

    The fast scan in byte ranges (boundaries inside tokens, values and tags) must give the very
    same table, or refuse the file too.
    """
    data = truth.imzml.read_bytes()
    header = parse_header(data, truth.imzml)
    generic = scan_generic(truth.imzml, header).to_arrays()
    try:
        fast = scan_fast(data, header).to_arrays()
    except NotRegular:
        fast = None
    for range_bytes in (61, 1000):
        try:
            ranged = scan_in_ranges(data, header, truth.imzml, range_bytes).to_arrays()
        except NotRegular:
            ranged = None
        assert (ranged is None) == (fast is None), range_bytes
        if fast is not None:
            assert_tables_equal(ranged, fast)
    return fast, generic


def assert_tables_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_reads_exactly(truth: ImzMLTruth, *, scan: str | None = None, **kwargs) -> ImzMLReader:
    """Open ``truth``'s file and compare everything with the ground truth; return the reader."""
    reader = open_reader(truth.imzml, **kwargs)
    assert reader.n_spectra == len(reader) == truth.n
    np.testing.assert_array_equal(reader.coordinates, truth.coords)
    assert reader.coordinates.dtype == np.int64
    for i in range(truth.n):
        mz, intensity = reader.spectrum(i)
        assert mz.dtype == truth.mzs[i].dtype, (i, mz.dtype, truth.mzs[i].dtype)
        assert intensity.dtype == truth.intensities[i].dtype, i
        assert np.array_equal(mz, truth.mzs[i]), i
        assert np.array_equal(intensity, truth.intensities[i]), i
    assert reader.mz_dtype == truth.mz_dtype
    assert reader.intensity_dtype == truth.intensity_dtype
    assert reader.mode == truth.mode
    assert reader.compression == truth.compression
    assert reader.uuid == truth.uuid
    if scan is not None:
        assert reader.scan_method == scan
    fast, generic = scan_both(truth)
    if fast is not None:
        assert_tables_equal(fast, generic)
    if scan == "generic":
        assert fast is None, "the fast scanner accepted a file the reader scanned generically"
    return reader


def assert_ion_images(reader: ImzMLReader, truth: ImzMLTruth, centres, tol: float) -> None:
    centres = np.asarray(centres, dtype=np.float64)
    expected = expected_window_sums(truth, centres - tol, centres + tol)
    sums = reader.window_sums(centres, tol=tol)
    assert sums.dtype == np.float64 and sums.shape == (truth.n, centres.size)
    np.testing.assert_array_equal(sums, expected)
    images = reader.ion_images(centres, tol=tol)
    for j in range(centres.size):
        np.testing.assert_array_equal(images[j], truth.to_image(expected[:, j]))
    single = reader.ion_image(float(centres[0]), tol=tol)
    np.testing.assert_array_equal(single, truth.to_image(expected[:, 0]))


def some_centres(truth: ImzMLTruth, k: int = 5, seed: int = 0) -> np.ndarray:
    """Window centres on stored m/z values (and between them)."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([m.astype(np.float64) for m in truth.mzs])
    on = rng.choice(values, size=k)
    between = rng.uniform(values.min(), values.max(), size=k)
    return np.concatenate([on, between])


# --------------------------------------------------------------------------------------------------
# dtypes, modes, compression


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mz_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("intensity_dtype", DTYPES, ids=str)
def test_dtypes_read_exactly(tmp_path, mode, mz_dtype, intensity_dtype):
    """float32/64 and int32/64 (MS:1000519/522) m/z and intensities, in every combination.

    Integer arrays are read (a deliberate choice), values and dtypes unchanged.
    """
    truth = write_simple(tmp_path, mode=mode, mz_dtype=mz_dtype, intensity_dtype=intensity_dtype)
    reader = assert_reads_exactly(truth, scan="fast")
    assert reader.mz_dtype == mz_dtype and reader.intensity_dtype == intensity_dtype
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=0.75)
    np.testing.assert_array_equal(
        reader.tic(), [i.astype(np.float64).sum() for i in truth.intensities]
    )
    reader.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("mz_dtype", "intensity_dtype"),
    [("<i4", "<i4"), ("<i8", "<i8"), ("<f8", "<i4"), ("<i4", "<f4"), ("<i8", "<f8")],
)
def test_ims_integer_accessions(tmp_path, mode, mz_dtype, intensity_dtype):
    """Integer arrays declared with the imzML accessions IMS:1000141 (32-bit) / 142 (64-bit)."""
    truth = write_simple(tmp_path, mode=mode, mz_dtype=mz_dtype, intensity_dtype=intensity_dtype)
    truth.edit_xml(ims_integer_accessions)
    text = truth.read_xml()
    assert not any(ms in text for ms in IMS_INTEGER_ACCESSIONS)
    assert_reads_exactly(truth, scan="fast").close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("mz_comp", "int_comp"), [("zlib", "zlib"), ("zlib", "none"), ("none", "zlib")]
)
@pytest.mark.parametrize(("mz_dtype", "intensity_dtype"), [("<f8", "<f4"), ("<f4", "<i8")])
def test_zlib_compressed(tmp_path, mode, mz_comp, int_comp, mz_dtype, intensity_dtype):
    truth = write_simple(
        tmp_path,
        mode=mode,
        mz_dtype=mz_dtype,
        intensity_dtype=intensity_dtype,
        mz_compression=mz_comp,
        intensity_compression=int_comp,
    )
    reader = assert_reads_exactly(truth)
    assert reader.compression == "zlib"
    assert_ion_images(reader, truth, some_centres(truth, 3), tol=0.5)
    many = some_centres(truth, 12, seed=3)  # more windows than the bisection path takes
    np.testing.assert_array_equal(
        reader.window_sums(many, tol=0.5), expected_window_sums(truth, many - 0.5, many + 0.5)
    )
    np.testing.assert_array_equal(
        reader.tic(), [i.astype(np.float64).sum() for i in truth.intensities]
    )
    reader.close()


# --------------------------------------------------------------------------------------------------
# how arrays are declared


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("placement", ["start", "end"])
@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_inline_array_declarations(tmp_path, mode, placement, compression):
    """No param groups: every array declares MS:1000514/515, dtype and compression inline."""
    truth = write_simple(
        tmp_path, mode=mode, mz_dtype="<f4", intensity_dtype="<f8", compression=compression
    )
    truth.edit_xml(lambda t: inline_array_groups(t, placement=placement))
    assert 'ref="mzArray"' not in truth.read_xml()
    reader = assert_reads_exactly(truth, scan="generic")
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=0.5)
    reader.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("placement", ["start", "end"])
@pytest.mark.parametrize("index", [0, 5, 11])
def test_group_with_inline_dtype_override_in_one_array(tmp_path, mode, placement, index):
    """One array keeps its group (float32) but overrides the dtype inline (float64)."""
    truth = write_simple(tmp_path, mode=mode, intensity_dtype="<f4")
    override_array_dtype(truth, "intensity", "<f8", indices=[index], placement=placement)
    assert truth.intensities[index].dtype == np.float64
    assert truth.intensities[index - 1].dtype == np.float32
    data = truth.imzml.read_bytes()
    with pytest.raises(NotRegular):
        scan_fast(data, parse_header(data, truth.imzml))
    reader = assert_reads_exactly(truth, scan="generic")
    assert reader.intensity_dtype == np.float64  # the widest stored type
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=0.5)
    reader.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("placement", ["start", "end"])
@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_group_with_inline_dtype_override_in_every_array(tmp_path, mode, placement, compression):
    """Every intensity array overrides its group's dtype inline, in the same place.

    Every array then looks alike, so the fast scanner's layout checks alone would take the first one
    as the template and read the group's dtype: it must refuse instead.
    """
    truth = write_simple(tmp_path, mode=mode, intensity_dtype="<f4", compression=compression)
    override_array_dtype(truth, "intensity", "<i8", placement=placement)
    data = truth.imzml.read_bytes()
    with pytest.raises(NotRegular):
        scan_fast(data, parse_header(data, truth.imzml))
    assert_reads_exactly(truth, scan="generic").close()


@pytest.mark.parametrize("placement", ["start", "end"])
def test_inline_mz_dtype_override_processed(tmp_path, placement):
    truth = write_simple(tmp_path, mode="processed", mz_dtype="<f8")
    override_array_dtype(truth, "mz", "<f4", indices=[2, 7], placement=placement)
    reader = assert_reads_exactly(truth, scan="generic")
    assert_ion_images(reader, truth, some_centres(truth, 3), tol=0.5)
    reader.close()


# --------------------------------------------------------------------------------------------------
# how the XML is written


TEXT_VARIANTS = {
    "empty names": empty_names,
    "no encoded length": lambda t: remove_params(t, "IMS:1000104"),
    "value before accession": value_before_accession,
    "one line": one_line,
    "reindented CRLF": reindent,
    "one line, empty names, value first": lambda t: one_line(
        value_before_accession(empty_names(t))
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", list(TEXT_VARIANTS))
def test_text_variants(tmp_path, mode, variant):
    truth = write_simple(tmp_path, mode=mode, mz_dtype="<f4", intensity_dtype="<i4")
    truth.edit_xml(TEXT_VARIANTS[variant])
    reader = assert_reads_exactly(truth)
    if variant in ("empty names", "no encoded length", "one line", "reindented CRLF"):
        assert reader.scan_method == "fast"
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=0.5)
    reader.close()


def test_empty_names_really_empty(tmp_path):
    truth = write_simple(tmp_path)
    truth.edit_xml(empty_names)
    text = truth.read_xml()
    assert 'name="m/z array"' not in text and 'name="position x"' not in text
    assert text.count('name=""') > 10 * truth.n


# --------------------------------------------------------------------------------------------------
# coordinates


def _far_blocks():
    return grid_coords(4, 3, x0=1, y0=1) + grid_coords(3, 4, x0=501, y0=301)


COORDS = {
    "offset start": grid_coords(5, 4, x0=11, y0=7),
    "sparse": [(3, 2), (4, 2), (2, 3), (3, 3), (4, 3), (5, 3), (3, 4), (9, 9), (1, 7)],
    "two runs far apart": _far_blocks(),
    "zero and column": [(0, 0), (0, 1), (0, 2), (0, 5)],
    "3-D": [(x, y, z) for z in (1, 2, 5) for y in (1, 2) for x in (3, 4, 5)],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", list(COORDS))
def test_coordinates(tmp_path, mode, layout):
    coords = COORDS[layout]
    truth = write_simple(tmp_path, mode=mode, coords=coords)
    reader = assert_reads_exactly(truth, scan="fast")
    np.testing.assert_array_equal(reader.coordinates[:, :2], np.asarray(coords)[:, :2])
    if layout == "3-D":
        np.testing.assert_array_equal(reader.coordinates[:, 2], np.asarray(coords)[:, 2])
        reader.close()
        return
    assert np.all(reader.coordinates[:, 2] == 1)
    origin, shape = truth.grid()
    assert reader.grid_origin == origin
    assert reader.grid_shape == shape
    # placement of per-spectrum values; missing positions are NaN
    values = np.arange(truth.n, dtype=np.float64) + 1
    image = reader.to_image(values)
    assert image.shape == shape
    np.testing.assert_array_equal(image, truth.to_image(values))
    assert np.isnan(image).sum() == shape[0] * shape[1] - truth.n
    for i, (x, y, _z) in enumerate(truth.coords.tolist()):
        assert image[y - origin[1], x - origin[0]] == values[i]
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=0.5)
    reader.close()


def test_to_image_stacked_and_fill(tmp_path):
    truth = write_simple(tmp_path, coords=COORDS["sparse"])
    reader = open_reader(truth.imzml)
    values = np.arange(2 * truth.n, dtype=np.float64).reshape(truth.n, 2)
    stacked = reader.to_image(values)
    assert stacked.shape == (2, *reader.grid_shape)
    for j in range(2):
        np.testing.assert_array_equal(stacked[j], truth.to_image(values[:, j]))
    filled = reader.to_image(values[:, 0], fill=-1.0)
    expected = truth.to_image(values[:, 0])
    expected[np.isnan(expected)] = -1.0
    np.testing.assert_array_equal(filled, expected)
    reader.close()


# --------------------------------------------------------------------------------------------------
# pixel size


@pytest.mark.parametrize(
    ("pixel_size", "unit_accession", "unit_name", "expected"),
    [
        (50, "UO:0000017", "micrometer", (50.0, 50.0)),
        ((20, 30), "UO:0000017", "micrometer", (20.0, 30.0)),
        ((12.5, 12.5), "UO:0000017", "", (12.5, 12.5)),
        ("1e1", "UO:0000017", "micrometer", (10.0, 10.0)),
        (5000, "UO:0000018", "nanometer", (5.0, 5.0)),
        ((2500, 7500), "UO:0000018", None, (2.5, 7.5)),
        (10000, None, "nanometer", (10.0, 10.0)),
        (25, None, None, (25.0, 25.0)),
        ((25, None), "UO:0000017", "micrometer", (25.0, 25.0)),
        ((None, 40), "UO:0000017", "micrometer", (40.0, 40.0)),
        (None, None, None, None),
    ],
)
def test_pixel_size(tmp_path, pixel_size, unit_accession, unit_name, expected):
    truth = write_simple(
        tmp_path,
        pixel_size=pixel_size,
        pixel_unit_accession=unit_accession,
        pixel_unit_name=unit_name,
    )
    reader = open_reader(truth.imzml)
    assert reader.pixel_size_um == expected == truth.pixel_size_um
    if expected is None:
        with pytest.raises(CalibrationError, match="pixel_size_um="):
            reader.require_pixel_size()
        assert reader.require_pixel_size(7.5) == (7.5, 7.5)
    else:
        assert reader.require_pixel_size() == expected
        assert reader.require_pixel_size((3, 4)) == (3.0, 4.0)
    reader.close()


@pytest.mark.parametrize(
    ("pixel_size", "expected"),
    [
        ("Inf", None),
        ("0", None),
        ("-5", None),
        ("nan", None),
        ("abc", None),
        (("Inf", 30), (30.0, 30.0)),
    ],
)
def test_invalid_pixel_size_is_ignored_with_warning(tmp_path, pixel_size, expected):
    truth = write_simple(tmp_path, pixel_size=pixel_size)
    reader = open_reader(truth.imzml, expect_warning="not a positive number; ignored")
    assert reader.pixel_size_um == expected == truth.pixel_size_um
    reader.close()


# --------------------------------------------------------------------------------------------------
# mode and UUID


@pytest.mark.parametrize("mode", MODES)
def test_mode_missing_is_inferred(tmp_path, mode):
    truth = write_simple(tmp_path, mode=mode)
    truth.edit_xml(drop_mode)
    reader = assert_reads_exactly(truth, expect_warning="declares neither")
    assert reader.mode == mode
    reader.close()


@pytest.mark.parametrize("mode", MODES)
def test_both_modes_declared_is_inferred(tmp_path, mode):
    truth = write_simple(tmp_path, mode=mode)
    other = "IMS:1000031" if mode == "continuous" else "IMS:1000030"
    truth.edit_xml(
        lambda t: t.replace(
            "<fileContent>",
            f'<fileContent>\n<cvParam cvRef="IMS" accession="{other}" name="" value=""/>',
        )
    )
    assert_reads_exactly(truth, expect_warning="declares both").close()


def test_mode_missing_is_inferred_for_compressed_continuous(tmp_path):
    truth = write_simple(tmp_path, mode="continuous", compression="zlib")
    truth.edit_xml(drop_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = ImzMLReader(truth.imzml, cache=False)
    assert reader.mode == "continuous"


@pytest.mark.parametrize("style", ["plain", "upper", "dashed", "braces", "braces_upper"])
def test_uuid_styles(tmp_path, style):
    truth = write_simple(tmp_path)
    written = format_uuid(truth.uuid, style)
    truth.write_xml(set_uuid(truth.read_xml(), written))  # pyimzML itself writes braces_upper
    assert f'value="{written}"' in truth.read_xml()
    reader = assert_reads_exactly(truth)
    assert reader.uuid == truth.uuid and len(reader.uuid) == 32
    reader.close()


def test_uuid_missing_warns_and_reads(tmp_path):
    truth = write_simple(tmp_path)
    truth.edit_xml(lambda t: remove_params(t, "IMS:1000080"))
    truth.uuid = None
    assert_reads_exactly(truth, expect_warning="declares no UUID").close()


# --------------------------------------------------------------------------------------------------
# ion images, TIC and mean spectrum against an independent computation


def _dyadic_spectra(n, mode, mz_dtype, intensity_dtype, seed):
    """Spectra whose m/z are multiples of 1/64: window edges can then hit stored values exactly."""
    rng = np.random.default_rng(seed)
    spectra = []
    shared = np.unique(rng.integers(100 * 64, 400 * 64, size=30)) / 64
    for _ in range(n):
        mz = (
            shared if mode == "continuous" else np.unique(rng.integers(100 * 64, 400 * 64, 25)) / 64
        )
        intensity = rng.integers(0, 1000, size=mz.size)
        spectra.append((mz.astype(mz_dtype), intensity.astype(intensity_dtype)))
    return spectra


@pytest.fixture(
    params=[
        ("continuous", "<f8", "<f4"),
        ("continuous", "<f4", "<f8"),
        ("continuous", "<f8", "<i4"),
        ("processed", "<f8", "<f4"),
        ("processed", "<f4", "<f4"),
        ("processed", "<f8", "<i8"),
    ],
    ids=lambda p: "-".join(p),
)
def ion_truth(request, tmp_path):
    mode, mz_dtype, intensity_dtype = request.param
    coords = [c for c in grid_coords(6, 5, x0=3, y0=2) if (c[0] + c[1]) % 7]  # holes
    spectra = _dyadic_spectra(len(coords), mode, mz_dtype, intensity_dtype, seed=11)
    return write_imzml(
        tmp_path / "ion.imzML",
        spectra,
        coords,
        mode=mode,
        mz_dtype=mz_dtype,
        intensity_dtype=intensity_dtype,
    )


def test_ion_image_windows_on_stored_values(ion_truth):
    """Closed windows: a value exactly on either edge counts."""
    reader = open_reader(ion_truth.imzml)
    mz = ion_truth.mzs[3].astype(np.float64)
    for k in range(0, mz.size - 2, 3):
        centre, tol = (mz[k] + mz[k + 2]) / 2, (mz[k + 2] - mz[k]) / 2
        assert centre - tol == mz[k] and centre + tol == mz[k + 2]
        assert_ion_images(reader, ion_truth, [centre], tol)
    assert_ion_images(reader, ion_truth, mz[:5], 0.0)  # zero width: exact hits only
    reader.close()


def test_ion_images_random_windows(ion_truth):
    rng = np.random.default_rng(5)
    reader = open_reader(ion_truth.imzml)
    for tol in (0.001, 0.1, 3.0):
        centres = rng.uniform(99, 401, size=4)
        assert_ion_images(reader, ion_truth, centres, tol)
    reader.close()


@pytest.mark.parametrize("k", [6, 40])
def test_ion_images_batched_overlapping_and_outside(ion_truth, k):
    """Many windows at once (both code paths), overlapping, nested, and outside the m/z range."""
    rng = np.random.default_rng(k)
    reader = open_reader(ion_truth.imzml)
    centres = np.concatenate(
        [
            [250.0, 250.5, 250.25],  # overlapping
            [50.0, 1000.0, 99.0],  # outside the m/z range
            rng.uniform(100, 400, size=max(0, k - 6)),
        ]
    )[:k]
    tol = 2.0
    expected = expected_window_sums(ion_truth, centres - tol, centres + tol)
    sums = reader.window_sums(centres, tol=tol)
    np.testing.assert_array_equal(sums, expected)
    images = reader.ion_images(centres, tol=tol)
    assert images.shape == (k, *reader.grid_shape)
    for j in range(k):
        np.testing.assert_array_equal(images[j], ion_truth.to_image(expected[:, j]))
    # windows outside the range are zero where a spectrum exists, NaN where none does
    outside = images[4]
    assert np.all((outside == 0) | np.isnan(outside))
    assert np.isnan(outside).sum() == outside.size - ion_truth.n
    reader.close()


def test_ion_image_ppm(ion_truth):
    reader = open_reader(ion_truth.imzml)
    mz = float(ion_truth.mzs[0][4])
    image = reader.ion_image(mz, ppm=1.0)
    half = mz * 1e-6
    expected = expected_window_sums(ion_truth, [mz - half], [mz + half])[:, 0]
    np.testing.assert_array_equal(image, ion_truth.to_image(expected))
    reader.close()


def test_window_sums_float32(ion_truth):
    reader = open_reader(ion_truth.imzml)
    centres = np.array([150.0, 200.0, 333.3])
    sums = reader.window_sums(centres, tol=20.0, dtype=np.float32)
    assert sums.dtype == np.float32
    expected = expected_window_sums(ion_truth, centres - 20.0, centres + 20.0)
    np.testing.assert_array_equal(sums, expected.astype(np.float32))
    many = np.linspace(100, 400, 25)
    sums = reader.window_sums(many, tol=5.0, dtype=np.float32)
    assert sums.dtype == np.float32
    np.testing.assert_array_equal(
        sums, expected_window_sums(ion_truth, many - 5.0, many + 5.0).astype(np.float32)
    )
    reader.close()


def test_tic(ion_truth):
    reader = open_reader(ion_truth.imzml)
    tic = reader.tic()
    assert tic.dtype == np.float64
    np.testing.assert_array_equal(tic, [i.astype(np.float64).sum() for i in ion_truth.intensities])
    reader.close()


@pytest.mark.parametrize("dtypes", [("<f8", "<f4"), ("<f4", "<i4"), ("<i8", "<f8")])
def test_mean_spectrum_continuous(tmp_path, dtypes):
    spectra = make_spectra(15, mode="continuous", mz_dtype=dtypes[0], intensity_dtype=dtypes[1])
    truth = write_imzml(
        tmp_path / "c.imzML",
        spectra,
        grid_coords(5, 3),
        mode="continuous",
        mz_dtype=dtypes[0],
        intensity_dtype=dtypes[1],
    )
    reader = open_reader(truth.imzml)
    mz, mean = reader.mean_spectrum()
    assert mz.dtype == np.float64 and mean.dtype == np.float64
    np.testing.assert_array_equal(mz, truth.mzs[0].astype(np.float64))
    np.testing.assert_array_equal(mean, np.stack(truth.intensities).astype(np.float64).mean(axis=0))
    reader.close()


def test_mean_spectrum_continuous_compressed(tmp_path):
    rng = np.random.default_rng(2)
    # m/z values 0.2 ppm apart: only the file's own axis, not a merged one, keeps them apart
    mz = 500.0 + np.arange(20) * 1e-4
    spectra = [(mz, rng.integers(0, 100, mz.size).astype(np.float32)) for _ in range(6)]
    truth = write_imzml(
        tmp_path / "cz.imzML", spectra, grid_coords(3, 2), mode="continuous", compression="zlib"
    )
    reader = open_reader(truth.imzml)
    axis, mean = reader.mean_spectrum()
    np.testing.assert_array_equal(axis, mz)
    np.testing.assert_array_equal(mean, np.stack(truth.intensities).astype(np.float64).mean(axis=0))


def test_mean_spectrum_processed_on_given_axis(tmp_path):
    truth = write_imzml(
        tmp_path / "p.imzML",
        _dyadic_spectra(12, "processed", "<f8", "<f4", seed=3),
        grid_coords(4, 3),
        mode="processed",
    )
    reader = open_reader(truth.imzml)
    centres = np.array([150.0, 222.25, 300.0, 399.5])
    mz, mean = reader.mean_spectrum(mz=centres, ppm=20.0)
    np.testing.assert_array_equal(mz, centres)
    half = centres * 20.0 * 1e-6
    expected = expected_window_sums(truth, centres - half, centres + half).mean(axis=0)
    np.testing.assert_allclose(mean, expected, rtol=1e-12, atol=0)
    reader.close()


def test_mean_spectrum_processed_builds_axis(tmp_path):
    truth = write_imzml(
        tmp_path / "p.imzML",
        _dyadic_spectra(12, "processed", "<f8", "<f4", seed=3),
        grid_coords(4, 3),
        mode="processed",
    )
    reader = open_reader(truth.imzml)
    mz, mean = reader.mean_spectrum()
    assert mz.dtype == np.float64 and mean.dtype == np.float64 and mz.shape == mean.shape
    assert mz.size > 0 and np.all(np.isfinite(mean)) and np.all(mean >= 0)


def test_iter_chunks_matches_truth(ion_truth):
    reader = open_reader(ion_truth.imzml)
    seen = 0
    for start, stop, mz, intensity, lengths in reader.iter_chunks(chunk_spectra=7):
        np.testing.assert_array_equal(lengths, [m.size for m in ion_truth.mzs[start:stop]])
        np.testing.assert_array_equal(mz, np.concatenate(ion_truth.mzs[start:stop]))
        np.testing.assert_array_equal(intensity, np.concatenate(ion_truth.intensities[start:stop]))
        seen = stop
    assert seen == ion_truth.n
    reader.close()


def test_scanners_agree_on_spectrum_count_mismatch(tmp_path):
    """spectrumList count wrong: all spectra are read (with a warning), both scanners agree."""
    truth = write_simple(tmp_path, mode="processed")
    truth.edit_xml(
        lambda t: t.replace(f'<spectrumList count="{truth.n}"', '<spectrumList count="3"')
    )
    assert_reads_exactly(truth, expect_warning="spectrumList count says 3").close()


def test_spectra_in_any_order(tmp_path):
    """Spectra need not be written row by row: coordinates stay attached to their spectra."""
    rng = np.random.default_rng(4)
    coords = grid_coords(4, 4)
    order = rng.permutation(len(coords))
    truth = write_simple(tmp_path, coords=[coords[i] for i in order], mode="processed")
    reader = assert_reads_exactly(truth, scan="fast")
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=1.0)
    reader.close()


def test_edit_spectra_helper_counts(tmp_path):
    truth = write_simple(tmp_path)
    seen = []
    edit_spectra(truth.read_xml(), lambda block, i: seen.append(i) or block)
    assert seen == list(range(truth.n))


@pytest.mark.parametrize("mode", MODES)
def test_single_spectrum(tmp_path, mode):
    truth = write_simple(tmp_path, mode=mode, coords=[(3, 4)])
    reader = assert_reads_exactly(truth, scan="fast")
    assert reader.grid_origin == (3, 4) and reader.grid_shape == (1, 1)
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=0.5)
    reader.close()


def test_empty_spectrum(tmp_path):
    """A spectrum with zero peaks (array lengths 0) reads as two empty arrays of its dtypes."""
    truth = write_simple(tmp_path, mode="processed", intensity_dtype="<i4")

    def fix(block: str, _i: int) -> str:
        for kind in ("mz", "intensity"):
            block = edit_arrays(block, kind, lambda a: set_param_value(a, "IMS:1000103", 0))
        return block

    truth.edit_xml(lambda t: edit_spectra(t, fix, indices={3}))
    truth.mzs[3], truth.intensities[3] = truth.mzs[3][:0], truth.intensities[3][:0]
    reader = assert_reads_exactly(truth, scan="fast")
    assert reader.tic()[3] == 0
    assert_ion_images(reader, truth, some_centres(truth, 2), tol=0.5)
    many = np.linspace(100, 1000, 30)
    np.testing.assert_array_equal(
        reader.window_sums(many, tol=2.0), expected_window_sums(truth, many - 2.0, many + 2.0)
    )
    reader.close()
