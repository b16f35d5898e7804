"""Tests of spatialfuse.io.histology: known answers on generated files plus the real H&E JPEG."""

from __future__ import annotations

import math
import tracemalloc
import warnings

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from spatialfuse.errors import (
    CalibrationError,
    DataWarning,
    FileFormatError,
    MissingFileError,
    UnsupportedFormatError,
)
from spatialfuse.io.histology import HistologyImage, describe_histology, read_histology

RNG = np.random.default_rng(20240601)


def _rgb(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    hi = np.iinfo(dtype).max
    return RNG.integers(0, hi, size=(h, w, 3), dtype=dtype, endpoint=True)


def _block_mean_ref(a: np.ndarray, k: int) -> np.ndarray:
    """Slow reference: mean of each k×k block, partial edge blocks average what they have."""
    h, w, c = a.shape
    out = np.empty((math.ceil(h / k), math.ceil(w / k), c))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[i * k : (i + 1) * k, j * k : (j + 1) * k].reshape(-1, c).mean(axis=0)
    return out


# ---------------------------------------------------------------------------------------------
# the real JPEG


@pytest.fixture
def he_jpeg(shared_data):
    path = shared_data / "histology" / "squidpy_test_img" / "test_img.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_real_jpeg_shape_and_pixels_match_pil(he_jpeg):
    img = read_histology(he_jpeg, pixel_size_um=0.5)
    with Image.open(he_jpeg) as im:
        ref = np.asarray(im)
    assert img.shape == ref.shape[:2] == (1717, 950)
    assert img.format == "jpeg"
    assert img.n_channels == 3
    assert img.dtype == np.uint8
    assert img.pixel_size_um == (0.5, 0.5)
    assert img.pixel_size_source == "argument"
    assert img.extent_um == pytest.approx((950 * 0.5, 1717 * 0.5))
    np.testing.assert_array_equal(img.read(), ref)
    np.testing.assert_array_equal(img.read_region(100, 200, 30, 40), ref[200:240, 100:130])


def test_real_jpeg_without_calibration_asks_for_pixel_size(he_jpeg):
    # JFIF unit 0 (aspect ratio only): no calibration, so nothing to warn about, just the error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CalibrationError, match="pixel_size_um=") as exc:
            read_histology(he_jpeg)
    assert "test_img.jpg" in str(exc.value)


def test_real_jpeg_downsample_matches_pil_reduce(he_jpeg):
    img = read_histology(he_jpeg, pixel_size_um=(0.5, 0.5))
    with Image.open(he_jpeg) as im:
        full = im.copy()
    # factor 2: libjpeg DCT-scaled decode vs PIL's box reduction of the full decode. The two
    # differ by the DCT's implicit filtering and chroma upsampling: mean |diff| < 1 grey level,
    # 99.9th percentile <= 8 (measured 0.37 and 4).
    small, ps = img.downsampled(factor=2)
    ref = np.asarray(full.reduce(2)).astype(int)
    assert small.shape == ref.shape == (859, 475, 3)
    diff = np.abs(small.astype(int) - ref)
    assert diff.mean() < 1.0
    assert np.percentile(diff, 99.9) <= 8
    assert ps == pytest.approx((0.5 * 950 / 475, 0.5 * 1717 / 859))
    # factor 3 has no DCT level: exact block means of the full decode, same as PIL's reduce up
    # to rounding of halves (<= 1 grey level)
    small3, ps3 = img.downsampled(factor=3)
    ref3 = np.asarray(full.reduce(3)).astype(int)
    assert small3.shape == ref3.shape
    assert np.abs(small3.astype(int) - ref3).max() <= 1
    # k × the level's pixel: each full block is where its pixels were (1717 rows is not 3 × 573)
    assert ps3 == pytest.approx((1.5, 1.5))


def test_real_jpeg_levels_are_dct_scales(he_jpeg):
    img = read_histology(he_jpeg, pixel_size_um=0.5)
    assert img.level_shapes == ((1717, 950), (859, 475), (430, 238), (215, 119))
    thumb, ps = img.thumbnail(300)
    assert max(thumb.shape[:2]) <= 300
    assert max(thumb.shape[:2]) > 150
    assert ps == pytest.approx((0.5 * 950 / thumb.shape[1], 0.5 * 1717 / thumb.shape[0]))
    assert img.read(level=3).shape == (215, 119, 3)


def test_real_jpeg_open_is_lazy(he_jpeg, monkeypatch):
    from PIL import ImageFile

    def boom(self):
        raise AssertionError("pixels decoded while opening")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    img = read_histology(he_jpeg, pixel_size_um=0.5)
    assert img.shape == (1717, 950)


# ---------------------------------------------------------------------------------------------
# pyramidal OME-TIFF


@pytest.fixture
def ome_pyramid(tmp_path):
    """BigTIFF OME pyramid, odd size, 2 SubIFD levels written as data[::2, ::2], data[::4, ::4]."""
    data = _rgb(301, 499)
    path = tmp_path / "pyr.ome.tif"
    opts = {"photometric": "rgb", "tile": (64, 64), "compression": "zlib"}
    meta = {
        "axes": "YXS",
        "PhysicalSizeX": 500.0,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 600.0,
        "PhysicalSizeYUnit": "nm",
    }
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(data, subifds=2, metadata=meta, **opts)
        tif.write(data[::2, ::2], subfiletype=1, **opts)
        tif.write(data[::4, ::4], subfiletype=1, **opts)
    return path, data


def test_ome_pyramid_metadata(ome_pyramid):
    path, _ = ome_pyramid
    img = read_histology(path)
    assert isinstance(img, HistologyImage)
    assert img.format == "ome-tiff"
    assert img.shape == (301, 499)
    assert img.level_shapes == ((301, 499), (151, 250), (76, 125))
    assert img.n_channels == 3
    assert img.dtype == np.uint8
    assert img.pixel_size_source == "ome"
    assert img.pixel_size_um == pytest.approx((0.5, 0.6))  # nm -> µm
    assert img.extent_um == pytest.approx((499 * 0.5, 301 * 0.6))
    # levels: real size ratio per axis, not the nominal factor 2
    assert img.level_pixel_size_um(1) == pytest.approx((0.5 * 499 / 250, 0.6 * 301 / 151))
    assert img.level_pixel_size_um(2) == pytest.approx((0.5 * 499 / 125, 0.6 * 301 / 76))
    assert img.level_pixel_size_um(-1) == img.level_pixel_size_um(2)


def test_ome_pyramid_pixels(ome_pyramid):
    path, data = ome_pyramid
    img = read_histology(path)
    np.testing.assert_array_equal(img.read(), data)
    np.testing.assert_array_equal(img.read(level=1), data[::2, ::2])
    np.testing.assert_array_equal(img.read(level=2), data[::4, ::4])
    # regions crossing tile borders, at level 0 and level 1
    np.testing.assert_array_equal(img.read_region(60, 50, 100, 90), data[50:140, 60:160])
    lvl1 = data[::2, ::2]
    np.testing.assert_array_equal(img.read_region(63, 1, 70, 150, level=1), lvl1[1:151, 63:133])


def test_ome_pyramid_downsample_uses_levels(ome_pyramid):
    path, data = ome_pyramid
    img = read_histology(path)
    # factor 4 is level 2 exactly
    arr, ps = img.downsampled(factor=4)
    np.testing.assert_array_equal(arr, data[::4, ::4])
    assert ps == pytest.approx(img.level_pixel_size_um(2))
    # longest side <= 200: level 1 (250 px) block-averaged by 2
    arr, ps = img.downsampled(max_size=200)
    ref = np.rint(_block_mean_ref(data[::2, ::2], 2)).astype(np.uint8)
    assert arr.shape == (76, 125, 3)
    np.testing.assert_allclose(arr, ref, atol=1)  # rounding of exact halves may differ
    sx, sy = img.level_pixel_size_um(1)
    assert ps == pytest.approx((2 * sx, 2 * sy))
    # max_size larger than the image: the image itself
    arr, ps = img.downsampled(max_size=1000)
    np.testing.assert_array_equal(arr, data)
    assert ps == pytest.approx((0.5, 0.6))


def test_px_um_centre_convention(ome_pyramid):
    path, _ = ome_pyramid
    img = read_histology(path)
    sx, sy = 0.5, 0.6
    # centre of pixel (col, row) is ((col + 0.5) sx, (row + 0.5) sy)
    pts = np.array([[0, 0], [3, 5], [498, 300]])
    expected = np.array([[0.5 * sx, 0.5 * sy], [3.5 * sx, 5.5 * sy], [498.5 * sx, 300.5 * sy]])
    np.testing.assert_allclose(img.px_to_um(pts), expected)
    # the outer corners of the grid are the frame's origin and the extent
    np.testing.assert_allclose(img.px_to_um([-0.5, -0.5]), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(img.px_to_um([498.5, 300.5]), img.extent_um)
    np.testing.assert_allclose(img.um_to_px([[0.0, 0.0]]), [[-0.5, -0.5]])
    # round trip at level 0 and level 1
    p = RNG.uniform(-10, 500, size=(50, 2))
    np.testing.assert_allclose(img.um_to_px(img.px_to_um(p)), p, atol=1e-9)
    np.testing.assert_allclose(img.um_to_px(img.px_to_um(p, level=1), level=1), p, atol=1e-9)
    # a level-1 pixel covers ~2x2 level-0 pixels: its centre sits between level-0 pixels 0 and 1
    rx, ry = 499 / 250, 301 / 151
    c0 = img.um_to_px(img.px_to_um([[0, 0]], level=1), level=0)
    np.testing.assert_allclose(c0, [[(rx - 1) / 2, (ry - 1) / 2]])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        img.px_to_um(np.zeros((4, 3)))


def test_ome_channel_first_and_default_unit(tmp_path):
    data = RNG.integers(0, 255, size=(3, 40, 60), dtype=np.uint8)
    path = tmp_path / "cyx.ome.tif"
    tifffile.imwrite(
        path,
        data,
        photometric="minisblack",
        tile=(16, 16),
        metadata={"axes": "CYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25},
    )
    img = read_histology(path)
    assert img.n_channels == 3
    assert img.pixel_size_um == pytest.approx((0.25, 0.25))
    assert img.pixel_size_source == "ome"
    np.testing.assert_array_equal(img.read(), np.moveaxis(data, 0, -1))
    np.testing.assert_array_equal(
        img.read_region(10, 5, 20, 30), np.moveaxis(data, 0, -1)[5:35, 10:30]
    )


@pytest.mark.parametrize(
    ("value", "unit", "um"),
    [
        (0.5, "µm", 0.5),
        (500.0, "nm", 0.5),
        (0.0005, "mm", 0.5),
        (5000.0, "Å", 0.5),
        (2e-7, "m", 0.2),
    ],
)
def test_ome_units(tmp_path, value, unit, um):
    path = tmp_path / "u.ome.tif"
    meta = {"axes": "YX", "PhysicalSizeX": value, "PhysicalSizeXUnit": unit}
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), metadata=meta)
    img = read_histology(path)
    assert img.pixel_size_source == "ome"
    assert img.pixel_size_um == pytest.approx((um, um))  # only X given: square pixels


def test_ome_z_stack_is_unsupported(tmp_path):
    path = tmp_path / "z.ome.tif"
    tifffile.imwrite(
        path, np.zeros((4, 8, 8), np.uint8), metadata={"axes": "ZYX", "PhysicalSizeX": 0.5}
    )
    with pytest.raises(UnsupportedFormatError, match=r"z\.ome\.tif.*Z=4"):
        read_histology(path)


# ---------------------------------------------------------------------------------------------
# plain TIFF calibrations


def test_tiled_tiff_resolution_centimetre(tmp_path):
    data = _rgb(70, 90)
    path = tmp_path / "cm.tif"
    tifffile.imwrite(
        path,
        data,
        photometric="rgb",
        tile=(32, 32),
        resolution=(20000, 25000),  # pixels per cm
        resolutionunit="CENTIMETER",
    )
    img = read_histology(path)
    assert img.format == "tiff"
    assert img.pixel_size_source == "tiff_resolution"
    assert img.pixel_size_um == pytest.approx((0.5, 0.4))
    np.testing.assert_array_equal(img.read(), data)
    np.testing.assert_array_equal(img.read_region(31, 30, 3, 5), data[30:35, 31:34])


def test_tiff_resolution_inch(tmp_path):
    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, _rgb(8, 8), photometric="rgb", resolution=(50800, 50800))
    img = read_histology(path)
    assert img.pixel_size_um == pytest.approx((0.5, 0.5))
    assert img.pixel_size_source == "tiff_resolution"


