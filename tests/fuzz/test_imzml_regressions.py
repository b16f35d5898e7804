"""Regression tests for the imzML reader bugs the fuzzer found; each writes its minimal input.

Before the fixes: far-apart positions allocated gigabytes or raised a bare ValueError (or, near the
int64 limits, "negative dimensions"); a parameter given twice with two values, or an array declaring
two data types, was read with one of them picked silently; spectra declaring the same bytes over
and over made a table hundreds of times the size of the files; one damaged m/z value made the
common-axis builder allocate gigabytes of bins (or overflow); a flipped bit in a cvParam's element
name, or an extra array without offsets, went unseen by the fast scanner; a compressed array could
declare any length (2**62 values overflowed inside zlib).
"""

from __future__ import annotations

import re
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from fuzz_helpers import COORDS, edit, open_quietly, write_small_imzml

from spatialfuse.errors import FileFormatError
from spatialfuse.io.imzml import build_mz_axis, read_imzml


def _set_position(text: bytes, index: int, axis: str, value: str) -> bytes:
    accession = {"x": b"IMS:1000050", "y": b"IMS:1000051"}[axis]
    matches = list(
        re.finditer(rb'accession="' + accession + rb'" name="[^"]*" value="(\d+)"', text)
    )
    m = matches[index]
    return text[: m.start(1)] + value.encode() + text[m.end(1) :]


# --------------------------------------------------------------------------------------------------
# positions far apart


