"""Full-resolution histology warping, tile by tile, into a pyramidal OME-TIFF.

Checked against an independent in-memory resampling of the whole image (``sf.reg.resample``) with
the synthetic trio's exact nonrigid serial-section map, and for bounded reads.
"""

from __future__ import annotations

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.io.export.ome_tiff import TILE
from spatialfuse.reg._warp_image import BLOCK, _SourceLevels, warp_histology


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warp_trio")
    return sf.datasets.synthetic_trio(
        folder, seed=3, tissue_size_um=(1600.0, 1300.0), n_ions=40, n_genes=40
    )


def test_warp_matches_whole_image_resampling_and_writes_a_pyramid(trio, tmp_path, monkeypatch):
    he = sf.io.read_histology(trio.he)
    serial = sf.io.read_histology(trio.he_serial)
    transform = trio.he_serial_to_he.inverse()  # H&E µm → serial-section µm (nonrigid)
    areas = []
    original = _SourceLevels.region

    def recording(self, level, x0, y0, width, height):
        areas.append(width * height)
        return original(self, level, x0, y0, width, height)

    monkeypatch.setattr(_SourceLevels, "region", recording)
    path = warp_histology(he, transform, tmp_path / "warped.ome.tif", reference=serial)

    warped = sf.io.read_histology(path)
    assert warped.shape == serial.shape
    assert warped.pixel_size_um == pytest.approx(serial.pixel_size_um)
    assert warped.n_levels >= 2
    assert warped.level_shapes[1] == ((serial.shape[0] + 1) // 2, (serial.shape[1] + 1) // 2)

    expected = sf.reg.resample(
        he.read(),
        transform,
        pixel_size_um=he.pixel_size_um,
        output_shape=serial.shape,
        output_pixel_size_um=serial.pixel_size_um,
        fill=255,
    )
    got = warped.read().astype(np.float64)
    # resample blanks the outer half of the source's border pixels; compare away from it
    inner = (slice(3, -3), slice(3, -3))
    difference = np.abs(got - expected)[inner]
    assert np.mean(difference <= 1.0) > 0.999  # rounding to uint8
    assert difference.max() <= 4.0

    # Never a whole level at once: each read is the bounding box of one rotated TILE × BLOCK
    # block (at most ~3.2 × TILE × BLOCK at 45°, plus the serial section's warp), whatever the
    # level and however large the image.
    assert max(areas) < 3.5 * TILE * BLOCK
    assert max(areas) < 0.3 * he.shape[0] * he.shape[1]

    # The reduced level is the same picture at half resolution.
    half = warped.read(level=1).astype(np.float64)
    block = got[: 2 * (got.shape[0] // 2), : 2 * (got.shape[1] // 2)]
    block = block.reshape(block.shape[0] // 2, 2, block.shape[1] // 2, 2, -1).mean(axis=(1, 3))
    rows, cols = block.shape[:2]
    assert np.median(np.abs(half[:rows, :cols] - block)) < 6.0


def test_default_grid_holds_the_whole_moving_image(trio, tmp_path):
    he = sf.io.read_histology(trio.he)
    rotation = sf.reg.AffineTransform.from_params(rotation_deg=30.0)
    path = warp_histology(he, rotation, tmp_path / "rotated.ome.tif", output_pixel_size_um=4.0)
    warped = sf.io.read_histology(path)
    w, h = he.extent_um
    corners = rotation.apply(np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=float))
    span = corners.max(axis=0) - corners.min(axis=0)
    assert warped.pixel_size_um == pytest.approx((4.0, 4.0))
    np.testing.assert_allclose(np.array(warped.extent_um), span, atol=4.0)


def test_bad_arguments(trio, tmp_path):
    he = sf.io.read_histology(trio.he)
    identity = sf.reg.AffineTransform.identity()
    with pytest.raises(ValueError, match="order must be 0 or 1"):
        warp_histology(he, identity, tmp_path / "x.ome.tif", order=3)
    with pytest.raises(ValueError, match="fill must be a uint8"):
        warp_histology(he, identity, tmp_path / "x.ome.tif", fill=300)
    assert not (tmp_path / "x.ome.tif").exists()


def test_a_file_name_with_xml_characters_gives_valid_ome_xml(trio, tmp_path):
    """The OME-XML names the source file; ``&`` and ``<`` in it must be escaped, not break it."""
    import shutil

    import tifffile
    from lxml import etree

    odd = tmp_path / "H&E <serial>.ome.tif"
    shutil.copyfile(trio.he, odd)
    he = sf.io.read_histology(odd)
    rotation = sf.reg.AffineTransform.from_params(rotation_deg=10.0)
    path = warp_histology(he, rotation, tmp_path / "warped.ome.tif", output_pixel_size_um=8.0)
    with tifffile.TiffFile(path) as tif:
        xml = tif.pages[0].description
    root = etree.fromstring(xml.encode("utf-8"))
    image = root.find("{http://www.openmicroscopy.org/Schemas/OME/2016-06}Image")
    assert image.get("Name") == "H&E <serial>.ome.tif warped by spatialfuse"
    assert sf.io.read_histology(path).pixel_size_um == pytest.approx((8.0, 8.0))