def test_tiff_72_dpi_is_not_a_calibration(tmp_path):
    path = tmp_path / "dpi72.tif"
    tifffile.imwrite(path, _rgb(8, 8), photometric="rgb", resolution=(72, 72), resolutionunit=2)
    with pytest.warns(DataWarning, match="ignored"):
        with pytest.raises(CalibrationError, match="pixel_size_um="):
            read_histology(path)


def test_tiff_unit_none_is_not_a_calibration(tmp_path):
    path = tmp_path / "none.tif"
    tifffile.imwrite(path, _rgb(8, 8), photometric="rgb")  # XResolution 1/1, unit NONE
    with pytest.raises(CalibrationError, match=r"none\.tif.*pixel_size_um="):
        read_histology(path)
    img = read_histology(path, pixel_size_um=(0.3, 0.4))
    assert img.pixel_size_um == (0.3, 0.4)
    assert img.pixel_size_source == "argument"


def test_imagej_tiff_micron_unit(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        np.zeros((8, 8), np.uint8),
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"unit": "um"},
    )
    img = read_histology(path)
    assert img.pixel_size_um == pytest.approx((0.25, 0.25))
    assert img.pixel_size_source == "tiff_resolution"


def test_aperio_mpp(tmp_path):
    data = _rgb(64, 96)
    path = tmp_path / "slide.svs"
    desc = (
        "Aperio Image Library v12.0.5\r\n96x64 [0,0 96x64] (32x32) RAW|AppMag = 20"
        "|MPP = 0.2520|ScanScope ID = SS1"
    )
    tifffile.imwrite(path, data, photometric="rgb", tile=(32, 32), description=desc)
    img = read_histology(path)
    assert img.pixel_size_source == "aperio_mpp"
    assert img.pixel_size_um == pytest.approx((0.252, 0.252))
    np.testing.assert_array_equal(img.read(), data)


