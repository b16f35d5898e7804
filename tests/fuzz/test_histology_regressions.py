"""Regression tests for the histology reader bugs the fuzzer found (docs/fuzzing.md).

Each writes the smallest input that showed the bug and checks the reader now reads it correctly
or refuses it with a FileFormatError naming the file and the fault, without hanging or allocating
what a damaged header declares.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from spatialfuse.errors import FileFormatError
from spatialfuse.io.histology import read_histology

RGB = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)


def _overwrite(path, name, value, page=0):
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[page].tags[name].overwrite(value)


def _refused(path, message):
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=message) as info:
            img = read_histology(path, pixel_size_um=0.5)
            img.read()  # (only reached where opening did not refuse)
        assert tracemalloc.get_traced_memory()[1] < 64 * 2**20
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)


def test_circular_ifd_chain_does_not_hang(tmp_path):
    # A pyramid (SubIFDs, no OME or shaped metadata) whose first IFD's next-IFD offset points back
    # at itself: tifffile's generic series parsing went round it without end (a timeout), when
    # opening and again when reading a level.
    path = tmp_path / "loop.tif"
    opts = {"photometric": "rgb", "tile": (16, 16), "compression": "zlib"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(RGB, subifds=1, metadata=None, **opts)
        tif.write(RGB[::2, ::2], subfiletype=1, **opts)
    data = bytearray(path.read_bytes())
    first = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[first : first + 2])[0]
    link = first + 2 + 12 * n
    data[link : link + 4] = struct.pack("<I", first)
    path.write_bytes(bytes(data))
    img = read_histology(path, pixel_size_um=0.5)
    assert img.level_shapes == ((48, 64), (24, 32))
    np.testing.assert_array_equal(img.read(), RGB)
    np.testing.assert_array_equal(img.read(1), RGB[::2, ::2])


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ('SizeX="64"', "declares an image of 432,345,564,227,567,615 planes of 64 × 48 pixels"),
        ('SizeT="1"', "declares an image of 3,000,000,000 planes"),
    ],
)
def test_ome_sizes_declaring_absurd_plane_counts(tmp_path, attribute, message):
    # tifffile listed [None] × the declared planes before reading any (a MemoryError).
    path = tmp_path / "sizes.ome.tif"
    tifffile.imwrite(path, RGB, photometric="rgb", metadata={"axes": "YXS"})
    with tifffile.TiffFile(path) as tif:
        xml = tif.pages[0].description
    huge = 'SizeX="9223372036854775807"' if "SizeX" in attribute else 'SizeT="1000000000"'
    _overwrite(path, "ImageDescription", xml.replace(attribute, huge))
    _refused(path, message)


def test_ome_xml_with_entities_is_refused(tmp_path):
    path = tmp_path / "entities.ome.tif"
    tifffile.imwrite(path, RGB, photometric="rgb", metadata={"axes": "YXS"})
    with tifffile.TiffFile(path) as tif:
        xml = tif.pages[0].description
    bomb = '<!DOCTYPE OME [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    xml = xml.replace("?>", "?>" + bomb, 1).replace('Name="', 'Name="&b;', 1)
    _overwrite(path, "ImageDescription", xml)
    _refused(path, "its OME-XML declares a DOCTYPE or entities")


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        ("TileLength", 2**31, r"declares strips or tiles of 2147483648×16×3 values"),
        ("ImageWidth", 2**31 - 16, r"level 0 declares 48×2147483632×3 values"),
    ],
)
def test_tile_and_image_sizes_the_file_cannot_hold(tmp_path, tag, value, message):
    # A tile of 2**31 rows made the deflate decoder allocate 100 GB; an image 2**31 pixels wide
    # was allocated by zarr before any tile was decoded.
    path = tmp_path / "sizes.tif"
    tifffile.imwrite(path, RGB, photometric="rgb", tile=(16, 16), compression="zlib")
    _overwrite(path, tag, value)
    _refused(path, message)


def test_strip_image_without_offsets_or_samples(tmp_path):
    # StripOffsets gone (or SamplesPerPixel 0): the declared size was not checked at all.
    path = tmp_path / "nooffsets.tif"
    tifffile.imwrite(path, RGB, photometric="rgb", rowsperstrip=48)
    _overwrite(path, "ImageLength", 4_194_352)
    _overwrite(path, "RowsPerStrip", 4_194_352)
    _overwrite(path, "StripOffsets", 0)
    _refused(path, "level 0 declares 4194352×64×3 values")


def _entry(data: bytes, tag: int) -> int:
    """Position of ``tag``'s entry in the first IFD of a classic little-endian TIFF."""
    first = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[first : first + 2])[0]
    for i in range(n):
        at = first + 2 + 12 * i
        if struct.unpack("<H", data[at : at + 2])[0] == tag:
            return at
    raise AssertionError(f"no tag {tag}")