@pytest.mark.parametrize(
    ("x", "y"),
    [("1000000", "1000000"), ("100000000000000", "1"), (str(2**63 - 1), "1")],
)
def test_far_apart_positions_are_refused_before_allocating(tmp_path, x, y):
    path, _, _ = write_small_imzml(tmp_path)
    edit(path, lambda t: _set_position(_set_position(t, 0, "x", x), 0, "y", y))
    with open_quietly(path) as reader:
        assert reader.coordinates[0, 0] == int(x)  # positions are still reported as written
        rows, cols = reader.grid_shape
        assert cols == int(x) and rows >= 1  # exact, no int64 wrap-around
        tracemalloc.start()
        try:
            with pytest.raises(FileFormatError, match="implausible") as info:
                reader.ion_image(500.0, tol=1.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20
        assert str(path) in str(info.value) and isinstance(info.value, ValueError)
        sums = reader.window_sums([500.0], tol=1.0)  # per-spectrum values still work
        assert sums.shape == (len(COORDS), 1)


def test_negative_position_at_the_int64_limit_is_refused(tmp_path):
    path, _, _ = write_small_imzml(tmp_path)
    edit(
        path,
        lambda t: t.replace(
            b'name="position y" value="1"', b'name="position y" value="-9223372036854775808"', 1
        ),
    )
    with open_quietly(path) as reader, pytest.raises(FileFormatError, match="implausible"):
        reader.ion_images([500.0])


def test_sparse_positions_within_the_allowance_still_give_an_image(tmp_path):
    path, peaks, values = write_small_imzml(tmp_path)
    # spread the 12 spectra over a 400 × 300 grid: sparse, but a plausible acquisition
    text = path.read_bytes()
    for i, (x, y) in enumerate(COORDS):
        text = _set_position(_set_position(text, i, "x", str(x * 100)), i, "y", str(y * 100))
    path.write_bytes(text)
    with open_quietly(path) as reader:
        image = reader.ion_image(float(peaks[5][2]), tol=1e-6)
        assert image.shape == (201, 301)
        x, y = COORDS[5] * 100
        assert image[y - 100, x - 100] == pytest.approx(float(np.float32(values[5][2])))
        assert np.isnan(image).sum() == image.size - len(COORDS)


# --------------------------------------------------------------------------------------------------
# a parameter given twice with two values; two data types in one declaration


def _duplicate_param(text: bytes, accession: bytes, index: int, new_value: bytes) -> bytes:
    pattern = rb'<cvParam [^>]*accession="' + accession + rb'"[^>]*value="([^"]*)"/>'
    m = list(re.finditer(pattern, text))[index]
    copy = m.group()[: m.start(1) - m.start()] + new_value + m.group()[m.end(1) - m.start() :]
    return text[: m.end()] + copy + text[m.end() :]


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize(
    ("accession", "index", "value"),
    [
        (b"IMS:1000050", 4, b"99"),  # position x of spectrum 4
        (b"IMS:1000102", 7, b"16"),  # external offset of an array
        (b"IMS:1000103", 2, b"3"),  # external array length
        (b"IMS:1000080", 0, b"{00000000-0000-0000-0000-000000000000}"),  # UUID
    ],
)
def test_a_parameter_given_twice_with_two_values_is_refused(
    tmp_path, validate, accession, index, value
):
    path, _, _ = write_small_imzml(tmp_path)
    edit(path, lambda t: _duplicate_param(t, accession, index, value))
    with pytest.raises(FileFormatError, match="given twice") as info:
        open_quietly(path, validate=validate)
    assert accession.decode() in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("validate", [False, True])
def test_a_parameter_repeated_with_the_same_value_is_read(tmp_path, validate):
    path, peaks, values = write_small_imzml(tmp_path)
    edit(
        path,
        lambda t: _duplicate_param(
            t, b"IMS:1000102", 7, re.findall(rb'accession="IMS:1000102"[^>]*value="(\d+)"', t)[7]
        ),
    )
    with open_quietly(path, validate=validate) as reader:
        for i in range(len(COORDS)):
            mz, intensity = reader.spectrum(i)
            assert np.array_equal(mz, peaks[i]) and np.array_equal(
                intensity, values[i].astype("<f4")
            )


@pytest.mark.parametrize(
    ("old", "extra", "what"),
    [
        (b"MS:1000521", b"MS:1000523", "data type"),  # 32- and 64-bit float in one group
        (b"MS:1000576", b"MS:1000574", "compression"),  # none and zlib
        (b"MS:1000515", b"MS:1000514", "array kind"),  # intensity and m/z
    ],
)
@pytest.mark.parametrize("inline", [False, True])
def test_two_declarations_of_one_property_are_refused(tmp_path, old, extra, what, inline):
    path, _, _ = write_small_imzml(tmp_path)
    group = re.compile(
        rb'<referenceableParamGroup id="intensityArray">.*?</referenceableParamGroup>', re.S
    )

    def change(text: bytes) -> bytes:
        param = re.search(
            rb'<cvParam [^>]*accession="' + old + rb'"[^>]*/>', group.search(text).group()
        ).group()
        second = param.replace(old, extra)
        if not inline:
            return text.replace(param, param + second, 1)
        # both declarations inline in the first intensity array
        ref = b'<referenceableParamGroupRef ref="intensityArray"/>'
        return text.replace(ref, ref + param + second, 1)

    edit(path, change)
    for validate in (False, True):
        with pytest.raises(FileFormatError, match=f"different {what}s"):
            open_quietly(path, validate=validate)


# --------------------------------------------------------------------------------------------------
# arrays that declare the same bytes over and over


def test_intensity_arrays_overlapping_beyond_the_file_are_refused_at_open(tmp_path):
    path, _, _ = write_small_imzml(tmp_path)
    ibd = path.with_suffix(".ibd")
    length = (ibd.stat().st_size - 16) // 4

    def change(text: bytes) -> bytes:
        arrays = re.compile(
            rb'<referenceableParamGroupRef ref="intensityArray"/>.*?</binaryDataArray>', re.S
        )

        def everything(m):
            a = re.sub(rb'(name="external offset" value=")\d+', rb"\g<1>16", m.group())
            return re.sub(rb'(name="external array length" value=")\d+', rb"\g<1>%d" % length, a)

        return arrays.sub(everything, text)

    edit(path, change)
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match="overlap") as info:
            open_quietly(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 4 << 20


def test_intensity_arrays_sharing_a_few_bytes_are_still_read(tmp_path):
    """Arrays that overlap a little (a writer's off-by-one) fit the file and are read."""
    path, _, values = write_small_imzml(tmp_path)
    offsets = re.findall(rb'name="external offset" value="(\d+)"', path.read_bytes())
    first_int = int(offsets[1])

    def change(text):  # the first intensity array starts 4 bytes early, inside the m/z array
        return text.replace(
            b'name="external offset" value="%d"' % first_int,
            b'name="external offset" value="%d"' % (first_int - 4),
            1,
        )

    edit(path, change)
    with open_quietly(path) as reader:
        raw = path.with_suffix(".ibd").read_bytes()
        want = np.frombuffer(raw, "<f4", count=len(values[0]), offset=first_int - 4)
        assert np.array_equal(reader.spectrum(0)[1], want)


# --------------------------------------------------------------------------------------------------
# one damaged m/z value and the common axis


def test_one_damaged_mz_value_does_not_blow_up_the_common_axis(tmp_path):
    rng = np.random.default_rng(5)
    peaks = [np.sort(rng.uniform(100, 1000, 8)) for _ in COORDS]
    values = [rng.gamma(2.0, 50.0, 8) for _ in COORDS]
    clean_path, _, _ = write_small_imzml(
        tmp_path / "clean",
        peaks=[p[:-1] if i == 0 else p for i, p in enumerate(peaks)],
        values=[v[:-1] if i == 0 else v for i, v in enumerate(values)],
    )
    damaged = [p.copy() for p in peaks]
    damaged[0][-1] = 1e300  # a flipped exponent bit
    damaged_path, _, _ = write_small_imzml(tmp_path / "damaged", peaks=damaged, values=values)
    with open_quietly(clean_path) as clean, open_quietly(damaged_path) as reader:
        assert reader.mz_range()[1] == 1e300
        tracemalloc.start()
        try:
            axis = build_mz_axis(reader, ppm=5.0, min_frequency=0.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 32 << 20  # a dense grid over 1e-6..1e300 would need 17 GB
        want = build_mz_axis(clean, ppm=5.0, min_frequency=0.0)
    assert len(axis) == len(want) + 1
    for field in ("mz", "lo", "hi", "frequency"):
        assert np.array_equal(getattr(axis, field)[:-1], getattr(want, field)), field
    assert axis.mz[-1] == pytest.approx(1e300, rel=1e-5)
    table = read_imzml(damaged_path, cache=False, min_frequency=0.0)
    assert table.shape == (len(COORDS), len(axis))


def test_largest_float_mz_does_not_overflow_the_axis_size(tmp_path):
    rng = np.random.default_rng(6)
    peaks = [np.sort(rng.uniform(100, 1000, 8)) for _ in COORDS]
    peaks[3][-1] = 1.7e308  # high / low overflows to infinity
    path, _, _ = write_small_imzml(tmp_path, peaks=peaks)
    with open_quietly(path) as reader, np.errstate(over="ignore"):
        axis = build_mz_axis(reader, ppm=5.0, min_frequency=0.0)
    assert len(axis) == sum(p.size for p in peaks)  # random peaks: none merge
    assert axis.lo[-1] <= 1.7e308 and axis.lo[-1] > 1e307  # its own feature, at the top
    assert np.isfinite(axis.mz[:-1]).all() and (np.diff(axis.mz[:-1]) > 0).all()


# --------------------------------------------------------------------------------------------------
# a value outside a cvParam (one flipped bit in an element name)


@pytest.mark.parametrize(
    ("accession", "index", "element"),
    [
        (b"IMS:1000050", 5, b"cvParaM"),  # same length: the fast scanner's distances still hold
        (b"IMS:1000051", 2, b"userParam"),
        (b"IMS:1000102", 7, b"cvParaM"),
        (b"IMS:1000103", 0, b"cvparam"),
    ],
)
@pytest.mark.parametrize("validate", [False, True])
def test_a_value_outside_a_cvparam_is_not_read(tmp_path, accession, index, element, validate):
    path, _, _ = write_small_imzml(tmp_path)

    def rename(text: bytes) -> bytes:
        pattern = rb'<cvParam ([^>]*accession="' + accession + rb'"[^>]*/>)'
        m = list(re.finditer(pattern, text))[index]
        return text[: m.start()] + b"<" + element + b" " + m.group(1) + text[m.end() :]

    edit(path, rename)
    with pytest.raises(FileFormatError, match=r"no position|no external offset") as info:
        open_quietly(path, validate=validate)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------------
# declared sizes a compressed array cannot hold; arrays the fast scanner could not see


def _write_zlib(folder: Path) -> tuple[Path, list, list]:
    from pyimzml.compression import ZlibCompression
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "z.imzML"
    peaks = [np.sort(rng.uniform(100, 1000, 20)) for _ in COORDS]
    values = [rng.gamma(2.0, 50.0, 20).astype(np.float32) for _ in COORDS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ImzMLWriter(
            str(path),
            mode="processed",
            mz_compression=ZlibCompression(),
            intensity_compression=ZlibCompression(),
        ) as writer:
            for (x, y), mz, intensity in zip(COORDS, peaks, values, strict=True):
                writer.addSpectrum(mz, intensity, (int(x), int(y)))
    return path, peaks, values


@pytest.mark.parametrize("length", [2**62, 10**9, 30_000])
def test_compressed_array_declaring_more_than_zlib_can_inflate_is_refused(tmp_path, length):
    path, _, _ = _write_zlib(tmp_path)
    pattern = re.compile(rb'(accession="IMS:1000103"[^>]*value=")(\d+)')
    edit(path, lambda t: pattern.sub(lambda m: m.group(1) + str(length).encode(), t, count=3))
    for validate in (False, True):
        with pytest.raises(FileFormatError, match="cannot inflate") as info:
            open_quietly(path, validate=validate)
        assert str(path) in str(info.value)


def test_compressed_arrays_of_their_true_size_are_read(tmp_path):
    path, peaks, values = _write_zlib(tmp_path)
    with open_quietly(path) as reader:
        for i in range(len(COORDS)):
            mz, intensity = reader.spectrum(i)
            assert np.array_equal(mz, peaks[i]) and np.array_equal(intensity, values[i])


@pytest.mark.parametrize("validate", [False, True])
def test_an_extra_array_without_offsets_is_not_overlooked(tmp_path, validate):
    path, _, _ = write_small_imzml(tmp_path)
    junk = b'<binaryDataArray encodedLength="0"><referenceableParamGroupRef ref="nowhere"/>'
    junk += b"<binary/></binaryDataArray>"

    def add(text: bytes) -> bytes:
        spectra = [m.start() for m in re.finditer(rb"<spectrum ", text)]
        at = text.find(b"</binaryDataArrayList>", spectra[3])
        return text[:at] + junk + text[at:]

    edit(path, add)
    with pytest.raises(FileFormatError, match="undeclared param group 'nowhere'"):
        open_quietly(path, validate=validate)


def test_mz_values_all_below_the_axis_floor_still_give_an_axis(tmp_path):
    """m/z values all under 1e-6 (a random .ibd): the bin count came out negative."""
    rng = np.random.default_rng(9)
    peaks = [np.sort(rng.uniform(1e-10, 1e-8, 5)) for _ in COORDS]
    path, _, _ = write_small_imzml(tmp_path, peaks=peaks)
    with open_quietly(path) as reader:
        axis = build_mz_axis(reader, ppm=5.0, min_frequency=0.0)
    assert len(axis) == 1 and axis.frequency[0] == 1.0  # everything in the lowest bin
    table = read_imzml(path, cache=False, min_frequency=0.0)
    assert table.shape == (len(COORDS), 1)