def test_argument_wins_over_file(ome_pyramid):
    path, _ = ome_pyramid
    img = read_histology(path, pixel_size_um=2.0)
    assert img.pixel_size_um == (2.0, 2.0)
    assert img.pixel_size_source == "argument"
    assert img.file_pixel_size_um == pytest.approx((0.5, 0.6))
    text = describe_histology(img)
    assert "argument" in text and "the file says" in text


# ---------------------------------------------------------------------------------------------
# PNG / JPEG calibrations


def test_png_phys(tmp_path):
    data = _rgb(20, 30)
    path = tmp_path / "cal.png"
    Image.fromarray(data).save(path, dpi=(50800, 50800))  # 2,000,000 px/m
    img = read_histology(path)
    assert img.format == "png"
    assert img.pixel_size_source == "png_phys"
    assert img.pixel_size_um == pytest.approx((0.5, 0.5), rel=1e-12)
    np.testing.assert_array_equal(img.read(), data)


def test_png_default_density_is_ignored(tmp_path):
    path = tmp_path / "dpi96.png"
    Image.fromarray(_rgb(8, 8)).save(path, dpi=(96, 96))
    with pytest.warns(DataWarning, match="ignored"):
        with pytest.raises(CalibrationError):
            read_histology(path)


def test_jpeg_72_dpi_needs_argument(tmp_path):
    path = tmp_path / "dpi72.jpg"
    Image.fromarray(_rgb(16, 16)).save(path, dpi=(72, 72))
    with pytest.warns(DataWarning, match=r"72 .*ignored"):
        with pytest.raises(CalibrationError, match=r"dpi72\.jpg.*pixel_size_um="):
            read_histology(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the argument wins: nothing to warn about
        img = read_histology(path, pixel_size_um=0.5)
    assert img.pixel_size_source == "argument"


def test_jpeg_density_calibration(tmp_path):
    path = tmp_path / "cal.jpg"
    Image.fromarray(_rgb(16, 16)).save(path, dpi=(50800, 50800))
    img = read_histology(path)
    assert img.pixel_size_source == "jpeg_density"
    assert img.pixel_size_um == pytest.approx((0.5, 0.5))


# ---------------------------------------------------------------------------------------------
# channels and dtypes


def test_grayscale_stays_one_channel(tmp_path):
    gray = RNG.integers(0, 255, size=(30, 40), dtype=np.uint8)
    for name, save in [
        ("g.png", lambda p: Image.fromarray(gray).save(p)),
        ("g.tif", lambda p: tifffile.imwrite(p, gray, tile=(16, 16))),
    ]:
        path = tmp_path / name
        save(path)
        img = read_histology(path, pixel_size_um=1.0)
        assert img.n_channels == 1
        arr = img.read()
        assert arr.shape == (30, 40, 1)
        np.testing.assert_array_equal(arr[..., 0], gray)
    path = tmp_path / "g.jpg"
    Image.fromarray(gray).save(path, quality=95)
    img = read_histology(path, pixel_size_um=1.0)
    assert img.n_channels == 1
    with Image.open(path) as im:
        np.testing.assert_array_equal(img.read()[..., 0], np.asarray(im))


def test_bilevel_tiff_becomes_uint8(tmp_path):
    mask = RNG.integers(0, 2, size=(20, 30)).astype(bool)
    path = tmp_path / "bilevel.tif"
    tifffile.imwrite(path, mask)  # tifffile writes bool as MINISWHITE: True is black
    img = read_histology(path, pixel_size_um=1.0)
    assert img.dtype == np.uint8
    np.testing.assert_array_equal(img.read()[..., 0], np.where(mask, 0, 255))


def _rgba() -> tuple[np.ndarray, np.ndarray]:
    rgba = _rgb(10, 12).copy()
    alpha = np.full((10, 12), 255, np.uint8)
    alpha[:, :4] = 0
    alpha[:, 4:8] = 128
    rgba = np.dstack([rgba, alpha])
    a = alpha[..., None] / 255.0
    expected = np.rint(rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    return rgba, expected


def test_rgba_png_composited_on_white(tmp_path):
    rgba, expected = _rgba()
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    img = read_histology(path, pixel_size_um=1.0)
    assert img.n_channels == 3
    arr = img.read()
    assert arr.shape == (10, 12, 3)
    np.testing.assert_array_equal(arr[:, :4], 255)  # transparent -> white
    np.testing.assert_array_equal(arr[:, 8:], rgba[:, 8:, :3])  # opaque -> unchanged
    np.testing.assert_array_equal(arr, expected)


def test_rgba_tiff_composited_on_white(tmp_path):
    rgba, expected = _rgba()
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    img = read_histology(path, pixel_size_um=1.0)
    assert img.n_channels == 3
    np.testing.assert_array_equal(img.read(), expected)


def test_uint16_kept(tmp_path):
    data = _rgb(20, 24, np.uint16)
    path = tmp_path / "u16.tif"
    tifffile.imwrite(path, data, photometric="rgb", tile=(16, 16))
    img = read_histology(path, pixel_size_um=1.0)
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img.read(), data)
    arr, _ = img.downsampled(factor=2)
    assert arr.dtype == np.uint16
    np.testing.assert_allclose(arr, _block_mean_ref(data, 2), atol=0.5 + 1e-9)
    # 16-bit RGB PNG (PIL alone would truncate it to 8 bits)
    path = tmp_path / "u16.png"
    path.write_bytes(imagecodecs.png_encode(data))
    img = read_histology(path, pixel_size_um=1.0)
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img.read(), data)