def test_image_length_that_is_not_a_whole_number(tmp_path):
    # ImageLength stored as a DOUBLE: the level was 3.5 rows high (a tiny value: 0 rows, read as
    # an empty image).
    path = tmp_path / "double.tif"
    tifffile.imwrite(path, RGB[:40, :52, 0], rowsperstrip=8)
    data = bytearray(path.read_bytes())
    at = _entry(data, 257)
    data[at + 2 : at + 12] = struct.pack("<HII", 12, 1, len(data))
    path.write_bytes(bytes(data) + struct.pack("<d", 3.5))
    _refused(path, r"level 0 has no pixels or a size that is not a whole number \(52 × 3.5\)")


def test_one_bit_pixels_from_an_eight_bit_decoder_read_as_0_and_255(tmp_path):
    # JPEG tiles in a file claiming 1 bit per sample: tifffile returns bytes such as 101 in a
    # bool array, which the old code multiplied by 255 (wrapping to 155).
    path = tmp_path / "bits.tif"
    tifffile.imwrite(path, RGB, photometric="rgb", tile=(16, 16), compression="jpeg")
    _overwrite(path, "BitsPerSample", (1, 1, 1))
    img = read_histology(path, pixel_size_um=0.5)
    pixels = img.read()
    assert img.dtype == np.uint8
    assert set(np.unique(pixels).tolist()) <= {0, 255}
    arr, _ = img.downsampled(factor=4)
    assert arr.shape == (12, 16, 3)


def test_sixty_four_bit_pixels_downsample(tmp_path):
    # uint64 pixels: the block-mean accumulator became an object array (TypeError from rint).
    path = tmp_path / "u64.tif"
    data = np.full((20, 24), np.iinfo(np.uint64).max - 5, np.uint64)
    data[::2] = 7
    tifffile.imwrite(path, data)
    img = read_histology(path, pixel_size_um=1.0)
    arr, _ = img.downsampled(factor=2)
    assert arr.dtype == np.uint64 and arr.shape == (10, 12, 1)
    want = (7 + float(np.iinfo(np.uint64).max - 5)) / 2
    np.testing.assert_allclose(arr.astype(np.float64), want, rtol=1e-12)


def _jpeg(size=(48, 64)):
    buffer = io.BytesIO()
    Image.fromarray(RGB[: size[0], : size[1]]).save(buffer, "JPEG")
    return bytearray(buffer.getvalue())


def test_jpeg_and_png_headers_declaring_more_than_the_file_holds(tmp_path):
    data = _jpeg()
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
    path = tmp_path / "big.jpg"
    path.write_bytes(bytes(data))
    _refused(path, r"its JPEG header declares 65,535 × 65,535 pixels")
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", 100_000, 100_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    path = tmp_path / "big.png"
    path.write_bytes(bytes(png))
    _refused(path, r"its PNG header declares 100,000 × 100,000 pixels")