# ---------------------------------------------------------------------------------------------
# block-wise downsampling of a big non-pyramidal tiled TIFF


def test_large_tiled_tiff_downsample_is_blockwise(tmp_path):
    h = w = 8000
    t = 512
    nty, ntx = math.ceil(h / t), math.ceil(w / t)
    colour = np.zeros((nty, ntx, 3), np.uint8)
    colour[..., 0] = (np.arange(nty)[:, None] * 13) % 256
    colour[..., 1] = (np.arange(ntx)[None, :] * 7) % 256
    colour[..., 2] = 200

    def tiles():
        for ty in range(nty):
            for tx in range(ntx):
                yield np.broadcast_to(colour[ty, tx], (t, t, 3))

    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path,
        tiles(),
        shape=(h, w, 3),
        dtype=np.uint8,
        tile=(t, t),
        photometric="rgb",
        compression="zlib",
        bigtiff=True,
        resolution=(40000, 40000),
        resolutionunit="CENTIMETER",
    )
    full_bytes = h * w * 3

    tracemalloc.start()
    try:
        img = read_histology(path)
        _, peak_open = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        arr, ps = img.downsampled(max_size=1000)
        _, peak_down = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert img.level_shapes == ((h, w),)
    assert img.pixel_size_um == pytest.approx((0.25, 0.25))
    # opening decodes nothing; downsampling holds a strip of tiles, never the full image
    assert peak_open < 2 * 2**20
    assert peak_down < full_bytes / 4, f"peak {peak_down / 2**20:.1f} MiB"
    assert arr.shape == (1000, 1000, 3)
    assert ps == pytest.approx((2.0, 2.0))
    # each output pixel is an 8x8 block inside one constant tile
    expected = np.repeat(np.repeat(colour, t // 8, axis=0), t // 8, axis=1)[:1000, :1000]
    np.testing.assert_array_equal(arr, expected)
    # a region across tile corners
    rows, cols = np.arange(1530, 1540) // t, np.arange(1020, 1030) // t
    np.testing.assert_array_equal(
        img.read_region(1020, 1530, 10, 10), colour[rows[:, None], cols[None, :]]
    )


def test_strip_tiff_downsample_block_means(tmp_path):
    data = _rgb(101, 67)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, data, photometric="rgb", rowsperstrip=5)
    img = read_histology(path, pixel_size_um=1.0)
    arr, ps = img.downsampled(factor=3)
    np.testing.assert_allclose(arr, _block_mean_ref(data, 3), atol=0.5 + 1e-9)
    assert ps == pytest.approx((3.0, 3.0))


# ---------------------------------------------------------------------------------------------
# errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(MissingFileError, match=r"nope\.tif") as exc:
        read_histology(path, pixel_size_um=1.0)
    assert isinstance(exc.value, FileNotFoundError)


def test_text_file_with_tif_extension(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image\n")
    with pytest.raises(FileFormatError, match=r"notes\.tif.*not an image.*\.tif extension"):
        read_histology(path, pixel_size_um=1.0)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty"):
        read_histology(path, pixel_size_um=1.0)


def test_garbage_after_tiff_magic(tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 60)
    with pytest.raises(FileFormatError, match=r"bad\.tif"):
        read_histology(path, pixel_size_um=1.0)


def test_truncated_tiff(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _rgb(128, 128), photometric="rgb", tile=(32, 32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileFormatError, match=r"cut\.tif.*truncated"):
        read_histology(path, pixel_size_um=1.0)


def test_corrupt_tile_data_raises_on_read(tmp_path):
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, _rgb(64, 64), photometric="rgb", tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[1]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 16] = b"\x00" * 16
    path.write_bytes(bytes(raw))
    img = read_histology(path, pixel_size_um=1.0)  # structure is fine: opening works
    with pytest.raises(FileFormatError, match=r"corrupt\.tif"):
        img.read()


def test_truncated_jpeg(he_jpeg, tmp_path):
    path = tmp_path / "cut.jpg"
    raw = he_jpeg.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileFormatError, match=r"cut\.jpg.*truncated"):
        read_histology(path, pixel_size_um=1.0)


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_rgb(64, 64)).save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileFormatError, match=r"cut\.png.*truncated"):
        read_histology(path, pixel_size_um=1.0)


def test_unsupported_image_format(tmp_path):
    path = tmp_path / "img.gif"
    Image.fromarray(_rgb(8, 8)).convert("P").save(path)
    with pytest.raises(UnsupportedFormatError, match=r"img\.gif.*GIF"):
        read_histology(path, pixel_size_um=1.0)


@pytest.mark.parametrize(
    "bad", [0, -1.0, float("nan"), float("inf"), (0.5, 0.0), (1, 2, 3), "abc", [[1, 2]], True]
)
def test_bad_pixel_size(tmp_path, bad):
    path = tmp_path / "ok.png"
    Image.fromarray(_rgb(8, 8)).save(path)
    with pytest.raises(CalibrationError, match=r"ok\.png.*pixel_size_um"):
        read_histology(path, pixel_size_um=bad)


def test_bad_arguments(ome_pyramid):
    path, _ = ome_pyramid
    with pytest.raises(FileFormatError, match="series=3"):
        read_histology(path, series=3)
    img = read_histology(path)
    with pytest.raises(ValueError, match="level 5"):
        img.read(level=5)
    with pytest.raises(ValueError, match="outside"):
        img.read_region(490, 0, 20, 10)
    with pytest.raises(ValueError, match="not both"):
        img.downsampled(max_size=100, factor=2)
    with pytest.raises(ValueError, match="factor"):
        img.downsampled(factor=0.5)


def test_describe(ome_pyramid):
    path, _ = ome_pyramid
    text = describe_histology(read_histology(path))
    assert "pyr.ome.tif" in text
    assert "OME-TIFF" in text
    assert "499 × 301" in text
    assert "3 channels" in text and "uint8" in text
    assert "0.5 × 0.6 µm" in text and "OME-XML" in text
    assert "0.2495 × 0.1806 mm" in text
    assert "levels:     3" in text


# ---------------------------------------------------------------------------------------------
# uncompressed single-block levels are read by plain file reads


@pytest.mark.parametrize(
    ("dtype", "byteorder", "channels"),
    [(np.uint8, "<", 3), (np.uint16, ">", 3), (np.uint8, "<", 1), (np.float32, ">", 1)],
)
def test_contiguous_level_matches_tifffile(tmp_path, monkeypatch, dtype, byteorder, channels):
    import spatialfuse.io.histology._tiff as histology

    rng = np.random.default_rng(3)
    shape = (301, 257, 3) if channels == 3 else (301, 257)
    if np.dtype(dtype).kind == "f":
        data = rng.random(shape).astype(dtype)
    else:
        data = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    path = tmp_path / "plain.tif"
    photometric = "rgb" if channels == 3 else "minisblack"
    tifffile.imwrite(path, data, photometric=photometric, byteorder=byteorder)
    used = []
    original = histology._ContiguousLevelReader.region
    monkeypatch.setattr(
        histology._ContiguousLevelReader,
        "region",
        lambda self, *a: used.append(a) or original(self, *a),
    )
    img = read_histology(path, pixel_size_um=1.0)
    ref = tifffile.imread(path).reshape(301, 257, channels)
    np.testing.assert_array_equal(img.read(), ref)
    np.testing.assert_array_equal(img.read_region(10, 20, 100, 50), ref[20:70, 10:110])
    arr, _ = img.downsampled(factor=3)
    atol = 1e-6 if np.dtype(dtype).kind == "f" else 0.5 + 1e-6  # integers are rounded
    np.testing.assert_allclose(arr, _block_mean_ref(ref.astype(np.float64), 3), atol=atol)
    assert used, "the uncompressed level was not read through the contiguous reader"


def test_contiguous_level_truncated_after_opening(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _rgb(200, 100), photometric="rgb")
    img = read_histology(path, pixel_size_um=1.0)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 1000)
    with pytest.raises(FileFormatError, match=r"plain\.tif.*truncated"):
        img.read()


def test_auto_pixel_size_without_calibration_is_nominal_and_marked_unknown(tmp_path):
    """pixel_size_um="auto": the file's calibration where it has one, else 1 µm, "unknown"."""
    from PIL import Image

    import spatialfuse as sf

    path = tmp_path / "plain.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(path)  # no pHYs chunk
    with pytest.raises(sf.errors.CalibrationError, match="no pixel size calibration"):
        sf.io.read_histology(path)
    image = sf.io.read_histology(path, pixel_size_um="auto")
    assert image.pixel_size_source == "unknown"
    assert image.pixel_size_um == (1.0, 1.0)
    assert image.extent_um == (30.0, 20.0)
    estimated = image.with_pixel_size(2.5, source="estimated")
    assert (estimated.pixel_size_um, estimated.pixel_size_source) == ((2.5, 2.5), "estimated")
    assert estimated.extent_um == (75.0, 50.0)
    assert image.pixel_size_um == (1.0, 1.0)  # the original is unchanged
    with pytest.raises(ValueError, match="source must be"):
        image.with_pixel_size(2.5, source="guess")
    with pytest.raises(sf.errors.CalibrationError, match="positive"):
        image.with_pixel_size(-1.0)
    calibrated = tmp_path / "calibrated.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(calibrated, dpi=(12700, 12700))
    found = sf.io.read_histology(calibrated, pixel_size_um="auto")
    assert found.pixel_size_um == pytest.approx((2.0, 2.0), rel=1e-3)
    assert found.pixel_size_source == "png_phys"
